"""The rights benchmark keeps working: its quick version (2,000 profiles, 10,000 events, 20,000 audit
entries, in-process) runs here. Full sizes and their results: BENCHMARKS.md, section "Rights".
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_rights", BENCH / "rights.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_rights_benchmark_quick(tmp_path: Path) -> None:
    bench = load()
    results: dict[str, Any] = bench.main(["--quick", "--no-save", "--quiet", "--keep", str(tmp_path / "store")])
    assert results["benchmark"] == "rights"
    cfg, store = results["config"], results["store"]
    assert (cfg["profiles"], cfg["events"], cfg["audit"]) == (2_000, 10_000, 20_000)
    # the store was built through the write path: every event accepted, one subject per person
    build = results["build"]
    assert build["accepted"] == 10_000 and build["rejected"] == 0 and build["no_consent"] == 0
    assert store["events"] == 10_000 and store["subjects"] == 2_000
    assert build["seconds"] > 0 and build["events_per_s"] > 0

    rights, checks = results["rights"], results["rights"]["checks"]
    n = cfg["sample"]
    assert len(rights["sample"]) == n == checks["people"]
    # every sampled person was found, exported completely, then erased without a trace
    assert checks["found"] == n and checks["export_events_match"] == n
    assert checks["events_checked"] > 0
    assert checks["readable_after"] == 0 and checks["rows_left"] == 0 and checks["keys_left"] == 0
    assert rights["erasure"]["deleted_rows"]["events"] == checks["events_checked"]
    assert rights["erasure"]["deleted_rows"]["subjects"] == n
    for part, keys in (("access", ("people", "export", "process", "raw_select")),
                       ("erasure", ("effective", "purge", "process", "raw_delete"))):  # fmt: skip
        for key in keys:
            d = rights[part][key]
            assert d["count"] == n, (part, key)
            assert 0 < d["p50_ms"] <= d["p95_ms"] <= d["max_ms"], (part, key)
    era = rights["erasure"]
    # shredding comes first, the purge after it, both inside the whole request
    assert era["effective"]["p50_ms"] < era["purge"]["p50_ms"] <= era["process"]["p50_ms"]
    assert era["effective"]["max_ms"] < era["purge"]["max_ms"]
    for ratio in rights["ratios"].values():
        assert ratio > 0

    audit = results["audit"]
    assert audit["ok"] is True and audit["problem"] is None
    assert audit["entries"] >= 20_000 and audit["baseline_rows"] == audit["entries"]
    assert audit["seconds"] > 0 and audit["entries_per_s"] > 0 and audit["ratio_to_baseline"] > 0
    assert all(v > 0 for v in results["peak_rss_bytes"].values())
    assert set(results["pass"]) == {"export", "effective", "purge", "erased", "found", "audit"}
    assert results["pass"]["erased"] and results["pass"]["found"]

    # a second run reuses the kept store (no build) and samples people not erased before
    again: dict[str, Any] = bench.main(
        ["--quick", "--no-save", "--quiet", "--sample", "3", "--audit", "20000", "--keep", str(tmp_path / "store")]
    )
    assert again["build"]["reused"] is True
    assert not set(again["rights"]["sample"]) & set(rights["sample"])
    assert again["rights"]["checks"]["found"] == 3 and again["audit"]["fill"]["added"] == 0
