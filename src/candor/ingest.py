"""The writer: turns validated messages into durable rows, with group commit.

Request handlers validate and pseudonymise in the event loop, then hand their messages to one
writer thread and wait. The writer takes everything that is queued, resolves subjects, seals the
personal part of every event under its subject's data key, inserts the rows in one transaction and
commits. Only then are the waiting requests answered: a 2xx always means committed, and many
concurrent requests share one fsync.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import and_, bindparam, select, tuple_

from candor import metrics
from candor.consent.ledger import Consent
from candor.events import Message, Rejection
from candor.identity.service import REHOME_MARK, Identity
from candor.store import Store, insert_sql, now_ms
from candor.store.schema import (
    consent_blocked,
    event_counts,
    events,
    identifiers,
    identity_jobs,
    rejected_events,
)
from candor.vault import Vault

log = logging.getLogger("candor.ingest")

MAX_GROUP_EVENTS = 10_000
EVENT_COLUMNS = (
    "source_id",
    "message_id",
    "type",
    "event",
    "subject_id",
    "user_pid",
    "anon_pid",
    "ts_ms",
    "received_ms",
    "properties",
    "context",
    "sealed",
)
# the other bulk inserts of the writer, as plain tuples to the driver (an import writes 20,000 records per
# group: SQLAlchemy's per-row parameter processing was a few per cent of it)
IDENT_COLUMNS = ("id_type", "pseudonym", "hmac_version", "subject_id", "first_seen_ms", "contact_hash")
EDGE_COLUMNS = (
    "a_type",
    "a_pid",
    "b_type",
    "b_pid",
    "rule",
    "source_id",
    "message_id",
    "subject_id",
    "a_subject",
    "b_subject",
    "created_ms",
)
SUBJECT_COLUMNS = ("subject_id", "created_ms", "state")
KEY_COLUMNS = ("subject_id", "wrapped", "kek_id", "created_ms")
CHUNK = 500
# from this many subjects on, settling reads the whole edge log once rather than closure by closure
BULK_SETTLE = 20_000
_STOP = object()
# identifiers that carry a subject: a userId, a browser or device, a record imported from a source
ANCHORS = ("user_id", "anonymous_id", "record")

# The writer's per-group queries, built once: constructing a statement (select(), in_(), its cache key)
# cost about 165 us each time, more than running it, and a group of a few single events ran eight
_GENERATION = select(identity_jobs.c.updated_ms).where(identity_jobs.c.name == REHOME_MARK)
_SEEN = select(events.c.message_id).where(
    and_(events.c.source_id == bindparam("source_id"), events.c.message_id.in_(bindparam("ids", expanding=True)))
)
_LOOKUP = select(identifiers.c.pseudonym, identifiers.c.subject_id).where(
    and_(identifiers.c.id_type == bindparam("id_type"), identifiers.c.pseudonym.in_(bindparam("ids", expanding=True)))
)


@dataclass
class WriteResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    no_consent: int = 0


@dataclass
class Work:
    source_id: int
    messages: list[Message]
    rejections: list[Rejection]
    received_ms: int
    result: WriteResult = field(default_factory=WriteResult)
    # a bulk import: profiles are recomputed once at the end (Ingestor.settle_profiles), not per batch
    defer_profiles: bool = False


def day_of(ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ms / 1000))


class Ingestor:
    """One writer thread per process; ``submit`` returns once the work is committed."""

    def __init__(
        self,
        store: Store,
        vault: Vault,
        id_cache_size: int = 500_000,
        consent: Consent | None = None,
        identity: Identity | None = None,
        privacy: Any = None,
    ) -> None:
        # screening.WriterHooks: held special-category values, full IP addresses, privacy inbox
        self.privacy = privacy
        self.store = store
        self.identity = identity
        self.vault = vault
        self.consent = consent
        self._signal_seen: dict[str, str] = {}
        self._driver_sql: dict[str, str] = {}
        self._stmts: dict[str, Any] = {}
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ids: dict[tuple[str, str], str] = {}
        self._edges: set[tuple[str, str, str, str]] = set()
        self._id_cache_size = id_cache_size
        self._lock = threading.Lock()
        self._generation: int | None = None
        self._pending: set[str] = set()  # subjects whose profiles a deferred import left to settle

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="candor-writer", daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            thread = self._thread
            self._thread = None
        if thread is not None and thread.is_alive():
            self._queue.put(_STOP)
            thread.join(timeout)

    def forget_subject(self, subject_id: str) -> None:
        """Drop cached identifier mappings of a subject (after erasure, split or rotation)."""
        self.forget_subjects({subject_id})

    def forget_subjects(self, subject_ids: set[str]) -> None:
        """Drop cached identifier mappings of many subjects in one pass over the cache."""
        if not subject_ids:
            return
        with self._lock:
            for key in [k for k, v in self._ids.items() if v in subject_ids]:
                del self._ids[key]
            self._edges.clear()

    def settle_profiles(self, *, full: bool = False, actor: str = "system") -> int:
        """Recompute the profiles a deferred import touched, in one update; how many subjects.

        ``full``: replay the whole log instead (``Identity.rebuild``), for an import that found profiles
        left pending by an earlier one (``--defer-profiles`` or a crash): one replay settles both."""
        with self._lock:
            pending, self._pending = self._pending, set()
        if self.identity is None:
            return 0
        if full:
            self.identity.rebuild(actor=actor)
            return len(pending)
        if not pending:
            return 0
        with self.store.write() as conn:
            self.identity.after_edges(conn, pending, bulk=len(pending) >= BULK_SETTLE)
            self.identity.clear_pending(conn)
        return len(pending)

    # -- submission ----------------------------------------------------------------------------
    async def submit(self, work: Work) -> WriteResult:
        self.start()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[WriteResult] = loop.create_future()
        self._queue.put((work, loop, fut))
        return await fut

    def submit_future(self, work: Work, fut: concurrent.futures.Future[WriteResult]) -> None:
        """Queue ``work``; ``fut`` is resolved by the writer thread once it is committed (writer.py)."""
        self.start()
        self._queue.put((work, None, fut))

    def submit_sync(self, work: Work, timeout: float = 60.0) -> WriteResult:
        self.start()
        fut: concurrent.futures.Future[WriteResult] = concurrent.futures.Future()
        self._queue.put((work, None, fut))
        return fut.result(timeout)

    def _insert(
        self, conn: Any, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]], conflict: str | None = ""
    ) -> None:
        """Plain tuples straight to the driver (``insert_sql``), the statement built once per table."""
        sql = self._driver_sql.get(table)
        if sql is None:
            sql = self._driver_sql[table] = insert_sql(conn, table, columns, conflict)
        conn.exec_driver_sql(sql, rows)

    def _stmt(self, name: str, build: Any) -> Any:
        """A statement of the writer built once (the dialect's insert is known only with the store):
        building one cost more than running it for a group of a few single events."""
        stmt = self._stmts.get(name)
        if stmt is None:
            stmt = self._stmts[name] = build()
        return stmt

    def _upsert_count(self, table: Any, key: tuple[str, ...]) -> Any:
        """``INSERT ... ON CONFLICT (key) DO UPDATE SET n = n + excluded.n``, built once per table
        (``excluded`` builds a column collection each time: 0.35 ms of a 4.5 ms group of singles)."""

        def build() -> Any:
            stmt = self.store.insert(table)
            return stmt.on_conflict_do_update(index_elements=list(key), set_={"n": table.c.n + stmt.excluded.n})

        return self._stmt(f"count:{table.name}", build)

    # -- consent -------------------------------------------------------------------------------
    def _gate(self, m: Message, known: dict[tuple[str, str], str], conn: Any) -> str | None:
        """The first purpose the event needs and may not have, or None when it may be stored."""
        consent = self.consent
        assert consent is not None
        sid = None
        for ident in m.identifiers:
            if ident[0] in ANCHORS and ident in known:
                sid = known[ident]
                break
        for purpose in m.required:
            signal = m.signals.get(purpose) if m.signals else None
            if signal is False:
                return purpose
            if sid is None:
                if signal is None and not consent.allowed_without_choice(purpose):
                    return purpose
                continue
            # the state cache already holds this group's people: remembering decisions would cost more
            d = consent.can_use(sid, purpose, conn=conn, remember=False)
            if d.allowed:
                continue
            # the event's own "yes" counts unless the ledger holds an explicit no or a restriction
            if signal is True and not d.explicit:
                continue
            return purpose
        return None

    def _record_signals(self, conn: Any, fresh: list[tuple[Work, Message]], subjects_of: list[str]) -> None:
        consent = self.consent
        assert consent is not None
        from candor.consent.purposes import GPC_PURPOSES

        for (w, m), sid in zip(fresh, subjects_of, strict=True):
            actor = f"source:{w.source_id}"
            if m.consent_update is not None:
                granted, denied = m.consent_update
                consent.record(
                    conn,
                    sid,
                    granted=granted,
                    denied=denied,
                    source="segment_event",
                    actor=actor,
                    ts_ms=m.ts_ms,
                    raw_signal=m.raw_signal,
                    message_id=m.message_id,
                )
            if m.gpc and self._signal_seen.get(sid + ":gpc") is None:
                if not consent.has_signal(sid, "gpc", conn):
                    consent.record(
                        conn,
                        sid,
                        denied=GPC_PURPOSES,
                        source="gpc",
                        actor=actor,
                        ts_ms=m.ts_ms,
                        raw_signal="Sec-GPC: 1",
                        message_id=m.message_id,
                    )
                self._signal_seen[sid + ":gpc"] = "1"
            if m.raw_signal and m.consent_update is None and self._signal_seen.get(sid) != m.raw_signal:
                sig = m.signals or {}
                granted = frozenset(p for p, v in sig.items() if v)
                denied = frozenset(p for p, v in sig.items() if not v)
                if granted or denied:
                    source = "gpp" if m.raw_signal.startswith("D") and "~" in m.raw_signal else "tcf"
                    consent.record(
                        conn,
                        sid,
                        granted=granted,
                        denied=denied,
                        source=source,
                        actor=actor,
                        ts_ms=m.ts_ms,
                        raw_signal=m.raw_signal,
                        message_id=m.message_id,
                    )
                self._signal_seen[sid] = m.raw_signal
            if len(self._signal_seen) > 200_000:
                self._signal_seen.clear()

    # -- the writer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            group = [first]
            n = len(first[0].messages) + len(first[0].rejections)
            stop_after = False
            while n < MAX_GROUP_EVENTS:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop_after = True
                    break
                group.append(nxt)
                n += len(nxt[0].messages) + len(nxt[0].rejections)
            try:
                self._write_group(group)
            except Exception as exc:  # noqa: BLE001 - the writer must survive anything; answer everyone
                log.error("writer failure: %s", type(exc).__name__)
                for g in group:
                    with contextlib.suppress(Exception):
                        _resolve(g, exc=exc)
            if stop_after:
                return

    def _write_group(self, group: list[Any]) -> None:
        started = time.perf_counter()
        try:
            self._write([g[0] for g in group])
        except Exception as exc:  # noqa: BLE001 - isolate the failing request, answer the others
            if len(group) > 1:
                for g in group:
                    self._write_group([g])
                return
            log.warning("write failed: %s", type(exc).__name__)
            _resolve(group[0], exc=exc)
            return
        metrics.commit_seconds.observe(time.perf_counter() - started)
        metrics.commit_group_events.observe(sum(len(g[0].messages) for g in group))
        for g in group:
            _resolve(g, result=g[0].result)

    def _write(self, works: list[Work]) -> None:
        store, vault = self.store, self.vault
        for w in works:
            w.result = WriteResult()
        with store.write() as conn:
            # 0. a split that moved identifiers to a new subject (any process) empties the caches
            generation = conn.execute(_GENERATION).scalar()
            if generation != self._generation:
                with self._lock:
                    self._ids.clear()
                    self._edges.clear()
                self._generation = generation
            # 1. duplicates: messageIds already stored for the source, or repeated within this group
            fresh: list[tuple[Work, Message]] = []
            by_source: dict[int, list[str]] = defaultdict(list)
            for w in works:
                for m in w.messages:
                    by_source[w.source_id].append(m.message_id)
            existing: set[tuple[int, str]] = set()
            for source_id, mids in by_source.items():
                for i in range(0, len(mids), CHUNK):
                    for (mid,) in conn.execute(_SEEN, {"source_id": source_id, "ids": mids[i : i + CHUNK]}):
                        existing.add((source_id, mid))
            counts: dict[tuple[int, str, str, str], int] = defaultdict(int)
            for w in works:
                day = day_of(w.received_ms)
                for m in w.messages:
                    key = (w.source_id, m.message_id)
                    if key in existing:
                        w.result.duplicates += 1
                        counts[(w.source_id, m.type, "duplicate", day)] += 1
                    else:
                        existing.add(key)
                        fresh.append((w, m))
                for r in w.rejections:
                    w.result.rejected += 1
                    counts[(w.source_id, r.type or "unknown", "rejected", day)] += 1

            # 2. subjects: look up every identifier not in the cache
            known: dict[tuple[str, str], str] = {}
            wanted: dict[str, set[str]] = defaultdict(set)
            cache = self._ids
            for _, m in fresh:
                for ident in m.identifiers:
                    sid = cache.get(ident)
                    if sid is None:
                        wanted[ident[0]].add(ident[1])
                    else:
                        known[ident] = sid
                if m.previous_pids:
                    for ident in (("user_id", m.previous_pids[0]), ("anonymous_id", m.previous_pids[1])):
                        sid = cache.get(ident)
                        if sid is None:
                            wanted[ident[0]].add(ident[1])
                        else:
                            known[ident] = sid
            known.update(_lookup(conn, wanted))
            # during an HMAC key rotation, identifiers not found under the current key are looked up
            # under the older keys; a hit is re-registered under the current key (migrated)
            migrate: dict[tuple[str, str], str] = {}
            legacy_wanted: dict[str, set[str]] = defaultdict(set)
            legacy_of: dict[tuple[str, str], tuple[str, str]] = {}
            for _, m in fresh:
                if m.legacy:
                    for ident, olds in m.legacy.items():
                        if ident not in known:
                            for old in olds:
                                legacy_wanted[ident[0]].add(old)
                                legacy_of[(ident[0], old)] = ident
            if legacy_wanted:
                for old_ident, sid in _lookup(conn, legacy_wanted).items():
                    ident = legacy_of[old_ident]
                    known[ident] = sid
                    migrate[ident] = sid

            # consent at collection: an event whose purposes are not allowed is not stored with
            # identifiers; only an anonymous daily count per event name is kept
            blocked: dict[tuple[str, int, str, str], int] = defaultdict(int)
            if self.consent is not None:
                gated = [
                    known[ident]
                    for _, m in fresh
                    if m.required
                    for ident in m.identifiers[:2]
                    if ident in known and ident[0] in ANCHORS
                ]
                if gated:
                    self.consent.preload(gated, conn)
                kept = []
                for w, m in fresh:
                    missing = self._gate(m, known, conn) if m.required else None
                    if missing is None:
                        kept.append((w, m))
                    else:
                        day = day_of(w.received_ms)
                        blocked[(day, w.source_id, (m.event or m.type)[:200], missing)] += 1
                        counts[(w.source_id, m.type, "no_consent", day)] += 1
                        w.result.no_consent += 1
                fresh = kept
            for w, m in fresh:
                w.result.accepted += 1
                counts[(w.source_id, m.type, "accepted", day_of(w.received_ms))] += 1

            # 3. assign each event to a subject; new identifiers join the event's subject
            new_subject_count = 0
            assigned: list[str] = []
            new_ids: dict[tuple[str, str], str] = {}
            contact_of: dict[tuple[str, str], str] = {}
            new_edges: dict[tuple[str, str, str, str, str], tuple[Work, Message, str]] = {}
            for w, m in fresh:
                # the userId decides the subject: a new user never joins the subject of a browser
                # someone else may have used; the identity graph links them at the profile level
                sid = None
                for ident in m.identifiers:
                    if ident[0] == "user_id":
                        sid = known.get(ident)
                        break
                    if ident[0] in ANCHORS:
                        sid = known.get(ident)
                        if sid is not None:
                            break
                all_ids = list(m.identifiers)
                if m.previous_pids:
                    prev = ("user_id", m.previous_pids[0])
                    if prev not in known:
                        prev = ("anonymous_id", m.previous_pids[1])
                    if sid is None:
                        sid = known.get(prev)
                    all_ids.append(prev)
                if sid is None:
                    sid = f"new:{new_subject_count}"
                    new_subject_count += 1
                for ident in all_ids:
                    if ident not in known:
                        known[ident] = sid
                        new_ids[ident] = sid
                if m.contacts:
                    contact_of.update(m.contacts)
                assigned.append(sid)
                rule = "alias" if m.type == "alias" else m.type
                primary = all_ids[0]
                for other in all_ids[1:]:
                    edge = (primary[0], primary[1], other[0], other[1], rule)
                    if edge[:4] not in self._edges and edge not in new_edges:
                        new_edges[edge] = (w, m, sid)

            new_ids.update(migrate)

            # 4. create new subjects with their data keys
            resolved: dict[str, str] = {}
            new_keys: dict[str, bytes] = {}
            if new_subject_count:
                subj_rows, key_rows, ids = vault.new_subject_rows(new_subject_count)
                for i, sid in enumerate(ids):
                    resolved[f"new:{i}"] = sid
                    new_keys[sid] = key_rows[i].pop("_key")
                # new random ids: a duplicate would be an error, not something to ignore
                self._insert(
                    conn, "subjects", SUBJECT_COLUMNS, [tuple(r[c] for c in SUBJECT_COLUMNS) for r in subj_rows], None
                )
                self._insert(conn, "data_keys", KEY_COLUMNS, [tuple(r[c] for c in KEY_COLUMNS) for r in key_rows], None)

            def real(sid: str) -> str:
                return resolved.get(sid, sid)

            # 5. identifiers, with a re-read of any that a concurrent writer claimed first
            if new_ids:
                ts = now_ms()
                version = vault.hmac_version
                self._insert(
                    conn,
                    "identifiers",
                    IDENT_COLUMNS,
                    [(t, p, version, real(sid), ts, contact_of.get((t, p))) for (t, p), sid in new_ids.items()],
                )
                if not store.is_sqlite:
                    keys = list(new_ids)
                    for i in range(0, len(keys), CHUNK):
                        for t, p, sid in conn.execute(
                            select(identifiers.c.id_type, identifiers.c.pseudonym, identifiers.c.subject_id).where(
                                tuple_(identifiers.c.id_type, identifiers.c.pseudonym).in_(keys[i : i + CHUNK])
                            )
                        ):
                            if real(new_ids[(t, p)]) != sid:
                                resolved[new_ids[(t, p)]] = sid

            # 6. seal and insert the events
            final = [real(s) for s in assigned]
            aeads: dict[str, AESGCM] = {sid: AESGCM(k) for sid, k in new_keys.items()}
            need = [s for s in set(final) if s not in aeads]
            aeads.update(vault.keys_for(need, conn))
            seal = vault.seal_with
            privacy = self.privacy
            event_rows: list[dict[str, Any]] = []
            for (w, m), sid in zip(fresh, final, strict=True):
                doc = m.sealed_doc if m.held is None or privacy is None else privacy.sealed_doc(m, sid, conn)
                event_rows.append(
                    {
                        "source_id": w.source_id,
                        "message_id": m.message_id,
                        "type": m.type,
                        "event": m.event,
                        "subject_id": sid,
                        "user_pid": m.user_pid,
                        "anon_pid": m.anon_pid,
                        "ts_ms": m.ts_ms,
                        "received_ms": m.received_ms,
                        "properties": m.properties,
                        "context": m.context,
                        "sealed": seal(aeads[sid], doc, sid.encode()),
                    }
                )
            if event_rows:
                # the hot insert goes straight to the driver: SQLAlchemy's per-row processing costs more
                # than the insert itself here
                self._insert(
                    conn,
                    "events",
                    EVENT_COLUMNS,
                    [tuple(r[c] for c in EVENT_COLUMNS) for r in event_rows],
                    "source_id, message_id",
                )
                if privacy is not None:
                    privacy.after_events(conn, vault, fresh, final, aeads)

            # 7. identity edges (append-only log; first evidence of each pair is kept)
            if new_edges:
                ts = now_ms()
                # the state is left to its server default (linked)
                self._insert(
                    conn,
                    "identity_edges",
                    EDGE_COLUMNS,
                    [
                        (
                            *k,
                            w.source_id,
                            m.message_id,
                            real(sid),
                            real(known[(k[0], k[1])]),
                            real(known[(k[2], k[3])]),
                            ts,
                        )
                        for k, (w, m, sid) in new_edges.items()
                    ],
                )
                if self.identity is not None:
                    # profiles: replay the closure of every subject a new edge touches (identity/graph.py)
                    start: set[str] = set()
                    for k in new_edges:
                        sa, sb = real(known[(k[0], k[1])]), real(known[(k[2], k[3])])
                        if sa != sb or (k[0], k[1]) not in new_ids or (k[2], k[3]) not in new_ids:
                            start.add(sa)
                            start.add(sb)
                    if start and all(w.defer_profiles for w in works):
                        # durable, with every deferred batch (a rebuild in another process may have
                        # cleared it since the last one): a crash before settle_profiles, or an import
                        # that leaves its profiles to a later one, leaves the mark and a rebuild follows
                        self.identity.mark_pending(conn)
                        self._pending |= start
                    elif start:
                        self.identity.after_edges(conn, start)

            # 8. consent carried by events: preference updates, GPC and TCF/GPP strings into the ledger
            if self.consent is not None:
                self._record_signals(conn, fresh, final)
                if blocked:
                    stmt = self._upsert_count(consent_blocked, ("day", "source_id", "event", "purpose"))
                    for (day, source_id, name, purpose), n in blocked.items():
                        conn.execute(
                            stmt, {"day": day, "source_id": source_id, "event": name, "purpose": purpose, "n": n}
                        )

            # 9. rejected records (reason and place, never the values) and counters
            rej_rows = [
                {
                    "source_id": w.source_id,
                    "received_ms": w.received_ms,
                    "type": r.type,
                    "message_id": r.message_id,
                    "field": r.field,
                    "reason": r.reason[:500],
                }
                for w in works
                for r in w.rejections
            ]
            if rej_rows:
                conn.execute(self._stmt("rejected_events", rejected_events.insert), rej_rows)
            if counts:
                stmt = self._upsert_count(event_counts, ("source_id", "type", "outcome", "day"))
                for (source_id, mtype, outcome, day), n in counts.items():
                    conn.execute(stmt, {"source_id": source_id, "type": mtype, "outcome": outcome, "day": day, "n": n})
        # committed: only now may caches learn what the transaction wrote
        for sid in new_keys:
            if real(sid) == sid:
                vault.remember_aead(sid, aeads[sid])  # the cipher the events were sealed with
        with self._lock:
            if len(self._ids) > self._id_cache_size:
                self._ids.clear()
            for ident, sid in new_ids.items():
                self._ids[ident] = real(sid)
            for ident, sid in known.items():
                self._ids.setdefault(ident, real(sid))
            if len(self._edges) > self._id_cache_size:
                self._edges.clear()
            self._edges.update(k[:4] for k in new_edges)
        for (_source, mtype, outcome, _day), n in counts.items():
            metrics.events_total.labels(mtype, outcome).inc(n)


def _lookup(conn: Any, wanted: dict[str, set[str]]) -> dict[tuple[str, str], str]:
    """Subjects of (type, pseudonym) identifiers, in chunks."""
    found: dict[tuple[str, str], str] = {}
    for id_type, pids in wanted.items():
        plist = list(pids)
        for i in range(0, len(plist), CHUNK):
            for pid, sid in conn.execute(_LOOKUP, {"id_type": id_type, "ids": plist[i : i + CHUNK]}):
                found[(id_type, pid)] = sid
    return found


def _resolve(item: Any, result: WriteResult | None = None, exc: BaseException | None = None) -> None:
    _work, loop, fut = item
    if loop is None:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
        return

    def _set() -> None:
        if fut.cancelled():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    # a closed loop (shutdown) raises RuntimeError: nobody is waiting any more
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_set)
