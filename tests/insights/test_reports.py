"""Every insight against a brute-force Python computation on small generated data (SQLite and
PostgreSQL); people without analytics consent change no number; small cells are never released."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
import sqlglot
from sqlalchemy import update

from candor.app import Runtime
from candor.config import Settings
from candor.insights import reports, views
from candor.store.schema import subjects
from tests.conftest import engines_and_stores
from tests.insights import world as W

SINCE, UNTIL = W.NOW - 120 * W.DAY, W.NOW


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime(settings)
    try:
        yield runtime
    finally:
        runtime.close()


def make_world(rt: Runtime, seed: int = 1) -> tuple[W.World, set[str]]:
    rng = random.Random(seed)
    w = W.build(rt, rng)
    profiles = sorted(w.profiles)
    with rt.store.write() as conn:  # some refuse analytics, some are restricted
        for p in rng.sample(profiles, 15):
            rt.consent.record(conn, p, denied={"analytics"}, source="api", actor="test")
        restricted = rng.sample(profiles, 5)
        conn.execute(update(subjects).where(subjects.c.subject_id.in_(restricted)).values(state="restricted"))
    rt.consent.invalidate()
    ok = W.allowed(rt, w)
    assert 100 < len(ok) < len(profiles)
    return w, ok


def cells(tables: list[Any], name: str) -> list[Any]:
    return [c for t in tables if t.name == name for c in t.cells]


def compute(rt: Runtime, insight: str, **params: Any) -> list[Any]:
    _, tables = rt.insights.compute(insight, {"since": SINCE, "until": UNTIL, "k": 11, **params}, now=W.NOW)
    return tables


@engines_and_stores
def test_every_insight_equals_brute_force(rt: Runtime, analytics_engine: Any) -> None:
    rt.insights.engine = analytics_engine  # the same SQL on DuckDB and on Spark
    w, ok = make_world(rt)
    # journeys: (path, converted) → profiles
    got = {
        (c.key["path"], c.key["outcome"] == "converted"): c.profiles
        for c in cells(compute(rt, "journeys", goal="Order Completed", window_days=30, max_steps=3, top=200), "paths")
        if not c.total
    }
    want = W.journeys(w, ok, "Order Completed", SINCE, UNTIL, 30 * W.DAY, 3)
    assert got == want and len(want) > 10
    # funnel: (entry channel, stage reached) → profiles
    steps = ["Product Viewed", "Product Added", "Order Completed"]
    tables = compute(rt, "funnel", steps=steps, window_days=30)
    stage_no = {f"dropped after {i}: {steps[i - 1]}": i for i in range(1, 3)} | {"completed": 3}
    got_f = {
        (c.key["channel"], stage_no[c.key["stage"]]): c.profiles
        for c in cells(tables, "funnel")
        if c.key["stage"] in stage_no and c.key["channel"] != "(all)"
    }
    assert got_f == W.funnel(w, ok, steps, SINCE, UNTIL, 30 * W.DAY) and len(got_f) >= 4
    # attribution: four models, conversions and revenue, per channel
    tables = compute(rt, "attribution", conversion="Order Completed", window_days=14, half_life_days=3)
    want_a = W.attribution(w, ok, "Order Completed", SINCE, UNTIL, 14 * W.DAY, 3 * W.DAY)
    got_a = {c.key["channel"]: c for c in cells(tables, "attribution") if not c.total}
    assert set(got_a) == set(want_a)
    for ch, c in got_a.items():
        assert c.profiles == want_a[ch]["profiles"], ch
        for m, v in c.values.items():
            assert v == pytest.approx(want_a[ch].get(m, 0.0), rel=1e-6, abs=1e-3), (ch, m)
    total = next(c for c in cells(tables, "attribution") if c.total)
    conversions = sum(1 for e in w.events if e.profile in ok and e.event == "Order Completed" and SINCE <= e.ts < UNTIL)
    for m in reports.MODELS:  # every model hands out exactly one conversion per conversion
        assert total.values[m] == pytest.approx(conversions, rel=1e-9)
    # experience: NPS and CSAT by channel and by month
    for by in ("channel", "month"):
        tables = compute(rt, "experience", by=by)
        want_e = W.experience(w, ok, SINCE, UNTIL, by)
        for t in tables:
            for c in t.cells:
                if c.total:
                    continue
                ref = want_e[(c.key[by], t.name)]
                assert c.profiles == ref["profiles"] and c.values["responses"] == ref["responses"]
                n = ref["responses"]
                if t.name == "nps":
                    assert c.values["nps"] == pytest.approx(round(100 * (ref["promoters"] - ref["detractors"]) / n, 1))
                else:
                    assert c.values["csat_pct"] == pytest.approx(round(100 * ref["satisfied"] / n, 1))
                assert c.values["avg_score"] == pytest.approx(round(ref["sum"] / n, 2))
        assert {(c.key[by], t.name) for t in tables for c in t.cells if not c.total} == set(want_e)
    # RFM segments, cohorts, CLV bands
    got_r = {c.key["rfm_segment"]: c.profiles for c in cells(compute(rt, "rfm"), "rfm") if not c.total}
    assert got_r == W.rfm(w, ok, SINCE, UNTIL)
    early = W.NOW - 210 * W.DAY  # everyone arrived within the 200 days of the world
    got_c = {
        (c.key["cohort"], c.key["month"]): c.profiles
        for c in cells(compute(rt, "cohorts", periods=3, since=early), "retention")
        if "inactive" not in c.key
    }
    want_c = {
        (f"{c // 12:04d}-{c % 12 + 1:02d}", o): n
        for (c, o), n in W.cohorts(w, ok, early, UNTIL, 3).items()
        if c + o <= W.month_index(UNTIL - 1)
    }
    assert got_c == want_c and len(want_c) >= 6
    got_v = {c.key["clv_band"]: c.profiles for c in cells(compute(rt, "clv", horizon_months=6), "clv") if not c.total}
    assert got_v == {reports.clv_label(b): n for b, n in W.clv(w, ok, SINCE, UNTIL, 6).items()}


def test_people_without_analytics_consent_change_no_number(rt: Runtime) -> None:
    make_world(rt, seed=2)
    asks: list[tuple[str, dict[str, Any]]] = [
        ("journeys", {"goal": "Order Completed"}),
        ("funnel", {"steps": ["Product Viewed", "Order Completed"]}),
        ("attribution", {}),
        ("experience", {}),
        ("rfm", {}),
        ("cohorts", {}),
        ("clv", {}),
    ]
    before = [rt.insights.run(i, {"since": SINCE, "until": UNTIL, "k": 11, **p}, now=W.NOW)["tables"] for i, p in asks]
    # many more people, with lots of events of every kind, who refused analytics (or are restricted)
    extra = W.build(rt, random.Random(99), people=60, n_events=3000, prefix="q", first_id=100_000)
    with rt.store.write() as conn:
        for p in sorted(extra.profiles)[:50]:
            rt.consent.record(conn, p, denied={"analytics"}, source="banner", actor="test")
        conn.execute(
            update(subjects)
            .where(subjects.c.subject_id.in_([s for p in sorted(extra.profiles)[50:] for s in extra.profiles[p]]))
            .values(state="restricted")
        )
    rt.consent.invalidate()
    assert not (W.allowed(rt, extra))
    after = [rt.insights.run(i, {"since": SINCE, "until": UNTIL, "k": 11, **p}, now=W.NOW)["tables"] for i, p in asks]
    assert after == before


def test_no_released_cell_is_below_k_and_the_report_counts_suppressions(rt: Runtime) -> None:
    make_world(rt, seed=3)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("journeys", {"goal": "Order Completed", "max_steps": 4}),
        ("funnel", {"steps": ["Product Viewed", "Product Added", "Order Completed"]}),
        ("attribution", {}),
        ("experience", {"by": "month"}),
        ("cohorts", {}),
        ("clv", {}),
    ]
    for k in (11, 25, 60):
        for insight, p in cases:
            out = rt.insights.run(insight, {"since": SINCE, "until": UNTIL, "k": k, **p}, now=W.NOW)
            hidden = 0
            for t in out["tables"]:
                for row in t["rows"]:
                    if row.get("suppressed"):
                        hidden += 1
                        dims = t["columns"][: t["columns"].index("profiles")]
                        assert all(
                            v is None for key, v in row.items() if key not in (*dims, "suppressed", "total", "inactive")
                        )
                    else:
                        assert row["profiles"] >= k, (insight, k, row)
            assert out["suppressed_cells"]["total"] == hidden
            assert out["k"] == k
    # with a large k, most of a fine-grained report disappears, and says so
    out = rt.insights.run("journeys", {"since": SINCE, "until": UNTIL, "k": 60, "goal": "Order Completed"}, now=W.NOW)
    assert out["suppressed_cells"]["primary"] > 0 and out["suppressed_cells"]["complementary"] > 0


def test_channel_rules() -> None:
    import duckdb

    con = duckdb.connect()
    sql = views.channel_sql({"till-export": "store"})
    rows = [
        ("till-export", "web", False, "track", "analytics.js", "Order Completed", None, "store"),  # configured
        ("web", "Phone", False, "track", None, "Call", None, "call_center"),  # a channel property
        ("web", None, True, "track", "analytics.js", "Opened", None, "app"),  # context.app
        ("x", None, False, "screen", None, "Home", None, "app"),
        ("x", None, False, "page", None, "Home", None, "web"),
        ("x", None, False, "track", "analytics.js", "Product Viewed", None, "web"),
        ("esp", None, False, "track", None, "Email Opened", None, "email"),
        ("x", None, False, "track", None, "Clicked", "email", "email"),  # UTM medium
        ("pos", None, False, "track", "northwind-pos", "Order Completed", None, "store"),  # the source's name
        ("zzz", None, False, "track", None, "Something", None, "other"),
    ]
    for source, hint, in_app, type_, library, event, medium, want in rows:
        got = con.execute(
            f"SELECT {sql} FROM (SELECT $s AS source, lower($h) AS channel_hint, $a AS in_app, $t AS type, "
            "$l AS library, $e AS event, $m AS utm_medium) e",
            {"s": source, "h": hint, "a": in_app, "t": type_, "l": library, "e": event, "m": medium},
        ).fetchone()
        assert got is not None and got[0] == want, (source, want)
    with pytest.raises(ValueError, match="source=channel"):
        views.parse_source_channels("pos=shopfloor")


def test_every_insight_sql_is_portable_to_spark() -> None:
    """The same definitions must run on Spark (issue 11): sqlglot turns each into Spark SQL, raising on
    anything it cannot express."""
    req = reports.Request("x", {}, 0, 1, 50)
    texts = [sql for b in reports.BUILDERS.values() for sql in b.sql(req)] + [reports.ATTRIBUTION_SQL]  # DP's too
    assert len(texts) >= 9
    for sql in texts:
        out = sqlglot.transpile(sql, read="duckdb", write="spark", unsupported_level=sqlglot.ErrorLevel.RAISE)
        assert (out and "ins_events" in sql + "".join(out)) or "ins_touchpoints" in sql
        for view in ("read_parquet", "sqlite_query", "postgres_query", "main.events"):
            assert view not in sql, f"an insight reads {view}: only the contract's views are allowed"


def test_rfm_cohort_and_clv_as_segment_conditions(rt: Runtime) -> None:
    w, _ = make_world(rt, seed=7)
    everyone = set(w.profiles)  # a segment ranks every profile; its use decides consent at send time
    days = 150
    since = W.NOW - days * W.DAY
    champions = set(rt.segments.evaluate({"conditions": [{"rfm": ["champions", "loyal"], "within_days": days}]},
                                         now=W.NOW))  # fmt: skip
    ranks = W.rfm_names(w, everyone, since, W.NOW + 1)
    assert champions == {p for p, n in ranks.items() if n in ("champions", "loyal")} and champions
    month = "2026-04"
    cohort = set(rt.segments.evaluate({"conditions": [{"cohort": [month]}]}, now=W.NOW))
    firsts = {p: min(e.ts for e in w.events if e.profile == p) for p in {e.profile for e in w.events}}
    assert cohort == {p for p, t in firsts.items() if W.month_label(t) == month} and cohort
    rich = set(rt.segments.evaluate({"conditions": [{"clv": {"gte": 400}, "horizon_months": 6, "within_days": days}]},
                                    now=W.NOW))  # fmt: skip
    values = W.clv_values(w, everyone, since, W.NOW + 1, 6, until_for_tenure=W.NOW)
    assert rich == {p for p, v in values.items() if v >= 400} and rich
    # and the grammar says where a mistake is
    from candor.segments import SegmentError, parse

    for doc, where in (({"rfm": "royalty"}, "conditions[0].rfm"), ({"cohort": "2026-13"}, "conditions[0].cohort"),
                       ({"clv": {"gte": "x"}}, "conditions[0].clv.gte")):  # fmt: skip
        with pytest.raises(SegmentError) as info:
            parse({"conditions": [doc]}, ["analytics"])
        assert info.value.location == where
