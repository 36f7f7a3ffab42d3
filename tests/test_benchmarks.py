"""The benchmarks keep working: their small versions run in the suite (full sizes: BENCHMARKS.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_ingest_benchmark_quick(tmp_path: Path) -> None:
    results: dict[str, Any] = load("ingest").main(["--quick", "--no-save", "--quiet"])
    assert results["pass"]["nothing_lost"] is True
    assert results["stored"]["events_table"] == results["stored"]["expected"] > 0
    assert results["batch_events_per_s"] > 0 and results["single_requests_per_s"] > 0


@pytest.mark.slow
def test_consent_benchmark_quick() -> None:
    results = load("consent").main(["--quick"])
    assert results["can_use"]["per_second"] > 0
    assert results["bulk"]["profiles"] == 5_000
    assert results["tcf"]["ratio"] > 1


def test_writer_groups_benchmark_small() -> None:
    results = load("writer_groups").main(["--subjects", "50", "--groups", "20", "--repeat", "1", "--new", "0.5"])
    assert results["ms_per_group_p50"] > 0 and results["ms_per_group_p95"] >= results["ms_per_group_p50"]
    assert len(results["rounds_p50"]) == 1
