"""Recommendations end to end, on SQLite and PostgreSQL: real events through the API, the model built
on DuckDB over the analytics store, answers with their reasons, consent read on every request."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import pytest

from candor.config import Settings
from candor.store.schema import rec_neighbors
from tests.helpers import Api, api, bearer

pytestmark = pytest.mark.anyio

ITEMS = [
    {"product_id": "B-1", "name": "Salt and Paper", "category": "Fiction"},
    {"product_id": "B-2", "name": "Small Hours", "category": "Fiction"},
    {"product_id": "B-3", "name": "The Quiet Pier", "category": "Mystery"},
    {"product_id": "M-1", "name": "Blue Hour Sessions", "category": "Jazz"},
    {"product_id": "M-2", "name": "Late Train Home", "category": "Jazz"},
    {"product_id": "H-1", "name": "Living with Diabetes", "category": "Wellbeing", "data_category": "health"},
    {"product_id": "R-1", "name": "Daily Prayers", "category": "Religion"},
]


async def order(a: Api, user: str, *products: str, ts: str = "2026-11-01T10:00:00Z") -> None:
    r = await a.post(
        "/v1/track",
        {
            "userId": user,
            "event": "Order Completed",
            "timestamp": ts,
            "messageId": secrets.token_hex(8),
            "properties": {"order_id": secrets.token_hex(4), "products": [{"product_id": p} for p in products]},
        },
    )
    assert r.status_code == 200, r.text


async def view(a: Api, user: str, product: str) -> None:
    r = await a.post(
        "/v1/track",
        {"userId": user, "event": "Product Viewed", "messageId": secrets.token_hex(8),
         "properties": {"product_id": product}},
    )  # fmt: skip
    assert r.status_code == 200, r.text


async def shop(a: Api) -> None:
    """Five people who bought Salt and Paper with Blue Hour Sessions; the sensitive items alongside."""
    a.rt.recommend.catalog.upsert(ITEMS)
    for i in range(5):
        await order(a, f"fan-{i}", "B-1", "M-1", "H-1", "R-1")
    for i in range(3):
        await order(a, f"other-{i}", "B-3", "B-2")
    await order(a, "alice", "B-1")


def grant(a: Api, user: str, allowed: bool) -> None:
    sid = a.rt.consent.subject_for("user_id", user)
    assert sid
    change = {"personalization"}
    with a.rt.store.write() as conn:
        a.rt.consent.record(
            conn, sid, granted=change if allowed else set(), denied=set() if allowed else change,
            source="api", actor="test",
        )  # fmt: skip


@pytest.fixture
def rec_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(recommend_refresh_seconds=0, analytics_refresh_seconds=0)


async def test_customers_who_bought_this_also_bought_with_the_reason(rec_settings: Settings) -> None:
    async with api(rec_settings) as a:
        await shop(a)
        result = a.rt.recommend.rebuild(full=True)
        assert result["mode"] == "full" and result["neighbors"] > 0
        r = await a.client.get("/v1/recommendations?userId=alice", headers=bearer(a.owner))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["personalized"] is True and body["basis"] == "personalized"
        first = body["items"][0]
        assert first["product_id"] == "M-1"
        assert first["reason"] == {"kind": "bought", "text": "because you bought Salt and Paper", "item": "B-1"}
        ids = [i["product_id"] for i in body["items"]]
        assert "B-1" not in ids  # already bought
        assert not {"H-1", "R-1"} & set(ids)  # sensitive: never output
        with a.rt.store.engine.connect() as conn:
            used = {x for row in conn.execute(rec_neighbors.select()) for x in (row.item_id, row.neighbor_id)}
        assert not {"H-1", "R-1"} & used  # nor input


async def test_withdrawal_takes_effect_on_the_next_request(rec_settings: Settings) -> None:
    async with api(rec_settings) as a:
        await shop(a)
        a.rt.recommend.rebuild(full=True)
        assert a.rt.recommend.for_identifiers("alice", None).personalized
        grant(a, "alice", False)
        answer = a.rt.recommend.for_identifiers("alice", None)
        assert answer.personalized is False and answer.basis == "no_consent"
        assert {i["reason"]["kind"] for i in answer.items} == {"bestseller"}
        assert all("because" not in i["reason"]["text"] for i in answer.items)
        grant(a, "alice", True)
        assert a.rt.recommend.for_identifiers("alice", None).personalized


async def test_withdrawal_recorded_by_another_process_is_seen_at_once(rec_settings: Settings) -> None:
    async with api(rec_settings) as a:
        await shop(a)
        a.rt.recommend.rebuild(full=True)
        assert a.rt.recommend.for_identifiers("alice", None).personalized
        sid = a.rt.consent.subject_for("user_id", "alice")
        assert sid
        # another process: writes the ledger without touching this process's cache
        from candor.app import Runtime

        other = Runtime(rec_settings)
        try:
            with other.store.write() as conn:
                other.consent.record(conn, sid, denied={"personalization"}, source="api", actor="test")
        finally:
            other.close()
        assert a.rt.recommend.for_identifiers("alice", None).basis == "no_consent"


async def test_stated_interests_are_blended_and_explained(rec_settings: Settings) -> None:
    async with api(rec_settings) as a:
        await shop(a)
        await view(a, "zoe", "B-3")
        sid = a.rt.consent.subject_for("user_id", "zoe")
        assert sid
        a.rt.rights.add_traits(sid, {"interests": ["jazz"]}, source="preference-center", message_id="p:1")
        a.rt.recommend.rebuild(full=True)
        items = a.rt.recommend.for_identifiers("zoe", None).items
        reasons = {i["product_id"]: i["reason"] for i in items}
        assert reasons["M-1"]["text"] == "because you said you like jazz"


async def test_unknown_or_erased_people_get_bestsellers_never_their_data(rec_settings: Settings) -> None:
    async with api(rec_settings) as a:
        await shop(a)
        a.rt.recommend.rebuild(full=True)
        unknown = a.rt.recommend.for_identifiers("nobody", None)
        assert unknown.basis == "unknown_person" and not unknown.personalized
        sid = a.rt.consent.subject_for("user_id", "alice")
        assert sid
        a.rt.rights.erasure.erase(a.rt.identity.members(sid), request_id="t-erase", actor="test")
        gone = a.rt.recommend.for_identifiers("alice", None)
        assert not gone.personalized and {i["reason"]["kind"] for i in gone.items} <= {"bestseller"}
        r = await a.client.get("/v1/recommendations", headers=bearer(a.owner))
        assert r.status_code == 400 and "userId" in r.json()["error"]["message"]
        r = await a.client.get("/v1/recommendations?userId=a&limit=500", headers=bearer(a.owner))
        assert r.status_code == 400


async def test_items_that_left_the_catalogue_are_never_recommended(rec_settings: Settings) -> None:
    async with api(rec_settings) as a:
        await shop(a)
        a.rt.recommend.rebuild(full=True)
        assert "M-1" in [i["product_id"] for i in a.rt.recommend.for_identifiers("alice", None).items]
        r = await a.client.post("/v1/catalog", json={"items": [{**ITEMS[3], "active": False}]}, headers=bearer(a.owner))
        assert r.status_code == 200 and r.json() == {"written": 1}
        ids = [i["product_id"] for i in a.rt.recommend.for_identifiers("alice", None).items]
        assert "M-1" not in ids
        r = await a.client.post("/v1/catalog", json={"items": [{"product_id": "X"}]}, headers=bearer(a.owner))
        assert r.status_code == 400 and "items[0].name" in r.json()["error"]["message"]


async def test_incremental_rebuild_updates_only_what_changed(rec_settings: Settings) -> None:
    async with api(rec_settings) as a:
        await shop(a)
        first = a.rt.recommend.rebuild(full=True)
        same = a.rt.recommend.rebuild(full=False)
        assert same["changed"] == 0
        for i in range(3):
            await order(a, f"late-{i}", "B-3", "M-2")
        inc = a.rt.recommend.rebuild(full=False)
        assert inc["mode"] == "incremental" and inc["version"] > first["version"]
        assert 0 < inc["changed"] < len(ITEMS)
        with a.rt.store.engine.connect() as conn:
            pairs = {(r.item_id, r.neighbor_id) for r in conn.execute(rec_neighbors.select())}
        assert ("B-3", "M-2") in pairs and ("B-1", "M-1") in pairs


async def test_access_export_holds_the_recommendations_and_their_reasons(rec_settings: Settings) -> None:
    from candor.rights.export import SECTIONS

    async with api(rec_settings) as a:
        await shop(a)
        a.rt.recommend.rebuild(full=True)
        sid = a.rt.consent.subject_for("user_id", "alice")
        section = next(s for s in SECTIONS if s.name == "recommendations")
        with a.rt.store.engine.connect() as conn:
            rows = section.rows(a.rt, conn, a.rt.identity.members(sid or ""), "r-1")
        assert rows and rows[0]["why"] == "because you bought Salt and Paper"


async def test_auth_and_scope(rec_settings: Settings) -> None:
    async with api(rec_settings) as a:
        analyst = a.rt.directory.create_token("a", "analyst")
        marketer = a.rt.directory.create_token("m", "marketer")
        assert (await a.client.get("/v1/recommendations?userId=x")).status_code == 401
        assert (await a.client.get("/v1/recommendations?userId=x", headers=bearer(analyst))).status_code == 403
        assert (await a.client.get("/v1/recommendations?userId=x", headers=bearer(marketer))).status_code == 200


def test_cli_rebuild_and_show(tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from candor.cli import app

    env = {"CANDOR_DATA_DIR": str(tmp_path / "d"), "CANDOR_DEFAULT_JURISDICTION": "US"}
    runner = CliRunner()
    r = runner.invoke(app, ["recommend", "catalog", "--demo"], env=env)
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["recommend", "rebuild"], env=env)
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["recommend", "show", "--user-id", "nobody"], env=env)
    assert (r.exit_code == 0 and "bestseller" in r.output.lower()) or "no recommendations" in r.output.lower()
    r = runner.invoke(app, ["decide", "show", "--placement", "home", "--user-id", "nobody"], env=env)
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["decide", "show", "--placement", "nope", "--user-id", "nobody"], env=env)
    assert r.exit_code == 1 and "no placement named" in r.output


def test_the_model_job_transpiles_to_spark() -> None:
    """The Spark engine runs the same steps, carried to Spark's SQL by sqlglot (running it needs the
    spark extra: tests/test_spark.py style; here the text is checked)."""
    from candor.recommend.model import EXTRACT_SPARK, Params, spark_sql, steps

    for touched in (False, True):
        for name, sql in steps(Params(), touched=touched):
            text = spark_sql(sql)
            assert "SELECT" in text and "json_extract" not in text, name
    assert "explode(from_json(" in EXTRACT_SPARK


async def test_a_persons_devices_count_as_one_history(rec_settings: Settings) -> None:
    async with api(rec_settings) as a:
        await shop(a)
        r = await a.post(
            "/v1/track",
            {
                "anonymousId": "device-9",
                "event": "Product Viewed",
                "messageId": "v-9",
                "properties": {"product_id": "B-1"},
            },
        )
        assert r.status_code == 200
        r = await a.post("/v1/identify", {"anonymousId": "device-9", "userId": "carol", "messageId": "i-9"})
        assert r.status_code == 200
        a.rt.recommend.rebuild(full=True)
        answer = a.rt.recommend.for_identifiers("carol", None)
        assert answer.personalized
        assert answer.items[0]["reason"]["text"] == "because you looked at Salt and Paper"


async def test_the_customer_sees_their_recommendations_and_why(rec_settings: Settings) -> None:
    from candor.web.preferences import make_link

    async with api(rec_settings) as a:
        await shop(a)
        r = await a.post("/v1/identify", {"userId": "alice", "traits": {"email": "alice@example.org"}})
        assert r.status_code == 200
        a.rt.recommend.rebuild(full=True)
        assert (await a.client.get("/preferences/recommendations")).status_code == 401
        link = make_link(a.rt, "email", "alice@example.org")
        r = await a.client.get("/preferences/open?t=" + link.split("t=", 1)[1])
        assert r.status_code == 303
        assert "/preferences/recommendations" in (await a.client.get("/preferences")).text
        page = await a.client.get("/preferences/recommendations")
        assert page.status_code == 200
        assert "Blue Hour Sessions" in page.text and "because you bought Salt and Paper" in page.text
        grant(a, "alice", False)
        page = await a.client.get("/preferences/recommendations")
        assert "because you bought" not in page.text and "Nothing\nabout you is used" in page.text
