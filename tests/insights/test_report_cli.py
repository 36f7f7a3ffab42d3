"""``candor insights report``: one standalone HTML file with charts, small groups hidden, no script."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from typer.testing import CliRunner

from candor.app import Runtime
from candor.cli import app
from candor.config import Settings
from tests.insights import world as W


def test_the_report_is_one_standalone_file_with_charts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rt = Runtime(Settings.from_env(env={}, data_dir=data, default_jurisdiction="US"))
    try:
        w = W.build(rt, random.Random(8))
    finally:
        rt.close()
    out = tmp_path / "report.html"
    runner = CliRunner(env={"CANDOR_DEFAULT_JURISDICTION": "US"})  # analytics is an opt-out purpose there
    period = ["--since", "2026-05-01", "--until", "2026-09-21", "--k", "11"]
    result = runner.invoke(app, ["--data-dir", str(data), "insights", "report", "--out", str(out), *period])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert html.startswith("<!doctype html>") and "<script" not in html.lower()
    assert not re.search(r"""(src|href)=["']https?://""", html), "a standalone report loads nothing"
    for title in ("Journeys", "Funnel", "Attribution", "NPS and CSAT", "RFM", "Cohort retention", "lifetime value"):
        assert title in html
    assert html.count("<svg") >= 8 and "cells hidden" in html
    assert not any(p in html for p in w.profiles), "no profile id in a report"
    # one insight as JSON, the same as the API
    got = runner.invoke(app, ["--data-dir", str(data), "insights", "run", "rfm", *period])
    assert got.exit_code == 0, got.output
    assert json.loads(got.stdout)["insight"] == "rfm"
    # a k below the floor stops the report with a clear message and writes nothing
    bad = tmp_path / "bad.html"
    result = runner.invoke(app, ["--data-dir", str(data), "insights", "report", "--out", str(bad), "--k", "3"])
    assert result.exit_code == 1 and "at least 11" in result.output and not bad.exists()
