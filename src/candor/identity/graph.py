"""The rules of the identity graph, as pure functions over the edge log.

Nodes are identifiers ``(type, pseudonym)``; each belongs to one subject (the holder of a data key).
Edges come from evidence (identify, alias, externalIds, a shared email, a probabilistic match, a
reviewer's decision). A profile is a connected component of subjects over the edges that *link*.

The log is replayed in edge-id order, and each edge gets one state:

- ``removed``: split by a person (kept in the log with who and when);
- ``flagged``: one end is a supernode, an identifier shared by too many others of one type (a store's
  default email, a kiosk's browser): it stops linking anything;
- ``weak``: a weak identifier (a phone number by default: families share one) is held by another
  subject; it is recorded, and probabilistic matching weighs it, but it does not link on its own;
- ``held``: linking would put more identifiers of a limited type in one profile than allowed (two
  different authenticated userIds by default): it waits in the review queue instead;
- ``linked``: it joins two profiles, or confirms a link inside one.

Everything is a function of the log (and of the identifiers each subject holds, for the limits), so
profiles can be rebuilt at any time, and an incremental update only has to replay the *closure* of
the subjects it touches: the subjects reachable over edges that are neither removed nor flagged. No
decision inside the closure depends on anything outside it, so replaying it gives exactly what a
full replay would; tests/identity/test_graph.py checks that for random edge sequences and splits.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

Node = tuple[str, str]

LINKED = "linked"
WEAK = "weak"
HELD = "held"
FLAGGED = "flagged"
REMOVED = "removed"


class Edge(NamedTuple):
    """One entry of the log as the rules read it (a tuple: a bulk resolution holds millions)."""

    id: int
    a: Node
    b: Node
    a_subject: str
    b_subject: str
    rule: str
    removed: bool = False


@dataclass(frozen=True)
class Rules:
    """The guards. ``limits``: at most this many identifiers of a type in one profile."""

    limits: Mapping[str, int] = field(default_factory=lambda: {"user_id": 1})
    max_shared: int = 10  # distinct neighbours of one type before an identifier stops linking
    anonymous_shared: int = 50  # a person has many browsers: anonymous ids get a higher threshold
    never_flagged: frozenset[str] = frozenset({"user_id"})
    # rules whose edges a person decided: never held by the limits
    decided_rules: frozenset[str] = frozenset({"manual"})
    # identifier types that never join two subjects by themselves (evidence for matching only)
    weak: frozenset[str] = frozenset({"phone"})

    def share_limit(self, neighbour_type: str) -> int:
        return self.anonymous_shared if neighbour_type == "anonymous_id" else self.max_shared

    def is_weak(self, e: Edge) -> bool:
        """An edge between two subjects through a weak identifier, not decided by a person."""
        return (
            e.a_subject != e.b_subject
            and (e.a[0] in self.weak or e.b[0] in self.weak)
            and e.rule not in self.decided_rules
        )

    def is_flagged(self, node: Node, neighbour_counts: Mapping[str, int]) -> bool:
        if node[0] in self.never_flagged:
            return False
        return any(n > self.share_limit(t) for t, n in neighbour_counts.items())


class EdgeSource(Protocol):
    """Where the log lives: in memory for tests, the store in production (identity/service.py)."""

    def edges_of_subjects(self, subjects: set[str]) -> list[Edge]:
        """Every edge (any state) with an end in one of ``subjects``."""
        ...

    def neighbour_counts(self, nodes: set[Node]) -> dict[Node, dict[str, int]]:
        """Per node, the number of distinct neighbours of each type over edges not removed."""
        ...

    def limited_counts(self, subjects: set[str]) -> dict[str, dict[str, int]]:
        """Per subject, how many identifiers of each limited type it holds."""
        ...

    def profile_members(self, subjects: set[str]) -> set[str]:
        """Every subject that currently shares a profile with one of ``subjects``."""
        ...


@dataclass
class Outcome:
    subjects: set[str]  # the subjects this outcome decides
    profile_of: dict[str, str]  # every subject above -> its profile id (itself when alone)
    states: dict[int, str]  # edge id -> state, for every edge with an end in ``subjects``
    flagged: dict[Node, int]  # supernodes met, with their largest neighbour count of one type


def closure(source: EdgeSource, start: Iterable[str], rules: Rules) -> tuple[set[str], list[Edge], dict[Node, int]]:
    """The subjects reachable from ``start`` over edges that may link, with all their edges."""
    seen = set(start)
    frontier = set(seen)
    edges: dict[int, Edge] = {}
    flags: dict[Node, int] = {}
    checked: set[Node] = set()
    while frontier:
        batch = source.edges_of_subjects(frontier)
        unknown = {n for e in batch if not e.removed for n in (e.a, e.b) if n not in checked}
        if unknown:
            for node, counts in source.neighbour_counts(unknown).items():
                if rules.is_flagged(node, counts):
                    flags[node] = max(counts.values())
            checked |= unknown
        nxt: set[str] = set()
        for e in batch:
            if e.id in edges:
                continue
            edges[e.id] = e
            if e.removed or e.a in flags or e.b in flags:
                continue
            if rules.is_weak(e):
                continue
            for s in (e.a_subject, e.b_subject):
                if s not in seen:
                    seen.add(s)
                    nxt.add(s)
        frontier = nxt
    return seen, sorted(edges.values(), key=lambda e: e.id), flags


def decide(
    subjects: set[str],
    edges: list[Edge],
    flags: Mapping[Node, int],
    counts: Mapping[str, Mapping[str, int]],
    rules: Rules,
) -> Outcome:
    """Replay ``edges`` in id order over ``subjects`` (a closure): profiles and edge states."""
    parent = {s: s for s in subjects}
    tally: dict[str, dict[str, int]] = {s: dict(counts.get(s, {})) for s in subjects}

    def find(s: str) -> str:
        root = s
        while parent[root] != root:
            root = parent[root]
        while parent[s] != root:
            parent[s], s = root, parent[s]
        return root

    states: dict[int, str] = {}
    for e in edges:
        if e.removed:
            states[e.id] = REMOVED
            continue
        if e.a in flags or e.b in flags:
            states[e.id] = FLAGGED
            continue
        if rules.is_weak(e):
            states[e.id] = WEAK
            continue
        ra, rb = find(e.a_subject), find(e.b_subject)
        if ra == rb:
            states[e.id] = LINKED
            continue
        ta, tb = tally[ra], tally[rb]
        if e.rule not in rules.decided_rules and any(
            ta.get(t, 0) and tb.get(t, 0) and ta.get(t, 0) + tb.get(t, 0) > limit for t, limit in rules.limits.items()
        ):
            states[e.id] = HELD
            continue
        keep, drop = (ra, rb) if ra < rb else (rb, ra)
        parent[drop] = keep
        merged = tally[keep]
        for t, n in tally.pop(drop).items():
            merged[t] = merged.get(t, 0) + n
        states[e.id] = LINKED
    members: dict[str, list[str]] = defaultdict(list)
    for s in subjects:
        members[find(s)].append(s)
    profile_of = {s: min(group) for group in members.values() for s in group}
    return Outcome(subjects=set(subjects), profile_of=profile_of, states=states, flagged=dict(flags))


def update(source: EdgeSource, start: Iterable[str], rules: Rules) -> Outcome:
    """Recompute the profiles of the subjects reachable from ``start``: exact, by closure replay.

    Subjects that shared a profile with any of them before are taken in too (an edge that stops
    linking, by a split or a new supernode, may leave them outside the new closure), until the set
    no longer grows.
    """
    wanted = set(start)
    while True:
        subjects, edges, flags = closure(source, wanted, rules)
        before = source.profile_members(subjects)
        if before <= subjects:
            break
        wanted = subjects | before
    limited = source.limited_counts(subjects) if rules.limits else {}
    return decide(subjects, edges, flags, limited, rules)


class MemorySource:
    """The log in memory: the reference for tests and the engine of a full rebuild."""

    def __init__(self, edges: Iterable[Edge] = (), counts: Mapping[str, Mapping[str, int]] | None = None) -> None:
        self.edges: dict[int, Edge] = {}
        # lists, not sets: a bulk resolution indexes millions of edges, and readers de-duplicate anyway
        self.by_subject: dict[str, list[int]] = defaultdict(list)
        self.by_node: dict[Node, list[int]] = defaultdict(list)
        self.counts: dict[str, dict[str, int]] = {s: dict(c) for s, c in (counts or {}).items()}
        self.profile_of: dict[str, str] = {}
        self.states: dict[int, str] = {}
        for e in edges:
            self.add(e)

    def add(self, e: Edge) -> None:
        self.edges[e.id] = e
        self.by_subject[e.a_subject].append(e.id)
        self.by_subject[e.b_subject].append(e.id)
        self.by_node[e.a].append(e.id)
        self.by_node[e.b].append(e.id)

    def remove(self, edge_id: int) -> Edge:
        e = self.edges[edge_id]
        gone = Edge(e.id, e.a, e.b, e.a_subject, e.b_subject, e.rule, removed=True)
        self.edges[edge_id] = gone
        return gone

    def edges_of_subjects(self, subjects: set[str]) -> list[Edge]:
        ids: set[int] = set().union(*(self.by_subject.get(s, ()) for s in subjects)) if subjects else set()
        return [self.edges[i] for i in ids]

    def neighbour_counts(self, nodes: set[Node]) -> dict[Node, dict[str, int]]:
        out: dict[Node, dict[str, int]] = {}
        for node in nodes:
            seen: dict[str, set[Node]] = defaultdict(set)
            for i in self.by_node.get(node, ()):
                e = self.edges[i]
                if e.removed:
                    continue
                other = e.b if e.a == node else e.a
                if other != node:
                    seen[other[0]].add(other)
            out[node] = {t: len(v) for t, v in seen.items()}
        return out

    def limited_counts(self, subjects: set[str]) -> dict[str, dict[str, int]]:
        return {s: self.counts[s] for s in subjects if s in self.counts}

    def profile_members(self, subjects: set[str]) -> set[str]:
        profiles = {self.profile_of.get(s, s) for s in subjects}
        return {s for s, p in self.profile_of.items() if p in profiles} | set(subjects)

    def apply(self, outcome: Outcome) -> None:
        """Keep what ``outcome`` decided; like the store, remember only profiles of two or more."""
        sizes = Counter(outcome.profile_of.values())
        for s in outcome.subjects:
            p = outcome.profile_of[s]
            if sizes[p] > 1:
                self.profile_of[s] = p
            else:
                self.profile_of.pop(s, None)
        self.states.update(outcome.states)

    def subjects(self) -> set[str]:
        return {s for s, ids in self.by_subject.items() if ids}


def replay(edges: Iterable[Edge], counts: Mapping[str, Mapping[str, int]], rules: Rules) -> Outcome:
    """A full replay of the log: what every incremental update must agree with."""
    source = MemorySource(edges, counts)
    return update(source, source.subjects(), rules)
