"""Field-level retention from the data dictionary, on both stores: a declared field past its retention
leaves the stored events (clear and sealed parts) and the analytics store; the rest stays."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import duckdb
import orjson
import pytest
from sqlalchemy import select

from candor import audit, retention
from candor.config import Settings
from candor.retention import DAY_MS
from candor.store import now_ms
from candor.store.schema import events
from tests.helpers import Api, api, basic
from tests.test_retention import iso, send

pytestmark = pytest.mark.anyio


def stored(a: Api) -> dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """messageId -> (clear properties, clear context, the decrypted sealed part)."""
    out = {}
    with a.rt.store.engine.connect() as conn:
        rows = conn.execute(
            select(events.c.message_id, events.c.subject_id, events.c.properties, events.c.context, events.c.sealed)
        ).all()
        for mid, sid, props, ctx, sealed in rows:
            out[mid] = (json.loads(props), json.loads(ctx), orjson.loads(a.rt.vault.open(sid, sealed, conn)))
    return out


def lake_properties(a: Api) -> dict[int, dict[str, Any]]:
    lake = a.rt.analytics.lake
    assert lake is not None
    files = [str(f) for f in lake.all_files()]
    if not files:
        return {}
    con = duckdb.connect()
    try:
        rows = con.execute("SELECT id, properties FROM read_parquet($f)", {"f": files}).fetchall()
    finally:
        con.close()
    return {int(i): json.loads(p) for i, p in rows}


async def test_declared_fields_leave_events_and_the_analytics_store_after_their_retention(
    make_settings: Callable[..., Settings],
) -> None:
    now = now_ms()
    async with api(make_settings()) as a:
        d = a.rt.dictionary
        d.declare("test-source", "properties", "coupon", "behavioural", 7, actor="test")  # clear
        d.declare("test-source", "properties", "shoe_size", "demographic", 10, actor="test")  # sealed
        d.declare("test-source", "traits", "favourite.colour", "demographic", 10, actor="test")
        d.declare("test-source", "context", "campaign.term", "behavioural", 7, actor="test")  # clear context
        other = a.rt.directory.create_source("other-source")  # declares nothing: its coupons stay
        props = {"coupon": "JAZZ10", "shoe_size": 44, "item": "vinyl"}
        ctx = {"campaign": {"name": "winter", "term": "jazz records"}}
        for mid, age in (("old", 20), ("recent", 2)):
            await send(a, {"userId": "u1", "event": "Viewed", "messageId": mid, "properties": props,
                           "context": ctx}, now - age * DAY_MS)  # fmt: skip
        await send(a, {"kind": "identify", "userId": "u1", "messageId": "who",
                       "traits": {"favourite": {"colour": "teal", "food": "soup"}}}, now - 30 * DAY_MS)  # fmt: skip
        r = await a.client.post(
            "/v1/track",
            json={"userId": "u2", "event": "Viewed", "messageId": "theirs", "properties": {"coupon": "X1"},
                  "timestamp": iso(now - 100 * DAY_MS)},
            headers=basic(other),
        )  # fmt: skip
        assert r.status_code == 200, r.text
        before = stored(a)
        assert before["old"][0]["coupon"] == "JAZZ10" and before["old"][2]["properties"]["shoe_size"] == 44
        assert a.rt.analytics.lake is not None
        a.rt.analytics.lake.refresh()
        ids = _ids(a)
        assert lake_properties(a)[ids["old"]]["coupon"] == "JAZZ10"

        out = retention.run(a.rt, now=now, actor="test")
        res = out["results"]["data_dictionary"]
        assert res["stripped"] == 2, res  # "old" and "who"
        assert res["fields"] == {"properties.coupon": 1, "properties.shoe_size": 1, "context.campaign.term": 1,
                                 "traits.favourite.colour": 1}, res  # fmt: skip
        assert res["analytics_rows"] == 2  # identify events are in the analytics store too
        after = stored(a)
        clear, cctx, sealed = after["old"]
        assert clear == {"item": "vinyl"} and "shoe_size" not in sealed.get("properties", {})
        assert cctx["campaign"] == {"name": "winter"} and sealed["context"]["campaign"] == {"name": "winter"}
        assert after["who"][2]["traits"] == {"favourite": {"food": "soup"}}
        assert after["recent"] == before["recent"]  # inside its retention: untouched
        assert after["theirs"] == before["theirs"]  # another source's undeclared field: untouched
        lake = lake_properties(a)
        assert lake[ids["old"]] == {"item": "vinyl"} and lake[ids["recent"]]["coupon"] == "JAZZ10"
        assert lake[ids["theirs"]] == {"coupon": "X1"}
        # what the job did is audited, by field and count, never a value
        entries = [e for e in audit.entries(a.rt.store, limit=1000) if e["action"] == "retention.applied"]
        assert entries and entries[0]["details"]["results"]["data_dictionary"]["stripped"] == 2
        text = json.dumps(entries)
        assert "JAZZ10" not in text and "teal" not in text and "jazz records" not in text
        assert audit.verify(a.rt.store).ok

        # the next run has nothing to do; an import arriving late with an old time is found
        assert retention.run(a.rt, now=now + 1000, actor="test")["results"]["data_dictionary"]["stripped"] == 0
        await send(a, {"userId": "u1", "event": "Viewed", "messageId": "late", "properties": props},
                   now - 40 * DAY_MS)  # fmt: skip
        again = retention.run(a.rt, now=now + 2000, actor="test")["results"]["data_dictionary"]
        assert again["stripped"] == 1 and stored(a)["late"][0] == {"item": "vinyl"}
        # ten days on, the "recent" event is past both periods
        later = retention.run(a.rt, now=now + 10 * DAY_MS, actor="test")["results"]["data_dictionary"]
        assert later["stripped"] == 1 and stored(a)["recent"][0] == {"item": "vinyl"}
        # a field declared later is removed from old events too (its period is walked from the start)
        d.declare("test-source", "properties", "item", "behavioural", 5, actor="test")
        last = retention.run(a.rt, now=now + 10 * DAY_MS + 1000, actor="test")["results"]["data_dictionary"]
        assert last["fields"] == {"properties.item": 3} and stored(a)["old"][0] == {}


def _ids(a: Api) -> dict[str, int]:
    with a.rt.store.engine.connect() as conn:
        return {str(m): int(i) for m, i in conn.execute(select(events.c.message_id, events.c.id))}


def test_paths_are_removed_where_they_are_kept() -> None:
    props = {"a": {"b": 1, "c": 2}, "x": 1}
    ctx: dict[str, Any] = {}
    doc = {"properties": {"a.email": "e", "shipping.address": {"street": "s", "city": "c"}}, "traits": {}}
    fields = [("properties", "a.b"), ("properties", "a.email"), ("properties", "shipping.address.street")]
    clear, sealed, found = retention._strip_fields(props, ctx, doc, fields)
    assert clear and sealed and found == ["properties.a.b", "properties.a.email", "properties.shipping.address.street"]
    assert props == {"a": {"c": 2}, "x": 1}
    assert doc["properties"] == {"shipping.address": {"city": "c"}}
    assert retention._strip_fields({"y": 1}, {}, None, [("properties", "x"), ("traits", "t")]) == (False, False, [])
