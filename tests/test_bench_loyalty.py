"""The loyalty benchmark keeps working: its quick version (200 members, 5,000 purchase events) runs
here. Full sizes and their results: BENCHMARKS.md, section "Loyalty"."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_loyalty", BENCH / "loyalty.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_loyalty_benchmark_quick() -> None:
    results: dict[str, Any] = load().main(["--quick", "--no-save", "--quiet"])
    assert results["benchmark"] == "loyalty" and results["size"]["events"] == 5_000
    earn = results["earn"]
    assert earn["events"] == 5_000 and earn["credited"] > 0 and earn["second_pass_ms"] > 0
    contended = results["contended"]
    assert contended["ledger_balanced"] and contended["succeeded"] + contended["refused"] == contended["attempts"]
    assert 0 < results["statement_ms"]["p50"] <= results["statement_ms"]["p95"]
