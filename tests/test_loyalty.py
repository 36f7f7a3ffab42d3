"""The loyalty programme on SQLite and PostgreSQL: joining against the notice of financial incentive,
the append-only ledger (earning on purchases once per message id, offers once per member, redemption
never below zero, expiry), tiers in segments, leaving without claw-back, the value statement in the API,
the preference center and the access export, erasure, and bad input that changes nothing."""

from __future__ import annotations

import io
import threading
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import func, select

from candor.app import Runtime
from candor.config import Settings
from candor.loyalty import DAY_MS, NOTICE_ID, LoyaltyError, parse_tiers
from candor.store import now_ms
from candor.store.schema import consent_records, events, loyalty_ledger, loyalty_members
from tests.helpers import Api, api, bearer

pytestmark = pytest.mark.anyio


def iso(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


async def person(a: Api, uid: str = "m-1") -> str:
    r = await a.post("/v1/identify", {"userId": uid, "traits": {"email": f"{uid}@example.org"}})
    assert r.status_code == 200, r.text
    sid = a.rt.consent.subject_for("user_id", uid)
    assert sid
    return sid


async def join(a: Api, uid: str = "m-1") -> dict[str, Any]:
    notice = (await a.client.get("/v1/loyalty/notice")).json()
    r = await a.client.post(
        "/v1/loyalty/members", json={"userId": uid, "noticeVersion": notice["version"]}, headers=bearer(a.owner)
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def order(a: Api, uid: str, mid: str, revenue: Any, **extra: Any) -> None:
    body = {"userId": uid, "event": "Order Completed", "messageId": mid, "properties": {"revenue": revenue}, **extra}
    body = {k: v for k, v in body.items() if v is not None}
    r = await a.post("/v1/track", body)
    assert r.status_code == 200, r.text


def ledger_rows(rt: Runtime) -> list[Any]:
    with rt.store.engine.connect() as conn:
        return list(conn.execute(select(loyalty_ledger).order_by(loyalty_ledger.c.id)).mappings())


def balance_invariant(rt: Runtime) -> None:
    """Every member's balance is the sum of their ledger rows, every running balance is ≥ 0."""
    with rt.store.engine.connect() as conn:
        sums = dict(
            conn.execute(
                select(loyalty_ledger.c.subject_id, func.sum(loyalty_ledger.c.points)).group_by(
                    loyalty_ledger.c.subject_id
                )
            ).all()
        )
        for sid, bal in conn.execute(select(loyalty_members.c.subject_id, loyalty_members.c.balance)):
            assert int(sums.get(sid, 0)) == int(bal) >= 0
        running: dict[str, int] = {}
        for r in conn.execute(select(loyalty_ledger).order_by(loyalty_ledger.c.id)).mappings():
            running[r["subject_id"]] = running.get(r["subject_id"], 0) + r["points"]
            assert running[r["subject_id"]] == r["balance_after"] >= 0


async def test_join_earn_redeem_leave_and_keep_the_points(settings: Settings) -> None:
    async with api(settings) as a:
        sid = await person(a)
        notice = (await a.client.get("/v1/loyalty/notice")).json()
        assert notice["notice_id"] == NOTICE_ID and notice["version"] == 1
        for words in ("financial incentive", "1 points per USD", "good faith", "How to leave", "same prices"):
            assert words in notice["text"]
        await order(a, "m-1", "before-joining", 50)  # not a member yet: earns nothing
        status = await join(a)
        assert status["member"] and status["tier"] == "member" and status["balance"] == 0
        with a.rt.store.engine.connect() as conn:
            rec = conn.execute(select(consent_records).order_by(consent_records.c.seq.desc())).mappings().first()
        assert rec is not None and orjson.loads(rec["granted"]) == ["loyalty"]
        assert rec["notice_id"] == NOTICE_ID and rec["notice_version"] == 1 and rec["notice_sha256"]
        assert a.rt.consent.can_use(sid, "loyalty").allowed

        await order(a, "m-1", "o-1", 123.99)
        await order(a, "m-1", "o-2", "20.5")
        await order(a, "m-1", "o-3", -5)  # refunds and junk earn nothing
        await order(a, "m-1", "o-4", "lots")
        first = (await a.client.post("/v1/loyalty/earn", headers=bearer(a.owner))).json()
        assert first["credited"] == 2 and first["points"] == 123 + 20
        again = (await a.client.post("/v1/loyalty/earn", headers=bearer(a.owner))).json()
        assert again["credited"] == 0  # idempotent per message id
        await order(a, "m-1", "o-1", 123.99)  # a retried send of the same order
        assert a.rt.loyalty.earn_purchases()["credited"] == 0

        r = await a.client.post(
            "/v1/loyalty/redeem", json={"userId": "m-1", "points": 43, "ref": "till-7"}, headers=bearer(a.owner)
        )
        assert r.status_code == 200 and r.json()["balance"] == 100 and r.json()["value"] == 0.43
        replay = await a.client.post(
            "/v1/loyalty/redeem", json={"userId": "m-1", "points": 43, "ref": "till-7"}, headers=bearer(a.owner)
        )
        assert replay.json()["replayed"] is True and replay.json()["balance"] == 100

        r = await a.client.post("/v1/loyalty/members/leave", json={"userId": "m-1"}, headers=bearer(a.owner))
        assert r.status_code == 200 and r.json()["state"] == "left" and r.json()["balance"] == 100
        assert not a.rt.consent.can_use(sid, "loyalty").allowed
        await order(a, "m-1", "o-5", 300)  # after leaving: nothing earned
        assert a.rt.loyalty.earn_purchases()["credited"] == 0
        # no claw-back: the points stay and can still be spent
        r = await a.client.post("/v1/loyalty/redeem", json={"userId": "m-1", "points": 60}, headers=bearer(a.owner))
        assert r.status_code == 200 and r.json()["balance"] == 40
        # joining again continues the same balance, and purchases made meanwhile do not count
        assert (await join(a))["balance"] == 40
        assert a.rt.loyalty.earn_purchases()["credited"] == 0
        balance_invariant(a.rt)
        kinds = [r["kind"] for r in ledger_rows(a.rt)]
        assert kinds == ["purchase", "purchase", "redeem", "redeem"]


async def test_withdrawing_the_consent_anywhere_stops_earning_at_once(settings: Settings) -> None:
    async with api(settings) as a:
        sid = await person(a)
        await join(a)
        r = await a.post("/v1/consent", {"userId": "m-1", "denied": ["loyalty"], "source": "api"})
        assert r.status_code in (200, 201), r.text
        status = (await a.client.get("/v1/loyalty/members", params={"userId": "m-1"}, headers=bearer(a.owner))).json()
        assert status["member"] is False and status["state"] == "consent_withdrawn" and status["tier"] is None
        await order(a, "m-1", "o-1", 100)
        assert a.rt.loyalty.earn_purchases()["credited"] == 0
        assert a.rt.loyalty.price(sid, 100.0, order="x")["price"] == 100.0  # no member price either


async def test_bad_input_is_a_clear_4xx_and_changes_nothing(settings: Settings) -> None:
    async with api(settings) as a:
        await person(a)
        await person(a, "other")
        h = bearer(a.owner)
        # unknown person, several identifiers, wrong notice version
        r = await a.client.post("/v1/loyalty/members", json={"userId": "nobody", "noticeVersion": 1}, headers=h)
        assert r.status_code == 404 and "nobody" not in r.text
        r = await a.client.post(
            "/v1/loyalty/members", json={"userId": "m-1", "email": "m-1@example.org", "noticeVersion": 1}, headers=h
        )
        assert r.status_code == 400
        a.rt.loyalty.notice()
        r = await a.client.post("/v1/loyalty/members", json={"userId": "m-1", "noticeVersion": 7}, headers=h)
        assert r.status_code == 409 and r.json()["error"]["code"] == "notice_changed"
        # a non-member redeeming
        r = await a.client.post("/v1/loyalty/redeem", json={"userId": "other", "points": 1}, headers=h)
        assert r.status_code == 409 and r.json()["error"]["code"] == "not_a_member"
        await join(a)
        # joining twice
        r = await a.client.post("/v1/loyalty/members", json={"userId": "m-1", "noticeVersion": 1}, headers=h)
        assert r.status_code == 409 and r.json()["error"]["code"] == "already_member"
        # more than the balance, zero, negative, fractional, absurd amounts
        a.rt.loyalty.earn(a.rt.consent.subject_for("user_id", "m-1") or "", 10, kind="purchase", ref="seed")
        before = ledger_rows(a.rt)
        for points, status in ((11, 409), (0, 400), (-5, 400), (1.5, 400), (10**12, 400), ("x", 400)):
            r = await a.client.post("/v1/loyalty/redeem", json={"userId": "m-1", "points": points}, headers=h)
            assert r.status_code == status, (points, r.text)
        assert ledger_rows(a.rt) == before
        r = await a.client.post("/v1/loyalty/price", json={"userId": "m-1", "amount": -3}, headers=h)
        assert r.status_code == 400
        with pytest.raises(LoyaltyError):
            a.rt.loyalty.redeem(a.rt.consent.subject_for("user_id", "m-1") or "", -1)
        # a leave of a non-member
        r = await a.client.post("/v1/loyalty/members/leave", json={"userId": "other"}, headers=h)
        assert r.status_code == 409
        balance_invariant(a.rt)


async def test_offers_once_per_member_within_their_window(settings: Settings) -> None:
    async with api(settings) as a:
        sid = await person(a)
        h = bearer(a.owner)
        offer = {
            "name": "genres",
            "title": "Your favourite genres",
            "ask": "Tell us the genres you like best.",
            "fields": ["favouriteGenres"],
            "category": "behavioural",
            "purposes": ["personalization"],
            "points": 200,
            "ends": iso(10),
        }
        r = await a.client.post("/v1/loyalty/offers", json=offer, headers=h)
        assert r.status_code == 201 and r.json()["state"] == "open", r.text
        assert (await a.client.post("/v1/loyalty/offers", json=offer, headers=h)).status_code == 409
        bad = [
            {**offer, "name": "Bad Name"},
            {**offer, "name": "health", "category": "health"},  # no points for special categories
            {**offer, "name": "mail", "fields": ["email"]},
            {**offer, "name": "cat", "category": "nonsense"},
            {**offer, "name": "pur", "purposes": ["necessary"]},
            {**offer, "name": "neg", "points": -1},
            {**offer, "name": "win", "starts": iso(5), "ends": iso(1)},
        ]
        for b in bad:
            assert (await a.client.post("/v1/loyalty/offers", json=b, headers=h)).status_code == 400, b["name"]
        await a.client.post("/v1/loyalty/offers", json={**offer, "name": "later", "starts": iso(3)}, headers=h)
        await a.client.post(
            "/v1/loyalty/offers", json={**offer, "name": "old", "starts": iso(-9), "ends": iso(-1)}, headers=h
        )
        listed = (await a.client.get("/v1/loyalty/offers", params={"state": "open"}, headers=h)).json()
        assert [o["name"] for o in listed] == ["genres"]

        accept = {"userId": "m-1", "values": {"favouriteGenres": ["jazz", "crime"]}}
        r = await a.client.post("/v1/loyalty/offers/genres/accept", json=accept, headers=h)
        assert r.status_code == 409 and r.json()["error"]["code"] == "not_a_member"
        await join(a)
        personalization_before = a.rt.consent.can_use(sid, "personalization")
        for name, values, status in (
            ("genres", {"other": "x"}, 400),
            ("genres", {"favouriteGenres": ""}, 400),
            ("genres", {"favouriteGenres": [["nested"]]}, 400),
            ("nope", {"favouriteGenres": "jazz"}, 404),
            ("later", {"favouriteGenres": "jazz"}, 409),
            ("old", {"favouriteGenres": "jazz"}, 410),
        ):
            r = await a.client.post(f"/v1/loyalty/offers/{name}/accept", json={**accept, "values": values}, headers=h)
            assert r.status_code == status, (name, r.text)
        assert ledger_rows(a.rt) == []
        assert a.rt.consent.can_use(sid, "personalization").allowed == personalization_before.allowed
        r = await a.client.post("/v1/loyalty/offers/genres/accept", json=accept, headers=h)
        assert r.status_code == 200 and r.json()["balance"] == 200, r.text
        assert a.rt.consent.can_use(sid, "personalization").allowed
        r = await a.client.post("/v1/loyalty/offers/genres/accept", json=accept, headers=h)
        assert r.status_code == 409 and r.json()["error"]["code"] == "already_accepted"
        # the answer is a sealed trait of the member, declared in the data dictionary
        with a.rt.store.engine.connect() as conn:
            sealed = conn.execute(
                select(events.c.sealed).where(events.c.message_id == f"loyalty-offer:genres:{sid}")
            ).scalar_one()
        assert b"jazz" not in sealed
        assert orjson.loads(a.rt.vault.open(sid, sealed)) == {"traits": {"favouriteGenres": ["jazz", "crime"]}}
        assert any(d["path"] == "favouriteGenres" for d in a.rt.dictionary.list("loyalty"))
        balance_invariant(a.rt)


async def test_expiry_uses_the_soonest_expiring_points_first(make_settings: Callable[..., Settings]) -> None:
    async with api(make_settings(loyalty_expiry_days=30)) as a:
        sid = await person(a)
        await join(a)
        t0 = now_ms()
        lo = a.rt.loyalty
        lo.earn(sid, 100, kind="purchase", ref="a", now=t0)
        lo.earn(sid, 50, kind="purchase", ref="b", now=t0 + 10 * DAY_MS)
        lo.redeem(sid, 30, now=t0 + 11 * DAY_MS)
        assert lo.expire(now=t0 + 29 * DAY_MS)["points"] == 0
        assert lo.expire(now=t0 + 31 * DAY_MS) == {"members": 1, "points": 70}  # what is left of the first lot
        assert lo.expire(now=t0 + 31 * DAY_MS)["points"] == 0  # idempotent
        assert lo.status(sid)["balance"] == 50
        # a former member's points keep expiring by the same rule
        lo.leave(sid)
        assert lo.expire(now=t0 + 41 * DAY_MS)["points"] == 50
        assert lo.status(sid)["balance"] == 0
        r = await a.client.post("/v1/loyalty/expire", headers=bearer(a.owner))
        assert r.status_code == 200
        balance_invariant(a.rt)


async def test_tiers_feed_segments_and_member_prices(make_settings: Callable[..., Settings]) -> None:
    async with api(make_settings(loyalty_tiers="member=0:0,silver=100:5,gold=300:10")) as a:
        gold = await person(a, "g")
        silver = await person(a, "s")
        await person(a, "n")
        await join(a, "g")
        await join(a, "s")
        lo = a.rt.loyalty
        lo.earn(gold, 350, kind="purchase", ref="x")
        lo.earn(silver, 150, kind="purchase", ref="x")
        lo.earn(silver, 500, kind="purchase", ref="y", now=now_ms() - 400 * DAY_MS)  # outside the window
        assert lo.status(gold)["tier"] == "gold" and lo.status(silver)["tier"] == "silver"
        h = bearer(a.owner)
        r = await a.client.post("/v1/loyalty/price", json={"userId": "g", "amount": 80, "orderId": "A1"}, headers=h)
        assert r.json() == {"member": True, "tier": "gold", "discount_percent": 10.0, "discount": 8.0, "price": 72.0}
        await a.client.post("/v1/loyalty/price", json={"userId": "g", "amount": 80, "orderId": "A1"}, headers=h)
        r = await a.client.post("/v1/loyalty/price", json={"userId": "n", "amount": 80}, headers=h)
        assert r.json()["price"] == 80.0 and r.json()["member"] is False
        st = lo.statement(gold)
        assert st["received"]["discounts"] == {"count": 1, "amount": 8.0}  # once per order
        members = a.rt.segments.evaluate({"conditions": [{"loyalty_tier": ["gold", "silver"]}]})
        assert sorted(members) == sorted(a.rt.identity.profile_of(s) for s in (gold, silver))
        only_gold = a.rt.segments.evaluate({"conditions": [{"loyalty_tier": "gold"}]})
        assert only_gold == [a.rt.identity.profile_of(gold)]
        lo.leave(gold)  # tiers stop at once
        assert a.rt.segments.evaluate({"conditions": [{"loyalty_tier": "gold"}]}) == []


async def test_value_statement_export_and_erasure(settings: Settings) -> None:
    async with api(settings) as a:
        sid = await person(a)
        await join(a)
        lo = a.rt.loyalty
        lo.earn(sid, 120, kind="purchase", ref="order:1", amount=120.0)
        lo.redeem(sid, 20)
        assert lo.record_benefit(sid, "personalised_offer", "recommended: a jazz box set", ref="rec-1")
        assert not lo.record_benefit(sid, "personalised_offer", "again", ref="rec-1")
        with pytest.raises(LoyaltyError):
            lo.record_benefit(sid, "Bad Kind!", "x")
        h = bearer(a.owner)
        st = (await a.client.get("/v1/loyalty/statement", params={"userId": "m-1"}, headers=h)).json()
        assert st["membership"]["balance"] == 100
        assert st["received"]["points_earned"] == 120 and st["received"]["points_redeemed"] == 20
        assert st["received"]["personalised_offers_used"] == 1
        assert "loyalty" in [p["purpose"] for p in st["shared"]["purposes"]]
        assert any(c["category"] == "Contact details" for c in st["shared"]["categories"])
        assert "m-1@example.org" not in orjson.dumps(st).decode()
        assert (await a.client.get("/v1/loyalty/statement", params={"userId": "zz"}, headers=h)).status_code == 404

        from candor.rights.export import build_export

        z = zipfile.ZipFile(io.BytesIO(build_export(a.rt, a.rt.identity.members(sid), "req-1")))
        data = orjson.loads(z.read("data.json"))
        assert [r["record"] for r in data["loyalty"]] == ["membership", "points", "points"]
        assert data["loyalty_benefits"][0]["kind"] == "personalised_offer"
        assert data["value_statement"][0]["received"]["balance"] == 100
        assert "Your loyalty membership" in z.read("index.html").decode()

        a.rt.rights.erasure.erase([sid], request_id="req-2", actor="test")
        with a.rt.store.engine.connect() as conn:
            for t in (loyalty_ledger, loyalty_members):
                assert conn.execute(select(func.count()).select_from(t).where(t.c.subject_id == sid)).scalar() == 0


async def test_roles(settings: Settings) -> None:
    async with api(settings) as a:
        await person(a)
        analyst = a.rt.directory.create_token("a", "analyst")
        support = a.rt.directory.create_token("s", "support")
        r = await a.client.get("/v1/loyalty/members", params={"userId": "m-1"}, headers=bearer(analyst))
        assert r.status_code == 403
        r = await a.client.get("/v1/loyalty/members", params={"userId": "m-1"}, headers=bearer(support))
        assert r.status_code == 200 and r.json()["state"] == "not_joined"
        r = await a.client.post("/v1/loyalty/redeem", json={"userId": "m-1", "points": 1}, headers=bearer(support))
        assert r.status_code == 403


def test_concurrent_redemptions_never_overspend(make_settings: Callable[..., Settings]) -> None:
    rt = Runtime(make_settings())
    try:
        with rt.store.write() as conn:
            sid, _ = rt.vault.new_subject(conn)
        rt.loyalty.join(sid)
        rt.loyalty.earn(sid, 100, kind="purchase", ref="seed")
        results: list[str] = []
        barrier = threading.Barrier(8)

        def spend() -> None:
            barrier.wait()
            try:
                rt.loyalty.redeem(sid, 30)
                results.append("ok")
            except LoyaltyError as exc:
                results.append(exc.code)

        threads = [threading.Thread(target=spend) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results.count("ok") == 3 and results.count("insufficient_points") == 5
        assert rt.loyalty.status(sid)["balance"] == 10
        balance_invariant(rt)
    finally:
        rt.close()


def test_tier_settings_are_checked() -> None:
    assert [t.name for t in parse_tiers("a=0:0, b=10:2.5")] == ["a", "b"]
    for bad in ("", "a=5:0", "a=0:0,b=0:1", "a=0:0,a=5:1", "a=0", "a=0:101"):
        with pytest.raises(ValueError, match="CANDOR_LOYALTY_TIERS"):
            parse_tiers(bad)


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("earn"), st.integers(1, 500), st.integers(0, 60)),
        st.tuples(st.just("redeem"), st.integers(1, 600), st.integers(0, 60)),
        st.tuples(st.just("expire"), st.just(0), st.integers(0, 60)),
    ),
    max_size=25,
)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_ledger_invariant_under_random_sequences(make_settings: Callable[..., Settings], ops: list[Any]) -> None:
    rt = Runtime(make_settings(loyalty_expiry_days=20))
    try:
        with rt.store.write() as conn:
            sid, _ = rt.vault.new_subject(conn)
        t0 = now_ms()
        rt.loyalty.join(sid, now=t0)
        expected = 0
        day = 0
        for i, (op, n, step) in enumerate(ops):
            day += step
            ts = t0 + day * DAY_MS
            if op == "earn":
                rt.loyalty.earn(sid, n, kind="purchase", ref=f"r{i}", now=ts)
                expected += n
            elif op == "redeem":
                try:
                    rt.loyalty.redeem(sid, n, now=ts)
                    expected -= n
                except LoyaltyError as exc:
                    assert exc.code == "insufficient_points" and n > expected
            else:
                expected -= rt.loyalty.expire(now=ts, subjects=[sid])["points"]
            assert rt.loyalty.status(sid, now=ts)["balance"] == expected >= 0
        balance_invariant(rt)
        # after everything has expired, nothing is left
        rt.loyalty.expire(now=t0 + (day + 21) * DAY_MS, subjects=[sid])
        assert rt.loyalty.status(sid)["balance"] == 0
        balance_invariant(rt)
    finally:
        rt.close()


def test_a_notice_that_requires_reconsent_ends_older_memberships(make_settings: Callable[..., Settings]) -> None:
    rt = Runtime(make_settings())
    try:
        with rt.store.write() as conn:
            sid, _ = rt.vault.new_subject(conn)
        rt.loyalty.join(sid)
        rt.loyalty.earn(sid, 40, kind="purchase", ref="x")
        same = rt.loyalty.publish_notice()
        assert same.version == 1  # unchanged settings: no new version
        rt.consent.add_notice(
            NOTICE_ID, 2, "en", rt.loyalty.notice_text() + "\n\nFewer points.", requires_reconsent=True
        )
        status = rt.loyalty.status(sid)
        assert status["member"] is False and status["balance"] == 40  # asked again; the points stay
        with pytest.raises(LoyaltyError) as info:
            rt.loyalty.join(sid, notice_version=1)
        assert info.value.code == "notice_changed"
        assert rt.loyalty.join(sid, notice_version=2)["member"] is True
    finally:
        rt.close()


async def test_purchases_of_every_identifier_of_the_profile_earn(settings: Settings) -> None:
    async with api(settings) as a:
        assert (await a.post("/v1/track", {"anonymousId": "browser-1", "event": "Product Viewed"})).status_code == 200
        browser = a.rt.consent.subject_for("anonymous_id", "browser-1")
        r = await a.post("/v1/identify", {"userId": "m-1", "anonymousId": "browser-1", "traits": {"plan": "x"}})
        assert r.status_code == 200
        account = a.rt.consent.subject_for("user_id", "m-1")
        assert browser and account and browser != account
        assert a.rt.identity.profile_of(browser) == a.rt.identity.profile_of(account)
        await join(a)
        await order(a, "x", "anon-order", 30, userId=None, anonymousId="browser-1")
        assert a.rt.loyalty.earn_purchases()["credited"] == 1
        assert a.rt.loyalty.status(browser)["balance"] == 30 == a.rt.loyalty.status(account)["balance"]
        r = await a.client.post(
            "/v1/loyalty/members", json={"anonymousId": "browser-1", "noticeVersion": 1}, headers=bearer(a.owner)
        )
        assert r.status_code == 409  # one membership per person, whichever identifier asks
        balance_invariant(a.rt)
