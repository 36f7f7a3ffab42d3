"""Small cells stay hidden: primary and complementary suppression (Hypothesis on random segment pairs),
the differential-privacy budget ledger that survives restarts, and bad requests that release nothing."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from candor.app import Runtime
from candor.config import ConfigError, Settings
from candor.insights.privacy import K_FLOOR, Group, Table, suppress
from candor.insights.reports import InsightError
from tests.helpers import api, bearer
from tests.insights import world as W

SINCE, UNTIL = W.NOW - 120 * W.DAY, W.NOW


def segment_table(people: dict[str, int], segments: dict[str, set[str]], stages: int) -> Table:
    """A funnel by segment: per segment, a cell per stage (each member in exactly one) and its total."""
    t = Table("t", "t", ["segment", "stage"], [])
    t.segment_dim = "segment"
    for name, members in segments.items():
        idx = []
        for s in range(stages):
            n = sum(1 for p in members if people[p] == s)
            if n:
                idx.append(t.add({"segment": name, "stage": s}, n))
        if idx:
            total = t.add({"segment": name, "stage": "entered"}, len(members), total=True)
            t.groups.append(Group(idx, total))
    return t


@st.composite
def worlds(draw: Any) -> tuple[dict[str, int], dict[str, set[str]], int]:
    n = draw(st.integers(20, 160))
    stages = draw(st.integers(2, 5))
    rng = random.Random(draw(st.integers(0, 2**32)))
    people = {f"p{i}": rng.choice([rng.randrange(stages), stages - 1, 0]) for i in range(n)}
    names = list(people)
    a = set(rng.sample(names, draw(st.integers(1, n))))
    if draw(st.booleans()):  # B is A give or take a few people: the differencing attack
        few = draw(st.integers(1, 12))
        b = set(a)
        for p in rng.sample(names, min(few, n)):
            b ^= {p}
        b = b or {names[0]}
    else:
        b = set(rng.sample(names, draw(st.integers(1, n))))
    k = draw(st.integers(K_FLOOR, 30))
    return people, {"A": a, "B": b}, k


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_complementary_suppression_on_random_segment_pairs(w: tuple[dict[str, int], dict[str, set[str]], int]) -> None:
    people, segments, k = w
    t = segment_table(people, segments, max(people.values()) + 1)
    everyone = set(people)
    report = suppress(t, k, segments, everyone)
    released = [c for c in t.cells if not c.suppressed]
    # 1. no released cell counts fewer than k people
    assert all(c.profiles >= k for c in released)
    # 2. no hidden cell follows from a released total: in every group with a released total the hidden
    #    cells are none, or two or more holding at least k people together
    for g in t.groups:
        assert g.total is not None
        if t.cells[g.total].suppressed:
            continue
        hidden = [t.cells[i] for i in g.members if t.cells[i].suppressed]
        assert not hidden or (len(hidden) >= 2 and sum(c.profiles for c in hidden) >= k)
        if len(hidden) >= 2:  # total minus the released cells gives the hidden ones only together
            assert (
                t.cells[g.total].profiles - sum(t.cells[i].profiles for i in g.members if not t.cells[i].suppressed)
                >= k
            )
    # 3. two segments (or a segment and everyone) that differ by fewer than k people are never both
    #    released, so subtracting one's cells from the other's reveals nobody
    shown = {c.key["segment"] for c in released}
    sets = {**segments, "(all)": everyone}
    for x in shown | {"(all)"}:
        for y in shown:
            if x != y:
                diff = len(sets[x] ^ sets[y])
                assert diff == 0 or diff >= k, (x, y, diff)
    # the report's count is the number of hidden cells
    assert report.total == sum(1 for c in t.cells if c.suppressed)


def test_a_lone_small_cell_takes_the_next_smallest_with_it() -> None:
    t = Table("t", "t", ["channel"], [])
    cells = [t.add({"channel": c}, n) for c, n in (("web", 300), ("app", 40), ("store", 5), ("email", 120))]
    total = t.add({"channel": "(all)"}, 465, total=True)
    t.groups.append(Group(cells, total))
    out = suppress(t, 11)
    assert [c.suppressed for c in t.cells] == [None, "complementary", "primary", None, None]
    assert out.as_json() == {"total": 2, "primary": 1, "complementary": 1, "differencing": 0}


@pytest.fixture
def dp_settings(make_settings: Any) -> Settings:
    return make_settings(dp_epsilon_per_month=1.0, dp_epsilon_per_request=0.5)


def test_the_budget_ledger_refuses_the_query_that_would_exceed_it_and_survives_a_restart(dp_settings: Settings) -> None:
    rt = Runtime(dp_settings)
    try:
        W.build(rt, random.Random(4))
        ask = {"since": SINCE, "until": UNTIL, "k": 11, "steps": ["Product Viewed", "Order Completed"]}
        exact = rt.insights.run("funnel", ask, now=W.NOW)
        noisy = rt.insights.run("funnel", {**ask, "dp": {"epsilon": 0.4}}, now=W.NOW)
        assert noisy["dp"]["epsilon"] == 0.4 and 0 < noisy["dp"]["epsilon_used"] <= 0.4 + 1e-9
        assert all(r["profiles"] is None or r["profiles"] >= 11 for r in noisy["tables"][0]["rows"])
        assert exact["tables"] != noisy["tables"]
        rt.insights.run("funnel", {**ask, "dp": {"epsilon": 0.4}}, now=W.NOW)
        spent = rt.insights.ledger.spent()
        assert set(spent) == {"2026-05", "2026-06", "2026-07", "2026-08", "2026-09"}
        assert all(v == pytest.approx(0.8) for v in spent.values())
        with pytest.raises(InsightError) as info:
            rt.insights.run("funnel", {**ask, "dp": {"epsilon": 0.4}}, now=W.NOW)
        assert info.value.status == 409 and "exhausted" in str(info.value) and "Nothing was released" in str(info.value)
        assert rt.insights.ledger.spent() == spent  # refused: nothing charged
        # a smaller request still fits
        rt.insights.run("funnel", {**ask, "dp": {"epsilon": 0.2}}, now=W.NOW)
    finally:
        rt.close()
    rt = Runtime(dp_settings)  # the budget survives a restart
    try:
        assert all(v == pytest.approx(1.0) for v in rt.insights.ledger.spent().values())
        with pytest.raises(InsightError, match="exhausted"):
            rt.insights.run("funnel", {**ask, "dp": {"epsilon": 0.01}}, now=W.NOW)
        # another period (other months) has its own budget
        later = {**ask, "since": W.NOW + 40 * W.DAY, "until": W.NOW + 70 * W.DAY}
        with pytest.raises(InsightError, match="no events"):
            rt.insights.run("funnel", {**later, "dp": {"epsilon": 0.1}}, now=W.NOW)
        assert set(rt.insights.ledger.spent()) == set(spent)  # a refused request spends nothing
    finally:
        rt.close()


def test_settings_refuse_a_floor_below_11() -> None:
    with pytest.raises(ConfigError, match="at least 11"):
        Settings.from_env(env={"CANDOR_INSIGHTS_MIN_PROFILES": "10"})


@pytest.fixture
def bad_rt(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)
    W.build(rt, random.Random(5), people=60, n_events=800)
    try:
        yield rt
    finally:
        rt.close()


@pytest.mark.parametrize(
    ("insight", "params", "field", "words"),
    [
        ("funnel", {"steps": ["Product Viewed", "Teleported"]}, "steps[1]", "unknown event name 'Teleported'"),
        ("journeys", {"goal": "Nope"}, "goal", "unknown event name"),
        ("funnel", {"steps": ["Product Viewed"]}, "steps", "2 to 8"),
        (
            "funnel",
            {"steps": ["Product Viewed", "Order Completed"], "segments": ["ghosts"]},
            "segments[0]",
            "no segment",
        ),
        ("funnel", {"steps": ["Product Viewed", "Order Completed"], "by": "segment"}, "segments", "needs segments"),
        ("attribution", {"since": "2026-09-01", "until": "2026-09-01"}, "since", "empty"),
        ("attribution", {"since": "2020-01-01", "until": "2020-02-01"}, "since", "no events"),
        ("attribution", {"k": 5}, "k", "at least 11"),
        ("attribution", {"dp": {"epsilon": 3}}, "dp.epsilon", "over the limit"),
        ("attribution", {"dp": {"epsilon": -1}}, "dp.epsilon", "greater than 0"),
        ("attribution", {"colour": "red"}, "colour", "unknown parameter"),
        ("attribution", {"since": "yesterday"}, "since", "must be a date"),
        ("rfm", {"event": ""}, "event", "event name"),
    ],
)
def test_bad_requests_get_clear_errors_and_nothing_is_released(
    bad_rt: Runtime, insight: str, params: dict[str, Any], field: str, words: str
) -> None:
    before = bad_rt.insights.ledger.spent()
    with pytest.raises(InsightError) as info:
        bad_rt.insights.run(insight, {"since": SINCE, "until": UNTIL, "k": 11, **params}, now=W.NOW)
    assert info.value.field == field and words in info.value.reason
    assert bad_rt.insights.ledger.spent() == before


@pytest.mark.anyio
async def test_the_api_gives_analysts_aggregates_and_clear_errors(settings: Settings) -> None:
    async with api(settings) as a:
        W.build(a.rt, random.Random(6))
        analyst = bearer(a.rt.directory.create_token("analyst", "analyst"))
        support = bearer(a.rt.directory.create_token("support", "support"))
        body = {"since": SINCE, "until": UNTIL, "k": 11, "steps": ["Product Viewed", "Order Completed"]}
        r = await a.client.post("/v1/insights/funnel", json=body, headers=analyst)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["insight"] == "funnel" and "suppressed_cells" in out and out["tables"][0]["rows"]
        assert "p0001" not in r.text  # no profile id in an answer
        assert (await a.client.post("/v1/insights/funnel", json=body, headers=support)).status_code == 403
        bad = await a.client.post("/v1/insights/funnel", json={**body, "steps": ["Nope", "Order Completed"]},
                                  headers=analyst)  # fmt: skip
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_insight"
        assert "steps[0]" in bad.json()["error"]["message"] and "tables" not in bad.text
        assert (await a.client.post("/v1/insights/telepathy", json={}, headers=analyst)).status_code in (400, 404)
        r = await a.client.get("/v1/insights/budget", headers=analyst)
        assert r.status_code == 200 and r.json()["epsilon_per_month"] == 1.0


def test_two_segments_that_differ_by_a_few_people_are_not_both_released(settings: Settings) -> None:
    rt = Runtime(settings)
    try:
        W.build(rt, random.Random(12), people=200, n_events=5000)
        rt.segments.create("viewers", {"conditions": [{"event": "Product Viewed"}]}, "test")
        a = set(rt.segments.evaluate("viewers", now=W.NOW))
        # the same people but the few who signed up many times: the smallest gap that is not empty
        for n in range(2, 12):
            cond = {"conditions": [{"segment": "viewers"}, {"not": {"event": "Signed Up", "count": {"gte": n}}}]}
            b = set(rt.segments.evaluate(cond, now=W.NOW))
            if 0 < len(a ^ b) < 11:
                break
        assert 0 < len(a ^ b) < 11, "the world should give two segments a few people apart"
        rt.segments.create("viewers2", cond, "test")
        ask = {"since": SINCE, "until": UNTIL, "k": 11, "steps": ["Product Viewed", "Order Completed"],
               "by": "segment", "segments": ["viewers", "viewers2"]}  # fmt: skip
        out = rt.insights.run("funnel", ask, now=W.NOW)
        rows = out["tables"][0]["rows"]
        shown = {r["segment"] for r in rows if not r.get("suppressed")}
        assert len(shown) == 1, "only one of the two segments may be released"
        assert out["suppressed_cells"]["differencing"] > 0
    finally:
        rt.close()


@pytest.mark.anyio
async def test_an_exhausted_budget_is_a_409_with_its_code(make_settings: Any) -> None:
    async with api(make_settings(dp_epsilon_per_month=0.3, dp_epsilon_per_request=0.3)) as a:
        W.build(a.rt, random.Random(13), people=60, n_events=800)
        analyst = bearer(a.rt.directory.create_token("analyst", "analyst"))
        body = {"since": SINCE, "until": UNTIL, "k": 11, "dp": {"epsilon": 0.2}}
        assert (await a.client.post("/v1/insights/rfm", json=body, headers=analyst)).status_code == 200
        r = await a.client.post("/v1/insights/rfm", json=body, headers=analyst)
        assert r.status_code == 409 and r.json()["error"]["code"] == "budget_exhausted"
        assert "tables" not in r.text


def test_attribution_with_dp_caps_each_profiles_conversions(dp_settings: Settings) -> None:
    """With differential privacy a profile's conversions beyond ``max_conversions`` give no credit (the
    capped statement); without it every conversion counts (the statement without the cap's window)."""
    rt = Runtime(dp_settings)
    try:
        w = W.build(rt, random.Random(6))
        ok = W.allowed(rt, w)
        per_profile: dict[str, int] = {}
        for e in w.events:
            if e.profile in ok and e.event == "Order Completed" and SINCE <= e.ts < UNTIL:
                per_profile[e.profile] = per_profile.get(e.profile, 0) + 1
        assert max(per_profile.values()) > 2  # the cap below binds
        ask = {"since": SINCE, "until": UNTIL, "k": 11}
        for dp, want in (
            (None, sum(per_profile.values())),
            ({"epsilon": 0.4, "max_conversions": 1}, len(per_profile)),
            ({"epsilon": 0.4, "max_conversions": 2}, sum(min(n, 2) for n in per_profile.values())),
        ):
            _, tables = rt.insights.compute("attribution", {**ask, "dp": dp} if dp else ask, now=W.NOW)
            total = next(c for t in tables for c in t.cells if c.total)
            for m in ("first_touch", "last_touch", "linear", "time_decay"):
                assert total.values[m] == pytest.approx(want, abs=1e-3), (dp, m)  # released rounded to 4 places
        assert rt.insights.ledger.spent() == {}  # compute releases nothing, so charges nothing
    finally:
        rt.close()
