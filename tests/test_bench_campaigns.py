"""The campaign benchmark keeps working: its quick version runs here (full size: BENCHMARKS.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "campaigns.py"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_campaign_benchmark_quick() -> None:
    spec = importlib.util.spec_from_file_location("bench_campaigns", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--quick"])
    expected = result["expected"]
    # exactly the people who agreed and are not suppressed got a message, nobody twice
    assert result["outcomes"].get("sent") == expected["send"]
    assert result["outcomes"].get("skipped:no_consent") == expected["no_consent"]
    assert result["outcomes"].get("skipped:suppressed") == expected["suppressed"]
    # what the SMTP server (a process of its own) received: exactly those, nobody twice
    assert result["smtp_server"] == "process"
    assert result["delivered"] == expected["send"] and result["recipients_twice"] == 0
    assert result["messages_per_second"] > 0 and result["raw_smtp_messages_per_second"] > 0
