"""The demo retailer: deterministic, valid by Segment's rules, messy on purpose, sent for real."""

from __future__ import annotations

import base64
import difflib
import json
import re
import socket
from collections import Counter
from pathlib import Path

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from candor.cli import app as cli_app
from candor.demo import SOURCES, generate, send
from candor.events import Message, Validator


def test_same_seed_same_data() -> None:
    a, b, c = generate(40, 1), generate(40, 1), generate(40, 2)
    assert a.batches == b.batches
    assert a.batches != c.batches


def test_every_message_is_valid_and_within_limits() -> None:
    data = generate(120, 3)
    v = Validator(lambda t, x: f"{t}:{x}")
    ids = set()
    for source, events in data.batches.items():
        assert source in SOURCES
        for m in events:
            out = v.validate(m, type_=None, received_ms=0, sent_at_ms=None, client_ip=None)
            assert isinstance(out, Message), (source, out)
            assert len(orjson.dumps(m)) < 32 * 1024
            ids.add(m["messageId"])
    assert len(ids) == data.total_events
    assert 20 <= data.total_events / 120 <= 40


def test_realistic_mess() -> None:
    data = generate(400, 5)
    in_sources = Counter(len(p.sources) for p in data.truth)
    assert sum(n for k, n in in_sources.items() if k >= 3) > 40
    # anonymous browsing that later logs in, with the same anonymousId
    identifies = [m for m in data.batches["web"] if m["type"] == "identify"]
    assert identifies and all(m["anonymousId"] and m["userId"] for m in identifies)
    anon_pages = {m["anonymousId"] for m in data.batches["web"] if m["type"] == "page" and "userId" not in m}
    assert anon_pages & {m["anonymousId"] for m in identifies}
    # the call center spells names its own way
    by_user = {p.user_id: p for p in data.truth}
    crm = [m for m in data.batches["callcenter"] if m["type"] == "identify"]
    web_names = {f"{p.first} {p.last}" for p in by_user.values()}
    near = [m for m in crm if f"{m['traits']['firstName']} {m['traits']['lastName']}" not in web_names]
    assert near, "some call-center names differ from the web ones"
    ratios = [
        max(
            difflib.SequenceMatcher(None, f"{m['traits']['firstName']} {m['traits']['lastName']}", w).ratio()
            for w in web_names
        )
        for m in near
    ]
    assert any(0.6 < r < 1 for r in ratios)
    # consent spread: about 60% accept all, 20% reject all
    accept_all = sum(all(p.prefs.values()) for p in data.truth) / len(data.truth)
    reject_all = sum(not any(p.prefs.values()) for p in data.truth) / len(data.truth)
    assert 0.5 < accept_all < 0.75 and 0.1 < reject_all < 0.32
    # only reserved domains and fictional phone numbers
    blob = json.dumps(data.batches)
    for domain in re.findall(r"@([a-z0-9.-]+)", blob):
        assert domain in ("example.com", "example.org", "example.net"), domain
    for p in data.truth:
        assert p.phone[3:7] == "5550" and 100 <= int(p.phone[7:]) < 200


def test_send_uses_basic_auth_batches_and_retries() -> None:
    seen: list[httpx.Request] = []
    fail_once = {"left": 1}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if fail_once["left"]:
            fail_once["left"] -= 1
            return httpx.Response(503, headers={"Retry-After": "0"})
        return httpx.Response(200, json={"success": True})

    data = generate(10, 9)
    keys = {s: f"wk_{s}" for s in SOURCES}
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        report = send(data, "http://demo.test", keys, batch_size=50, progress=False, client=client)
    assert report.total_events == data.total_events
    assert report.requests == len(seen) - 1
    auth = seen[-1].headers["authorization"]
    user = base64.b64decode(auth.split()[1]).decode()
    assert user.endswith(":") and user[:-1] in keys.values()
    assert all(len(orjson.loads(r.content)["batch"]) <= 50 for r in seen)

    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"success": False, "error": {"code": "x", "message": "batch is empty"}})

    with (
        httpx.Client(transport=httpx.MockTransport(refuse)) as client,
        pytest.raises(RuntimeError, match="batch is empty"),
    ):
        send(data, "http://demo.test", keys, progress=False, client=client)


def test_demo_command_seeds_through_the_api(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    runner = CliRunner()
    result = runner.invoke(
        cli_app,
        ["--data-dir", str(tmp_path), "demo", "--customers", "30", "--no-serve", "--port", str(port), "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    assert "Seeded 30 customers" in result.output and "cnd_" in result.output
    assert re.search(r"Loyalty programme: [1-9]\d* members enrolled", result.output), result.output
    stats = json.loads(runner.invoke(cli_app, ["--data-dir", str(tmp_path), "stats", "--json"]).output)
    # the built-in source ``loyalty`` holds what members told us through the genres offer
    by_source = {s["source"]: s["total"] for s in stats["sources"] if s["source"] != "loyalty"}
    assert set(by_source) == {f"demo-{s}" for s in SOURCES}
    assert all(t["accepted"] > 0 and t["rejected"] == 0 for t in by_source.values())
    assert stats["total"]["no_consent"] > 0  # people who said no are not stored
    # running it again sends the same messageIds: nothing is stored twice
    again = runner.invoke(
        cli_app,
        ["--data-dir", str(tmp_path), "demo", "--customers", "30", "--no-serve", "--port", str(port), "--no-progress"],
    )
    assert again.exit_code == 0, again.output
    stats2 = json.loads(runner.invoke(cli_app, ["--data-dir", str(tmp_path), "stats", "--json"]).output)
    assert stats2["total"]["accepted"] == stats["total"]["accepted"]
    assert stats2["total"]["duplicate"] == stats["total"]["accepted"]
