"""Probabilistic resolution over the store: idempotent, reviewable, and never touching restricted people."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from sqlalchemy import func, select, update

from candor.app import Runtime
from candor.config import Settings
from candor.store.schema import identity_edges, identity_reviews, subjects

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def count(rt: Runtime, table: Any, *where: Any) -> int:
    with rt.store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar() or 0)


def test_resolve_links_reviews_and_is_idempotent(tmp_path: Path) -> None:
    bench = load("identity")
    data = bench._load_data_module()
    records, _truth = data.generate(1200, seed=3)
    rt = Runtime(Settings.from_env(env={}, data_dir=tmp_path / "data", default_jurisdiction="US"))
    try:
        # restrict one person's records before matching: they must take part in nothing
        files = bench.write_csvs(
            records, tmp_path / "csv", bench.SOURCES if hasattr(bench, "SOURCES") else data.SOURCES
        )
        for source, path in files.items():
            bench.import_file(rt, path, source)
        with rt.store.engine.connect() as conn:
            restricted = conn.execute(select(subjects.c.subject_id).limit(5)).scalars().all()
        with rt.store.write() as conn:
            conn.execute(update(subjects).where(subjects.c.subject_id.in_(restricted)).values(state="restricted"))
        first = rt.resolver.resolve(actor="test")
        assert first.trained and first.linked > 100
        edges = count(rt, identity_edges, identity_edges.c.rule == "probabilistic")
        reviews = count(rt, identity_reviews, identity_reviews.c.kind == "candidate")
        assert edges == first.linked and reviews == first.review
        touching = count(
            rt,
            identity_edges,
            identity_edges.c.rule == "probabilistic",
            (identity_edges.c.a_subject.in_(restricted)) | (identity_edges.c.b_subject.in_(restricted)),
        )
        assert touching == 0
        # a second run reuses the saved model and adds nothing twice
        second = rt.resolver.resolve(actor="test")
        assert not second.trained and second.linked == 0
        assert count(rt, identity_edges, identity_edges.c.rule == "probabilistic") == edges
        assert count(rt, identity_reviews, identity_reviews.c.kind == "candidate") == reviews
        # the graph the writes produced is the graph a full replay gives
        before = rt.identity.rebuild()
        assert before["merged_profiles"] > 100
    finally:
        rt.close()


def test_a_bulk_resolution_stores_every_blocking_key_and_keeps_the_subject_index(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Past BULK_KEYS rows SQLite drops the subject index and builds it again: the rows are the
    keys of every record, and the index is there afterwards."""
    from candor.identity import resolve as resolve_module
    from candor.identity.matching import blocking_keys
    from candor.store.schema import match_keys

    monkeypatch.setattr(resolve_module, "BULK_KEYS", 1)
    bench = load("identity")
    data = bench._load_data_module()
    records, _truth = data.generate(400, seed=5)
    rt = Runtime(Settings.from_env(env={}, data_dir=tmp_path / "data", default_jurisdiction="US"))
    try:
        files = bench.write_csvs(records, tmp_path / "csv", data.SOURCES)
        for source, path in files.items():
            bench.import_file(rt, path, source)
        rt.resolver.resolve(actor="test")
        with rt.store.engine.connect() as conn:
            recs = rt.resolver.records(rt.resolver.active_subjects(conn), conn)
            stored = {(h, s) for h, s in conn.execute(select(match_keys.c.key_hash, match_keys.c.subject_id))}
            index = conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'ix_match_keys_subject'"
            ).scalar()
            plan = " ".join(
                str(row[-1])
                for row in conn.exec_driver_sql(
                    "EXPLAIN QUERY PLAN SELECT key_hash FROM match_keys WHERE subject_id = 'x'"
                )
            )
        expected = {(rt.vault.pseudonym("match_key", k), sid) for sid, rec in recs.items() for k in blocking_keys(rec)}
        assert len(expected) > 1000 and stored == expected
        assert index == "ix_match_keys_subject" and "ix_match_keys_subject" in plan
    finally:
        rt.close()


def test_the_blocking_keys_of_a_resolution_are_stored_on_each_backend(make_settings: Callable[..., Settings]) -> None:
    """The keys go to the driver as plain parameters (qmark on SQLite, format on PostgreSQL): every key
    of every record is stored, once, and ``link_new`` finds its candidates through them."""
    from candor.identity.matching import blocking_keys
    from candor.store.schema import match_keys

    bench = load("identity")
    data = bench._load_data_module()
    records, _truth = data.generate(300, seed=6)
    settings = make_settings()
    rt = Runtime(settings)
    try:
        for source, path in bench.write_csvs(records, settings.data_dir / "csv", data.SOURCES).items():
            bench.import_file(rt, path, source)
        rt.resolver.resolve(actor="test")
        rt.resolver.resolve(actor="test")  # again: the same keys, no duplicates, no error
        with rt.store.engine.connect() as conn:
            recs = rt.resolver.records(rt.resolver.active_subjects(conn), conn)
            stored = [(h, s) for h, s in conn.execute(select(match_keys.c.key_hash, match_keys.c.subject_id))]
        expected = {(rt.vault.pseudonym("match_key", k), sid) for sid, rec in recs.items() for k in blocking_keys(rec)}
        assert len(expected) > 500 and len(stored) == len(set(stored)) and set(stored) == expected
    finally:
        rt.close()
