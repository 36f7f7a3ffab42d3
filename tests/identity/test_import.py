"""Offline records: CSV import with per-row errors, encryption at rest, stitching, export."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from candor.app import Runtime
from candor.cli import app
from candor.config import Settings

runner = CliRunner()


def run(data_dir: Path, *args: str, code: int = 0, env: dict[str, str] | None = None) -> str:
    result = runner.invoke(app, ["--data-dir", str(data_dir), *args], catch_exceptions=False, env=env)
    assert result.exit_code == code, result.output
    return result.output


POS = """card_no,fname,lname,mail,tel,zip,city
C-1001,Zofia,Kowalczyk-Brandt,zofia.kb@example.org,(415) 555-0101,94110,San Francisco
C-1002,Marcus,Oyelaran,,415-555-0102,94107,San Francisco
,Nobody,Without-Id,,,,
C-1003,Li,Wen,li.wen@example.org,,10001,New York
"""


def test_import_report_encryption_and_stitching(tmp_path: Path) -> None:
    data = tmp_path / "data"
    csv_file = tmp_path / "pos.csv"
    csv_file.write_text(POS, encoding="utf-8")
    mapping = "fname=firstName,lname=lastName,mail=email,tel=phone,zip=address.postalCode,city=address.city"
    out = json.loads(
        run(
            data,
            "import",
            "records",
            str(csv_file),
            "--source",
            "pos",
            "--id-column",
            "card_no",
            "--map",
            mapping,
            "--json",
        )
    )
    assert out["rows"] == 4 and out["imported"] == 3
    assert out["errors"] == [{"row": 3, "error": "the id column 'card_no' is empty"}]
    # the same file again changes nothing; a changed row is a new version of the same record
    again = json.loads(
        run(
            data,
            "import",
            "records",
            str(csv_file),
            "--source",
            "pos",
            "--id-column",
            "card_no",
            "--map",
            mapping,
            "--json",
        )
    )
    assert again["imported"] == 0 and again["unchanged"] == 3
    # no plaintext at rest, anywhere in the data directory
    found = subprocess.run(
        ["grep", "-rlaE", "Kowalczyk|Oyelaran|zofia.kb|555-0102|5550102", str(data)], capture_output=True, text=True
    )
    assert found.stdout == "", f"plaintext found in {found.stdout}"

    rt = Runtime(Settings.from_env(env={}, data_dir=data))
    try:
        # the online account with the same email joins the record's profile (deterministic stitching)
        from candor.ingest import Work
        from candor.store import now_ms

        src = rt.directory.create_source("web")
        info = rt.directory.source_for_key(src)
        assert info is not None
        msg = rt.validator_for(info).validate(
            {"userId": "acct-9", "traits": {"email": "Zofia.KB@example.org"}},
            type_="identify",
            received_ms=now_ms(),
            sent_at_ms=None,
            client_ip=None,
        )
        rt.ingestor.submit_sync(Work(info.id, [msg], [], now_ms()))  # type: ignore[list-item]
        acct = rt.consent.subject_for("user_id", "acct-9")
        assert acct is not None
        view = rt.profiles.view(acct, reveal=True, actor="test")
        assert view["records"] == [{"source": "pos", "id": "C-1001"}]
        assert view["traits"]["lastName"]["value"] == "Kowalczyk-Brandt"
        assert view["traits"]["lastName"]["source"] == "pos"
        assert len(view["subjects"]) == 2
        owner = rt.directory.create_token("o", "owner")
        marketer = rt.directory.create_token("m", "marketer")
    finally:
        rt.close()

    assert "owner" in run(data, "profiles", "export", "--token", marketer, code=1)
    target = tmp_path / "profiles.jsonl"
    run(data, "profiles", "export", "--token", owner, "--out", str(target))
    lines = [json.loads(x) for x in target.read_text().splitlines()]
    zofia = next(p for p in lines if {"source": "pos", "id": "C-1001"} in p["records"])
    assert {"type": "user_id", "value": "acct-9"} in zofia["identities"]
    assert {"type": "email", "value": "zofia.kb@example.org"} in zofia["identities"]
    assert zofia["traits"]["firstName"] == "Zofia"
    assert set(zofia) == {"profile_id", "records", "identities", "traits"}


def test_bad_files_get_clear_errors(tmp_path: Path) -> None:
    data = tmp_path / "data"
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("id,name\n1,A\n", encoding="utf-8")
    out = run(data, "import", "records", str(wrong), "--source", "crm", "--id-column", "card", code=1)
    assert "no column 'card'" in out and "id, name" in out
    latin = tmp_path / "latin.csv"
    latin.write_bytes("id,name\n1,Jos\xe9\n".encode("latin-1"))
    out = run(
        data, "import", "records", str(latin), "--source", "crm", "--id-column", "id", "--map", "name=firstName", code=1
    )
    assert "not UTF-8" in out
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("id,name\n1,Ann,extra\n2\n3,Cy\n", encoding="utf-8")
    out = json.loads(
        run(
            data,
            "import",
            "records",
            str(ragged),
            "--source",
            "crm",
            "--id-column",
            "id",
            "--map",
            "name=firstName",
            "--json",
        )
    )
    assert out["imported"] == 1
    assert [e["row"] for e in out["errors"]] == [1, 2]
    assert "more fields" in out["errors"][0]["error"] and "fewer fields" in out["errors"][1]["error"]
    out = run(data, "import", "records", str(ragged), "--source", "crm", "--id-column", "id", "--map", "name", code=1)
    assert "column=trait" in out


def _partition(rt: Runtime, records: list[dict[str, object]]) -> set[frozenset[str]]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_identity", Path(__file__).parents[2] / "bench" / "identity.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    groups: dict[str, set[str]] = {}
    for record, profile in bench.record_profiles(rt, records).items():
        groups.setdefault(profile, set()).add(record)
    return {frozenset(g) for g in groups.values()}


def _records() -> list[dict[str, object]]:
    # people sharing emails, userIds and loyalty cards across sources: deterministic stitching
    out: list[dict[str, object]] = []
    for i in range(60):
        person = i // 3
        out.append(
            {
                "record_id": f"r{i:03d}",
                "source": "pos" if i % 2 else "web",
                "first_name": f"N{person}",
                "last_name": "Test",
                "email": f"p{person}@example.org" if i % 3 != 2 else None,
                "user_id": f"u{person}" if i % 2 == 0 else None,
                "loyalty_card": f"{person:013d}" if i % 3 != 0 else None,
            }
        )
    return out


def _import_batches(rt: Runtime, records: list[dict[str, object]], tmp: Path, *, defer: bool) -> None:
    import importlib.util

    from candor.identity.records import Importer, ImportReport, parse_mapping
    from candor.ingest import Work
    from candor.store import now_ms

    spec = importlib.util.spec_from_file_location("bench_identity", Path(__file__).parents[2] / "bench" / "identity.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for source, path in bench.write_csvs(records, tmp, ("web", "pos")).items():
        src = bench._source_info(rt, source)
        importer = Importer(rt.validator_for(src), rt.vault.pseudonym, source)
        for batch in importer.messages(path, "record_id", parse_mapping(bench.MAPPING), ImportReport()):
            for k in range(0, len(batch), 7):  # many small transactions
                rt.ingestor.submit_sync(Work(src.id, batch[k : k + 7], [], now_ms(), defer_profiles=defer))


def test_a_deferred_import_settles_to_the_stitched_profiles_and_an_interrupted_one_is_rebuilt(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    records = _records()
    first, second = records[:30], records[30:]

    def people(rs: list[dict[str, object]]) -> set[frozenset[str]]:
        return {frozenset(str(r["record_id"]) for r in rs[k : k + 3]) for k in range(0, len(rs), 3)}

    rt = Runtime(make_settings())
    try:
        _import_batches(rt, first, tmp_path / "csv1", defer=True)
        assert _partition(rt, first) != people(first)  # not settled yet (a shared userId is one subject)
        assert rt.ingestor.settle_profiles() > 0
        assert _partition(rt, first) == people(first)  # each person's three records: one profile
        assert rt.identity.settle_interrupted() is False  # the mark went with the settlement
        # killed before settling: the mark stays, and the next import or resolve rebuilds the profiles
        _import_batches(rt, second, tmp_path / "csv2", defer=True)
        rt.ingestor._pending.clear()  # what a crash loses
    finally:
        rt.close()
    again = Runtime(make_settings())
    try:
        assert _partition(again, records) != people(records)
        assert again.identity.settle_interrupted() is True
        assert _partition(again, records) == people(records)
    finally:
        again.close()


def test_imports_that_defer_their_profiles_are_settled_by_the_next_one_in_one_replay(tmp_path: Path) -> None:
    """Several exports in a row: ``--defer-profiles`` leaves the profiles (and the mark) to the next
    import without the flag, which replays the log once; ``identity rebuild`` clears the mark too."""
    data = tmp_path / "data"
    files = {
        "pos": "card,fname,mail\nC-1,Zofia,zofia@example.org\nC-2,Marcus,marcus@example.org\n",
        "crm": "card,fname,mail\nK-1,Zofia,zofia@example.org\n",
        "web": "card,fname,mail\nW-1,Marcus,marcus@example.org\n",
    }
    for name, text in files.items():
        (tmp_path / f"{name}.csv").write_text(text, encoding="utf-8")
    records: list[dict[str, object]] = [
        {"source": s, "record_id": line.split(",")[0]} for s, t in files.items() for line in t.splitlines()[1:]
    ]
    records.append({"source": "crm", "record_id": "K-2"})  # a row of a later export

    def imported(source: str, *flags: str) -> dict[str, object]:
        args = ["import", "records", str(tmp_path / f"{source}.csv"), "--source", source, "--id-column", "card"]
        return json.loads(run(data, *args, "--map", "fname=firstName,mail=email", "--json", *flags))

    def state() -> tuple[bool, set[frozenset[str]]]:
        rt = Runtime(Settings.from_env(env={}, data_dir=data))
        try:
            return rt.identity.profiles_pending(), {p for p in _partition(rt, records) if len(p) > 1}
        finally:
            rt.close()

    first = imported("pos", "--defer-profiles")
    assert first["profiles"] == "pending" and "probabilistic" not in first  # no linking to unsettled profiles
    assert imported("crm", "--defer-profiles")["profiles"] == "pending"
    assert state() == (True, set())  # K-1 shares Zofia's email, but no profile joins them yet
    last = imported("web")
    assert last["profiles"] == "settled" and "probabilistic" in last
    assert state() == (False, {frozenset({"C-1", "K-1"}), frozenset({"C-2", "W-1"})})

    (tmp_path / "crm.csv").write_text(files["crm"] + "K-2,Marcus,marcus@example.org\n", encoding="utf-8")
    imported("crm", "--defer-profiles")
    assert state() == (True, {frozenset({"C-1", "K-1"}), frozenset({"C-2", "W-1"})})
    run(data, "identity", "rebuild")
    assert state() == (False, {frozenset({"C-1", "K-1"}), frozenset({"C-2", "W-1", "K-2"})})
