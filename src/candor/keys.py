"""Key rotation: the master key (re-wrap, never re-encrypt) and the HMAC pseudonym key.

Master key rotation re-wraps every data key and every keyring entry under the new master key; the
personal data itself is not touched, so a rotation over millions of subjects takes seconds. It can
be interrupted and resumed: every wrapped key names the master key that wrapped it, and a run only
re-wraps what is not yet under the new key.

With the key file (the default), ``rotate_master`` writes ``master.key.next``; running processes see
it within a second and wrap new keys with it; when nothing is left under the old key, the new file
replaces ``master.key`` and the old key is gone. With ``CANDOR_MASTER_KEY``, the operator sets the new
key there and the old one in ``CANDOR_PREVIOUS_MASTER_KEY`` for every process, runs the rotation,
then removes the previous key.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, select, update

from candor import audit
from candor.config import MASTER_KEY_FILE, NEXT_MASTER_KEY_FILE, Settings, write_key_file
from candor.store import Store, now_ms
from candor.store.schema import data_keys, identifiers, keyring
from candor.vault import Vault

BATCH = 500
SETTLE_SECONDS = 2.2  # longer than the vault's key-file refresh interval (1 s), twice


@dataclass
class RotationReport:
    rewrapped: int
    old_kek_ids: list[str]
    new_kek_id: str


def pending(store: Store, primary: str) -> int:
    with store.engine.connect() as conn:
        a = conn.execute(select(func.count()).select_from(data_keys).where(data_keys.c.kek_id != primary)).scalar()
        b = conn.execute(select(func.count()).select_from(keyring).where(keyring.c.kek_id != primary)).scalar()
    return int(a or 0) + int(b or 0)


def _rewrap_pass(store: Store, vault: Vault, on_progress: Callable[[int], Any] | None) -> int:
    primary = vault.kek_id
    done = 0
    while True:
        with store.write() as conn:
            rows = conn.execute(
                select(keyring.c.kind, keyring.c.version, keyring.c.wrapped, keyring.c.kek_id)
                .where(keyring.c.kek_id != primary)
                .limit(BATCH)
            ).all()
            for kind, version, wrapped, old in rows:
                aad = f"keyring:{kind}:{version}".encode()
                new, kek = vault.wrap_with_id(vault.unwrap(wrapped, aad), aad)
                conn.execute(
                    update(keyring)
                    .where(and_(keyring.c.kind == kind, keyring.c.version == version, keyring.c.kek_id == old))
                    .values(wrapped=new, kek_id=kek)
                )
            krows = conn.execute(
                select(data_keys.c.subject_id, data_keys.c.wrapped, data_keys.c.kek_id)
                .where(data_keys.c.kek_id != primary)
                .limit(BATCH)
            ).all()
            for sid, wrapped, old in krows:
                aad = b"dk:" + sid.encode()
                new, kek = vault.wrap_with_id(vault.unwrap(wrapped, aad), aad)
                conn.execute(
                    update(data_keys)
                    .where(and_(data_keys.c.subject_id == sid, data_keys.c.kek_id == old))
                    .values(wrapped=new, kek_id=kek)
                )
        n = len(rows) + len(krows)
        done += n
        if on_progress and n:
            on_progress(n)
        if n == 0:
            return done


def rotate_master(
    settings: Settings,
    store: Store,
    vault: Vault,
    *,
    actor: str = "cli",
    on_start: Callable[[int], Any] | None = None,
    on_progress: Callable[[int], Any] | None = None,
    settle: float = SETTLE_SECONDS,
) -> RotationReport:
    """Re-wrap every key under a new master key (resumable; see the module docstring)."""
    file_mode = not settings.master_key
    nxt = settings.data_dir / NEXT_MASTER_KEY_FILE
    if file_mode and not nxt.exists():
        write_key_file(nxt, secrets.token_bytes(32))
    vault._refresh_keks(force=True)
    primary = vault.kek_id
    old_ids = [k for k in vault.kek_ids if k != primary]
    if on_start:
        on_start(pending(store, primary))
    total = _rewrap_pass(store, vault, on_progress)
    if file_mode:
        # running processes switch to the new key within a second; sweep what they wrapped meanwhile
        time.sleep(settle)
        total += _rewrap_pass(store, vault, on_progress)
    if pending(store, primary):
        raise RuntimeError("keys were still being wrapped under the old master key; run the rotation again")
    audit.append(store, actor, "keys.rotate_master", details={"from": old_ids, "to": primary, "rewrapped": total})
    if file_mode:
        current = settings.data_dir / MASTER_KEY_FILE
        os.replace(nxt, current)
        dir_fd = os.open(settings.data_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        vault._refresh_keks(force=True)
    return RotationReport(total, old_ids, primary)


def rotate_hmac(store: Store, vault: Vault, *, actor: str = "cli") -> int:
    """Start using a new HMAC key version. Older versions keep resolving until retired."""
    with store.write() as conn:
        current = conn.execute(select(func.max(keyring.c.version)).where(keyring.c.kind == "hmac")).scalar() or 0
        version = int(current) + 1
        aad = f"keyring:hmac:{version}".encode()
        wrapped, kek_id = vault.wrap_with_id(secrets.token_bytes(32), aad)
        conn.execute(
            keyring.insert(),
            {"kind": "hmac", "version": version, "wrapped": wrapped, "kek_id": kek_id, "created_ms": now_ms()},
        )
        audit.record(conn, actor, "keys.rotate_hmac", details={"version": version})
    vault.refresh_hmac(max_age=0)
    return version


def retire_hmac(store: Store, vault: Vault, version: int, *, actor: str = "cli") -> int:
    """End the rotation window of an old HMAC key: it is destroyed, and the pseudonyms made with it
    are deleted (identifiers seen during the window were re-registered under the newer key).
    Returns how many old pseudonyms were deleted."""
    vault.refresh_hmac(max_age=0)
    if version == vault.hmac_version:
        raise ValueError(f"version {version} is the current HMAC key; rotate first (candor keys rotate-hmac)")
    if version not in vault.legacy_hmac_versions:
        raise ValueError(f"HMAC key version {version} is not in a rotation window")
    from sqlalchemy import delete

    with store.write() as conn:
        removed = conn.execute(delete(identifiers).where(identifiers.c.hmac_version == version)).rowcount
        conn.execute(delete(keyring).where(and_(keyring.c.kind == "hmac", keyring.c.version == version)))
        audit.record(conn, actor, "keys.retire_hmac", details={"version": version, "pseudonyms_deleted": removed})
    vault.refresh_hmac(max_age=0)
    return int(removed or 0)


def status(store: Store, vault: Vault) -> dict[str, Any]:
    vault.refresh_hmac(max_age=0)
    return {
        "master_key_id": vault.kek_id,
        "master_keys_in_force": vault.kek_ids,
        "keys_not_under_primary": pending(store, vault.kek_id),
        "hmac_version": vault.hmac_version,
        "hmac_versions_in_rotation_window": list(vault.legacy_hmac_versions),
    }
