"""The Segment-compatible collection API, in-process, on SQLite and PostgreSQL."""

from __future__ import annotations

import gzip
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from candor.config import Settings
from candor.events import iso_ms
from candor.store import now_ms
from candor.store.schema import event_counts, events, identifiers, identity_edges, profile_subjects, rejected_events
from tests.helpers import api, basic, bearer

pytestmark = pytest.mark.anyio


def rows(rt: Any, table: Any = events) -> list[dict[str, Any]]:
    with rt.store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table)).mappings()]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/identify", {"userId": "u1", "traits": {"email": "a@example.com", "name": "Ann"}}),
        ("/v1/track", {"userId": "u1", "event": "Order Completed", "properties": {"revenue": 9.5}}),
        ("/v1/page", {"anonymousId": "a1", "name": "Home", "properties": {"path": "/"}}),
        ("/v1/screen", {"anonymousId": "a1", "name": "Cart"}),
        ("/v1/group", {"userId": "u1", "groupId": "g1", "traits": {"name": "Acme"}}),
        ("/v1/alias", {"previousId": "a1", "userId": "u1"}),
    ],
)
async def test_each_call_is_accepted_and_stored(settings: Settings, path: str, body: dict[str, Any]) -> None:
    async with api(settings) as a:
        r = await a.post(path, body)
        assert r.status_code == 200, r.text
        assert r.json() == {"success": True}
        stored = rows(a.rt)
        assert len(stored) == 1
        assert stored[0]["type"] == path.rsplit("/", 1)[1]
        assert stored[0]["message_id"].startswith("candor-")  # generated when absent


async def test_batch_and_import_merge_top_level_context(settings: Settings) -> None:
    async with api(settings) as a:
        body = {
            "batch": [
                {
                    "type": "track",
                    "event": "A",
                    "userId": "u1",
                    "messageId": "m1",
                    "context": {"locale": "fr-FR"},
                },
                {"type": "page", "anonymousId": "x", "messageId": "m2"},
            ],
            "context": {"library": {"name": "analytics-python", "version": "2.3"}, "locale": "en-US"},
        }
        assert (await a.post("/v1/batch", body)).status_code == 200
        body2 = {"batch": [{"type": "identify", "userId": "u2", "messageId": "m3"}]}
        assert (await a.post("/v1/import", body2)).status_code == 200
        stored = {r["message_id"]: r for r in rows(a.rt)}
        assert set(stored) == {"m1", "m2", "m3"}
        ctx1 = orjson.loads(stored["m1"]["context"])
        assert ctx1["locale"] == "fr-FR"  # the message's own context wins
        assert ctx1["library"]["name"] == "analytics-python"
        assert orjson.loads(stored["m2"]["context"])["locale"] == "en-US"


async def test_write_key_in_body_and_auth_failures(settings: Settings) -> None:
    async with api(settings) as a:
        ok = await a.client.post("/v1/track", json={"writeKey": a.write_key, "userId": "u", "event": "E"})
        assert ok.status_code == 200
        for headers, body in [
            ({}, {"userId": "u", "event": "E"}),
            (basic("wk_wrong"), {"userId": "u", "event": "E"}),
            ({}, {"writeKey": "wk_wrong", "userId": "u", "event": "E"}),
            ({}, {"writeKey": 12, "userId": "u", "event": "E"}),
            (bearer(a.owner), {"userId": "u", "event": "E"}),  # staff tokens cannot send events
        ]:
            r = await a.client.post("/v1/track", json=body, headers=headers)
            assert r.status_code == 401, (headers, r.text)
            assert r.json()["success"] is False
            assert "write key" in r.json()["error"]["message"]
        assert a.count() == 1


async def test_repeated_message_id_is_stored_once_and_counted(settings: Settings) -> None:
    async with api(settings) as a:
        msg = {"type": "track", "userId": "u", "event": "E", "messageId": "retry-1"}
        for _ in range(3):
            assert (await a.post("/v1/batch", {"batch": [msg, msg]})).status_code == 200
        assert a.count() == 1
        stats = (await a.client.get("/v1/stats", headers=bearer(a.owner))).json()
        src = stats["sources"][0]
        assert src["accepted"] == {"track": 1}
        assert src["duplicate"] == {"track": 5}


async def test_duplicates_are_per_source(settings: Settings) -> None:
    async with api(settings) as a:
        other = a.rt.directory.create_source("other")
        msg = {"userId": "u", "event": "E", "messageId": "same"}
        assert (await a.post("/v1/track", msg)).status_code == 200
        assert (await a.post("/v1/track", msg, headers=basic(other))).status_code == 200
        assert a.count() == 2


async def test_clock_skew_correction(settings: Settings) -> None:
    async with api(settings) as a:
        # The client's clock runs one hour fast: it says it sent the event 10 s after it happened.
        now = now_ms()
        fast = now + 3_600_000
        body = {
            "batch": [{"type": "track", "event": "E", "userId": "u", "timestamp": iso_ms(fast - 10_000)}],
            "sentAt": iso_ms(fast),
        }
        assert (await a.post("/v1/batch", body)).status_code == 200
        (row,) = rows(a.rt)
        expected = row["received_ms"] - 10_000
        assert row["ts_ms"] == expected
        # without sentAt the client's timestamp is kept as is
        assert (
            await a.post("/v1/track", {"userId": "u", "event": "F", "timestamp": "2024-02-03T04:05:06Z"})
        ).status_code == 200
        f = next(r for r in rows(a.rt) if r["event"] == "F")
        assert iso_ms(f["ts_ms"]) == "2024-02-03T04:05:06.000Z"


async def test_context_ip_from_connection_only_when_direct(settings: Settings) -> None:
    async with api(settings) as a:
        await a.post("/v1/track", {"userId": "u", "event": "direct", "context": {"direct": True}})
        await a.post("/v1/track", {"userId": "u", "event": "indirect"})
        by_event = {r["event"]: r for r in rows(a.rt)}
        vault = a.rt.vault
        direct = orjson.loads(vault.open(by_event["direct"]["subject_id"], by_event["direct"]["sealed"]))
        indirect = orjson.loads(vault.open(by_event["indirect"]["subject_id"], by_event["indirect"]["sealed"]))
        # issue 12: analytics see the network only; the full address is sealed apart (event_ips, 30 days)
        assert "ip" not in direct["context"] and "ip" not in indirect.get("context", {})
        assert orjson.loads(by_event["direct"]["context"])["ip"] == "203.0.113.0"
        assert "ip" not in orjson.loads(by_event["indirect"]["context"])
        from candor.location import ips_of

        with a.rt.store.engine.connect() as conn:
            kept = ips_of(a.rt, conn, [by_event["direct"]["subject_id"]])
        assert [k["ip"] for k in kept] == ["203.0.113.7"]


async def test_identifiers_pseudonymised_and_linked(settings: Settings) -> None:
    async with api(settings) as a:
        await a.post("/v1/page", {"anonymousId": "anon-1"})
        await a.post(
            "/v1/identify",
            {
                "userId": "user-1",
                "anonymousId": "anon-1",
                "traits": {"email": " Ann@Example.COM ", "phone": "(415) 555-0134"},
            },
        )
        ids = rows(a.rt, identifiers)
        types = sorted(r["id_type"] for r in ids)
        assert types == ["anonymous_id", "email", "phone", "user_id"]
        # the account has a subject (a data key) of its own; the browser it logged in from joins its profile
        assert len({r["subject_id"] for r in ids}) == 2
        profiles = rows(a.rt, profile_subjects)
        assert {p["subject_id"] for p in profiles} == {r["subject_id"] for r in ids}
        assert len({p["profile_id"] for p in profiles}) == 1
        vault = a.rt.vault
        assert {r["pseudonym"] for r in ids if r["id_type"] == "email"} == {vault.pseudonym("email", "ann@example.com")}
        assert {r["pseudonym"] for r in ids if r["id_type"] == "phone"} == {vault.pseudonym("phone", "+14155550134")}
        edges = rows(a.rt, identity_edges)
        assert {(e["a_type"], e["b_type"]) for e in edges} == {
            ("user_id", "anonymous_id"),
            ("user_id", "email"),
            ("user_id", "phone"),
        }
        for r in rows(a.rt):
            assert "Ann" not in r["properties"] + r["context"]


async def test_alias_links_previous_id(settings: Settings) -> None:
    async with api(settings) as a:
        await a.post("/v1/track", {"anonymousId": "old", "event": "E"})
        await a.post("/v1/alias", {"previousId": "old", "userId": "new"})
        edges = rows(a.rt, identity_edges)
        assert [(e["a_type"], e["b_type"], e["rule"]) for e in edges] == [("user_id", "anonymous_id", "alias")]
        subjects = {r["subject_id"] for r in rows(a.rt)}
        assert len(subjects) == 1


async def test_personal_properties_are_sealed(settings: Settings) -> None:
    async with api(settings, personal=["loyalty_secret"]) as a:
        body = {
            "userId": "u",
            "event": "E",
            "properties": {"loyalty_secret": "s3cr3t", "email": "x@example.com", "sku": "B-1"},
        }
        assert (await a.post("/v1/track", body)).status_code == 200
        (row,) = rows(a.rt)
        assert orjson.loads(row["properties"]) == {"sku": "B-1"}
        sealed = orjson.loads(a.rt.vault.open(row["subject_id"], row["sealed"]))
        assert sealed["properties"] == {"loyalty_secret": "s3cr3t", "email": "x@example.com"}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/track", {"userId": "u"}, "event"),
        ("/v1/track", {"event": "E"}, "userId"),
        ("/v1/track", {"userId": "null", "event": "E"}, "userId"),
        ("/v1/track", {"userId": ["u"], "event": "E"}, "userId"),
        ("/v1/track", {"userId": "u", "event": 5}, "event"),
        ("/v1/track", {"userId": "u", "event": "E", "properties": [1]}, "properties"),
        ("/v1/track", {"userId": "u", "event": "E", "timestamp": "yesterday"}, "timestamp"),
        ("/v1/track", {"userId": "u", "event": "E", "messageId": ""}, "messageId"),
        ("/v1/identify", {"userId": "u", "traits": "ann"}, "traits"),
        ("/v1/group", {"userId": "u"}, "groupId"),
        ("/v1/alias", {"userId": "u"}, "previousId"),
        ("/v1/alias", {"previousId": "p"}, "userId"),
        ("/v1/track", {"userId": "u" * 2000, "event": "E"}, "userId"),
    ],
)
async def test_invalid_single_event_is_400_and_recorded(
    settings: Settings, path: str, body: dict[str, Any], field: str
) -> None:
    async with api(settings) as a:
        r = await a.post(path, body)
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["code"] == "invalid_event"
        assert err["field"] == field
        assert a.count() == 0
        recorded = rows(a.rt, rejected_events)
        assert len(recorded) == 1 and recorded[0]["field"] == field
        # the rejected record never holds the submitted values
        assert "u" * 50 not in str(recorded)


async def test_batch_default_mode_keeps_good_events(settings: Settings) -> None:
    async with api(settings) as a:
        body = {
            "batch": [
                {"type": "track", "userId": "u", "event": "ok"},
                {"type": "track", "userId": "u"},
                {"type": "nope"},
                7,
            ]
        }
        r = await a.post("/v1/batch", body)
        assert r.status_code == 200 and r.json() == {"success": True}
        assert r.headers["x-candor-rejected"] == "3"
        assert a.count() == 1
        assert a.rejected() == 3
        stats = (await a.client.get("/v1/stats", headers=bearer(a.owner))).json()
        assert stats["total"] == {"accepted": 1, "duplicate": 0, "rejected": 3, "no_consent": 0}


@pytest.mark.parametrize("how", ["query", "source"])
async def test_strict_mode_rejects_whole_batch_with_every_error(settings: Settings, how: str) -> None:
    async with api(settings, strict=(how == "source")) as a:
        body = {
            "batch": [
                {"type": "track", "userId": "u", "event": "ok"},
                {"type": "track", "userId": "u", "messageId": "bad-1"},
                {"type": "identify"},
            ]
        }
        path = "/v1/batch?strict=1" if how == "query" else "/v1/batch"
        r = await a.post(path, body)
        assert r.status_code == 400
        errors = r.json()["errors"]
        assert [(e["index"], e.get("field")) for e in errors] == [(1, "event"), (2, "userId")]
        assert errors[0]["messageId"] == "bad-1"
        assert a.count() == 0
        assert a.rejected() == 2


async def test_limits(settings: Settings) -> None:
    async with api(settings) as a:
        big = {"userId": "u", "event": "E", "properties": {"blob": "x" * 33_000}}
        r = await a.post("/v1/track", big)
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
        # an event over 32 KB inside a batch is rejected on its own
        r = await a.post(
            "/v1/batch",
            {"batch": [{"type": "track", **big}, {"type": "track", "userId": "u", "event": "ok"}]},
        )
        assert r.status_code == 200 and r.headers["x-candor-rejected"] == "1"
        r = await a.post(
            "/v1/batch",
            {"batch": [{"type": "track", "userId": "u", "event": "E", "properties": {"b": "x" * 30_000}}] * 18},
        )
        assert r.status_code == 413
        many = {"batch": [{"type": "track", "userId": "u", "event": "E"}] * 2501}
        r = await a.post("/v1/batch", many)
        assert r.status_code == 400 and r.json()["error"]["code"] == "batch_too_long"
        r = await a.post("/v1/batch", {"batch": []})
        assert r.status_code == 400 and r.json()["error"]["code"] == "empty_batch"
        assert a.count() == 1


async def test_gzip_bodies(settings: Settings) -> None:
    async with api(settings) as a:
        payload = gzip.compress(orjson.dumps({"batch": [{"type": "track", "userId": "u", "event": "E"}]}))
        headers = {**basic(a.write_key), "Content-Encoding": "gzip", "Content-Type": "application/json"}
        r = await a.client.post("/v1/batch", content=payload, headers=headers)
        assert r.status_code == 200, r.text
        bomb = gzip.compress(b'{"batch": [' + b" " * 5_000_000 + b"]}")
        r = await a.client.post("/v1/batch", content=bomb, headers=headers)
        assert r.status_code == 413
        r = await a.client.post("/v1/batch", content=b"not gzip", headers=headers)
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_encoding"
        assert a.count() == 1


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "malformed_json"),
        (b"", "empty_body"),
        (b"[1, 2]", "not_an_object"),
        (b'{"userId": "\xff\xfe", "event": "E"}', "invalid_utf8"),
        (
            b'{"userId": "u", "event": "E", "properties": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}",
            "too_deep",
        ),
        (b'{"userId": "u", "event": "E", "properties": ' + b"[" * 3000 + b"]" * 3000 + b"}", "too_deep"),
        (b'{"userId": "u", "event": "E", "properties": {"n": 1e999}}', "malformed_json"),
        (b'{"userId": "u", "event": "E", "properties": {"n": NaN}}', "malformed_json"),
    ],
)
async def test_malformed_bodies(settings: Settings, raw: bytes, code: str) -> None:
    async with api(settings) as a:
        await a.post("/v1/track", {"userId": "keep", "event": "before"})
        before = rows(a.rt)
        r = await a.client.post(
            "/v1/track", content=raw, headers={**basic(a.write_key), "Content-Type": "application/json"}
        )
        assert r.status_code == 400
        assert r.json()["error"]["code"] == code
        assert rows(a.rt) == before
        assert a.rejected() == 1  # kept as a rejected record, against its source


async def test_huge_integers_and_unknown_fields_are_kept(settings: Settings) -> None:
    async with api(settings) as a:
        raw = b'{"userId": "u", "event": "E", "properties": {"n": 123456789012345678901234567890}, "extra": {"x": 1}}'
        r = await a.client.post(
            "/v1/track", content=raw, headers={**basic(a.write_key), "Content-Type": "application/json"}
        )
        assert r.status_code == 200
        (row,) = rows(a.rt)
        assert orjson.loads(row["properties"])["n"] == pytest.approx(1.2345678901234568e29)


async def test_stats_needs_a_staff_token(settings: Settings) -> None:
    async with api(settings) as a:
        assert (await a.client.get("/v1/stats")).status_code == 401
        assert (await a.client.get("/v1/stats", headers=basic(a.write_key))).status_code == 401
        assert (await a.client.get("/v1/stats", headers=bearer("cnd_nope"))).status_code == 401
        analyst = a.rt.directory.create_token("a", "analyst")
        assert (await a.client.get("/v1/stats", headers=bearer(analyst))).status_code == 200
        support = a.rt.directory.create_token("s", "support")
        r = await a.client.get("/v1/stats", headers=bearer(support))
        assert r.status_code == 403 and "stats:read" in r.json()["error"]["message"]


async def test_counts_by_day_are_summed(settings: Settings) -> None:
    async with api(settings) as a:
        await a.post("/v1/track", {"userId": "u", "event": "E"})
        await a.post("/v1/track", {"userId": "u", "event": "E"})
        (count,) = rows(a.rt, event_counts)
        assert count["n"] == 2 and count["outcome"] == "accepted"


async def test_health_and_metrics(settings: Settings) -> None:
    async with api(settings) as a:
        r = await a.client.get("/healthz")
        assert r.status_code == 200 and r.json()["database"] == "ok"
        await a.post("/v1/track", {"userId": "u", "event": "E"})
        m = await a.client.get("/metrics")
        assert m.status_code == 200
        assert 'candor_events_total{outcome="accepted",type="track"}' in m.text
