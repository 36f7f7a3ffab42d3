"""Probabilistic matching over the store: records without a shared identifier, linked by Splink.

``resolve`` trains a Fellegi–Sunter model (EM, term frequencies) on every active subject's newest
traits, predicts match probabilities over the blocked pairs, turns matches at or above the
threshold into ``probabilistic`` edges (with their score), strongest first and only where the two
profiles do not conflict (identity/clusters.py: birthdays, first names, limits), and sends the grey zone
and the refused matches to the review queue. A full run writes in one transaction and updates the
profiles once, from the edge log read in one scan (identity/service.py ``BulkSource``). ``link_new``
scores newly imported records against the candidates that share most of their HMAC'd blocking keys,
decrypting only those (and, for a match that would link, the other members of their profiles).

Plaintext needed for matching is decrypted in memory, matched in an in-memory DuckDB with spilling
off (identity/matching.py), and never written to disk. Restricted or erased subjects never take part.
The trained model (parameters only, no values) and the job's place are kept in ``identity_jobs``, so
an interrupted run resumes without retraining.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import orjson
from sqlalchemy import and_, func, select

from candor import audit, normalize
from candor.forking import can_fork, cores, forked_pool
from candor.identity.service import Identity
from candor.store import Store, insert_sql, now_ms
from candor.store.schema import (
    events,
    identifiers,
    identity_edges,
    identity_jobs,
    identity_reviews,
    match_keys,
    profile_subjects,
    subjects,
)
from candor.vault import KeyDestroyed, Vault, VaultError

log = logging.getLogger("candor.identity.resolve")
CHUNK = 500
JOB = "resolve"
ANCHOR_ORDER = ("record", "user_id", "anonymous_id")
MAX_CANDIDATES = 50  # most shared blocking keys first
EDGE_INSERT = (
    "a_type",
    "a_pid",
    "b_type",
    "b_pid",
    "rule",
    "score",
    "subject_id",
    "a_subject",
    "b_subject",
    "created_ms",
)
DECRYPT_SLICE = 20_000  # subjects per decryption task of a full resolution
BULK_KEYS = 200_000  # match_keys rows from which SQLite rebuilds the subject index instead of updating it


@dataclass
class ResolveReport:
    records: int = 0
    pairs_scored: int = 0
    linked: int = 0
    review: int = 0
    already_linked: int = 0
    conflicts: int = 0
    trained: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "pairs": self.pairs_scored,
            "linked": self.linked,
            "review": self.review,
            "already_linked": self.already_linked,
            "conflicts": self.conflicts,
            "trained": self.trained,
        }


def to_match_record(subject_id: str, traits: dict[str, Any], region: str = "US") -> dict[str, Any]:
    """The matcher's fields from Segment-style traits (plaintext, in memory only)."""
    raw_address = traits.get("address")
    address: dict[str, Any] = raw_address if isinstance(raw_address, dict) else {}
    first, last = traits.get("firstName"), traits.get("lastName")
    if not first and not last and isinstance(traits.get("name"), str):
        parts = traits["name"].split()
        if len(parts) >= 2:
            first, last = parts[0], " ".join(parts[1:])
    return {
        "record_id": subject_id,
        "first_name": first,
        "last_name": last,
        "email": normalize.email(traits.get("email")),
        "phone": normalize.phone(traits.get("phone"), region),
        "birthday": str(traits.get("birthday"))[:10] if traits.get("birthday") else None,
        "street": address.get("street"),
        "city": address.get("city"),
        "postal_code": address.get("postalCode"),
        "country": address.get("country"),
    }


class Resolver:
    def __init__(self, store: Store, vault: Vault, identity: Identity, settings: Any) -> None:
        self.store = store
        self.vault = vault
        self.identity = identity
        self.threshold = settings.match_threshold
        self.review_threshold = settings.match_review_threshold
        self.region = settings.default_phone_region
        self._model: tuple[int, Any] | None = None
        # processes decrypting a full resolution's records (0: in this one): one per core, up to four
        self.decrypt_workers = min(cores(), 4) if cores() >= 2 else 0

    # -- records -------------------------------------------------------------------------------
    def active_subjects(self, conn: Any) -> list[str]:
        return list(conn.execute(select(subjects.c.subject_id).where(subjects.c.state == "active")).scalars())

    def records(self, subject_ids: Iterable[str], conn: Any) -> dict[str, dict[str, Any]]:
        """Newest traits of each active subject with identify events, as normalised matcher records."""
        from candor.identity.matching import normalise_record

        out: dict[str, dict[str, Any]] = {}
        ids = list(subject_ids)
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i : i + CHUNK]
            active = set(
                conn.execute(
                    select(subjects.c.subject_id).where(
                        and_(subjects.c.subject_id.in_(chunk), subjects.c.state == "active")
                    )
                ).scalars()
            )
            keys = self.vault.keys_for(sorted(active), conn)
            traits: dict[str, dict[str, Any]] = {}
            for sid, sealed in conn.execute(
                select(events.c.subject_id, events.c.sealed)
                .where(and_(events.c.subject_id.in_(sorted(active)), events.c.type == "identify"))
                .order_by(events.c.subject_id, events.c.ts_ms)
            ):
                aead = keys.get(sid)
                if aead is None:
                    continue
                try:
                    doc = orjson.loads(self.vault.open_with(aead, sealed, sid.encode()))
                except (KeyDestroyed, VaultError):
                    continue
                t = doc.get("traits")
                if isinstance(t, dict):
                    merged = traits.setdefault(sid, {})
                    for k, v in t.items():
                        if isinstance(v, dict) and isinstance(merged.get(k), dict):
                            merged[k] = {**merged[k], **v}
                        else:
                            merged[k] = v
            for sid, t in traits.items():
                rec = to_match_record(sid, t, self.region)
                if sum(1 for k, v in rec.items() if k != "record_id" and v) >= 2:
                    # normalised once here: training, scoring, the clusters and the keys reuse it
                    out[sid] = normalise_record(rec)
        return out

    def anchors(self, subject_ids: Iterable[str] | None, conn: Any) -> dict[str, tuple[str, str]]:
        """One identifier per subject to hang a probabilistic edge on (record, userId, browser);
        ``None``: of every subject, in one scan."""
        best: dict[str, tuple[int, tuple[str, str]]] = {}
        cols = select(identifiers.c.id_type, identifiers.c.pseudonym, identifiers.c.subject_id)
        if subject_ids is None:
            queries = [cols.where(identifiers.c.id_type.in_(ANCHOR_ORDER))]
        else:
            ids = list(subject_ids)
            queries = [cols.where(identifiers.c.subject_id.in_(ids[i : i + CHUNK])) for i in range(0, len(ids), CHUNK)]
        for q in queries:
            for t, p, sid in conn.execute(q):
                rank = ANCHOR_ORDER.index(t) if t in ANCHOR_ORDER else len(ANCHOR_ORDER)
                if sid not in best or (rank, (t, p)) < best[sid]:
                    best[sid] = (rank, (t, p))
        return {sid: v[1] for sid, v in best.items()}

    # -- model ---------------------------------------------------------------------------------
    def saved_model(self) -> Any:
        """The trained model, kept warm between calls until a new one is saved (any process)."""
        from candor.identity.matching import Model

        with self.store.engine.connect() as conn:
            stamp = conn.execute(select(identity_jobs.c.updated_ms).where(identity_jobs.c.name == "model")).scalar()
            if stamp is None:
                return None
            if self._model is not None and self._model[0] == stamp:
                return self._model[1]
            raw = conn.execute(select(identity_jobs.c.state).where(identity_jobs.c.name == "model")).scalar()
        model = Model.from_json(str(raw))
        if self._model is not None:
            self._model[1].close()
        self._model = (stamp, model)
        return model

    def _save(self, conn: Any, name: str, state: str) -> None:
        stmt = self.store.insert(identity_jobs)
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"], set_={"state": stmt.excluded.state, "updated_ms": stmt.excluded.updated_ms}
        )
        conn.execute(stmt, {"name": name, "state": state, "updated_ms": now_ms()})

    def _store_keys(self, conn: Any, recs: dict[str, dict[str, Any]]) -> None:
        """Store the HMAC'd blocking keys of ``recs``, so ``link_new`` finds candidates without decrypting anyone.

        A full resolution writes millions of rows: each distinct key is hashed once, and the rows go in
        sorted by the primary key, so the B-tree is appended to instead of written at random pages. On
        SQLite, past ``BULK_KEYS`` rows, the subject index is dropped and built again in the same
        transaction (one sort instead of a random insert per row; a crash rolls both back)."""
        from candor.identity.matching import blocking_keys

        hashed: dict[str, str] = {}  # one string per distinct key: the rows share them
        ordered: list[tuple[str, str]] = []
        for sid, rec in recs.items():
            for k in set(blocking_keys(rec)):
                h = hashed.get(k)
                if h is None:
                    h = hashed[k] = self.vault.pseudonym("match_key", k)
                ordered.append((h, sid))
        del hashed
        # by the hash alone (stable: a key's subjects stay in record order): comparing whole tuples took
        # twice as long, and the B-tree is still appended to
        ordered.sort(key=itemgetter(0))
        index = None
        if self.store.is_sqlite and len(ordered) >= BULK_KEYS:
            index = next(i for i in match_keys.indexes if i.name == "ix_match_keys_subject")
            index.drop(conn)
        # straight to the driver, rows as the tuples they are: SQLAlchemy's per-row parameter processing
        # cost more than the insert itself (py-spy, 300k records: 8.6 of its 15 s)
        sql = insert_sql(conn, "match_keys", ("key_hash", "subject_id"))
        for i in range(0, len(ordered), 5000):
            conn.exec_driver_sql(sql, ordered[i : i + 5000])
        if index is not None:
            index.create(conn)

    def _decrypted(self, slices: list[list[str]]) -> Iterator[dict[str, dict[str, Any]]]:
        """``records`` of each slice, in order: with two slices or more and a second core, in forked
        processes (candor/forking.py), each reading through a connection of its own."""
        workers = min(self.decrypt_workers, len(slices)) if can_fork() and len(slices) > 1 else 0
        if workers == 0:
            with self.store.engine.connect() as conn:
                for ids in slices:
                    yield self.records(ids, conn)
            return
        with forked_pool(workers, _worker_init, self) as pool:
            yield from pool.map(_worker_records, slices)

    # -- full resolution -----------------------------------------------------------------------
    def resolve(
        self,
        *,
        actor: str,
        retrain: bool = False,
        progress: Callable[[str, int, int], None] | None = None,
        engine: Any = None,
    ) -> ResolveReport:
        """Match every active record; ``engine`` is a candor.engines engine (None: DuckDB in memory)."""
        import time

        from candor.identity.matching import Model

        report = ResolveReport()
        step = progress or (lambda _phase, _done, _total: None)
        self.identity.settle_interrupted(actor=actor)  # profiles an interrupted import left behind
        t0 = time.perf_counter()
        with self.store.engine.connect() as conn:
            all_subjects = self.active_subjects(conn)
        recs: dict[str, dict[str, Any]] = {}
        slices = [all_subjects[i : i + DECRYPT_SLICE] for i in range(0, len(all_subjects), DECRYPT_SLICE)]
        for done, part in enumerate(self._decrypted(slices), start=1):
            recs.update(part)
            step("decrypting", min(done * DECRYPT_SLICE, len(all_subjects)), len(all_subjects))
        report.records = len(recs)
        report.timings["decrypt"] = time.perf_counter() - t0
        if len(recs) < 2:
            return report
        model = None if retrain else self.saved_model()
        t1 = time.perf_counter()
        if model is None:
            step("training", 0, 1)
            model = Model.train(list(recs.values()), engine=engine)
            report.trained = True
            with self.store.write() as conn:
                self._save(conn, "model", model.to_json())
            step("training", 1, 1)
        report.timings["train"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        step("scoring", 0, 1)
        pairs = model.predict(list(recs.values()), threshold=self.review_threshold, engine=engine)
        report.pairs_scored = len(pairs)
        report.timings["predict"] = time.perf_counter() - t2
        step("scoring", 1, 1)
        t3 = time.perf_counter()
        self._apply(pairs, actor, report, step, recs, bulk=True)
        with self.store.write() as conn:
            self._store_keys(conn, recs)
            self._save(conn, JOB, orjson.dumps({"finished_ms": now_ms(), **report.as_dict()}).decode())
            audit.record(conn, actor, "identity.resolve", details=report.as_dict())
        report.timings["write"] = time.perf_counter() - t3
        return report

    def _apply(
        self,
        pairs: list[tuple[str, str, float]],
        actor: str,
        report: ResolveReport,
        step: Callable[[str, int, int], None],
        recs: dict[str, dict[str, Any]],
        *,
        bulk: bool,
    ) -> None:
        """Matches become edges, strongest first, unless the two profiles conflict (identity/clusters.py).

        The clusters start as the current profiles, with the evidence of every member (``recs``, in
        memory; members missing from it are decrypted here). A refused match and the grey zone go to
        the review queue. One transaction: edges inserted in bulk, then one profile update for all of
        them (``bulk``: the whole log read once, identity/service.py ``BulkSource``)."""
        from candor.identity.clusters import Clusters, Evidence

        pairs = sorted(pairs, key=lambda p: (-p[2], p[0], p[1]))
        people = {s for a, b, _ in pairs for s in (a, b)}
        if not people:
            return
        with self.store.write() as conn:
            if bulk:
                profile = dict(conn.execute(select(profile_subjects.c.subject_id, profile_subjects.c.profile_id)).all())
                anchors = self.anchors(None, conn)
            else:
                profile = self._profiles_of(people, conn)
                anchors = self.anchors(people, conn)
            members = people | set(profile)
            missing = [s for s in members if s not in recs]
            # evidence is only weighed for matches that would link: the grey zone needs none
            if missing and not bulk and any(p >= self.threshold for _, _, p in pairs):
                recs = {**recs, **self.records(missing, conn)}
            limits = dict(self.identity.rules.limits)
            limited = self._limited(None if bulk else members, conn, limits)
            clusters = Clusters.of_profiles(
                {s: Evidence.of(recs.get(s), limited.get(s)) for s in members}, profile, limits
            )
            existing = self._logged(conn, "edges", None if bulk else {anchors[a] for a in people if a in anchors})
            start: set[str] = set()
            edge_rows: list[tuple[Any, ...]] = []  # EDGE_INSERT's columns
            reviews: list[tuple[tuple[str, str], tuple[str, str], str, str, float, str]] = []
            ts = now_ms()
            for n, (a, b, p) in enumerate(pairs, start=1):
                na, nb = anchors.get(a), anchors.get(b)
                if na is None or nb is None:
                    continue
                if clusters.same(a, b) or (na[1], nb[1]) in existing:
                    report.already_linked += 1
                    continue
                if p < self.threshold:
                    reviews.append(
                        (na, nb, a, b, p, f"probabilistic match {p:.3f}, below the threshold {self.threshold}")
                    )
                    continue
                why = clusters.try_join(a, b)
                if why is not None:
                    report.conflicts += 1
                    reviews.append((na, nb, a, b, p, f"probabilistic match {p:.3f} not linked: {why}"))
                    continue
                edge_rows.append((na[0], na[1], nb[0], nb[1], "probabilistic", p, a, a, b, ts))
                start |= {a, b}
                report.linked += 1
                if n % 50_000 == 0:
                    step("linking", n, len(pairs))
            # plain tuples to the driver (source, message id and removal stay NULL, the state its default)
            sql = insert_sql(conn, "identity_edges", EDGE_INSERT)
            for i in range(0, len(edge_rows), 5000):
                conn.exec_driver_sql(sql, edge_rows[i : i + 5000])
            if edge_rows:
                self.identity.after_edges(conn, start, bulk=bulk)
            if reviews:
                report.review += self._open_candidates(conn, reviews, bulk=bulk)
        step("linking", len(pairs), len(pairs))

    def _profiles_of(self, people: set[str], conn: Any) -> dict[str, str]:
        """subject -> profile id of every member of the profiles ``people`` belong to."""
        pids: set[str] = set()
        ids = sorted(people)
        for k in range(0, len(ids), CHUNK):
            pids.update(
                conn.execute(
                    select(profile_subjects.c.profile_id).where(profile_subjects.c.subject_id.in_(ids[k : k + CHUNK]))
                ).scalars()
            )
        out: dict[str, str] = {}
        plist = sorted(pids)
        for k in range(0, len(plist), CHUNK):
            out.update(
                conn.execute(
                    select(profile_subjects.c.subject_id, profile_subjects.c.profile_id).where(
                        profile_subjects.c.profile_id.in_(plist[k : k + CHUNK])
                    )
                ).all()
            )
        return out

    def _limited(self, subject_ids: set[str] | None, conn: Any, limits: dict[str, int]) -> dict[str, dict[str, int]]:
        """Per subject, how many identifiers of each limited type it holds (None: every subject)."""
        if not limits:
            return {}
        out: dict[str, dict[str, int]] = {}
        cols = select(identifiers.c.subject_id, identifiers.c.id_type)
        # for given subjects, through the subject index and the types filtered here: with the type in
        # the WHERE clause SQLite takes the primary key (id_type, pseudonym) and reads every identifier
        # of that type, a cost that grows with the store
        queries = (
            [cols.where(identifiers.c.id_type.in_(sorted(limits)))]
            if subject_ids is None
            else [
                cols.where(identifiers.c.subject_id.in_(chunk))
                for chunk in (sorted(subject_ids)[k : k + CHUNK] for k in range(0, len(subject_ids), CHUNK))
            ]
        )
        for q in queries:
            for sid, t in conn.execute(q):
                if t in limits:
                    per = out.setdefault(sid, {})
                    per[t] = per.get(t, 0) + 1
        return out

    def _logged(self, conn: Any, what: str, ends: set[tuple[str, str]] | None) -> set[tuple[str, str]]:
        """(a_pid, b_pid) of probabilistic edges (``edges``, any state) or candidate reviews already
        recorded. ``ends`` (None: all): for edges, the first ends as (type, pseudonym), looked up through
        the index that (a_type, a_pid) leads; for reviews, (subject, "") pairs, through a_subject's index."""
        found: set[tuple[str, str]] = set()
        if what == "edges":
            e = identity_edges.c
            base = select(e.a_pid, e.b_pid).where(e.rule == "probabilistic")
            if ends is None:
                queries = [base]
            else:
                by_type: dict[str, list[str]] = {}
                for t, p in ends:
                    by_type.setdefault(t, []).append(p)
                queries = [
                    base.where(and_(e.a_type == t, e.a_pid.in_(pids[k : k + CHUNK])))
                    for t, pids in by_type.items()
                    for k in range(0, len(pids), CHUNK)
                ]
        else:
            r = identity_reviews.c
            base = select(r.a_pid, r.b_pid).where(r.kind == "candidate")
            subjects = sorted({s for s, _ in ends}) if ends is not None else []
            queries = (
                [base]
                if ends is None
                else [base.where(r.a_subject.in_(subjects[k : k + CHUNK])) for k in range(0, len(subjects), CHUNK)]
            )
        for q in queries:
            found.update((x, y) for x, y in conn.execute(q))
        return found

    def _open_candidates(
        self, conn: Any, items: list[tuple[tuple[str, str], tuple[str, str], str, str, float, str]], *, bulk: bool
    ) -> int:
        """Queue grey-zone and refused matches for review, once per pair."""
        known = self._logged(conn, "reviews", None if bulk else {(a, "") for _, _, a, *_ in items})
        rows = []
        ts = now_ms()
        for na, nb, a, b, p, reason in items:
            if (na[1], nb[1]) in known:
                continue
            known.add((na[1], nb[1]))
            rows.append(
                {
                    "kind": "candidate",
                    "edge_id": None,
                    "a_type": na[0],
                    "a_pid": na[1],
                    "b_type": nb[0],
                    "b_pid": nb[1],
                    "a_subject": a,
                    "b_subject": b,
                    "score": p,
                    "reason": reason[:300],
                    "state": "open",
                    "created_ms": ts,
                }
            )
        for i in range(0, len(rows), 5000):
            conn.execute(identity_reviews.insert(), rows[i : i + 5000])
        return len(rows)

    # -- incremental ---------------------------------------------------------------------------
    def link_new(self, subject_ids: list[str], *, actor: str) -> ResolveReport:
        """Link new records against existing profiles through their blocking keys (no full run)."""
        from candor.identity.matching import blocking_keys

        report = ResolveReport()
        model = self.saved_model()
        if model is None or not subject_ids:
            return report
        pairs: list[tuple[str, str, float]] = []
        seen: dict[str, dict[str, Any]] = {}  # candidates' records: the clusters' evidence below
        with self.store.engine.connect() as conn:
            new = self.records(subject_ids, conn)
            report.records = len(new)
            for sid, rec in new.items():
                hashes = [self.vault.pseudonym("match_key", k) for k in set(blocking_keys(rec))]
                # the candidates sharing the most blocking keys first: a block grows with the store,
                # and decrypting every member of a large one is what made linking slow
                cands = (
                    [
                        other
                        for other, _n in conn.execute(
                            select(match_keys.c.subject_id, func.count())
                            .where(and_(match_keys.c.key_hash.in_(hashes), match_keys.c.subject_id != sid))
                            .group_by(match_keys.c.subject_id)
                            .order_by(func.count().desc(), match_keys.c.subject_id)
                            .limit(MAX_CANDIDATES)
                        )
                    ]
                    if hashes
                    else []
                )
                if not cands:
                    continue
                cand_recs = self.records(cands, conn)
                seen.update(cand_recs)
                for other, p in model.score(rec, list(cand_recs.values())):
                    if p >= self.review_threshold:
                        pairs.append((sid, other, p))
        report.pairs_scored = len(pairs)
        self._apply(pairs, actor, report, lambda *_: None, {**new, **seen}, bulk=False)
        with self.store.write() as conn:
            self._store_keys(conn, new)
        return report


_WORKER: Resolver | None = None


def _worker_init(resolver: Resolver) -> None:
    # forked: the parent's resolver, inherited rather than pickled
    global _WORKER
    _WORKER = resolver


def _worker_records(ids: list[str]) -> dict[str, dict[str, Any]]:
    assert _WORKER is not None
    with _WORKER.store.engine.connect() as conn:
        return _WORKER.records(ids, conn)
