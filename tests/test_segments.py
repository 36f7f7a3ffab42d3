"""Segments: the grammar and its errors, SQL that never holds a value, evaluation at profile level on
real events (SQLite and PostgreSQL), the purpose breakdown against ``can_use`` one profile at a time,
membership history and references between segments."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from candor import audit
from candor.app import Runtime
from candor.config import Settings
from candor.consent.purposes import DEFAULT_PURPOSES
from candor.lake import PROMOTED
from candor.segments import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    SegmentError,
    Segments,
    Trait,
    compile_sql,
    kleene,
    load_text,
    parse,
    trait_matches,
)
from candor.store import now_ms
from candor.store.schema import events, profile_subjects, segment_members, segment_runs, subjects
from tests.consent.test_audience import random_store
from tests.helpers import Api, api

PURPOSES = list(DEFAULT_PURPOSES)
DOCS = Path(__file__).resolve().parents[1] / "docs" / "segments.md"
INJECTIONS = [
    "x' OR 1=1 --",
    "'; DROP TABLE events; --",
    '") OR TRUE; --',
    "$v0",
    "\\' UNION SELECT subject_id FROM subjects --",
]


def ok(doc: Any) -> Any:
    return parse(doc, PURPOSES)


def error_of(doc: Any) -> SegmentError:
    with pytest.raises(SegmentError) as info:
        parse(doc, PURPOSES)
    return info.value


def one(condition: Any) -> dict[str, Any]:
    return {"name": "t", "conditions": [condition]}


# -- the grammar ---------------------------------------------------------------------------------------
def test_every_example_in_the_documentation_is_valid() -> None:
    blocks = re.findall(r"```(json|yaml)\n(.*?)```", DOCS.read_text(), re.S)
    assert len(blocks) >= 12
    for _, body in blocks:
        doc = load_text(body)
        ok(doc if "conditions" in doc else {"conditions": [doc]})


@pytest.mark.parametrize(
    ("doc", "location", "words"),
    [
        ([], "", "must be an object"),
        ({"conditions": [], "colour": 1}, "", "unknown key 'colour'"),
        ({"match": "most", "conditions": []}, "match", "'all' or 'any'"),
        ({"name": "x"}, "conditions", "missing"),
        ({"conditions": {"event": "A"}}, "conditions", "list of conditions"),
        (one({"event": "A", "count": {"gte": -1}}), "conditions[0].count.gte", "whole number from 0"),
        (one({"event": "A", "count": {"gte": 1.5}}), "conditions[0].count.gte", "whole number"),
        (one({"event": "A", "count": {"gte": True}}), "conditions[0].count.gte", "whole number"),
        (one({"event": "A", "count": {}}), "conditions[0].count", "needs a bound"),
        (one({"event": "A", "count": {"most": 1}}), "conditions[0].count", "unknown key 'most'"),
        (one({"event": "A", "within_days": 3651}), "conditions[0].within_days", "1 to 3,650"),
        (one({"event": "A", "within_days": 0}), "conditions[0].within_days", "1 to 3,650"),
        (one({"event": "", "count": {"gte": 1}}), "conditions[0].event", "non-empty text"),
        (one({"event": "A" * 201}), "conditions[0].event", "at most 200"),
        (one({"event": "A", "type": "click"}), "conditions[0].type", "one of track"),
        (one({"event": "A", "count": {"gte": 1}, "sum": {"property": "p", "gte": 1}}), "conditions[0]", "one of"),
        (one({"event": "A", "sum": {"gte": 1}}), "conditions[0].sum.property", "missing"),
        (one({"event": "A", "sum": {"property": "a b", "gte": 1}}), "conditions[0].sum.property", "letters"),
        (one({"event": "A", "sum": {"property": "p", "gte": "1"}}), "conditions[0].sum.gte", "must be a number"),
        (one({"event": "A", "where": {"x' OR 1=1 --": 1}}), "conditions[0].where", "letters, digits"),
        (one({"event": "A", "where": {"email": "a@b.c"}}), "conditions[0].where", "personal data"),
        (one({"event": "A", "where": {"k": None}}), "conditions[0].where.k", "text, a number"),
        (one({"event": "A", "where": {"k": []}}), "conditions[0].where.k", "1 to 100 values"),
        (one({"event": "A", "where": {"k": [1, {"a": 1}]}}), "conditions[0].where.k[1]", "text, a number"),
        (one({"last_seen": {"within_days": 3, "not_within_days": 5}}), "conditions[0].last_seen", "exactly one"),
        (one({"last_seen": {}}), "conditions[0].last_seen", "exactly one"),
        (one({"last_seen": 30}), "conditions[0].last_seen", "must be an object"),
        (one({"trait": "city"}), "conditions[0]", "needs a test"),
        (one({"trait": "city", "equals": "a", "in": ["a"]}), "conditions[0]", "one test"),
        (one({"trait": "city", "in": "a"}), "conditions[0].in", "must be a list"),
        (one({"trait": "city", "exists": "yes"}), "conditions[0].exists", "true or false"),
        (one({"trait": "email", "equals": "ann@example.com"}), "conditions[0].equals", "identifies a person"),
        (one({"trait": "address.street", "contains": "Main"}), "conditions[0].contains", "identifies a person"),
        (one({"trait": "email", "contains": "ann"}), "conditions[0].contains", "email domain"),
        (one({"consent": "marketing.fax"}), "conditions[0].consent", "unknown purpose"),
        (one({"consent": "analytics", "allowed": "no"}), "conditions[0].allowed", "true or false"),
        (one({"segment": ""}), "conditions[0].segment", "non-empty"),
        (one({"event": "A", "trait": "b", "equals": 1}), "conditions[0]", "found event and trait"),
        (one({"colour": "red"}), "conditions[0]", "found none"),
        (one("event"), "conditions[0]", "a condition (an object)"),
        (one({"not": [{"event": "A"}]}), "conditions[0].not", "a condition"),
        (one({"any": [{"all": [{"trait": "t", "gte": "x"}]}]}), "conditions[0].any[0].all[0].gte", "number"),
        (one({"loyalty_tier": {"in": ["gold"]}}), "conditions[0].loyalty_tier", "text, a number"),
    ],
)
def test_errors_name_the_place(doc: Any, location: str, words: str) -> None:
    err = error_of(doc)
    assert err.location == location, str(err)
    assert words in err.reason, str(err)
    assert str(err).startswith(f"{location}: " if location else "")


def test_limits() -> None:
    deep: dict[str, Any] = {"event": "A"}
    for _ in range(MAX_DEPTH):
        deep = {"not": deep}
    err = error_of(one(deep))
    assert "nested more than" in err.reason and err.location.endswith(".not" * MAX_DEPTH)
    many = {"conditions": [{"all": [{"event": "A"}] * 30}, {"all": [{"event": "B"}] * 30}]}
    err = error_of(many)
    assert f"at most {MAX_CONDITIONS}" in err.reason and err.location.startswith("conditions[1].all[")
    with pytest.raises(SegmentError, match="larger than 64 KiB"):
        load_text("[" + "1," * 40_000 + "1]")


def test_yaml_and_json_text() -> None:
    yaml_text = """
name: jazz buyers
match: all
conditions:
  - event: Order Completed
    count: {gte: 2}
    within_days: 90
    where: {category: jazz}
  - not: {consent: marketing.email, allowed: false}
"""
    json_text = orjson.dumps(
        {
            "name": "jazz buyers",
            "match": "all",
            "conditions": [
                {"event": "Order Completed", "count": {"gte": 2}, "within_days": 90, "where": {"category": "jazz"}},
                {"not": {"consent": "marketing.email", "allowed": False}},
            ],
        }
    ).decode()
    assert ok(load_text(yaml_text)).root == ok(load_text(json_text)).root
    with pytest.raises(SegmentError) as info:
        load_text('{"conditions": [}')
    err = info.value
    assert err.location == "line 1, column 17" and "not valid JSON" in err.reason
    with pytest.raises(SegmentError) as info:
        load_text("conditions:\n  - event: [A\n")
    err = info.value
    assert err.location.startswith("line 3") and "YAML" in err.reason
    # YAML types JSON does not have are refused with their place
    err = error_of(load_text("conditions:\n  - trait: signup\n    gte: 2024-01-01\n"))
    assert err.location == "conditions[0].gte"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)
grammar_words = st.sampled_from(
    ["name", "match", "conditions", "event", "count", "sum", "avg", "distinct_days", "within_days", "where",
     "type", "property", "gte", "gt", "lte", "lt", "eq", "last_seen", "not_within_days", "trait", "equals", "in",
     "contains", "exists", "consent", "allowed", "segment", "not", "all", "any", "loyalty_tier", "track",
     "marketing.email", "all", "any", "category", "revenue"]
)  # fmt: skip
grammar_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5000) | st.floats() | grammar_words | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(grammar_words, inner, max_size=4),
    max_leaves=40,
)


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=json_values | st.fixed_dictionaries({"conditions": st.lists(grammar_values, max_size=4)}))
def test_arbitrary_documents_fail_only_with_segment_errors(doc: Any) -> None:
    try:
        d = parse(doc, PURPOSES)
    except SegmentError as exc:
        assert exc.reason and len(str(exc)) < 1000
    else:
        # whatever parses compiles, and the SQL text holds none of the document's text values
        compiled = compile_sql(d.root, now_ms())
        assert compiled.sql.count("$") == len(re.findall(r"\$v\d+", compiled.sql))


@hsettings(max_examples=200, deadline=None)
@given(value=st.text(min_size=1, max_size=200).filter(lambda s: s.strip() not in ("", "*") and "\x00" not in s))
def test_values_never_reach_the_sql_text(value: str) -> None:
    def doc(v: str) -> Any:
        return {
            "match": "any",
            "conditions": [
                {"event": v, "count": {"gte": 2}, "within_days": 30, "where": {"category": [v, 3, True]}},
                {"last_seen": {"event": v, "not_within_days": 9}},
                {"trait": "city", "in": [v]},
            ],
        }

    a, b = compile_sql(ok(doc(value)).root, 1), compile_sql(ok(doc("plain")).root, 1)
    assert a.sql == b.sql  # the statement does not depend on the values at all
    assert value in a.params.values()


def test_trait_tests_and_three_valued_logic() -> None:
    traits = {"city": "Lisboa", "interests": ["Jazz", "rock"], "age": "34", "vip": True, "address": {"city": "Porto"}}
    assert trait_matches(Trait(("city",), "in", ("lisboa",)), traits)
    assert trait_matches(Trait(("address", "city"), "in", ("Porto",)), traits)
    assert trait_matches(Trait(("interests",), "contains", "jazz"), traits)
    assert trait_matches(Trait(("city",), "contains", "sbo"), traits)
    assert trait_matches(Trait(("age",), "range", (("gte", 30.0), ("lt", 40.0))), traits)
    assert not trait_matches(Trait(("age",), "range", (("gt", 34.0),)), traits)
    assert trait_matches(Trait(("vip",), "in", (True,)), traits)
    assert not trait_matches(Trait(("vip",), "in", (1.0,)), traits)
    assert trait_matches(Trait(("nickname",), "exists", False), traits)
    assert not trait_matches(Trait(("nickname",), "in", ("x",)), traits)
    d = ok({"match": "any", "conditions": [{"trait": "a", "exists": True}, {"not": {"trait": "b", "exists": True}}]})
    assert kleene(d.root, lambda leaf: None) is None
    assert kleene(d.root, lambda leaf: leaf == Trait(("a",), "exists", True)) is True
    assert kleene(ok({"conditions": []}).root, lambda leaf: None) is True
    assert kleene(ok({"match": "any", "conditions": []}).root, lambda leaf: None) is False


# -- a small world of real events -----------------------------------------------------------------------
def ago(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def send(a: Api, path: str, body: dict[str, Any]) -> None:
    r = await a.post(path, body)
    assert r.status_code == 200, r.text


async def order(a: Api, who: dict[str, str], days: float, revenue: float, category: str) -> None:
    props = {"revenue": revenue, "category": category}
    await send(a, "/v1/track", {**who, "event": "Order Completed", "properties": props, "timestamp": ago(days)})


async def world(a: Api) -> dict[str, str]:
    """Five people; returns name → profile id."""
    ident = "/v1/identify"
    await send(a, ident, {"userId": "u-ann", "traits": {"email": "ann@example.com", "city": "Lisboa",
               "loyaltyTier": "gold", "interests": ["jazz", "vinyl"], "age": 34}, "timestamp": ago(20)})  # fmt: skip
    for days, revenue in ((3, 20), (10, 35.5), (60, 12)):
        await order(a, {"userId": "u-ann"}, days, revenue, "jazz")
    await send(a, ident, {"userId": "u-bob", "traits": {"email": "bob@example.com", "city": "Porto",
               "loyaltyTier": "silver", "age": 51}, "timestamp": ago(200)})  # fmt: skip
    await order(a, {"userId": "u-bob"}, 200, 400, "classical")
    # Cat browses anonymously, then signs in: two subjects, one profile; her orders add up
    await order(a, {"anonymousId": "anon-cat"}, 5, 30, "jazz")
    await send(a, ident, {"userId": "u-cat", "anonymousId": "anon-cat", "traits": {"email": "cat@example.com",
               "city": "lisboa"}, "timestamp": ago(4)})  # fmt: skip
    await order(a, {"userId": "u-cat"}, 2, 25, "jazz")
    # Dan's category is an injection attempt: it is data
    await send(a, ident, {"userId": "u-dan", "traits": {"city": "x' OR 1=1 --"}, "timestamp": ago(0.5)})
    await order(a, {"userId": "u-dan"}, 0.5, 9, INJECTIONS[0])
    await send(a, "/v1/page", {"userId": "u-eve", "name": "Home", "timestamp": ago(400)})
    people = {}
    for name in ("ann", "bob", "cat", "dan", "eve"):
        sid = a.rt.consent.subject_for("user_id", f"u-{name}")
        assert sid is not None
        people[name] = a.rt.identity.profile_of(sid)
    return people


def members(seg: Segments, people: dict[str, str], *conditions: Any, match: str = "all") -> set[str]:
    ids = seg.evaluate({"match": match, "conditions": list(conditions)})
    names = {v: k for k, v in people.items()}
    assert all(i in names for i in ids), "evaluation returned a profile that is not a person of the world"
    return {names[i] for i in ids}


@pytest.mark.parametrize(
    ("condition", "per_subject"),
    [
        ({"event": "Order Completed", "count": {"gte": 2}}, True),
        ({"event": "Order Completed", "sum": {"property": "revenue", "gte": 10}}, True),
        ({"last_seen": {"within_days": 7}}, True),
        ({"event": "Order Completed", "avg": {"property": "revenue", "gte": 10}}, False),
        ({"event": "Home", "type": "page", "distinct_days": {"gte": 3}}, False),
    ],
)
def test_events_are_aggregated_per_subject_first_when_every_aggregate_combines(
    condition: dict[str, Any], per_subject: bool
) -> None:
    sql = compile_sql(ok({"conditions": [condition, {"last_seen": {"within_days": 30}}]}).root, 1).sql
    assert ("sagg AS (" in sql) is per_subject  # an average or a count of distinct days does not add up
    assert ("JOIN prof p ON p.subject_id = e.subject_id" in sql) is not per_subject



def test_properties_with_a_column_in_the_analytics_store_are_read_from_it() -> None:
    doc = {
        "conditions": [
            {"event": "Product Viewed", "where": {"category": "jazz", "format": "vinyl"}, "count": {"gte": 1}},
            {"event": "Order Completed", "sum": {"property": "revenue", "gte": 100}},
            {"rfm": ["champions"], "purchase": "Order Completed", "within_days": 365},
        ]
    }
    lake = compile_sql(ok(doc).root, 1, PROMOTED)
    for name in ("category", "revenue", "total"):  # total: the revenue of an RFM when revenue is absent
        assert f"e.p_{name}" in lake.sql and f'$."{name}"' not in lake.params.values()
    assert '$."format"' in lake.params.values()  # not one of them: from the JSON
    store = compile_sql(ok(doc).root, 1)  # over the store's own events table: all from the JSON
    assert "e.p_" not in store.sql
    assert {'$."category"', '$."revenue"', '$."total"', '$."format"'} <= set(store.params.values())


@pytest.mark.anyio
async def test_every_condition_kind_on_real_events(settings: Settings) -> None:
    async with api(settings) as a:
        p = await world(a)
        seg = Segments(a.rt)
        with a.rt.store.engine.connect() as conn:
            cat_subjects = conn.execute(
                select(func.count()).select_from(profile_subjects).where(profile_subjects.c.profile_id == p["cat"])
            ).scalar()
        assert cat_subjects == 2  # the anonymous browser and the signed-in user
        m = lambda *c, **kw: members(seg, p, *c, **kw)  # noqa: E731
        orders = {"event": "Order Completed"}
        # counts, profile-wide: Cat's anonymous and signed-in orders add up to two
        assert m({**orders, "count": {"gte": 2}}) == {"ann", "cat"}
        assert m({**orders, "count": {"gte": 2}, "within_days": 30}) == {"ann", "cat"}
        assert m({**orders, "count": {"gte": 3}, "within_days": 30}) == set()
        assert m({**orders, "count": {"eq": 0}}) == {"eve"}
        assert m({**orders, "count": {"gte": 1, "lte": 1}}) == {"bob", "dan"}
        assert m({**orders, "where": {"category": "JAZZ"}, "count": {"gte": 3}}) == {"ann"}
        assert m({**orders, "where": {"category": ["classical", "rock"]}}) == {"bob"}
        assert m({"event": "*", "count": {"gte": 4}}) == {"ann"}  # any event, identify included
        assert m({"event": "*", "count": {"gte": 3}}) == {"ann", "cat"}  # Cat: two subjects, three events
        assert m({"event": "Home", "type": "page"}) == {"eve"}
        assert m({**orders, "distinct_days": {"gte": 2}, "within_days": 7}) == {"cat"}
        # monetary value
        assert m({**orders, "sum": {"property": "revenue", "gte": 55}, "within_days": 30}) == {"cat", "ann"}
        assert m({**orders, "sum": {"property": "revenue", "gte": 60}, "within_days": 30}) == set()
        assert m({**orders, "sum": {"property": "revenue", "gte": 60}}) == {"ann", "bob"}
        assert m({**orders, "avg": {"property": "revenue", "gt": 100}}) == {"bob"}
        # recency
        assert m({"last_seen": {"within_days": 30}}) == {"ann", "cat", "dan"}
        assert m({"last_seen": {"not_within_days": 180}}) == {"bob", "eve"}
        assert m({"last_seen": {"event": "Order Completed", "not_within_days": 180}}) == {"bob", "eve"}
        # traits (decrypted in memory), loyalty tier
        assert m({"trait": "city", "equals": "Lisboa"}) == {"ann", "cat"}
        assert m({"trait": "city", "in": ["porto", "Faro"]}) == {"bob"}
        assert m({"trait": "interests", "contains": "JAZZ"}) == {"ann"}
        assert m({"trait": "age", "gte": 40}) == {"bob"}
        assert m({"trait": "email", "exists": False}) == {"dan", "eve"}
        assert m({"trait": "email", "contains": "@example.com"}) == {"ann", "bob", "cat"}
        assert m({"loyalty_tier": ["gold", "platinum"]}) == {"ann"}
        assert m({"not": {"loyalty_tier": "gold"}}) == {"bob", "cat", "dan", "eve"}
        # consent (US: marketing.email is an opt-out purpose, SMS needs a grant)
        with a.rt.store.write() as conn:
            a.rt.consent.record(conn, p["ann"], denied={"marketing.email"}, source="api", actor="test")
            a.rt.consent.record(conn, p["cat"], granted={"marketing.sms"}, source="api", actor="test")
        a.rt.consent.invalidate()
        assert m({"consent": "marketing.email"}) == {"bob", "cat", "dan", "eve"}
        assert m({"consent": "marketing.email", "allowed": False}) == {"ann"}
        assert m({"consent": "marketing.sms"}) == {"cat"}
        # combinations of SQL, consent and trait parts
        lisboa, email = {"trait": "city", "equals": "lisboa"}, {"consent": "marketing.email"}
        assert m({**orders, "count": {"gte": 2}}, lisboa, email) == {"cat"}
        assert m({"trait": "city", "equals": "Porto"}, {"consent": "marketing.sms"}, match="any") == {"bob", "cat"}
        assert m({"any": [{"last_seen": {"within_days": 1}}, {"trait": "age", "lt": 40}]}) == {"ann", "dan"}
        # injection attempts are values: they match the one person who sent that text, and nothing breaks
        before = a.count(events)
        assert m({**orders, "where": {"category": INJECTIONS[0]}}) == {"dan"}
        assert m({"trait": "city", "equals": INJECTIONS[0]}) == {"dan"}
        for text in INJECTIONS[1:]:
            assert m({"event": text}, {"last_seen": {"event": text, "within_days": 5}}, match="any") == set()
            assert m({**orders, "where": {"category": text}}) == set()
        assert a.count(events) == before
        # a restricted person is stored, not used: their traits are never read for a segment
        with a.rt.store.write() as conn:
            conn.execute(update(subjects).where(subjects.c.subject_id == p["ann"]).values(state="restricted"))
        a.rt.consent.invalidate()
        assert m({"trait": "city", "equals": "Lisboa"}) == {"cat"}
        assert m({"not": {"trait": "city", "equals": "Lisboa"}}) == {"bob", "dan", "eve"}
        assert m({**orders, "count": {"gte": 3}}) == {"ann"}  # events are not personal values
        assert seg.preview({"conditions": [{**orders, "count": {"gte": 3}}]}, ["marketing.post"]) == {
            "size": 1,
            "purposes": {"marketing.post": {"usable": 0, "without_consent": 0, "suppressed": 0, "restricted": 1}},
        }


def breakdown_one_by_one(rt: Runtime, profiles: list[str], purposes: list[str]) -> dict[str, dict[str, int]]:
    """The reference: ``can_use`` and the suppression lists, profile by profile."""
    out = {p: {"usable": 0, "without_consent": 0, "suppressed": 0, "restricted": 0} for p in purposes}
    with rt.store.engine.connect() as conn:
        for pid in profiles:
            group = rt.identity.members(pid, conn)
            restricted = any(
                conn.execute(select(subjects.c.state).where(subjects.c.subject_id == s)).scalar() == "restricted"
                for s in group
            )
            for name in purposes:
                decision = rt.consent.can_use(pid, name, conn=conn)
                channel = rt.taxonomy.get(name).channel
                if restricted and name != "necessary":
                    assert not decision.allowed
                    out[name]["restricted"] += 1
                elif not decision.allowed:
                    out[name]["without_consent"] += 1
                elif channel and any(rt.suppressions.subject_suppressed(s, channel, conn) for s in group):
                    out[name]["suppressed"] += 1
                else:
                    out[name]["usable"] += 1
    return out


def group_into_profiles(rt: Runtime, rng: random.Random) -> None:
    with rt.store.engine.connect() as conn:
        everyone = sorted(s for (s,) in conn.execute(select(subjects.c.subject_id)))
    rng.shuffle(everyone)
    rows = []
    i = 0
    while i < len(everyone):
        size = rng.choice([1, 1, 1, 2, 3])
        group = everyone[i : i + size]
        i += size
        if len(group) > 1:
            rows += [{"subject_id": s, "profile_id": min(group)} for s in group]
    with rt.store.write() as conn:
        conn.execute(profile_subjects.insert(), rows)


@pytest.mark.parametrize("jurisdiction", ["EU", "US-CA"])
def test_preview_breakdown_equals_can_use_profile_by_profile(
    make_settings: Callable[..., Settings], jurisdiction: str
) -> None:
    rt = Runtime(make_settings(default_jurisdiction=jurisdiction))
    try:
        rng = random.Random(jurisdiction)
        random_store(rt, rng, 150)
        group_into_profiles(rt, rng)
        rt.consent.invalidate()
        seg = Segments(rt)
        everyone = seg.evaluate({"conditions": []})
        assert len(everyone) < 150  # profiles, not subjects
        purposes = rt.taxonomy.names()
        got = seg.preview({"conditions": []})
        expected = breakdown_one_by_one(rt, everyone, purposes)
        assert got == {"size": len(everyone), "purposes": expected}
        for column in ("usable", "without_consent", "suppressed", "restricted"):  # every case is exercised
            assert any(counts[column] for counts in expected.values()), column
        # a consent-filtered segment: its members are exactly the profiles can_use allows
        sms = seg.evaluate({"conditions": [{"consent": "marketing.sms"}]})
        assert sms == sorted(p for p in everyone if rt.consent.can_use(p, "marketing.sms").allowed)
        assert seg.preview({"conditions": [{"consent": "marketing.sms"}]}, ["marketing.sms"]) == {
            "size": len(sms),
            "purposes": breakdown_one_by_one(rt, sms, ["marketing.sms"]),
        }
        with pytest.raises(SegmentError, match="purposes\\[1\\]: unknown purpose"):
            seg.preview({"conditions": []}, ["analytics", "telepathy"])
    finally:
        rt.close()


@pytest.mark.anyio
async def test_membership_history_and_references(settings: Settings) -> None:
    async with api(settings) as a:
        p = await world(a)
        seg = Segments(a.rt)
        emailable = {"name": "emailable", "conditions": [{"consent": "marketing.email"}]}
        created = seg.create("emailable", emailable, "test-marketer")
        assert created["name"] == "emailable" and created["last_run"] is None
        buyers = {"conditions": [{"event": "Order Completed", "count": {"gte": 1}}, {"segment": "emailable"}]}
        seg.create("emailable buyers", buyers, "test-marketer")
        assert [s["name"] for s in seg.list()] == ["emailable", "emailable buyers"]
        assert seg.evaluate("emailable buyers") == sorted([p["ann"], p["bob"], p["cat"], p["dan"]])

        first = seg.refresh("emailable buyers", "test-marketer")
        assert (first["size"], first["entered"], first["left"]) == (4, 4, 0)
        assert first["purposes"]["marketing.email"]["usable"] == 4
        # Bob refuses marketing email, Eve places an order: one leaves, one enters
        with a.rt.store.write() as conn:
            a.rt.consent.record(conn, p["bob"], denied={"marketing.email"}, source="api", actor="test")
        a.rt.consent.invalidate()
        await order(a, {"userId": "u-eve"}, 0, 10, "jazz")
        second = seg.refresh("emailable buyers", "test-marketer")
        assert (second["size"], second["entered"], second["left"]) == (4, 1, 1)
        assert second["run_ms"] > first["run_ms"]
        assert seg.members_at("emailable buyers", first["run_ms"]) == sorted([p["ann"], p["bob"], p["cat"], p["dan"]])
        assert seg.members_at("emailable buyers", second["run_ms"]) == sorted([p["ann"], p["cat"], p["dan"], p["eve"]])
        assert seg.members_at("emailable buyers", first["run_ms"] - 1) == []
        # Bob comes back: a second stretch of membership, the first one kept
        with a.rt.store.write() as conn:
            a.rt.consent.record(conn, p["bob"], granted={"marketing.email"}, source="api", actor="test")
        a.rt.consent.invalidate()
        third = seg.refresh("emailable buyers", "test-marketer")
        assert (third["size"], third["entered"], third["left"]) == (5, 1, 0)
        with a.rt.store.engine.connect() as conn:
            bob = conn.execute(
                select(segment_members.c.since_ms, segment_members.c.until_ms)
                .where(segment_members.c.subject_id == p["bob"])
                .order_by(segment_members.c.since_ms)
            ).all()
            runs = conn.execute(select(func.count()).select_from(segment_runs)).scalar()
        assert [tuple(r) for r in bob] == [(first["run_ms"], second["run_ms"]), (third["run_ms"], None)]
        assert runs == 3
        got = seg.get("emailable buyers")
        assert got is not None and got["last_run"]["size"] == 5 and "marketing.sms" in got["last_run"]["purposes"]
        assert [r["size"] for r in seg.runs("emailable buyers")] == [5, 4, 4]
        actions = [(e["action"], e["details"]) for e in audit.entries(a.rt.store, limit=1000)]
        assert [x for x, _ in actions if x.startswith("segment.")] == ["segment.create"] * 2 + ["segment.refresh"] * 3
        assert "example.com" not in orjson.dumps(actions).decode()

        # references: unknown, self, cycles (refused with the place), and names already taken
        with pytest.raises(SegmentError, match=r"^conditions\[0\]\.segment: no segment named 'nope'"):
            seg.create("x", {"conditions": [{"segment": "nope"}]}, "t")
        loop = {"any": [{"trait": "a", "exists": True}, {"segment": "emailable"}]}
        with pytest.raises(SegmentError, match=r"^conditions\[0\]\.any\[1\]\.segment: .* cannot refer to itself"):
            seg.update("emailable", {"conditions": [loop]}, "t")
        with pytest.raises(SegmentError, match=r"^conditions\[1\]\.segment: .*cycle: 'emailable' → 'emailable buyers'"):
            seg.update("emailable", {"conditions": [{"consent": "analytics"}, {"segment": "emailable buyers"}]}, "t")
        with pytest.raises(SegmentError) as info:
            seg.create("emailable", emailable, "t")
        assert info.value.status == 409
        with pytest.raises(SegmentError, match="does not match"):
            seg.create("other", emailable, "t")
        with pytest.raises(SegmentError) as info:
            seg.evaluate("nobody")
        assert info.value.status == 404
        # an update is seen by the segments that refer to it
        seg.update("emailable", {"conditions": [{"trait": "city", "equals": "Lisboa"}]}, "t")
        assert seg.evaluate("emailable buyers") == sorted([p["ann"], p["cat"]])
        # text definitions (YAML) work through the same door
        seg.create("yaml", b"conditions:\n  - last_seen: {not_within_days: 180}\n", "t")
        assert seg.evaluate("yaml") == sorted([p["bob"]])
        with a.rt.store.engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(segment_runs)).scalar()
        assert stored == 3


def test_profile_ids_are_not_in_a_preview(make_settings: Callable[..., Settings]) -> None:
    rt = Runtime(make_settings())
    try:
        random_store(rt, random.Random(9), 20)
        out = Segments(rt).preview({"conditions": []}, ["analytics"])
        text = orjson.dumps(out).decode()
        with rt.store.engine.connect() as conn:
            sids = [s for (s,) in conn.execute(select(subjects.c.subject_id))]
        assert out["size"] == 20 and not any(s in text for s in sids)
    finally:
        rt.close()
