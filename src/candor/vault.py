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
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import bindparam, delete, select

from candor.store import Store, now_ms
from candor.store.schema import data_keys, keyring, markers, subjects

SEAL_VERSION = b"\x01"
NONCE_BYTES = 12
KEK_ID_BYTES = 8
PSEUDONYM_HEX = 32  # 128-bit pseudonyms
# data keys of many subjects, built once (the writer asks for every group)
_KEYS_OF = select(data_keys.c.subject_id, data_keys.c.wrapped).where(
    data_keys.c.subject_id.in_(bindparam("ids", expanding=True))
)


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


KeyLoader = Callable[[], list[bytes]]


# Vaults of this process: a forked child (candor/forking.py) gets a fresh lock in each, in case
# another thread of the parent held one at the fork
_VAULTS: weakref.WeakSet[Vault] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for vault in list(_VAULTS):
        vault._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Vault:
    """Key management and sealing for one store. Thread-safe.

    The vault may know several master keys (key-encryption keys, KEKs) at once: the first is the
    *primary* and wraps every new key; the others only unwrap, during a rotation. Each wrapped key
    names the KEK that wrapped it, and the key loader is consulted again (at most once a second, or
    at once when an unknown KEK is met) so running processes follow a rotation without a restart.
    """

    def __init__(
        self,
        store: Store,
        master_key: bytes | None = None,
        *,
        key_loader: KeyLoader | None = None,
        cache_size: int = 200_000,
    ) -> None:
        if key_loader is None:
            if master_key is None or len(master_key) != 32:
                raise VaultError("the master key must be 32 bytes")
            fixed = master_key
            key_loader = lambda: [fixed]  # noqa: E731
        self.store = store
        self._loader = key_loader
        self._lock = threading.Lock()
        _VAULTS.add(self)
        self._keks: dict[str, AESGCM] = {}
        self.kek_id = ""
        self._kek_checked = 0.0
        self._load_keks()
        self._keys: OrderedDict[str, AESGCM] = OrderedDict()
        self._shred_checked = float("-inf")
        self._shred_seen: int | None = None
        self._cache_size = cache_size
        self._hmac_keys: dict[int, bytes] = {}
        self.hmac_version = 0
        self.legacy_hmac_versions: tuple[int, ...] = ()
        self._load_hmac_keys()
        self._suppression_key: bytes | None = None

    # -- master keys ---------------------------------------------------------------------------
    def _load_keks(self) -> None:
        keys = self._loader()
        if not keys or any(len(k) != 32 for k in keys):
            raise VaultError("the master key must be 32 bytes")
        keks = {kek_fingerprint(k): AESGCM(k) for k in keys}
        with self._lock:
            self._keks = keks
            self.kek_id = kek_fingerprint(keys[0])
            self._kek_checked = time.monotonic()

    def _refresh_keks(self, force: bool = False) -> None:
        if force or time.monotonic() - self._kek_checked > 1.0:
            self._load_keks()

    @property
    def kek_ids(self) -> list[str]:
        return list(self._keks)

    # -- wrapping ------------------------------------------------------------------------------
    def wrap_with_id(self, key: bytes, aad: bytes) -> tuple[bytes, str]:
        """Wrap ``key`` under the primary master key; returns the wrapped bytes and the KEK id."""
        self._refresh_keks()
        kek_id = self.kek_id
        nonce = os.urandom(NONCE_BYTES)
        wrapped = SEAL_VERSION + bytes.fromhex(kek_id) + nonce + self._keks[kek_id].encrypt(nonce, key, aad)
        return wrapped, kek_id

    def wrap(self, key: bytes, aad: bytes) -> bytes:
        return self.wrap_with_id(key, aad)[0]

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        if wrapped[:1] != SEAL_VERSION or len(wrapped) < 1 + KEK_ID_BYTES + NONCE_BYTES:
            raise VaultError("unknown key wrapping version")
        kek_id = wrapped[1 : 1 + KEK_ID_BYTES].hex()
        kek = self._keks.get(kek_id)
        if kek is None:
            self._refresh_keks(force=True)
            kek = self._keks.get(kek_id)
        if kek is None:
            raise VaultError(
                "a stored key cannot be unwrapped: the master key does not match this data directory "
                f"(it needs master key {kek_id})"
            )
        body = wrapped[1 + KEK_ID_BYTES :]
        try:
            return kek.decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], aad)
        except InvalidTag as exc:
            raise VaultError("a stored key failed authentication (tampered)") from exc

    # -- HMAC pseudonyms -----------------------------------------------------------------------
    def _load_hmac_keys(self) -> None:
        query = select(keyring.c.version, keyring.c.wrapped, keyring.c.retired_ms).where(keyring.c.kind == "hmac")
        with self.store.engine.connect() as conn:
            rows = conn.execute(query).all()
        if not rows:
            key = secrets.token_bytes(32)
            wrapped, kek_id = self.wrap_with_id(key, b"keyring:hmac:1")
            with self.store.write() as conn:
                conn.execute(
                    self.store.insert_ignore(keyring),
                    {"kind": "hmac", "version": 1, "wrapped": wrapped, "kek_id": kek_id, "created_ms": now_ms()},
                )
            with self.store.engine.connect() as conn:
                rows = conn.execute(query).all()
        keys = {}
        for version, wrapped, retired in rows:
            if retired is None:
                keys[version] = self._hmac_keys.get(version) or self.unwrap(wrapped, f"keyring:hmac:{version}".encode())
        self._hmac_keys = keys
        self.hmac_version = max(keys)
        self.legacy_hmac_versions = tuple(sorted((v for v in keys if v != self.hmac_version), reverse=True))
        self._hmac_checked = time.monotonic()

    def refresh_hmac(self, max_age: float = 5.0) -> None:
        """Pick up HMAC key rotations made by another process (checked at most every ``max_age`` s)."""
        if time.monotonic() - self._hmac_checked > max_age:
            self._load_hmac_keys()

    def pseudonym(self, id_type: str, value: str, version: int | None = None) -> str:
        """Keyed pseudonym of a normalised identifier value of a given type."""
        key = self._hmac_keys[version or self.hmac_version]
        msg = id_type.encode() + b"\x1f" + value.encode("utf-8")
        return hmac.digest(key, msg, "sha256").hex()[:PSEUDONYM_HEX]

    def contact_hash(self, id_type: str, value: str) -> str:
        """HMAC of a normalised contact (email, phone, postal address) under the suppression key.

        The suppression key is separate from the pseudonym keys and is never rotated or erased, so
        do-not-contact entries outlive the erasure of the person (tombstones without personal data).
        """
        key = self._suppression_key
        if key is None:
            key = self._suppression_key = self._load_or_create("suppression", 1)
        msg = id_type.encode() + b"\x1f" + value.encode("utf-8")
        return hmac.digest(key, msg, "sha256").hex()

    def _load_or_create(self, kind: str, version: int) -> bytes:
        aad = f"keyring:{kind}:{version}".encode()
        query = select(keyring.c.wrapped).where(keyring.c.kind == kind, keyring.c.version == version)
        with self.store.engine.connect() as conn:
            wrapped = conn.execute(query).scalar()
        if wrapped is None:
            new, kek_id = self.wrap_with_id(secrets.token_bytes(32), aad)
            with self.store.write() as conn:
                conn.execute(
                    self.store.insert_ignore(keyring),
                    {"kind": kind, "version": version, "wrapped": new, "kek_id": kek_id, "created_ms": now_ms()},
                )
            with self.store.engine.connect() as conn:
                wrapped = conn.execute(query).scalar()
        if wrapped is None:
            raise VaultError(f"the {kind} key could not be created")
        return self.unwrap(wrapped, aad)

    def installation_key(self) -> bytes:
        """A random secret of this installation, wrapped like every key (and so re-wrapped by a master key
        rotation, never changed by it): the installation id and the MAC of backup manifests derive from it."""
        return self._load_or_create("installation", 1)

    def legacy_pseudonyms(self, id_type: str, value: str) -> list[str]:
        """Pseudonyms of the value under older HMAC keys still in their rotation window."""
        if not self.legacy_hmac_versions:
            return []
        return [self.pseudonym(id_type, value, v) for v in self.legacy_hmac_versions]

    def all_pseudonyms(self, id_type: str, value: str) -> list[str]:
        """The current pseudonym first, then the legacy ones: for lookups by a known identifier."""
        return [self.pseudonym(id_type, value), *self.legacy_pseudonyms(id_type, value)]

    # -- data keys -----------------------------------------------------------------------------
    def new_subject(self, conn: Any) -> tuple[str, AESGCM]:
        """Create a subject and its data key inside the caller's transaction."""
        subject_id = secrets.token_hex(16)
        key = AESGCM.generate_key(bit_length=256)
        ts = now_ms()
        conn.execute(subjects.insert(), {"subject_id": subject_id, "created_ms": ts, "state": "active"})
        wrapped, kek_id = self.wrap_with_id(key, b"dk:" + subject_id.encode())
        conn.execute(
            data_keys.insert(),
            {"subject_id": subject_id, "wrapped": wrapped, "kek_id": kek_id, "created_ms": ts},
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
            wrapped, kek_id = self.wrap_with_id(key, b"dk:" + sid.encode())
            key_rows.append({"subject_id": sid, "wrapped": wrapped, "kek_id": kek_id, "created_ms": ts, "_key": key})
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

    def remember_aead(self, subject_id: str, aead: AESGCM) -> None:
        """Cache a cipher already built for ``subject_id``'s data key (a new subject's, at commit)."""
        self._remember(subject_id, aead)

    def forget(self, subject_id: str) -> None:
        with self._lock:
            self._keys.pop(subject_id, None)

    SHRED_CHECK_SECONDS = 0.5

    def _check_shreds(self, conn: Any = None) -> None:
        """Drop every cached key when any process shredded one (the ``shred`` marker moved)."""
        now = time.monotonic()
        if now < self._shred_checked + self.SHRED_CHECK_SECONDS:
            return
        self._shred_checked = now
        query = select(markers.c.value).where(markers.c.name == "shred")
        if conn is None:
            with self.store.engine.connect() as c:
                value = c.execute(query).scalar()
        else:
            value = conn.execute(query).scalar()
        if value != self._shred_seen:
            with self._lock:
                self._keys.clear()
            self._shred_seen = value

    def new_key(self, conn: Any, key_id: str) -> AESGCM:
        """A data key that belongs to no person (a privacy request's own), inside the caller's transaction."""
        key = AESGCM.generate_key(bit_length=256)
        wrapped, kek_id = self.wrap_with_id(key, b"dk:" + key_id.encode())
        conn.execute(
            data_keys.insert(), {"subject_id": key_id, "wrapped": wrapped, "kek_id": kek_id, "created_ms": now_ms()}
        )
        return self.remember(key_id, key)

    def key_for(self, subject_id: str, conn: Any = None) -> AESGCM:
        """The subject's data key (cached), or KeyDestroyed when it was shredded."""
        self._check_shreds(conn)
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
        self._check_shreds(conn)
        with self._lock:
            for sid in subject_ids:
                aead = self._keys.get(sid)
                if aead is None:
                    missing.append(sid)
                else:
                    out[sid] = aead
        for i in range(0, len(missing), 500):
            chunk = missing[i : i + 500]
            rows = conn.execute(_KEYS_OF, {"ids": chunk}).all()
            for sid, wrapped in rows:
                out[sid] = self.remember(sid, self.unwrap(wrapped, b"dk:" + sid.encode()))
        return out

    def shred(self, conn: Any, subject_id: str) -> bool:
        """Destroy a subject's data key (crypto-shredding). Returns whether a key existed.

        Other processes drop their cached keys within ``SHRED_CHECK_SECONDS`` (the ``shred`` marker).
        """
        result = conn.execute(delete(data_keys).where(data_keys.c.subject_id == subject_id))
        self.forget(subject_id)
        bump = self.store.insert(markers)
        bump = bump.on_conflict_do_update(index_elements=["name"], set_={"value": markers.c.value + 1})
        conn.execute(bump, {"name": "shred", "value": 1})
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
