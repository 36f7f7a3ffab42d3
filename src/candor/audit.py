"""The audit log: append-only, hash-chained, with signed checkpoints outside the database.

Every consent change, rights step, merge and split, export, key operation and staff read of
plaintext is one entry. Entries hold pseudonyms and ids, never personal values. Each entry's hash
covers its own fields and the previous entry's hash, so editing, deleting or reordering a row breaks
the chain from that row on. The chain head is also signed (Ed25519) into a checkpoint file in the data
directory, so cutting entries off the end (which leaves a valid shorter chain) is detected too.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import insert, select, update

from candor.store import Store, now_ms
from candor.store.schema import audit_head, audit_log, keyring

GENESIS = "0" * 64
CHECKPOINT_FILE = "audit-checkpoints.jsonl"
PUBLIC_KEY_FILE = "audit-signing.pub"


def entry_hash(
    seq: int,
    ts_ms: int,
    actor: str,
    action: str,
    subject_id: str | None,
    target: str | None,
    details: str,
    prev_hash: str,
) -> str:
    """SHA-256 over the canonical encoding of an entry's stored fields and the previous hash."""
    payload = orjson.dumps([seq, ts_ms, actor, action, subject_id, target, details, prev_hash])
    return hashlib.sha256(payload).hexdigest()


def record(
    conn: Any,
    actor: str,
    action: str,
    *,
    subject_id: str | None = None,
    target: str | None = None,
    details: dict[str, Any] | None = None,
) -> int:
    """Append one entry inside the caller's write transaction; returns its sequence number.

    The head row is locked (``FOR UPDATE`` on PostgreSQL; the write transaction on SQLite), so
    concurrent appends form one linear chain.
    """
    head = conn.execute(
        select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1).with_for_update()
    ).first()
    if head is None:
        seq, prev = 1, GENESIS
        conn.execute(insert(audit_head), {"id": 1, "seq": 0, "hash": GENESIS})
    else:
        seq, prev = head[0] + 1, head[1]
    ts = now_ms()
    detail_text = orjson.dumps(details or {}, option=orjson.OPT_SORT_KEYS).decode()
    h = entry_hash(seq, ts, actor, action, subject_id, target, detail_text, prev)
    conn.execute(
        insert(audit_log),
        {
            "seq": seq,
            "ts_ms": ts,
            "actor": actor[:100],
            "action": action[:100],
            "subject_id": subject_id,
            "target": target[:200] if target else None,
            "details": detail_text,
            "prev_hash": prev,
            "hash": h,
        },
    )
    conn.execute(update(audit_head).where(audit_head.c.id == 1).values(seq=seq, hash=h))
    return seq


def append(store: Store, actor: str, action: str, **kw: Any) -> int:
    """Append one entry in a transaction of its own."""
    with store.write() as conn:
        return record(conn, actor, action, **kw)


def entries(store: Store, *, after: int = 0, limit: int = 100, subject_id: str | None = None) -> list[dict[str, Any]]:
    query = select(audit_log).where(audit_log.c.seq > after).order_by(audit_log.c.seq).limit(limit)
    if subject_id:
        query = query.where(audit_log.c.subject_id == subject_id)
    with store.engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [{**dict(r), "details": orjson.loads(r["details"])} for r in rows]


@dataclass
class Verification:
    ok: bool
    entries: int
    head_seq: int
    first_bad_seq: int | None = None
    problem: str | None = None
    checkpoints_checked: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "head_seq": self.head_seq,
            "first_bad_seq": self.first_bad_seq,
            "problem": self.problem,
            "checkpoints_checked": self.checkpoints_checked,
        }


def _rows(store: Store, chunk: int = 20_000) -> Iterator[tuple[Any, ...]]:
    last = 0
    cols = (
        audit_log.c.seq,
        audit_log.c.ts_ms,
        audit_log.c.actor,
        audit_log.c.action,
        audit_log.c.subject_id,
        audit_log.c.target,
        audit_log.c.details,
        audit_log.c.prev_hash,
        audit_log.c.hash,
    )
    with store.engine.connect() as conn:
        while True:
            rows = conn.execute(
                select(*cols).where(audit_log.c.seq > last).order_by(audit_log.c.seq).limit(chunk)
            ).all()
            if not rows:
                return
            yield from rows
            last = rows[-1][0]


class Checkpoints:
    """Signed chain heads, written to a file in the data directory (outside the database)."""

    def __init__(self, store: Store, vault: Any, data_dir: Path) -> None:
        self.store = store
        self.vault = vault
        self.path = data_dir / CHECKPOINT_FILE
        self.pub_path = data_dir / PUBLIC_KEY_FILE
        self._key: Ed25519PrivateKey | None = None

    def signing_key(self) -> Ed25519PrivateKey:
        if self._key is not None:
            return self._key
        aad = b"keyring:audit-signing:1"
        with self.store.engine.connect() as conn:
            wrapped = conn.execute(
                select(keyring.c.wrapped).where(keyring.c.kind == "audit-signing", keyring.c.version == 1)
            ).scalar()
        if wrapped is None:
            raw = os.urandom(32)
            wrapped, kek_id = self.vault.wrap_with_id(raw, aad)
            with self.store.write() as conn:
                conn.execute(
                    self.store.insert_ignore(keyring),
                    {
                        "kind": "audit-signing",
                        "version": 1,
                        "wrapped": wrapped,
                        "kek_id": kek_id,
                        "created_ms": now_ms(),
                    },
                )
            with self.store.engine.connect() as conn:
                wrapped = conn.execute(
                    select(keyring.c.wrapped).where(keyring.c.kind == "audit-signing", keyring.c.version == 1)
                ).scalar()
        self._key = Ed25519PrivateKey.from_private_bytes(self.vault.unwrap(wrapped, aad))
        pub = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        if not self.pub_path.exists():
            self.pub_path.write_text(base64.b64encode(pub).decode() + "\n")
        return self._key

    def public_key(self) -> Ed25519PublicKey:
        return self.signing_key().public_key()

    def write(self) -> dict[str, Any]:
        """Sign the current chain head and append it to the checkpoint file (fsynced)."""
        with self.store.engine.connect() as conn:
            head = conn.execute(select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)).first()
        seq, h = (head[0], head[1]) if head else (0, GENESIS)
        ts = now_ms()
        message = f"candor-audit:{seq}:{h}:{ts}".encode()
        sig = self.signing_key().sign(message)
        entry = {"seq": seq, "hash": h, "ts_ms": ts, "signature": base64.b64encode(sig).decode()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as fh:
            fh.write(orjson.dumps(entry) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        return entry

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_bytes().splitlines():
            if line.strip():
                out.append(orjson.loads(line))
        return out

    def valid(self, cp: dict[str, Any]) -> bool:
        message = f"candor-audit:{cp['seq']}:{cp['hash']}:{cp['ts_ms']}".encode()
        try:
            self.public_key().verify(base64.b64decode(cp["signature"]), message)
        except (InvalidSignature, ValueError, KeyError):
            return False
        return True


def verify(store: Store, checkpoints: Checkpoints | None = None) -> Verification:
    """Walk the whole chain; name the first entry that was edited, deleted or reordered."""
    prev = GENESIS
    expected = 1
    count = 0
    hashes_at: dict[int, str] = {}
    wanted: set[int] = set()
    cps = checkpoints.read() if checkpoints else []
    for cp in cps:
        wanted.add(int(cp.get("seq", -1)))
    for seq, ts, actor, action, subject_id, target, details, prev_hash, h in _rows(store):
        if seq != expected:
            problem = (
                f"entry {expected} is missing (the next entry is {seq})"
                if seq > expected
                else f"entry {seq} is out of order"
            )
            return Verification(False, count, seq, expected, problem)
        if prev_hash != prev:
            return Verification(
                False, count, seq, seq, f"entry {seq} does not follow entry {seq - 1} (reordered or replaced)"
            )
        if entry_hash(seq, ts, actor, action, subject_id, target, details, prev_hash) != h:
            return Verification(False, count, seq, seq, f"entry {seq} was modified")
        if seq in wanted:
            hashes_at[seq] = h
        prev = h
        expected += 1
        count += 1
    last = expected - 1
    with store.engine.connect() as conn:
        head = conn.execute(select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)).first()
    if head is not None and (head[0] != last or head[1] != prev):
        return Verification(
            False, count, last, last + 1, f"entries after {last} were deleted (the head says {head[0]})"
        )
    checked = 0
    if checkpoints is not None:
        for cp in cps:
            if not checkpoints.valid(cp):
                return Verification(
                    False, count, last, None, f"checkpoint at entry {cp.get('seq')} has a bad signature"
                )
            seq = int(cp["seq"])
            if seq == 0:
                continue
            if seq > last:
                return Verification(
                    False,
                    count,
                    last,
                    last + 1,
                    f"the log was truncated: a checkpoint covers entry {seq}, the log ends at {last}",
                )
            if hashes_at.get(seq) != cp["hash"]:
                return Verification(False, count, last, seq, f"entry {seq} differs from its signed checkpoint")
            checked += 1
    return Verification(True, count, last, checkpoints_checked=checked)
