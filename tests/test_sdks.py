"""The official Segment and RudderStack Python SDKs, unchanged, against the real server over TCP.

Engineers keep the SDKs they already use. Both libraries are driven through their public clients
(background consumer with flush, and sync mode; gzip on and off — Segment's default is plain JSON,
RudderStack's is gzip) and what they sent is checked twice: in ``/v1/stats`` (per type, nothing
rejected) and in the database, down to the messageIds the SDKs generated. A retry of a batch whose
response was lost, done by the SDK's own retry loop, must be stored once.
"""

from __future__ import annotations

import gzip
import importlib
import json
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any

import httpx
import pytest
import rudderstack.analytics as rudder_analytics
import segment.analytics as segment_analytics
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient

from tests.serverproc import HOST, ServerProcess

TYPES = ("identify", "track", "page", "screen", "group", "alias")


@dataclass(frozen=True)
class Sdk:
    name: str
    client_class: type[Any]
    module: ModuleType
    default_gzip: bool


SEGMENT = Sdk("segment", SegmentClient, segment_analytics, default_gzip=False)
RUDDER = Sdk("rudder", RudderClient, rudder_analytics, default_gzip=True)
SDKS = [pytest.param(SEGMENT, id="segment"), pytest.param(RUDDER, id="rudder")]


@dataclass
class Env:
    server: ServerProcess
    token: str

    def new_source(self, prefix: str) -> tuple[str, str]:
        name = f"{prefix}-{secrets.token_hex(4)}"
        return name, self.server.create_source(name)

    def stored(self, source: str) -> dict[str, tuple[str, str]]:
        """messageId → (type, subject_id) of every event stored for the source."""
        rows = self.server.query(
            "SELECT e.message_id, e.type, e.subject_id FROM events e JOIN sources s ON s.id = e.source_id "
            "WHERE s.name = ?",
            (source,),
        )
        return {mid: (mtype, sid) for mid, mtype, sid in rows}

    def copies(self, source: str, message_ids: list[str]) -> Counter[str]:
        """How many rows each messageId has in the source (COUNT per source and messageId)."""
        marks = ",".join("?" * len(message_ids))
        rows = self.server.query(
            "SELECT e.message_id, COUNT(*) FROM events e JOIN sources s ON s.id = e.source_id "
            f"WHERE s.name = ? AND e.message_id IN ({marks}) GROUP BY e.message_id",
            (source, *message_ids),
        )
        return Counter(dict(rows))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with ServerProcess(tmp_path_factory.mktemp("sdks") / "data") as server:
        yield Env(server, server.create_token("owner"))


@dataclass
class Errors:
    """Collects what an SDK reports through ``on_error`` (types and counts only)."""

    seen: list[str] = field(default_factory=list)

    def __call__(self, exc: Exception, batch: list[dict[str, Any]]) -> None:
        self.seen.append(f"{type(exc).__name__} for {len(batch)} messages")


def send_every_type(client: Any, user: str) -> dict[str, str]:
    """One call of each type through the SDK; returns messageId → type as the SDK generated them."""
    results = [
        client.identify(user, traits={"plan": "pro", "email": f"{user}@example.com", "name": "Test Person"}),
        client.track(user, "Order Completed", properties={"revenue": 12.5, "currency": "EUR", "items": 2}),
        client.page(user, "Docs", "Getting started", properties={"path": "/docs/start"}),
        client.screen(user, "Onboarding", "Welcome", properties={"step": 1}),
        client.group(user, f"org-{user}", traits={"employees": 12, "industry": "books"}),
        client.alias(f"anon-{user}", user),
    ]
    sent: dict[str, str] = {}
    for ok, msg in results:
        assert ok, "the SDK refused to queue a message"
        sent[msg["messageId"]] = msg["type"]
    assert sorted(sent.values()) == sorted(TYPES)
    return sent


def check_arrived(env: Env, source: str, sent: dict[str, str], duplicates: dict[str, int] | None = None) -> None:
    stats = env.server.source_stats(env.token, source)
    assert stats["accepted"] == dict(Counter(sent.values())), stats
    assert stats["rejected"] == {}, stats
    assert stats["duplicate"] == (duplicates or {}), stats
    stored = env.stored(source)
    assert {mid: t for mid, (t, _sid) in stored.items()} == sent
    # one user, one subject: identify, track, page, screen, group and alias all land on it
    assert len({sid for _t, sid in stored.values()}) == 1


@pytest.mark.parametrize("use_gzip", [pytest.param(True, id="gzip"), pytest.param(False, id="plain")])
@pytest.mark.parametrize("sdk", SDKS)
def test_every_call_arrives_with_the_sdk_message_ids(
    env: Env, sdk: Sdk, use_gzip: bool, lossy_proxy: Callable[[int], _DropFirstResponses]
) -> None:
    source, key = env.new_source(f"{sdk.name}-{'gz' if use_gzip else 'plain'}")
    proxy = lossy_proxy(0)  # passes everything through; records what went over the wire
    errors = Errors()
    client = sdk.client_class(key, host=proxy.url, gzip=use_gzip, on_error=errors, upload_interval=0.05, max_retries=2)
    try:
        sent = {}
        for i in range(3):  # several users: the consumer batches their messages together
            sent.update(send_every_type(client, f"u-{sdk.name}-{i}-{secrets.token_hex(3)}"))
        client.flush()
    finally:
        client.shutdown()
    assert errors.seen == [] and proxy.failures == []
    assert proxy.requests, "the SDK sent nothing"
    assert {encoding for _ids, encoding, _r in proxy.requests} == {"gzip" if use_gzip else None}
    assert Counter(mid for ids, _e, _r in proxy.requests for mid in ids) == Counter(dict.fromkeys(sent, 1))

    stats = env.server.source_stats(env.token, source)
    assert stats["accepted"] == dict.fromkeys(TYPES, 3), stats
    assert stats["rejected"] == {} and stats["duplicate"] == {}, stats
    stored = env.stored(source)
    assert {mid: t for mid, (t, _sid) in stored.items()} == sent
    assert len({sid for _t, sid in stored.values()}) == 3  # one subject per user


def test_gzip_defaults_of_the_sdks() -> None:
    """Segment sends plain JSON unless ``gzip=True``; RudderStack gzips by default. Both paths are
    exercised above; this notices when an SDK release changes its default."""
    assert SegmentClient.DefaultConfig.gzip is False and SEGMENT.default_gzip is False
    assert RudderClient.DefaultConfig.gzip is True and RUDDER.default_gzip is True


@pytest.mark.parametrize("sdk", SDKS)
def test_sync_mode_and_a_repeated_message_id(env: Env, sdk: Sdk) -> None:
    """Sync mode posts each call before returning; the same messageId twice is stored once."""
    source, key = env.new_source(f"{sdk.name}-sync")
    client = sdk.client_class(key, host=env.server.base_url, sync_mode=True, gzip=sdk.default_gzip)
    user = f"u-{sdk.name}-sync-{secrets.token_hex(3)}"
    sent = send_every_type(client, user)
    check_arrived(env, source, sent)

    mid = f"{sdk.name}-explicit-{secrets.token_hex(8)}"
    for _ in range(2):
        ok, msg = client.track(user, "Coupon Applied", properties={"coupon": "X"}, message_id=mid)
        assert ok and msg["messageId"] == mid
    sent[mid] = "track"
    stats = env.server.source_stats(env.token, source)
    assert stats["accepted"]["track"] == 2 and stats["duplicate"] == {"track": 1}, stats
    assert env.copies(source, [mid]) == {mid: 1}


@pytest.mark.parametrize("sdk", SDKS)
def test_module_level_configuration(env: Env, sdk: Sdk, monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented set-up: module attributes ``write_key`` and ``host`` (RudderStack:
    ``dataPlaneUrl``), then the module-level functions."""
    source, key = env.new_source(f"{sdk.name}-module")
    module = sdk.module
    monkeypatch.setattr(module, "default_client", None)
    monkeypatch.setattr(module, "write_key", key)
    monkeypatch.setattr(module, "sync_mode", True)
    monkeypatch.setattr(module, "on_error", Errors())
    if sdk is RUDDER:
        monkeypatch.setattr(module, "dataPlaneUrl", env.server.base_url)
    else:
        monkeypatch.setattr(module, "host", env.server.base_url)
    user = f"u-{sdk.name}-module-{secrets.token_hex(3)}"
    mids = {t: f"{sdk.name}-{t}-{secrets.token_hex(6)}" for t in TYPES}
    module.identify(user, {"plan": "free"}, message_id=mids["identify"])
    module.track(user, "Signed Up", {"plan": "free"}, message_id=mids["track"])
    module.page(user, "Docs", "Home", {"path": "/"}, message_id=mids["page"])
    module.screen(user, "App", "Home", {"step": 0}, message_id=mids["screen"])
    module.group(user, "org-1", {"employees": 3}, message_id=mids["group"])
    module.alias(f"anon-{user}", user, message_id=mids["alias"])
    assert module.default_client is not None and module.default_client.host == env.server.base_url
    check_arrived(env, source, {mid: t for t, mid in mids.items()})


# -- a lost response: the SDK's own retry loop sends the same batch again -------------------------
class _DropFirstResponses(ThreadingHTTPServer):
    """A tiny HTTP proxy in front of Candor that forwards every request but, for the first
    ``drops`` requests, closes the connection instead of passing the (committed) response back:
    the client sees a network error after the server stored the batch, and retries."""

    daemon_threads = True

    def __init__(self, upstream: str, drops: int) -> None:
        super().__init__((HOST, 0), _ProxyHandler)
        self.upstream = upstream
        self.drops = drops
        self.lock = threading.Lock()
        self.requests: list[tuple[list[str], str | None, str | None]] = []  # ids, encoding, retry count
        self.failures: list[str] = []

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    server: _DropFirstResponses
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        proxy = self.server
        try:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            encoding = self.headers.get("Content-Encoding")
            decoded = gzip.decompress(body) if encoding == "gzip" else body
            ids = [m.get("messageId") for m in json.loads(decoded).get("batch", [])]
            forward = {
                k: v
                for k, v in self.headers.items()
                if k.lower() in ("authorization", "content-type", "content-encoding", "x-retry-count")
            }
            upstream = httpx.post(proxy.upstream + self.path, content=body, headers=forward, timeout=30)
            with proxy.lock:
                proxy.requests.append((ids, encoding, self.headers.get("X-Retry-Count")))
                drop = proxy.drops > 0 and upstream.status_code == 200
                if drop:
                    proxy.drops -= 1
        except Exception as exc:
            proxy.failures.append(type(exc).__name__)
            self.send_error(502)
            return
        if drop:
            self.close_connection = True  # no status line at all: the response is lost
            return
        self.send_response(upstream.status_code)
        self.send_header("Content-Type", upstream.headers.get("content-type", "application/json"))
        self.send_header("Content-Length", str(len(upstream.content)))
        self.end_headers()
        self.wfile.write(upstream.content)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return


@pytest.fixture
def lossy_proxy(env: Env) -> Iterator[Callable[[int], _DropFirstResponses]]:
    started: list[tuple[_DropFirstResponses, threading.Thread]] = []

    def make(drops: int) -> _DropFirstResponses:
        proxy = _DropFirstResponses(env.server.base_url, drops)
        thread = threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        started.append((proxy, thread))
        return proxy

    yield make
    for proxy, thread in started:
        proxy.shutdown()
        proxy.server_close()
        thread.join(5)


@pytest.mark.parametrize("sdk", SDKS)
def test_sdk_retry_after_a_lost_response_is_stored_once(
    env: Env, sdk: Sdk, lossy_proxy: Callable[[int], _DropFirstResponses]
) -> None:
    source, key = env.new_source(f"{sdk.name}-retry")
    proxy = lossy_proxy(1)
    errors = Errors()
    # gzip on for both: Segment's opt-in gzip path and RudderStack's default go through the retry
    client = sdk.client_class(key, host=proxy.url, gzip=True, on_error=errors, upload_interval=0.2, max_retries=3)
    try:
        user = f"u-{sdk.name}-retry-{secrets.token_hex(3)}"
        sent = send_every_type(client, user)
        client.flush()
    finally:
        client.shutdown()
    assert errors.seen == [] and proxy.failures == []

    # the SDK sent the very same messageIds again after the lost response
    assert len(proxy.requests) >= 2, "the SDK did not retry"
    first_ids, first_encoding, _ = proxy.requests[0]
    retry_ids, _, retry_count = proxy.requests[1]
    assert first_encoding == "gzip"
    assert first_ids and retry_ids == first_ids
    if sdk is SEGMENT:
        assert retry_count == "1"  # Segment marks its retries
    seen = Counter(mid for ids, _e, _r in proxy.requests for mid in ids)
    assert set(seen) == set(sent)

    retried = Counter(sent[mid] for mid in first_ids)
    check_arrived(env, source, sent, duplicates=dict(retried))
    assert env.copies(source, list(sent)) == Counter(dict.fromkeys(sent, 1))


@pytest.mark.parametrize("sdk", SDKS)
def test_replaying_a_batch_through_the_sdk_transport_is_stored_once(env: Env, sdk: Sdk) -> None:
    """The SDK's own ``request.post`` (what its consumer calls on every retry) sends one batch
    twice, gzip-compressed; the second copy is counted as duplicate and stored nowhere."""
    source, key = env.new_source(f"{sdk.name}-replay")
    client = sdk.client_class(key, host=env.server.base_url, send=False)
    user = f"u-{sdk.name}-replay-{secrets.token_hex(3)}"
    batch = [
        client.identify(user, traits={"plan": "pro"})[1],
        client.track(user, "Product Viewed", properties={"sku": "B-1"})[1],
        client.page(user, "Shop", "Product", properties={"path": "/p/b-1"})[1],
    ]
    post = importlib.import_module(f"{sdk.module.__name__}.request").post
    for _ in range(2):
        response = post(key, env.server.base_url, gzip=True, batch=[dict(m) for m in batch])
        assert response.status_code == 200
    sent = {m["messageId"]: m["type"] for m in batch}
    stats = env.server.source_stats(env.token, source)
    assert stats["accepted"] == {"identify": 1, "track": 1, "page": 1}, stats
    assert stats["duplicate"] == {"identify": 1, "track": 1, "page": 1}, stats
    assert stats["rejected"] == {}, stats
    assert env.copies(source, list(sent)) == Counter(dict.fromkeys(sent, 1))
