"""Special categories at the moment of use: a segment or a campaign on a health-interest trait reaches only
people who opted in to health data, and "Limit the Use of My Sensitive Personal Information" leaves only
necessary uses. Through can_use, with the reason. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from candor.config import Settings
from tests.helpers import Api, api, bearer

pytestmark = pytest.mark.anyio

SEGMENT = {"name": "diabetes", "conditions": [{"trait": "healthInterest", "equals": "diabetes"}]}
CAMPAIGN: dict[str, Any] = {
    "name": "care",
    "segment": "diabetes",
    "channel": "email",
    "purpose": "marketing.email",
    "subject": "Care",
    "template": "Hi",
    "generic_template": "Hello",
    "sender": "Shop <news@shop.example>",
    "postal_address": "1 Main Street",
}


async def grant(a: Api, uid: str, purposes: list[str]) -> None:
    r = await a.post("/v1/consent", {"userId": uid, "granted": purposes, "source": "preference_center"})
    assert r.status_code in (200, 201), r.text


async def test_segments_and_campaigns_on_a_health_trait_need_the_opt_in(make_settings: Callable[..., Settings]) -> None:
    async with api(make_settings(default_jurisdiction="US", smtp_url="smtp://127.0.0.1:1")) as a:
        owner = bearer(a.owner)
        r = await a.client.post(
            "/v1/sources/test-source/dictionary",
            json={"scope": "traits", "path": "healthInterest", "category": "health"},
            headers=owner,
        )
        assert r.status_code == 201
        for uid in ("ann", "bob", "cat"):
            await a.post("/v1/identify", {"userId": uid, "traits": {"email": f"{uid}@example.org"}})
        await grant(a, "ann", ["sensitive.health", "marketing.email"])
        await grant(a, "cat", ["sensitive.health", "marketing.email"])
        for uid in ("ann", "bob", "cat"):
            await a.post("/v1/identify", {"userId": uid, "traits": {"healthInterest": "diabetes"}})
        subject: dict[str, str] = {}
        for u in ("ann", "bob", "cat"):
            sid = a.rt.consent.subject_for("user_id", u)
            assert sid is not None
            subject[u] = sid
        # Bob's trait was never kept; even if it had been, the segment would not use it without his opt-in
        a.rt.segments.create("diabetes", SEGMENT, "test")
        assert set(a.rt.segments.evaluate("diabetes")) == {subject["ann"], subject["cat"]}
        assert a.rt.segments.categories("diabetes") == {"health"}
        # Cat withdraws the opt-in: her stored trait may no longer be used, and the preview says why
        await a.post("/v1/consent", {"userId": "cat", "denied": ["sensitive.health"], "source": "preference_center"})
        a.rt.consent.invalidate()
        assert a.rt.segments.evaluate("diabetes") == [subject["ann"]]
        preview = a.rt.segments.preview("diabetes", ["marketing.email"])
        assert any("explicit opt-in (sensitive.health)" in reason for reason in preview["withheld"])
        # Ann limits the use of her sensitive information (CPRA): marketing on it stops, necessary uses stay
        from candor.rights.processing import OBJECTIONS

        assert OBJECTIONS["limit_sensitive"] == ("sensitive",)
        with a.rt.store.write() as conn:
            a.rt.consent.record(conn, subject["ann"], denied={"sensitive"}, source="rights_request", actor="test")
        a.rt.consent.invalidate()
        d = a.rt.consent.can_use(subject["ann"], "marketing.email", categories={"health"})
        assert not d.allowed and "limited the use" in d.reasons[0]
        assert a.rt.consent.can_use(subject["ann"], "necessary", categories={"health"}).allowed
        assert a.rt.consent.can_use(subject["ann"], "marketing.email").allowed  # without health data: fine
        r = await a.client.post("/v1/campaigns", json=CAMPAIGN, headers=owner)
        assert r.status_code == 201, r.text
        outcomes = (await a.client.get("/v1/campaigns/care/preview", headers=owner)).json()["outcomes"]
        assert outcomes == {"skipped:sensitive": 1}
        # a new, explicit opt-in after the limit counts again
        await grant(a, "ann", ["sensitive.health"])
        a.rt.consent.invalidate()
        assert a.rt.consent.can_use(subject["ann"], "marketing.email", categories={"health"}).allowed


async def test_can_use_reasons_and_proof_with_categories(settings: Settings) -> None:
    async with api(settings) as a:
        await a.post("/v1/identify", {"userId": "dan", "traits": {"email": "dan@example.org"}})
        sid = a.rt.consent.subject_for("user_id", "dan")
        assert sid is not None
        d = a.rt.consent.can_use(sid, "analytics", categories={"religion", "behavioural"})
        assert not d.allowed and d.reasons[0].startswith("uses religion data")
        with a.rt.store.write() as conn:
            seq = a.rt.consent.record(conn, sid, granted={"sensitive.religion"}, source="api", actor="test")
        ok = a.rt.consent.can_use(sid, "analytics", categories={"religion", "behavioural"})
        assert ok.allowed and seq in ok.proof and any("opted in to religion" in r for r in ok.reasons)
        # non-special categories change nothing
        assert a.rt.consent.can_use(sid, "analytics", categories={"contact"}) == a.rt.consent.can_use(sid, "analytics")
