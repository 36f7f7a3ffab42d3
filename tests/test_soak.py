"""The soak benchmark in small: a real server under steady load keeps its memory and loses nothing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_a_short_soak_is_stable_and_loses_nothing() -> None:
    spec = importlib.util.spec_from_file_location("bench_soak", BENCH / "soak.py")
    assert spec is not None and spec.loader is not None
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    result = soak.main(["--quick", "--seconds", "12", "--no-save"])
    assert result["events_in_valid"] > 1000 and result["events_in_invalid"] > 0
    assert result["stored"] == result["events_in_valid"]  # every acknowledged valid event, once
    assert result["rejected"] == result["events_in_invalid"]  # every invalid one kept as a rejected record
    assert result["stored_twice"] == 0 and not result["failures"]
    # a short run has little room to grow; the 10% bound is the full run's (bench/soak.py)
    assert result["memory_stable"], result["rss_growth"]
