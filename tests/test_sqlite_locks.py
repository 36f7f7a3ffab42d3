"""DuckDB never opens the SQLite store inside a Candor process.

DuckDB's sqlite scanner carries its own copy of SQLite. When that copy closes the database file,
POSIX releases every fcntl lock the *process* holds on the file, those of the store's own
connections included, and another process may then write while our writer thinks it holds the lock:
the store can be corrupted. The analytics engine therefore reads SQLite through SQLAlchemy
(analytics.py) and the analytics store (lake.py); these tests fail if any module goes back to
attaching it.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from candor.config import Settings
from candor.consent.audience import audience_counts
from candor.store.schema import notices
from tests.helpers import api, bearer
from tests.insights import world as W

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "candor"
# what attaching or scanning a SQLite file from DuckDB looks like
FORBIDDEN = re.compile(
    r"sqlite_scanner|TYPE\s+sqlite|sqlite_scan\s*\(|sqlite_query\s*\(|sqlite_attach|sqlite_attach_database",
    re.IGNORECASE,
)

LOCK_PROBE = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)
try:
    con.execute("BEGIN IMMEDIATE")
    print("acquired")
except sqlite3.OperationalError:
    print("locked")
"""


def test_no_module_of_the_package_attaches_sqlite_to_duckdb() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if FORBIDDEN.search(line):
                offenders.append(f"{path.relative_to(PACKAGE)}:{n}")
    assert not offenders, f"DuckDB must not open the SQLite store in a server process: {offenders}"


def _notice(name: str, at: int) -> dict[str, object]:
    return {"notice_id": name, "version": 1, "language": "en", "text": "t", "sha256": "0" * 64,
            "requires_reconsent": False, "created_ms": at}  # fmt: skip


def _other_process_can_write(db: Path) -> bool:
    out = subprocess.run([sys.executable, "-c", LOCK_PROBE, str(db)], capture_output=True, text=True, timeout=60)
    return out.stdout.strip() == "acquired"


@pytest.mark.anyio
async def test_analytics_endpoints_keep_the_writers_lock_and_the_store_intact(tmp_path: Path) -> None:
    """Audience counts, a segment preview and an insight run while this process holds the write lock:
    another process must still find the store locked (with DuckDB's scanner it got the lock). Then the
    same endpoints run while a writer thread commits; the store passes ``PRAGMA integrity_check`` and
    holds every committed row."""
    settings = Settings.from_env(env={}, data_dir=tmp_path / "data", default_jurisdiction="US")
    async with api(settings) as a:
        W.build(a.rt, random.Random(3))
        owner = bearer(a.owner)
        analyst = bearer(a.rt.directory.create_token("analyst", "analyst"))
        r = await a.client.post(
            "/v1/segments",
            json={"name": "buyers", "conditions": [{"event": "Order Completed"}]},
            headers=owner,
        )
        assert r.status_code == 201, r.text
        db = Path(str(a.rt.store.engine.url.database))
        ask = {"since": W.NOW - 120 * W.DAY, "until": W.NOW, "k": 11, "steps": ["Product Viewed", "Order Completed"]}

        async def read_everything() -> None:
            r = await a.client.get("/v1/consent/audience", headers=owner)
            assert r.status_code == 200, r.text
            r = await a.client.get("/v1/segments/buyers/preview", headers=owner)
            assert r.status_code == 200, r.text
            r = await a.client.post("/v1/insights/funnel", json=ask, headers=analyst)
            assert r.status_code == 200, r.text
            audience_counts(a.rt.consent, a.rt.analytics)

        # 1. the writer's lock survives every analytics read in the same process
        assert _other_process_can_write(db)  # the probe works: nobody holds the lock yet
        with a.rt.store.write() as conn:
            conn.execute(notices.insert(), _notice("lock-probe", 0))
            await read_everything()
            assert not _other_process_can_write(db), "an analytics read released the writer's lock"
        assert _other_process_can_write(db)

        # 2. reads while a writer commits: nothing lost, nothing corrupt
        stop = threading.Event()
        written: list[int] = []

        def writer() -> None:
            i = 0
            while not stop.is_set() and i < 400:
                with a.rt.store.write() as conn:
                    conn.execute(notices.insert(), _notice(f"w{i}", i))
                written.append(i)
                i += 1

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            for _ in range(3):
                await read_everything()
        finally:
            stop.set()
            thread.join()
        with a.rt.store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
            n = conn.execute(select(func.count()).select_from(notices).where(notices.c.notice_id.like("w%"))).scalar()
        assert written and n == len(written)
