"""Identity matching: accuracy on generated people, no plaintext in saved models or on disk, fast scoring."""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections import defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from candor.identity.matching import FIELDS, MatchingError, Model, _base_settings, blocking_keys, normalise_record

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


data = load_bench("identity_data")


@pytest.fixture(scope="module")
def people() -> tuple[list[dict[str, Any]], dict[str, int]]:
    records, truth = data.generate(2_000, seed=7)
    return records, truth


@pytest.fixture(scope="module")
def model(people: tuple[list[dict[str, Any]], dict[str, int]]) -> Model:
    return Model.train(people[0], seed=3)


def strings(value: object) -> set[str]:
    """Every string value (not keys) in a JSON-like value."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return {s for v in value.values() for s in strings(v)}
    if isinstance(value, list):
        return {s for v in value for s in strings(v)}
    return set()


def clusters(records: list[dict[str, Any]], pairs: list[tuple[str, str, float]]) -> dict[str, str]:
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for a, b, _ in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
    return {r["record_id"]: find(r["record_id"]) for r in records}


def test_predict_finds_the_true_pairs(people: tuple[list[dict[str, Any]], dict[str, int]], model: Model) -> None:
    records, truth = people
    pairs = model.predict(records, threshold=0.95)
    assert all(a < b and 0.95 <= p <= 1 for a, b, p in pairs)
    precision, recall, f1 = data.pairwise_scores(clusters(records, pairs), truth)
    assert f1 > 0.9, (precision, recall, f1)


def test_predict_threshold_filters(people: tuple[list[dict[str, Any]], dict[str, int]], model: Model) -> None:
    records = people[0][:300]
    low = model.predict(records, threshold=0.5)
    high = model.predict(records, threshold=0.99)
    assert {(a, b) for a, b, _ in high} <= {(a, b) for a, b, _ in low}
    assert all(p >= 0.99 for _, _, p in high)
    assert model.predict(records[:1], threshold=0.5) == []


def test_saved_model_holds_parameters_only(people: tuple[list[dict[str, Any]], dict[str, int]], model: Model) -> None:
    text = model.to_json()
    lowered = text.lower()
    values = {str(v).lower() for r in people[0] for f in FIELDS if (v := r.get(f))}
    values |= {str(v) for r in people[0] for f in FIELDS if (v := normalise_record(r).get(f))}
    leaked = sorted(v for v in values if len(v) >= 3 and f'"{v}"' in lowered)
    assert leaked == []
    # every string in it is part of the model's definition (no term-frequency table, whatever its key)
    definition = strings(_base_settings()) | {"duckdb", "candor.identity.matching/1", "CustomComparison"}
    definition |= {"mw_", "tf_", "gamma_", "source_dataset"}  # Splink's column names
    saved = json.loads(text)
    assert strings(saved) - definition - {saved["settings"].get("linker_uid")} == set()
    again = Model.from_json(text)
    assert again.to_json() == text
    assert again.probability_two_random_records_match == model.probability_two_random_records_match
    records = people[0][:200]
    assert again.predict(records, threshold=0.9) == model.predict(records, threshold=0.9)


def test_from_json_errors_are_plain() -> None:
    with pytest.raises(MatchingError, match="does not parse"):
        Model.from_json("{")
    with pytest.raises(MatchingError, match="not a saved matching model"):
        Model.from_json('{"format": "something else"}')


def test_score_ranks_the_true_match_first(people: tuple[list[dict[str, Any]], dict[str, int]], model: Model) -> None:
    records, truth = people
    by_person: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_person[truth[r["record_id"]]].append(r)
    groups = [g for g in by_person.values() if len(g) >= 2][:60]
    others = [g[0] for g in by_person.values() if len(g) == 1] + [g[-1] for g in groups]
    first = 0
    timings = []
    for i, group in enumerate(groups):
        new, match = group[0], group[1]
        decoys = [r for r in others[i : i + 19] if truth[r["record_id"]] != truth[new["record_id"]]]
        started = time.thread_time()  # CPU time: the machine's load must not fail the test
        ranked = model.score(new, [*decoys, match])
        timings.append(time.thread_time() - started)
        assert [rid for rid, _ in ranked] == sorted([rid for rid, _ in ranked], key=lambda rid: -dict(ranked)[rid])
        first += ranked[0][0] == match["record_id"]
    assert first / len(groups) > 0.9
    timings.sort()
    assert timings[int(0.95 * len(timings))] < 0.1  # the benchmark target is 20 ms; leave room for CI
    assert model.score(groups[0][0], []) == []


def test_too_few_records_is_a_plain_error() -> None:
    records, _ = data.generate(20, seed=1)
    with pytest.raises(MatchingError, match="too few records"):
        Model.train(records)


def test_bad_records_are_plain_errors(model: Model) -> None:
    with pytest.raises(MatchingError, match="position 1 has no record_id"):
        model.predict([{"record_id": "a"}, {"first_name": "x"}], threshold=0.5)
    with pytest.raises(MatchingError, match="not unique"):
        model.predict([{"record_id": "a"}, {"record_id": "a"}], threshold=0.5)
    with pytest.raises(MatchingError, match="threshold"):
        model.predict([], threshold=2)


def test_nothing_is_written_to_disk(
    people: tuple[list[dict[str, Any]], dict[str, int]], model: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    records = people[0][:1000]
    Model.train(records)
    model.predict(records, threshold=0.5)
    model.score(records[0], records[1:20])
    assert list(os.walk(tmp_path)) == [(str(tmp_path), [], [])]


def test_duckdb_cannot_spill() -> None:
    from candor.identity.matching import _connect

    con = _connect()
    assert con.execute("SELECT current_setting('temp_directory')").fetchone() == ("",)
    con.execute("SET memory_limit = '20MB'")
    with pytest.raises(Exception, match=r"(?i)out of memory"):
        con.execute("SELECT i, md5(i::varchar) AS s FROM range(3000000) r(i) ORDER BY s").fetchall()
    con.close()


# normalisation and blocking keys

field_values = st.one_of(st.none(), st.text(max_size=40), st.integers(), st.booleans(), st.floats(allow_nan=True))
raw_records = st.fixed_dictionaries(
    {"record_id": st.text(min_size=1, max_size=10)}, optional=dict.fromkeys(FIELDS, field_values)
)


@settings(max_examples=300, deadline=None)
@given(raw_records)
def test_normalise_is_total_idempotent_and_deterministic(raw: dict[str, Any]) -> None:
    once = normalise_record(raw)
    assert set(once) == {"record_id", *FIELDS}
    assert all(v is None or (isinstance(v, str) and v) for v in once.values())
    assert normalise_record(dict(once)) == once  # a plain dict: normalised again, for real
    assert normalise_record(once) is once  # what it returned: passed through without the work
    assert normalise_record(dict(raw)) == once


@settings(max_examples=300, deadline=None)
@given(raw_records)
def test_blocking_keys_are_total_and_deterministic(raw: dict[str, Any]) -> None:
    keys = blocking_keys(raw)
    assert keys == blocking_keys(dict(raw)) == blocking_keys(normalise_record(raw))
    assert all(isinstance(k, str) and k for k in keys)


def test_normalise_examples() -> None:
    r = normalise_record(
        {
            "record_id": 5,
            "first_name": "  José ",
            "last_name": "O'Brien-Smith",
            "email": " Ana@Example.COM ",
            "phone": "+1 (415) 555-0100",
            "birthday": "1980-02-03",
            "street": "12 Main St.",
            "city": "  ",
            "postal_code": "sw1a 1aa",
            "country": "null",
        }
    )
    assert r == {
        "record_id": "5",
        "first_name": "jose",
        "last_name": "o brien smith",
        "email": "ana@example.com",
        "phone": "+14155550100",
        "birthday": "1980-02-03",
        "street": "12 main street",
        "city": None,
        "postal_code": "sw1a1aa",
        "country": None,
    }
    assert blocking_keys({"record_id": "x"}) == []


def test_blocking_keys_survive_typos_swaps_and_nicknames() -> None:
    base = {"first_name": "Robert", "last_name": "Johnson", "birthday": "1980-02-03", "postal_code": "10115"}
    variants = [
        {**base, "first_name": "Bob"},
        {**base, "first_name": "Johnson", "last_name": "Robert"},
        {**base, "last_name": "Jonhson"},
        {**base, "first_name": "Rboert", "last_name": "Johnsen"},
        {**base, "birthday": "1980-03-02"},
    ]
    keys = set(blocking_keys(base))
    for variant in variants:
        assert keys & set(blocking_keys(variant)), variant


def test_blocking_keys_cover_most_true_pairs(people: tuple[list[dict[str, Any]], dict[str, int]]) -> None:
    records, truth = people
    keys = {r["record_id"]: set(blocking_keys(r)) for r in records}
    by_person: dict[int, list[str]] = defaultdict(list)
    for r in records:
        by_person[truth[r["record_id"]]].append(r["record_id"])
    pairs = [(a, b) for ids in by_person.values() for i, a in enumerate(ids) for b in ids[i + 1 :]]
    shared = sum(bool(keys[a] & keys[b]) for a, b in pairs)
    assert shared / len(pairs) > 0.95
