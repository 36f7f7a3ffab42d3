"""Collection with a data dictionary: undeclared personal data, cards and passwords, special categories,
coarse location and truncated IP addresses, the privacy inbox and its staff API. SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from candor.config import Settings
from candor.store.schema import event_ips, events, privacy_findings
from tests.helpers import Api, api, bearer

pytestmark = pytest.mark.anyio

CARD = "4111 1111 1111 1111"
EMAIL = "canary.undeclared@example.com"


def rows(a: Api) -> list[dict[str, Any]]:
    """Every stored event: clear properties and context, and the sealed part opened."""
    out = []
    with a.rt.store.engine.connect() as conn:
        for r in conn.execute(select(events).order_by(events.c.id)).mappings():
            aead = a.rt.vault.keys_for([r["subject_id"]], conn)[r["subject_id"]]
            doc = orjson.loads(a.rt.vault.open_with(aead, r["sealed"], r["subject_id"].encode()))
            out.append(
                {"props": orjson.loads(r["properties"]), "ctx": orjson.loads(r["context"]), "sealed": doc, "row": r}
            )
    return out


def raw_text(a: Api) -> str:
    """Every clear column of every table, as text (what a database dump would show)."""
    parts: list[str] = []
    with a.rt.store.engine.connect() as conn:
        for table in a.rt.store.engine.dialect.get_table_names(conn):
            for row in conn.exec_driver_sql(f'SELECT * FROM "{table}"'):
                parts.extend(str(v) for v in row if not isinstance(v, bytes | memoryview))
    return "\n".join(parts)


async def inbox(a: Api, **params: Any) -> dict[str, Any]:
    r = await a.client.get("/v1/privacy/inbox", params=params, headers=bearer(a.owner))
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_undeclared_personal_data_is_sealed_and_flagged_never_stored_in_clear(settings: Settings) -> None:
    async with api(settings) as a:
        body = {
            "userId": "u-1",
            "event": "Order Completed",
            "properties": {
                "sku": "sku-1",
                "contact_for_delivery": EMAIL,
                "gift": {"note": "call me on +44 20 7946 0958"},
                "lines": [[{"memo": EMAIL}], ["ok", EMAIL]],
                "total": 12.5,
            },
        }
        assert (await a.post("/v1/track", body)).status_code == 200
        (ev,) = rows(a)
        assert ev["props"] == {"sku": "sku-1", "gift": {}, "lines": [[{}], ["ok", None]], "total": 12.5}
        sealed = ev["sealed"]["properties"]
        assert sealed["contact_for_delivery"] == EMAIL
        assert sealed["gift.note"] == "call me on +44 20 7946 0958"
        assert sealed["lines.0.0.memo"] == EMAIL and sealed["lines.1.1"] == EMAIL
        assert EMAIL not in raw_text(a) and "7946" not in raw_text(a)
        items = {i["field"]: i for i in (await inbox(a))["items"]}
        assert items["properties.contact_for_delivery"]["category"] == "contact"
        assert items["properties.gift.note"]["detector"] == "presidio:PHONE_NUMBER"
        assert items["properties.lines[][].memo"]["action"] == "encrypted"
        assert "properties.lines[][]" in items
        assert all("value" not in i for i in items.values())
        # a second event counts into the same items, with the last time seen
        body["messageId"] = "second"
        assert (await a.post("/v1/track", body)).status_code == 200
        again = {i["field"]: i for i in (await inbox(a))["items"]}
        assert again["properties.contact_for_delivery"]["count"] == 2
        assert (
            again["properties.contact_for_delivery"]["last_seen_ms"]
            >= items["properties.contact_for_delivery"]["last_seen_ms"]
        )


async def test_card_numbers_and_passwords_are_never_stored_in_any_form(settings: Settings) -> None:
    async with api(settings) as a:
        body = {
            "userId": "u-2",
            "traits": {"email": "ann@example.com", "password": "hunter2-canary", "card": CARD},
            "context": {"page": {"url": f"https://shop.example.com/pay?cc={CARD.replace(' ', '')}"}},
        }
        assert (await a.post("/v1/identify", body)).status_code == 200
        track = {
            "userId": "u-2",
            "event": "Paid",
            "properties": {
                "cardNumber": "5500000000000004",
                "note": f"my card is {CARD}, thanks",
                "pan": 4111111111111111,
            },
        }
        assert (await a.post("/v1/track", track)).status_code == 200
        ident, paid = rows(a)
        assert ident["sealed"]["traits"] == {"email": "ann@example.com"}
        assert ident["sealed"]["context"]["page"]["url"] == "https://shop.example.com/pay?cc=<REMOVED>"
        assert "cardNumber" not in paid["props"] and "pan" not in paid["props"]
        assert paid["props"] == {"note": "my card is <REMOVED>, thanks"}  # nothing personal is left in it
        dump = orjson.dumps([r["sealed"] for r in rows(a)]).decode() + raw_text(a)
        for needle in ("4111", "5500000000000004", "hunter2-canary"):
            assert needle not in dump
        removed = [i for i in (await inbox(a))["items"] if i["action"] == "removed"]
        assert {i["field"] for i in removed} == {
            "traits.password",
            "traits.card",
            "context.page.url",
            "properties.cardNumber",
            "properties.note",
            "properties.pan",
        }
        assert sum(i["count"] for i in removed) == 6


async def test_policies_redact_and_drop(settings: Settings) -> None:
    async with api(settings) as a:
        h = bearer(a.owner)
        r = await a.client.put("/v1/sources/test-source/privacy-policy", json={"policy": "redact"}, headers=h)
        assert r.status_code == 200, r.text
        a.rt.inbox._policies = (0.0, {})
        body = {"userId": "u", "event": "Asked", "properties": {"q": f"write to {EMAIL} about it", "age": 41}}
        assert (await a.post("/v1/track", body)).status_code == 200
        assert rows(a)[-1]["props"] == {"q": "write to <EMAIL_ADDRESS> about it", "age": "<DEMOGRAPHIC>"}
        assert (
            await a.client.put("/v1/sources/test-source/privacy-policy", json={"policy": "drop"}, headers=h)
        ).status_code == 200
        body["messageId"] = "m2"
        assert (await a.post("/v1/track", body)).status_code == 200
        last = rows(a)[-1]
        assert last["props"] == {} and "properties" not in last["sealed"]
        assert EMAIL not in raw_text(a)
        actions = {(i["field"], i["action"]) for i in (await inbox(a))["items"]}
        assert {("properties.q", "redacted"), ("properties.q", "dropped")} <= actions
        got = await a.client.get("/v1/sources/test-source/privacy-policy", headers=h)
        assert got.json() == {"source": "test-source", "policy": "drop"}
        bad = await a.client.put("/v1/sources/test-source/privacy-policy", json={"policy": "shred"}, headers=h)
        assert bad.status_code == 400


async def test_declaring_an_inbox_item_stops_the_flag_and_dismiss_closes(settings: Settings) -> None:
    async with api(settings) as a:
        h = bearer(a.owner)
        await a.post("/v1/track", {"userId": "u", "event": "E", "properties": {"deliveryPhone": "+44 20 7946 0958"}})
        (item,) = (await inbox(a))["items"]
        r = await a.client.post(f"/v1/privacy/inbox/{item['id']}/declare", json={}, headers=h)
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "declared" and r.json()["declaration"]["category"] == "contact"
        again = await a.client.post(f"/v1/privacy/inbox/{item['id']}/declare", json={}, headers=h)
        assert again.status_code == 409
        d = (await a.client.get("/v1/sources/test-source/dictionary", headers=h)).json()
        assert {"scope": "properties", "path": "deliveryPhone", "category": "contact"}.items() <= next(
            x for x in d if x["path"] == "deliveryPhone"
        ).items()
        src = a.rt.directory.source_for_key(a.write_key)
        assert src is not None
        a.rt.validator_for(src)  # the next request sees the declaration
        await a.post("/v1/track", {"userId": "u", "event": "E", "properties": {"deliveryPhone": "+44 20 7946 0959"}})
        assert (await inbox(a))["items"] == []
        assert rows(a)[-1]["sealed"]["properties"]["deliveryPhone"] == "+44 20 7946 0959"  # sealed as declared
        await a.post("/v1/track", {"userId": "u", "event": "E", "properties": {"ref": "ann@example.com"}})
        (other,) = (await inbox(a))["items"]
        assert (await a.client.post(f"/v1/privacy/inbox/{other['id']}/dismiss", headers=h)).json()[
            "state"
        ] == "dismissed"
        assert (await a.client.post("/v1/privacy/inbox/999/dismiss", headers=h)).status_code == 404
        bad = await a.client.post(
            "/v1/sources/test-source/dictionary",
            json={"scope": "traits", "path": "x", "category": "gossip"},
            headers=h,
        )
        assert bad.status_code == 400 and "unknown category" in bad.json()["error"]["message"]
        nosuch = await a.client.get("/v1/sources/nope/dictionary", headers=h)
        assert nosuch.status_code == 404


async def test_special_categories_need_an_explicit_opt_in(settings: Settings) -> None:
    async with api(settings) as a:
        h = bearer(a.owner)
        r = await a.client.post(
            "/v1/sources/test-source/dictionary",
            json={"scope": "traits", "path": "healthInterest", "category": "health"},
            headers=h,
        )
        assert r.status_code == 201, r.text
        # Ann opts in to health data, Bob does not; both send the trait
        await a.post("/v1/identify", {"userId": "ann", "traits": {"email": "ann@example.com"}})
        sid = a.rt.consent.subject_for("user_id", "ann")
        assert sid is not None
        with a.rt.store.write() as conn:
            a.rt.consent.record(conn, sid, granted={"sensitive.health"}, source="api", actor="test")
        for who in ("ann", "bob"):
            await a.post("/v1/identify", {"userId": who, "traits": {"healthInterest": "diabetes", "plan": "gold"}})
        by_user = {r["sealed"]["userId"]: r["sealed"] for r in rows(a) if "plan" in r["sealed"].get("traits", {})}
        assert by_user["ann"]["traits"]["healthInterest"] == "diabetes"
        assert "healthInterest" not in by_user["bob"]["traits"]
        withheld = [i for i in (await inbox(a))["items"] if i["action"] == "withheld"]
        assert [(i["field"], i["count"]) for i in withheld] == [("traits.healthInterest", 1)]
        # the decision says why, per category
        ok = await a.client.get(
            "/v1/consent/explain",
            params={"userId": "ann", "purpose": "personalization", "category": "health"},
            headers=h,
        )
        assert ok.json()["decisions"][0]["allowed"] is True
        no = await a.client.get(
            "/v1/consent/explain",
            params={"userId": "bob", "purpose": "personalization", "category": "health"},
            headers=h,
        )
        assert no.json()["decisions"][0]["allowed"] is False
        assert "explicit opt-in (sensitive.health)" in no.json()["decisions"][0]["reasons"][0]


async def test_precise_location_only_with_an_opt_in_and_ip_truncated(settings: Settings) -> None:
    async with api(settings) as a:
        ctx = {"location": {"latitude": 48.858844, "longitude": 2.294351, "city": "Paris"}, "ip": "198.51.100.77"}
        await a.post("/v1/track", {"userId": "ann", "event": "Seen", "context": ctx})
        sid = a.rt.consent.subject_for("user_id", "ann")
        assert sid is not None
        with a.rt.store.write() as conn:
            a.rt.consent.record(conn, sid, granted={"sensitive.precise_location"}, source="api", actor="test")
        await a.post("/v1/track", {"userId": "ann", "event": "Seen", "context": {**ctx, "ip": "2001:db8:1234:5678::1"}})
        first, second = rows(a)
        assert first["sealed"]["context"]["location"] == {"latitude": 48.86, "longitude": 2.29, "city": "Paris"}
        assert second["sealed"]["context"]["location"]["latitude"] == 48.858844
        assert first["ctx"]["ip"] == "198.51.100.0" and second["ctx"]["ip"] == "2001:db8:1234::"
        assert "ip" not in first["sealed"]["context"]
        assert "198.51.100.77" not in raw_text(a)
        with a.rt.store.engine.connect() as conn:
            kept = conn.execute(select(event_ips.c.subject_id, event_ips.c.sealed, event_ips.c.received_ms)).all()
        assert len(kept) == 2
        opened = {a.rt.vault.open_with(a.rt.vault.keys_for([s], None)[s], b, s.encode()).decode() for s, b, _ in kept}
        assert opened == {"198.51.100.77", "2001:db8:1234:5678::1"}
        from candor.location import drop_expired_ips

        with a.rt.store.write() as conn:
            assert drop_expired_ips(conn, kept[0][2] + 29 * 86_400_000) == 0
            assert drop_expired_ips(conn, max(k[2] for k in kept) + 31 * 86_400_000) == 2


async def test_declared_sealed_category_is_encrypted_and_behavioural_stays_clear(settings: Settings) -> None:
    async with api(settings) as a:
        h = bearer(a.owner)
        for path, cat in (("memberNo", "identifier"), ("shelf", "behavioural")):
            r = await a.client.post(
                "/v1/sources/test-source/dictionary",
                json={"scope": "properties", "path": path, "category": cat, "retention_days": 90},
                headers=h,
            )
            assert r.status_code == 201
        a.rt.dictionary.invalidate()
        await a.post("/v1/track", {"userId": "u", "event": "E", "properties": {"memberNo": "M-77", "shelf": "jazz"}})
        ev = rows(a)[-1]
        assert ev["props"] == {"shelf": "jazz"} and ev["sealed"]["properties"] == {"memberNo": "M-77"}
        from candor.dictionary import retention_rules

        with a.rt.store.engine.connect() as conn:
            rules = {(r.path, r.days) for r in retention_rules(conn) if r.source_id is not None}
        assert rules == {("memberNo", 90), ("shelf", 90)}
        recs = (await a.client.get("/v1/dictionary/records", headers=h)).json()
        ident = next(r for r in recs if r["category"] == "identifier")
        assert "properties.memberNo" in ident["fields"] and "test-source" in ident["sources"]
        cats = (await a.client.get("/v1/dictionary/categories", headers=h)).json()
        assert {c["name"] for c in cats if c["special"]} >= {"health", "religion", "precise_location"}


async def test_detection_off_keeps_the_old_behaviour(make_settings: Any) -> None:
    async with api(make_settings(pii_detection="off")) as a:
        await a.post("/v1/track", {"userId": "u", "event": "E", "properties": {"ref": EMAIL}})
        assert rows(a)[-1]["props"] == {"ref": EMAIL}
        with a.rt.store.engine.connect() as conn:
            assert conn.execute(select(privacy_findings)).first() is None


async def test_the_data_directory_holds_no_detected_value(tmp_path: Path) -> None:
    s = Settings.from_env(env={}, data_dir=tmp_path / "d", default_jurisdiction="US")
    canaries = ["canary-7c1e@example.com", "4111111111111111", "pw-7c1e-canary", "ES9121000418450200051332"]
    async with api(s) as a:
        await a.post(
            "/v1/batch",
            {
                "batch": [
                    {
                        "type": "track",
                        "userId": "u",
                        "event": "E",
                        "properties": {"r": canaries[0], "iban": canaries[3]},
                    },
                    {"type": "identify", "userId": "u", "traits": {"password": canaries[2], "c": canaries[1]}},
                    {"type": "page", "userId": "u", "properties": {"path": f"/x?email={canaries[0]}"}},
                ]
            },
        )
        assert a.count() == 3
    for c in canaries:
        found = subprocess.run(["grep", "-rlaF", c, str(tmp_path / "d")], capture_output=True)
        assert found.returncode == 1, f"canary {canaries.index(c)} found on disk"


@pytest.fixture(scope="module")
def one_runtime(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from candor.app import Runtime

    rt = Runtime(Settings.from_env(env={}, data_dir=tmp_path_factory.mktemp("hyp")))
    rt.directory.create_source("test-source")
    yield rt
    rt.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=st.one_of(
        st.text(max_size=300),
        st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.lists(st.text(max_size=30), max_size=5),
        st.recursive(
            st.text(max_size=20),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
            max_leaves=10,
        ),
    )
)
def test_any_property_value_is_stored_or_refused_never_a_crash(one_runtime: Any, value: Any) -> None:
    from candor.auth import SourceInfo
    from candor.events import Message, Rejection

    v = one_runtime.validator_for(SourceInfo(1, "test-source", False, frozenset()))
    out = v.validate(
        {"userId": "u", "event": "E", "properties": {"x": value, "deep": [[{"y": value}]]}, "traits": {"t": value}},
        type_="track",
        received_ms=1,
        sent_at_ms=None,
        client_ip=None,
    )
    assert isinstance(out, Message | Rejection)
    if isinstance(out, Message):
        sealed = orjson.loads(out.sealed_doc)
        clear = orjson.loads(out.properties)
        # whatever was detected in the clear part went to the sealed part (or was removed)
        for scope, path, _cat, _det, action in out.findings or ():
            if scope == "properties" and action == "encrypted" and "[]" not in path:
                assert path in sealed.get("properties", {})
                assert path.split(".")[0] not in clear or isinstance(clear[path.split(".")[0]], dict | list)
