"""Import workers: rows built by forked processes while the writer writes, identical to rows built here."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from candor.app import Runtime
from candor.auth import SourceInfo
from candor.config import Settings
from candor.events import Message, Rejection
from candor.identity import records
from candor.identity.records import Importer, ImportReport, RowError, parse_mapping
from candor.store.engine import Store

pytestmark = pytest.mark.skipif(not records.can_fork(), reason="import workers are forked, Linux only")

MAPPING = parse_mapping("fname=firstName,lname=lastName,mail=email,tel=phone,zip=address.postalCode,card=ext:loyalty")


def _csv(path: Path, rows: int) -> Path:
    lines = ["id,fname,lname,mail,tel,zip,card"]
    for i in range(1, rows + 1):
        if i % 97 == 0:
            lines.append(f",No,Id,,,,{i}")  # the id column is empty
        elif i % 131 == 0:
            lines.append(f"R{i},Too,Few")  # fewer fields than the header
        elif i % 173 == 0:
            lines.append(f"R{i},Too,Many,a{i}@example.org,,,,extra")  # more fields than the header
        elif i % 211 == 0:
            lines.append(f"R{i},{'x' * 2500},Long,,,,")  # a field over the limit
        else:
            lines.append(
                f"R{i},Ana{i % 50},Diaz{i % 70},ana{i}@example.org,415555{i % 10000:04d},{94000 + i % 900},L{i}"
            )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _source(rt: Runtime) -> SourceInfo:
    rt.directory.create_source("crm")
    info = next(s for s in rt.directory.list_sources() if s["name"] == "crm")
    return SourceInfo(int(info["id"]), "crm", bool(info["strict"]), frozenset(info["personal_properties"]))


def _comparable(m: Message) -> dict[str, Any]:
    out = dataclasses.asdict(m)
    for clock in ("received_ms", "ts_ms"):  # the time each row was built
        out.pop(clock)
    return out


def test_rows_built_in_workers_are_the_rows_built_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    monkeypatch.setattr(records, "CHUNK_ROWS", 100)  # many chunks, and a full window of them in flight
    path = _csv(tmp_path / "crm.csv", 2600)
    rt = Runtime(settings)
    try:
        importer = Importer(rt.validator_for(_source(rt)), rt.vault.pseudonym, "crm")
        built: dict[int, tuple[list[list[dict[str, Any]]], ImportReport]] = {}
        for workers in (0, 2):
            report = ImportReport()
            batches = [
                [_comparable(m) for m in batch]
                for batch in importer.messages(path, "id", MAPPING, report, batch_rows=700, workers=workers)
            ]
            built[workers] = (batches, report)
    finally:
        rt.close()
    (here, here_report), (there, there_report) = built[0], built[2]
    assert [len(b) for b in here] == [len(b) for b in there] == [700, 700, 700, len(here[-1])]
    assert here == there  # same messages, pseudonyms and sealed documents, in file order
    assert here_report.rows == there_report.rows == 2600
    assert here_report.errors == there_report.errors
    # the four kinds of bad row, each reported with its row number
    assert RowError(97, "the id column 'id' is empty") in there_report.errors
    assert RowError(131, "the row has fewer fields than the header") in there_report.errors
    assert RowError(173, "the row has more fields than the header") in there_report.errors
    assert RowError(211, "column 'fname' is longer than 2000 characters") in there_report.errors
    assert len(there_report.errors) == len(
        {r for r in range(1, 2601) if r % 97 == 0 or r % 131 == 0 or r % 173 == 0 or r % 211 == 0}
    )


class _WhereBuilt:
    """A validator that refuses every row, saying which process built it."""

    def validate(self, msg: dict[str, Any], **_: Any) -> Rejection:
        return Rejection(f"built in {os.getpid()}", None, msg["type"], msg["messageId"])


def test_rows_past_the_first_chunk_are_built_in_other_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(records, "CHUNK_ROWS", 50)
    path = tmp_path / "crm.csv"
    path.write_text("id,fname\n" + "".join(f"R{i},Ana\n" for i in range(400)), encoding="utf-8")
    importer = Importer(_WhereBuilt(), lambda t, v: f"{t}:{v}", "crm")
    report = ImportReport()
    assert list(importer.messages(path, "id", {"fname": "firstName"}, report, workers=1)) == []
    where = [int(e.error.rsplit(" ", 1)[1]) for e in report.errors]
    assert [e.row for e in report.errors] == list(range(1, 401))
    # the first chunk here (it warms what the children inherit), the rest in one other process
    assert set(where[:50]) == {os.getpid()}
    assert len(set(where[50:])) == 1 and os.getpid() not in set(where[50:])
    # workers=0 builds every row here
    serial = ImportReport()
    list(importer.messages(path, "id", {"fname": "firstName"}, serial, workers=0))
    assert {int(e.error.rsplit(" ", 1)[1]) for e in serial.errors} == {os.getpid()}


def test_default_workers_follow_the_file_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    small.write_bytes(b"x" * (records.PARALLEL_BYTES - 1))
    large.write_bytes(b"x" * records.PARALLEL_BYTES)
    monkeypatch.setattr(records, "cores", lambda: 2)
    assert records.default_workers(small) == 0
    assert records.default_workers(large) == 1
    monkeypatch.setattr(records, "cores", lambda: 1)
    assert records.default_workers(large) == 0  # one core: the writer would only wait for the builder


def _pooled_in_child(store: Store, out: Any) -> None:
    pooled = store.engine.pool.checkedin()  # type: ignore[attr-defined]
    with store.engine.connect() as conn:
        out.send((pooled, conn.execute(text("SELECT 1")).scalar()))


def test_a_forked_child_never_uses_its_parents_connections(settings: Settings) -> None:
    store = Store(settings)
    try:
        with store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert store.engine.pool.checkedin() == 1  # type: ignore[attr-defined]
        ctx = multiprocessing.get_context("fork")
        ours, theirs = ctx.Pipe()
        child = ctx.Process(target=_pooled_in_child, args=(store, theirs))
        child.start()
        pooled, one = ours.recv()
        child.join(30)
        assert child.exitcode == 0
        assert (pooled, one) == (0, 1)  # the child's pool started empty and made its own connection
        assert store.engine.pool.checkedin() == 1  # type: ignore[attr-defined]
        with store.engine.connect() as conn:  # the parent's connection still works
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        store.engine.dispose()


def test_the_cli_takes_workers_and_refuses_a_bad_count(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from candor.cli import app

    path = _csv(tmp_path / "crm.csv", 300)
    base = ["--data-dir", str(tmp_path / "data"), "import", "records", str(path), "--source", "crm", "--id-column"]
    mapping = "fname=firstName,lname=lastName,mail=email,tel=phone,zip=address.postalCode,card=ext:loyalty"
    args = [*base, "id", "--map", mapping, "--no-link", "--json"]
    ok = CliRunner().invoke(app, [*args, "--workers", "1"], catch_exceptions=False)
    assert ok.exit_code == 0, ok.output
    out = json.loads(ok.output)
    assert out["rows"] == 300 and out["imported"] + len(out["errors"]) == 300 and out["imported"] > 280
    # what passed through the worker is sealed at rest like any other import: no plaintext anywhere
    import subprocess

    found = subprocess.run(
        ["grep", "-rlaE", "Diaz1|ana12@example|4155550012", str(tmp_path / "data")], capture_output=True, text=True
    )
    assert found.returncode == 1 and found.stdout == "", f"plaintext found in {found.stdout}"
    bad = CliRunner().invoke(app, [*args, "--workers", "-1"])
    assert bad.exit_code == 2 and "greater than or equal to 0" in bad.output


def test_a_full_resolution_decrypts_in_forked_processes_to_the_same_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    from candor.identity import resolve
    from candor.ingest import Work
    from candor.store import now_ms

    path = _csv(tmp_path / "crm.csv", 300)
    pools: list[int] = []
    real_pool = resolve.forked_pool

    def spy(workers: int, *args: Any) -> Any:
        pools.append(workers)
        return real_pool(workers, *args)

    monkeypatch.setattr(resolve, "forked_pool", spy)
    rt = Runtime(settings)
    try:
        src = _source(rt)
        importer = Importer(rt.validator_for(src), rt.vault.pseudonym, "crm")
        for batch in importer.messages(path, "id", MAPPING, ImportReport(), workers=0):
            rt.ingestor.submit_sync(Work(src.id, batch, [], now_ms()), timeout=60)
        with rt.store.engine.connect() as conn:
            subjects = rt.resolver.active_subjects(conn)
        slices = [subjects[i : i + 40] for i in range(0, len(subjects), 40)]
        rt.resolver.decrypt_workers = 0
        here = [dict(part) for part in rt.resolver._decrypted(slices)]
        assert pools == []
        rt.resolver.decrypt_workers = 2
        there = [dict(part) for part in rt.resolver._decrypted(slices)]
        assert pools == [2]
        assert len(here) == len(slices) > 2 and sum(map(len, here)) > 250
        assert here == there  # the same normalised records, slice by slice
    finally:
        rt.close()
