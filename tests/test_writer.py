"""``candor serve --workers N``: HTTP workers feeding one writer process (writer.py, wire.py).

The framing is checked by round trips of every Message field (Hypothesis); the served setup on
SQLite and PostgreSQL: events through two workers are stored once, client retries that land on
any worker are duplicates, and a writer killed with SIGKILL makes workers answer 503 (never 200)
until the supervisor's new writer is up, after which every acknowledged event is there.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from candor import wire
from candor.events import Message, Rejection
from candor.ingest import Work, WriteResult
from candor.screening import Held
from tests.serverproc import GRACEFUL_EXIT_CODES, START_TIMEOUT, ServerProcess

text = st.text(max_size=20)
opt_text = st.none() | text
ident = st.tuples(st.sampled_from(["user_id", "anonymous_id", "email", "record"]), text)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
messages = st.builds(
    Message,
    type=st.sampled_from(["identify", "track", "page", "screen", "group", "alias"]),
    message_id=text,
    event=opt_text,
    ts_ms=st.integers(0, 2**45),
    received_ms=st.integers(0, 2**45),
    user_pid=opt_text,
    anon_pid=opt_text,
    identifiers=st.lists(ident, max_size=4),
    previous_pids=st.none() | st.tuples(text, text),
    legacy=st.none() | st.dictionaries(ident, st.lists(text, max_size=2), max_size=2),
    properties=text,
    context=text,
    sealed_doc=st.dictionaries(text, json_value, max_size=3).map(lambda d: __import__("orjson").dumps(d)),
    required=st.lists(text, max_size=3).map(tuple),
    signals=st.none() | st.dictionaries(text, st.booleans(), max_size=3),
    raw_signal=opt_text,
    gpc=st.booleans(),
    consent_update=st.none() | st.tuples(st.frozensets(text, max_size=3), st.frozensets(text, max_size=3)),
    contacts=st.none() | st.dictionaries(ident, text, max_size=2),
    findings=st.none() | st.lists(st.tuples(text, text, text, text, text), max_size=2),
    held=st.none()
    | st.lists(st.builds(Held, category=text, scope=text, path=text, value=json_value, detector=opt_text), max_size=2),
    ip=opt_text,
)
rejections = st.builds(
    Rejection, reason=text, field=opt_text, type=opt_text, message_id=opt_text, index=st.integers(0, 2500)
)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 2**31), st.integers(0, 2**45), st.lists(messages, max_size=4), st.lists(rejections, max_size=3))
def test_work_survives_the_wire_unchanged(
    source_id: int, received: int, msgs: list[Message], rejs: list[Rejection]
) -> None:
    work = Work(source_id, msgs, rejs, received)
    framed = wire.frame(wire.work_out(work))
    (n,) = wire.HEADER.unpack(framed[: wire.HEADER.size])
    assert n == len(framed) - wire.HEADER.size
    back = wire.work_in(__import__("orjson").loads(framed[wire.HEADER.size :]))
    assert back.source_id == work.source_id and back.received_ms == work.received_ms
    assert back.messages == work.messages
    assert back.rejections == work.rejections
    result = WriteResult(3, 2, 1, 0)
    assert wire.result_in(wire.result_out(result)) == result


# -- the served setup -------------------------------------------------------------------------------
@pytest.fixture
def server(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    env = {"CANDOR_DATABASE_URL": request.getfixturevalue("pg_url")} if backend == "postgres" else {}
    srv = ServerProcess(tmp_path / "data", env=env, workers=2, start_timeout=START_TIMEOUT * 4)
    try:
        yield srv
    finally:
        srv.close()


def _batch(tag: str, n: int) -> dict[str, object]:
    return {
        "batch": [
            {
                "type": "identify" if i % 3 == 0 else "track",
                "userId": f"u-{tag}-{i % 7}",
                "messageId": f"{tag}-{i}",
                "event": "Viewed",
                "traits": {"email": f"person{i % 7}@workers.example"},
                "properties": {"i": i},
            }
            for i in range(n)
        ]
    }


def _processes(root: int) -> dict[int, str]:
    """pid → command line of ``root`` and its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out: dict[int, str] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            out[pid] = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        todo.extend(children.get(pid, []))
    return out


def _writer_pid(server: ServerProcess, timeout: float = 30.0) -> int:
    assert server.pid is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid, cmd in _processes(server.pid).items():
            if "candor.writer" in cmd:
                return pid
        time.sleep(0.1)
    raise AssertionError("no writer process under the server")


@pytest.mark.slow
def test_two_workers_store_every_event_once_and_dedupe_retries_across_workers(server: ServerProcess) -> None:
    key = server.create_source("web")
    token = server.create_token("owner")
    server.start()
    procs = _processes(server.pid or 0)
    assert sum("candor.writer" in c for c in procs.values()) == 1
    bodies = [_batch(f"b{j}", 40) for j in range(20)]
    # every request on a connection of its own, so the kernel spreads them over both workers
    for _round in range(3):  # the first round stores, two more are client retries
        for body in bodies:
            response = httpx.post(f"{server.base_url}/v1/batch", json=body, auth=(key, ""), timeout=30)
            assert response.status_code == 200, response.text
    single = {"userId": "u-single", "event": "Clicked", "messageId": "single-1"}
    for _ in range(4):
        assert httpx.post(f"{server.base_url}/v1/track", json=single, auth=(key, ""), timeout=30).status_code == 200
    rows = server.query("SELECT message_id, COUNT(*) FROM events GROUP BY message_id")
    assert len(rows) == 20 * 40 + 1 and max(n for _, n in rows) == 1
    total = server.stats(token)["total"]
    assert total == {"accepted": 801, "duplicate": 2 * 800 + 3, "rejected": 0, "no_consent": 0}
    assert server.terminate() in GRACEFUL_EXIT_CODES


@pytest.mark.slow
def test_a_killed_writer_means_503_never_200_then_recovery(server: ServerProcess) -> None:
    key = server.create_source("web")
    token = server.create_token("owner")
    server.start()
    writer = _writer_pid(server)
    with httpx.Client(base_url=server.base_url, auth=(key, ""), timeout=30) as client:
        assert client.post("/v1/track", json={"userId": "u", "event": "Before", "messageId": "m-0"}).status_code == 200
        os.kill(writer, signal.SIGKILL)
        statuses: Counter[int] = Counter()
        acked: list[str] = []
        refused: list[str] = []
        deadline = time.monotonic() + 60
        i = 0
        while time.monotonic() < deadline:
            i += 1
            mid = f"m-{i}"
            r = client.post("/v1/track", json={"userId": "u", "event": "During", "messageId": mid})
            statuses[r.status_code] += 1
            if r.status_code == 200:
                acked.append(mid)
                if statuses[503] and len(acked) >= 5:
                    break
            else:
                assert r.status_code == 503, r.text
                assert r.json()["error"]["code"] == "unavailable"
                refused.append(mid)
                time.sleep(0.02)
    assert statuses[503] > 0, f"no request saw the writer gone: {dict(statuses)}"
    assert len(acked) >= 5, f"the workers did not recover: {dict(statuses)}"
    assert _writer_pid(server) != writer  # the supervisor started a new writer
    stored = {mid for (mid,) in server.query("SELECT message_id FROM events")}
    assert {"m-0", *acked} <= stored
    # retries of the refused requests are stored once
    with httpx.Client(base_url=server.base_url, auth=(key, ""), timeout=30) as client:
        for mid in refused:
            assert (
                client.post("/v1/track", json={"userId": "u", "event": "During", "messageId": mid}).status_code == 200
            )
    rows = server.query("SELECT message_id, COUNT(*) FROM events GROUP BY message_id")
    assert {mid for mid, _ in rows} == {"m-0", *acked, *refused} and max(n for _, n in rows) == 1
    assert server.stats(token)["total"]["accepted"] == len(rows)
    assert server.terminate() in GRACEFUL_EXIT_CODES
