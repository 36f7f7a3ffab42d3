"""Console users: argon2 passwords, session tokens, logout, rate limits, no user enumeration."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from candor.cli import app as cli_app
from candor.config import Settings
from tests.helpers import api, bearer

pytestmark = pytest.mark.anyio


async def test_login_logout_and_roles(settings: Settings) -> None:
    async with api(settings) as a:
        a.rt.directory.create_user("mia.marketer", "marketer", "correct horse battery")
        r = await a.client.post(
            "/v1/auth/login", json={"username": "mia.marketer", "password": "correct horse battery"}
        )
        assert r.status_code == 200, r.text
        session = r.json()
        assert session["role"] == "marketer" and session["expires_ms"] > time.time() * 1000
        token = session["token"]
        assert (await a.client.get("/v1/stats", headers=bearer(token))).status_code == 200
        assert (await a.client.get("/v1/audit", headers=bearer(token))).status_code == 403
        out = await a.client.post("/v1/auth/logout", headers=bearer(token))
        assert out.json() == {"success": True}
        a.rt.directory._staff.clear()
        assert (await a.client.get("/v1/stats", headers=bearer(token))).status_code == 401
        # the password is stored as argon2id, never in clear
        from sqlalchemy import select

        from candor.store.schema import users

        with a.rt.store.engine.connect() as conn:
            stored = conn.execute(select(users.c.password_hash)).scalar()
        assert isinstance(stored, str)
        assert stored.startswith("$argon2id$") and "correct horse" not in stored


async def test_wrong_password_and_unknown_user_look_the_same(tmp_path: Any) -> None:
    async with api(Settings.from_env(env={}, data_dir=tmp_path, rate_login_per_ip="1000/minute")) as a:
        a.rt.directory.create_user("sam.support", "support", "a long enough password")
        wrong = await a.client.post("/v1/auth/login", json={"username": "sam.support", "password": "nope"})
        nobody = await a.client.post("/v1/auth/login", json={"username": "no.such.user", "password": "nope"})
        assert wrong.status_code == nobody.status_code == 401
        assert wrong.json() == nobody.json()
        # timing: both verify one argon2 hash (loose bound against a shared, noisy machine)
        t0 = time.perf_counter()
        await a.client.post("/v1/auth/login", json={"username": "no.such.user2", "password": "x"})
        unknown_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        await a.client.post("/v1/auth/login", json={"username": "sam.support", "password": "x"})
        known_s = time.perf_counter() - t0
        assert unknown_s > known_s / 5


async def test_login_rate_limits(tmp_path: Any) -> None:
    settings = Settings.from_env(
        env={}, data_dir=tmp_path, rate_login_failures_per_user="3/minute", rate_login_per_ip="1000/minute"
    )
    async with api(settings) as a:
        a.rt.directory.create_user("olga.owner", "owner", "the right password!")
        codes = [
            (await a.client.post("/v1/auth/login", json={"username": "olga.owner", "password": "guess"})).status_code
            for _ in range(4)
        ]
        assert codes == [401, 401, 401, 429]
        # even the right password waits until the window passes
        r = await a.client.post("/v1/auth/login", json={"username": "olga.owner", "password": "the right password!"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    per_ip = Settings.from_env(env={}, data_dir=tmp_path / "b", rate_login_per_ip="2/minute")
    async with api(per_ip) as a:
        codes = [
            (await a.client.post("/v1/auth/login", json={"username": f"u{i}", "password": "x"})).status_code
            for i in range(3)
        ]
        assert codes == [401, 401, 429]


async def test_bad_login_bodies(settings: Settings) -> None:
    async with api(settings) as a:
        for body in (
            {},
            {"username": "x"},
            {"username": "x", "password": "y", "extra": 1},
            {"username": 5, "password": []},
        ):
            r = await a.client.post("/v1/auth/login", json=body)
            assert r.status_code == 400, body


def test_users_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path)]
    ok = runner.invoke(
        cli_app,
        [*base, "users", "create", "dana.dpo", "--role", "privacy_officer", "--password-stdin"],
        input="a sufficiently long secret\n",
    )
    assert ok.exit_code == 0, ok.output
    short = runner.invoke(
        cli_app, [*base, "users", "create", "eve", "--role", "owner", "--password-stdin"], input="short\n"
    )
    assert short.exit_code == 1 and "at least 12 characters" in short.output
    dup = runner.invoke(
        cli_app,
        [*base, "users", "create", "dana.dpo", "--role", "owner", "--password-stdin"],
        input="another long password\n",
    )
    assert dup.exit_code == 1 and "already exists" in dup.output
    bad_role = runner.invoke(
        cli_app,
        [*base, "users", "create", "frank", "--role", "king", "--password-stdin"],
        input="another long password\n",
    )
    assert bad_role.exit_code == 1 and "unknown role" in bad_role.output


async def test_failed_logins_are_counted_exactly_across_a_window_boundary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three failures just before a minute boundary still block the fourth attempt just after it
    (a sliding-window counter weighs the previous minute and rounds down: it let that attempt through),
    and the block lifts once the failures are a minute old."""
    from candor.security import RateLimits

    now = [1_800_000_000.0 + 59.0]  # a second before a minute boundary
    monkeypatch.setattr(time, "time", lambda: now[0])
    limits = RateLimits(Settings.from_env(env={}, data_dir=tmp_path, rate_login_failures_per_user="3/minute"))
    assert limits.exceeded("login_user", "olga") is None
    for _ in range(3):
        limits.hit_quietly("login_user", "olga")
    assert limits.exceeded("login_user", "olga") is not None
    now[0] += 1.5  # just over the boundary
    wait = limits.exceeded("login_user", "olga")
    assert wait is not None and 1 <= wait <= 60
    assert limits.exceeded("login_user", "someone else") is None
    now[0] += 59.0  # the failures are a minute old
    assert limits.exceeded("login_user", "olga") is None
