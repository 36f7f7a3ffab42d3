"""The command line: sources, tokens, stats, db — on the embedded store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from candor.cli import app

runner = CliRunner()


def run(data_dir: Path, *args: str, code: int = 0) -> str:
    result = runner.invoke(app, ["--data-dir", str(data_dir), *args], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def test_sources_and_tokens_lifecycle(tmp_path: Path) -> None:
    key = run(tmp_path, "sources", "create", "web", "--personal", "loyalty_secret, crm_note").strip()
    assert key.startswith("wk_")
    out = run(tmp_path, "sources", "create", "web", code=1)
    assert "already exists" in out
    listed = json.loads(run(tmp_path, "sources", "list", "--json"))
    assert listed[0]["name"] == "web" and listed[0]["personal_properties"] == ["crm_note", "loyalty_secret"]
    assert key not in run(tmp_path, "sources", "list")

    token = run(tmp_path, "tokens", "create", "--role", "privacy_officer", "--name", "dpo").strip()
    assert token.startswith("cnd_")
    assert "unknown role" in run(tmp_path, "tokens", "create", "--role", "emperor", code=1)
    tokens = json.loads(run(tmp_path, "tokens", "list", "--json"))
    assert tokens[0]["role"] == "privacy_officer" and tokens[0]["revoked_ms"] is None
    assert token not in json.dumps(tokens)
    run(tmp_path, "tokens", "revoke", str(tokens[0]["id"]))
    assert json.loads(run(tmp_path, "tokens", "list", "--json"))[0]["revoked_ms"] is not None
    assert "no active token" in run(tmp_path, "tokens", "revoke", str(tokens[0]["id"]), code=1)

    # secrets are stored hashed only
    db = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert key.encode() not in db and token.encode() not in db


def test_stats_json_and_db_upgrade(tmp_path: Path) -> None:
    run(tmp_path, "sources", "create", "web")
    stats = json.loads(run(tmp_path, "stats", "--json"))
    assert stats == {
        "sources": [
            {
                "source": "web",
                "accepted": {},
                "duplicate": {},
                "rejected": {},
                "no_consent": {},
                "total": {"accepted": 0, "duplicate": 0, "rejected": 0, "no_consent": 0},
            }
        ],
        "total": {"accepted": 0, "duplicate": 0, "rejected": 0, "no_consent": 0},
    }
    assert "schema at revision" in run(tmp_path, "db", "upgrade")


def test_configuration_errors_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANDOR_MASTER_KEY", "not-a-key")
    out = run(tmp_path, "sources", "list", code=2)
    assert "CANDOR_MASTER_KEY must hold a 32-byte key" in out
    monkeypatch.delenv("CANDOR_MASTER_KEY")
    result = runner.invoke(app, ["--database-url", "mysql://nope", "sources", "list"])
    assert result.exit_code == 2 and "CANDOR_DATABASE_URL" in result.output
    result = runner.invoke(
        app,
        [
            "--data-dir",
            str(tmp_path),
            "--database-url",
            "postgresql+psycopg://nobody@127.0.0.1:1/x",
            "db",
            "upgrade",
        ],
    )
    assert result.exit_code == 2 and "cannot open the database at 127.0.0.1:1/x" in result.output
    assert "nobody" not in result.output


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and "candor" in result.output


def test_serve_refuses_several_workers_on_sqlite(tmp_path: Path) -> None:
    out = run(tmp_path, "serve", "--workers", "2", code=2)
    assert "need PostgreSQL" in out


def test_loyalty_commands(tmp_path: Path) -> None:
    from candor.app import Runtime
    from candor.config import Settings

    rt = Runtime(Settings.from_env(env={}, data_dir=tmp_path))
    try:
        with rt.store.write() as conn:
            sid, _ = rt.vault.new_subject(conn)
            from candor.store import now_ms
            from candor.store.schema import identifiers

            conn.execute(
                identifiers.insert(),
                {
                    "id_type": "user_id",
                    "pseudonym": rt.vault.pseudonym("user_id", "cli-1"),
                    "hmac_version": rt.vault.hmac_version,
                    "subject_id": sid,
                    "first_seen_ms": now_ms(),
                },
            )
    finally:
        rt.close()
    assert "financial incentive" in run(tmp_path, "loyalty", "notice")
    assert json.loads(run(tmp_path, "loyalty", "join", "--user-id", "cli-1"))["member"] is True
    assert "already a member" in run(tmp_path, "loyalty", "join", "--user-id", "cli-1", code=1)
    assert "not enough points" in run(tmp_path, "loyalty", "redeem", "5", "--user-id", "cli-1", code=1)
    run(
        tmp_path, "loyalty", "offers", "create", "genres", "--title", "Genres", "--ask", "Which genres?",
        "--fields", "favouriteGenres", "--points", "200", "--purposes", "personalization",
    )  # fmt: skip
    assert json.loads(run(tmp_path, "loyalty", "offers", "list", "--json"))[0]["state"] == "open"
    assert json.loads(run(tmp_path, "loyalty", "earn"))["credited"] == 0
    assert json.loads(run(tmp_path, "loyalty", "expire"))["points"] == 0
    statement = json.loads(run(tmp_path, "loyalty", "statement", "--user-id", "cli-1", "--json"))
    assert statement["membership"]["state"] == "active"
    assert "balance 0" in run(tmp_path, "loyalty", "statement", "--user-id", "cli-1")
    assert json.loads(run(tmp_path, "loyalty", "status", "--user-id", "cli-1"))["tier"] == "member"
    assert json.loads(run(tmp_path, "loyalty", "leave", "--user-id", "cli-1"))["state"] == "left"
    assert "no one is known" in run(tmp_path, "loyalty", "status", "--user-id", "nobody", code=1)
