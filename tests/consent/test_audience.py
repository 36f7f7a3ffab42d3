"""The bulk audience count on DuckDB gives exactly what the resolver gives, person by person."""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable

import orjson
import pytest

from candor.analytics import Analytics
from candor.app import Runtime
from candor.config import Settings
from candor.consent.audience import audience_counts as duckdb_counts
from candor.consent.ledger import audience_counts as resolver_counts
from candor.consent.purposes import DEFAULT_PURPOSES
from candor.store import now_ms
from candor.store.schema import consent_records, identifiers, notices, subjects, suppressions

PURPOSES = [*DEFAULT_PURPOSES, "marketing"]
SOURCES = ["banner", "api", "gpc", "gpp", "preference_center", "segment_event"]


def random_store(rt: Runtime, rng: random.Random, people: int) -> None:
    now = now_ms()
    subj_rows, rec_rows, id_rows, supp_rows = [], [], [], []
    for _ in range(people):
        sid = secrets.token_hex(16)
        subj_rows.append({"subject_id": sid, "created_ms": now, "state": rng.choice(["active"] * 8 + ["restricted"])})
        for _ in range(rng.randrange(0, 5)):
            picks = rng.sample(PURPOSES, rng.randrange(0, 4))
            granted = [p for p in picks if rng.random() < 0.5 and p != "marketing"]
            denied = [p for p in picks if p not in granted]
            if not granted and not denied:
                continue
            rec_rows.append(
                {
                    "subject_id": sid,
                    "granted": orjson.dumps(granted).decode(),
                    "denied": orjson.dumps(denied).decode(),
                    "objection": rng.random() < 0.1,
                    "source": rng.choice(SOURCES),
                    "jurisdiction": rng.choice([None, None, "EU", "US", "US-CA", "UK"]),
                    "ts_ms": now - rng.randrange(0, 50) * 1000,
                    "recorded_ms": now,
                    "expires_ms": rng.choice([None, now - 1000, now + 10**9]) if granted else None,
                    "notice_id": rng.choice([None, "privacy"]),
                    "notice_version": rng.choice([1, 2]),
                    "confirmed": rng.random() < 0.3,
                    "actor": "test",
                }
            )
        if rng.random() < 0.5:
            h = secrets.token_hex(32)
            id_rows.append(
                {
                    "id_type": "email",
                    "pseudonym": secrets.token_hex(16),
                    "hmac_version": 1,
                    "subject_id": sid,
                    "first_seen_ms": now,
                    "contact_hash": h,
                }
            )
            if rng.random() < 0.4:
                supp_rows.append(
                    {
                        "channel": rng.choice(["email", "sms", "all", "post"]),
                        "hash": h,
                        "id_type": "email",
                        "reason": "unsubscribe",
                        "created_ms": now,
                    }
                )
    with rt.store.write() as conn:
        conn.execute(subjects.insert(), subj_rows)
        if rec_rows:
            conn.execute(consent_records.insert(), rec_rows)
        if id_rows:
            conn.execute(identifiers.insert(), id_rows)
        if supp_rows:
            conn.execute(suppressions.insert(), supp_rows)
        conn.execute(
            notices.insert(),
            [
                {
                    "notice_id": "privacy",
                    "version": 1,
                    "language": "en",
                    "text": "v1",
                    "sha256": "x" * 64,
                    "requires_reconsent": False,
                    "created_ms": now,
                },
                {
                    "notice_id": "privacy",
                    "version": 2,
                    "language": "en",
                    "text": "v2",
                    "sha256": "y" * 64,
                    "requires_reconsent": True,
                    "created_ms": now,
                },
            ],
        )


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("jurisdiction", ["EU", "US-CA"])
def test_duckdb_matches_the_resolver(make_settings: Callable[..., Settings], seed: int, jurisdiction: str) -> None:
    rt = Runtime(make_settings(default_jurisdiction=jurisdiction))
    try:
        random_store(rt, random.Random(seed), 300)
        expected = resolver_counts(rt.consent, rt.suppressions)
        assert duckdb_counts(rt.consent, Analytics(rt.store)) == expected
        assert sum(expected["analytics"].values()) == 300
    finally:
        rt.close()


def test_empty_store_and_people_without_choices(make_settings: Callable[..., Settings]) -> None:
    rt = Runtime(make_settings(default_jurisdiction="EU"))
    try:
        assert duckdb_counts(rt.consent, Analytics(rt.store)) == resolver_counts(rt.consent, rt.suppressions)
        with rt.store.write() as conn:
            conn.execute(subjects.insert(), [{"subject_id": secrets.token_hex(16), "created_ms": 0, "state": "active"}])
        counts = duckdb_counts(rt.consent, Analytics(rt.store))
        assert counts == resolver_counts(rt.consent, rt.suppressions)
        assert counts["analytics"]["not_consented"] == 1 and counts["necessary"]["usable"] == 1
        assert counts["marketing.post"]["usable"] == 1  # legitimate interest in the EU
    finally:
        rt.close()
