"""The segment benchmark keeps working: its quick version runs here (full size: BENCHMARKS.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "segments.py"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_segment_benchmark_quick() -> None:
    spec = importlib.util.spec_from_file_location("bench_segments", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--quick", "--json"])
    # the benchmark asserts that the analytics store, the scanner and the hand-written query agree
    assert set(result["definitions"]) == set(module.DEFINITIONS)
    assert all(d["members"] > 0 for d in result["definitions"].values())
    assert result["refresh_10k_copied"] == 10_000 and result["rebuild_rows_per_s"] > 0
