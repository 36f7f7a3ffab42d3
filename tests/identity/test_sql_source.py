"""The edge log read from the store answers the graph rules exactly as the log held in memory does.

``SqlSource`` is what the writer's incremental profile updates read; ``MemorySource`` is the reference
of identity/graph.py (and the engine of a rebuild). For random edge logs with removed edges, self
loops and edges seen from both sides, both give the same edges, neighbour counts, limited-identifier
counts and profile members, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import Connection, delete, insert

from candor.config import Settings
from candor.identity.graph import Edge, MemorySource, Rules
from candor.identity.service import SqlSource
from candor.store import Store
from candor.store.schema import identifiers, identity_edges, identity_flags, profile_subjects

TYPES = ("user_id", "anonymous_id", "email", "phone")
NODES = [(t, f"p{i}") for t in TYPES for i in range(4)] + [("email", "p-shared")]


def _owner(node: tuple[str, str]) -> str:
    """Each identifier belongs to one subject; a few subjects hold several identifiers."""
    if node[0] == "user_id":
        return f"u{node[1]}"
    digits = node[1][1:]
    return f"s{(TYPES.index(node[0]) + (int(digits) if digits.isdigit() else 9)) % 5}"


_rules = st.sampled_from(("identify", "alias"))
_edge = st.tuples(st.sampled_from(NODES), st.sampled_from(NODES), _rules, st.booleans())
# an identifier linked to itself: the log may hold one, and it is nobody's neighbour
_self_loop = st.sampled_from(NODES).flatmap(lambda n: st.tuples(st.just(n), st.just(n), _rules, st.booleans()))
edge_logs = st.lists(
    st.one_of(_edge, _edge, _self_loop),
    max_size=40,
    unique_by=lambda x: (x[0], x[1], x[2]),
)


def _load(conn: Connection, log: list[tuple[tuple[str, str], tuple[str, str], str, bool]]) -> list[Edge]:
    for table in (identity_edges, identity_flags, identifiers, profile_subjects):
        conn.execute(delete(table))
    edges = []
    for i, (a, b, rule, removed) in enumerate(log, start=1):
        conn.execute(
            insert(identity_edges).values(
                id=i,
                a_type=a[0],
                a_pid=a[1],
                b_type=b[0],
                b_pid=b[1],
                rule=rule,
                a_subject=_owner(a),
                b_subject=_owner(b),
                created_ms=i,
                removed_ms=i if removed else None,
            )
        )
        edges.append(Edge(i, a, b, _owner(a), _owner(b), rule, removed=removed))
    for node in NODES:
        conn.execute(
            insert(identifiers).values(
                id_type=node[0], pseudonym=node[1], hmac_version=1, subject_id=_owner(node), first_seen_ms=1
            )
        )
    return edges


def test_sql_source_answers_as_the_log_in_memory(settings: Settings) -> None:
    store = Store(settings)
    store.upgrade()
    rules = Rules(limits={"user_id": 1, "email": 2})

    @hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(log=edge_logs, asked=st.sets(st.sampled_from(NODES), min_size=1))
    @example(  # a self loop, a pair seen from both sides, the same pair under two rules, a removed edge
        log=[
            (("email", "p1"), ("email", "p1"), "identify", False),
            (("email", "p1"), ("phone", "p2"), "identify", False),
            (("phone", "p2"), ("email", "p1"), "identify", False),
            (("email", "p1"), ("phone", "p2"), "alias", False),
            (("email", "p1"), ("phone", "p3"), "identify", True),
        ],
        asked={("email", "p1"), ("phone", "p2"), ("phone", "p3")},
    )
    def check(log: list[tuple[tuple[str, str], tuple[str, str], str, bool]], asked: set[tuple[str, str]]) -> None:
        with store.engine.begin() as conn:
            edges = _load(conn, log)
            counts: dict[str, dict[str, int]] = {}
            for t, p in NODES:
                if t in rules.limits:
                    per = counts.setdefault(_owner((t, p)), {})
                    per[t] = per.get(t, 0) + 1
            memory = MemorySource(edges, counts)
            sql = SqlSource(conn, rules, trust_flags=False)
            subjects = {_owner(n) for n in asked}
            assert sorted(sql.edges_of_subjects(subjects), key=lambda e: e.id) == sorted(
                memory.edges_of_subjects(subjects), key=lambda e: e.id
            )
            assert sql.neighbour_counts(asked) == memory.neighbour_counts(asked)
            assert sql.limited_counts(subjects) == memory.limited_counts(subjects)
            assert sql.profile_members(subjects) == subjects  # no profile rows stored: each alone

    try:
        check()
    finally:
        store.dispose()


def test_a_stored_supernode_flag_is_trusted_without_counting(settings: Settings) -> None:
    store = Store(settings)
    store.upgrade()
    try:
        with store.engine.begin() as conn:
            _load(conn, [(("email", "p-shared"), ("user_id", f"p{i}"), "identify", False) for i in range(3)])
            conn.execute(
                insert(identity_flags).values(
                    id_type="email", pseudonym="p-shared", reason="test", neighbours=99, created_ms=1
                )
            )
            trusting = SqlSource(conn, Rules(), trust_flags=True)
            counting = SqlSource(conn, Rules(), trust_flags=False)
            node = ("email", "p-shared")
            other = ("phone", "p-shared")  # same pseudonym, another type: not the flagged identifier
            assert trusting.neighbour_counts({node, other}) == {node: {"*": 99}, other: {}}
            assert counting.neighbour_counts({node}) == {node: {"user_id": 3}}
    finally:
        store.dispose()
