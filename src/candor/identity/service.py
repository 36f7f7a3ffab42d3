"""The identity graph in the store: incremental profiles, splits, the review queue, rebuilds.

The writer calls :meth:`Identity.after_edges` inside its transaction with the subjects its new edges
touch; profiles are recomputed by replaying the closure of those subjects (identity/graph.py), so an
incremental update and a full rebuild always agree. Splits and review decisions go through here too,
each with its audit entry.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, not_, or_, select, union, update

from candor import audit
from candor.identity.graph import HELD, Edge, MemorySource, Node, Outcome, Rules, decide
from candor.identity.graph import update as graph_update
from candor.store import Store, insert_sql, now_ms
from candor.store.schema import (
    consent_records,
    events,
    identifiers,
    identity_edges,
    identity_flags,
    identity_jobs,
    identity_reviews,
    profile_subjects,
)

log = logging.getLogger("candor.identity")
CHUNK = 500
E = identity_edges.c
# bumped whenever a split moves identifiers between subjects: writers then drop their caches
REHOME_MARK = "rehome"
# set while a bulk import has deferred profile updates (Ingestor.settle_profiles); left by a crash
PENDING_MARK = "profiles_pending"


class IdentityError(Exception):
    """A request the graph cannot honour (no such edge, already removed, ...); the message says why."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _chunks(items: Iterable[Any]) -> Iterable[list[Any]]:
    lst = list(items)
    for i in range(0, len(lst), CHUNK):
        yield lst[i : i + CHUNK]


def _edge(row: Any) -> Edge:
    return Edge(
        row.id,
        (row.a_type, row.a_pid),
        (row.b_type, row.b_pid),
        row.a_subject or "",
        row.b_subject or "",
        row.rule,
        removed=row.removed_ms is not None,
    )


EDGE_COLUMNS = (E.id, E.a_type, E.a_pid, E.b_type, E.b_pid, E.a_subject, E.b_subject, E.rule, E.removed_ms, E.state)


def _neighbour_counts_stmt() -> Any:
    """Per (pid, other type), how many distinct other identifiers share a live edge with (type, pid).

    Both sides of the log in one statement: each leads an index ((a_type, a_pid) by the unique pair,
    (b_type, b_pid) by its own), UNION removes the pairs seen from both sides and twice-ruled edges,
    and SQLite or PostgreSQL counts, so a node with many edges costs rows in the store, not in Python."""
    t: Any = bindparam("t")
    ids: Any = bindparam("ids", expanding=True)
    a_side = select(E.a_pid.label("p"), E.b_type.label("ot"), E.b_pid.label("op")).where(
        and_(E.a_type == t, E.a_pid.in_(ids), E.removed_ms.is_(None))
    )
    b_side = select(E.b_pid.label("p"), E.a_type.label("ot"), E.a_pid.label("op")).where(
        and_(E.b_type == t, E.b_pid.in_(ids), E.removed_ms.is_(None))
    )
    n = union(a_side, b_side).subquery("n")
    self_loop = and_(n.c.ot == t, n.c.op == n.c.p)
    return select(n.c.p, n.c.ot, func.count()).where(not_(self_loop)).group_by(n.c.p, n.c.ot)


# built once: building a SQLAlchemy select costs more than SQLite running it (the writer calls these
# for every group of events that brings a new edge)
_EDGES_OF = select(*EDGE_COLUMNS).where(
    or_(E.a_subject.in_(bindparam("ids", expanding=True)), E.b_subject.in_(bindparam("ids", expanding=True)))
)
_FLAGS_OF = select(identity_flags.c.id_type, identity_flags.c.pseudonym, identity_flags.c.neighbours).where(
    identity_flags.c.pseudonym.in_(bindparam("ids", expanding=True))
)
_NEIGHBOURS = _neighbour_counts_stmt()
# by subject (its index); the type is filtered in Python, so the planner cannot pick the primary key
_IDENTS_OF = select(identifiers.c.subject_id, identifiers.c.id_type, identifiers.c.pseudonym).where(
    identifiers.c.subject_id.in_(bindparam("ids", expanding=True))
)
_PROFILES_OF = select(profile_subjects.c.profile_id).where(
    profile_subjects.c.subject_id.in_(bindparam("ids", expanding=True))
)
_MEMBERS_OF = select(profile_subjects.c.subject_id).where(
    profile_subjects.c.profile_id.in_(bindparam("ids", expanding=True))
)
_STORED_PROFILES = select(profile_subjects.c.subject_id, profile_subjects.c.profile_id).where(
    profile_subjects.c.subject_id.in_(bindparam("ids", expanding=True))
)


class SqlSource:
    """The edge log as the graph rules read it, through one connection."""

    def __init__(self, conn: Any, rules: Rules, *, trust_flags: bool = True) -> None:
        self.conn = conn
        self.rules = rules
        self.trust_flags = trust_flags
        self.states: dict[int, str] = {}

    def edges_of_subjects(self, subjects: set[str]) -> list[Edge]:
        out: dict[int, Edge] = {}
        for chunk in _chunks(subjects):
            for row in self.conn.execute(_EDGES_OF, {"ids": chunk}):
                out[row.id] = _edge(row)
                self.states[row.id] = row.state
        return list(out.values())

    def neighbour_counts(self, nodes: set[Node]) -> dict[Node, dict[str, int]]:
        result: dict[Node, dict[str, int]] = {}
        todo = set(nodes)
        if self.trust_flags:
            # a supernode stays one until a split re-checks it: no need to count its thousands of edges
            for chunk in _chunks({p for _, p in todo}):
                for t, p, n in self.conn.execute(_FLAGS_OF, {"ids": chunk}):
                    if (t, p) in todo:
                        result[(t, p)] = {"*": n}
                        todo.discard((t, p))
        by_type: dict[str, list[str]] = {}
        for t, p in todo:
            by_type.setdefault(t, []).append(p)
            result[(t, p)] = {}
        for t, pids in by_type.items():
            for chunk in _chunks(pids):
                for p, ot, n in self.conn.execute(_NEIGHBOURS, {"t": t, "ids": chunk}):
                    result[(t, p)][ot] = n
        return result

    def limited_counts(self, subjects: set[str]) -> dict[str, dict[str, int]]:
        wanted = set(self.rules.limits)
        out: dict[str, dict[str, int]] = {}
        for chunk in _chunks(subjects):
            per: dict[str, dict[str, set[str]]] = {}
            for sid, t, p in self.conn.execute(_IDENTS_OF, {"ids": chunk}):
                if t in wanted:
                    per.setdefault(sid, {}).setdefault(t, set()).add(p)
            for sid, types in per.items():
                out[sid] = {t: len(v) for t, v in types.items()}
        return out

    def profile_members(self, subjects: set[str]) -> set[str]:
        profiles: set[str] = set()
        for chunk in _chunks(subjects):
            profiles.update(self.conn.execute(_PROFILES_OF, {"ids": chunk}).scalars())
        members = set(subjects)
        for chunk in _chunks(profiles):
            members.update(self.conn.execute(_MEMBERS_OF, {"ids": chunk}).scalars())
        return members


class BulkSource(MemorySource):
    """The whole edge log read into memory in one scan, for updates that touch most of the graph.

    A bulk resolution touches nearly every subject: the closure replay through :class:`SqlSource`
    would ask the store thousands of small questions (edges, neighbour counts, limits, profiles of
    500 subjects at a time). Here each table is read once; the rules and the replay are the same
    (identity/graph.py), so the outcome is the one an incremental update or a rebuild would give.
    """

    def __init__(self, conn: Any, rules: Rules, *, trust_flags: bool = True) -> None:
        self.conn = conn
        self.rules = rules
        self.trust_flags = trust_flags
        names: dict[str, str] = {}  # one string object per pseudonym and subject id: less memory
        edges: list[Edge] = []
        db_states: dict[int, str] = {}

        def one(v: str | None) -> str:
            v = v or ""
            return names.setdefault(v, v)

        for eid, at, ap, bt, bp, asub, bsub, rule, removed_ms, state in conn.execute(select(*EDGE_COLUMNS)):
            edges.append(
                Edge(eid, (one(at), one(ap)), (one(bt), one(bp)), one(asub), one(bsub), rule, removed_ms is not None)
            )
            db_states[eid] = state
        counts: dict[str, dict[str, int]] = {}
        if rules.limits:
            q = select(identifiers.c.subject_id, identifiers.c.id_type, identifiers.c.pseudonym).where(
                identifiers.c.id_type.in_(sorted(rules.limits))
            )
            seen: set[tuple[str, str, str]] = set()
            for sid, t, p in conn.execute(q):
                if (sid, t, p) not in seen:
                    seen.add((sid, t, p))
                    per = counts.setdefault(one(sid), {})
                    per[t] = per.get(t, 0) + 1
        super().__init__(edges, counts)
        self.states = db_states
        self.profile_of = {
            one(s): one(p)
            for s, p in conn.execute(select(profile_subjects.c.subject_id, profile_subjects.c.profile_id))
        }
        self.flags: dict[Node, int] = {}
        if trust_flags:
            for t, p, n in conn.execute(
                select(identity_flags.c.id_type, identity_flags.c.pseudonym, identity_flags.c.neighbours)
            ):
                self.flags[(t, p)] = n

    def neighbour_counts(self, nodes: set[Node]) -> dict[Node, dict[str, int]]:
        known = {n: {"*": self.flags[n]} for n in nodes if n in self.flags}
        return known | super().neighbour_counts({n for n in nodes if n not in known})

    def before(self, subjects: set[str]) -> dict[str, str]:
        """The stored profile of each of ``subjects`` that has one (as read at the start)."""
        return {s: self.profile_of[s] for s in subjects if s in self.profile_of}


def identity_rules(settings: Any) -> Rules:
    """The graph's guards from the settings (CANDOR_IDENTITY_*)."""
    return Rules(
        limits=settings.identity_limit_map,
        max_shared=settings.identity_max_shared,
        weak=frozenset(t.strip() for t in settings.identity_weak.split(",") if t.strip()),
        anonymous_shared=settings.identity_max_shared * 5,
    )


class Identity:
    """Profiles over the store. ``on_change`` hears the subjects whose profile changed."""

    def __init__(self, store: Store, vault: Any = None, rules: Rules | None = None, on_change: Any = None) -> None:
        self.store = store
        self.vault = vault
        self.rules = rules or Rules()
        self.on_change = on_change

    # -- incremental ---------------------------------------------------------------------------
    def after_edges(self, conn: Any, subjects: set[str], *, trust_flags: bool = True, bulk: bool = False) -> Outcome:
        """Recompute the profiles reachable from ``subjects`` and store the outcome (same transaction).

        ``bulk``: read the whole log into memory first (:class:`BulkSource`), for updates that touch
        a large share of the graph (a full resolution); the outcome is the same either way."""
        source: SqlSource | BulkSource = (
            BulkSource(conn, self.rules, trust_flags=trust_flags)
            if bulk
            else SqlSource(conn, self.rules, trust_flags=trust_flags)
        )
        outcome = graph_update(source, {s for s in subjects if s}, self.rules)
        self._store(conn, source, outcome)
        return outcome

    def mark_pending(self, conn: Any) -> None:
        """Record that profiles wait for a deferred update (same transaction as the edges)."""
        stmt = self.store.insert(identity_jobs)
        stmt = stmt.on_conflict_do_update(index_elements=["name"], set_={"updated_ms": stmt.excluded.updated_ms})
        conn.execute(stmt, {"name": PENDING_MARK, "state": "{}", "updated_ms": now_ms()})

    def clear_pending(self, conn: Any) -> None:
        conn.execute(delete(identity_jobs).where(identity_jobs.c.name == PENDING_MARK))

    def profiles_pending(self) -> bool:
        """Whether an import left profiles behind its edges (deferred to later, or killed before settling)."""
        with self.store.engine.connect() as conn:
            found = conn.execute(select(identity_jobs.c.name).where(identity_jobs.c.name == PENDING_MARK)).scalar()
        return found is not None

    def settle_interrupted(self, *, actor: str = "system") -> bool:
        """Profiles left behind their edges by an import (see :meth:`profiles_pending`): rebuild them
        by a full replay. True when there were."""
        if not self.profiles_pending():
            return False
        self.rebuild(actor=actor)
        return True

    def _store(self, conn: Any, source: SqlSource | BulkSource, outcome: Outcome) -> None:
        before: dict[str, str] = {}
        if isinstance(source, BulkSource):
            before = source.before(outcome.subjects)
        else:
            for chunk in _chunks(outcome.subjects):
                before.update(conn.execute(_STORED_PROFILES, {"ids": chunk}).all())
        sizes = Counter(outcome.profile_of.values())
        after = {s: p for s, p in outcome.profile_of.items() if sizes[p] > 1}
        if before != after:
            # only the rows that change: a bulk update moves a share of a million subjects
            gone = [s for s, p in before.items() if after.get(s) != p]
            for chunk in _chunks(gone):
                conn.execute(delete(profile_subjects).where(profile_subjects.c.subject_id.in_(chunk)))
            rows = [(s, p) for s, p in after.items() if before.get(s) != p]
            sql = insert_sql(conn, "profile_subjects", ("subject_id", "profile_id"), conflict=None)
            for i in range(0, len(rows), 5000):
                conn.exec_driver_sql(sql, rows[i : i + 5000])
        changed: dict[str, list[int]] = {}
        for edge_id, state in outcome.states.items():
            if source.states.get(edge_id) != state:
                changed.setdefault(state, []).append(edge_id)
        for state, ids in changed.items():
            for chunk in _chunks(ids):
                conn.execute(update(identity_edges).where(E.id.in_(chunk)).values(state=state))
        if HELD in changed:
            self._open_conflicts(conn, changed[HELD])
        for (t, p), n in outcome.flagged.items():
            if n < 0:
                continue
            conn.execute(
                self.store.insert_ignore(identity_flags),
                {
                    "id_type": t,
                    "pseudonym": p,
                    "subject_id": conn.execute(
                        select(identifiers.c.subject_id).where(
                            and_(identifiers.c.id_type == t, identifiers.c.pseudonym == p)
                        )
                    ).scalar(),
                    "reason": f"linked to more than {self.rules.max_shared} distinct identifiers of one type",
                    "neighbours": n,
                    "created_ms": now_ms(),
                },
            )
        if not source.trust_flags:
            # a full recount: identifiers no longer over the threshold are supernodes no more
            met = {p for _, p in outcome.flagged}
            touched = {n for e in source.edges_of_subjects(outcome.subjects) for n in (e.a, e.b)}
            for chunk in _chunks({p for _, p in touched if p not in met}):
                conn.execute(delete(identity_flags).where(identity_flags.c.pseudonym.in_(chunk)))
        moved = {s for s in outcome.subjects if before.get(s) != after.get(s)}
        if moved and self.on_change is not None:
            self.on_change(moved)

    def _open_conflicts(self, conn: Any, edge_ids: list[int]) -> None:
        open_for = set()
        for chunk in _chunks(edge_ids):
            open_for.update(
                conn.execute(
                    select(identity_reviews.c.edge_id).where(
                        and_(identity_reviews.c.edge_id.in_(chunk), identity_reviews.c.state == "open")
                    )
                ).scalars()
            )
        rows = []
        for chunk in _chunks([i for i in edge_ids if i not in open_for]):
            for r in conn.execute(select(*EDGE_COLUMNS).where(E.id.in_(chunk))):
                rows.append(
                    {
                        "kind": "conflict",
                        "edge_id": r.id,
                        "a_type": r.a_type,
                        "a_pid": r.a_pid,
                        "b_type": r.b_type,
                        "b_pid": r.b_pid,
                        "a_subject": r.a_subject,
                        "b_subject": r.b_subject,
                        "score": None,
                        "reason": "linking would join profiles over the limit of "
                        + ", ".join(f"{n} {t}" for t, n in self.rules.limits.items()),
                        "state": "open",
                        "created_ms": now_ms(),
                    }
                )
        if rows:
            conn.execute(identity_reviews.insert(), rows)

    # -- reading -------------------------------------------------------------------------------
    def profile_of(self, subject_id: str, conn: Any = None) -> str:
        def q(c: Any) -> str:
            pid = c.execute(
                select(profile_subjects.c.profile_id).where(profile_subjects.c.subject_id == subject_id)
            ).scalar()
            return pid or subject_id

        if conn is not None:
            return q(conn)
        with self.store.engine.connect() as c:
            return q(c)

    def members(self, profile_id: str, conn: Any = None) -> list[str]:
        """The subjects of a profile (a profile id, or any subject id in it)."""

        def q(c: Any) -> list[str]:
            pid = self.profile_of(profile_id, c)
            found = (
                c.execute(select(profile_subjects.c.subject_id).where(profile_subjects.c.profile_id == pid))
                .scalars()
                .all()
            )
            return sorted(found) or [pid]

        if conn is not None:
            return q(conn)
        with self.store.engine.connect() as c:
            return q(c)

    def edges_of(self, subject_ids: list[str], conn: Any = None) -> list[dict[str, Any]]:
        def q(c: Any) -> list[dict[str, Any]]:
            rows: dict[int, dict[str, Any]] = {}
            for chunk in _chunks(subject_ids):
                for r in c.execute(
                    select(identity_edges).where(or_(E.a_subject.in_(chunk), E.b_subject.in_(chunk)))
                ).mappings():
                    rows[r["id"]] = dict(r)
            return [rows[k] for k in sorted(rows)]

        if conn is not None:
            return q(conn)
        with self.store.engine.connect() as c:
            return q(c)

    # -- adding evidence -----------------------------------------------------------------------
    def add_edge(
        self,
        conn: Any,
        a: Node,
        b: Node,
        a_subject: str,
        b_subject: str,
        *,
        rule: str,
        score: float | None = None,
        source_id: int | None = None,
    ) -> None:
        """Append one edge (no profile update: call :meth:`after_edges` once for a batch)."""
        conn.execute(
            self.store.insert_ignore(identity_edges),
            {
                "a_type": a[0],
                "a_pid": a[1],
                "b_type": b[0],
                "b_pid": b[1],
                "rule": rule,
                "source_id": source_id,
                "message_id": None,
                "score": score,
                "subject_id": a_subject,
                "a_subject": a_subject,
                "b_subject": b_subject,
                "created_ms": now_ms(),
            },
        )

    def link(
        self,
        conn: Any,
        a: Node,
        b: Node,
        *,
        rule: str,
        actor: str,
        score: float | None = None,
        source_id: int | None = None,
    ) -> int | None:
        """Append an edge between two known identifiers and update the profiles; the new edge id."""
        subj = {}
        for node in (a, b):
            sid = conn.execute(
                select(identifiers.c.subject_id).where(
                    and_(identifiers.c.id_type == node[0], identifiers.c.pseudonym == node[1])
                )
            ).scalar()
            if sid is None:
                raise IdentityError(f"unknown identifier {node[0]}:{node[1][:12]}…", 404)
            subj[node] = sid
        self.add_edge(conn, a, b, subj[a], subj[b], rule=rule, score=score, source_id=source_id)
        edge_id = conn.execute(
            select(E.id).where(
                and_(E.a_type == a[0], E.a_pid == a[1], E.b_type == b[0], E.b_pid == b[1], E.rule == rule)
            )
        ).scalar()
        self.after_edges(conn, {subj[a], subj[b]})
        audit.record(
            conn,
            actor,
            "identity.link",
            subject_id=subj[a],
            target=f"edge:{edge_id}",
            details={"rule": rule, "score": score, "other_subject": subj[b]},
        )
        return int(edge_id) if edge_id is not None else None

    # -- split ---------------------------------------------------------------------------------
    def split(self, edge_id: int, *, actor: str, reason: str = "") -> dict[str, Any]:
        """Remove a bad edge (kept in the log as removed) and recompute the profiles it touched."""
        with self.store.write() as conn:
            row = conn.execute(select(*EDGE_COLUMNS).where(E.id == edge_id)).first()
            if row is None:
                raise IdentityError(f"no identity edge {edge_id}", 404)
            if row.removed_ms is not None:
                raise IdentityError(f"identity edge {edge_id} was already removed", 409)
            before = {s: self.profile_of(s, conn) for s in (row.a_subject, row.b_subject) if s}
            conn.execute(
                update(identity_edges)
                .where(E.id == edge_id)
                .values(removed_ms=now_ms(), removed_by=actor[:100], state="removed")
            )
            rehomed: list[str] = []
            if row.a_subject and row.a_subject == row.b_subject:
                rehomed = self._rehome(conn, row)
            start = {s for s in (row.a_subject, row.b_subject) if s} | set(rehomed)
            outcome = self.after_edges(conn, start, trust_flags=False)
            conn.execute(
                update(identity_reviews)
                .where(and_(identity_reviews.c.edge_id == edge_id, identity_reviews.c.state == "open"))
                .values(state="rejected", decided_ms=now_ms(), decided_by=actor[:100])
            )
            audit.record(
                conn,
                actor,
                "identity.split",
                subject_id=row.a_subject,
                target=f"edge:{edge_id}",
                details={
                    "rule": row.rule,
                    "reason": reason[:300],
                    "profiles_before": sorted(set(before.values())),
                    "profiles_after": sorted({outcome.profile_of.get(s, s) for s in start}),
                    "new_subjects": rehomed,
                },
            )
        return {
            "edge": edge_id,
            "profiles_before": sorted(set(before.values())),
            "profiles_after": sorted({outcome.profile_of.get(s, s) for s in start}),
            "new_subjects": rehomed,
        }

    def _rehome(self, conn: Any, row: Any) -> list[str]:
        """An edge inside one subject was removed: move the side it cut off to a subject of its own.

        The identifiers on the far side of the cut, the events they sent (re-sealed under the new
        subject's key), their consent records and the ends of their edges move; the rest stays.
        """
        sid = row.a_subject
        a, b = (row.a_type, row.a_pid), (row.b_type, row.b_pid)
        nodes = {
            (t, p)
            for t, p in conn.execute(
                select(identifiers.c.id_type, identifiers.c.pseudonym).where(identifiers.c.subject_id == sid)
            )
        }
        parent = {n: n for n in nodes}

        def find(n: Node) -> Node:
            while parent[n] != n:
                parent[n] = parent[parent[n]]
                n = parent[n]
            return n

        for r in conn.execute(
            select(E.a_type, E.a_pid, E.b_type, E.b_pid).where(
                and_(E.a_subject == sid, E.b_subject == sid, E.removed_ms.is_(None))
            )
        ):
            x, y = (r.a_type, r.a_pid), (r.b_type, r.b_pid)
            if x in parent and y in parent:
                parent[find(x)] = find(y)
        if a not in parent or b not in parent or find(a) == find(b):
            return []
        side = {n for n in nodes if find(n) == find(b)}
        if self.vault is None:
            raise IdentityError("a split inside one subject needs the vault", 500)
        new_sid, new_key = self.vault.new_subject(conn)
        pids = {t: [p for tt, p in side if tt == t] for t in {t for t, _ in side}}
        for t, plist in pids.items():
            for chunk in _chunks(plist):
                conn.execute(
                    update(identifiers)
                    .where(and_(identifiers.c.id_type == t, identifiers.c.pseudonym.in_(chunk)))
                    .values(subject_id=new_sid)
                )
                for end in ("a", "b"):
                    conn.execute(
                        update(identity_edges)
                        .where(and_(E[f"{end}_subject"] == sid, E[f"{end}_type"] == t, E[f"{end}_pid"].in_(chunk)))
                        .values({f"{end}_subject": new_sid})
                    )
                conn.execute(
                    update(consent_records)
                    .where(
                        and_(
                            consent_records.c.subject_id == sid,
                            consent_records.c.id_type == t,
                            consent_records.c.pseudonym.in_(chunk),
                        )
                    )
                    .values(subject_id=new_sid)
                )
        # events belong to the identifier that sent them: the userId, else the anonymousId
        users, anons = set(pids.get("user_id", [])), set(pids.get("anonymous_id", []))
        old_key = self.vault.key_for(sid, conn)
        moved = 0
        for ev in conn.execute(
            select(events.c.id, events.c.user_pid, events.c.anon_pid, events.c.sealed).where(events.c.subject_id == sid)
        ).all():
            if ev.user_pid in users or (ev.user_pid is None and ev.anon_pid in anons):
                plain = self.vault.open_with(old_key, ev.sealed, sid.encode())
                conn.execute(
                    update(events)
                    .where(events.c.id == ev.id)
                    .values(subject_id=new_sid, sealed=self.vault.seal_with(new_key, plain, new_sid.encode()))
                )
                moved += 1
        stmt = self.store.insert(identity_jobs)
        stmt = stmt.on_conflict_do_update(index_elements=["name"], set_={"updated_ms": stmt.excluded.updated_ms})
        conn.execute(stmt, {"name": REHOME_MARK, "state": "{}", "updated_ms": now_ms()})
        log.info("split moved %d identifiers and %d events to a new subject", len(side), moved)
        return [new_sid]

    # -- review queue --------------------------------------------------------------------------
    def reviews(self, state: str = "open", limit: int = 100) -> list[dict[str, Any]]:
        with self.store.engine.connect() as conn:
            q = select(identity_reviews).order_by(identity_reviews.c.id).limit(limit)
            if state != "all":
                q = q.where(identity_reviews.c.state == state)
            return [dict(r) for r in conn.execute(q).mappings()]

    def decide_review(self, review_id: int, *, approve: bool, actor: str) -> dict[str, Any]:
        with self.store.write() as conn:
            r = conn.execute(select(identity_reviews).where(identity_reviews.c.id == review_id)).mappings().first()
            if r is None:
                raise IdentityError(f"no review item {review_id}", 404)
            if r["state"] != "open":
                raise IdentityError(f"review item {review_id} was already decided ({r['state']})", 409)
            edge_id = None
            if approve:
                edge_id = self.link(
                    conn,
                    (r["a_type"], r["a_pid"]),
                    (r["b_type"], r["b_pid"]),
                    rule="manual",
                    actor=actor,
                    score=r["score"],
                )
            elif r["edge_id"] is not None:
                conn.execute(
                    update(identity_edges)
                    .where(and_(E.id == r["edge_id"], E.removed_ms.is_(None)))
                    .values(removed_ms=now_ms(), removed_by=actor[:100], state="removed")
                )
                self.after_edges(conn, {s for s in (r["a_subject"], r["b_subject"]) if s}, trust_flags=False)
            conn.execute(
                update(identity_reviews)
                .where(identity_reviews.c.id == review_id)
                .values(state="approved" if approve else "rejected", decided_ms=now_ms(), decided_by=actor[:100])
            )
            audit.record(
                conn,
                actor,
                "identity.review",
                subject_id=r["a_subject"],
                target=f"review:{review_id}",
                details={"decision": "approved" if approve else "rejected", "kind": r["kind"], "edge": edge_id},
            )
        return {"review": review_id, "state": "approved" if approve else "rejected", "edge": edge_id}

    # -- rebuild -------------------------------------------------------------------------------
    def rebuild(self, *, actor: str = "system") -> dict[str, int]:
        """Replay the whole edge log: profiles, edge states and supernode flags from scratch."""
        with self.store.write() as conn:
            source = BulkSource(conn, self.rules, trust_flags=False)
            edges = sorted(source.edges.values(), key=lambda e: e.id)
            subjects = {s for e in edges for s in (e.a_subject, e.b_subject) if s}
            nodes = {n for e in edges if not e.removed for n in (e.a, e.b)}
            counts = source.neighbour_counts(nodes)
            flags = {n: max(c.values()) for n, c in counts.items() if self.rules.is_flagged(n, c)}
            outcome = decide(subjects, edges, flags, source.limited_counts(subjects), self.rules)
            # profile rows: only the ones that change are written (a million-subject store keeps most),
            # and rows of subjects no edge mentions any more go
            stale = [s for s in source.profile_of if s not in outcome.subjects]
            for chunk in _chunks(stale):
                conn.execute(delete(profile_subjects).where(profile_subjects.c.subject_id.in_(chunk)))
            conn.execute(delete(identity_flags))
            self._store(conn, source, outcome)
            self.clear_pending(conn)  # a full replay leaves nothing pending
            audit.record(conn, actor, "identity.rebuild", details={"edges": len(edges), "subjects": len(subjects)})
        sizes = Counter(outcome.profile_of.values())
        return {
            "edges": len(edges),
            "subjects": len(subjects),
            "profiles": len(sizes),
            "merged_profiles": sum(1 for n in sizes.values() if n > 1),
            "held": sum(1 for s in outcome.states.values() if s == HELD),
            "flagged": len(flags),
        }
