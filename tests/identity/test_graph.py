"""The identity graph's incremental updates agree with a full replay of the same edge log."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from candor.identity.graph import FLAGGED, HELD, LINKED, REMOVED, Edge, MemorySource, Rules, replay, update

TYPES = ("user_id", "anonymous_id", "email", "phone")
RULES = Rules(limits={"user_id": 1}, max_shared=2, anonymous_shared=3)


def nodes_and_subjects(n_nodes: int, n_subjects: int, data: st.DataObject) -> dict[tuple[str, str], str]:
    owner = {}
    for i in range(n_nodes):
        t = data.draw(st.sampled_from(TYPES))
        owner[(t, f"n{i}")] = f"s{data.draw(st.integers(0, n_subjects - 1)):02d}"
    return owner


def counts_of(owner: dict[tuple[str, str], str]) -> dict[str, dict[str, int]]:
    c: dict[str, Counter[str]] = {}
    for (t, _), s in owner.items():
        if t == "user_id":
            c.setdefault(s, Counter())[t] += 1
    return {s: dict(v) for s, v in c.items()}


def partition(profile_of: dict[str, str]) -> set[frozenset[str]]:
    groups: dict[str, set[str]] = {}
    for s, p in profile_of.items():
        groups.setdefault(p, set()).add(s)
    return {frozenset(g) for g in groups.values() if len(g) > 1}


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_incremental_equals_replay(data: st.DataObject) -> None:
    owner = nodes_and_subjects(data.draw(st.integers(2, 12)), data.draw(st.integers(1, 8)), data)
    nodes = sorted(owner)
    counts = counts_of(owner)
    source = MemorySource(counts=counts)
    next_id = 1
    for _ in range(data.draw(st.integers(1, 40))):
        live = [e.id for e in source.edges.values() if not e.removed]
        if live and data.draw(st.integers(0, 4)) == 0:
            gone = source.remove(data.draw(st.sampled_from(live)))
            source.apply(update(source, {gone.a_subject, gone.b_subject}, RULES))
        else:
            a, b = data.draw(st.sampled_from(nodes)), data.draw(st.sampled_from(nodes))
            if a == b:
                continue
            rule = data.draw(st.sampled_from(("identify", "alias", "probabilistic", "manual")))
            e = Edge(next_id, a, b, owner[a], owner[b], rule)
            next_id += 1
            source.add(e)
            source.apply(update(source, {e.a_subject, e.b_subject}, RULES))
        full = replay(source.edges.values(), counts, RULES)
        assert partition(source.profile_of) == partition(full.profile_of)
        assert source.states == full.states


def e(i: int, a: tuple[str, str], b: tuple[str, str], sa: str, sb: str, rule: str = "identify") -> Edge:
    return Edge(i, a, b, sa, sb, rule)


U1, U2, A1, A2, M = ("user_id", "u1"), ("user_id", "u2"), ("anonymous_id", "a1"), ("anonymous_id", "a2"), ("email", "m")


def test_two_authenticated_users_are_held_not_merged() -> None:
    edges = [e(1, U1, A1, "s1", "s3"), e(2, U2, A1, "s2", "s3")]
    out = replay(edges, {"s1": {"user_id": 1}, "s2": {"user_id": 1}}, Rules())
    assert out.states == {1: LINKED, 2: HELD}
    assert out.profile_of["s3"] == "s1" and out.profile_of["s2"] == "s2"


def test_a_reviewers_manual_edge_is_not_held() -> None:
    edges = [e(1, U1, A1, "s1", "s3"), e(2, U2, A1, "s2", "s3", rule="manual")]
    out = replay(edges, {"s1": {"user_id": 1}, "s2": {"user_id": 1}}, Rules())
    assert out.states[2] == LINKED and len(set(out.profile_of.values())) == 1


def test_a_supernode_stops_linking_everything_it_touched() -> None:
    edges = [e(i, ("anonymous_id", f"a{i}"), M, f"s{i}", "s0") for i in range(1, 5)]
    rules = Rules(max_shared=10, anonymous_shared=3)
    out = replay(edges, {}, rules)
    assert set(out.states.values()) == {FLAGGED}
    assert all(out.profile_of[s] == s for s in out.subjects)
    assert out.flagged == {M: 4}
    # under the threshold the same evidence links all of them
    out = replay(edges[:3], {}, rules)
    assert set(out.states.values()) == {LINKED} and set(out.profile_of.values()) == {"s0"}


def test_a_split_separates_and_frees_a_held_edge() -> None:
    source = MemorySource(counts={"s1": {"user_id": 1}, "s2": {"user_id": 1}})
    for edge in (e(1, U1, A1, "s1", "s3"), e(2, U2, A1, "s2", "s3"), e(3, U1, A2, "s1", "s4")):
        source.add(edge)
        source.apply(update(source, {edge.a_subject, edge.b_subject}, Rules()))
    assert source.states == {1: LINKED, 2: HELD, 3: LINKED}
    assert partition(source.profile_of) == {frozenset({"s1", "s3", "s4"})}
    source.remove(1)
    source.apply(update(source, {"s1", "s3"}, Rules()))
    # without the bad edge, the anonymous browser belongs with the second user
    assert source.states == {1: REMOVED, 2: LINKED, 3: LINKED}
    assert partition(source.profile_of) == {frozenset({"s1", "s4"}), frozenset({"s2", "s3"})}


def test_a_new_supernode_undoes_the_links_it_made_incrementally() -> None:
    rules = Rules(max_shared=10, anonymous_shared=3)
    source = MemorySource()
    for i in range(1, 5):
        edge = e(i, ("anonymous_id", f"a{i}"), M, f"s{i}", "s0")
        source.add(edge)
        source.apply(update(source, {edge.a_subject, edge.b_subject}, rules))
        if i == 3:
            assert partition(source.profile_of) == {frozenset({"s0", "s1", "s2", "s3"})}
    assert partition(source.profile_of) == set()
    assert set(source.states.values()) == {FLAGGED}


def test_a_shared_phone_is_evidence_not_a_link() -> None:
    ph = ("phone", "p")
    edges = [e(1, ("record", "r1"), ph, "s1", "s1"), e(2, ("record", "r2"), ph, "s2", "s1")]
    out = replay(edges, {}, Rules())
    assert out.states == {1: LINKED, 2: "weak"}
    assert out.profile_of["s2"] == "s2"
    # with phone trusted (CANDOR_IDENTITY_WEAK empty) the family is one profile
    out = replay(edges, {}, Rules(weak=frozenset()))
    assert out.states == {1: LINKED, 2: LINKED} and out.profile_of["s2"] == "s1"
