"""Settings: environment, flags, the master key file."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import pytest

from candor.config import ConfigError, Settings, decode_key


def test_defaults_and_env(tmp_path: Path) -> None:
    s = Settings.from_env(env={})
    assert s.data_dir == Path("./candor-data")
    assert s.is_sqlite and s.resolved_database_url.endswith("candor-data/candor.db")
    s = Settings.from_env(env={"CANDOR_DATA_DIR": str(tmp_path), "CANDOR_PORT": "9000"})
    assert s.data_dir == tmp_path and s.port == 9000
    s = Settings.from_env(env={"CANDOR_DATABASE_URL": "postgresql://u@h/db"})
    assert s.resolved_database_url == "postgresql+psycopg://u@h/db" and not s.is_sqlite
    # flags win over the environment
    s = Settings.from_env(env={"CANDOR_PORT": "9000"}, port=9100)
    assert s.port == 9100


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CANDOR_PORT": "eighty"}, "CANDOR_PORT"),
        ({"CANDOR_DATABASE_URL": "mysql://x"}, "CANDOR_DATABASE_URL"),
        ({"CANDOR_SQLITE_SYNCHRONOUS": "OFF"}, "acknowledged"),
        ({"CANDOR_MAX_JSON_DEPTH": "0"}, "CANDOR_MAX_JSON_DEPTH"),
        ({"CANDOR_SQLITE_CACHE_MB": "0"}, "CANDOR_SQLITE_CACHE_MB"),
    ],
)
def test_bad_settings_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env=env)


def test_master_key_file_created_private_and_reused(tmp_path: Path) -> None:
    s = Settings.from_env(env={}, data_dir=tmp_path / "d")
    key = s.load_master_key()
    path = tmp_path / "d" / "master.key"
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o700
    assert s.load_master_key() == key
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        s.load_master_key()


def test_master_key_from_env_in_hex_or_base64(tmp_path: Path) -> None:
    raw = secrets.token_bytes(32)
    for text in (
        raw.hex(),
        __import__("base64").b64encode(raw).decode(),
        __import__("base64").urlsafe_b64encode(raw).decode().rstrip("="),
    ):
        s = Settings.from_env(env={"CANDOR_MASTER_KEY": text}, data_dir=tmp_path)
        assert s.load_master_key() == raw
    assert not (tmp_path / "master.key").exists()
    for bad in ("short", "zz" * 32, "a" * 10):
        with pytest.raises(ConfigError, match="32-byte key"):
            decode_key(bad, "CANDOR_MASTER_KEY")


def test_missing_key_without_create(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no master key"):
        Settings.from_env(env={}, data_dir=tmp_path).load_master_key(create=False)
