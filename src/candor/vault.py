"""The vault: pseudonyms for identifiers, encryption for personal values, crypto-shredding.

* Identifiers used for lookup (userId, anonymousId, email, phone, external ids) become keyed
  HMAC-SHA256 pseudonyms. HMAC keys are versioned and stored wrapped by the master key.
* Personal values are sealed with AES-256-GCM under a per-subject data key. Data keys are random,
  wrapped (AES-256-GCM) by the master key, and bound to their subject as associated data.
* Deleting a subject's data key makes every sealed value of that subject unreadable at once, in the
  database, in exports and in backups: that is erasure by crypto-shredding.

All primitives come from the ``cryptography`` library; nothing here is home-made cryptography.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from collections import OrderedDict
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, select

from candor.store import Store, now_ms
from candor.store.schema import data_keys, keyring, subjects

SEAL_VERSION = b"\x01"
NONCE_BYTES = 12
PSEUDONYM_HEX = 32  # 128-bit pseudonyms


class KeyDestroyed(LookupError):
    """The subject's data key no longer exists: the sealed value was crypto-shredded."""


class VaultError(RuntimeError):
    """A key cannot be unwrapped or a value cannot be opened (wrong master key, tampering)."""


def kek_fingerprint(master_key: bytes) -> str:
    """A public id of a master key (does not reveal it): used to know which key wrapped what."""
    return hmac.new(master_key, b"candor-kek-id", hashlib.sha256).hexdigest()[:16]


def secret_hash(secret: str) -> str:
    """SHA-256 of a high-entropy secret (write keys, API tokens) for storage and lookup."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class Vault:
    """Key management and sealing for one store. Thread-safe."""

    def __init__(self, store: Store, master_key: bytes, cache_size: int = 200_000) -> None:
        if len(master_key) != 32:
            raise VaultError("the master key must be 32 bytes")
        self.store = store
        self._kek = AESGCM(master_key)
        self.kek_id = kek_fingerprint(master_key)
        self._lock = threading.Lock()
        self._keys: OrderedDict[str, AESGCM] = OrderedDict()
        self._cache_size = cache_size
        self._hmac_keys: dict[int, bytes] = {}
        self.hmac_version = 0
        self._load_hmac_keys()

    # -- wrapping ------------------------------------------------------------------------------
    def wrap(self, key: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return SEAL_VERSION + nonce + self._kek.encrypt(nonce, key, aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        if wrapped[:1] != SEAL_VERSION:
            raise VaultError("unknown key wrapping version")
        try:
            return self._kek.decrypt(wrapped[1 : 1 + NONCE_BYTES], wrapped[1 + NONCE_BYTES :], aad)
        except InvalidTag as exc:
            raise VaultError(
                "a stored key cannot be unwrapped: the master key does not match this data directory"
            ) from exc

    # -- HMAC pseudonyms -----------------------------------------------------------------------
    def _load_hmac_keys(self) -> None:
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(keyring.c.version, keyring.c.wrapped).where(keyring.c.kind == "hmac")).all()
        if not rows:
            key = secrets.token_bytes(32)
            with self.store.write() as conn:
                conn.execute(
                    self.store.insert_ignore(keyring),
                    {
                        "kind": "hmac",
                        "version": 1,
                        "wrapped": self.wrap(key, b"keyring:hmac:1"),
                        "kek_id": self.kek_id,
                        "created_ms": now_ms(),
                    },
                )
            with self.store.engine.connect() as conn:
                rows = conn.execute(select(keyring.c.version, keyring.c.wrapped).where(keyring.c.kind == "hmac")).all()
        for version, wrapped in rows:
            self._hmac_keys[version] = self.unwrap(wrapped, f"keyring:hmac:{version}".encode())
        self.hmac_version = max(self._hmac_keys)

    def pseudonym(self, id_type: str, value: str, version: int | None = None) -> str:
        """Keyed pseudonym of a normalised identifier value of a given type."""
        key = self._hmac_keys[version or self.hmac_version]
        msg = id_type.encode() + b"\x1f" + value.encode("utf-8")
        return hmac.digest(key, msg, "sha256").hex()[:PSEUDONYM_HEX]

    # -- data keys -----------------------------------------------------------------------------
    def new_subject(self, conn: Any) -> tuple[str, AESGCM]:
        """Create a subject and its data key inside the caller's transaction."""
        subject_id = secrets.token_hex(16)
        key = AESGCM.generate_key(bit_length=256)
        ts = now_ms()
        conn.execute(subjects.insert(), {"subject_id": subject_id, "created_ms": ts, "state": "active"})
        conn.execute(
            data_keys.insert(),
            {
                "subject_id": subject_id,
                "wrapped": self.wrap(key, b"dk:" + subject_id.encode()),
                "kek_id": self.kek_id,
                "created_ms": ts,
            },
        )
        aead = AESGCM(key)
        self._remember(subject_id, aead)
        return subject_id, aead

    def new_subject_rows(self, n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
        """Rows for ``n`` new subjects and their wrapped keys, for a bulk insert by the caller.

        The keys are cached only after :meth:`remember_many` is called post-commit.
        """
        ts = now_ms()
        subj_rows, key_rows, ids = [], [], []
        for _ in range(n):
            sid = secrets.token_hex(16)
            key = AESGCM.generate_key(bit_length=256)
            ids.append(sid)
            subj_rows.append({"subject_id": sid, "created_ms": ts, "state": "active"})
            key_rows.append(
                {
                    "subject_id": sid,
                    "wrapped": self.wrap(key, b"dk:" + sid.encode()),
                    "kek_id": self.kek_id,
                    "created_ms": ts,
                    "_key": key,
                }
            )
        return subj_rows, key_rows, ids

    def _remember(self, subject_id: str, aead: AESGCM) -> None:
        with self._lock:
            self._keys[subject_id] = aead
            self._keys.move_to_end(subject_id)
            while len(self._keys) > self._cache_size:
                self._keys.popitem(last=False)

    def remember(self, subject_id: str, key: bytes) -> AESGCM:
        aead = AESGCM(key)
        self._remember(subject_id, aead)
        return aead

    def forget(self, subject_id: str) -> None:
        with self._lock:
            self._keys.pop(subject_id, None)

    def key_for(self, subject_id: str, conn: Any = None) -> AESGCM:
        """The subject's data key (cached), or KeyDestroyed when it was shredded."""
        with self._lock:
            aead = self._keys.get(subject_id)
            if aead is not None:
                self._keys.move_to_end(subject_id)
                return aead
        query = select(data_keys.c.wrapped).where(data_keys.c.subject_id == subject_id)
        if conn is None:
            with self.store.engine.connect() as c:
                wrapped = c.execute(query).scalar()
        else:
            wrapped = conn.execute(query).scalar()
        if wrapped is None:
            raise KeyDestroyed(f"the data key of subject {subject_id} was destroyed")
        return self.remember(subject_id, self.unwrap(wrapped, b"dk:" + subject_id.encode()))

    def keys_for(self, subject_ids: list[str], conn: Any) -> dict[str, AESGCM]:
        """Data keys for many subjects in one query (missing ones are left out)."""
        out: dict[str, AESGCM] = {}
        missing = []
        with self._lock:
            for sid in subject_ids:
                aead = self._keys.get(sid)
                if aead is None:
                    missing.append(sid)
                else:
                    out[sid] = aead
        for i in range(0, len(missing), 500):
            chunk = missing[i : i + 500]
            rows = conn.execute(
                select(data_keys.c.subject_id, data_keys.c.wrapped).where(data_keys.c.subject_id.in_(chunk))
            ).all()
            for sid, wrapped in rows:
                out[sid] = self.remember(sid, self.unwrap(wrapped, b"dk:" + sid.encode()))
        return out

    def shred(self, conn: Any, subject_id: str) -> bool:
        """Destroy a subject's data key (crypto-shredding). Returns whether a key existed."""
        result = conn.execute(delete(data_keys).where(data_keys.c.subject_id == subject_id))
        self.forget(subject_id)
        return bool(result.rowcount)

    # -- sealing -------------------------------------------------------------------------------
    @staticmethod
    def seal_with(aead: AESGCM, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return SEAL_VERSION + nonce + aead.encrypt(nonce, plaintext, aad)

    @staticmethod
    def open_with(aead: AESGCM, sealed: bytes, aad: bytes) -> bytes:
        if sealed[:1] != SEAL_VERSION:
            raise VaultError("unknown sealed-value version")
        try:
            return aead.decrypt(sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :], aad)
        except InvalidTag as exc:
            raise VaultError("a sealed value failed authentication (tampered or wrong subject)") from exc

    def seal(self, subject_id: str, plaintext: bytes) -> bytes:
        return self.seal_with(self.key_for(subject_id), plaintext, subject_id.encode())

    def open(self, subject_id: str, sealed: bytes, conn: Any = None) -> bytes:
        return self.open_with(self.key_for(subject_id, conn), sealed, subject_id.encode())
