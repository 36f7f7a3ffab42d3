"""The insights benchmark keeps working: its quick version runs here (full size: BENCHMARKS.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "insights.py"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_insights_benchmark_quick() -> None:
    spec = importlib.util.spec_from_file_location("bench_insights", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--quick", "--json"])
    # the benchmark itself checks every released cell against the hand-written DuckDB query
    assert set(result["insights"]) == {"journeys", "funnel", "attribution"}
    assert all(d["cells"] > 0 and d["hand_written_s"] > 0 for d in result["insights"].values())
