"""The audit log: chain, tamper detection (edit, delete, reorder, truncate), checkpoints, API, CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import delete, text, update
from typer.testing import CliRunner

from candor import audit
from candor.app import Runtime
from candor.cli import app as cli_app
from candor.config import Settings
from candor.store.schema import audit_head, audit_log
from tests.helpers import api, bearer


def fill(rt: Runtime, n: int = 5) -> None:
    for i in range(n):
        audit.append(rt.store, "test", "thing.done", subject_id=f"{i:032x}", details={"i": i})


def test_chain_verifies_and_names_the_edited_entry(settings: Settings) -> None:
    rt = Runtime(settings)
    try:
        fill(rt)
        assert audit.verify(rt.store).ok
        with rt.store.write() as conn:
            conn.execute(update(audit_log).where(audit_log.c.seq == 3).values(details='{"i": 99}'))
        result = audit.verify(rt.store)
        assert not result.ok and result.first_bad_seq == 3 and "modified" in (result.problem or "")
    finally:
        rt.close()


def test_deleted_entry_is_detected(settings: Settings) -> None:
    rt = Runtime(settings)
    try:
        fill(rt)
        with rt.store.write() as conn:
            conn.execute(delete(audit_log).where(audit_log.c.seq == 2))
        result = audit.verify(rt.store)
        assert not result.ok and result.first_bad_seq == 2 and "missing" in (result.problem or "")
    finally:
        rt.close()


def test_reordered_entries_are_detected(settings: Settings) -> None:
    rt = Runtime(settings)
    try:
        fill(rt)
        with rt.store.write() as conn:
            # swap the contents of entries 2 and 3 but keep their sequence numbers
            rows = {r.seq: r for r in conn.execute(audit_log.select().where(audit_log.c.seq.in_([2, 3])))}
            for a, b in ((2, 3), (3, 2)):
                src = rows[b]
                conn.execute(
                    update(audit_log)
                    .where(audit_log.c.seq == a)
                    .values(details=src.details, subject_id=src.subject_id, hash=src.hash, prev_hash=src.prev_hash)
                )
        result = audit.verify(rt.store)
        assert not result.ok and result.first_bad_seq == 2
    finally:
        rt.close()


def test_truncation_is_caught_by_head_and_by_signed_checkpoint(settings: Settings) -> None:
    rt = Runtime(settings)
    try:
        fill(rt, 6)
        cp = rt.checkpoints.write()
        assert cp["seq"] == 6
        assert audit.verify(rt.store, rt.checkpoints).checkpoints_checked == 1
        # an attacker deletes the tail and rewinds the head row: the chain alone looks valid...
        with rt.store.write() as conn:
            conn.execute(delete(audit_log).where(audit_log.c.seq > 4))
            h4 = conn.execute(text("SELECT hash FROM audit_log WHERE seq = 4")).scalar()
            conn.execute(update(audit_head).values(seq=4, hash=h4))
        assert audit.verify(rt.store).ok
        # ...but not against the checkpoint written outside the database
        result = audit.verify(rt.store, rt.checkpoints)
        assert not result.ok and "truncated" in (result.problem or "")
        # a forged checkpoint line is refused
        lines = rt.checkpoints.path.read_text().splitlines()
        rt.checkpoints.path.write_text(lines[0].replace('"seq":6', '"seq":4') + "\n")
        result = audit.verify(rt.store, rt.checkpoints)
        assert not result.ok and "bad signature" in (result.problem or "")
    finally:
        rt.close()


def test_directory_operations_are_audited(settings: Settings) -> None:
    rt = Runtime(settings)
    try:
        rt.directory.create_source("web")
        rt.directory.create_token("ops", "analyst")
        tid = rt.directory.list_tokens()[0]["id"]
        rt.directory.revoke_token(tid)
        rt.directory.revoke_token(tid)  # nothing happened: nothing recorded
        actions = [e["action"] for e in audit.entries(rt.store)]
        assert actions == ["source.create", "token.create", "token.revoke"]
        assert audit.verify(rt.store).ok
    finally:
        rt.close()


@pytest.mark.anyio
async def test_audit_api(settings: Settings) -> None:
    async with api(settings) as a:
        fill(a.rt, 3)
        r = await a.client.get("/v1/audit?limit=2", headers=bearer(a.owner))
        assert r.status_code == 200
        body = r.json()
        assert [e["seq"] for e in body["entries"]] == [1, 2] and body["next_after"] == 2
        r = await a.client.post("/v1/audit/verify", headers=bearer(a.owner))
        assert r.json()["ok"] is True
        r = await a.client.post("/v1/audit/checkpoints", headers=bearer(a.owner))
        assert r.status_code == 200 and r.json()["seq"] >= 3
        marketer = a.rt.directory.create_token("m", "marketer")
        assert (await a.client.get("/v1/audit", headers=bearer(marketer))).status_code == 403
        assert (await a.client.get("/v1/audit?after=-1", headers=bearer(a.owner))).status_code == 400


def test_cli_verify_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path)]
    assert runner.invoke(cli_app, [*base, "sources", "create", "web"]).exit_code == 0
    assert runner.invoke(cli_app, [*base, "audit", "checkpoint"]).exit_code == 0
    ok = runner.invoke(cli_app, [*base, "audit", "verify"])
    assert ok.exit_code == 0 and "intact" in ok.output
    rt = Runtime(Settings.from_env(env={}, data_dir=tmp_path))
    with rt.store.write() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 1).values(actor="someone else"))
    rt.close()
    bad = runner.invoke(cli_app, [*base, "audit", "verify"])
    assert bad.exit_code == 1 and "entry 1 was modified" in bad.output
