"""The vault: pseudonyms, sealing under per-subject keys, crypto-shredding, key mismatch."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from candor.config import Settings
from candor.store import Store
from candor.vault import KeyDestroyed, Vault, VaultError

_opened: list[Store] = []


def open_vault(s: Settings, key: bytes | None = None) -> Vault:
    store = Store(s)
    _opened.append(store)
    store.upgrade()
    return Vault(store, key or s.load_master_key())


@pytest.fixture(autouse=True)
def _dispose() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().dispose()


def test_pseudonyms_are_keyed_stable_and_typed(settings: Settings) -> None:
    v = open_vault(settings)
    p = v.pseudonym("email", "ann@example.com")
    assert p == v.pseudonym("email", "ann@example.com")
    assert p != v.pseudonym("user_id", "ann@example.com")
    assert len(p) == 32 and "ann" not in p
    # a second process with the same data dir computes the same pseudonyms (key stored wrapped)
    assert open_vault(settings).pseudonym("email", "ann@example.com") == p
    # another installation (another HMAC key) does not
    other = Settings.from_env(env={}, data_dir=settings.data_dir.parent / "other")
    assert open_vault(other).pseudonym("email", "ann@example.com") != p


def test_seal_open_and_shred(settings: Settings) -> None:
    v = open_vault(settings)
    with v.store.write() as conn:
        sid, _ = v.new_subject(conn)
        sid2, _ = v.new_subject(conn)
    sealed = v.seal(sid, b"Ann Example")
    assert b"Ann" not in sealed
    assert v.open(sid, sealed) == b"Ann Example"
    with pytest.raises(VaultError):
        v.open(sid2, sealed)  # bound to its subject
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(VaultError):
        v.open(sid, tampered)
    # a fresh process (empty cache) can open it too
    assert open_vault(settings).open(sid, sealed) == b"Ann Example"
    with v.store.write() as conn:
        assert v.shred(conn, sid) is True
        assert v.shred(conn, sid) is False
    with pytest.raises(KeyDestroyed):
        v.open(sid, sealed)
    with pytest.raises(KeyDestroyed):
        open_vault(settings).open(sid, sealed)
    assert v.open(sid2, v.seal(sid2, b"x")) == b"x"


def test_wrong_master_key_is_refused(settings: Settings) -> None:
    open_vault(settings)
    with pytest.raises(VaultError, match="master key does not match"):
        open_vault(settings, secrets.token_bytes(32))


@pytest.fixture(scope="module")
def sqlite_vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Vault, str]]:
    store = Store(Settings.from_env(env={}, data_dir=tmp_path_factory.mktemp("vault")))
    store.upgrade()
    v = Vault(store, secrets.token_bytes(32))
    with store.write() as conn:
        sid, _ = v.new_subject(conn)
    yield v, sid
    store.dispose()


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=2000))
def test_seal_roundtrip_any_bytes(sqlite_vault: tuple[Vault, str], data: bytes) -> None:
    v, sid = sqlite_vault
    assert v.open(sid, v.seal(sid, data)) == data
