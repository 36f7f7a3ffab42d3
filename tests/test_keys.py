"""Key rotation: master key re-wrap (no re-encryption, resumable, live processes follow) and HMAC
key versions whose old pseudonyms keep resolving until retired."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from candor import audit, keys
from candor.app import Runtime
from candor.cli import app as cli_app
from candor.config import Settings, decode_key
from candor.ingest import Work
from candor.store import now_ms
from candor.store.schema import data_keys, events, identifiers, keyring
from candor.vault import Vault, VaultError


def send(rt: Runtime, source_id: int, *msgs: dict[str, Any]) -> None:
    source = rt.directory.source_for_key(rt._key)  # type: ignore[attr-defined]
    assert source is not None
    v = rt.validator_for(source)
    out = [v.validate(m, type_=m["type"], received_ms=now_ms(), sent_at_ms=None, client_ip=None) for m in msgs]
    rt.ingestor.submit_sync(Work(source_id, out, [], now_ms()))  # type: ignore[arg-type]


def runtime(settings: Settings) -> tuple[Runtime, int]:
    rt = Runtime(settings)
    rt._key = rt.directory.create_source(f"s{secrets.token_hex(3)}")  # type: ignore[attr-defined]
    return rt, rt.directory.source_for_key(rt._key).id  # type: ignore[attr-defined, union-attr]


def sealed_rows(rt: Runtime) -> dict[str, tuple[str, bytes]]:
    with rt.store.engine.connect() as conn:
        return {r.message_id: (r.subject_id, r.sealed) for r in conn.execute(select(events))}


def test_master_rotation_with_key_file(tmp_path: Path) -> None:
    settings = Settings.from_env(env={}, data_dir=tmp_path, default_jurisdiction="US")
    rt, sid = runtime(settings)
    # a second "process" on the same data dir, started before the rotation
    other = Runtime(settings)
    try:
        for i in range(30):
            send(rt, sid, {"type": "identify", "userId": f"u{i}", "traits": {"email": f"p{i}@example.com"}})
        before = sealed_rows(rt)
        old_key = (tmp_path / "master.key").read_text().strip()
        with rt.store.engine.connect() as conn:
            keyring_rows = conn.execute(select(func.count()).select_from(keyring)).scalar()
        assert keyring_rows == 2  # the HMAC key and the suppression key
        assert keys.pending(rt.store, "no-such-key") == 30 + 2  # and 30 data keys
        report = keys.rotate_master(settings, rt.store, rt.vault, settle=1.2)
        assert report.rewrapped == 32 and report.new_kek_id != report.old_kek_ids[0]
        assert keys.pending(rt.store, rt.vault.kek_id) == 0
        assert (tmp_path / "master.key").read_text().strip() != old_key
        assert not (tmp_path / "master.key.next").exists()
        assert sealed_rows(rt) == before  # data untouched: only keys were re-wrapped
        with rt.store.engine.connect() as conn:
            assert {r.kek_id for r in conn.execute(select(data_keys))} == {rt.vault.kek_id}
        # a fresh process, and the one started before the rotation, both read everything
        fresh = Runtime(settings)
        for subject_id, blob in before.values():
            assert b"example.com" in fresh.vault.open(subject_id, blob)
            other.vault.forget(subject_id)
            assert b"example.com" in other.vault.open(subject_id, blob)
        fresh.close()
        # the old key no longer opens anything
        with pytest.raises(VaultError, match="master key does not match"):
            Vault(rt.store, decode_key(old_key, "old key"))
        assert [e["action"] for e in audit.entries(rt.store)][-1] == "keys.rotate_master"
    finally:
        other.close()
        rt.close()


def test_master_rotation_resumes_after_interruption(tmp_path: Path) -> None:
    settings = Settings.from_env(env={}, data_dir=tmp_path, default_jurisdiction="US")
    rt, sid = runtime(settings)
    try:
        send(rt, sid, *({"type": "track", "userId": f"u{i}", "event": "E"} for i in range(1200)))
        calls = {"n": 0}

        def crash_after_first_batch(n: int) -> None:
            calls["n"] += 1
            if calls["n"] == 1:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            keys.rotate_master(settings, rt.store, rt.vault, on_progress=crash_after_first_batch, settle=0)
        assert (tmp_path / "master.key.next").exists()
        left = keys.pending(rt.store, rt.vault.kek_id)
        assert 0 < left < 1202
        report = keys.rotate_master(settings, rt.store, rt.vault, settle=1.2)
        assert report.rewrapped == left
        assert keys.pending(rt.store, rt.vault.kek_id) == 0
        fresh = Runtime(settings)
        subject_id, blob = next(iter(sealed_rows(fresh).values()))
        assert fresh.vault.open(subject_id, blob)
        fresh.close()
    finally:
        rt.close()


def test_master_rotation_with_environment_keys(tmp_path: Path) -> None:
    old, new = secrets.token_hex(32), secrets.token_hex(32)
    rt, sid = runtime(Settings.from_env(env={"CANDOR_MASTER_KEY": old}, data_dir=tmp_path))
    send(rt, sid, {"type": "identify", "userId": "u", "traits": {"name": "Ann"}})
    rt.close()
    both = Settings.from_env(env={"CANDOR_MASTER_KEY": new, "CANDOR_PREVIOUS_MASTER_KEY": old}, data_dir=tmp_path)
    rt2 = Runtime(both)
    report = keys.rotate_master(both, rt2.store, rt2.vault)
    assert report.rewrapped >= 2
    rt2.close()
    only_new = Runtime(Settings.from_env(env={"CANDOR_MASTER_KEY": new}, data_dir=tmp_path))
    subject_id, blob = next(iter(sealed_rows(only_new).values()))
    assert b"Ann" in only_new.vault.open(subject_id, blob)
    only_new.close()
    with pytest.raises(VaultError, match="master key does not match"):
        Runtime(Settings.from_env(env={"CANDOR_MASTER_KEY": old}, data_dir=tmp_path))
    assert not (tmp_path / "master.key").exists()


def test_hmac_rotation_window_and_retirement(settings: Settings) -> None:
    rt, sid = runtime(settings)
    try:
        send(rt, sid, {"type": "identify", "userId": "ann-1", "traits": {"email": "ann@example.com"}})
        first_subject = next(iter(sealed_rows(rt).values()))[0]
        version = keys.rotate_hmac(rt.store, rt.vault)
        assert version == 2 and rt.vault.legacy_hmac_versions == (1,)
    finally:
        rt.close()
    rt, sid = runtime(settings)  # a new process: empty caches, must resolve through the old key
    try:
        rt.ingestor._ids.clear()
        send(rt, sid, {"type": "track", "userId": "ann-1", "event": "Seen again"})
        subjects = {s for s, _ in sealed_rows(rt).values()}
        assert subjects == {first_subject}
        with rt.store.engine.connect() as conn:
            rows = {(r.id_type, r.hmac_version) for r in conn.execute(select(identifiers))}
        assert ("user_id", 1) in rows and ("user_id", 2) in rows  # migrated on sight
        assert ("email", 2) not in rows  # not seen during the window
        with pytest.raises(ValueError, match="current HMAC key"):
            keys.retire_hmac(rt.store, rt.vault, 2)
        removed = keys.retire_hmac(rt.store, rt.vault, 1)
        assert removed == 2  # user_id and email under version 1
        assert rt.vault.legacy_hmac_versions == ()
        rt.ingestor._ids.clear()
        send(rt, sid, {"type": "track", "userId": "ann-1", "event": "After retirement"})
        assert {s for s, _ in sealed_rows(rt).values()} == {first_subject}
        actions = [e["action"] for e in audit.entries(rt.store)]
        assert "keys.rotate_hmac" in actions and "keys.retire_hmac" in actions
    finally:
        rt.close()


def test_keys_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path)]
    status = runner.invoke(cli_app, [*base, "keys", "status"])
    assert status.exit_code == 0 and '"hmac_version": 1' in status.output
    key_text = (tmp_path / "master.key").read_text().strip()
    assert key_text not in status.output
    assert runner.invoke(cli_app, [*base, "keys", "rotate-hmac"]).exit_code == 0
    bad = runner.invoke(cli_app, [*base, "keys", "retire-hmac", "2"])
    assert bad.exit_code == 1 and "current HMAC key" in bad.output
    assert runner.invoke(cli_app, [*base, "keys", "retire-hmac", "1"]).exit_code == 0
    rot = runner.invoke(cli_app, [*base, "keys", "rotate"])
    assert rot.exit_code == 0 and "master key rotated" in rot.output
    assert (tmp_path / "master.key").read_text().strip() != key_text
