"""Probabilistic matching over the store: records without a shared identifier, linked by Splink.

``resolve`` trains a Fellegi–Sunter model (EM, term frequencies) on every active subject's newest
traits, predicts match probabilities over the blocked pairs, turns matches at or above the
threshold into ``probabilistic`` edges (with their score) and sends the grey zone to the review
queue. ``link_new`` scores newly imported records against candidates found through HMAC'd blocking
keys, without decrypting anyone else.

Plaintext needed for matching is decrypted in memory, matched in an in-memory DuckDB with spilling
off (identity/matching.py), and never written to disk. Restricted or erased subjects never take part.
The trained model (parameters only, no values) and the job's place are kept in ``identity_jobs``, so
an interrupted run resumes without retraining.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import and_, select

from candor import audit, normalize
from candor.identity.service import Identity
from candor.store import Store, now_ms
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
MAX_CANDIDATES = 200


@dataclass
class ResolveReport:
    records: int = 0
    pairs_scored: int = 0
    linked: int = 0
    review: int = 0
    already_linked: int = 0
    trained: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "pairs": self.pairs_scored,
            "linked": self.linked,
            "review": self.review,
            "already_linked": self.already_linked,
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

    # -- records -------------------------------------------------------------------------------
    def active_subjects(self, conn: Any) -> list[str]:
        return list(conn.execute(select(subjects.c.subject_id).where(subjects.c.state == "active")).scalars())

    def records(self, subject_ids: Iterable[str], conn: Any) -> dict[str, dict[str, Any]]:
        """Newest traits of each active subject with identify events, as matcher records."""
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
                    out[sid] = rec
        return out

    def anchors(self, subject_ids: Iterable[str], conn: Any) -> dict[str, tuple[str, str]]:
        """One identifier per subject to hang a probabilistic edge on (record, userId, browser)."""
        best: dict[str, tuple[int, tuple[str, str]]] = {}
        ids = list(subject_ids)
        for i in range(0, len(ids), CHUNK):
            for t, p, sid in conn.execute(
                select(identifiers.c.id_type, identifiers.c.pseudonym, identifiers.c.subject_id).where(
                    identifiers.c.subject_id.in_(ids[i : i + CHUNK])
                )
            ):
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
        from candor.identity.matching import blocking_keys

        rows = [
            {"key_hash": self.vault.pseudonym("match_key", k), "subject_id": sid}
            for sid, rec in recs.items()
            for k in set(blocking_keys(rec))
        ]
        for i in range(0, len(rows), 5000):
            conn.execute(self.store.insert_ignore(match_keys), rows[i : i + 5000])

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
        t0 = time.perf_counter()
        with self.store.engine.connect() as conn:
            all_subjects = self.active_subjects(conn)
            recs: dict[str, dict[str, Any]] = {}
            for i in range(0, len(all_subjects), 20_000):
                recs.update(self.records(all_subjects[i : i + 20_000], conn))
                step("decrypting", min(i + 20_000, len(all_subjects)), len(all_subjects))
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
        self._apply(pairs, actor, report, step)
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
    ) -> None:
        """Matches become edges (one bulk insert and one profile update per chunk); the grey zone is queued."""
        pairs = sorted(pairs, key=lambda p: (-p[2], p[0], p[1]))
        size = 5000
        for i in range(0, len(pairs), size):
            chunk = pairs[i : i + size]
            people = {s for a, b, _ in chunk for s in (a, b)}
            with self.store.write() as conn:
                anchors = self.anchors(people, conn)
                profile: dict[str, str] = {}
                ids = sorted(people)
                for k in range(0, len(ids), CHUNK):
                    profile.update(
                        conn.execute(
                            select(profile_subjects.c.subject_id, profile_subjects.c.profile_id).where(
                                profile_subjects.c.subject_id.in_(ids[k : k + CHUNK])
                            )
                        ).all()
                    )
                # matches already in the log (an earlier run, held or removed since): never added twice
                existing: set[tuple[str, str]] = set()
                a_pids = sorted({anchors[a][1] for a, _, _ in chunk if a in anchors})
                for k in range(0, len(a_pids), CHUNK):
                    existing.update(
                        (x, y)
                        for x, y in conn.execute(
                            select(identity_edges.c.a_pid, identity_edges.c.b_pid).where(
                                and_(
                                    identity_edges.c.rule == "probabilistic",
                                    identity_edges.c.a_pid.in_(a_pids[k : k + CHUNK]),
                                )
                            )
                        )
                    )
                start: set[str] = set()
                edge_rows: list[dict[str, Any]] = []
                reviews = []
                ts = now_ms()
                for a, b, p in chunk:
                    na, nb = anchors.get(a), anchors.get(b)
                    if na is None or nb is None:
                        continue
                    if profile.get(a, a) == profile.get(b, b) or (na[1], nb[1]) in existing:
                        report.already_linked += 1
                        continue
                    if p >= self.threshold:
                        edge_rows.append(
                            {
                                "a_type": na[0],
                                "a_pid": na[1],
                                "b_type": nb[0],
                                "b_pid": nb[1],
                                "rule": "probabilistic",
                                "source_id": None,
                                "message_id": None,
                                "score": p,
                                "subject_id": a,
                                "a_subject": a,
                                "b_subject": b,
                                "created_ms": ts,
                            }
                        )
                        start |= {a, b}
                        report.linked += 1
                    else:
                        reviews.append((na, nb, a, b, p))
                if edge_rows:
                    conn.execute(self.store.insert_ignore(identity_edges), edge_rows)
                    self.identity.after_edges(conn, start)
                if reviews:
                    report.review += self._open_candidates(conn, reviews)
            step("linking", min(i + size, len(pairs)), len(pairs))

    def _open_candidates(self, conn: Any, items: list[tuple[tuple[str, str], tuple[str, str], str, str, float]]) -> int:
        """Queue grey-zone matches for review, once per pair."""
        known: set[tuple[str, str]] = set()
        pids = sorted({na[1] for na, _, _, _, _ in items})
        for k in range(0, len(pids), CHUNK):
            known.update(
                (x, y)
                for x, y in conn.execute(
                    select(identity_reviews.c.a_pid, identity_reviews.c.b_pid).where(
                        and_(identity_reviews.c.kind == "candidate", identity_reviews.c.a_pid.in_(pids[k : k + CHUNK]))
                    )
                )
            )
        rows = []
        for na, nb, a, b, p in items:
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
                    "reason": f"probabilistic match {p:.3f}, below the threshold {self.threshold}",
                    "state": "open",
                    "created_ms": now_ms(),
                }
            )
        if rows:
            conn.execute(identity_reviews.insert(), rows)
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
        with self.store.engine.connect() as conn:
            new = self.records(subject_ids, conn)
            report.records = len(new)
            for sid, rec in new.items():
                hashes = [self.vault.pseudonym("match_key", k) for k in set(blocking_keys(rec))]
                cands = (
                    set(
                        conn.execute(
                            select(match_keys.c.subject_id)
                            .where(match_keys.c.key_hash.in_(hashes))
                            .limit(MAX_CANDIDATES * 4)
                        ).scalars()
                    )
                    if hashes
                    else set()
                )
                cands.discard(sid)
                if not cands:
                    continue
                cand_recs = self.records(sorted(cands)[:MAX_CANDIDATES], conn)
                for other, p in model.score(rec, list(cand_recs.values())):
                    if p >= self.review_threshold:
                        pairs.append((sid, other, p))
        report.pairs_scored = len(pairs)
        self._apply(pairs, actor, report, lambda *_: None)
        with self.store.write() as conn:
            self._store_keys(conn, new)
        return report
