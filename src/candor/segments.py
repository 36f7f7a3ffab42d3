"""Segments: declarative definitions (JSON or YAML) compiled to one parameterised DuckDB query.

A definition names groups of *profiles* (unified people, see identity/) by what they did (events:
count, sum or average of a property, distinct active days, recency, each within a time window and
with equality filters on clear properties), what they told us (traits, the loyalty tier), what they
agreed to (consent, decided by ``Consent.can_use``) and other segments. docs/segments.md is the
grammar; ``parse`` enforces it and names the exact place of every mistake.

Evaluation has three parts:

1. **SQL** (DuckDB over the store, analytics.py): one statement aggregates the events of every
   profile once, with one aggregate column per event condition, and evaluates the boolean tree in
   three-valued logic: conditions SQL cannot decide (traits, consent) are NULL. Rows that come out
   TRUE are members, FALSE are not, NULL are candidates. Every value, property path, event name and
   time bound is a bound parameter; the SQL text only ever holds generated aliases and fixed
   operators.
2. **Consent** conditions of the candidates, through ``can_use`` (the one decision), a chunk of
   profiles at a time after one ``preload``.
3. **Trait** conditions of the candidates still undecided: their identify events are decrypted in
   memory (traits are sealed), merged by the survivorship rule like the golden record, and tested;
   nothing decrypted is written or logged. A profile whose traits cannot be read (restricted, or
   its keys shredded) has unknown traits, so a trait condition never makes it a member.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import and_, desc, select, update

from candor import audit
from candor.consent.audience import PROFILE_TABLES, build_sql, profile_level
from candor.events import DEFAULT_PERSONAL_PROPERTIES
from candor.lake import PROMOTED
from candor.profiles import TRAIT_SCAN, survive
from candor.store import now_ms
from candor.store.schema import events, segment_members, segment_runs, segments, sources
from candor.vault import KeyDestroyed, VaultError

DAY_MS = 86_400_000

# -- limits (docs/segments.md lists them) -----------------------------------------------------------
MAX_TEXT_BYTES = 64 * 1024  # a definition as JSON or YAML text
MAX_DEPTH = 6  # nesting of conditions (a top-level condition is at depth 1)
MAX_CONDITIONS = 50  # conditions in one definition, every level counted
MAX_EXPANDED = 200  # conditions once referenced segments are inlined
MAX_REFERENCE_DEPTH = 4  # a segment referring to a segment referring to ...
MAX_NAME = 200  # segment names, event names, string values
MAX_DESCRIPTION = 1000
MAX_LIST = 100  # values in an ``in`` list or a ``where`` list
MAX_WHERE = 10  # property filters in one event condition
MAX_DAYS = 3650
MAX_COUNT = 1_000_000_000
MAX_AMOUNT = 1e15
MAX_PATH_PARTS = 4
KEY = re.compile(r"[A-Za-z0-9_]{1,64}")

EVENT_TYPES = ("track", "page", "screen", "identify", "group", "alias")
COMPARATORS = {"gte": ">=", "gt": ">", "lte": "<=", "lt": "<", "eq": "="}
METRICS = ("count", "sum", "avg", "distinct_days")
KINDS = (
    *("event", "last_seen", "trait", "loyalty_tier", "consent", "segment", "not", "all", "any"),
    *("rfm", "cohort", "clv"),
)
RFM_NAMES = ("champions", "loyal", "potential", "new", "at_risk", "hibernating", "lost")  # as insights/reports.py
MAX_HORIZON_MONTHS = 120
COHORT = re.compile(r"(19|20)\d\d-(0[1-9]|1[0-2])")
TRAIT_OPS = ("equals", "in", "contains", "exists", "gte", "gt", "lte", "lt")
LOYALTY_TRAIT = "loyaltyTier"  # fed by the loyalty programme (loyalty.py, ``Loyalty.tiers_of``)
# Traits that identify a person on their own: a definition may only test that they exist (or, for
# email, the domain), because a definition is stored in clear and must never hold someone's identifier.
DIRECT_IDENTIFIERS = frozenset(
    {"email", "phone", "userId", "user_id", "anonymousId", "anonymous_id", "ip"} | DEFAULT_PERSONAL_PROPERTIES
)

ADDRESS_LINES = frozenset({"street", "line1", "line2"})  # address.city or address.country may be tested

Scalar = str | float | bool  # numbers are read as float


class SegmentError(ValueError):
    """A bad definition or request: ``location`` says where (``conditions[2].count.gte``)."""

    def __init__(self, message: str, location: str = "", status: int = 400) -> None:
        super().__init__(f"{location}: {message}" if location else message)
        self.location = location
        self.reason = message
        self.status = status


# -- the syntax tree ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Group:
    op: str  # all | any
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


@dataclass(frozen=True)
class Activity:
    """Events of a profile: a metric over them (count, sum, avg, distinct days) compared to bounds."""

    event: str | None  # None: any name
    type: str | None  # None: any type
    where: tuple[tuple[tuple[str, ...], tuple[Scalar, ...]], ...]
    metric: str
    prop: tuple[str, ...] | None
    bounds: tuple[tuple[str, float], ...]
    within_days: int | None


@dataclass(frozen=True)
class Recency:
    event: str | None
    type: str | None
    within: bool  # True: seen within the window; False: not seen within it (or never)
    days: int


@dataclass(frozen=True)
class RfmCond:
    """The profile's RFM segment (quintiles of recency, frequency, money of its purchases) is one of ``names``."""

    names: tuple[str, ...]
    purchase: str
    days: int


@dataclass(frozen=True)
class CohortCond:
    """The profile arrived (its first event) in one of the months ``YYYY-MM``."""

    months: tuple[str, ...]


@dataclass(frozen=True)
class ClvCond:
    """Predicted lifetime value: revenue per month of tenure in the window, times the horizon."""

    purchase: str
    days: int
    horizon: int
    bounds: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Trait:
    path: tuple[str, ...]
    op: str  # equals | in | contains | exists | range
    value: Any  # Scalar, tuple of Scalars, bool (exists) or tuple of (comparator, number)


@dataclass(frozen=True)
class ConsentCond:
    purpose: str
    allowed: bool


@dataclass(frozen=True)
class Ref:
    name: str
    location: str = field(compare=False)


Node = Group | Not | Activity | Recency | RfmCond | CohortCond | ClvCond | Trait | ConsentCond | Ref


@dataclass(frozen=True)
class Definition:
    name: str | None
    description: str | None
    root: Group
    raw: dict[str, Any]  # the parsed document, stored as canonical JSON

    def references(self) -> list[Ref]:
        return [n for n in walk(self.root) if isinstance(n, Ref)]


def walk(node: Node) -> Iterable[Node]:
    yield node
    if isinstance(node, Group):
        for item in node.items:
            yield from walk(item)
    elif isinstance(node, Not):
        yield from walk(node.item)


# -- reading a definition ----------------------------------------------------------------------------
def load_text(text: str | bytes) -> Any:
    """A definition document from JSON text, or YAML text when PyYAML is installed."""
    raw = text.encode() if isinstance(text, str) else bytes(text)
    if len(raw) > MAX_TEXT_BYTES:
        raise SegmentError(f"the definition is larger than {MAX_TEXT_BYTES // 1024} KiB")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        json_error = SegmentError(f"not valid JSON: {exc.msg}", f"line {exc.lineno}, column {exc.colno}")
    if raw.lstrip()[:1] in (b"{", b"["):
        raise json_error
    try:
        import yaml
    except ImportError:
        raise SegmentError(f"{json_error} (YAML definitions need PyYAML installed)") from None
    try:
        return yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SegmentError("the definition is not UTF-8 text") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise SegmentError(f"not valid YAML: {exc.problem or 'syntax error'}", where) from None
    except yaml.YAMLError:
        raise SegmentError("not valid YAML") from None
    except RecursionError:
        raise SegmentError("the YAML document is nested too deeply") from None


def _at(loc: str, key: str) -> str:
    return f"{loc}.{key}" if loc else key


def _show(key: object) -> str:
    text = str(key)
    return repr(text if len(text) <= 40 else text[:40] + "…")


class _Parser:
    def __init__(self, purposes: Collection[str]) -> None:
        self.purposes = purposes
        self.count = 0

    # basic shapes
    def obj(self, x: Any, loc: str, what: str = "an object") -> dict[str, Any]:
        if not isinstance(x, dict):
            raise SegmentError(f"must be {what}", loc)
        for k in x:
            if not isinstance(k, str):
                raise SegmentError(f"keys must be text, not {type(k).__name__}", loc)
        return x

    def keys(self, d: dict[str, Any], allowed: Collection[str], loc: str) -> None:
        for k in d:
            if k not in allowed:
                raise SegmentError(f"unknown key {_show(k)}; expected one of {', '.join(allowed)}", loc)

    def text(self, x: Any, loc: str, limit: int = MAX_NAME) -> str:
        if not isinstance(x, str) or not x.strip():
            raise SegmentError("must be non-empty text", loc)
        if len(x) > limit:
            raise SegmentError(f"must be at most {limit} characters", loc)
        if "\x00" in x:
            raise SegmentError("must not contain NUL characters", loc)
        return x

    def whole(self, x: Any, loc: str, lo: int, hi: int) -> int:
        if isinstance(x, bool) or not isinstance(x, int) or not lo <= x <= hi:
            raise SegmentError(f"must be a whole number from {lo} to {hi:,}", loc)
        return x

    def number(self, x: Any, loc: str) -> float:
        if isinstance(x, bool) or not isinstance(x, int | float) or not -MAX_AMOUNT <= x <= MAX_AMOUNT:
            raise SegmentError(f"must be a number between -{MAX_AMOUNT:.0e} and {MAX_AMOUNT:.0e}", loc)
        return float(x)

    def scalar(self, x: Any, loc: str) -> Scalar:
        if isinstance(x, bool):
            return x
        if isinstance(x, int | float):
            return self.number(x, loc)
        if isinstance(x, str):
            return self.text(x, loc)
        raise SegmentError("must be text, a number or true/false", loc)

    def scalars(self, x: Any, loc: str) -> tuple[Scalar, ...]:
        if isinstance(x, list):
            if not 1 <= len(x) <= MAX_LIST:
                raise SegmentError(f"must list 1 to {MAX_LIST} values", loc)
            return tuple(self.scalar(v, f"{loc}[{i}]") for i, v in enumerate(x))
        return (self.scalar(x, loc),)

    def path(self, x: Any, loc: str, what: str) -> tuple[str, ...]:
        if not isinstance(x, str):
            raise SegmentError(f"must be a {what} name", loc)
        parts = tuple(x.split("."))
        if len(parts) > MAX_PATH_PARTS or not all(KEY.fullmatch(p) for p in parts):
            raise SegmentError(
                f"a {what} name is letters, digits and _ (at most 64), with up to {MAX_PATH_PARTS} parts joined by '.'",
                loc,
            )
        return parts

    def bounds(self, x: Any, loc: str, whole: bool, extra: Collection[str] = ()) -> tuple[tuple[str, float], ...]:
        d = self.obj(x, loc)
        self.keys(d, [*extra, *COMPARATORS], loc)
        out = []
        for op in COMPARATORS:
            if op in d:
                v = self.whole(d[op], _at(loc, op), 0, MAX_COUNT) if whole else self.number(d[op], _at(loc, op))
                out.append((op, float(v)))
        if not out:
            raise SegmentError(f"needs a bound: one or more of {', '.join(COMPARATORS)}", loc)
        return tuple(out)

    # the document
    def definition(self, doc: Any) -> Definition:
        d = self.obj(doc, "", "an object with name, match and conditions")
        self.keys(d, ("name", "description", "match", "conditions"), "")
        name = self.text(d["name"], "name") if "name" in d else None
        description = self.text(d["description"], "description", MAX_DESCRIPTION) if "description" in d else None
        match = d.get("match", "all")
        if match not in ("all", "any"):
            raise SegmentError("must be 'all' or 'any'", "match")
        if "conditions" not in d:
            raise SegmentError("missing: a list of conditions", "conditions")
        root = Group(match, self.conditions(d["conditions"], "conditions", 1))
        return Definition(name, description, root, d)

    def conditions(self, x: Any, loc: str, depth: int) -> tuple[Node, ...]:
        if not isinstance(x, list):
            raise SegmentError("must be a list of conditions", loc)
        if len(x) > MAX_CONDITIONS:
            raise SegmentError(f"more than {MAX_CONDITIONS} conditions", loc)
        return tuple(self.condition(c, f"{loc}[{i}]", depth) for i, c in enumerate(x))

    def condition(self, x: Any, loc: str, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise SegmentError(f"conditions are nested more than {MAX_DEPTH} levels deep", loc)
        self.count += 1
        if self.count > MAX_CONDITIONS:
            raise SegmentError(f"a definition holds at most {MAX_CONDITIONS} conditions", loc)
        d = self.obj(x, loc, "a condition (an object)")
        kinds = [k for k in KINDS if k in d]
        if len(kinds) != 1:
            found = " and ".join(kinds) if kinds else "none"
            raise SegmentError(f"a condition has exactly one of {', '.join(KINDS)} (found {found})", loc)
        kind = kinds[0]
        if kind in ("all", "any", "not", "segment", "loyalty_tier"):
            self.keys(d, (kind,), loc)
        here = _at(loc, kind)
        if kind in ("all", "any"):
            return Group(kind, self.conditions(d[kind], here, depth + 1))
        if kind == "not":
            return Not(self.condition(d["not"], here, depth + 1))
        if kind == "segment":
            return Ref(self.text(d["segment"], here), here)
        if kind == "loyalty_tier":
            return Trait((LOYALTY_TRAIT,), "in", self.scalars(d[kind], here))
        if kind == "consent":
            self.keys(d, ("consent", "allowed"), loc)
            purpose = self.text(d["consent"], here)
            if purpose not in self.purposes:
                raise SegmentError(f"unknown purpose {_show(purpose)}; one of {', '.join(self.purposes)}", here)
            allowed = d.get("allowed", True)
            if not isinstance(allowed, bool):
                raise SegmentError("must be true or false", _at(loc, "allowed"))
            return ConsentCond(purpose, allowed)
        if kind == "trait":
            return self.trait(d, loc)
        if kind in ("rfm", "cohort", "clv"):
            return self.value_condition(kind, d, loc)
        if kind == "last_seen":
            return self.recency(d, loc)
        return self.activity(d, loc)

    def event_filter(self, d: dict[str, Any], loc: str) -> tuple[str | None, str | None]:
        event = self.text(d["event"], _at(loc, "event")) if "event" in d else "*"
        if "type" in d:
            if d["type"] not in EVENT_TYPES:
                raise SegmentError(f"must be one of {', '.join(EVENT_TYPES)}", _at(loc, "type"))
            etype: str | None = d["type"]
        else:
            etype = None if event == "*" else "track"
        return (None if event == "*" else event), etype

    def activity(self, d: dict[str, Any], loc: str) -> Activity:
        self.keys(d, ("event", "type", "where", "within_days", *METRICS), loc)
        event, etype = self.event_filter(d, loc)
        metrics = [m for m in METRICS if m in d]
        if len(metrics) > 1:
            raise SegmentError(f"use one of {', '.join(METRICS)} per condition (found {' and '.join(metrics)})", loc)
        metric = metrics[0] if metrics else "count"
        prop = None
        if not metrics:
            bounds: tuple[tuple[str, float], ...] = (("gte", 1.0),)
        elif metric in ("sum", "avg"):
            here = _at(loc, metric)
            m = self.obj(d[metric], here)
            if "property" not in m:
                raise SegmentError("missing: the property to add up", _at(here, "property"))
            prop = self.clear_property(m["property"], _at(here, "property"))
            bounds = self.bounds(m, here, whole=False, extra=("property",))
        else:
            bounds = self.bounds(d[metric], _at(loc, metric), whole=True)
        within = self.whole(d["within_days"], _at(loc, "within_days"), 1, MAX_DAYS) if "within_days" in d else None
        where: list[tuple[tuple[str, ...], tuple[Scalar, ...]]] = []
        if "where" in d:
            here = _at(loc, "where")
            w = self.obj(d["where"], here)
            if not 1 <= len(w) <= MAX_WHERE:
                raise SegmentError(f"must filter on 1 to {MAX_WHERE} properties", here)
            for k, v in w.items():
                path = self.clear_property(k, here)
                where.append((path, self.scalars(v, f"{here}.{k}")))
        return Activity(event, etype, tuple(where), metric, prop, bounds, within)

    def value_condition(self, kind: str, d: dict[str, Any], loc: str) -> RfmCond | CohortCond | ClvCond:
        """The insights as conditions: ``rfm`` segment names, ``cohort`` months, ``clv`` bounds."""
        here = _at(loc, kind)
        if kind == "cohort":
            self.keys(d, ("cohort",), loc)
            months = d["cohort"] if isinstance(d["cohort"], list) else [d["cohort"]]
            if not 1 <= len(months) <= MAX_LIST:
                raise SegmentError(f"must list 1 to {MAX_LIST} months", here)
            for i, m in enumerate(months):
                if not isinstance(m, str) or not COHORT.fullmatch(m):
                    where = f"{here}[{i}]" if len(months) > 1 else here
                    raise SegmentError("a cohort is a month written YYYY-MM", where)
            return CohortCond(tuple(months))
        self.keys(d, (kind, "purchase", "within_days", *(("horizon_months",) if kind == "clv" else ())), loc)
        purchase = self.text(d["purchase"], _at(loc, "purchase")) if "purchase" in d else "Order Completed"
        days = self.whole(d["within_days"], _at(loc, "within_days"), 1, MAX_DAYS) if "within_days" in d else 365
        if kind == "rfm":
            names = d["rfm"] if isinstance(d["rfm"], list) else [d["rfm"]]
            if not 1 <= len(names) <= len(RFM_NAMES):
                raise SegmentError(f"must name 1 to {len(RFM_NAMES)} RFM segments", here)
            for n in names:
                if n not in RFM_NAMES:
                    raise SegmentError(f"unknown RFM segment {_show(n)}; one of {', '.join(RFM_NAMES)}", here)
            return RfmCond(tuple(dict.fromkeys(names)), purchase, days)
        horizon = self.whole(d.get("horizon_months", 12), _at(loc, "horizon_months"), 1, MAX_HORIZON_MONTHS)
        return ClvCond(purchase, days, horizon, self.bounds(d["clv"], here, whole=False))

    def clear_property(self, x: Any, loc: str) -> tuple[str, ...]:
        path = self.path(x, loc, "property")
        if any(p in DEFAULT_PERSONAL_PROPERTIES for p in path):
            raise SegmentError(
                f"property {_show(x)} holds personal data, which is sealed and cannot be segmented on", loc
            )
        return path

    def recency(self, d: dict[str, Any], loc: str) -> Recency:
        self.keys(d, ("last_seen",), loc)
        here = _at(loc, "last_seen")
        r = self.obj(d["last_seen"], here)
        self.keys(r, ("within_days", "not_within_days", "event", "type"), here)
        windows = [k for k in ("within_days", "not_within_days") if k in r]
        if len(windows) != 1:
            raise SegmentError("needs exactly one of within_days, not_within_days", here)
        days = self.whole(r[windows[0]], _at(here, windows[0]), 1, MAX_DAYS)
        event, etype = self.event_filter(r, here)
        return Recency(event, etype, windows[0] == "within_days", days)

    def trait(self, d: dict[str, Any], loc: str) -> Trait:
        self.keys(d, ("trait", *TRAIT_OPS), loc)
        path = self.path(d["trait"], _at(loc, "trait"), "trait")
        ops = [o for o in TRAIT_OPS if o in d]
        if not ops:
            raise SegmentError(f"needs a test: one of {', '.join(TRAIT_OPS)}", loc)
        ranges = [o for o in ops if o in COMPARATORS]
        if len(ops) > 1 and len(ranges) != len(ops):
            raise SegmentError(f"use one test per condition (found {' and '.join(ops)}); combine with all", loc)
        op = ops[0]
        here = _at(loc, op)
        identifying = path[-1] in DIRECT_IDENTIFIERS or path[-1] in ADDRESS_LINES
        if op == "exists":
            if not isinstance(d[op], bool):
                raise SegmentError("must be true or false", here)
            return Trait(path, "exists", d[op])
        if op == "contains":
            value = self.scalar(d[op], here)
            if identifying and not (path == ("email",) and isinstance(value, str) and value.startswith("@")):
                raise SegmentError(self.identifier_message(path[0], "an email domain such as '@example.com'"), here)
            return Trait(path, "contains", value)
        if identifying:
            raise SegmentError(self.identifier_message(path[0], "exists"), here)
        if op == "equals":
            return Trait(path, "in", (self.scalar(d[op], here),))
        if op == "in":
            if not isinstance(d[op], list):
                raise SegmentError(f"must be a list of 1 to {MAX_LIST} values", here)
            return Trait(path, "in", self.scalars(d[op], here))
        return Trait(path, "range", tuple((o, self.number(d[o], _at(loc, o))) for o in ranges))

    @staticmethod
    def identifier_message(name: str, allowed: str) -> str:
        return (
            f"trait {name!r} identifies a person: a definition is stored in clear, so it may only use {allowed}, "
            "never a person's value"
        )


def parse(doc: Any, purposes: Collection[str]) -> Definition:
    """Validate a definition document (already parsed from JSON or YAML) into its syntax tree."""
    try:
        return _Parser(purposes).definition(doc)
    except RecursionError:
        raise SegmentError("the definition is nested too deeply") from None


# -- compiling to SQL --------------------------------------------------------------------------------
SqlLeaf = Activity | Recency | RfmCond | CohortCond | ClvCond
PyLeaf = Trait | ConsentCond


@dataclass
class Compiled:
    sql: str
    params: dict[str, Any]
    sql_leaves: list[SqlLeaf]  # in the order of their columns l0, l1, ...
    py_leaves: list[PyLeaf]
    root: Node  # references inlined


def _extraction(c: _Compiler, path: tuple[str, ...]) -> str:
    """A property of each event: its column in the analytics store when it has one (lake.PROMOTED,
    the same text), else read from the event's JSON, and then only from the events some aggregate
    reading it keeps (every use of the column is inside a FILTER on one of those scopes), since
    parsing JSON is most of a segment's cost."""
    if len(path) == 1 and path[0] in c.promoted:
        return f"e.p_{path[0]}"
    read = f"json_extract_string(e.properties, {c.bind(_json_path(path))})"
    scopes = c.path_scopes.get(path, [None])
    if any(s is None for s in scopes):
        return read
    return f"CASE WHEN {' OR '.join(f'({s})' for s in dict.fromkeys(scopes))} THEN {read} END"


def _json_path(path: tuple[str, ...]) -> str:
    # every part matched KEY (letters, digits, _): quoting cannot be escaped from
    return "$." + ".".join(f'"{p}"' for p in path)


class _Compiler:
    def __init__(self, now: int, promoted: Collection[str]) -> None:
        self.now = now
        self.promoted = frozenset(promoted)
        self.params: dict[str, Any] = {}
        self.paths: dict[tuple[str, ...], str] = {}
        # per property path: the scopes of the aggregates that read it (None: one reads it everywhere)
        self.path_scopes: dict[tuple[str, ...], list[str | None]] = {}
        self.sql_leaves: dict[SqlLeaf, int] = {}
        self.py_leaves: dict[PyLeaf, int] = {}
        # per aggregate: (expression, alias, how per-subject values combine into the profile's: sum, max,
        # min; None when they cannot, as for avg and count(DISTINCT ...))
        self.aggs: list[tuple[str, str, str | None]] = []
        self.tests: list[str] = []
        self.scopes: list[str | None] = []  # per SQL leaf: its type/name/time filter, for the prefilter

    def bind(self, value: Any) -> str:
        name = f"v{len(self.params)}"
        self.params[name] = value
        return f"${name}"

    def column(self, path: tuple[str, ...], scope: str | None) -> str:
        """The column holding property ``path``, read by an aggregate filtered on ``scope``."""
        if path not in self.paths:
            self.paths[path] = f"x{len(self.paths)}"
        self.path_scopes.setdefault(path, []).append(scope or None)
        return self.paths[path]

    def scope(self, event: str | None, etype: str | None, since: int | None) -> list[str]:
        parts = []
        if etype is not None:
            parts.append(f"type = {self.bind(etype)}")
        if event is not None:
            parts.append(f"event = {self.bind(event)}")
        if since is not None:
            parts.append(f"ts_ms >= {self.bind(since)}")
        return parts

    def match(self, col: str, values: tuple[Scalar, ...]) -> str:
        tests = []
        for v in values:
            if isinstance(v, bool):
                tests.append(f"{col} = {self.bind('true' if v else 'false')}")
            elif isinstance(v, float):
                tests.append(f"TRY_CAST({col} AS DOUBLE) = {self.bind(v)}")
            else:
                tests.append(f"lower({col}) = lower({self.bind(v)})")
        return "(" + " OR ".join(tests) + ")"

    def expr(self, node: Node) -> str:
        if isinstance(node, Group):
            if not node.items:
                return "TRUE" if node.op == "all" else "FALSE"
            joiner = " AND " if node.op == "all" else " OR "
            return "(" + joiner.join(self.expr(i) for i in node.items) + ")"
        if isinstance(node, Not):
            return f"(NOT {self.expr(node.item)})"
        if isinstance(node, Trait | ConsentCond):
            self.py_leaves.setdefault(node, len(self.py_leaves))
            return "NULL::BOOLEAN"
        if isinstance(node, Activity | Recency | RfmCond | CohortCond | ClvCond):
            if node not in self.sql_leaves:
                self.leaf(node)
            return f"l{self.sql_leaves[node]}"
        raise AssertionError(f"unexpected node {type(node).__name__}")  # references are inlined before

    def revenue(self, scope: str | None) -> str:
        """An event's revenue: properties.revenue, else total (as the analytics store's revenue column)."""
        r, t = self.column(("revenue",), scope), self.column(("total",), scope)
        return f"coalesce(TRY_CAST({r} AS DOUBLE), TRY_CAST({t} AS DOUBLE))"

    def leaf(self, node: SqlLeaf) -> None:
        i = len(self.sql_leaves)
        self.sql_leaves[node] = i
        if isinstance(node, CohortCond):
            self.scopes.append(None)
            self.aggs.append(("min(ts_ms) FILTER (WHERE type NOT IN ('identify', 'alias', 'group'))", f"a{i}", "min"))
            months = ", ".join(self.bind(m) for m in node.months)
            self.tests.append(f"coalesce(strftime(to_timestamp(a{i} / 1000), '%Y-%m') IN ({months}), FALSE)")
            return
        if isinstance(node, RfmCond | ClvCond):
            scope = self.scope(node.purchase, "track", self.now - node.days * DAY_MS)
            self.scopes.append(" AND ".join(scope))
            cond = " AND ".join(scope)
            rev = self.revenue(cond)
            self.aggs += [
                (f"max(ts_ms) FILTER (WHERE {cond})", f"a{i}", "max"),
                (f"count(*) FILTER (WHERE {cond})", f"n{i}", "sum"),
                (f"coalesce(sum(coalesce({rev}, 0)) FILTER (WHERE {cond}), 0)", f"m{i}", "sum"),
                (f"min(ts_ms) FILTER (WHERE {cond})", f"f{i}", "min"),
            ]
            if isinstance(node, ClvCond):
                tenure = f"greatest(1.0, ({self.bind(self.now)} - f{i}) / {30 * DAY_MS}.0)"
                value = f"m{i} / {tenure} * {self.bind(float(node.horizon))}"
                checks = " AND ".join(f"{value} {COMPARATORS[op]} {self.bind(v)}" for op, v in node.bounds)
                self.tests.append(f"coalesce(n{i} > 0 AND {checks}, FALSE)")
                return
            win = f"OVER (PARTITION BY coalesce(n{i}, 0) > 0 ORDER BY {{}}, profile_id)"
            r, f = (f"ntile(5) {win.format(f'a{i}')}", f"ntile(5) {win.format(f'n{i}')}")
            names = ", ".join(self.bind(n) for n in node.names)
            self.tests.append(f"coalesce(coalesce(n{i}, 0) > 0 AND ({rfm_case(r, f)}) IN ({names}), FALSE)")
            return
        if isinstance(node, Recency):
            scope = self.scope(node.event, node.type, None)
            self.scopes.append(" AND ".join(scope) if scope else None)
            cond = " AND ".join(scope) or "TRUE"
            self.aggs.append((f"max(ts_ms) FILTER (WHERE {cond})", f"a{i}", "max"))
            cut = self.bind(self.now - node.days * DAY_MS)
            self.tests.append(f"coalesce(a{i} >= {cut}, FALSE)" if node.within else f"coalesce(a{i} < {cut}, TRUE)")
            return
        since = self.now - node.within_days * DAY_MS if node.within_days is not None else None
        scope = self.scope(node.event, node.type, since)
        self.scopes.append(" AND ".join(scope) if scope else None)
        joined = " AND ".join(scope) or None
        conds = scope + [self.match(self.column(path, joined), values) for path, values in node.where]
        cond = " AND ".join(conds) or "TRUE"
        combine: str | None
        if node.metric == "count":
            agg, zero, combine = "count(*)", "0", "sum"
        elif node.metric == "distinct_days":
            agg, zero, combine = f"count(DISTINCT ts_ms // {DAY_MS})", "0", None
        else:
            assert node.prop is not None
            value = f"TRY_CAST({self.column(node.prop, joined)} AS DOUBLE)"
            if node.metric == "sum":
                agg, zero, combine = f"sum({value})", "0.0", "sum"
            else:
                agg, zero, combine = f"avg({value})", "NULL", None
        self.aggs.append((f"{agg} FILTER (WHERE {cond})", f"a{i}", combine))
        checks = " AND ".join(f"coalesce(a{i}, {zero}) {COMPARATORS[op]} {self.bind(v)}" for op, v in node.bounds)
        self.tests.append(f"coalesce({checks}, FALSE)")


def rfm_case(r: str, f: str) -> str:
    """The named RFM segment from the recency and frequency quintiles (5 = most recent / most frequent)."""
    return (
        f"CASE WHEN {r} >= 4 AND {f} >= 4 THEN 'champions' WHEN {r} >= 3 AND {f} >= 3 THEN 'loyal' "
        f"WHEN {r} >= 4 AND {f} <= 1 THEN 'new' WHEN {r} >= 3 THEN 'potential' "
        f"WHEN {r} = 2 AND {f} >= 3 THEN 'at_risk' WHEN {r} = 2 THEN 'hibernating' ELSE 'lost' END"
    )


def compile_sql(root: Node, now: int, promoted: Collection[str] = ()) -> Compiled:
    """One DuckDB statement over the analytics views: (profile_id[, decided, subjects, restricted, l0..]).
    ``promoted``: the properties the ``events`` relation has columns ``p_<name>`` for (lake.PROMOTED
    over the analytics store; none over the store's own events table)."""
    c = _Compiler(now, promoted)
    top = c.expr(root)
    py = bool(c.py_leaves)
    people_cols = ", list(subject_id ORDER BY subject_id) AS subjects, bool_or(state = 'restricted') AS restricted"
    parts = [
        "WITH prof AS (\n"
        "    SELECT s.subject_id, coalesce(ps.profile_id, s.subject_id) AS profile_id, s.state\n"
        "    FROM subjects s LEFT JOIN profile_subjects ps ON ps.subject_id = s.subject_id\n"
        "    WHERE s.state <> 'erased'\n)",
        f"people AS (\n    SELECT profile_id{people_cols if py else ''} FROM prof GROUP BY profile_id\n)",
    ]
    if c.sql_leaves:
        extract = "".join(f", {_extraction(c, p)} AS {col}" for p, col in c.paths.items())
        prefilter = ""
        if all(s is not None for s in c.scopes):
            prefilter = "\n    WHERE " + " OR ".join(f"({s})" for s in c.scopes)
        # when every aggregate combines (counts and sums add up, max and min of maxima and minima), the
        # events are aggregated per subject first and only those far fewer rows are joined to profiles
        per_subject = all(combine is not None for _, _, combine in c.aggs)
        if per_subject:
            key, group, source = "e.subject_id", "subject_id", "events e"
        else:
            key, group, source = "p.profile_id", "profile_id", "events e JOIN prof p ON p.subject_id = e.subject_id"
        parts.append(f"ev AS (\n    SELECT {key}, e.type, e.event, e.ts_ms{extract}\n    FROM {source}{prefilter}\n)")
        parts.append(
            f"{'sagg' if per_subject else 'agg'} AS (\n    SELECT {group}, "
            + ", ".join(f"{expr} AS {alias}" for expr, alias, _ in c.aggs)
            + f"\n    FROM ev GROUP BY {group}\n)"
        )
        if per_subject:
            parts.append(
                "agg AS (\n    SELECT p.profile_id, "
                + ", ".join(f"{combine}(g.{alias}) AS {alias}" for _, alias, combine in c.aggs)
                + "\n    FROM sagg g JOIN prof p ON p.subject_id = g.subject_id GROUP BY p.profile_id\n)"
            )
        tests = ", ".join(f"{t} AS l{i}" for i, t in enumerate(c.tests))
        parts.append(f"leaves AS (\n    SELECT people.*, {tests}\n    FROM people LEFT JOIN agg USING (profile_id)\n)")
    else:
        parts.append("leaves AS (SELECT * FROM people)")
    if py:
        cols = "".join(f", l{i}" for i in range(len(c.sql_leaves)))
        select_ = (
            f"SELECT profile_id, {top} AS decided, subjects, restricted{cols} FROM leaves WHERE ({top}) IS NOT FALSE"
        )
    else:
        select_ = f"SELECT profile_id FROM leaves WHERE {top}"
    sql = ",\n".join(parts) + "\n" + select_ + "\nORDER BY profile_id"
    return Compiled(sql, c.params, list(c.sql_leaves), list(c.py_leaves), root)


# -- three-valued evaluation in Python ---------------------------------------------------------------
def kleene(node: Node, value: Callable[[Node], bool | None]) -> bool | None:
    """AND / OR / NOT over True, False and None (unknown), like SQL."""
    if isinstance(node, Group):
        unknown = False
        for item in node.items:
            v = kleene(item, value)
            if v is None:
                unknown = True
            elif v is (node.op == "any"):
                return v
        return None if unknown else node.op == "all"
    if isinstance(node, Not):
        v = kleene(node.item, value)
        return None if v is None else not v
    return value(node)


def _number(x: Any) -> float | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, int | float):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, str):
        try:
            f = float(x)
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def _same(a: Any, b: Scalar) -> bool:
    if isinstance(b, bool) or isinstance(a, bool):
        return a is b
    if isinstance(b, float):
        return isinstance(a, int | float) and float(a) == b
    return isinstance(a, str) and a.lower() == b.lower()


_MISSING = object()


def trait_matches(cond: Trait, traits: Mapping[str, Any]) -> bool:
    value: Any = traits.get(cond.path[0], _MISSING)
    for part in cond.path[1:]:
        value = value.get(part, _MISSING) if isinstance(value, dict) else _MISSING
    present = value is not _MISSING and value is not None
    if cond.op == "exists":
        return present is cond.value
    if not present:
        return False
    if cond.op == "in":
        return any(_same(value, v) for v in cond.value)
    if cond.op == "contains":
        if isinstance(value, list):
            return any(_same(v, cond.value) for v in value)
        if isinstance(value, str) and isinstance(cond.value, str):
            return cond.value.lower() in value.lower()
        return False
    n = _number(value)
    if n is None:
        return False
    return all(_compare(n, op, bound) for op, bound in cond.value)


def _compare(n: float, op: str, bound: float) -> bool:
    return {"gte": n >= bound, "gt": n > bound, "lte": n <= bound, "lt": n < bound, "eq": n == bound}[op]


# -- the service -------------------------------------------------------------------------------------
# aliases: ``Segments.list`` shadows the builtin inside the class
ProfileIds = list[str]
Records = list[dict[str, Any]]
Rows = list[tuple[int, int, str, bytes]]
Candidates = list[tuple[Any, str, int]]

CHUNK = 1000  # profiles per consent preload / trait decryption batch
_UNUSABLE = object()  # a trait of a special category the person did not opt in to


@dataclass
class Run:
    members: list[str]
    candidates: int = 0  # rows SQL could not decide alone
    decrypted: int = 0  # profiles whose traits were decrypted (in memory)
    sql_s: float = 0.0
    python_s: float = 0.0
    # trait conditions not evaluated for lack of an opt-in to a special category: reason → profiles
    withheld: dict[str, int] = field(default_factory=dict)


class Segments:
    """Definitions, evaluation, preview and membership history. ``rt`` is the Runtime (app.py)."""

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        # where the segment query runs: None is DuckDB over the lake; a candor.engines engine (Spark) otherwise
        self.engine: Any = None

    # -- definitions -------------------------------------------------------------------------------
    def parse(self, definition: Any) -> Definition:
        doc = load_text(definition) if isinstance(definition, str | bytes) else definition
        return parse(doc, self.rt.taxonomy.names())

    def _stored(self, conn: Any) -> dict[str, tuple[int, Definition]]:
        out = {}
        for sid, name, text in conn.execute(select(segments.c.id, segments.c.name, segments.c.definition)):
            out[name] = (int(sid), parse(orjson.loads(text), self.rt.taxonomy.names()))
        return out

    def _check_references(self, name: str, d: Definition, stored: Mapping[str, tuple[int, Definition]]) -> None:
        """Every referenced segment exists, and none leads back to ``name`` (a cycle)."""
        for ref in d.references():
            if ref.name == name:
                raise SegmentError(f"a segment cannot refer to itself ({name!r})", ref.location)
            if ref.name not in stored:
                raise SegmentError(f"no segment named {ref.name!r}", ref.location)
            try:
                self._expand(ref, stored, [name], 1)
            except SegmentError as exc:  # a cycle or too deep a chain: say where in this definition
                raise SegmentError(exc.reason, ref.location, exc.status) from None

    def create(self, name: str, definition: Any, actor: str) -> dict[str, Any]:
        name = _Parser(()).text(name, "name")
        d = self.parse(definition)
        if d.name is not None and d.name != name:
            raise SegmentError(f"{d.name!r} does not match the segment's name {name!r}", "name")
        raw = {**d.raw, "name": name}
        text = orjson.dumps(raw).decode()
        with self.rt.store.write() as conn:
            stored = self._stored(conn)
            if name in stored:
                raise SegmentError(f"a segment named {name!r} exists", "name", 409)
            self._check_references(name, d, stored)
            now = now_ms()
            sid = conn.execute(
                segments.insert().values(
                    name=name, definition=text, created_ms=now, updated_ms=now, created_by=actor[:100]
                )
            ).inserted_primary_key[0]
            audit.record(
                conn,
                actor,
                "segment.create",
                target=f"segment:{sid}",
                details={"name": name, "sha256": hashlib.sha256(text.encode()).hexdigest()},
            )
        got = self.get(name)
        assert got is not None
        return got

    def update(self, name: str, definition: Any, actor: str) -> dict[str, Any]:
        d = self.parse(definition)
        if d.name is not None and d.name != name:
            raise SegmentError(f"{d.name!r} does not match the segment's name {name!r}", "name")
        text = orjson.dumps({**d.raw, "name": name}).decode()
        with self.rt.store.write() as conn:
            stored = self._stored(conn)
            if name not in stored:
                raise SegmentError(f"no segment named {name!r}", "name", 404)
            self._check_references(name, d, stored)
            sid = stored[name][0]
            conn.execute(update(segments).where(segments.c.id == sid).values(definition=text, updated_ms=now_ms()))
            audit.record(
                conn,
                actor,
                "segment.update",
                target=f"segment:{sid}",
                details={"name": name, "sha256": hashlib.sha256(text.encode()).hexdigest()},
            )
        got = self.get(name)
        assert got is not None
        return got

    def get(self, name: str) -> dict[str, Any] | None:
        with self.rt.store.engine.connect() as conn:
            row = conn.execute(select(segments).where(segments.c.name == name)).mappings().first()
            if row is None:
                return None
            last = self._last_run(conn, int(row["id"]))
        return self._public(row, last)

    def list(self) -> Records:
        with self.rt.store.engine.connect() as conn:
            rows = conn.execute(select(segments).order_by(segments.c.name)).mappings().all()
            return [self._public(r, self._last_run(conn, int(r["id"]))) for r in rows]

    @staticmethod
    def _last_run(conn: Any, segment_id: int) -> dict[str, Any] | None:
        r = (
            conn.execute(
                select(segment_runs.c.run_ms, segment_runs.c.size, segment_runs.c.breakdown)
                .where(segment_runs.c.segment_id == segment_id)
                .order_by(desc(segment_runs.c.id))
                .limit(1)
            )
            .mappings()
            .first()
        )
        return None if r is None else {"run_ms": r["run_ms"], "size": r["size"], **orjson.loads(r["breakdown"])}

    @staticmethod
    def _public(row: Any, last: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "id": int(row["id"]),
            "name": row["name"],
            "definition": orjson.loads(row["definition"]),
            "created_ms": row["created_ms"],
            "updated_ms": row["updated_ms"],
            "created_by": row["created_by"],
            "last_run": last,
        }

    # -- evaluation --------------------------------------------------------------------------------
    def _expand(
        self, node: Node, stored: Mapping[str, tuple[int, Definition]], stack: Sequence[str], depth: int
    ) -> Node:
        """The tree with referenced segments inlined (their definitions as they are now)."""
        if isinstance(node, Group):
            return Group(node.op, tuple(self._expand(i, stored, stack, depth) for i in node.items))
        if isinstance(node, Not):
            return Not(self._expand(node.item, stored, stack, depth))
        if not isinstance(node, Ref):
            return node
        if node.name in stack:
            chain = " → ".join(repr(n) for n in [*stack[stack.index(node.name) :], node.name])
            raise SegmentError(f"segments refer to each other in a cycle: {chain}", node.location)
        if depth > MAX_REFERENCE_DEPTH:
            raise SegmentError(f"segments refer to segments more than {MAX_REFERENCE_DEPTH} levels deep", node.location)
        if node.name not in stored:
            raise SegmentError(f"no segment named {node.name!r}", node.location, 404)
        return self._expand(stored[node.name][1].root, stored, [*stack, node.name], depth + 1)

    def _resolve(self, target: Any, conn: Any) -> tuple[Node, int | None, str | None]:
        stored = self._stored(conn)
        if isinstance(target, str):
            if target not in stored:
                raise SegmentError(f"no segment named {target!r}", "", 404)
            sid, d = stored[target]
            stack = [target]
        else:
            d = self.parse(target)
            sid, stack = None, [d.name] if d.name else []
        root = self._expand(d.root, stored, stack, 1)
        if sum(1 for _ in walk(root)) > MAX_EXPANDED:
            raise SegmentError(f"with the segments it refers to, the definition exceeds {MAX_EXPANDED} conditions")
        return root, sid, (target if sid is not None else d.name)

    def run(self, target: Any, *, now: int | None = None) -> Run:
        """Evaluate a stored segment (``target`` is its name) or a definition (a dict, or JSON/YAML bytes)."""
        now = now_ms() if now is None else now
        with self.rt.store.engine.connect() as conn:
            root, _, _ = self._resolve(target, conn)
        return self._run(root, now)

    def _run(self, root: Node, now: int) -> Run:
        # over the analytics store (DuckDB or Spark) the properties it has columns for are read from them
        compiled = compile_sql(root, now, PROMOTED if self.rt.analytics.lake is not None else ())
        t0 = time.perf_counter()
        if self.engine is not None:  # Spark (or any candor.engines engine): the same statement over the lake
            ws = self.engine.workspace(self.rt.analytics)
            try:
                rows = ws.execute(compiled.sql, compiled.params).fetchall()
            finally:
                ws.close()
        else:
            rows = self.rt.analytics.fetch(compiled.sql, compiled.params)
        t1 = time.perf_counter()
        if not compiled.py_leaves:
            return Run([r[0] for r in rows], sql_s=t1 - t0)
        out = Run([], sql_s=t1 - t0)
        undecided = []
        for row in rows:
            if row[1] is True:
                out.members.append(row[0])
            else:
                undecided.append(row)
        out.candidates = len(undecided)
        index = {leaf: i for i, leaf in enumerate(compiled.sql_leaves)}
        needs_consent = any(isinstance(p, ConsentCond) for p in compiled.py_leaves)
        trait_keys = {p.path[0] for p in compiled.py_leaves if isinstance(p, Trait)}
        names: dict[int, str] = {}
        with self.rt.store.engine.connect() as conn:
            special: dict[str, str] = {}
            if trait_keys:
                names = dict(conn.execute(select(sources.c.id, sources.c.name)).all())
                special = {k: c for k, c in self.rt.dictionary.special_traits(conn).items() if k in trait_keys}
            for i in range(0, len(undecided), CHUNK):
                chunk = undecided[i : i + CHUNK]
                if needs_consent or special:
                    self.rt.consent.preload([r[0] for r in chunk], conn)
                later = []
                for row in chunk:
                    verdict = kleene(compiled.root, self._values(row, index, None, conn, now))
                    if verdict is True:
                        out.members.append(row[0])
                    elif verdict is None and not row[3]:  # not restricted: traits may be read
                        later.append(row)
                if not later:
                    continue
                traits = self._traits([(r[0], list(r[2])) for r in later], trait_keys, names, conn)
                out.decrypted += len(later)
                for row in later:
                    t = traits.get(row[0])
                    if t is not None and special:
                        t = self._opted_in(row[0], t, special, conn, now, out)
                    if kleene(compiled.root, self._values(row, index, t, conn, now)) is True:
                        out.members.append(row[0])
                traits.clear()
        out.members.sort()
        out.python_s = time.perf_counter() - t1
        return out

    def _opted_in(
        self, profile: str, traits: dict[str, Any], special: dict[str, str], conn: Any, now: int, out: Run
    ) -> dict[str, Any]:
        """The traits without those of a special category the person did not opt in to (``can_use``
        with the category): a condition on them is unknown, so it never makes the person a member."""
        kept = dict(traits)
        for key, cat in special.items():
            d = self.rt.consent.can_use(profile, "necessary", categories=(cat,), conn=conn, now=now)
            if not d.allowed:
                kept[key] = _UNUSABLE
                out.withheld[d.reasons[0]] = out.withheld.get(d.reasons[0], 0) + 1
        return kept

    def categories(self, target: Any) -> set[str]:
        """The special data categories a segment's trait conditions use (referenced segments included)."""
        with self.rt.store.engine.connect() as conn:
            root, _, _ = self._resolve(target, conn)
            special = self.rt.dictionary.special_traits(conn)
        return {special[n.path[0]] for n in walk(root) if isinstance(n, Trait) and n.path[0] in special}

    def _values(
        self, row: Any, index: dict[SqlLeaf, int], traits: dict[str, Any] | None, conn: Any, now: int
    ) -> Callable[[Node], bool | None]:
        def value(leaf: Node) -> bool | None:
            if isinstance(leaf, Activity | Recency | RfmCond | CohortCond | ClvCond):
                return bool(row[4 + index[leaf]])
            if isinstance(leaf, ConsentCond):
                return self.rt.consent.can_use(row[0], leaf.purpose, conn=conn, now=now).allowed is leaf.allowed
            if isinstance(leaf, Trait):
                if traits is None or traits.get(leaf.path[0]) is _UNUSABLE:
                    return None
                return trait_matches(leaf, traits)
            raise AssertionError(type(leaf).__name__)

        return value

    def _traits(
        self, profiles: Sequence[tuple[str, Sequence[str]]], keys: set[str], names: dict[int, str], conn: Any
    ) -> dict[str, dict[str, Any] | None]:
        """Golden-record values of ``keys`` for many profiles, decrypted in memory (None: unreadable)."""
        owner = {s: pid for pid, subs in profiles for s in subs}
        subjects = list(owner)
        rows: dict[str, Rows] = {}
        for i in range(0, len(subjects), 500):
            part = subjects[i : i + 500]
            for sid, source_id, ts, sealed in conn.execute(
                select(events.c.subject_id, events.c.source_id, events.c.ts_ms, events.c.sealed).where(
                    and_(events.c.subject_id.in_(part), events.c.type == "identify")
                )
            ):
                rows.setdefault(owner[sid], []).append((ts, source_id, sid, sealed))
        aeads = self.rt.vault.keys_for(subjects, conn)
        vault = self.rt.vault
        rule, trusted = self.rt.profiles.survivorship, self.rt.profiles.trusted
        out: dict[str, dict[str, Any] | None] = {}
        for pid, _ in profiles:
            found = sorted(rows.get(pid, ()), key=lambda r: -r[0])[:TRAIT_SCAN]
            candidates: dict[str, Candidates] = {}
            readable = 0
            for ts, source_id, sid, sealed in found:
                aead = aeads.get(sid)
                if aead is None:
                    continue
                try:
                    doc = orjson.loads(vault.open_with(aead, sealed, sid.encode()))
                except (KeyDestroyed, VaultError, orjson.JSONDecodeError):
                    continue
                readable += 1
                traits = doc.get("traits") if isinstance(doc, dict) else None
                if isinstance(traits, dict):
                    source = names.get(source_id, f"#{source_id}")
                    for k in keys & traits.keys():
                        candidates.setdefault(k, []).append((traits[k], source, ts))
            if found and not readable:
                out[pid] = None
                continue
            out[pid] = {k: survive(c, rule, trusted)[0] for k, c in candidates.items()}
        if LOYALTY_TRAIT in keys and getattr(self.rt, "loyalty", None) is not None:
            # the programme's tier of an active member wins over a tier a source sent
            tiers = self.rt.loyalty.tiers_of(conn, subjects)
            for pid, subs in profiles:
                tier = next((tiers[s] for s in subs if s in tiers), None)
                if tier is not None:
                    out[pid] = {**(out.get(pid) or {}), LOYALTY_TRAIT: tier}
        return out

    def evaluate(self, target: Any, *, now: int | None = None) -> ProfileIds:
        """The member profile ids of a stored segment (by name) or of a definition, sorted."""
        return self.run(target, now=now).members

    # -- purpose breakdown -------------------------------------------------------------------------
    def _purposes(self, purposes: Iterable[str] | None) -> ProfileIds:
        if purposes is None:
            return self.rt.taxonomy.names()
        out = list(purposes)
        known = set(self.rt.taxonomy.names())
        for i, p in enumerate(out):
            if p not in known:
                raise SegmentError(f"unknown purpose {_show(p)}", f"purposes[{i}]")
        return out

    def breakdown(
        self, members: Sequence[str], purposes: Sequence[str], *, now: int | None = None
    ) -> dict[str, dict[str, int]]:
        """Per purpose: usable, without consent, suppressed (allowed but on a do-not-contact list) and
        restricted members, by the consent resolver's SQL twin (consent/audience.py) at profile level."""
        keys = ("usable", "without_consent", "suppressed", "restricted")
        if not members or not purposes:
            return {p: dict.fromkeys(keys, 0) for p in purposes}
        sql, ps = build_sql(self.rt.taxonomy.get(p) for p in purposes)

        def setup(con: Any) -> None:
            _load_members(con, members)
            # the audience query at profile level, limited to the members
            profile_level(con, "seg_members")

        params = {"now": now_ms() if now is None else now, "default_j": self.rt.consent.default_jurisdiction}
        # the audience query reads no events: the analytics store need not be brought up to date
        row = self.rt.analytics.fetch(sql, params, setup=setup, fresh=False, tables=PROFILE_TABLES)[0]
        assert row is not None
        return {p.name: {k: int(row[4 * i + n] or 0) for n, k in enumerate(keys)} for i, p in enumerate(ps)}

    def preview(self, target: Any, purposes: Iterable[str] | None = None, *, now: int | None = None) -> dict[str, Any]:
        """Size and purpose breakdown (aggregates only, no profile ids)."""
        names = self._purposes(purposes)
        now = now_ms() if now is None else now
        run = self.run(target, now=now)
        members = run.members
        out = {"size": len(members), "purposes": self.breakdown(members, names, now=now)}
        if run.withheld:
            out["withheld"] = dict(run.withheld)  # why candidates were left out (no opt-in, limited use)
        return out

    # -- membership history ------------------------------------------------------------------------
    def refresh(self, name: str, actor: str = "system", *, now: int | None = None) -> dict[str, Any]:
        """Evaluate, record the run (size and breakdown) and update the membership history."""
        with self.rt.store.engine.connect() as conn:
            root, sid, _ = self._resolve(name, conn)
        assert sid is not None
        started = now_ms() if now is None else now
        run = self._run(root, started)
        breakdown = self.breakdown(run.members, self.rt.taxonomy.names(), now=started)
        members = set(run.members)
        with self.rt.store.write() as conn:
            last = conn.execute(
                select(segment_runs.c.run_ms).where(segment_runs.c.segment_id == sid).order_by(desc(segment_runs.c.id))
            ).scalar()
            # history rows are keyed by time: a run never shares a millisecond with the one before it
            at = max(started, (last or 0) + 1)
            current = {
                p
                for (p,) in conn.execute(
                    select(segment_members.c.subject_id).where(
                        and_(segment_members.c.segment_id == sid, segment_members.c.until_ms.is_(None))
                    )
                )
            }
            left = sorted(current - members)
            entered = sorted(members - current)
            for i in range(0, len(left), 500):
                conn.execute(
                    update(segment_members)
                    .where(
                        and_(
                            segment_members.c.segment_id == sid,
                            segment_members.c.subject_id.in_(left[i : i + 500]),
                            segment_members.c.until_ms.is_(None),
                        )
                    )
                    .values(until_ms=at)
                )
            if entered:
                conn.execute(
                    segment_members.insert(),
                    [{"segment_id": sid, "subject_id": p, "since_ms": at, "until_ms": None} for p in entered],
                )
            conn.execute(
                segment_runs.insert(),
                {
                    "segment_id": sid,
                    "run_ms": at,
                    "size": len(members),
                    "breakdown": orjson.dumps({"purposes": breakdown}).decode(),
                },
            )
            audit.record(
                conn,
                actor,
                "segment.refresh",
                target=f"segment:{sid}",
                details={
                    "size": len(members),
                    "entered": len(entered),
                    "left": len(left),
                    "traits_decrypted": run.decrypted,
                },
            )
        return {
            "segment": name,
            "run_ms": at,
            "size": len(members),
            "entered": len(entered),
            "left": len(left),
            "purposes": breakdown,
        }

    def _id(self, name: str, conn: Any) -> int:
        sid = conn.execute(select(segments.c.id).where(segments.c.name == name)).scalar()
        if sid is None:
            raise SegmentError(f"no segment named {name!r}", "", 404)
        return int(sid)

    def members_at(self, name: str, ts_ms: int) -> ProfileIds:
        """The profiles that were members at ``ts_ms`` by the recorded history (refreshes)."""
        with self.rt.store.engine.connect() as conn:
            sid = self._id(name, conn)
            rows = conn.execute(
                select(segment_members.c.subject_id)
                .where(
                    and_(
                        segment_members.c.segment_id == sid,
                        segment_members.c.since_ms <= ts_ms,
                        (segment_members.c.until_ms.is_(None)) | (segment_members.c.until_ms > ts_ms),
                    )
                )
                .order_by(segment_members.c.subject_id)
            )
            return [p for (p,) in rows]

    def runs(self, name: str, limit: int = 20) -> Records:
        with self.rt.store.engine.connect() as conn:
            sid = self._id(name, conn)
            rows = conn.execute(
                select(segment_runs.c.run_ms, segment_runs.c.size, segment_runs.c.breakdown)
                .where(segment_runs.c.segment_id == sid)
                .order_by(desc(segment_runs.c.id))
                .limit(limit)
            ).all()
        return [{"run_ms": r, "size": s, **orjson.loads(b)} for r, s, b in rows]


def _load_members(con: Any, members: Sequence[str]) -> None:
    """A temporary table ``seg_members(profile_id)`` in DuckDB, from a Python list (bound, never spliced)."""
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - pyarrow comes with splink
        con.execute(
            "CREATE TEMP TABLE seg_members AS SELECT unnest(string_split($ids, ',')) AS profile_id",
            {"ids": ",".join(members)},
        )
        return
    table = pa.table({"profile_id": pa.array(members, type=pa.string())})
    con.register("seg_members_in", table)
    con.execute("CREATE TEMP TABLE seg_members AS SELECT profile_id FROM seg_members_in")
    con.unregister("seg_members_in")
