"""The identity graph in the store, on SQLite and PostgreSQL: stitching, guards, review, split."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from candor import audit
from candor.config import Settings
from candor.store.schema import events, identifiers, identity_edges, identity_flags, profile_subjects
from tests.helpers import Api, api, bearer

pytestmark = pytest.mark.anyio


def table(a: Api, t: Any) -> list[dict[str, Any]]:
    with a.rt.store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(t)).mappings()]


def partition(a: Api) -> set[frozenset[str]]:
    groups: dict[str, set[str]] = {}
    for r in table(a, profile_subjects):
        groups.setdefault(r["profile_id"], set()).add(r["subject_id"])
    return {frozenset(g) for g in groups.values()}


def subject_of(a: Api, id_type: str, value: str) -> str:
    sid = a.rt.consent.subject_for(id_type, value)
    assert sid is not None
    return sid


async def test_browsing_then_login_is_one_profile_and_consent_follows_the_person(
    make_settings: Callable[..., Settings],
) -> None:
    async with api(make_settings(default_jurisdiction="EU")) as a:
        owner = bearer(a.owner)
        # the banner's choice is recorded on the anonymous browser, before login
        r = await a.post("/v1/consent", {"anonymousId": "browser-1", "granted": ["analytics"], "source": "banner"})
        assert r.status_code in (200, 201), r.text
        await a.post(
            "/v1/identify", {"userId": "u-1", "anonymousId": "browser-1", "traits": {"email": "p@example.com"}}
        )
        user, browser = subject_of(a, "user_id", "u-1"), subject_of(a, "anonymous_id", "browser-1")
        assert user != browser
        assert partition(a) == {frozenset({user, browser})}
        # the account's own subject decides with the choice made on the browser: one person
        assert a.rt.consent.can_use(user, "analytics").allowed
        assert not a.rt.consent.can_use(user, "advertising").allowed
        r = await a.client.get(f"/v1/profiles/{user}", headers=owner)
        body = r.json()
        assert body["profile_id"] == min(user, browser)
        assert set(body["subjects"]) == {user, browser}
        assert {link["rule"] for link in body["links"]} == {"identify"}
        assert body["identities"][0]["type"] == "user_id"  # CANDOR_IDENTITY_PRIORITY order


async def test_two_accounts_on_one_browser_are_held_for_review(settings: Settings) -> None:
    async with api(settings) as a:
        dpo = bearer(a.rt.directory.create_token("dpo", "privacy_officer"))
        await a.post("/v1/identify", {"userId": "parent", "anonymousId": "family-ipad"})
        await a.post("/v1/identify", {"userId": "teen", "anonymousId": "family-ipad"})
        parent, teen = subject_of(a, "user_id", "parent"), subject_of(a, "user_id", "teen")
        assert parent != teen
        assert not any(parent in g and teen in g for g in partition(a))
        assert sorted(e["state"] for e in table(a, identity_edges)) == ["held", "linked"]
        r = await a.client.get("/v1/identity/reviews", headers=dpo)
        [item] = r.json()
        assert item["kind"] == "conflict" and "user_id" in item["reason"]
        # a reviewer's decision: approve makes a manual edge that the limit does not hold
        r = await a.client.post(f"/v1/identity/reviews/{item['id']}/approve", headers=dpo)
        assert r.status_code == 200 and r.json()["edge"]
        assert any(parent in g and teen in g for g in partition(a))
        r = await a.client.post(f"/v1/identity/reviews/{item['id']}/approve", headers=dpo)
        assert r.status_code == 409
        actions = [e["action"] for e in audit.entries(a.rt.store, limit=1000)]
        assert "identity.review" in actions and "identity.link" in actions
        marketer = bearer(a.rt.directory.create_token("m", "marketer"))
        assert (await a.client.get("/v1/identity/reviews", headers=marketer)).status_code == 403


async def test_rejecting_a_conflict_keeps_people_apart_for_good(settings: Settings) -> None:
    async with api(settings) as a:
        await a.post("/v1/identify", {"userId": "p1", "anonymousId": "kiosk"})
        await a.post("/v1/identify", {"userId": "p2", "anonymousId": "kiosk"})
        [item] = a.rt.identity.reviews()
        a.rt.identity.decide_review(item["id"], approve=False, actor="test")
        held = next(e for e in table(a, identity_edges) if e["id"] == item["edge_id"])
        assert held["state"] == "removed" and held["removed_by"] == "test"
        assert a.rt.identity.rebuild()["held"] == 0
        assert not any(len(g) > 2 for g in partition(a))


async def test_a_shared_store_email_becomes_a_supernode_and_links_nobody(
    make_settings: Callable[..., Settings],
) -> None:
    async with api(make_settings(identity_max_shared=2)) as a:  # anonymous ids: 5 x 2 = 10
        for i in range(12):
            await a.post("/v1/identify", {"anonymousId": f"till-{i}", "traits": {"email": "receipts@shop.example"}})
        assert partition(a) == set()
        [flag] = table(a, identity_flags)
        assert flag["id_type"] == "email" and flag["neighbours"] > 10
        assert {e["state"] for e in table(a, identity_edges) if e["a_subject"] != e["b_subject"]} == {"flagged"}
        r = await a.client.get("/v1/identity/flags", headers=bearer(a.owner))
        assert [f["id_type"] for f in r.json()] == ["email"]
        assert "receipts" not in r.text


async def test_junk_identifiers_never_link(make_settings: Callable[..., Settings]) -> None:
    async with api(make_settings(identity_junk_values="noemail@shop.example, 0000000000")) as a:
        for i in range(3):
            await a.post(
                "/v1/identify",
                {"userId": f"c{i}", "traits": {"email": "NoEmail@shop.example", "phone": "undefined"}},
            )
            await a.post("/v1/track", {"userId": f"c{i}", "anonymousId": "null", "event": "Viewed"})
        assert {r["id_type"] for r in table(a, identifiers)} == {"user_id"}
        assert partition(a) == set()


async def test_split_between_subjects_recomputes_by_replay(settings: Settings) -> None:
    async with api(settings) as a:
        owner = bearer(a.owner)
        await a.post("/v1/track", {"anonymousId": "shared-laptop", "event": "Viewed"})
        await a.post("/v1/identify", {"userId": "ann", "anonymousId": "shared-laptop"})
        ann, laptop = subject_of(a, "user_id", "ann"), subject_of(a, "anonymous_id", "shared-laptop")
        assert partition(a) == {frozenset({ann, laptop})}
        edge = next(e for e in table(a, identity_edges) if e["a_subject"] != e["b_subject"])
        r = await a.client.post(
            f"/v1/identity/edges/{edge['id']}/split", json={"reason": "shared laptop"}, headers=owner
        )
        assert r.status_code == 200, r.text
        assert set(r.json()["profiles_after"]) == {ann, laptop}
        assert partition(a) == set()
        gone = next(e for e in table(a, identity_edges) if e["id"] == edge["id"])
        assert gone["state"] == "removed" and gone["removed_ms"]
        assert (
            await a.client.post(f"/v1/identity/edges/{edge['id']}/split", json={}, headers=owner)
        ).status_code == 409
        assert (await a.client.post("/v1/identity/edges/999999/split", json={}, headers=owner)).status_code == 404
        entry = next(e for e in audit.entries(a.rt.store, limit=1000) if e["action"] == "identity.split")
        assert entry["details"]["reason"] == "shared laptop"
        # the same evidence again does not silently undo the split
        await a.post("/v1/identify", {"userId": "ann", "anonymousId": "shared-laptop"})
        assert partition(a) == set()


async def test_split_inside_one_subject_moves_the_cut_off_identifiers_and_their_events(settings: Settings) -> None:
    async with api(settings) as a:
        # first contact carries both ids: one subject holds both
        await a.post("/v1/identify", {"userId": "bob", "anonymousId": "b-phone", "traits": {"firstName": "Bob"}})
        await a.post("/v1/track", {"anonymousId": "b-phone", "event": "Browsed"})
        bob = subject_of(a, "user_id", "bob")
        assert subject_of(a, "anonymous_id", "b-phone") == bob
        edge = next(e for e in table(a, identity_edges) if e["b_type"] == "anonymous_id")
        out = a.rt.identity.split(edge["id"], actor="test", reason="phone belongs to someone else")
        [moved_to] = out["new_subjects"]
        assert subject_of(a, "anonymous_id", "b-phone") == moved_to
        assert subject_of(a, "user_id", "bob") == bob
        rows = {r["event"] or r["type"]: r for r in table(a, events)}
        assert rows["Browsed"]["subject_id"] == moved_to and rows["identify"]["subject_id"] == bob
        doc = orjson.loads(a.rt.vault.open(moved_to, rows["Browsed"]["sealed"]))
        assert doc["anonymousId"] == "b-phone"
        # the writer's identifier cache follows the move: new events of the phone go to the new subject
        await a.post("/v1/track", {"anonymousId": "b-phone", "event": "Again"})
        assert {r["event"]: r["subject_id"] for r in table(a, events)}["Again"] == moved_to
        assert partition(a) == set()


async def test_incremental_profiles_equal_a_full_rebuild(settings: Settings) -> None:
    import random

    rng = random.Random(7)
    async with api(settings) as a:
        for step in range(60):
            body: dict[str, Any] = {"anonymousId": f"a{rng.randrange(12)}"}
            if rng.random() < 0.5:
                body["userId"] = f"u{rng.randrange(5)}"
            if rng.random() < 0.4:
                body["traits"] = {"email": f"e{rng.randrange(6)}@example.com"}
            await a.post("/v1/identify", body)
            live = [e for e in table(a, identity_edges) if e["removed_ms"] is None]
            if live and step % 9 == 8:
                a.rt.identity.split(rng.choice(live)["id"], actor="test")
        before = (partition(a), {e["id"]: e["state"] for e in table(a, identity_edges)})
        a.rt.identity.rebuild()
        after = (partition(a), {e["id"]: e["state"] for e in table(a, identity_edges)})
        assert before == after
        assert any(len(g) > 1 for g in before[0]) and "held" in before[1].values()
        # a rebuild writes only the rows that differ: a damaged profile table is repaired all the same
        rows = table(a, profile_subjects)
        with a.rt.store.write() as conn:
            conn.execute(profile_subjects.delete().where(profile_subjects.c.subject_id == rows[0]["subject_id"]))
            conn.execute(
                profile_subjects.update()
                .where(profile_subjects.c.subject_id == rows[1]["subject_id"])
                .values(profile_id="not-a-profile")
            )
            conn.execute(profile_subjects.insert(), {"subject_id": "no-edges", "profile_id": rows[2]["profile_id"]})
        assert partition(a) != before[0]
        a.rt.identity.rebuild()
        assert partition(a) == before[0]
