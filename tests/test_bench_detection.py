"""The detection benchmark keeps working: its validator measurement runs small in the suite."""

from __future__ import annotations

from typing import Any

from tests.test_benchmarks import load


def test_detection_benchmark_quick() -> None:
    results: dict[str, Any] = load("detection").main(
        ["--quick", "--no-server", "--no-save", "--quiet", "--micro-events", "300", "--micro-repeats", "1"]
    )
    micro = results["micro"]
    assert micro["us_per_event_off"] > 0 and micro["us_per_event_on"] > 0
    assert micro["events"] == 300 and len(micro["runs_on"]) == 1
    assert "extra_us_per_event" in results["pass"]
