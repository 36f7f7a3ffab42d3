"""Backups and restores on both stores: a round trip, erasure that survives a restore, clear refusals.

The central promise: restoring a backup taken before an erasure never brings the erased person back.
Their keys are gone, the erasure journal is applied to the copy before it replaces the database, and
neither the data directory nor the restored database (backed up again and searched byte for byte)
holds their canary values, their pseudonyms or their subject id.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import io
import json
import secrets
import sqlite3
import tarfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from candor import audit
from candor.app import Runtime, create_app
from candor.backup import BackupError, backup, installation, restore
from candor.config import Settings
from candor.store.schema import SUBJECT_TABLES, events, metadata, subjects
from tests.helpers import Api, api

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def again(settings: Settings) -> AsyncIterator[Api]:
    """Like ``tests.helpers.api`` on a store that already has its test source: a second source."""
    rt = Runtime(settings)
    key = rt.directory.create_source("more-" + secrets.token_hex(3))
    app = create_app(runtime=rt)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://candor.test") as client,
        ):
            yield Api(client, rt, key, "")
    finally:
        rt.close()

CANARY_EMAIL = "vexcanary-backup@example.org"
CANARY_NAME = "Zqxbackupcanary"
KEEP_EMAIL = "keeper-backup@example.org"


async def _people(settings: Settings, n_events: int = 3) -> None:
    async with api(settings) as a:
        for uid, email, name in (("gone", CANARY_EMAIL, CANARY_NAME), ("kept", KEEP_EMAIL, "Keeper")):
            r = await a.post("/v1/identify", {"userId": uid, "traits": {"email": email, "firstName": name}})
            assert r.status_code == 200, r.text
            for i in range(n_events):
                r = await a.post("/v1/track", {"userId": uid, "event": "Viewed", "properties": {"i": i}})
                assert r.status_code == 200, r.text


def _count(rt: Runtime, table: Any = events) -> int:
    with rt.store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)


def _erase(settings: Settings, email: str) -> str:
    rt = Runtime(settings)
    try:
        sid = rt.consent.subject_for("email", email)
        assert sid is not None
        req, _ = rt.requests.create("erasure", "email", email, channel="cli", actor="test", send_code=False)
        rt.requests.verify_by_staff(req.id, actor="test", reason="test")
        rt.rights.process(req.id, actor="test")
        assert rt.consent.subject_for("email", email) is None
        return sid
    finally:
        rt.close()


def _files_bytes(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, bytes]:
    out = {}
    for path in root.rglob("*"):
        if path.is_file() and not any(path.is_relative_to(s) for s in skip):
            out[str(path.relative_to(root))] = path.read_bytes()
    return out


def _payload_of(archive: Path) -> bytes:
    with tarfile.open(archive, "r:gz") as tar:
        fh = tar.extractfile("candor.db")
        assert fh is not None
        return fh.read()


def _trait(rt: Runtime, sid: str, name: str) -> Any:
    with rt.store.engine.connect() as conn:
        traits, _, _ = rt.profiles.golden([sid], conn, {})
    return traits[name]["value"]


def _fingerprint(settings: Settings) -> tuple[int, int]:
    rt = Runtime(settings)
    try:
        return _count(rt), _count(rt, subjects)
    finally:
        rt.close()


async def test_backup_then_restore_returns_to_the_backup_and_the_audit_chain_verifies(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    await _people(settings)
    archive = tmp_path / "b.tar.gz"
    made = backup(settings, archive)
    assert made["rows"] > 0 and archive.stat().st_size == made["bytes"]
    with pytest.raises(BackupError, match="already exists"):
        backup(settings, archive)
    before = _fingerprint(settings)
    async with again(settings) as a:  # more arrives after the backup
        for i in range(4):
            assert (await a.post("/v1/track", {"userId": "kept", "event": "Later", "properties": {"i": i}})).status_code
    rt = Runtime(settings)
    rt.checkpoints.write()  # a signed checkpoint of the longer log
    rt.close()
    assert _fingerprint(settings)[0] == before[0] + 4
    report = restore(settings, archive)
    assert report["erased_again"] == 0 and report["previous_checkpoints"]
    rt = Runtime(settings)
    try:
        assert (_count(rt), _count(rt, subjects)) == before
        sid = rt.consent.subject_for("email", KEEP_EMAIL)
        assert sid is not None
        assert _trait(rt, sid, "firstName") == "Keeper"  # the keys work: values decrypt
        result = audit.verify(rt.store, rt.checkpoints)
        assert result.ok, result.problem
        assert result.checkpoints_checked == 1
        actions = [e["action"] for e in audit.entries(rt.store, limit=10_000)]
        assert actions[-1] == "backup.restored"
    finally:
        rt.close()


async def test_restoring_a_backup_taken_before_an_erasure_never_brings_the_person_back(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    await _people(settings)
    rt = Runtime(settings)
    pseudonym = rt.vault.pseudonym("email", CANARY_EMAIL)
    user_pseudonym = rt.vault.pseudonym("user_id", "gone")
    rt.close()
    archive = tmp_path / "before-erasure.tar.gz"
    backup(settings, archive)
    assert pseudonym.encode() in _payload_of(archive)  # the backup does hold them (that is the danger)
    gone = _erase(settings, CANARY_EMAIL)
    report = restore(settings, archive)
    assert report["erased_again"] == 1
    rt = Runtime(settings)
    try:
        assert rt.consent.subject_for("email", CANARY_EMAIL) is None
        with rt.store.engine.connect() as conn:
            # their key is gone, and so is every row about them (the subject id itself stays only in the
            # erasure journal and the audit log, which record that they were erased)
            for name, column in SUBJECT_TABLES.items():
                table = metadata.tables[name]
                assert conn.execute(select(table).where(table.c[column] == gone)).first() is None, name
        kept = rt.consent.subject_for("email", KEEP_EMAIL)
        assert kept is not None and _trait(rt, kept, "email") == KEEP_EMAIL
        assert rt.suppressions.check("email", "email", CANARY_EMAIL)  # the tombstone is back too
        assert audit.verify(rt.store, rt.checkpoints).ok
    finally:
        rt.close()
    # grep: the data directory, and the restored database itself (backed up again, byte for byte)
    again = tmp_path / "after-restore.tar.gz"
    backup(settings, again)
    blobs = _files_bytes(settings.data_dir)
    blobs["restored database"] = _payload_of(again)
    needles = {
        "email": CANARY_EMAIL.encode(),
        "name": CANARY_NAME.encode(),
        "email pseudonym": pseudonym.encode(),
        "userId pseudonym": user_pseudonym.encode(),
    }
    for where, blob in blobs.items():
        for label, needle in needles.items():
            assert needle not in blob, f"the erased person's {label} is in {where}"
            assert needle.upper() not in blob and needle.lower() not in blob, f"{label} in {where} (case)"


async def test_a_corrupt_foreign_or_tampered_backup_is_refused_and_nothing_changes(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    await _people(settings, n_events=1)
    archive = tmp_path / "good.tar.gz"
    backup(settings, archive)
    before = _fingerprint(settings)
    raw = archive.read_bytes()

    def refused(blob: bytes, words: str) -> None:
        path = tmp_path / f"bad-{hashlib.sha256(blob).hexdigest()[:8]}.tar.gz"
        path.write_bytes(blob)
        with pytest.raises(BackupError, match=words) as info:
            restore(settings, path)
        assert "nothing was changed" in str(info.value).lower()
        assert _fingerprint(settings) == before
        assert not list(settings.data_dir.glob(".restore-*")), "the work directory was left behind"

    refused(b"not a backup at all", "cannot be read")
    refused(raw[: len(raw) // 2], "cannot be read")
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0xFF
    refused(bytes(flipped), "cannot be read|corrupt")

    members = _members(archive)
    manifest = json.loads(members["manifest.json"])
    # a payload swapped for another one (the checksum no longer matches)
    payload = bytearray(members["candor.db"])
    payload[len(payload) // 3] ^= 0x01
    refused(_pack({**members, "candor.db": bytes(payload)}), "checksum")
    # a manifest edited by hand (its MAC no longer verifies)
    edited = json.dumps({**manifest, "created_ms": 1}).encode()
    refused(_pack({**members, "manifest.json": edited}), "altered")
    # a file a backup never holds
    refused(_pack({**members, "../evil": b"x"}), "never does")
    # an archive from a newer release: a revision this code does not know (MAC valid)
    rt = Runtime(settings)
    mac_key = installation(rt.vault.installation_key()).mac_key
    rt.close()
    future = json.dumps({**manifest, "schema_revision": "9999_from_the_future"}).encode()
    signed = hmac.new(mac_key, future, hashlib.sha256).hexdigest().encode()
    refused(_pack({**members, "manifest.json": future, "manifest.hmac": signed}), "newer")

    # another installation: its own master key, so nothing of ours can be unwrapped
    other = Settings.from_env(env={}, data_dir=tmp_path / "other", default_jurisdiction="US")
    await _people(other, n_events=1)
    foreign = tmp_path / "foreign.tar.gz"
    backup(other, foreign)
    with pytest.raises(BackupError, match="another master key") as info:
        restore(settings, foreign)
    assert "another installation" in str(info.value)
    assert _fingerprint(settings) == before


def _members(archive: Path) -> dict[str, bytes]:
    out = {}
    with tarfile.open(archive, "r:gz") as tar:
        for m in tar:
            fh = tar.extractfile(m)
            assert fh is not None
            out[m.name] = fh.read()
    return out


def _pack(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue())


async def test_restore_refuses_a_sqlite_database_in_use_and_a_missing_master_key(tmp_path: Path) -> None:
    settings = Settings.from_env(env={}, data_dir=tmp_path / "data", default_jurisdiction="US")
    await _people(settings, n_events=1)
    archive = tmp_path / "b.tar.gz"
    backup(settings, archive)
    db = settings.data_dir / "candor.db"
    holder = sqlite3.connect(db)  # another process (a running server) has the database open
    holder.execute("SELECT count(*) FROM events").fetchone()
    try:
        digest = hashlib.sha256(db.read_bytes()).hexdigest()
        with pytest.raises(BackupError, match="in use"):
            restore(settings, archive)
        assert hashlib.sha256(db.read_bytes()).hexdigest() == digest
    finally:
        holder.close()
    fresh = Settings.from_env(env={}, data_dir=tmp_path / "fresh")
    with pytest.raises(BackupError, match="needs the master key"):
        restore(fresh, archive)
    assert not (tmp_path / "fresh" / "candor.db").exists()
    # with the key in place, a fresh machine gets the installation back
    (tmp_path / "fresh").mkdir(exist_ok=True)
    key = settings.data_dir / "master.key"
    (tmp_path / "fresh" / "master.key").write_bytes(key.read_bytes())
    (tmp_path / "fresh" / "master.key").chmod(0o600)
    assert restore(fresh, archive)["erased_again"] == 0
    assert _fingerprint(fresh) == _fingerprint(settings)


@pytest.mark.postgres
async def test_a_sqlite_backup_restores_into_postgresql(tmp_path: Path, pg_url: str) -> None:
    """The payload is SQLite on both stores: moving from the embedded store to PostgreSQL is a restore."""
    lite = Settings.from_env(env={}, data_dir=tmp_path / "data", default_jurisdiction="US")
    await _people(lite)
    archive = tmp_path / "lite.tar.gz"
    backup(lite, archive)
    pg = lite.with_(database_url=pg_url)
    report = restore(pg, archive)
    assert report["from_store"] == "sqlite" and report["to_store"] == "postgresql"
    assert _fingerprint(pg) == _fingerprint(lite)
    async with again(pg) as a:  # sequences moved on: new rows get new ids
        r = await a.post("/v1/track", {"userId": "kept", "event": "On PostgreSQL"})
        assert r.status_code == 200
        sid = a.rt.consent.subject_for("email", KEEP_EMAIL)
        assert sid is not None and _trait(a.rt, sid, "firstName") == "Keeper"


async def test_restore_into_an_unreachable_database_names_it_and_changes_nothing(tmp_path: Path) -> None:
    from candor.testing import free_port

    settings = Settings.from_env(env={}, data_dir=tmp_path / "data", default_jurisdiction="US")
    await _people(settings, n_events=1)
    archive = tmp_path / "b.tar.gz"
    backup(settings, archive)
    wrong = settings.with_(database_url=f"postgresql+psycopg://candor:secret@127.0.0.1:{free_port()}/candor")
    with pytest.raises(BackupError, match=r"cannot open the database at 127\.0\.0\.1") as info:
        restore(wrong, archive)
    assert "secret" not in str(info.value)
    with pytest.raises(BackupError, match="cannot open the database"):
        backup(wrong, tmp_path / "never.tar.gz")
    assert not (tmp_path / "never.tar.gz").exists()


def test_backup_and_restore_commands(tmp_path: Path) -> None:
    from candor.cli import app

    runner = CliRunner()
    env = {"CANDOR_DATA_DIR": str(tmp_path / "data"), "CANDOR_DEFAULT_JURISDICTION": "US"}
    assert runner.invoke(app, ["sources", "create", "web"], env=env).exit_code == 0
    out = tmp_path / "cli.tar.gz"
    made = runner.invoke(app, ["backup", "--out", str(out), "--json"], env=env)
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout)["archive"] == str(out)
    no = runner.invoke(app, ["restore", str(out)], env=env, input="n\n")
    assert no.exit_code == 1 and "nothing was changed" in no.output.lower()
    yes = runner.invoke(app, ["restore", str(out), "--yes"], env=env)
    assert yes.exit_code == 0, yes.output
    (tmp_path / "junk.tar.gz").write_bytes(b"junk")
    bad = runner.invoke(app, ["restore", str(tmp_path / "junk.tar.gz"), "--yes"], env=env)
    assert bad.exit_code == 1 and "cannot be read" in bad.output
