"""Backups of the store, and restores that never bring an erased person back.

A backup is one tar archive (gzip-compressed) holding three files:

* ``candor.db``: the data, always as a SQLite database of Candor's schema. On SQLite it is an online,
  consistent copy made with ``VACUUM INTO`` (a read transaction: writers go on meanwhile). On
  PostgreSQL it is a logical copy of every table read in one ``REPEATABLE READ READ ONLY DEFERRABLE``
  transaction (one snapshot, so the tables agree with each other), written through SQLAlchemy.
* ``manifest.json``: what the archive is (format, Candor version, store, schema revision, time), whose
  it is (the installation id and the ids of the master keys that wrapped its keys, never the keys),
  row counts per table and the SHA-256 and size of ``candor.db``.
* ``manifest.hmac``: an HMAC-SHA256 of the manifest under a key derived from the installation's
  secret (a keyring entry wrapped by the master key), so only the installation that made the archive
  can vouch for it.

A restore checks everything before it changes anything: the archive opens, the manifest parses and
its checksum matches, the master key in force unwraps the archive's keys (otherwise it is from another
installation, or from before a master key rotation), the MAC verifies, the schema revision is one this
release knows. Then it works on a private copy: migrates it to the current schema, erases again
everyone the erasure journal names (the journal lives outside the database and is never restored),
records the restore in the audit log, and only then puts the copy in place: on SQLite by an atomic
rename after checking no other process has the database open; on PostgreSQL in one transaction
(``TRUNCATE`` every table, ``COPY`` the rows in, move the sequences on). Erased people never enter the
target, not even for a moment. Because the payload is SQLite either way, an archive made on one store
restores into the other: that is also how an installation moves from SQLite to PostgreSQL.

Why not pg_dump: its dump must be restored by a pg_restore at least as new as the server, ties
itself to the schema name and owner, and would load the erased people into the live database before
Candor could erase them again. The logical copy is slower on very large databases; for those, keep
PostgreSQL's own physical backups (base backup plus WAL archiving) as well, and start Candor once after
restoring one: it re-applies the erasure journal on start (docs/operations.md).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import secrets
import shutil
import sqlite3
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.engine import make_url

from candor import __version__, audit
from candor.config import MASTER_KEY_FILE, Settings
from candor.store import Store, now_ms
from candor.store.engine import StoreUnavailable, describe_connection_error
from candor.store.schema import data_keys, keyring, metadata

FORMAT = "candor-backup/1"
PAYLOAD = "candor.db"
MANIFEST = "manifest.json"
MAC = "manifest.hmac"
MEMBERS = (MANIFEST, MAC, PAYLOAD)
CHUNK = 5000

Progress = Callable[[str, int, int], None]


class BackupError(Exception):
    """A backup or restore cannot go on; the message says what was wrong, where, and what to do.

    Raised before anything was changed (a restore that fails this way leaves the target as it was).
    """


@dataclass(frozen=True)
class Identity:
    installation_id: str
    mac_key: bytes


def installation(secret: bytes) -> Identity:
    """The installation id (public) and the manifest MAC key, both derived from the installation secret."""
    ident = hmac.new(secret, b"candor-installation-id", hashlib.sha256).hexdigest()[:16]
    return Identity(ident, hmac.new(secret, b"candor-backup-manifest/1", hashlib.sha256).digest())


def _nothing(_phase: str, _done: int, _total: int) -> None:
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sqlite_path(url: str) -> Path:
    return Path(str(make_url(url).database or ""))


def _payload_settings(settings: Settings, path: Path) -> Settings:
    return settings.with_(database_url=f"sqlite:///{path}")


def _single_file(path: Path) -> None:
    """Fold a SQLite file's WAL into it and switch it to a rollback journal: one self-contained file."""
    con = sqlite3.connect(path, timeout=5, isolation_level=None)
    try:
        mode = con.execute("PRAGMA journal_mode=DELETE").fetchone()
    finally:
        con.close()
    if not mode or str(mode[0]).lower() != "delete":
        raise BackupError(f"{path} is in use by another process; stop it and try again")


# -- backup ----------------------------------------------------------------------------------------


def _copy_postgres(src: Store, dest: Store, progress: Progress) -> None:
    """Every table of ``src`` into ``dest`` (already at the same schema), from one snapshot."""
    tables = metadata.sorted_tables
    with (
        src.engine.connect().execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True, postgresql_deferrable=True
        ) as conn,
        dest.engine.begin() as out,
    ):
        for n, table in enumerate(tables):
            result = conn.execution_options(yield_per=CHUNK).execute(_rows_of(table))
            try:
                for part in result.partitions():
                    out.execute(insert(table), [dict(r._mapping) for r in part])
            finally:
                result.close()
            progress("copying tables", n + 1, len(tables))


def _rows_of(table: Any) -> Any:
    """What a backup or a restore copies of ``table``: every row, except the SQLite-only table-version
    counters (``v:<table>`` in ``markers``, migration 0015), which each SQLite store keeps for itself."""
    if table.name == "markers":
        return select(table).where(~table.c.name.startswith("v:"))
    return select(table)


def _describe_payload(path: Path, settings: Settings) -> dict[str, Any]:
    """Schema revision, master key ids and row counts of a payload file."""
    eng = create_engine(f"sqlite:///{path}")
    try:
        with eng.connect() as conn:
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            keks = set(conn.execute(select(keyring.c.kek_id).distinct()).scalars())
            keks |= set(conn.execute(select(data_keys.c.kek_id).distinct()).scalars())
            counts = {
                str(t.name): int(conn.execute(select(func.count()).select_from(t)).scalar() or 0)
                for t in metadata.sorted_tables
            }
    finally:
        eng.dispose()
    return {"schema_revision": revision, "kek_ids": sorted(keks), "tables": counts}


def backup(settings: Settings, out: Path, *, progress: Progress | None = None) -> dict[str, Any]:
    """Write a backup archive of the store named by ``settings`` to ``out`` (never overwriting a file)."""
    from candor.vault import Vault

    step = progress or _nothing
    out = Path(out)
    if out.exists():
        raise BackupError(f"{out} already exists; choose another file name (a backup never overwrites a file)")
    if not out.parent.is_dir():
        raise BackupError(f"{out.parent} is not a directory; create it first")
    store = Store(settings)
    try:
        if not store.ping():
            try:
                with store.engine.connect():
                    pass
            except Exception as exc:  # noqa: BLE001 - the message names the database, never credentials
                raise BackupError(describe_connection_error(store.url, exc)) from None
        current, head = store.current_revision(), store.head_revision()
        if current is None:
            raise BackupError(f"there is no Candor database at {_safe(store.url)}: nothing to back up")
        if not store.is_sqlite and current != head:
            raise BackupError(
                f"the database is at schema revision {current}, this release expects {head}: back up with the "
                "release that matches it, or run candor db upgrade first"
            )
        vault = Vault(store, key_loader=settings.load_master_keys)
        ident = installation(vault.installation_key())  # created on first use, so it is in the copy
        work = Path(_mkdtemp(out.parent, ".candor-backup-"))
        try:
            payload = work / PAYLOAD
            started = time.perf_counter()
            step("copying", 0, 1)
            if store.is_sqlite:
                con = sqlite3.connect(_sqlite_path(store.url), timeout=30, isolation_level=None)
                try:
                    con.execute("PRAGMA busy_timeout=30000")
                    con.execute("VACUUM INTO ?", (str(payload),))
                finally:
                    con.close()
            else:
                dest = Store(_payload_settings(settings, payload), pool=False)
                try:
                    dest.upgrade()
                    _copy_postgres(store, dest, step)
                finally:
                    dest.dispose()
            _single_file(payload)
            step("copying", 1, 1)
            info = _describe_payload(payload, settings)
            manifest = {
                "format": FORMAT,
                "created_ms": now_ms(),
                "candor_version": __version__,
                "store": "sqlite" if store.is_sqlite else "postgresql",
                "installation_id": ident.installation_id,
                **info,
                "files": {PAYLOAD: {"sha256": _sha256(payload), "bytes": payload.stat().st_size}},
            }
            body = orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
            mac = hmac.new(ident.mac_key, body, hashlib.sha256).hexdigest().encode()
            step("archiving", 0, 1)
            partial = work / "archive.tar.gz"
            with tarfile.open(partial, "w:gz", compresslevel=1) as tar:
                for name, data in ((MANIFEST, body), (MAC, mac)):
                    member = tarfile.TarInfo(name)
                    member.size, member.mtime, member.mode = len(data), int(time.time()), 0o600
                    tar.addfile(member, io.BytesIO(data))
                tar.add(payload, arcname=PAYLOAD, recursive=False, filter=_private)
            with open(partial, "rb") as fh:
                os.fsync(fh.fileno())
            os.link(partial, out)  # fails if ``out`` appeared meanwhile: never overwrite
            _fsync_dir(out.parent)
            step("archiving", 1, 1)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        audit.append(
            store,
            "cli",
            "backup.created",
            details={"installation": ident.installation_id, "tables": len(info["tables"]), "revision": current},
        )
        return {
            "archive": str(out),
            "bytes": out.stat().st_size,
            "store": manifest["store"],
            "schema_revision": manifest["schema_revision"],
            "installation_id": ident.installation_id,
            "rows": sum(info["tables"].values()),
            "seconds": round(time.perf_counter() - started, 3),
        }
    finally:
        store.dispose()


def _private(member: tarfile.TarInfo) -> tarfile.TarInfo:
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    member.mode = 0o600
    return member


def _mkdtemp(parent: Path, prefix: str) -> str:
    import tempfile

    return tempfile.mkdtemp(prefix=prefix, dir=parent)


def _safe(url: str) -> str:
    return url.split("@")[-1] if "@" in url else url


# -- restore ---------------------------------------------------------------------------------------


def _master_key_present(settings: Settings) -> None:
    if not settings.master_key and not (settings.data_dir / MASTER_KEY_FILE).exists():
        raise BackupError(
            "a restore needs the master key of the installation the backup came from: set CANDOR_MASTER_KEY "
            f"or put the key file at {settings.data_dir / MASTER_KEY_FILE} (mode 0600); nothing was changed"
        )


def read_archive(archive: Path, work: Path) -> dict[str, Any]:
    """Open ``archive``, extract the payload into ``work`` and check it against the manifest.

    Returns the manifest (with ``_mac`` and ``_body``). Raises BackupError naming what is wrong.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise BackupError(f"{archive}: no such file")
    found: dict[str, bytes] = {}
    payload = work / PAYLOAD
    digest = hashlib.sha256()
    size = 0
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if member.name not in MEMBERS or not member.isfile():
                    raise BackupError(
                        f"{archive} is not a Candor backup: it holds {member.name!r}, which a backup never does"
                    )
                fh = tar.extractfile(member)
                assert fh is not None
                if member.name == PAYLOAD:
                    fd = os.open(payload, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as outf:
                        for block in iter(lambda fh=fh: fh.read(1 << 20), b""):  # type: ignore[misc]
                            digest.update(block)
                            size += len(block)
                            outf.write(block)
                    found[PAYLOAD] = b""
                else:
                    found[member.name] = fh.read(1 << 20)
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise BackupError(
            f"{archive} cannot be read as a Candor backup ({type(exc).__name__}: the file is corrupt, truncated "
            "or not a backup); nothing was changed"
        ) from None
    missing = [m for m in MEMBERS if m not in found]
    if missing:
        raise BackupError(
            f"{archive} is not a complete Candor backup: {', '.join(missing)} missing; nothing was changed"
        )
    try:
        manifest = orjson.loads(found[MANIFEST])
    except orjson.JSONDecodeError:
        raise BackupError(f"{archive}: the manifest is not JSON (corrupt archive); nothing was changed") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{archive}: not a {FORMAT} archive (format {manifest.get('format')!r}); nothing was changed")
    expected = (manifest.get("files") or {}).get(PAYLOAD) or {}
    if expected.get("sha256") != digest.hexdigest() or expected.get("bytes") != size:
        raise BackupError(
            f"{archive} is corrupt: {PAYLOAD} does not match the checksum in its manifest; nothing was changed"
        )
    manifest["_body"] = found[MANIFEST]
    manifest["_mac"] = found[MAC].strip().decode("ascii", "replace")
    return manifest


def _check_identity(settings: Settings, payload: Path, manifest: dict[str, Any], archive: Path) -> Identity:
    """The master key in force must unwrap the archive's keys; the manifest MAC must verify."""
    from candor.vault import Vault, VaultError, kek_fingerprint

    keys = settings.load_master_keys()

    ours = {kek_fingerprint(k) for k in keys}
    needed = set(manifest.get("kek_ids") or [])
    if needed - ours:
        raise BackupError(
            f"{archive} was made with another master key (it needs master key {', '.join(sorted(needed - ours))}; "
            f"this installation has {', '.join(sorted(ours))}): it is from another installation, or from before a "
            "master key rotation (then set CANDOR_MASTER_KEY to the new key and CANDOR_PREVIOUS_MASTER_KEY to the "
            "key in force when the backup was taken). Nothing was changed"
        )
    store = Store(_payload_settings(settings, payload), pool=False)
    try:
        vault = Vault(store, key_loader=settings.load_master_keys)
        with store.engine.connect() as conn:
            wrapped = conn.execute(
                select(keyring.c.wrapped).where(keyring.c.kind == "installation", keyring.c.version == 1)
            ).scalar()
        if wrapped is None:
            raise BackupError(f"{archive} holds no installation key: it was not made by candor backup")
        ident = installation(vault.unwrap(wrapped, b"keyring:installation:1"))
    except VaultError as exc:
        raise BackupError(f"{archive}: {exc}; it is from another installation. Nothing was changed") from None
    finally:
        store.dispose()
    mac = hmac.new(ident.mac_key, manifest["_body"], hashlib.sha256).hexdigest()
    if not hmac.compare_digest(mac, manifest["_mac"]) or manifest.get("installation_id") != ident.installation_id:
        raise BackupError(f"{archive}: the manifest was altered (its MAC does not verify); nothing was changed")
    return ident


def _known_revision(settings: Settings, revision: str | None, archive: Path) -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from candor.store.engine import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        found = ScriptDirectory.from_config(cfg).get_revision(revision) if revision else None
    except CommandError:
        found = None
    if found is None:
        raise BackupError(
            f"{archive} has schema revision {revision!r}, which this release does not know: it was made by a newer "
            "Candor; install that release (or newer) to restore it. Nothing was changed"
        )


def _prepare(settings: Settings, payload: Path, *, actor: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Bring the payload to the current schema, erase again everyone in the journal, record the restore."""
    from candor.app import Runtime
    from candor.store.schema import audit_log

    pset = _payload_settings(settings, payload)
    store = Store(pset, pool=False)
    try:
        store.upgrade()
        before = _head(store) or 0
    finally:
        store.dispose()
    rt = Runtime(pset)  # replays the erasure journal on the copy (rights.erasure.reapply), before anything else
    try:
        with rt.store.engine.connect() as conn:
            again = int(
                conn.execute(
                    select(func.count())
                    .select_from(audit_log)
                    .where(
                        audit_log.c.seq > before,
                        audit_log.c.action == "rights.erasure.shredded",
                        audit_log.c.target == "request:journal",
                    )
                ).scalar()
                or 0
            )
        audit.append(
            rt.store,
            actor,
            "backup.restored",
            details={
                "installation": manifest.get("installation_id"),
                "backup_created_ms": manifest.get("created_ms"),
                "from_store": manifest.get("store"),
                "from_revision": manifest.get("schema_revision"),
                "erased_again": again,
            },
        )
    finally:
        rt.close()
    _single_file(payload)
    return {"erased_again": again}


def _install_sqlite(payload: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        # also refuses (and changes nothing) while a server has the database open
        con = sqlite3.connect(target, timeout=2, isolation_level=None)
        try:
            try:
                mode = con.execute("PRAGMA journal_mode=DELETE").fetchone()
            except sqlite3.OperationalError:
                mode = None
        finally:
            con.close()
        if not mode or str(mode[0]).lower() != "delete":
            raise BackupError(
                f"the database {target} is in use (is candor serve running?): stop every Candor process, then "
                "restore again. Nothing was changed"
            )
    for leftover in (Path(str(target) + "-wal"), Path(str(target) + "-shm")):
        leftover.unlink(missing_ok=True)
    os.replace(payload, target)
    _fsync_dir(target.parent)


def _install_postgres(payload: Path, target: Store, progress: Progress) -> None:
    from psycopg import sql

    target.upgrade()  # an empty database gets the schema first
    src = create_engine(f"sqlite:///{payload}")
    tables = metadata.sorted_tables
    try:
        with src.connect() as rconn, target.engine.begin() as conn:
            names = sql.SQL(", ").join(sql.Identifier(t.name) for t in tables)
            raw: Any = conn.connection.dbapi_connection  # psycopg's connection: COPY is its own API
            with raw.cursor() as cur:
                cur.execute(sql.SQL("TRUNCATE {}").format(names))
                for n, table in enumerate(tables):
                    cols = [c.name for c in table.columns]
                    stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
                        sql.Identifier(table.name), sql.SQL(", ").join(sql.Identifier(c) for c in cols)
                    )
                    result = rconn.execution_options(yield_per=CHUNK).execute(_rows_of(table))
                    try:
                        with cur.copy(stmt) as copy:
                            for row in result:
                                copy.write_row(tuple(row))
                    finally:
                        result.close()
                    progress("loading tables", n + 1, len(tables))
                for table in tables:
                    for col in table.primary_key.columns:
                        seq = cur.execute(
                            "SELECT pg_get_serial_sequence(%s, %s)", (table.name, col.name)
                        ).fetchone()
                        if seq and seq[0]:
                            cur.execute(
                                sql.SQL("SELECT setval(%s, COALESCE((SELECT MAX({}) FROM {}), 0) + 1, false)").format(
                                    sql.Identifier(col.name), sql.Identifier(table.name)
                                ),
                                (seq[0],),
                            )
    finally:
        src.dispose()


def restore(
    settings: Settings, archive: Path, *, actor: str = "cli", progress: Progress | None = None
) -> dict[str, Any]:
    """Replace the store named by ``settings`` with the backup in ``archive`` (see the module docstring)."""
    step = progress or _nothing
    started = time.perf_counter()
    archive = Path(archive)
    _master_key_present(settings)
    target = Store(settings, pool=False)
    try:
        try:
            with target.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - the message names the database, never credentials
            raise BackupError(describe_connection_error(target.url, exc) + "; nothing was changed") from None
        settings.ensure_data_dir()
        work = Path(_mkdtemp(settings.data_dir, ".restore-"))
        try:
            step("checking", 0, 1)
            manifest = read_archive(archive, work)
            payload = work / PAYLOAD
            _known_revision(settings, manifest.get("schema_revision"), archive)
            ident = _check_identity(settings, payload, manifest, archive)
            step("checking", 1, 1)
            step("preparing", 0, 1)
            prepared = _prepare(settings, payload, actor=actor, manifest=manifest)
            step("preparing", 1, 1)
            replaced_head = _head(target)
            if target.is_sqlite:
                target.dispose()
                _install_sqlite(payload, _sqlite_path(target.url))
            else:
                try:
                    _install_postgres(payload, target, step)
                except Exception as exc:  # noqa: BLE001 - one transaction: rolled back, the database is as it was
                    raise BackupError(
                        f"loading the backup into PostgreSQL failed ({type(exc).__name__}); the transaction was "
                        "rolled back"
                    ) from None
        except BackupError as exc:
            if "nothing was changed" in str(exc).lower():
                raise
            raise BackupError(f"{exc}; nothing was changed") from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
        checkpoints = _restart_checkpoints(settings, target)
        return {
            "archive": str(archive),
            "installation_id": ident.installation_id,
            "backup_created_ms": manifest.get("created_ms"),
            "from_store": manifest.get("store"),
            "to_store": "sqlite" if target.is_sqlite else "postgresql",
            "schema_revision": manifest.get("schema_revision"),
            "rows": sum((manifest.get("tables") or {}).values()),
            "replaced_audit_head": replaced_head,
            "previous_checkpoints": checkpoints,
            "seconds": round(time.perf_counter() - started, 3),
            **prepared,
        }
    except StoreUnavailable as exc:
        raise BackupError(f"{exc}; nothing was changed") from None
    finally:
        target.dispose()


def _head(store: Store) -> int | None:
    from candor.store.schema import audit_head

    try:
        with store.engine.connect() as conn:
            return conn.execute(select(audit_head.c.seq)).scalar()
    except Exception:  # noqa: BLE001 - no schema yet: nothing is replaced
        return None


def _restart_checkpoints(settings: Settings, target: Store) -> str | None:
    """Signed checkpoints of the replaced log cover entries the restored log does not have: keep them
    aside (they are evidence) and sign the restored head, so ``candor audit verify`` checks what is there."""
    from candor.vault import Vault

    path = settings.data_dir / audit.CHECKPOINT_FILE
    kept = None
    if path.exists():
        kept_path = settings.data_dir / f"audit-checkpoints.replaced-{now_ms()}-{secrets.token_hex(2)}.jsonl"
        os.replace(path, kept_path)
        kept = str(kept_path)
    store = Store(settings, pool=False)
    try:
        vault = Vault(store, key_loader=settings.load_master_keys)
        audit.Checkpoints(store, vault, settings.data_dir).write()
    finally:
        store.dispose()
    return kept
