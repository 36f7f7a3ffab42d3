"""Ad-platform audiences: SHA-256 of normalised contacts, advertising consent only, at least 100
people, audited; pushed to a signed destination or written to a file."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from candor import audit
from candor.config import Settings
from tests.campaigns.receiver import Receiver
from tests.helpers import Api, api, bearer

pytestmark = pytest.mark.anyio
EVERYONE = {"name": "everyone", "conditions": [{"last_seen": {"within_days": 30}}]}


async def crowd(a: Api, n: int, advertising: int) -> None:
    """``n`` people with an email (and every other one a phone); the first ``advertising`` agree to ads."""
    batch = [
        {
            "type": "identify",
            "userId": f"p{i}",
            "traits": {"email": f"P{i}@Example.org", **({"phone": f"+1 202 555 {i:04d}"} if i % 2 else {})},
        }
        for i in range(n)
    ]
    r = await a.post("/v1/batch", {"batch": batch})
    assert r.status_code == 200, r.text
    with a.rt.store.write() as conn:
        for i in range(n):
            sid = a.rt.consent.subject_for("user_id", f"p{i}")
            assert sid is not None
            granted = {"advertising"} if i < advertising else set()
            denied = set() if i < advertising else {"advertising"}
            a.rt.consent.record(conn, sid, granted=granted, denied=denied, source="banner", actor="test")


async def test_audience_export_hashes_only_people_who_agreed_and_refuses_small_audiences(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with Receiver() as platform:
        async with api(make_settings(default_jurisdiction="EU")) as a:
            owner = bearer(a.owner)
            await crowd(a, 110, advertising=102)
            a.rt.suppressions.add("all", "email", "p0@example.org", "objection")
            a.rt.segments.create("everyone", EVERYONE, "test")
            r = await a.client.post(
                "/v1/destinations",
                json={"name": "ads", "kind": "ad_audience", "url": platform.url},
                headers=owner,
            )
            platform.secret = r.json()["secret"]
            r = await a.client.post(
                "/v1/audiences/export", json={"segment": "everyone", "destination": "ads"}, headers=owner
            )
            assert r.status_code == 200, r.text
            assert r.json()["members"] == 101
            assert r.json()["skipped"] == {"no_consent": 8, "suppressed": 1, "no_contact": 0}
            (push,) = platform.accepted
            assert push.signed
            body = push.json
            assert body["type"] == "audience" and body["total"] == 101
            emails = {m["email_sha256"] for m in body["members"]}
            assert hashlib.sha256(b"p1@example.org").hexdigest() in emails  # lower-cased before hashing
            assert hashlib.sha256(b"p0@example.org").hexdigest() not in emails  # on the "all" list
            assert hashlib.sha256(b"p105@example.org").hexdigest() not in emails  # no advertising consent
            phones = {m["phone_sha256"] for m in body["members"]} - {""}
            assert hashlib.sha256(b"+12025550001").hexdigest() in phones
            assert b"example.org" not in push.body and b"+1202" not in push.body  # only hashes leave
            assert all(len(m["candorId"]) == 32 for m in body["members"])
            out = tmp_path / "audience.csv"
            result = a.rt.campaigns.audiences.export("everyone", out=out, actor="test")
            assert result["members"] == 101 and oct(out.stat().st_mode & 0o777) == "0o600"
            rows = list(csv.DictReader(out.read_text().splitlines()))
            assert len(rows) == 101 and set(rows[0]) == {"email_sha256", "phone_sha256"}
            exported = [e for e in audit.entries(a.rt.store, limit=100_000) if e["action"] == "audience.exported"]
            assert len(exported) == 2
            # two people withdraw: 99 are left, and the export is refused; nothing leaves, nothing is audited
            with a.rt.store.write() as conn:
                for uid in ("p1", "p2"):
                    sid = a.rt.consent.subject_for("user_id", uid) or ""
                    a.rt.consent.record(conn, sid, denied=frozenset({"advertising"}), source="api", actor="t")
            r = await a.client.post(
                "/v1/audiences/export", json={"segment": "everyone", "destination": "ads"}, headers=owner
            )
            assert r.status_code == 409 and "at least 100" in r.json()["error"]["message"]
            assert len(platform.hits) == 1
            exported = [e for e in audit.entries(a.rt.store, limit=100_000) if e["action"] == "audience.exported"]
            assert len(exported) == 2
            for bad, status in (
                ({"segment": "nobody", "destination": "ads"}, 404),
                ({"segment": "everyone", "destination": "nowhere"}, 404),
                ({"segment": "everyone"}, 400),
            ):
                r = await a.client.post("/v1/audiences/export", json=bad, headers=owner)
                assert r.status_code == status, (bad, r.text)
