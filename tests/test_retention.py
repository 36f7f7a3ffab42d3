"""Retention on both stores, with the clock moved: what is past its period goes, the rest stays."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from candor import audit, retention
from candor.config import ConfigError, Settings
from candor.retention import DAY_MS, Rule, parse_rules
from candor.store import now_ms
from candor.store.schema import event_ips, events, rejected_events, retention_state
from tests.helpers import Api, api, bearer

pytestmark = pytest.mark.anyio
IP_OLD = "198.51.100.41"
IP_NEW = "198.51.100.42"


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat().replace("+00:00", "Z")


async def send(a: Api, body: dict[str, Any], at: int) -> None:
    r = await a.post(f"/v1/{body.pop('kind', 'track')}", {**body, "timestamp": iso(at)})
    assert r.status_code == 200, r.text


def sealed_docs(a: Api) -> dict[str, dict[str, Any]]:
    """messageId -> the decrypted personal part of each stored event."""
    out = {}
    with a.rt.store.engine.connect() as conn:
        for mid, sid, sealed in conn.execute(select(events.c.message_id, events.c.subject_id, events.c.sealed)):
            out[mid] = orjson.loads(a.rt.vault.open(sid, sealed, conn))
    return out


def count(a: Api, table: Any = events) -> int:
    with a.rt.store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)


def test_rules_are_parsed_with_clear_errors_and_the_shortest_period_wins(tmp_path: Path) -> None:
    rules = {r.target: r.days for r in parse_rules(Settings().retention)}
    assert rules == {"raw_events": 390, "ip_address": 30, "rejected_records": 30, "purpose:necessary": 3650}
    assert parse_rules("ip_address=keep,rejected_records=2w")[0].days is None
    for bad, words in (
        ("ip_address", "target=period"),
        ("ip_adress=30d", "unknown target"),
        ("ip_address=30", "not a period"),
        ("ip_address=0d", "not a period"),
        ("purpose:=3d", "unknown target"),
    ):
        with pytest.raises(ConfigError, match=words):
            Settings.from_env(env={"CANDOR_RETENTION": bad})
    from candor.app import Runtime

    rt = Runtime(Settings.from_env(env={}, data_dir=tmp_path, retention="ip_address=30d,purpose:nosuch=1y"))
    try:
        with pytest.raises(ConfigError, match="unknown purpose"):
            retention.rules(rt)
        rt.settings = rt.settings.with_(retention="ip_address=30d")

        def dictionary(_rt: Any) -> list[Rule]:  # a second source (the data dictionary, later)
            return [Rule("ip_address", 7, "dictionary"), Rule("rejected_records", 90, "dictionary")]

        retention.register_source(dictionary)
        try:
            merged = {r.target: (r.days, r.source) for r in retention.rules(rt)}
        finally:
            retention.SOURCES.remove(dictionary)
        assert merged == {"ip_address": (7, "dictionary"), "rejected_records": (90, "dictionary")}
    finally:
        rt.close()


async def test_retention_with_the_clock_moved(make_settings: Callable[..., Settings]) -> None:
    now = now_ms()
    async with api(make_settings()) as a:
        ctx_old = {"ip": IP_OLD, "userAgent": "Mozilla/5.0 test", "locale": "en-GB"}
        await send(a, {"kind": "identify", "userId": "u1", "traits": {"email": "ret@example.org"}}, now - 400 * DAY_MS)
        await send(a, {"userId": "u1", "event": "Viewed", "messageId": "old-view"}, now - 400 * DAY_MS)
        await send(a, {"userId": "u1", "event": "Order Completed", "messageId": "old-order"}, now - 400 * DAY_MS)
        await send(a, {"userId": "u1", "event": "Viewed", "messageId": "ip-40d", "context": ctx_old}, now - 40 * DAY_MS)
        await send(
            a,
            {"userId": "u1", "event": "Viewed", "messageId": "ip-10d", "context": {**ctx_old, "ip": IP_NEW},
             "properties": {"ip": IP_NEW, "item": "jazz"}},
            now - 10 * DAY_MS,
        )  # fmt: skip
        assert (await a.post("/v1/track", {"userId": "u1"})).status_code == 400  # a rejected record, now
        assert count(a, rejected_events) == 1 and count(a) == 5

        first = retention.run(a.rt, now=now, actor="test")
        assert first["results"]["raw_events"]["deleted"] == 1
        assert first["results"]["ip_address"] == {**first["results"]["ip_address"], "stripped": 0, "deleted": 0}
        assert first["results"]["rejected_records"]["deleted"] == 0
        docs = sealed_docs(a)
        assert "old-view" not in docs  # analytics, 13 months: gone
        assert "old-order" in docs  # necessary (an order), 10 years: kept
        assert any("traits" in d for d in docs.values())  # the profile (identify) is kept while the person is
        # the full address is kept apart from the event (event_ips), the event keeps the user agent
        assert "ip" not in docs["ip-40d"]["context"] and docs["ip-40d"]["context"]["userAgent"]
        assert docs["ip-10d"]["properties"]["ip"] == IP_NEW  # an undeclared ip property: sealed with the event
        assert count(a, event_ips) == 2  # collected now: their 30 days start now, whatever the event's time

        # an import arrives late with an old time: the next run finds its sealed ip property, though its
        # time is behind the mark
        late = {"userId": "u1", "event": "Viewed", "messageId": "late", "context": ctx_old}
        late["properties"] = {"ip": IP_OLD}
        await send(a, late, now - 60 * DAY_MS)
        again = retention.run(a.rt, now=now + 1000, actor="test")
        assert again["results"]["ip_address"]["stripped"] == 1 and "properties" not in sealed_docs(a)["late"]
        assert again["results"]["ip_address"]["deleted"] == 0 and count(a, event_ips) == 3

        # 31 days later: the rejected record, every kept address and the second ip property are past
        later = retention.run(a.rt, now=now + 31 * DAY_MS, actor="test")
        assert later["results"]["rejected_records"]["deleted"] == 1 and count(a, rejected_events) == 0
        assert later["results"]["ip_address"]["stripped"] == 1 and later["results"]["ip_address"]["deleted"] == 3
        assert count(a, event_ips) == 0
        doc = sealed_docs(a)["ip-10d"]
        assert "ip" not in doc["context"] and "properties" not in doc  # the sealed ip property went too
        with a.rt.store.engine.connect() as conn:
            clear = conn.execute(select(events.c.properties).where(events.c.message_id == "ip-10d")).scalar()
        assert json.loads(str(clear)) == {"item": "jazz"}  # what was in clear is untouched
        entries = [e for e in audit.entries(a.rt.store, limit=10_000) if e["action"] == "retention.applied"]
        assert len(entries) == 3 and entries[0]["details"]["results"]["raw_events"]["deleted"] == 1
        assert IP_OLD not in json.dumps(entries) and IP_NEW not in json.dumps(entries)
        assert audit.verify(a.rt.store).ok
        status = retention.status(a.rt)
        assert status["last_run"]["ms"] == now + 31 * DAY_MS and not status["running"]


async def test_an_interrupted_run_resumes_where_it_stopped_and_one_process_runs_at_a_time(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "CHUNK", 10)
    now = now_ms()
    async with api(make_settings()) as a:
        # undeclared ip properties are sealed with their event: the job re-seals events without them
        batch = [
            {"type": "track", "userId": f"p{i % 5}", "event": "Viewed", "messageId": f"m{i}",
             "properties": {"ip": f"203.0.113.{i}"}, "timestamp": iso(now - 50 * DAY_MS)}
            for i in range(35)
        ]  # fmt: skip
        assert (await a.post("/v1/batch", {"batch": batch})).status_code == 200
        seen: list[int] = []

        def stop_after_two_chunks(phase: str, done: int, _total: int) -> None:
            if phase == "IP addresses":
                seen.append(done)
                if len(seen) == 2:
                    raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            retention.run(a.rt, now=now, progress=stop_after_two_chunks)
        stripped = sum(1 for d in sealed_docs(a).values() if "ip" not in d.get("properties", {}))
        assert stripped == 20  # two chunks committed, the rest not yet
        with a.rt.store.engine.connect() as conn:
            query = select(retention_state.c.state).where(retention_state.c.name == "ip_address")
            saved = orjson.loads(str(conn.execute(query).scalar()))
            assert conn.execute(select(retention_state).where(retention_state.c.name == "_lease")).first() is None
        assert saved["run"]["stripped"] == 20
        done = retention.run(a.rt, now=now)
        # one run across the interruption: it went on from its cursor (a restart would read 20 + 35 rows)
        assert done["results"]["ip_address"] == {**done["results"]["ip_address"], "stripped": 35, "read": 35}
        assert all("ip" not in d.get("properties", {}) for d in sealed_docs(a).values())

        # another process holds the lease: this one leaves the job to it
        with a.rt.store.write() as conn:
            retention._save(a.rt.store, conn, "_lease", {"holder": "other", "until": now_ms() + 60_000})
        with pytest.raises(retention.Busy):
            retention.run(a.rt)
        owner = bearer(a.owner)
        r = await a.client.post("/v1/retention/run", headers=owner)
        assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
        with a.rt.store.write() as conn:
            conn.execute(retention_state.delete().where(retention_state.c.name == "_lease"))
        r = await a.client.post("/v1/retention/run", headers=owner)
        assert r.status_code == 200 and "ip_address" in r.json()["results"]
        status = (await a.client.get("/v1/retention", headers=owner)).json()
        assert {x["target"] for x in status["rules"]} >= {"ip_address", "raw_events"}
        marketer = bearer(a.rt.directory.create_token("m", "marketer"))
        assert (await a.client.get("/v1/retention", headers=marketer)).status_code == 403


async def test_the_server_runs_the_job_on_its_schedule(tmp_path: Path) -> None:
    settings = Settings.from_env(env={}, data_dir=tmp_path / "data", default_jurisdiction="US", retention_seconds=1)
    async with api(settings) as a:
        await send(a, {"userId": "s1", "event": "Viewed"}, now_ms() - 500 * DAY_MS)
        assert count(a) == 1
        def applied() -> bool:
            return any(e["action"] == "retention.applied" for e in audit.entries(a.rt.store, limit=1000))

        for _ in range(100):
            if applied():
                break
            await asyncio.sleep(0.1)
        assert applied() and count(a) == 0


def test_retention_commands(tmp_path: Path) -> None:
    from candor.cli import app

    runner = CliRunner()
    env = {"CANDOR_DATA_DIR": str(tmp_path / "data"), "CANDOR_RETENTION": "ip_address=30d,raw_events=keep"}
    ran = runner.invoke(app, ["retention", "run", "--json"], env=env)
    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.stdout)["results"]["ip_address"]["stripped"] == 0
    status = runner.invoke(app, ["retention", "status"], env=env)
    assert status.exit_code == 0 and json.loads(status.stdout)["last_run"] is not None
    bad = runner.invoke(app, ["retention", "run"], env={**env, "CANDOR_RETENTION": "ip_address=soon"})
    assert bad.exit_code == 2 and "not a period" in bad.output
