"""The analytics engine's cache of SQLite store tables: a copy is used only while its table is unchanged.

Every write to a table the analytical queries read, from any connection or process, moves that table's
version counter (migration 0015's triggers); a cached copy of an older version is never used, so an
erasure, a restriction or a merge shows in the very next segment, insight or report.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from sqlalchemy import select, text

from candor.analytics import TABLES, TableCache
from candor.app import Runtime
from candor.config import Settings
from candor.store.schema import markers, subjects
from tests.test_lake import random_world

NOW = 1_790_000_000_000
EVERYONE = {"conditions": [{"event": "Product Viewed", "count": {"gte": 1}, "within_days": 3650}]}


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = Runtime(Settings.from_env(env={}, data_dir=tmp_path / "data", analytics_refresh_seconds=0))
    random_world(runtime, random.Random(5), 60, 900)
    yield runtime
    runtime.close()


def test_every_table_the_queries_read_has_a_version_counter(rt: Runtime) -> None:
    with rt.store.engine.connect() as conn:
        triggers = {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))}
        names = {r[0] for r in conn.execute(select(markers.c.name))}
    for table in set(TABLES) - {"events"}:
        assert {f"candor_version_{table}_{s}" for s in "iud"} <= triggers, table
        assert f"v:{table}" in names, table


def test_a_write_from_another_connection_is_seen_by_the_next_query(rt: Runtime) -> None:
    cache = rt.analytics.cache
    assert cache is not None
    first = set(rt.segments.evaluate(EVERYONE, now=NOW))
    assert len(first) > 10
    loads = cache.loads
    assert set(rt.segments.evaluate(EVERYONE, now=NOW)) == first
    assert cache.loads == loads and cache.hits >= 2  # subjects and profile_subjects from the cache
    # another process erases someone: plain sqlite3, not Candor's connection
    with rt.store.engine.connect() as conn:
        members = conn.execute(select(subjects.c.subject_id).where(subjects.c.state == "active")).scalars().all()
        rows = conn.execute(text("SELECT subject_id, profile_id FROM profile_subjects")).all()
        profile_of: dict[str, str] = {r[0]: r[1] for r in rows}
    gone = next(s for s in members if profile_of.get(s, s) in first and s not in profile_of)
    db = sqlite3.connect(rt.settings.data_dir / "candor.db")
    with db:
        db.execute("UPDATE subjects SET state = 'erased' WHERE subject_id = ?", (gone,))
    db.close()
    after = set(rt.segments.evaluate(EVERYONE, now=NOW))
    assert after == first - {gone}
    assert cache.loads > loads


def test_a_merge_shows_at_once(rt: Runtime) -> None:
    first = rt.segments.evaluate(EVERYONE, now=NOW)
    a, b = sorted(first)[:2]
    with rt.store.write() as conn:
        ids = conn.execute(text("SELECT subject_id FROM profile_subjects WHERE profile_id = :p"), {"p": b}).all()
        moved = [r[0] for r in ids] or [b]
        conn.execute(text("DELETE FROM profile_subjects WHERE profile_id = :p"), {"p": b})
        insert = text("INSERT OR IGNORE INTO profile_subjects (subject_id, profile_id) VALUES (:s, :p)")
        for s in [*moved, a]:
            conn.execute(insert, {"s": s, "p": a})
    after = set(rt.segments.evaluate(EVERYONE, now=NOW))
    assert b not in after and a in after and len(after) == len(first) - 1


def test_no_cache_reads_every_time_and_gives_the_same(tmp_path: Path) -> None:
    settings = Settings.from_env(
        env={"CANDOR_ANALYTICS_CACHE_MB": "0"}, data_dir=tmp_path / "data", analytics_refresh_seconds=0
    )
    runtime = Runtime(settings)
    try:
        assert runtime.analytics.cache is None
        random_world(runtime, random.Random(5), 60, 900)
        assert runtime.segments.evaluate(EVERYONE, now=NOW) == runtime.segments.evaluate(EVERYONE, now=NOW) != []
    finally:
        runtime.close()


def test_the_cache_keeps_to_its_limit_and_ignores_tables_without_a_counter() -> None:
    small = pa.table({"x": list(range(1000))})
    cache = TableCache(limit_bytes=small.nbytes * 2)
    cache.put("a", 1, small)
    cache.put("b", 1, small)
    assert cache.get("a", 1) is small  # a is now the most recently used
    cache.put("c", 1, small)  # over the limit: b goes
    assert cache.get("b", 1) is None and cache.get("a", 1) is small and cache.get("c", 1) is small
    assert cache.get("a", 2) is None  # another version: never the old copy
    cache.put("d", None, small)
    assert cache.get("d", None) is None
    cache.put("huge", 1, pa.table({"x": list(range(10_000))}))
    assert cache.get("huge", 1) is None


def test_a_negative_limit_is_refused() -> None:
    from candor.config import ConfigError

    with pytest.raises(ConfigError, match="CANDOR_ANALYTICS_CACHE_MB"):
        Settings.from_env(env={"CANDOR_ANALYTICS_CACHE_MB": "-1"})
