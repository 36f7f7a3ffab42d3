"""Consent end to end, on SQLite and PostgreSQL: gate at collection, ledger, explain, proof, notices."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select, update

from candor import audit
from candor.config import Settings
from candor.store.schema import consent_blocked, consent_records, events, subjects
from tests.helpers import Api, api, bearer

pytestmark = pytest.mark.anyio


@pytest.fixture
def eu(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(default_jurisdiction="EU")


def count(a: Api, table: Any) -> int:
    with a.rt.store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)


async def explain(a: Api, purpose: str, **who: str) -> dict[str, Any]:
    r = await a.client.get("/v1/consent/explain", params={**who, "purpose": purpose}, headers=bearer(a.owner))
    assert r.status_code == 200, r.text
    return dict(r.json()["decisions"][0])


async def test_no_consent_no_storage_in_the_eu(eu: Settings) -> None:
    async with api(eu) as a:
        r = await a.post("/v1/page", {"anonymousId": "a1", "name": "Home"})
        assert r.status_code == 200 and r.json() == {"success": True}
        assert count(a, events) == 0
        assert count(a, subjects) == 0  # not even an identifier was kept
        with a.rt.store.engine.connect() as conn:
            (row,) = conn.execute(select(consent_blocked)).mappings().all()
        assert (row["event"], row["purpose"], row["n"]) == ("Home", "analytics", 1)  # per event or page name
        stats = (await a.client.get("/v1/stats", headers=bearer(a.owner))).json()
        assert stats["total"]["no_consent"] == 1 and stats["total"]["accepted"] == 0
        # the event's own signal is enough
        prefs = {"consent": {"categoryPreferences": {"analytics": True}}}
        assert (await a.post("/v1/page", {"anonymousId": "a1", "context": prefs})).status_code == 200
        assert count(a, events) == 1
        # purchases are necessary processing and are kept without a choice
        await a.post("/v1/track", {"userId": "u1", "event": "Order Completed", "properties": {"revenue": 10}})
        assert count(a, events) == 2
        # a "no" in the event wins even for an opt-out jurisdiction's default
        no = {"consent": {"categoryPreferences": {"analytics": False}}}
        await a.post("/v1/track", {"userId": "u1", "event": "Product Viewed", "context": no})
        assert count(a, events) == 2


async def test_recorded_choice_governs_later_events_and_withdrawal_is_immediate(eu: Settings) -> None:
    async with api(eu) as a:
        r = await a.post(
            "/v1/consent", {"anonymousId": "b1", "granted": ["analytics"], "uiAction": "custom", "source": "banner"}
        )
        assert r.status_code == 200 and len(r.json()["seq"]) == 1
        await a.post("/v1/page", {"anonymousId": "b1"})
        assert count(a, events) == 1
        assert (await explain(a, "analytics", anonymousId="b1"))["allowed"] is True
        r = await a.post("/v1/consent", {"anonymousId": "b1", "categoryPreferences": {"analytics": False}})
        assert r.status_code == 200
        await a.post("/v1/page", {"anonymousId": "b1"})
        assert count(a, events) == 1
        d = await explain(a, "analytics", anonymousId="b1")
        assert d["allowed"] is False and d["explicit"] is True and len(d["proof"]) == 1
        actions = [e["action"] for e in audit.entries(a.rt.store)]
        assert actions.count("consent.record") == 2


async def test_gpc_header_and_confirmed_opt_in(make_settings: Callable[..., Settings]) -> None:
    async with api(make_settings(default_jurisdiction="US-CA")) as a:
        assert (await explain(a, "sale_sharing", anonymousId="c1"))["reasons"] == ["no such person"]
        await a.post("/v1/page", {"anonymousId": "c1"}, headers={**_basic(a), "Sec-GPC": "1"})
        assert count(a, events) == 1  # analytics is opt-out in California
        d = await explain(a, "sale_sharing", anonymousId="c1")
        assert d["allowed"] is False and "Global Privacy Control" in d["reasons"][0]
        assert (await explain(a, "advertising", anonymousId="c1"))["allowed"] is False
        assert (await explain(a, "analytics", anonymousId="c1"))["allowed"] is True
        # a second event with GPC does not write a second record
        await a.post("/v1/page", {"anonymousId": "c1"}, headers={**_basic(a), "Sec-GPC": "1"})
        assert count(a, consent_records) == 1
        # "Sec-GPC: true" is not the signal (the value must be exactly 1)
        await a.post("/v1/page", {"anonymousId": "c2"}, headers={**_basic(a), "Sec-GPC": "true"})
        assert (await explain(a, "sale_sharing", anonymousId="c2"))["allowed"] is True
        await a.post("/v1/consent", {"anonymousId": "c1", "granted": ["sale_sharing"]})
        assert (await explain(a, "sale_sharing", anonymousId="c1"))["allowed"] is False
        await a.post("/v1/consent", {"anonymousId": "c1", "granted": ["sale_sharing"], "confirmed": True})
        assert (await explain(a, "sale_sharing", anonymousId="c1"))["allowed"] is True


async def test_segment_consent_preference_updated_event(eu: Settings) -> None:
    async with api(eu) as a:
        body = {
            "userId": "d1",
            "event": "Segment Consent Preference Updated",
            "context": {"consent": {"categoryPreferences": {"analytics": True, "advertising": False}}},
        }
        assert (await a.post("/v1/track", body)).status_code == 200
        assert count(a, events) == 1
        assert (await explain(a, "analytics", userId="d1"))["allowed"] is True
        assert (await explain(a, "advertising", userId="d1"))["allowed"] is False
        proof = (await a.client.get("/v1/consent/proof", params={"userId": "d1"}, headers=bearer(a.owner))).json()
        (rec,) = proof["records"]
        assert rec["source"] == "segment_event" and rec["granted"] == ["analytics"] and rec["message_id"]
        bad = {"userId": "d1", "event": "Segment Consent Preference Updated"}
        r = await a.post("/v1/track", bad)
        assert r.status_code == 400 and r.json()["error"]["field"] == "context"


async def test_notices_proof_and_reconsent(eu: Settings) -> None:
    async with api(eu) as a:
        owner = bearer(a.owner)
        r = await a.client.post(
            "/v1/notices", json={"id": "privacy", "version": 1, "text": "We use analytics."}, headers=owner
        )
        assert r.status_code == 200
        sha1 = r.json()["sha256"]
        r = await a.client.post("/v1/notices", json={"id": "privacy", "version": 1, "text": "changed"}, headers=owner)
        assert r.status_code == 409
        grant = {
            "userId": "e1",
            "granted": ["analytics"],
            "notice": {"id": "privacy", "version": 1},
            "uiAction": "accept_all",
            "source": "banner",
            "jurisdiction": "EU",
        }
        assert (await a.post("/v1/consent", grant)).status_code == 200
        proof = (await a.client.get("/v1/consent/proof", params={"userId": "e1"}, headers=owner)).json()
        assert proof["records"][0]["notice"] == {"id": "privacy", "version": 1, "sha256": sha1}
        assert proof["records"][0]["ui_action"] == "accept_all"
        missing = {**grant, "notice": {"id": "privacy", "version": 7}}
        r = await a.post("/v1/consent", missing)
        assert r.status_code == 404 and "does not exist" in r.json()["error"]["message"]
        assert count(a, consent_records) == 1
        assert (await explain(a, "analytics", userId="e1"))["allowed"] is True
        r = await a.client.post(
            "/v1/notices",
            json={"id": "privacy", "version": 2, "text": "We now also ...", "requires_reconsent": True},
            headers=owner,
        )
        assert r.status_code == 200
        a.rt.consent._reconsent = (0.0, {})
        a.rt.consent.invalidate()
        assert (await explain(a, "analytics", userId="e1"))["allowed"] is False
        public = await a.client.get("/v1/notices/privacy")
        assert public.status_code == 200 and public.json()["version"] == 2
        assert (await a.client.get("/v1/notices/privacy?version=9")).status_code == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"userId": "f", "granted": ["telepathy"]}, "unknown purpose"),
        ({"userId": "f", "granted": ["analytics"], "denied": ["analytics"]}, "granted and denied"),
        ({"granted": ["analytics"]}, "userId or anonymousId"),
        ({"userId": "f"}, "at least one purpose"),
        ({"userId": "null", "granted": ["analytics"]}, "placeholder"),
        ({"userId": "f", "granted": ["analytics"], "uiAction": "shrug"}, "uiAction"),
        ({"userId": "f", "granted": ["analytics"], "jurisdiction": "MARS"}, "jurisdiction"),
        ({"userId": "f", "granted": ["analytics"], "timestamp": "soon"}, "timestamp"),
        ({"userId": "f", "granted": ["analytics"], "surprise": 1}, "surprise"),
    ],
)
async def test_bad_consent_input_changes_nothing(eu: Settings, body: dict[str, Any], message: str) -> None:
    async with api(eu) as a:
        r = await a.post("/v1/consent", body)
        assert r.status_code == 400, r.text
        assert message in r.json()["error"]["message"]
        assert count(a, consent_records) == 0 and count(a, subjects) == 0


async def test_invalid_tcf_string_fails_closed(make_settings: Callable[..., Settings]) -> None:
    async with api(make_settings(default_jurisdiction="US")) as a:
        ctx = {"consent": {"tcString": "not-a-tc-string!"}}
        await a.post("/v1/page", {"anonymousId": "g1", "context": ctx})
        assert count(a, events) == 0  # analytics would be allowed by default here; the bad string says no


async def test_on_behalf_objection_and_restriction(eu: Settings) -> None:
    async with api(eu) as a:
        dpo = a.rt.directory.create_token("dpo", "privacy_officer")
        analyst = a.rt.directory.create_token("an", "analyst")
        body = {"userId": "h1", "granted": ["marketing.email", "analytics"]}
        r = await a.client.post("/v1/consent/on-behalf", json=body, headers=bearer(analyst))
        assert r.status_code == 403
        assert (await a.client.post("/v1/consent/on-behalf", json=body, headers=bearer(dpo))).status_code == 200
        assert (await explain(a, "marketing.email", userId="h1"))["allowed"] is True
        objection = {"userId": "h1", "denied": ["marketing.email"], "objection": True, "source": "api"}
        assert (await a.client.post("/v1/consent/on-behalf", json=objection, headers=bearer(dpo))).status_code == 200
        await a.post("/v1/consent", {"userId": "h1", "granted": ["marketing.email"], "confirmed": True})
        d = await explain(a, "marketing.email", userId="h1")
        assert d["allowed"] is False and "absolute" in d["reasons"][0]
        with a.rt.store.write() as conn:
            conn.execute(update(subjects).values(state="restricted"))
        a.rt.consent.invalidate()
        assert (await explain(a, "analytics", userId="h1"))["allowed"] is False
        assert (await explain(a, "necessary", userId="h1"))["allowed"] is True


async def test_explain_unknown_person_and_lookup_rules(eu: Settings) -> None:
    async with api(eu) as a:
        r = await a.client.get("/v1/consent/explain", params={"email": "nobody@example.com"}, headers=bearer(a.owner))
        body = r.json()
        assert body["found"] is False and all(not d["allowed"] for d in body["decisions"])
        assert len(body["decisions"]) == len(a.rt.taxonomy.names())
        r = await a.client.get(
            "/v1/consent/explain", params={"userId": "x", "email": "y@example.com"}, headers=bearer(a.owner)
        )
        assert r.status_code == 400
        # by email, once an identify made the email known
        await a.post("/v1/identify", {"userId": "i1", "traits": {"email": "Ivy@Example.com"}})
        await a.post("/v1/consent", {"userId": "i1", "granted": ["personalization"]})
        d = await explain(a, "personalization", email="ivy@example.com")
        assert d["allowed"] is True
        purposes = (await a.client.get("/v1/purposes")).json()
        assert {p["name"] for p in purposes} >= {"analytics", "marketing.sms", "sale_sharing"}
        gpc = await a.client.get("/.well-known/gpc.json")
        assert gpc.json()["gpc"] is True


def _basic(a: Api) -> dict[str, str]:
    from tests.helpers import basic

    return basic(a.write_key)


async def test_gpp_opt_out_in_an_event_is_recorded(make_settings: Callable[..., Settings]) -> None:
    async with api(make_settings(default_jurisdiction="US-CA")) as a:
        ctx = {"consent": {"gppString": "DBABLA~BVVVkkkklWA.YA"}}  # usnat: opted out of sale/sharing and ads
        await a.post("/v1/page", {"anonymousId": "k1", "context": ctx})
        assert count(a, events) == 1  # analytics is not affected by a sale/sharing opt-out
        d = await explain(a, "sale_sharing", anonymousId="k1")
        assert d["allowed"] is False
        proof = (await a.client.get("/v1/consent/proof", params={"anonymousId": "k1"}, headers=bearer(a.owner))).json()
        assert proof["records"][0]["source"] == "gpp" and proof["records"][0]["raw_signal"].startswith("DBABLA")


def test_remembered_decisions_end_when_a_grant_expires(make_settings: Callable[..., Settings]) -> None:
    import time as _time

    from candor.app import Runtime
    from candor.store import now_ms

    rt = Runtime(make_settings(default_jurisdiction="EU"))
    try:
        with rt.store.write() as conn:
            sid, _ = rt.consent.ensure_subject(conn, "user_id", "exp-1")
            rt.consent.record(conn, sid, granted={"analytics"}, source="api", actor="test", expires_ms=now_ms() + 150)
        assert rt.consent.can_use(sid, "analytics").allowed
        assert rt.consent.can_use(sid, "analytics").allowed  # from memory
        _time.sleep(0.3)
        d = rt.consent.can_use(sid, "analytics")
        assert not d.allowed and "expired" in d.reasons[0]
    finally:
        rt.close()


async def test_oversized_consent_body_is_refused(eu: Settings) -> None:
    async with api(eu) as a:
        big = {"userId": "z", "granted": ["analytics"], "messageId": "m", "tcString": "x" * 4000}
        big["padding"] = "y" * 40_000
        r = await a.post("/v1/consent", big)
        assert r.status_code == 413
        assert count(a, consent_records) == 0
