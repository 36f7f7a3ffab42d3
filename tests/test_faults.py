"""Jobs killed midway (SIGKILL of a child process at a known point) resume and complete.

The child runs the real job (tests/faultproc.py) and stops at a named point: an erasure after its keys
were destroyed but before the purge, or inside the purge's transaction; an identity resolution after
its model was saved, or inside a linking transaction. It is killed there; the real ``candor`` command
then resumes the job, and the result is checked against what an uninterrupted run gives.
"""

from __future__ import annotations

import importlib.util
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from candor import audit
from candor.app import Runtime
from candor.config import Settings
from candor.store import Store
from candor.store.schema import (
    SUBJECT_TABLES,
    data_keys,
    events,
    identity_edges,
    identity_jobs,
    metadata,
    privacy_requests,
)
from candor.testing import candor_command
from tests.helpers import api
from tests.serverproc import clean_env

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[1]


def _env(settings: Settings) -> dict[str, str]:
    return clean_env(settings.data_dir, {"CANDOR_DATABASE_URL": settings.database_url} if settings.database_url else {})


def kill_at(settings: Settings, *args: str, timeout: float = 180.0) -> str:
    """Run ``tests.faultproc ARGS`` until it pauses, SIGKILL it there; returns the point it reached."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.faultproc", *args],
        cwd=ROOT,
        env=_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    try:
        line = proc.stdout.readline()
        while line and not line.startswith("PAUSED") and time.monotonic() < deadline:
            line = proc.stdout.readline()
        assert line.startswith("PAUSED"), f"the job ended before its kill point (exit {proc.poll()})"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        return line.split()[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def cli(settings: Settings, *args: str) -> str:
    done = subprocess.run(
        [*candor_command(), *args], env=_env(settings), capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"candor {' '.join(args)} exited {done.returncode}"
    return done.stdout


def count(rt: Runtime, table: Any, *where: Any) -> int:
    with rt.store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar() or 0)


@pytest.mark.parametrize("point", ["after-shred", "inside-purge"])
async def test_an_erasure_killed_midway_resumes_and_completes(
    make_settings: Callable[..., Settings], point: str
) -> None:
    settings = make_settings()
    async with api(settings) as a:
        for uid in ("gone", "kept"):
            await a.post("/v1/identify", {"userId": uid, "traits": {"email": f"{uid}@fault.example"}})
            for i in range(5):
                await a.post("/v1/track", {"userId": uid, "event": "Viewed", "properties": {"i": i}})
            await a.post("/v1/consent", {"userId": uid, "granted": ["analytics"], "source": "banner"})
        gone = a.rt.consent.subject_for("user_id", "gone")
        req, _ = a.rt.requests.create("erasure", "user_id", "gone", channel="cli", actor="test", send_code=False)
        a.rt.requests.verify_by_staff(req.id, actor="test", reason="test")
    assert gone is not None
    assert kill_at(settings, "erasure", req.id, point) == point
    # killed midway: the keys are gone (the erasure is effective), the rows are not purged yet. (Read with a
    # bare store: a Runtime would already finish the erasure, replaying the journal when it starts.)
    store = Store(settings)
    try:
        with store.engine.connect() as conn:
            assert conn.execute(select(func.count()).where(data_keys.c.subject_id == gone)).scalar() == 0
            assert conn.execute(select(func.count()).where(events.c.subject_id == gone)).scalar() == 6
            state = conn.execute(select(privacy_requests.c.state).where(privacy_requests.c.id == req.id)).scalar()
            assert state == "in_progress"
    finally:
        store.dispose()
    # resuming: the command's start replays the erasure journal (the purge completes), then the request
    cli(settings, "privacy", "process", req.id)
    rt = Runtime(settings)
    try:
        for name, column in SUBJECT_TABLES.items():
            table = metadata.tables[name]
            assert count(rt, table, table.c[column] == gone) == 0, name
        assert rt.requests.get(req.id).state == "completed"
        kept = rt.consent.subject_for("user_id", "kept")
        assert kept is not None and count(rt, events, events.c.subject_id == kept) == 6
        assert audit.verify(rt.store, rt.checkpoints).ok
        actions = [e["action"] for e in audit.entries(rt.store, limit=10_000)]
        # the killed purge's transaction left nothing behind: exactly one purge committed
        assert actions.count("rights.erasure.purged") == 1
    finally:
        rt.close()


def _bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _partition(rt: Runtime, records: list[dict[str, Any]]) -> set[frozenset[str]]:
    groups: dict[str, set[str]] = {}
    for record, profile in _bench("identity").record_profiles(rt, records).items():
        groups.setdefault(profile, set()).add(record)
    return {frozenset(g) for g in groups.values()}


@pytest.mark.parametrize("point", ["after-training", "inside-linking"])
def test_an_identity_resolution_killed_midway_resumes_and_gives_the_uninterrupted_result(
    tmp_path: Path, point: str
) -> None:
    bench = _bench("identity")
    records, _ = bench._load_data_module().generate(800, seed=21)
    killed = Settings.from_env(env={}, data_dir=tmp_path / "killed", default_jurisdiction="US")
    rt = Runtime(killed)
    files = bench.write_csvs(records, tmp_path / "csv", bench._load_data_module().SOURCES)
    for source, path in files.items():
        bench.import_file(rt, path, source)
    rt.store.checkpoint()
    rt.close()
    shutil.copytree(tmp_path / "killed", tmp_path / "reference")
    reference = killed.with_(data_dir=tmp_path / "reference")

    assert kill_at(killed, "resolve", point) == point
    rt = Runtime(killed)
    try:
        assert count(rt, identity_jobs, identity_jobs.c.name == "model") == 1  # trained and saved before the kill
        assert count(rt, identity_edges, identity_edges.c.rule == "probabilistic") == 0  # nothing half-written
        with rt.store.engine.connect() as conn:
            model = conn.execute(select(identity_jobs.c.state).where(identity_jobs.c.name == "model")).scalar()
    finally:
        rt.close()
    resumed = orjson.loads(cli(killed, "identity", "resolve", "--json"))
    assert resumed["trained"] is False and resumed["linked"] > 20  # the saved model is reused

    ref = Runtime(reference)  # the same model, uninterrupted
    try:
        with ref.store.write() as conn:
            ref.resolver._save(conn, "model", str(model))
        clean = ref.resolver.resolve(actor="test")
        assert clean.linked == resumed["linked"] and clean.review == resumed["review"]
        rt = Runtime(killed)
        try:
            assert _partition(rt, records) == _partition(ref, records)
            again = rt.resolver.resolve(actor="test")
            assert again.linked == 0 and again.review == 0  # complete: a further run adds nothing
        finally:
            rt.close()
    finally:
        ref.close()
