"""The incremental scorer's Python twin: ``Model.score`` without a SQL statement per call.

``Model.score`` links one new record against at most a few dozen candidates. Running Splink's
comparison SQL for that costs DuckDB about 15 ms of planning per call, more than everything else
``link_new`` does. This module evaluates the same comparison levels in Python (rapidfuzz for
Jaro-Winkler and Damerau-Levenshtein, the algorithms DuckDB uses) and takes the match weights, the
prior and the level numbering from the very SQL Splink generated for the model, so a model's
parameters are read in one place only.

Only the comparison conditions Candor writes (``matching._comparisons``) have a twin here. A saved
model with any other condition, or SQL whose weights cannot be read, gets ``None`` from ``build``
and keeps the SQL path. Tests check that both paths give the same probabilities for random records.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler

Row = Mapping[str, str | None]
Condition = Callable[[Row, Row], bool]


def _value(row: Row, column: str) -> str | None:
    return row.get(column)


def _eq(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a == b


def _jw(a: str | None, b: str | None, at_least: float) -> bool:
    return a is not None and b is not None and JaroWinkler.similarity(a, b) >= at_least


def _dl(a: str | None, b: str | None, at_most: int) -> bool:
    return a is not None and b is not None and DamerauLevenshtein.distance(a, b) <= at_most


# the SQL spellings Candor writes, as patterns; each gives a Python condition over (left, right)
_COL = r'"(\w+)_([lr])"'
_PATTERNS: list[tuple[re.Pattern[str], Callable[..., Condition]]] = []


def _pattern(regex: str) -> Callable[[Callable[..., Condition]], Callable[..., Condition]]:
    def register(build: Callable[..., Condition]) -> Callable[..., Condition]:
        _PATTERNS.append((re.compile(regex), build))
        return build

    return register


def _side(row_l: Row, row_r: Row, side: str) -> Row:
    return row_l if side == "l" else row_r


@_pattern(rf"^{_COL} IS NULL OR {_COL} IS NULL$")
def _either_null(a: str, sa: str, b: str, sb: str) -> Condition:
    return lambda a_, b_: _value(_side(a_, b_, sa), a) is None or _value(_side(a_, b_, sb), b) is None


@_pattern(rf"^{_COL} = {_COL}$")
def _equal(a: str, sa: str, b: str, sb: str) -> Condition:
    return lambda a_, b_: _eq(_value(_side(a_, b_, sa), a), _value(_side(a_, b_, sb), b))


@_pattern(rf"^{_COL} = {_COL} AND {_COL} = {_COL}$")
def _equal_both(a: str, sa: str, b: str, sb: str, c: str, sc: str, d: str, sd: str) -> Condition:
    first, second = _equal(a, sa, b, sb), _equal(c, sc, d, sd)
    return lambda a_, b_: first(a_, b_) and second(a_, b_)


@_pattern(rf"^jaro_winkler_similarity\({_COL}, {_COL}\) >= ([0-9.]+)$")
def _jaro_winkler(a: str, sa: str, b: str, sb: str, t: str) -> Condition:
    at_least = float(t)
    return lambda a_, b_: _jw(_value(_side(a_, b_, sa), a), _value(_side(a_, b_, sb), b), at_least)


@_pattern(rf"^damerau_levenshtein\({_COL}, {_COL}\) <= (\d+)$")
def _damerau(a: str, sa: str, b: str, sb: str, k: str) -> Condition:
    at_most = int(k)
    return lambda a_, b_: _dl(_value(_side(a_, b_, sa), a), _value(_side(a_, b_, sb), b), at_most)


def _split_first(v: str | None) -> str | None:
    return None if v is None else v.split("@", 1)[0]


@_pattern(rf"^split_part\({_COL}, '@', 1\) = split_part\({_COL}, '@', 1\)$")
def _local_part(a: str, sa: str, b: str, sb: str) -> Condition:
    return lambda a_, b_: _eq(_split_first(_value(_side(a_, b_, sa), a)), _split_first(_value(_side(a_, b_, sb), b)))


def _right(v: str | None, n: int) -> str | None:
    return None if v is None else v[-n:] if n else ""


@_pattern(rf"^right\({_COL}, (\d+)\) = right\({_COL}, (\d+)\)$")
def _same_end(a: str, sa: str, n: str, b: str, sb: str, m: str) -> Condition:
    na, nb = int(n), int(m)
    return lambda a_, b_: _eq(_right(_value(_side(a_, b_, sa), a), na), _right(_value(_side(a_, b_, sb), b), nb))


def _substr(v: str | None, start: int, length: int) -> str | None:
    return None if v is None else v[start - 1 : start - 1 + length]


@_pattern(rf"^substr\({_COL}, 1, (\d+)\) = substr\({_COL}, 1, (\d+)\)$")
def _same_start(a: str, sa: str, n: str, b: str, sb: str, m: str) -> Condition:
    na, nb = int(n), int(m)

    def same(a_: Row, b_: Row) -> bool:
        return _eq(_substr(_value(_side(a_, b_, sa), a), 1, na), _substr(_value(_side(a_, b_, sb), b), 1, nb))

    return same


@_pattern(rf"^{_COL} = substr\({_COL}, 1, 5\) \|\| substr\({_COL}, 9, 2\) \|\| '-' \|\| substr\({_COL}, 6, 2\)$")
def _day_month_swapped(a: str, sa: str, b: str, sb: str, c: str, sc: str, d: str, sd: str) -> Condition:
    if not (b == c == d and sb == sc == sd):
        raise ValueError("not one column")

    def swapped(a_: Row, b_: Row) -> bool:
        v = _value(_side(a_, b_, sb), b)
        if v is None:
            return False
        return _eq(_value(_side(a_, b_, sa), a), v[0:5] + v[8:10] + "-" + v[5:7])

    return swapped


def _all_null(columns: list[tuple[str, str]]) -> Callable[[Row, Row], bool]:
    return lambda a_, b_: all(_value(_side(a_, b_, s), c) is None for c, s in columns)


def condition(sql: str) -> Condition | None:
    """The Python twin of one comparison level's SQL condition, or None when there is none."""
    sql = sql.strip()
    for regex, build in _PATTERNS:
        m = regex.match(sql)
        if m:
            try:
                return build(*m.groups())
            except ValueError:
                return None
    # "(a_l IS NULL AND b_l IS NULL ...) OR (a_r IS NULL AND ...)": every column of one side missing
    groups = re.fullmatch(r"\((.+)\) OR \((.+)\)", sql)
    if groups:
        sides = []
        for part in groups.groups():
            cols = re.findall(rf"{_COL} IS NULL", part)
            if " AND ".join(f'"{c}_{s}" IS NULL' for c, s in cols) != part:
                return None
            sides.append(_all_null(cols))
        first, second = sides
        return lambda a_, b_: first(a_, b_) or second(a_, b_)
    # "A OR B" of two conditions that each have a twin
    if " OR " in sql and not sql.startswith("("):
        left_sql, _, right_sql = sql.partition(" OR ")
        left, right = condition(left_sql), condition(right_sql)
        if left is not None and right is not None:
            return lambda a_, b_: left(a_, b_) or right(a_, b_)
    return None


@dataclass(frozen=True)
class Comparison:
    levels: tuple[tuple[Condition | None, float], ...]  # (condition, weight); None: ELSE
    null: Condition | None  # the null level (weight 0), checked first


@dataclass(frozen=True)
class Scorer:
    prior: float
    comparisons: tuple[Comparison, ...]

    def probability(self, left: Row, right: Row) -> float:
        weight = self.prior
        for comparison in self.comparisons:
            if comparison.null is not None and comparison.null(left, right):
                continue
            for cond, w in comparison.levels:
                if cond is None or cond(left, right):
                    weight += w
                    break
        # as Splink writes it, stable on both sides of zero
        if weight >= 0:
            return 1.0 / (1.0 + math.pow(2.0, -weight))
        p = math.pow(2.0, weight)
        return p / (1.0 + p)

    def score(self, left: Row, rights: Sequence[Row]) -> list[tuple[str, float]]:
        scored = [(str(r["record_id"]), self.probability(left, r)) for r in rights]
        scored.sort(key=lambda pair: -pair[1])
        return scored


_NUMBER = r"(-?(?:[0-9.]+(?:e[-+]?\d+)?|inf))"


def build(settings: Mapping[str, Any], sql: str) -> Scorer | None:
    """A Python scorer equal to ``sql`` (Splink's comparison SQL for ``settings``), or None."""
    prior_m = re.search(rf"select\s+cast\({_NUMBER} as float8\) \+ mw_", sql)
    if prior_m is None:
        return None
    comparisons: list[Comparison] = []
    for comp in settings.get("comparisons", []):
        name = comp.get("output_column_name")
        if not isinstance(name, str):
            return None
        level_re = rf"WHEN gamma_{re.escape(name)} = (-?\d+) THEN\s+cast\({_NUMBER} as float8\)"
        block = re.search(rf"CASE\s+((?:{level_re}\s+)+)END as mw_{re.escape(name)}\b", sql)
        if block is None:
            return None
        weights = {int(g): float(w) for g, w in re.findall(level_re, block.group(1))}
        levels = comp.get("comparison_levels", [])
        null: Condition | None = None
        rest = []
        for level in levels:
            if level.get("is_null_level"):
                null = condition(str(level.get("sql_condition", "")))
                if null is None:
                    return None
            else:
                rest.append(level)
        compiled: list[tuple[Condition | None, float]] = []
        for index, level in enumerate(rest):
            gamma = len(rest) - 1 - index
            if gamma not in weights:
                return None
            text = str(level.get("sql_condition", "")).strip()
            if text.upper() == "ELSE":
                if index != len(rest) - 1:
                    return None
                compiled.append((None, weights[gamma]))
                continue
            cond = condition(text)
            if cond is None:
                return None
            compiled.append((cond, weights[gamma]))
        if not compiled or compiled[-1][0] is not None:  # without an ELSE level the SQL gives NULL
            return None
        if null is not None and weights.get(-1, 0.0) != 0.0:
            return None
        comparisons.append(Comparison(tuple(compiled), null))
    if not comparisons:
        return None
    return Scorer(float(prior_m.group(1)), tuple(comparisons))
