"""Erasure: crypto-shredding first (effective at once), then a purge of every store, then tombstones.

1. A line naming the subjects goes to ``erasure-journal.jsonl`` in the data directory (fsynced), so
   that a database restored from an older backup is erased again when Candor starts on it.
2. One transaction deletes the subjects' data keys (every sealed value, in every copy of the
   database, becomes unreadable), marks them erased and writes suppression tombstones (an HMAC under
   the separate suppression key) so old lists and new imports cannot contact them again.
3. The purge deletes their rows from every table in ``SUBJECT_TABLES`` (and the other-person columns
   of ``SUBJECT_COLUMNS_EXTRA``), recomputes the profiles their links touched, removes export files,
   rewrites the analytics files (Parquet, lake.py) without their rows and truncates the SQLite WAL.
   It is idempotent: run it again after a crash and it completes.

Legal holds (``legal_holds``) keep named stores of a subject, and then its key, until released; the
receipt lists them as exceptions.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import delete, or_, select, update

from candor import audit
from candor.store import now_ms
from candor.store.schema import (
    SUBJECT_COLUMNS_EXTRA,
    SUBJECT_TABLES,
    identifiers,
    identity_edges,
    legal_holds,
    metadata,
    subjects,
    suppressions,
)

log = logging.getLogger("candor.rights.erasure")
JOURNAL = "erasure-journal.jsonl"
CHUNK = 500
# Purged last: the rows that say who the subject was and hold their key.
LAST = ("identifiers", "data_keys", "subjects")


class Erasure:
    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self.store = rt.store
        self.vault = rt.vault
        self.journal = Path(rt.settings.data_dir) / JOURNAL
        self.exports = Path(rt.settings.data_dir) / "exports"
        # called inside the transaction that makes an erasure effective (conn, subjects, request id), and
        # after the purge: how erasure notices reach destinations that received the person's data
        self.hooks: list[Callable[[Any, list[str], str], Any]] = []
        self.after: list[Callable[[], Any]] = []

    # -- holds ---------------------------------------------------------------------------------
    def holds(self, people: list[str], conn: Any) -> dict[str, list[tuple[str, str]]]:
        out: dict[str, list[tuple[str, str]]] = {}
        for sid, store, reason in conn.execute(
            select(legal_holds.c.subject_id, legal_holds.c.store, legal_holds.c.reason).where(
                legal_holds.c.subject_id.in_(people), legal_holds.c.released_ms.is_(None)
            )
        ):
            out.setdefault(sid, []).append((store, reason))
        return out

    def add_hold(self, subject_id: str, store: str, reason: str, *, actor: str) -> int:
        if store not in SUBJECT_TABLES:
            raise ValueError(f"store must be one of {', '.join(sorted(SUBJECT_TABLES))}")
        with self.store.write() as conn:
            res = conn.execute(
                legal_holds.insert(),
                {
                    "subject_id": subject_id,
                    "store": store,
                    "reason": reason[:300],
                    "created_ms": now_ms(),
                    "created_by": actor[:100],
                },
            )
            audit.record(conn, actor, "rights.legal_hold", subject_id=subject_id, details={"store": store})
            return int(res.inserted_primary_key[0])

    # -- the journal ---------------------------------------------------------------------------
    def _journal(self, request_id: str, people: list[str]) -> None:
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        line = orjson.dumps({"ts_ms": now_ms(), "request": request_id, "subjects": people}) + b"\n"
        fd = os.open(self.journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def journaled(self) -> list[str]:
        if not self.journal.exists():
            return []
        out: list[str] = []
        for line in self.journal.read_bytes().splitlines():
            try:
                out.extend(orjson.loads(line)["subjects"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                log.warning("skipping an unreadable line of %s", JOURNAL)
        return out

    def reapply(self) -> int:
        """Erase again anyone in the journal the database still knows (a restored backup)."""
        people = self.journaled()
        if not people:
            return 0
        back: set[str] = set()
        with self.store.engine.connect() as conn:
            for i in range(0, len(people), CHUNK):
                chunk = people[i : i + CHUNK]
                back.update(
                    conn.execute(select(subjects.c.subject_id).where(subjects.c.subject_id.in_(chunk))).scalars()
                )
                back.update(
                    conn.execute(select(identifiers.c.subject_id).where(identifiers.c.subject_id.in_(chunk))).scalars()
                )
        if back:
            log.warning("%d erased subjects reappeared (a restored backup?): erasing them again", len(back))
            self.erase(sorted(back), request_id="journal", actor="system", journal=False)
        return len(back)

    # -- erasing -------------------------------------------------------------------------------
    def erase(self, people: list[str], *, request_id: str, actor: str, journal: bool = True) -> dict[str, Any]:
        started = time.perf_counter()
        with self.store.engine.connect() as conn:
            holds = self.holds(people, conn)
        free = [p for p in people if p not in holds]
        if journal and free:
            self._journal(request_id, free)
        # 1. effective: keys gone, subjects marked, tombstones written, in one transaction
        with self.store.write() as conn:
            tombstones = 0
            for i in range(0, len(free), CHUNK):
                chunk = free[i : i + CHUNK]
                for sid in chunk:
                    self.vault.shred(conn, sid)
                conn.execute(update(subjects).where(subjects.c.subject_id.in_(chunk)).values(state="erased"))
                for id_type, contact in conn.execute(
                    select(identifiers.c.id_type, identifiers.c.contact_hash).where(
                        identifiers.c.subject_id.in_(chunk), identifiers.c.contact_hash.is_not(None)
                    )
                ):
                    conn.execute(
                        self.store.insert_ignore(suppressions),
                        {
                            "channel": "all",
                            "hash": contact,
                            "id_type": id_type,
                            "reason": "erasure",
                            "source": f"request:{request_id}"[:100],
                            "created_ms": now_ms(),
                        },
                    )
                    tombstones += 1
            for sid in free:
                audit.record(conn, actor, "rights.erasure.shredded", subject_id=sid, target=f"request:{request_id}")
            for hook in self.hooks:
                hook(conn, free, request_id)
        effective_ms = round((time.perf_counter() - started) * 1000, 1)
        for sid in people:
            self.rt.consent.invalidate(sid)
        self.rt.ingestor.forget_subjects(set(people))
        # 2. purge
        result: dict[str, Any] = {"effective_ms": effective_ms, "tombstones": tombstones}
        result.update(self.purge(people, holds, actor=actor, request_id=request_id))
        result["purged_ms"] = round((time.perf_counter() - started) * 1000, 1)
        for after in self.after:
            try:
                after()
            except Exception as exc:  # noqa: BLE001 - the notices stay queued; the erasure itself is done
                log.warning("after erasure: %s", type(exc).__name__)
        return result

    def purge(
        self, people: list[str], holds: dict[str, list[tuple[str, str]]], *, actor: str, request_id: str
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        held_stores = {(sid, store) for sid, hs in holds.items() for store, _ in hs}
        with self.store.write() as conn:
            # the people on the other end of their links: their profiles are recomputed below
            others: set[str] = set()
            for i in range(0, len(people), CHUNK):
                chunk = people[i : i + CHUNK]
                for a, b in conn.execute(
                    select(identity_edges.c.a_subject, identity_edges.c.b_subject).where(
                        or_(identity_edges.c.a_subject.in_(chunk), identity_edges.c.b_subject.in_(chunk))
                    )
                ):
                    others.update(s for s in (a, b) if s and s not in people)
            order = [t for t in SUBJECT_TABLES if t not in LAST and t != "legal_holds"] + list(LAST)
            for table_name in order:
                table = metadata.tables[table_name]
                columns = [SUBJECT_TABLES[table_name], *SUBJECT_COLUMNS_EXTRA.get(table_name, ())]
                targets = [p for p in people if (p, table_name) not in held_stores]
                if table_name in ("data_keys", "subjects"):
                    targets = [p for p in targets if p not in holds]  # a hold keeps the key readable
                deleted = 0
                for i in range(0, len(targets), CHUNK):
                    chunk = targets[i : i + CHUNK]
                    cond = or_(*(table.c[c].in_(chunk) for c in columns))
                    deleted += conn.execute(delete(table).where(cond)).rowcount or 0
                entry: dict[str, Any] = {"deleted": deleted}
                reasons = [r for sid, hs in holds.items() for store, r in hs if store == table_name]
                if reasons:
                    entry["held"] = reasons
                out[table_name] = entry
            if others and self.rt.identity is not None:
                self.rt.identity.after_edges(conn, others, trust_flags=False)
            audit.record(
                conn,
                actor,
                "rights.erasure.purged",
                target=f"request:{request_id}",
                details={"tables": {k: v["deleted"] for k, v in out.items()}, "subjects": len(people)},
            )
        files = 0
        if self.exports.exists():
            for p in people:
                for f in self.exports.glob(f"{p}-*"):
                    f.unlink(missing_ok=True)
                    files += 1
        out["export_files"] = {"deleted": files}
        lake = getattr(self.rt.analytics, "lake", None)
        if lake is not None:  # the analytics store (Parquet): every file holding a row of theirs is rewritten
            out["analytics_files"] = {"deleted": lake.purge(people)}
        self.store.checkpoint()
        return out
