"""The identity benchmark keeps working: its quick version (2,000 records, in-process) runs here.

Full sizes and their results: BENCHMARKS.md, section "Identity".
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_identity", BENCH / "identity.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(600)  # about 15 s on a quiet machine; minutes when the 2 cores are shared
def test_identity_benchmark_quick() -> None:
    results: dict[str, Any] = load().main(["--quick", "--no-save", "--quiet"])
    assert results["benchmark"] == "identity"
    (size,) = results["sizes"]
    assert size["records"] == 2_000 and size["new_records"] == 40
    assert size["import_errors"] == 0
    assert sum(v["imported"] for v in size["import"].values()) == 2_000
    assert size["resolve"]["trained"] is True and size["resolve"]["linked"] > 0
    for key in ("generate", "import", "resolve", "incremental", "splink_alone"):
        assert size["seconds"][key] > 0
        assert size["peak_rss_bytes"][key] > 0
    for key in ("decrypt", "train", "predict", "write"):
        assert key in size["resolve"]["seconds"]
    candor, baseline = size["candor"], size["splink_alone"]
    for scores in (candor, baseline, size["after_import"]):
        assert 0.0 <= scores["precision"] <= 1.0 and 0.0 <= scores["recall"] <= 1.0
    assert candor["f1"] > 0.85
    assert candor["f1"] >= baseline["f1"]
    assert size["ratios"]["f1_candor_over_baseline"] == pytest.approx(candor["f1"] / baseline["f1"])
    # probabilistic matching adds recall over deterministic stitching alone
    assert candor["recall"] > size["after_import"]["recall"]
    inc = size["incremental"]
    assert inc["errors"] == 0 and inc["link_new"]["count"] == 40
    assert 0 < inc["link_new"]["p50_ms"] <= inc["link_new"]["p95_ms"]
    assert inc["placement"]["with_own_person"] > 0.8
    assert set(size["pass"]) >= {"f1", "not_below_baseline", "link_new_p95", "rss"}
