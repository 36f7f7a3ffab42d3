"""The insights: journeys, funnels, attribution, experience (NPS/CSAT), RFM, cohort retention, CLV.

Each insight is SQL over the views of views.py (the contract) followed by the same steps:

1. check the request (event names that exist, a non-empty period, known segments, k at or above the
   floor, a budget within the limits) — a bad request raises ``InsightError`` before anything runs;
2. with ``dp``, charge the privacy budget (dp.py) — refused, nothing is computed;
3. run the SQL on the engine (DuckDB, or Spark with ``--engine spark``; candor.engines) over the
   analytics store (only profiles with ``analytics`` consent are in the views), build the tables of
   cells; everything after this step is the same whichever engine ran it;
4. with ``dp``, add noise to every count, sum and mean;
5. suppress small cells (privacy.py) and say how many were suppressed.

``Insights.run(name, params)`` returns the released report (JSON-ready); ``Insights.compute(name,
params)`` returns the tables before suppression, for the tests that compare them with a brute-force
computation.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from candor.insights import dp as dpmod
from candor.insights import privacy, views
from candor.insights.privacy import Group, Table
from candor.segments import rfm_case
from candor.store import now_ms

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MAX_STEPS = 6
MAX_DP_STEPS = 4
MAX_FUNNEL_STEPS = 8
MAX_SEGMENTS = 10
MAX_DAYS = 3650
INSIGHTS = ("journeys", "funnel", "attribution", "experience", "rfm", "cohorts", "clv")
RFM_SEGMENTS = ("champions", "loyal", "potential", "new", "at_risk", "hibernating", "lost")
CLV_BANDS = ((0.0, 50.0), (50.0, 200.0), (200.0, 500.0), (500.0, 1000.0), (1000.0, math.inf))
SURVEY_EVENT = "Survey Answered"


class InsightError(ValueError):
    """A bad request: ``field`` names the parameter; nothing was computed or released."""

    def __init__(self, message: str, field: str = "", status: int = 400, code: str = "") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = message
        self.status = status
        self.code = code or {404: "not_found", 409: "conflict"}.get(status, "invalid_insight")


# -- reading a request ------------------------------------------------------------------------------
def _ms(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise InsightError("must be a date (YYYY-MM-DD), a date-time or epoch milliseconds", name)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            if len(value) == 10:
                d = date.fromisoformat(value)
                return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return int((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp() * 1000)
        except ValueError:
            pass
    raise InsightError("must be a date (YYYY-MM-DD), a date-time or epoch milliseconds", name)


def _int(p: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    v = p.get(name, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise InsightError(f"must be a whole number from {lo} to {hi:,}", name)
    return v


def _num(p: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    v = p.get(name, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
        raise InsightError(f"must be a number from {lo:g} to {hi:g}", name)
    return float(v)


def _choice(p: dict[str, Any], name: str, default: str, allowed: Sequence[str]) -> str:
    v = p.get(name, default)
    if v not in allowed:
        raise InsightError(f"must be one of {', '.join(allowed)}", name)
    return str(v)


def _name(p: dict[str, Any], name: str, default: str | None = None) -> str:
    v = p.get(name, default)
    if not isinstance(v, str) or not v.strip() or len(v) > 200:
        raise InsightError("must be an event name (1 to 200 characters)", name)
    return v


@dataclass
class Request:
    insight: str
    params: dict[str, Any]
    since: int
    until: int
    k: int
    segments: list[str] = field(default_factory=list)
    epsilon: float | None = None
    revenue_cap: float = 500.0
    max_conversions: int = 10
    segment_sets: dict[str, set[str]] = field(default_factory=dict)
    everyone: set[str] | None = None


KNOWN_PARAMS = {
    "journeys": {"goal", "window_days", "max_steps", "top"},
    "funnel": {"steps", "window_days", "by"},
    "attribution": {"conversion", "window_days", "by", "half_life_days"},
    "experience": {"event", "by"},
    "rfm": {"event"},
    "cohorts": {"event", "periods"},
    "clv": {"event", "horizon_months"},
}
COMMON = {"since", "until", "k", "segments", "dp"}


# -- the service ------------------------------------------------------------------------------------
class Insights:
    """``rt`` is the Runtime (app.py): settings, analytics, segments, taxonomy, consent, store."""

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        s = rt.settings
        self.k_default = s.insights_min_profiles
        self.channels = views.parse_source_channels(s.source_channels)
        self.ledger = dpmod.Ledger(rt.store, s.dp_epsilon_per_month, s.dp_epsilon_per_request)
        # where the SQL runs: None is DuckDB; a candor.engines engine (``--engine spark``) otherwise
        self.engine: Any = None

    def workspace(self) -> Any:
        """A workspace over the analytics lake on this service's engine (candor.engines)."""
        from candor.engines import DuckDBEngine

        engine = self.engine if self.engine is not None else DuckDBEngine(self.rt.settings)
        return engine.workspace(self.rt.analytics, tables=views.READS)

    # request checks
    def request(self, insight: str, params: Any) -> Request:
        if insight not in INSIGHTS:
            raise InsightError(f"unknown insight {insight!r}; one of {', '.join(INSIGHTS)}", "insight", 404)
        if not isinstance(params, dict):
            raise InsightError("the request body must be a JSON object")
        unknown = sorted(set(params) - COMMON - KNOWN_PARAMS[insight])
        if unknown:
            allowed = ", ".join(sorted(COMMON | KNOWN_PARAMS[insight]))
            raise InsightError(f"unknown parameter {unknown[0]!r}; expected {allowed}", unknown[0])
        now = now_ms()
        until = _ms(params.get("until", now), "until")
        since = _ms(params.get("since", until - 90 * DAY_MS), "since")
        if since >= until:
            raise InsightError("the period is empty: since must be before until", "since")
        if until - since > MAX_DAYS * DAY_MS:
            raise InsightError(f"the period may be at most {MAX_DAYS:,} days", "since")
        k = privacy.check_k(params.get("k"), self.k_default)
        segs = params.get("segments", [])
        if not isinstance(segs, list) or len(segs) > MAX_SEGMENTS or not all(isinstance(x, str) for x in segs):
            raise InsightError(f"must be a list of at most {MAX_SEGMENTS} segment names", "segments")
        for i, name in enumerate(segs):
            if self.rt.segments.get(name) is None:
                raise InsightError(f"no segment named {name!r}", f"segments[{i}]", 404)
        req = Request(insight, params, since, until, k, list(dict.fromkeys(segs)))
        d = params.get("dp")
        if d is not None:
            if not isinstance(d, dict) or set(d) - {"epsilon", "revenue_cap", "max_conversions"}:
                raise InsightError("must be an object with epsilon (and optionally revenue_cap, max_conversions)", "dp")
            try:
                req.epsilon = self.ledger.check_request(d.get("epsilon"))
            except dpmod.BudgetError as exc:
                raise InsightError(str(exc), "dp.epsilon") from None
            req.revenue_cap = _num(d, "revenue_cap", 500.0, 0.01, 1e9)
            req.max_conversions = _int(d, "max_conversions", 10, 1, 1000)
        return req

    def _names(self, con: Any, req: Request, names: Sequence[tuple[str, str]]) -> None:
        """Every event name a request names exists in the analytics store (any time, any profile)."""
        wanted = sorted({n for n, _ in names})
        if not wanted:
            return
        found = {
            r[0]
            for r in con.execute(
                "SELECT DISTINCT event FROM events WHERE event IN (SELECT unnest($n))", {"n": wanted}
            ).fetchall()
        }
        for n, where in names:
            if n not in found:
                raise InsightError(f"unknown event name {n!r}: no event of that name was ever received", where)

    # running
    def compute(self, insight: str, params: Any, *, now: int | None = None) -> tuple[Request, list[Table]]:
        """The tables before suppression (and without noise): for tests and for ``run``."""
        req = self.request(insight, params)
        return req, self._tables(req, now)

    def _tables(self, req: Request, now: int | None, charge: Callable[[], None] | None = None) -> list[Table]:
        members: list[tuple[str, list[str]]] = []
        for name in req.segments:
            members.append((name, self.rt.segments.evaluate(name, now=now)))
        req.params = dict(req.params)
        at = now if now is not None else now_ms()

        def setup(con: Any) -> None:
            views.install(
                con,
                source_channels=self.channels,
                default_jurisdiction=self.rt.consent.default_jurisdiction,
                now=at,
                analytics_purpose=self.rt.taxonomy.get("analytics"),
                segments=members,
            )

        builder = BUILDERS[req.insight]
        con = self.workspace()
        try:
            setup(con)
            builder.check(self, con, req)
            active = con.execute(
                "SELECT count(*) FROM ins_events WHERE ts_ms >= $s AND ts_ms < $u", {"s": req.since, "u": req.until}
            ).fetchone()
            if not active or not active[0]:
                raise InsightError(
                    "no events of profiles that agreed to analytics in this period: nothing to report", "since"
                )
            if charge is not None:  # the request is sound: now the budget (refused: nothing computed)
                charge()
            tables = builder.build(self, con, req)
            # the allowed members of each segment, for the rule against differencing (kept on the request:
            # requests run concurrently)
            req.segment_sets = {
                name: {
                    r[0]
                    for r in con.execute(
                        "SELECT DISTINCT s.profile_id FROM ins_segments s JOIN ins_allowed a USING (profile_id) "
                        "WHERE s.segment = $n",
                        {"n": name},
                    ).fetchall()
                }
                for name in req.segments
            }
            req.everyone = (
                {r[0] for r in con.execute("SELECT profile_id FROM ins_allowed").fetchall()} if req.segments else None
            )
        finally:
            con.close()
        return tables

    def run(
        self,
        insight: str,
        params: Any,
        *,
        actor: str = "system",
        now: int | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        req = self.request(insight, params)
        months = dpmod.windows(req.since, req.until) if req.epsilon is not None else []

        def charge() -> None:
            assert req.epsilon is not None
            try:
                self.ledger.charge(req.epsilon, months, insight=insight, actor=actor)
            except dpmod.BudgetError as exc:
                code = "budget_exhausted" if exc.status == 409 else ""
                raise InsightError(str(exc), "dp.epsilon", exc.status, code) from None

        if progress:
            progress(insight)
        tables = self._tables(req, now, charge if req.epsilon is not None else None)
        spent = 0.0
        if req.epsilon is not None:
            spent = add_noise(tables, req.epsilon)
        counts = privacy.Suppressed()
        for t in tables:
            s = privacy.suppress(t, req.k, req.segment_sets, req.everyone)
            counts.primary += s.primary
            counts.complementary += s.complementary
            counts.differencing += s.differencing
        out: dict[str, Any] = {
            "insight": insight,
            "period": {"since": _iso(req.since), "until": _iso(req.until)},
            "params": {k: v for k, v in req.params.items() if k not in ("since", "until", "dp")},
            "k": req.k,
            "suppressed_cells": counts.as_json(),
            "tables": [t.public() for t in tables],
            "seconds": round(time.perf_counter() - started, 3),
        }
        if req.epsilon is not None:
            out["dp"] = {
                "epsilon": req.epsilon,
                "epsilon_used": round(spent, 6),
                "mechanism": "laplace (OpenDP)",
                "revenue_cap": req.revenue_cap,
                "max_conversions": req.max_conversions,
            }
        return out


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _month(ms: int) -> str:
    d = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return f"{d.year:04d}-{d.month:02d}"


def add_noise(tables: list[Table], epsilon: float) -> float:
    """Laplace noise on every count, DP sum and DP mean of every table; returns the epsilon used."""
    jobs = [(t, "profiles") for t in tables] + [(t, m) for t in tables for m in t.dp_sums]
    share = epsilon / max(1, len(jobs))
    used = 0.0
    for t in tables:
        sens = float(t.dp_sums.get("_profiles", 1.0))
        noisy, e = dpmod.laplace([float(c.profiles) for c in t.cells], sens, share, integer=True)
        used += e
        for c, v in zip(t.cells, noisy, strict=True):
            c.profiles = max(0, round(v))
        for m, sens_m in t.dp_sums.items():
            if m == "_profiles":
                continue
            noisy, e = dpmod.laplace([float(c.values.get(m) or 0.0) for c in t.cells], sens_m, share, integer=False)
            used += e
            for c, v in zip(t.cells, noisy, strict=True):
                c.values[m] = round(v, 2)
        for m, (num, den) in t.dp_means.items():
            for c in t.cells:
                n, d = c.values.get(num), c.values.get(den) if den != "profiles" else c.profiles
                c.values[m] = round(float(n) / float(d), 4) if n is not None and d and float(d) > 0 else None
        for c in t.cells:  # measures without a DP form are not released under DP
            for m in list(c.values):
                if m not in t.dp_sums and m not in t.dp_means and m not in t.dp_keep:
                    c.values[m] = None
            if t.derive is not None:
                t.derive(c)
    return used


# -- the builders -----------------------------------------------------------------------------------
class Builder:
    def check(self, ins: Insights, con: Any, req: Request) -> None:
        pass

    def build(self, ins: Insights, con: Any, req: Request) -> list[Table]:
        raise NotImplementedError

    @staticmethod
    def sql(req: Request) -> list[str]:  # the texts, for the Spark-portability test
        return []


def _fetch(con: Any, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in con.execute(sql, params).fetchall()]


# journeys --------------------------------------------------------------------------------------------
JOURNEYS_SQL = """
WITH conv AS (
    SELECT profile_id, min(ts_ms) AS t FROM ins_events
    WHERE type = 'track' AND event = $goal AND ts_ms >= $since AND ts_ms < $until
    GROUP BY profile_id
),
pop AS (
    SELECT profile_id FROM ins_touchpoints WHERE ts_ms >= $since AND ts_ms < $until
    UNION SELECT profile_id FROM conv
),
scope AS (
    SELECT p.profile_id, c.t AS conv_t, coalesce(c.t, $until) AS ref_t
    FROM pop p LEFT JOIN conv c ON c.profile_id = p.profile_id
),
tp AS (
    SELECT s.profile_id, t.ts_ms, t.channel
    FROM scope s JOIN ins_touchpoints t ON t.profile_id = s.profile_id
    WHERE t.ts_ms < s.ref_t AND t.ts_ms >= s.ref_t - $win AND coalesce(t.event, '') <> $goal
),
ded AS (
    SELECT profile_id, ts_ms, channel FROM (
        SELECT profile_id, ts_ms, channel,
               lag(channel) OVER (PARTITION BY profile_id ORDER BY ts_ms, channel) AS prev
        FROM tp) x
    WHERE prev IS NULL OR prev <> channel
),
kept AS (
    SELECT profile_id, ts_ms, channel FROM (
        SELECT profile_id, ts_ms, channel,
               row_number() OVER (PARTITION BY profile_id ORDER BY ts_ms DESC, channel DESC) AS b
        FROM ded) x
    WHERE b <= $steps
),
numbered AS (
    SELECT profile_id, ts_ms, channel,
           row_number() OVER (PARTITION BY profile_id ORDER BY ts_ms, channel) AS n
    FROM kept
),
paths AS (
    SELECT profile_id,
           concat_ws(' > ', max(CASE WHEN n = 1 THEN channel END), max(CASE WHEN n = 2 THEN channel END),
                     max(CASE WHEN n = 3 THEN channel END), max(CASE WHEN n = 4 THEN channel END),
                     max(CASE WHEN n = 5 THEN channel END), max(CASE WHEN n = 6 THEN channel END)) AS path,
           count(*) AS steps, min(ts_ms) AS first_t, max(ts_ms) AS last_t
    FROM numbered GROUP BY profile_id
),
per AS (
    SELECT s.profile_id, coalesce(p.path, '(no touchpoint)') AS path, s.conv_t IS NOT NULL AS converted,
           CASE WHEN p.steps > 1 THEN (p.last_t - p.first_t) / (p.steps - 1) / 3600000.0 END AS gap_h,
           CASE WHEN s.conv_t IS NOT NULL AND p.first_t IS NOT NULL THEN (s.conv_t - p.first_t) / 3600000.0 END
               AS to_goal_h
    FROM scope s LEFT JOIN paths p ON p.profile_id = s.profile_id
)
SELECT path, converted, count(*) AS profiles, sum(gap_h) AS sum_gap, count(gap_h) AS n_gap,
       sum(to_goal_h) AS sum_goal, count(to_goal_h) AS n_goal
FROM per GROUP BY path, converted
"""


def channel_paths(steps: int) -> list[str]:
    """Every path of up to ``steps`` channels without a channel twice in a row (DP's public key set)."""
    out = ["(no touchpoint)"]
    for n in range(1, steps + 1):
        for combo in itertools.product(views.CHANNELS, repeat=n):
            if all(a != b for a, b in itertools.pairwise(combo)):
                out.append(" > ".join(combo))
    return out


class Journeys(Builder):
    def check(self, ins: Insights, con: Any, req: Request) -> None:
        p = req.params
        req.params["goal"] = _name(p, "goal")
        req.params["window_days"] = _int(p, "window_days", 30, 1, 365)
        limit = MAX_DP_STEPS if req.epsilon is not None else MAX_STEPS
        req.params["max_steps"] = _int(p, "max_steps", 4, 1, limit)
        req.params["top"] = _int(p, "top", 20, 1, 1000)
        ins._names(con, req, [(req.params["goal"], "goal")])

    @staticmethod
    def sql(req: Request) -> list[str]:
        return [JOURNEYS_SQL]

    def build(self, ins: Insights, con: Any, req: Request) -> list[Table]:
        p = req.params
        rows = _fetch(
            con,
            JOURNEYS_SQL,
            {
                "goal": p["goal"],
                "since": req.since,
                "until": req.until,
                "win": p["window_days"] * DAY_MS,
                "steps": p["max_steps"],
            },
        )
        acc: dict[tuple[str, bool], list[float]] = {}
        for path, converted, n, sg, ng, sgo, ngo in rows:
            acc[(path, bool(converted))] = [n, sg or 0.0, ng, sgo or 0.0, ngo]
        size: dict[str, float] = {}
        for (path, _), v in acc.items():
            size[path] = size.get(path, 0) + v[0]
        if req.epsilon is not None:  # a public key set: every channel path of up to max_steps
            keep = channel_paths(p["max_steps"])
        else:
            keep = [x for x, _ in sorted(size.items(), key=lambda kv: (-kv[1], kv[0]))[: p["top"]]]
        keep_set = set(keep)
        merged: dict[tuple[str, bool], list[float]] = {}
        for (path, conv), v in acc.items():
            key = (path if path in keep_set else "(other paths)", conv)
            cur = merged.setdefault(key, [0.0] * 5)
            for i in range(5):
                cur[i] += v[i]
        order = keep + (["(other paths)"] if any(k[0] == "(other paths)" for k in merged) else [])
        t = Table(
            "paths",
            f"Paths to {p['goal']} (last {p['max_steps']} channels, {p['window_days']} days before)",
            ["path", "outcome"],
            ["avg_hours_between", "avg_hours_to_goal"],
        )
        t.dp_sums = {"_profiles": 4.0}
        t.dp_keep = set()

        def values(v: list[float]) -> dict[str, Any]:
            return {
                "avg_hours_between": round(v[1] / v[2], 2) if v[2] else None,
                "avg_hours_to_goal": round(v[3] / v[4], 2) if v[4] else None,
            }

        grand = t.add({"path": "(all)", "outcome": "(all)"}, 0, total=True)
        out_tot = {o: t.add({"path": "(all)", "outcome": o}, 0, total=True) for o in ("converted", "not converted")}
        totals = [0.0] * 5
        path_totals = []
        for path in order:
            cells = {}
            tv = [0.0] * 5
            for conv in (True, False):
                v = merged.get((path, conv), [0.0] * 5)
                o = "converted" if conv else "not converted"
                if v[0] == 0 and req.epsilon is None:
                    continue
                cells[o] = t.add({"path": path, "outcome": o}, int(v[0]), **values(v))
                oc = t.cells[out_tot[o]]
                oc.profiles += int(v[0])
                tv = [a + b for a, b in zip(tv, v, strict=True)]
            if not cells:
                continue
            pt = t.add({"path": path, "outcome": "(all)"}, int(tv[0]), total=True, **values(tv))
            path_totals.append(pt)
            totals = [a + b for a, b in zip(totals, tv, strict=True)]
            t.groups.append(Group(list(cells.values()), pt))
        t.cells[grand].profiles = int(totals[0])
        t.cells[grand].values = values(totals)
        for o, idx in out_tot.items():
            t.groups.append(Group([i for i, c in enumerate(t.cells) if c.key["outcome"] == o and not c.total], idx))
        t.groups.append(Group(path_totals, grand))
        t.groups.append(Group(list(out_tot.values()), grand))
        return [t]


# funnel ----------------------------------------------------------------------------------------------
def funnel_sql(n: int, by: str) -> str:
    """First entry per profile into step 1 in the period; each next step is the earliest event of its name
    after the previous step and within the window of the entry. ``by``: the entry's channel, or segments."""
    parts = [
        "s1 AS (SELECT profile_id, min(ts_ms) AS t, min(ts_ms) AS t1, "
        "arg_min(channel, struct_pack(a := ts_ms, b := id)) AS channel "
        "FROM ins_events WHERE type = 'track' AND event = $step1 AND ts_ms >= $since AND ts_ms < $until "
        "GROUP BY profile_id)"
    ]
    for i in range(2, n + 1):
        parts.append(
            f"s{i} AS (SELECT a.profile_id, a.t1, min(e.ts_ms) AS t FROM s{i - 1} a "
            f"JOIN ins_events e ON e.profile_id = a.profile_id AND e.type = 'track' AND e.event = $step{i} "
            f"AND e.ts_ms > a.t AND e.ts_ms <= a.t1 + $win GROUP BY a.profile_id, a.t1)"
        )
    reached = ", ".join(f"CASE WHEN s{i}.profile_id IS NULL THEN 0 ELSE 1 END" for i in range(2, n + 1))
    joins = " ".join(f"LEFT JOIN s{i} ON s{i}.profile_id = s1.profile_id" for i in range(2, n + 1))
    stage = f"1 + {' + '.join(reached.split(', '))}" if n > 1 else "1"
    per = f"per AS (SELECT s1.profile_id, s1.channel, {stage} AS stage FROM s1 {joins})"
    if by == "segment":
        final = (
            "SELECT g.segment AS grp, per.stage, count(*) AS profiles FROM per "
            "JOIN ins_segments g ON g.profile_id = per.profile_id GROUP BY g.segment, per.stage"
        )
    else:
        final = "SELECT channel AS grp, stage, count(*) AS profiles FROM per GROUP BY channel, stage"
    return "WITH " + ",\n".join([*parts, per]) + "\n" + final


class Funnel(Builder):
    def check(self, ins: Insights, con: Any, req: Request) -> None:
        p = req.params
        steps = p.get("steps")
        if not isinstance(steps, list) or not 2 <= len(steps) <= MAX_FUNNEL_STEPS:
            raise InsightError(f"must list 2 to {MAX_FUNNEL_STEPS} event names, in order", "steps")
        for i in range(len(steps)):
            _name({f"steps[{i}]": steps[i]}, f"steps[{i}]")
        req.params["window_days"] = _int(p, "window_days", 7, 1, 365)
        req.params["by"] = _choice(p, "by", "channel", ("channel", "segment"))
        if req.params["by"] == "segment" and not req.segments:
            raise InsightError("by segment needs segments: a list of segment names", "segments")
        ins._names(con, req, [(s, f"steps[{i}]") for i, s in enumerate(steps)])

    @staticmethod
    def sql(req: Request) -> list[str]:
        return [funnel_sql(3, "channel"), funnel_sql(4, "segment")]

    def build(self, ins: Insights, con: Any, req: Request) -> list[Table]:
        p = req.params
        steps: list[str] = p["steps"]
        n, by = len(steps), p["by"]
        params: dict[str, Any] = {f"step{i + 1}": s for i, s in enumerate(steps)}
        params.update(since=req.since, until=req.until, win=p["window_days"] * DAY_MS)
        rows = _fetch(con, funnel_sql(n, by), params)
        counts: dict[tuple[str, int], int] = {(str(g), int(s)): int(c) for g, s, c in rows}
        stages = [f"dropped after {i}: {steps[i - 1]}" for i in range(1, n)] + ["completed"]
        if req.epsilon is not None:
            groups = list(views.CHANNELS) if by == "channel" else list(req.segments)
        else:
            groups = sorted(
                {g for g, _ in counts}, key=lambda g: (-sum(v for (x, _), v in counts.items() if x == g), g)
            )
        dim = "channel" if by == "channel" else "segment"
        t = Table("funnel", f"Funnel {' → '.join(steps)} within {p['window_days']} days, by {dim}", [dim, "stage"], [])
        t.segment_dim = "segment" if by == "segment" else None
        t.dp_keep = set()
        # one profile: one stage cell and one total per group it is in (channel: one; segments: up to all)
        reach = 1 if by == "channel" else max(1, len(req.segments))
        t.dp_sums = {"_profiles": float(2 * reach + (2 if by == "channel" else 0))}
        col_tot: dict[int, int] = {}
        stage_cells: dict[int, list[int]] = {s: [] for s in range(1, n + 1)}
        group_totals = []
        for g in groups:
            members = []
            total = 0
            for s in range(1, n + 1):
                c = counts.get((g, s), 0)
                if c == 0 and req.epsilon is None:
                    continue
                idx = t.add({dim: g, "stage": stages[s - 1]}, c)
                members.append(idx)
                stage_cells[s].append(idx)
                total += c
            if not members:
                continue
            gt = t.add({dim: g, "stage": "entered"}, total, total=True)
            group_totals.append(gt)
            t.groups.append(Group(members, gt))
        if by == "channel":  # the channels partition everyone who entered: column totals are released
            for s in range(1, n + 1):
                col_tot[s] = t.add(
                    {dim: "(all)", "stage": stages[s - 1]}, sum(t.cells[i].profiles for i in stage_cells[s]), total=True
                )
                t.groups.append(Group(stage_cells[s], col_tot[s]))
            grand = t.add(
                {dim: "(all)", "stage": "entered"}, sum(t.cells[i].profiles for i in group_totals), total=True
            )
            t.groups.append(Group(group_totals, grand))
            t.groups.append(Group(list(col_tot.values()), grand))
        return [t]


# attribution -----------------------------------------------------------------------------------------
# each profile's conversions: with differential privacy only the first $maxconv count (the contribution
# bound); without it nothing is capped, so the window is not computed ($maxconv is still bound)
_CONV_CAPPED = """
WITH conv AS (
    SELECT profile_id, id, ts_ms, least(coalesce(revenue, 0), $cap) AS revenue FROM (
        SELECT profile_id, id, ts_ms, revenue,
               row_number() OVER (PARTITION BY profile_id ORDER BY ts_ms, id) AS r
        FROM ins_events WHERE type = 'track' AND event = $conversion AND ts_ms >= $since AND ts_ms < $until) x
    WHERE r <= $maxconv
),"""
_CONV_ALL = """
WITH conv AS (
    SELECT profile_id, id, ts_ms, least(coalesce(revenue, 0), $cap) AS revenue
    FROM ins_events WHERE type = 'track' AND event = $conversion AND ts_ms >= $since AND ts_ms < $until
        AND $maxconv > 0
),"""
_ATTRIBUTION = """
tp AS (
    SELECT c.profile_id, c.id AS conv_id, c.revenue, t.ts_ms, c.ts_ms - t.ts_ms AS age,
           coalesce(CASE WHEN $by = 'campaign' THEN t.campaign ELSE t.channel END, '(none)') AS grp,
           row_number() OVER (PARTITION BY c.id ORDER BY t.ts_ms, t.channel) AS first_rank,
           row_number() OVER (PARTITION BY c.id ORDER BY t.ts_ms DESC, t.channel DESC) AS last_rank,
           count(*) OVER (PARTITION BY c.id) AS n,
           pow(0.5, (c.ts_ms - t.ts_ms) / $half) AS w
    FROM conv c JOIN ins_touchpoints t ON t.profile_id = c.profile_id
    WHERE t.ts_ms < c.ts_ms AND t.ts_ms >= c.ts_ms - $win AND coalesce(t.event, '') <> $conversion
),
credit AS (
    SELECT profile_id, conv_id, revenue, grp,
           CASE WHEN first_rank = 1 THEN 1.0 ELSE 0.0 END AS first_touch,
           CASE WHEN last_rank = 1 THEN 1.0 ELSE 0.0 END AS last_touch,
           1.0 / n AS linear,
           w / sum(w) OVER (PARTITION BY conv_id) AS time_decay
    FROM tp
    UNION ALL
    SELECT c.profile_id, c.id, c.revenue, '(direct)', 1.0, 1.0, 1.0, 1.0
    FROM conv c WHERE NOT EXISTS (SELECT 1 FROM tp WHERE tp.conv_id = c.id)  -- no touchpoint in the window
)
SELECT grp, count(DISTINCT profile_id) AS profiles,
       sum(first_touch) AS first_touch, sum(last_touch) AS last_touch, sum(linear) AS linear,
       sum(time_decay) AS time_decay,
       sum(first_touch * revenue) AS first_touch_revenue, sum(last_touch * revenue) AS last_touch_revenue,
       sum(linear * revenue) AS linear_revenue, sum(time_decay * revenue) AS time_decay_revenue
FROM credit GROUP BY grp
"""
ATTRIBUTION_SQL = _CONV_CAPPED + _ATTRIBUTION
ATTRIBUTION_SQL_UNCAPPED = _CONV_ALL + _ATTRIBUTION
MODELS = ("first_touch", "last_touch", "linear", "time_decay")


class Attribution(Builder):
    def check(self, ins: Insights, con: Any, req: Request) -> None:
        p = req.params
        req.params["conversion"] = _name(p, "conversion", "Order Completed")
        req.params["window_days"] = _int(p, "window_days", 30, 1, 365)
        req.params["by"] = _choice(p, "by", "channel", ("channel", "campaign"))
        req.params["half_life_days"] = _num(p, "half_life_days", 7.0, 0.01, 365.0)
        ins._names(con, req, [(req.params["conversion"], "conversion")])

    @staticmethod
    def sql(req: Request) -> list[str]:
        return [ATTRIBUTION_SQL if req.epsilon is not None else ATTRIBUTION_SQL_UNCAPPED]

    def build(self, ins: Insights, con: Any, req: Request) -> list[Table]:
        p = req.params
        dp_on = req.epsilon is not None
        params = {
            "conversion": p["conversion"],
            "since": req.since,
            "until": req.until,
            "by": p["by"],
            "win": p["window_days"] * DAY_MS,
            "half": p["half_life_days"] * DAY_MS,
            "cap": req.revenue_cap if dp_on else 1e300,
            "maxconv": req.max_conversions if dp_on else 2**62,
        }
        rows = _fetch(con, ATTRIBUTION_SQL if dp_on else ATTRIBUTION_SQL_UNCAPPED, params)
        got = {str(r[0]): r for r in rows}
        if dp_on:
            if p["by"] == "channel":
                keys = [*views.CHANNELS, "(direct)"]
            else:
                keys = [
                    *[r[0] for r in con.execute("SELECT name FROM main.campaigns ORDER BY name").fetchall()],
                    "(none)",
                    "(direct)",
                ]
        else:
            keys = sorted(got, key=lambda g: (-(got[g][4] or 0), g))
        measures = [*MODELS, *(f"{m}_revenue" for m in MODELS)]
        dim = p["by"]
        t = Table(
            "attribution",
            f"Conversions ({p['conversion']}) and revenue credited by {dim}, four models",
            [dim],
            measures,
        )
        t.dp_keep = set()
        # one profile: up to max_conversions conversions, each giving 1 (revenue_cap) of credit per model, over
        # at most every group; its count reaches every group plus the total
        groups_reach = len(keys) + 1
        t.dp_sums = {"_profiles": float(groups_reach)}
        for m in MODELS:
            t.dp_sums[m] = 2.0 * req.max_conversions
            t.dp_sums[f"{m}_revenue"] = 2.0 * req.max_conversions * req.revenue_cap
        members = []
        totals = dict.fromkeys(measures, 0.0)
        for g in keys:
            r = got.get(g)
            if r is None and not dp_on:
                continue
            vals = {m: round(float(r[2 + i] or 0.0), 4) if r else 0.0 for i, m in enumerate(measures)}
            for m in measures:
                totals[m] += vals[m]
            members.append(t.add({dim: g}, int(r[1]) if r else 0, **vals))
        everyone = con.execute(
            "SELECT count(DISTINCT profile_id) FROM ins_events WHERE type = 'track' AND event = $c "
            "AND ts_ms >= $s AND ts_ms < $u",
            {"c": p["conversion"], "s": req.since, "u": req.until},
        ).fetchone()
        total = t.add(
            {dim: "(all)"},
            int(everyone[0] if everyone else 0),
            total=True,
            **{m: round(v, 4) for m, v in totals.items()},
        )
        t.groups.append(Group(members, total, exclusive=False))
        return [t]


# experience: NPS and CSAT ------------------------------------------------------------------------------
EXPERIENCE_SQL = """
WITH answers AS (
    SELECT profile_id, id, ts_ms, channel,
           lower(coalesce(json_extract_string(properties, '$.survey_type'),
                 CASE WHEN json_extract_string(properties, '$.nps') IS NOT NULL THEN 'nps'
                      WHEN json_extract_string(properties, '$.csat') IS NOT NULL THEN 'csat' END)) AS kind,
           TRY_CAST(coalesce(json_extract_string(properties, '$.score'), json_extract_string(properties, '$.nps'),
                             json_extract_string(properties, '$.csat')) AS DOUBLE) AS score,
           coalesce(json_extract_string(properties, '$.touchpoint'), channel) AS touchpoint
    FROM ins_events WHERE type = 'track' AND event = $event AND ts_ms >= $since AND ts_ms < $until
),
valid AS (
    SELECT * FROM answers
    WHERE (kind = 'nps' AND score BETWEEN 0 AND 10 AND score = floor(score))
       OR (kind = 'csat' AND score BETWEEN 1 AND 5 AND score = floor(score))
),
keyed AS (
    SELECT v.*, CASE $by WHEN 'channel' THEN channel WHEN 'touchpoint' THEN touchpoint
                WHEN 'month' THEN strftime(to_timestamp(ts_ms / 1000), '%Y-%m') END AS grp
    FROM valid v
),
grouped AS (
    SELECT k.*, g.segment FROM keyed k JOIN ins_segments g ON g.profile_id = k.profile_id WHERE $by = 'segment'
    UNION ALL
    SELECT k.*, NULL AS segment FROM keyed k WHERE $by <> 'segment'
),
latest AS (
    SELECT * FROM (
        SELECT *, row_number() OVER (PARTITION BY profile_id, kind, coalesce(segment, grp)
                                     ORDER BY ts_ms DESC, id DESC) AS r
        FROM grouped) x
    WHERE r <= $per_profile
)
SELECT coalesce(segment, grp) AS grp, kind, count(DISTINCT profile_id) AS profiles, count(*) AS responses,
       sum(CASE WHEN kind = 'nps' AND score >= 9 THEN 1 ELSE 0 END) AS promoters,
       sum(CASE WHEN kind = 'nps' AND score <= 6 THEN 1 ELSE 0 END) AS detractors,
       sum(CASE WHEN kind = 'csat' AND score >= 4 THEN 1 ELSE 0 END) AS satisfied,
       sum(score) AS score_sum
FROM latest GROUP BY coalesce(segment, grp), kind
"""


def _nps(c: Any) -> None:
    """NPS, CSAT and the mean score of a cell, from its counts (again after noise)."""
    v = c.values
    n = v.get("responses") or 0
    if "nps" in v:
        v["nps"] = round(100.0 * ((v.get("promoters") or 0) - (v.get("detractors") or 0)) / n, 1) if n > 0 else None
    if "csat_pct" in v:
        v["csat_pct"] = round(100.0 * (v.get("satisfied") or 0) / n, 1) if n > 0 else None
    v["avg_score"] = round((v.get("_score_sum") or 0) / n, 2) if n > 0 else None


class Experience(Builder):
    def check(self, ins: Insights, con: Any, req: Request) -> None:
        p = req.params
        req.params["event"] = _name(p, "event", SURVEY_EVENT)
        req.params["by"] = _choice(p, "by", "channel", ("channel", "touchpoint", "month", "segment"))
        if req.epsilon is not None and req.params["by"] == "touchpoint":
            raise InsightError("with dp, break down by channel, month or segment (touchpoints are free text)", "by")
        if req.params["by"] == "segment" and not req.segments:
            raise InsightError("by segment needs segments: a list of segment names", "segments")
        ins._names(con, req, [(req.params["event"], "event")])

    @staticmethod
    def sql(req: Request) -> list[str]:
        return [EXPERIENCE_SQL]

    def build(self, ins: Insights, con: Any, req: Request) -> list[Table]:
        p = req.params
        dp_on = req.epsilon is not None
        rows = _fetch(
            con,
            EXPERIENCE_SQL,
            {
                "event": p["event"],
                "since": req.since,
                "until": req.until,
                "by": p["by"],
                "per_profile": 1 if dp_on else 2**62,
            },
        )
        by = p["by"]
        out = []
        for kind, title in (("nps", "Net Promoter Score"), ("csat", "Customer satisfaction (CSAT)")):
            got = {str(r[0]): r for r in rows if r[1] == kind}
            if dp_on:
                if by == "channel":
                    keys = list(views.CHANNELS)
                elif by == "month":
                    keys = sorted({_month(m) for m in range(req.since, req.until, DAY_MS)} | {_month(req.until - 1)})
                else:
                    keys = list(req.segments)
            else:
                keys = sorted(got)
            if not keys or (not got and not dp_on):
                continue
            counts_m = ["responses", "promoters", "detractors"] if kind == "nps" else ["responses", "satisfied"]
            measures = [*counts_m, "nps" if kind == "nps" else "csat_pct", "avg_score"]
            t = Table(kind, f"{title} by {by}", [by], measures)
            t.segment_dim = by if by == "segment" else None
            t.derive = _nps
            reach = len(keys) + 1  # one answer per profile and cell under dp; a profile reaches every cell
            t.dp_sums = {
                "_profiles": float(reach),
                **dict.fromkeys(counts_m, float(reach)),
                "_score_sum": float(reach * (10 if kind == "nps" else 5)),
            }
            members = []
            tot = dict.fromkeys([*counts_m, "_score_sum"], 0.0)
            for g in keys:
                r = got.get(g)
                raw = {
                    "responses": float(r[3]) if r else 0.0,
                    "promoters": float(r[4] or 0) if r else 0.0,
                    "detractors": float(r[5] or 0) if r else 0.0,
                    "satisfied": float(r[6] or 0) if r else 0.0,
                    "_score_sum": float(r[7] or 0) if r else 0.0,
                }
                vals = {m: raw[m] for m in tot}
                for m in tot:
                    tot[m] += vals[m]
                idx = t.add({by: g}, int(r[2]) if r else 0, **vals, **{measures[-2]: None, "avg_score": None})
                _nps(t.cells[idx])
                members.append(idx)
            if by != "segment":
                everyone = con.execute(
                    "SELECT count(DISTINCT profile_id) FROM ins_events WHERE type = 'track' AND event = $e AND "
                    "ts_ms >= $s AND ts_ms < $u",
                    {"e": p["event"], "s": req.since, "u": req.until},
                ).fetchone()
                total = t.add(
                    {by: "(all)"},
                    int(everyone[0]) if everyone else 0,
                    total=True,
                    **tot,
                    **{measures[-2]: None, "avg_score": None},
                )
                _nps(t.cells[total])
                t.groups.append(Group(members, total, exclusive=False))
            out.append(t)
        if not out:
            raise InsightError(
                f"no valid answers to {p['event']!r} in this period (score 0-10 for NPS, 1-5 for "
                "CSAT, and survey_type, nps or csat)",
                "event",
            )
        return out


# RFM ---------------------------------------------------------------------------------------------------
RFM_SQL = """
WITH orders AS (
    SELECT profile_id, max(ts_ms) AS last_t, count(*) AS frequency, sum(coalesce(revenue, 0)) AS monetary
    FROM ins_events WHERE type = 'track' AND event = $event AND ts_ms >= $since AND ts_ms < $until
    GROUP BY profile_id
),
scored AS (
    SELECT profile_id, ($until - last_t) / 86400000.0 AS recency_days, frequency, monetary,
           ntile(5) OVER (ORDER BY last_t, profile_id) AS r,
           ntile(5) OVER (ORDER BY frequency, profile_id) AS f,
           ntile(5) OVER (ORDER BY monetary, profile_id) AS m
    FROM orders
),
named AS (
    SELECT *, {rfm_case} AS rfm_segment
    FROM scored
)
SELECT rfm_segment, count(*) AS profiles, sum(recency_days), sum(frequency), sum(monetary)
FROM named GROUP BY rfm_segment
""".replace("{rfm_case}", rfm_case("r", "f"))


class Rfm(Builder):
    def check(self, ins: Insights, con: Any, req: Request) -> None:
        req.params["event"] = _name(req.params, "event", "Order Completed")
        ins._names(con, req, [(req.params["event"], "event")])

    @staticmethod
    def sql(req: Request) -> list[str]:
        return [RFM_SQL]

    def build(self, ins: Insights, con: Any, req: Request) -> list[Table]:
        rows = _fetch(con, RFM_SQL, {"event": req.params["event"], "since": req.since, "until": req.until})
        got = {str(r[0]): r for r in rows}
        t = Table(
            "rfm",
            "RFM segments (quintiles of recency, frequency and monetary value)",
            ["rfm_segment"],
            ["avg_recency_days", "avg_orders", "avg_revenue", "revenue"],
        )
        t.dp_keep = set()
        t.dp_sums = {"_profiles": 2.0}
        members = []
        tot = [0.0, 0.0, 0.0, 0.0]
        for name in RFM_SEGMENTS:
            r = got.get(name)
            if r is None and req.epsilon is None:
                continue
            n, rs, fs, ms = (float(r[1]), float(r[2]), float(r[3]), float(r[4] or 0)) if r else (0.0, 0.0, 0.0, 0.0)
            tot = [tot[0] + n, tot[1] + rs, tot[2] + fs, tot[3] + ms]
            members.append(
                t.add(
                    {"rfm_segment": name},
                    int(n),
                    avg_recency_days=round(rs / n, 1) if n else None,
                    avg_orders=round(fs / n, 2) if n else None,
                    avg_revenue=round(ms / n, 2) if n else None,
                    revenue=round(ms, 2),
                )
            )
        n = tot[0]
        total = t.add(
            {"rfm_segment": "(all)"},
            int(n),
            total=True,
            avg_recency_days=round(tot[1] / n, 1) if n else None,
            avg_orders=round(tot[2] / n, 2) if n else None,
            avg_revenue=round(tot[3] / n, 2) if n else None,
            revenue=round(tot[3], 2),
        )
        t.groups.append(Group(members, total))
        return [t]


# cohorts -----------------------------------------------------------------------------------------------
COHORTS_SQL = """
WITH acts AS (
    SELECT profile_id, ts_ms FROM ins_events
    WHERE ts_ms < $until AND ($event = '*' OR event = $event) AND type NOT IN ('identify', 'alias', 'group')
),
firsts AS (
    SELECT profile_id, min(ts_ms) AS first_t FROM acts GROUP BY profile_id
),
cohort AS (
    SELECT profile_id, first_t,
           CAST(strftime(to_timestamp(first_t / 1000), '%Y') AS INTEGER) * 12
             + CAST(strftime(to_timestamp(first_t / 1000), '%m') AS INTEGER) - 1 AS c
    FROM firsts WHERE first_t >= $since
),
active AS (
    SELECT DISTINCT a.profile_id, k.c,
           CAST(strftime(to_timestamp(a.ts_ms / 1000), '%Y') AS INTEGER) * 12
             + CAST(strftime(to_timestamp(a.ts_ms / 1000), '%m') AS INTEGER) - 1 - k.c AS offset_m
    FROM acts a JOIN cohort k ON k.profile_id = a.profile_id
)
SELECT c, offset_m, count(*) AS profiles FROM active WHERE offset_m <= $periods GROUP BY c, offset_m
"""


class Cohorts(Builder):
    def check(self, ins: Insights, con: Any, req: Request) -> None:
        p = req.params
        req.params["event"] = p.get("event", "*")
        if req.params["event"] != "*":
            _name(p, "event")
            ins._names(con, req, [(req.params["event"], "event")])
        req.params["periods"] = _int(p, "periods", 6, 1, 36)

    @staticmethod
    def sql(req: Request) -> list[str]:
        return [COHORTS_SQL]

    def build(self, ins: Insights, con: Any, req: Request) -> list[Table]:
        p = req.params
        rows = _fetch(
            con, COHORTS_SQL, {"event": p["event"], "since": req.since, "until": req.until, "periods": p["periods"]}
        )
        got = {(int(c), int(o)): int(n) for c, o, n in rows}
        cohorts = sorted({c for c, _ in got})
        if req.epsilon is not None:
            first = _month_index(req.since)
            cohorts = list(range(first, _month_index(req.until - 1) + 1))
        last = _month_index(req.until - 1)
        t = Table(
            "retention",
            "Monthly cohorts: share still active (month 0 = the month they arrived)",
            ["cohort", "month"],
            ["retention_pct"],
        )
        t.dp_keep = set()
        t.dp_sums = {"_profiles": float(2 * (p["periods"] + 1))}
        for c in cohorts:
            size = got.get((c, 0), 0)
            if size == 0 and req.epsilon is None:
                continue
            label = f"{c // 12:04d}-{c % 12 + 1:02d}"
            total = t.add({"cohort": label, "month": 0}, size, total=True, retention_pct=100.0 if size else None)
            for o in range(1, p["periods"] + 1):
                if c + o > last:
                    break
                n = got.get((c, o), 0)
                act = t.add(
                    {"cohort": label, "month": o}, n, retention_pct=round(100.0 * n / size, 1) if size else None
                )
                # the complement (still in the cohort, not active) is derived from the size: a cell too
                rest = t.add({"cohort": label, "month": o, "inactive": True}, size - n)
                t.cells[rest].values = {"retention_pct": None}
                t.groups.append(Group([act, rest], total))
        return [t]


def _month_index(ms: int) -> int:
    d = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return d.year * 12 + d.month - 1


# customer lifetime value -------------------------------------------------------------------------------
CLV_SQL = """
WITH orders AS (
    SELECT profile_id, sum(least(coalesce(revenue, 0), $cap)) AS revenue, min(ts_ms) AS first_t
    FROM ins_events WHERE type = 'track' AND event = $event AND ts_ms >= $since AND ts_ms < $until
    GROUP BY profile_id
),
valued AS (
    SELECT profile_id, revenue,
           revenue / greatest(1.0, ($until - first_t) / (30.0 * 86400000.0)) * $horizon AS clv
    FROM orders
)
SELECT CASE WHEN clv < 50 THEN 0 WHEN clv < 200 THEN 1 WHEN clv < 500 THEN 2 WHEN clv < 1000 THEN 3 ELSE 4 END
           AS band,
       count(*) AS profiles, sum(clv) AS clv, sum(revenue) AS revenue
FROM valued GROUP BY 1
"""


def clv_label(i: int) -> str:
    lo, hi = CLV_BANDS[i]
    return f"{lo:,.0f}+" if math.isinf(hi) else f"{lo:,.0f}–{hi:,.0f}"


class Clv(Builder):
    def check(self, ins: Insights, con: Any, req: Request) -> None:
        req.params["event"] = _name(req.params, "event", "Order Completed")
        req.params["horizon_months"] = _int(req.params, "horizon_months", 12, 1, 120)
        ins._names(con, req, [(req.params["event"], "event")])

    @staticmethod
    def sql(req: Request) -> list[str]:
        return [CLV_SQL]

    def build(self, ins: Insights, con: Any, req: Request) -> list[Table]:
        p = req.params
        dp_on = req.epsilon is not None
        rows = _fetch(
            con,
            CLV_SQL,
            {
                "event": p["event"],
                "since": req.since,
                "until": req.until,
                "horizon": float(p["horizon_months"]),
                "cap": req.revenue_cap * req.max_conversions if dp_on else 1e300,
            },
        )
        got = {int(b): r for b, *r in [(r[0], *r[1:]) for r in rows]}
        t = Table(
            "clv",
            f"Customer lifetime value over {p['horizon_months']} months (historical rate), in bands",
            ["clv_band"],
            ["avg_clv", "clv", "revenue"],
        )
        t.dp_keep = set()
        cap = req.revenue_cap * req.max_conversions
        t.dp_sums = {"_profiles": 2.0, "clv": 2.0 * cap * p["horizon_months"], "revenue": 2.0 * cap}
        t.dp_means = {"avg_clv": ("clv", "profiles")}
        members = []
        tot = [0.0, 0.0, 0.0]
        for i in range(len(CLV_BANDS)):
            r = got.get(i)
            if r is None and not dp_on:
                continue
            n, clv, rev = (float(r[0]), float(r[1] or 0), float(r[2] or 0)) if r else (0.0, 0.0, 0.0)
            tot = [tot[0] + n, tot[1] + clv, tot[2] + rev]
            members.append(
                t.add(
                    {"clv_band": clv_label(i)},
                    int(n),
                    avg_clv=round(clv / n, 2) if n else None,
                    clv=round(clv, 2),
                    revenue=round(rev, 2),
                )
            )
        total = t.add(
            {"clv_band": "(all)"},
            int(tot[0]),
            total=True,
            avg_clv=round(tot[1] / tot[0], 2) if tot[0] else None,
            clv=round(tot[1], 2),
            revenue=round(tot[2], 2),
        )
        t.groups.append(Group(members, total))
        return [t]


BUILDERS: dict[str, Builder] = {
    "journeys": Journeys(),
    "funnel": Funnel(),
    "attribution": Attribution(),
    "experience": Experience(),
    "rfm": Rfm(),
    "cohorts": Cohorts(),
    "clv": Clv(),
}
