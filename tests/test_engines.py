"""The analytics engines side by side: one suite, run on DuckDB and on Spark (``engines_and_stores``).

Segments over the lake (tests/test_lake.py) and every insight against brute force
(tests/insights/test_reports.py) are parametrised the same way; here: the workspace that jobs get
(recommendation rebuilds included), released reports and the privacy budget, the erasure purge of the
analytics files, and the ``--engine spark`` commands.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from candor.app import Runtime
from candor.cli import app as cli_app
from candor.config import Settings
from candor.engines import to_spark
from tests.conftest import engines_and_stores
from tests.insights import world as W
from tests.insights.test_reports import SINCE, UNTIL, make_world
from tests.test_lake import everything_in, random_world, rows


def test_to_spark_is_the_one_place_the_dialects_meet() -> None:
    text, used = to_spark(
        "SELECT e.subject_id, (e.ts_ms - $since) / 3600000.0 AS h FROM main.events e "
        "JOIN main.subjects s ON s.subject_id = e.subject_id WHERE (e.ts_ms >= $since)"
    )
    assert "main." not in text and ":since" in text and "$" not in text
    assert "CAST(3600000.0 AS DOUBLE)" in text  # DuckDB computes in doubles; Spark would in DECIMAL
    assert "WHERE (" not in text
    assert used == {"events", "subjects"}


@engines_and_stores
def test_a_workspace_runs_sql_over_the_lake_and_returns_rows_and_arrow(
    settings: Settings, analytics_engine: Any
) -> None:
    """What segments, insights and recommendation rebuilds use: views, rows from Python, rows and Arrow out."""
    rt = Runtime(settings)
    try:
        random_world(rt, random.Random(3), 30, 300)
        ws = analytics_engine.workspace(rt.analytics)  # brings the lake up to date first
        try:
            assert rt.analytics.lake is not None
            lake_rows = rows(rt.analytics.lake)
            ws.view(
                "per_subject",
                "SELECT subject_id, count(*) AS n FROM events WHERE ts_ms >= $since GROUP BY subject_id",
                {"since": 0},
            )
            got = ws.execute("SELECT count(*), sum(n) FROM per_subject").fetchone()
            assert tuple(got) == (len({r["subject_id"] for r in lake_rows}), len(lake_rows))
            ws.register("items_in", pa.table({"item": ["b", "a", "c"], "w": [2.0, 1.0, 3.0]}))
            table = ws.arrow("SELECT item, w * 1.5 AS w2 FROM items_in WHERE w > ? ORDER BY item", [1.5])
            assert table.to_pylist() == [{"item": "b", "w2": 3.0}, {"item": "c", "w2": 4.5}]
            joined = ws.execute(
                "SELECT count(*) FROM main.events e JOIN main.subjects s ON s.subject_id = e.subject_id "
                "WHERE s.state <> 'erased'"
            ).fetchall()
            assert joined == [(len(lake_rows),)]
        finally:
            ws.close()
    finally:
        rt.close()


# every insight's numbers are compared with brute force on both engines (tests/insights/test_reports.py);
# here, the release: two insights whose tables have small cells to suppress
PLAN: list[tuple[str, dict[str, Any]]] = [
    ("journeys", {"goal": "Order Completed", "max_steps": 3}),
    ("experience", {"by": "month"}),
]


@engines_and_stores
def test_released_reports_and_the_privacy_budget_are_the_same_on_each_engine(
    settings: Settings, analytics_engine: Any
) -> None:
    """Suppression of small cells and the DP ledger run after the engine returns: the same release."""
    rt = Runtime(settings)
    try:
        make_world(rt)
        suppressed = 0
        for name, params in PLAN:
            body = {"since": SINCE, "until": UNTIL, "k": 11, **params}
            rt.insights.engine = None
            want = rt.insights.run(name, body, now=W.NOW)
            rt.insights.engine = analytics_engine
            got = rt.insights.run(name, body, now=W.NOW)
            want.pop("seconds"), got.pop("seconds")
            assert got == want, name
            suppressed += sum(got["suppressed_cells"].values())
        assert suppressed > 0, "the world should have small cells to hide"
        # with differential privacy: the same charge to the same budget, whichever engine computed
        body = {"since": SINCE, "until": UNTIL, "k": 11, "goal": "Order Completed", "dp": {"epsilon": 0.25}}
        before = rt.insights.ledger.spent()
        out = rt.insights.run("journeys", body, now=W.NOW)
        after = rt.insights.ledger.spent()
        charged = {m: round(after[m] - before.get(m, 0.0), 9) for m in after}
        assert out["dp"]["epsilon"] == 0.25 and 0 < out["dp"]["epsilon_used"] <= 0.25 + 1e-9
        assert set(charged.values()) == {0.25} and len(charged) >= 4  # every month of the period
        assert all(c["profiles"] is None or c["profiles"] >= 11 for t in out["tables"] for c in t["rows"])
    finally:
        rt.insights.engine = None
        rt.close()


@engines_and_stores
def test_an_erasure_leaves_no_row_of_the_person_in_any_analytics_file(
    settings: Settings, analytics_engine: Any
) -> None:
    rt = Runtime(settings)
    try:
        random_world(rt, random.Random(5), 40, 600)
        lake = rt.analytics.lake
        assert lake is not None
        lake.refresh()
        before = rows(lake)
        victims = sorted({r["subject_id"] for r in before})[:2]
        assert all(v in everything_in(lake.all_files()) for v in victims)
        lake.engine = analytics_engine  # what rewrites the files: DuckDB here, or Spark
        out = rt.rights.erasure.erase(victims, request_id="t-engines", actor="test")
        assert out["analytics_files"]["deleted"] == sum(1 for r in before if r["subject_id"] in victims)
        files = lake.all_files()
        assert files and not any(p.name.startswith("_") for p in lake.root.rglob("*") if p.parent != lake.root)
        text = everything_in(files)  # every value of every file, decoded (Parquet is compressed)
        for v in victims:
            assert v not in text, "an analytics file still holds the erased person's pseudonym"
            for f in files:
                assert v.encode() not in f.read_bytes()
        assert rows(lake) == [r for r in before if r["subject_id"] not in victims]
        assert not lake.refresh().rebuilt  # the copy still matches the store
    finally:
        rt.close()


@pytest.mark.spark
def test_engine_spark_commands_insights_and_the_analytics_purge(spark_engine: Any, tmp_path: Path) -> None:
    """``candor insights run --engine spark`` answers as on DuckDB; analytics files restored from an older
    copy lose the people erased since, purged on Spark (CANDOR_ANALYTICS_PURGE_ENGINE and the command)."""
    data = tmp_path / "data"
    settings = Settings.from_env(env={}, data_dir=data, default_jurisdiction="US")
    rt = Runtime(settings)
    try:
        make_world(rt)
        lake = rt.analytics.lake
        assert lake is not None
        lake.refresh()
        victim = sorted({r["subject_id"] for r in rows(lake)})[0]
        old_copy = tmp_path / "analytics-copy"
        shutil.copytree(lake.root, old_copy)
        rt.rights.erasure.erase([victim], request_id="t-cli", actor="test")
    finally:
        rt.close()
    shutil.rmtree(settings.analytics_path)
    shutil.copytree(old_copy, settings.analytics_path)  # a restored copy from before the erasure
    assert victim in everything_in(sorted(settings.analytics_path.rglob("*.parquet")))
    env = {"CANDOR_DATA_DIR": str(data), "CANDOR_DEFAULT_JURISDICTION": "US", "CANDOR_ANALYTICS_PURGE_ENGINE": "spark"}
    runner = CliRunner()
    done = runner.invoke(cli_app, ["analytics", "purge", "--engine", "spark"], env=env)
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["engine"] == "spark" and report["subjects"] == 1
    assert victim not in everything_in(sorted(settings.analytics_path.rglob("*.parquet")))
    answers = []
    for engine in ("duckdb", "spark"):
        args = ["insights", "run", "rfm", "--since", "2026-05-24", "--until", "2026-09-21", "--engine", engine]
        done = runner.invoke(cli_app, args, env=env)
        assert done.exit_code == 0, done.output
        out = json.loads(done.stdout)
        out.pop("seconds")
        answers.append(out)
    assert answers[0] == answers[1] and answers[0]["tables"]
    done = runner.invoke(cli_app, ["insights", "run", "rfm", "--engine", "flink"], env=env)
    assert done.exit_code != 0 and "unknown engine 'flink'" in done.output
