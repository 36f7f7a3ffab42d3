"""The generator of people with known truth, and the pairwise scores used to judge matching."""

from __future__ import annotations

import importlib.util
import itertools
from collections import Counter, defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


data = load_bench("identity_data")


def brute_force(pred: dict[str, str], truth: dict[str, int]) -> tuple[float, float, float]:
    ids = sorted(truth)
    same_pred = {(a, b) for a, b in itertools.combinations(ids, 2) if a in pred and b in pred and pred[a] == pred[b]}
    same_true = {(a, b) for a, b in itertools.combinations(ids, 2) if truth[a] == truth[b]}
    tp = len(same_pred & same_true)
    precision = tp / len(same_pred) if same_pred else 1.0
    recall = tp / len(same_true) if same_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.one_of(st.none(), st.integers(0, 5))), min_size=0, max_size=25))
def test_pairwise_scores_match_brute_force(rows: list[tuple[int, int | None]]) -> None:
    truth = {f"r{i}": person for i, (person, _) in enumerate(rows)}
    pred = {f"r{i}": f"c{cluster}" for i, (_, cluster) in enumerate(rows) if cluster is not None}
    assert data.pairwise_scores(pred, truth) == brute_force(pred, truth)


def test_pairwise_scores_perfect_and_empty() -> None:
    truth = {"a": 1, "b": 1, "c": 2}
    assert data.pairwise_scores({"a": "x", "b": "x", "c": "y"}, truth) == (1.0, 1.0, 1.0)
    assert data.pairwise_scores({}, truth) == (1.0, 0.0, 0.0)


def test_generator_is_deterministic_and_complete() -> None:
    records, truth = data.generate(3_000, seed=5)
    again, truth_again = data.generate(3_000, seed=5)
    other, _ = data.generate(3_000, seed=6)
    assert records == again and truth == truth_again
    assert records != other
    assert len(records) == len(truth) == 3_000
    assert len({r["record_id"] for r in records}) == 3_000
    for r in records:
        assert set(data.FIELDS) | {"record_id", "source", "user_id", "loyalty_card"} == set(r)
        assert r["source"] in data.SOURCES
        assert r["phone"] is None or (r["phone"].startswith("+1") and r["phone"][1:].isdigit())
        assert r["email"] is None or r["email"] == r["email"].lower()
    sizes = Counter(Counter(truth.values()).values())
    mean = sum(size * count for size, count in sizes.items()) / sum(sizes.values())
    assert 2.5 < mean < 3.5
    assert set(sizes) <= {1, 2, 3, 4, 5}


def _edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ca != cb))
    return row[-1]


def test_noise_is_roughly_as_designed() -> None:
    records, truth = data.generate(20_000, seed=9)
    people: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        people[truth[r["record_id"]]].append(r)
    n = len(records)
    for field in ("email", "phone", "birthday", "street", "postal_code", "city", "country"):
        missing = sum(r[field] is None for r in records) / n
        assert abs(missing - data.NOISE[f"missing_{field}"]) < 0.02, field
    # last-name typos: records whose last name is one or two edits from the person's usual one
    typos = swapped = total = 0
    for group in people.values():
        usual_last = Counter(r["last_name"] for r in group).most_common(1)[0][0]
        usual_first = Counter(r["first_name"] for r in group).most_common(1)[0][0]
        for r in group:
            total += 1
            if r["last_name"] != usual_last and 1 <= _edit_distance(r["last_name"].lower(), usual_last.lower()) <= 2:
                typos += 1
            if r["first_name"] == usual_last and r["last_name"] == usual_first and usual_first != usual_last:
                swapped += 1
    assert 0.03 < typos / total < 0.1
    assert 0.005 < swapped / total < 0.04
    # households: shared surnames and addresses between different people (hard non-matches)
    by_street: dict[str, set[int]] = defaultdict(set)
    for r in records:
        if r["street"]:
            by_street[r["street"]].add(truth[r["record_id"]])
    assert sum(len(p) > 1 for p in by_street.values()) > 500
    # nicknames appear for people whose name has one
    nicknames = {nick.title() for nicks in data.NICKNAMES.values() for nick in nicks}
    assert sum(r["first_name"] in nicknames for r in records) / n > 0.01


def test_generator_is_fast() -> None:
    import time

    # CPU time of this thread, not wall time: a shared machine's load must not fail the test
    started = time.thread_time()
    data.generate(50_000, seed=1)
    assert time.thread_time() - started < 10  # about 0.4 s on a laptop; 1M records well under a minute


def test_splink_alone_baseline_runs() -> None:
    records, truth = data.generate(1_500, seed=2)
    clusters = data.splink_alone(records, threshold=0.9)
    assert set(clusters) == set(truth)
    assert data.pairwise_scores(clusters, truth)[2] > 0.5
