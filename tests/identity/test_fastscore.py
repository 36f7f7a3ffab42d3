"""The incremental scorer's Python twin equals Splink's SQL on DuckDB, for trained and random models."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from candor.identity import fastscore
from candor.identity.matching import _SCHEMA, Model, _base_settings, _feature_row, normalise_record
from tests.identity.test_matching import data

# values near each other, so every comparison level is reached (typos, swaps, shared prefixes)
NAMES = ["anna", "ana", "anne", "hanna", "smith", "smyth", "smit", "jon", "john", "johnny", "o'brien", "müller"]
STREETS = ["1 high street", "1 high st", "12 high street", "1 hihg street", "3 park road"]
PARTS = {
    "first_name": NAMES,
    "last_name": NAMES,
    "email": ["anna@x.org", "ana@x.org", "anna@y.org", "anan@x.org", "smith@x.org", "john.smith@x.org"],
    "phone": ["+15551234567", "+15551234568", "+15559994567", "+15551243567", "+442071234567"],
    "birthday": ["1980-03-04", "1980-04-03", "1980-03-05", "1980-11-30", "1981-03-04", "1990-01-01"],
    "street": STREETS,
    "city": ["springfield", "springfeld", "shelbyville", "london"],
    "postal_code": ["12345", "12346", "12399", "99999", "sw1a 1aa"],
    "country": ["us", "gb"],
}
value = {f: st.one_of(st.none(), st.sampled_from(v), st.text(max_size=12)) for f, v in PARTS.items()}
records = st.fixed_dictionaries({"record_id": st.uuids().map(str)}, optional=value)


def random_model(seed: int) -> Model:
    """Candor's comparisons with random m and u: weights of every sign and size."""
    rng = random.Random(seed)
    s = _base_settings()
    for comparison in s["comparisons"]:
        for level in comparison["comparison_levels"]:
            if not level.get("is_null_level"):
                level["m_probability"] = rng.uniform(0.001, 1)
                level["u_probability"] = rng.uniform(0.001, 1)
    s["probability_two_random_records_match"] = rng.uniform(1e-6, 0.1)
    return Model(s)


def rows(record: dict[str, Any]) -> dict[str, Any]:
    return dict(zip(_SCHEMA.names, _feature_row({"record_id": "", **normalise_record(record)}), strict=True))


def both(model: Model, left: dict[str, Any], right: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    fast = dict(model.score(left, right))
    sql = dict(model._score_sql_rows(rows(left), [rows(r) for r in right]))
    return fast, sql


MODELS: dict[int, Model] = {}


@pytest.fixture(scope="module")
def trained() -> Model:
    people, _ = data.generate(1_500, seed=11)
    return Model.train(people, seed=5)


def test_candor_models_take_the_python_path(trained: Model) -> None:
    for model in (trained, random_model(1)):
        model._score_setup()
        assert model._scorer is not None
        assert len(model._scorer.comparisons) == len(_base_settings()["comparisons"])


def test_trained_model_scores_generated_records_as_the_sql_does(trained: Model) -> None:
    people, _ = data.generate(600, seed=12)
    for i in range(0, 600, 30):
        fast, sql = both(trained, people[i], people[i + 1 : i + 30])
        assert fast.keys() == sql.keys()
        for rid, p in sql.items():
            assert fast[rid] == pytest.approx(p, rel=1e-9, abs=1e-12), rid


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 20), records, st.lists(records, min_size=1, max_size=12, unique_by=lambda r: r["record_id"]))
def test_python_twin_equals_splink_sql(seed: int, left: dict[str, Any], right: list[dict[str, Any]]) -> None:
    model = MODELS.setdefault(seed, random_model(seed))
    fast, sql = both(model, left, right)
    assert fast.keys() == sql.keys()
    for rid, p in sql.items():
        assert fast[rid] == pytest.approx(p, rel=1e-9, abs=1e-12), (rid, left, right)
    ranked = model.score(left, right)
    assert [p for _, p in ranked] == sorted((p for _, p in ranked), reverse=True)


def test_conditions_without_a_twin_keep_the_sql_path() -> None:
    s = _base_settings()
    s["comparisons"][0]["comparison_levels"][2]["sql_condition"] = 'levenshtein("first_name_l", "first_name_r") <= 1'
    for comparison in s["comparisons"]:
        for level in comparison["comparison_levels"]:
            if not level.get("is_null_level"):
                level["m_probability"], level["u_probability"] = 0.5, 0.25
    model = Model(s)
    model._score_setup()
    assert model._scorer is None
    a = {"record_id": "a", "first_name": "anna", "last_name": "smith"}
    b = {"record_id": "b", "first_name": "anne", "last_name": "smith"}
    assert [rid for rid, _ in model.score(a, [b])] == ["b"]


def test_every_condition_candor_writes_has_a_twin() -> None:
    for comparison in _base_settings()["comparisons"]:
        for level in comparison["comparison_levels"]:
            text = level["sql_condition"]
            assert text == "ELSE" or fastscore.condition(text) is not None, text


def test_build_refuses_sql_it_cannot_read() -> None:
    s = copy.deepcopy(_base_settings())
    assert fastscore.build(s, "SELECT 1") is None
