"""The demo data generator and sender (candor.demo): deterministic, valid Segment messages, messy in
the ways real touchpoints are, only reserved domains and fictional numbers, and a careful sender."""

from __future__ import annotations

import base64
import difflib
import ipaddress
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from anyio.from_thread import BlockingPortal

from candor import demo
from candor.demo import CONSENT_PURPOSES, SOURCES, DemoData, DemoSendError, Person, generate, send

TYPES = {"identify", "track", "page", "screen", "group", "alias"}
KEYS = {s: f"wk_{s}_secret" for s in SOURCES}
GENRES = {g for gs in demo.GENRES.values() for g in gs}


@cache
def big() -> DemoData:
    """1,000 customers: enough for proportions to be measured within a few points."""
    return generate(1000, 1)


@cache
def small() -> DemoData:
    return generate(40, 9)


def all_messages(data: DemoData) -> Iterator[tuple[str, dict[str, Any]]]:
    for source, events in data.batches.items():
        for m in events:
            yield source, m


def owners(data: DemoData) -> dict[str, Person]:
    return {mid: p for p in data.truth for mid in p.message_ids}


def parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


# -- generation ----------------------------------------------------------------------------------
def test_same_seed_same_data_and_another_seed_differs() -> None:
    a, b, c = generate(60, 11), generate(60, 11), generate(60, 12)
    assert orjson.dumps(a.batches) == orjson.dumps(b.batches)
    assert a.truth == b.truth and a.summary == b.summary
    assert a.batches != c.batches
    assert {m["messageId"] for _, m in all_messages(a)}.isdisjoint(m["messageId"] for _, m in all_messages(c))
    assert set(a.batches) == set(SOURCES)


def test_timestamps_are_relative_to_now() -> None:
    now = datetime(2030, 3, 1, 12, tzinfo=UTC)
    data = generate(30, 4, now=now)
    stamps = [parse_ts(m["timestamp"]) for _, m in all_messages(data)]
    assert all(now - timedelta(days=demo.HISTORY_DAYS + 1) < t < now for t in stamps)
    default = [parse_ts(m["timestamp"]) for _, m in all_messages(generate(30, 4))]
    assert max(default) < demo.DEFAULT_NOW
    assert generate(0, 1).total_events == 0


def test_every_message_follows_the_segment_spec() -> None:
    data = big()
    ids: set[str] = set()
    for source, m in all_messages(data):
        assert m["type"] in TYPES, m["type"]
        assert any(isinstance(m.get(k), str) and m[k] for k in ("userId", "anonymousId")), source
        if m["type"] == "track":
            assert isinstance(m["event"], str) and m["event"]
        if m["type"] in ("page", "screen"):
            assert isinstance(m["name"], str) and m["name"]
        if m["type"] == "identify":
            assert isinstance(m["traits"], dict) and m["traits"]
        ts = parse_ts(m["timestamp"])
        assert m["timestamp"].endswith("Z") and ts.tzinfo is not None
        assert isinstance(m["messageId"], str) and m["messageId"] not in ids
        ids.add(m["messageId"])
        assert len(orjson.dumps(m)) < 32 * 1024
        json.dumps(m)  # plain JSON types only
        prefs = m["context"]["consent"]["categoryPreferences"]
        assert set(prefs) == set(CONSENT_PURPOSES) and all(isinstance(v, bool) for v in prefs.values())
    assert len(ids) == data.total_events
    for events in data.batches.values():
        assert [m["timestamp"] for m in events] == sorted(m["timestamp"] for m in events)


def test_candors_own_validator_accepts_every_message() -> None:
    from candor.events import Message, Validator

    validator = Validator(lambda t, v: f"{t}:{v}")
    data = generate(150, 21)
    for source, m in all_messages(data):
        out = validator.validate(m, type_=None, received_ms=0, sent_at_ms=None, client_ip=None)
        assert isinstance(out, Message), (source, out)


def test_volume_per_customer_is_in_the_documented_range() -> None:
    for n, seed in ((1000, 1), (200, 2), (200, 3), (50, 4)):
        data = big() if (n, seed) == (1000, 1) else generate(n, seed)
        assert 20 <= data.total_events / n <= 40, (n, seed, data.total_events)
        assert data.summary["events"] == data.total_events == sum(data.counts.values())
    assert 12_000 <= generate(500, 7).total_events <= 18_000  # "--customers 500 is about 15k events"


def test_consent_spread_and_signals() -> None:
    data = big()
    kinds = Counter(p.consent for p in data.truth)
    n = len(data.truth)
    assert abs(kinds["accept_all"] / n - 0.6) <= 0.1
    assert abs(kinds["reject_all"] / n - 0.2) <= 0.1
    assert abs(kinds["custom"] / n - 0.2) <= 0.1
    for p in data.truth:
        yes = sum(p.prefs.values())
        expected = {"accept_all": yes == len(CONSENT_PURPOSES), "reject_all": yes == 0, "custom": 0 < yes < 6}
        assert expected[p.consent]
    # every message carries its person's choice at that moment (an unsubscribe withdraws marketing email)
    who = owners(data)
    for _, m in all_messages(data):
        p = who[m["messageId"]]
        assert m["context"]["consent"]["categoryPreferences"] == p.prefs_at(parse_ts(m["timestamp"]))
    # about 10% of web events carry GPC; nothing else does
    web = data.batches["web"]
    assert 0.05 <= sum(m["context"].get("gpc") is True for m in web) / len(web) <= 0.15
    assert not any("gpc" in m["context"] for s, m in all_messages(data) if s != "web")
    # only people who said yes to marketing email, and whose address the brand has, get campaigns
    for m in data.batches["email"]:
        p = who[m["messageId"]]
        assert p.prefs["marketing.email"] and (p.user_id or p.card_email)
        assert m["context"]["traits"]["email"] == p.email


def test_anonymous_sessions_that_log_in_share_the_anonymous_id() -> None:
    data = big()
    web = data.batches["web"]
    who = owners(data)
    anonymous_before: dict[str, str] = {}
    for m in web:  # in time order
        if "userId" not in m:
            anonymous_before.setdefault(m["anonymousId"], m["timestamp"])
    identifies = [m for m in web if m["type"] == "identify"]
    assert len(identifies) > 300
    for m in identifies:
        assert m["userId"] and m["anonymousId"]
        assert anonymous_before[m["anonymousId"]] < m["timestamp"]
        p = who[m["messageId"]]
        assert m["userId"] == p.user_id and m["anonymousId"] in p.devices
        assert m["traits"]["email"].lower() == p.email
    # some people log in from two browsers: two anonymousIds, one userId
    logins = Counter(m["userId"] for m in identifies)
    assert sum(c >= 2 for c in logins.values()) > 25
    # the app also starts anonymous, then identifies on the same device id
    app_ids = [m for m in data.batches["app"] if m["type"] == "identify"]
    assert app_ids and all(m["anonymousId"] == who[m["messageId"]].app_device for m in app_ids)


def test_truth_accounts_for_every_message_and_identifier() -> None:
    data = big()
    seen: list[str] = [mid for p in data.truth for mid in p.message_ids]
    assert len(seen) == len(set(seen)) == data.total_events
    who = owners(data)
    for source, m in all_messages(data):
        p = who[m["messageId"]]
        assert source in p.sources
        if "userId" in m:
            assert m["userId"] in p.user_ids
            assert m["userId"] in {p.user_id, f"pos-{p.card}", *p.crm_ids}
        if "anonymousId" in m:
            assert m["anonymousId"] in p.anonymous_ids
    # user ids never cross people
    owners_of = Counter(uid for p in data.truth for uid in p.user_ids)
    assert max(owners_of.values()) == 1
    in_sources = Counter(len(p.sources) for p in data.truth)
    assert in_sources[0] == 0
    assert sum(c for k, c in in_sources.items() if k >= 3) / len(data.truth) > 0.25


def test_call_center_spells_people_its_own_way() -> None:
    data = big()
    who = owners(data)
    web_name = {
        who[m["messageId"]].pid: f"{m['traits']['firstName']} {m['traits']['lastName']}"
        for m in data.batches["web"]
        if m["type"] == "identify"
    }
    ratios = []
    for m in data.batches["callcenter"]:
        if m["type"] != "identify":
            continue
        p = who[m["messageId"]]
        assert m["userId"] in p.crm_ids
        if p.pid in web_name:
            crm = f"{m['traits']['firstName']} {m['traits']['lastName']}"
            ratios.append(difflib.SequenceMatcher(None, crm, web_name[p.pid]).ratio())
    assert sum(r == 1 for r in ratios) > 10, "many records are spelt right"
    assert sum(0.6 < r < 1 for r in ratios) > 10, "some have a typo, a nickname or lost accents"
    assert any(r <= 0.6 for r in ratios), "some have first and last name swapped"
    crm_traits = [m["traits"] for m in data.batches["callcenter"] if m["type"] == "identify"]
    emails = [t["email"] for t in crm_traits if "email" in t]
    assert any(e != e.lower() for e in emails), "email case differs"
    assert any(e.lower() not in {p.email for p in data.truth} for e in emails), "a typo'd email"
    phones = {t["phone"] for t in crm_traits if "phone" in t}
    assert any(re.fullmatch(r"\(\d{3}\) 555-01\d\d", x) for x in phones)
    assert any(re.fullmatch(r"\+1 \d{3} 555 01\d\d", x) for x in phones)
    assert any(re.fullmatch(r"\d{3}\.555\.01\d\d", x) for x in phones)
    streets = [t["address"]["street"] for t in crm_traits if "address" in t]
    assert any(" St." in s or " Ave." in s for s in streets) and any(s.endswith("Street") for s in streets)
    moved = [p for p in data.truth if p.moved_to and p.crm_ids]
    assert moved, "someone moved and told only the call center"
    assert sum(len(p.crm_ids) > 1 for p in data.truth) > 3, "duplicate CRM records for one caller"
    # calls and surveys
    calls = [m["properties"] for m in data.batches["callcenter"] if m.get("event") == "Call Completed"]
    assert calls and all(1 <= c["csat"] <= 5 and c["duration_s"] > 0 and c["reason"] for c in calls)
    surveys = [m["properties"] for m in data.batches["callcenter"] if m.get("event") == "Survey Answered"]
    assert surveys and all(0 <= s["nps"] <= 10 and s["comment"] for s in surveys)


def test_families_share_a_phone_and_nobody_else_does() -> None:
    data = big()
    by_phone: dict[str, list[Person]] = {}
    for p in data.truth:
        by_phone.setdefault(p.phone, []).append(p)
    shared = [p for ps in by_phone.values() if len(ps) > 1 for p in ps]
    assert 0.01 <= len(shared) / len(data.truth) <= 0.06
    for ps in by_phone.values():
        if len(ps) > 1:
            assert len({p.household for p in ps}) == 1 and ps[0].household is not None
            assert len({p.street for p in ps}) == 1
            assert len({p.email for p in ps}) == len(ps)


def test_names_are_diverse() -> None:
    names = {n for p in big().truth for n in (p.first, p.last)}
    assert sum(not n.isascii() for n in names) >= 20
    assert names & {"José", "Zoë", "Øyvind"} and names & {"Nguyễn", "李", "王"}


def test_only_reserved_domains_and_fictional_numbers() -> None:
    data = big()
    blob = orjson.dumps(data.batches).decode()
    reserved = ("example.com", "example.org", "example.net")
    domains = {d.lower() for d in re.findall(r"@([A-Za-z0-9.-]+)", blob)}
    assert domains and domains <= set(reserved), domains
    for url in re.findall(r"https?://[^\"\s]+", blob):
        host = urlsplit(url).hostname or ""
        assert host.endswith(reserved), url
    for _, m in all_messages(data):
        if "ip" in m["context"]:
            assert ipaddress.ip_address(m["context"]["ip"]) in ipaddress.ip_network(
                m["context"]["ip"].rsplit(".", 1)[0] + ".0/24"
            )
            assert m["context"]["ip"].rsplit(".", 1)[0] in ("192.0.2", "198.51.100", "203.0.113")
        for traits in (m.get("traits"), m["context"].get("traits")):
            if isinstance(traits, dict) and "phone" in traits:
                digits = re.sub(r"\D", "", traits["phone"])
                digits = digits[1:] if len(digits) == 11 and digits[0] == "1" else digits
                assert len(digits) == 10 and digits[3:7] == "5550" and 100 <= int(digits[7:]) <= 199, traits["phone"]
    for p in data.truth:
        assert p.email.endswith(reserved) and p.email == p.email.lower()
        assert p.phone[3:7] == "5550" and 100 <= int(p.phone[7:]) <= 199


def test_orders_follow_the_ecommerce_spec() -> None:
    data = big()
    order_ids: set[str] = set()
    for source in ("web", "app", "pos"):
        orders = [m["properties"] for m in data.batches[source] if m.get("event") == "Order Completed"]
        assert orders, source
        for o in orders:
            assert o["order_id"] not in order_ids
            order_ids.add(o["order_id"])
            assert o["currency"] == "USD" and o["products"]
            subtotal = sum(i["price"] * i["quantity"] for i in o["products"])
            assert o["revenue"] == pytest.approx(subtotal - o.get("discount", 0), abs=0.011)
            for item in o["products"]:
                assert {"product_id", "sku", "name", "category", "price", "quantity"} <= set(item)
                assert item["category"] in GENRES and item["price"] > 0 and item["quantity"] >= 1
    for m in data.batches["web"]:
        if m["type"] == "page":
            assert {"path", "url", "title", "referrer"} <= set(m["properties"])
            assert m["context"]["page"]["url"] == m["properties"]["url"]


def test_sources_look_like_their_systems() -> None:
    data = big()
    who = owners(data)
    for m in data.batches["pos"]:
        p = who[m["messageId"]]
        (ext,) = m["context"]["externalIds"]
        assert ext == {"id": p.card, "type": "loyalty_card", "collection": "users", "encoding": "none"}
        assert m["userId"] in (f"pos-{p.card}", p.user_id) and m["event"] == "Order Completed"
    assert any(m["userId"] == who[m["messageId"]].user_id for m in data.batches["pos"]), "a linked loyalty card"
    assert any(m["userId"].startswith("pos-") for m in data.batches["pos"])
    for m in data.batches["app"]:
        ctx = m["context"]
        assert {"app", "device", "os", "library"} <= set(ctx) and ctx["device"]["id"] == m["anonymousId"]
    assert Counter(m["type"] for m in data.batches["app"])["screen"] > 0
    events = Counter(m["event"] for m in data.batches["email"])
    assert set(events) == {"Email Delivered", "Email Opened", "Email Link Clicked", "Unsubscribed"}
    assert all({"campaign_id", "email_subject"} <= set(m["properties"]) and m["userId"] for m in data.batches["email"])
    # after unsubscribing, no more campaign emails
    for p in data.truth:
        if p.unsubscribed_at is not None:
            later = [
                m
                for m in data.batches["email"]
                if who[m["messageId"]] is p and parse_ts(m["timestamp"]) > p.unsubscribed_at
            ]
            assert not later


# -- sending -------------------------------------------------------------------------------------
class Recorder:
    """An httpx MockTransport handler that records requests and answers from a script."""

    def __init__(self, script: Callable[[int], httpx.Response | Exception] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.script = script or (lambda i: httpx.Response(200, json={"success": True}))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        out = self.script(len(self.requests) - 1)
        if isinstance(out, Exception):
            raise out
        return out

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waited: list[float] = []
    monkeypatch.setattr(demo.time, "sleep", waited.append)
    return waited


def source_of_key(request: httpx.Request) -> str:
    scheme, _, token = request.headers["authorization"].partition(" ")
    assert scheme == "Basic"
    user, sep, password = base64.b64decode(token).decode().partition(":")
    assert sep == ":" and password == ""
    return next(s for s, k in KEYS.items() if k == user)


def test_send_posts_batches_with_each_sources_write_key() -> None:
    data = small()
    rec = Recorder()
    with rec.client() as client:
        report = send(data, "http://candor.test/", KEYS, batch_size=50, progress=False, client=client)
    by_source = {m["messageId"]: s for s, m in all_messages(data)}
    delivered: list[str] = []
    switches = 0
    for i, r in enumerate(rec.requests):
        assert r.method == "POST" and str(r.url) == "http://candor.test/v1/batch"
        assert r.headers["content-type"] == "application/json"
        source = source_of_key(r)
        assert r.headers["authorization"] == "Basic " + base64.b64encode(f"{KEYS[source]}:".encode()).decode()
        body = orjson.loads(r.content)
        assert set(body) == {"batch", "sentAt"} and parse_ts(body["sentAt"]).tzinfo is not None
        assert 1 <= len(body["batch"]) <= 50
        assert all(by_source[m["messageId"]] == source for m in body["batch"])
        delivered += [m["messageId"] for m in body["batch"]]
        switches += i > 0 and source != source_of_key(rec.requests[i - 1])
    assert sorted(delivered) == sorted(by_source)  # everything, once
    assert switches > len(SOURCES), "sources are interleaved in time, not sent one after another"
    assert report.total_events == data.total_events and report.requests == len(rec.requests)
    assert dict(report.per_source) == {s: n for s, n in data.counts.items() if n}
    assert report.retries == 0 and report.rejected == 0


def test_chunks_stay_within_the_api_limits() -> None:
    data = big()
    rec = Recorder()
    with rec.client() as client:
        report = send(data, "http://candor.test", KEYS, batch_size=2500, progress=False, client=client)
    sizes = [len(r.content) for r in rec.requests]
    counts = [len(orjson.loads(r.content)["batch"]) for r in rec.requests]
    assert max(sizes) < 500 * 1024 and max(counts) <= 2500
    assert max(sizes) > 400 * 1024, "batches are cut by size, not only by count"
    assert sum(counts) == report.total_events == data.total_events


def test_send_retries_busy_and_unreachable_servers(sleeps: list[float]) -> None:
    data = small()
    answers: list[httpx.Response | Exception] = [
        httpx.Response(503, headers={"Retry-After": "0"}, json={"success": False, "error": {"message": "busy"}}),
        httpx.Response(429, headers={"Retry-After": "2"}),
        httpx.ConnectError("connection refused"),
        httpx.Response(502, text="bad gateway"),
    ]
    rec = Recorder(lambda i: answers[i] if i < len(answers) else httpx.Response(200, json={"success": True}))
    with rec.client() as client:
        report = send(data, "http://candor.test", KEYS, batch_size=500, progress=False, client=client)
    assert report.retries == 4 and report.total_events == data.total_events
    assert report.requests == len(rec.requests) - 4
    assert rec.requests[0].content.split(b'"sentAt"')[0] == rec.requests[4].content.split(b'"sentAt"')[0]
    assert sleeps[:2] == [0.0, 2.0]  # Retry-After is honoured
    assert sleeps[2] == demo.RETRY_BASE_SECONDS * 4 and sleeps[3] == demo.RETRY_BASE_SECONDS * 8  # then backoff


def test_send_gives_up_after_five_tries(sleeps: list[float]) -> None:
    rec = Recorder(lambda i: httpx.Response(503, json={"success": False, "error": {"message": "store unavailable"}}))
    with rec.client() as client, pytest.raises(DemoSendError, match=r"after 5 tries.*503.*store unavailable"):
        send(small(), "http://candor.test", KEYS, progress=False, client=client)
    assert len(rec.requests) == demo.MAX_TRIES and len(sleeps) == demo.MAX_TRIES - 1


def test_send_stops_with_the_servers_message_on_a_client_error(sleeps: list[float]) -> None:
    body = {
        "success": False,
        "error": {"code": "invalid_event", "message": "2 of 100 events are invalid"},
        "errors": [{"index": 3, "message": "userId or anonymousId is required", "field": "userId"}],
    }
    rec = Recorder(lambda i: httpx.Response(400, json=body))
    with rec.client() as client, pytest.raises(RuntimeError) as caught:
        send(small(), "http://candor.test", KEYS, progress=False, client=client)
    text = str(caught.value)
    assert isinstance(caught.value, DemoSendError) and len(rec.requests) == 1 and not sleeps
    assert "HTTP 400" in text and "2 of 100 events are invalid" in text and "userId or anonymousId" in text
    unknown = {"success": False, "error": {"code": "invalid_write_key", "message": "the write key is unknown"}}
    rec = Recorder(lambda i: httpx.Response(401, json=unknown))
    with rec.client() as client, pytest.raises(DemoSendError, match=r"write key is unknown.*Check the write key"):
        send(small(), "http://candor.test", KEYS, progress=False, client=client)


def test_send_counts_events_the_server_rejected_and_checks_its_arguments() -> None:
    rec = Recorder(lambda i: httpx.Response(200, headers={"X-Candor-Rejected": "2"}, json={"success": True}))
    with rec.client() as client:
        report = send(small(), "http://candor.test", KEYS, batch_size=2500, progress=False, client=client)
    assert report.rejected == 2 * len(rec.requests)
    with rec.client() as client, pytest.raises(ValueError, match="no write key for source"):
        send(small(), "http://candor.test", {"web": "k"}, progress=False, client=client)
    with rec.client() as client, pytest.raises(ValueError, match="batch_size"):
        send(small(), "http://candor.test", KEYS, batch_size=2501, progress=False, client=client)


class PortalTransport(httpx.BaseTransport):
    """A sync transport into an ASGI app running on an event loop in another thread."""

    def __init__(self, portal: BlockingPortal, client: httpx.AsyncClient) -> None:
        self.portal = portal
        self.client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def go() -> httpx.Response:
            r = await self.client.send(request)
            return httpx.Response(r.status_code, headers=r.headers, content=await r.aread())

        return self.portal.call(go)


def test_send_into_a_real_candor_app(tmp_path: Path) -> None:
    """Through the real collection API in-process: every message accepted, none rejected."""
    from anyio.from_thread import start_blocking_portal
    from sqlalchemy import func, select

    from candor.app import Runtime, create_app
    from candor.config import Settings
    from candor.store.schema import events, rejected_events

    rt = Runtime(Settings.from_env(env={}, data_dir=tmp_path / "data", default_jurisdiction="US"))
    try:
        keys = {s: rt.directory.create_source(f"demo-{s}") for s in SOURCES}
        data = generate(25, 5)
        app = create_app(runtime=rt)
        with start_blocking_portal() as portal, portal.wrap_async_context_manager(app.router.lifespan_context(app)):
            asgi = portal.call(lambda: httpx.AsyncClient(transport=httpx.ASGITransport(app=app)))
            with httpx.Client(transport=PortalTransport(portal, asgi)) as client:
                report = send(data, "http://candor.test", keys, progress=False, client=client)
            portal.call(asgi.aclose)
        assert report.total_events == data.total_events and report.rejected == 0
        with rt.store.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(rejected_events)).scalar() == 0
            stored = conn.execute(select(func.count()).select_from(events)).scalar() or 0
        assert 0 < stored <= data.total_events  # without consent, events are only counted
    finally:
        rt.close()
