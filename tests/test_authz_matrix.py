"""Every route declares who may call it, and the declaration is enforced for every principal.

The matrix is generated from the application's route table, so a route added later is covered
without anyone remembering to add it here.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from candor.app import RouteInfo, create_app, route_table
from candor.auth import ROLES, Public, Require, SessionAuth, SourceAuth
from candor.config import Settings
from tests.helpers import FEEDBACK_SECRET, api, basic, bearer, signed

pytestmark = pytest.mark.anyio

BUILTIN_PUBLIC = {"/openapi.json"}


def declaration(route: RouteInfo) -> list[Any]:
    found = []
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if isinstance(dep.call, Public | SourceAuth | Require | SessionAuth):
            found.append(dep.call)
        stack.extend(dep.dependencies)
    return found


def test_every_route_declares_exactly_one_requirement(tmp_path: Any) -> None:
    app = create_app(Settings.from_env(env={}, data_dir=tmp_path))
    try:
        routes = route_table(app)
        assert len(routes) > 10
        for route in routes:
            if route.dependant is None:
                assert route.path in BUILTIN_PUBLIC, f"unexpected non-API route {route.path}"
                continue
            decl = declaration(route)
            assert len(decl) == 1, f"{sorted(route.methods)} {route.path} must declare Public, SourceAuth or Require"
    finally:
        app.state.candor.close()


def fill_path(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


PROVIDER_CALLBACKS = ("/v1/email/feedback", "/v1/sms/inbound")


async def test_authorization_matrix(tmp_path: Any) -> None:
    # provider callbacks also need their source named and a signature (campaigns/callbacks.py)
    settings = Settings.from_env(env={}, data_dir=tmp_path, rate_auth_failures_per_ip="100000/minute",
                                 feedback_sources="test-source", feedback_secret=FEEDBACK_SECRET)  # fmt: skip
    async with api(settings) as a:
        directory = a.rt.directory
        role_tokens = {role: directory.create_token(role, role) for role in ROLES}
        expired = directory.create_token("old", "owner", ttl_days=1e-9)
        revoked = directory.create_token("gone", "owner")
        directory.revoke_token(next(t["id"] for t in directory.list_tokens() if t["name"] == "gone"))
        principals: dict[str, dict[str, str]] = {
            "none": {},
            "wrong bearer": bearer("cnd_not-a-token"),
            "wrong basic": basic("wk_not-a-key"),
            "write key": basic(a.write_key),
            "expired token": bearer(expired),
            "revoked token": bearer(revoked),
            "token as basic": basic(role_tokens["owner"]),
            "write key as bearer": bearer(a.write_key),
            **{f"role {r}": bearer(t) for r, t in role_tokens.items()},
        }
        checked = 0
        app = a.client._transport.app  # type: ignore[attr-defined]
        for route in [r for r in route_table(app) if r.dependant is not None]:
            (decl,) = declaration(route)
            # fresh role tokens for every route: a route may end its caller's session (logout)
            principals.update({f"role {r}": bearer(directory.create_token(r, r)) for r in ROLES})
            for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
                for who, headers in principals.items():
                    if isinstance(decl, Public):
                        allowed = True
                    elif isinstance(decl, SourceAuth):
                        allowed = who == "write key"
                    else:
                        allowed = who.startswith("role ") and (decl.scope is None or decl.scope in ROLES[who[5:]])
                    if route.path in PROVIDER_CALLBACKS and who == "write key":
                        headers = {**headers, **signed({}, a.write_key)["headers"]}
                    r = await a.client.request(method, fill_path(route.path), json={}, headers=headers)
                    where = f"{method} {route.path} as {who}"
                    assert r.status_code < 500, where
                    if isinstance(decl, SessionAuth):
                        # pages take no API credentials: only their own session cookie opens them
                        assert r.status_code in (303, 401), f"{where}: got {r.status_code}"
                        checked += 1
                        continue
                    if allowed:
                        assert r.status_code not in (401, 403), f"{where} was refused: {r.text}"
                    else:
                        # a staff token is no write key: collection answers 401 to it, staff routes 403
                        expected = 403 if who.startswith("role ") and isinstance(decl, Require) else 401
                        assert r.status_code == expected, f"{where}: expected {expected}, got {r.status_code}"
                        body = r.json()
                        assert body["success"] is False and body["error"]["code"]
                    checked += 1
        assert checked > 50


async def test_failed_authentication_is_rate_limited_per_address(tmp_path: Any) -> None:
    settings = Settings.from_env(env={}, data_dir=tmp_path, rate_auth_failures_per_ip="5/minute")
    async with api(settings) as a:
        codes = [(await a.client.get("/v1/stats", headers=bearer("cnd_guess"))).status_code for _ in range(7)]
        assert codes[:5] == [401] * 5 and codes[5:] == [429, 429]
        r = await a.client.get("/v1/stats", headers=bearer(a.owner))  # even a good token now waits
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        r = await a.post("/v1/track", {"userId": "u", "event": "E"})
        assert r.status_code == 429


async def test_collection_rate_limit_per_write_key(tmp_path: Any) -> None:
    settings = Settings.from_env(env={}, data_dir=tmp_path, rate_collect_per_key="3/minute", default_jurisdiction="US")
    async with api(settings) as a:
        codes = [(await a.post("/v1/track", {"userId": "u", "event": "E"})).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        assert a.count() == 3


async def test_staff_rate_limit_per_token(tmp_path: Any) -> None:
    settings = Settings.from_env(env={}, data_dir=tmp_path, rate_staff_per_token="2/minute")
    async with api(settings) as a:
        codes = [(await a.client.get("/v1/stats", headers=bearer(a.owner))).status_code for _ in range(3)]
        assert codes == [200, 200, 429]


async def test_security_headers_and_cors(tmp_path: Any) -> None:
    settings = Settings.from_env(env={}, data_dir=tmp_path, cors_origins="https://shop.example.com")
    async with api(settings) as a:
        r = await a.client.get("/healthz")
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["referrer-policy"] == "no-referrer"
        pre = {
            "Origin": "https://shop.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        }
        r = await a.client.options("/v1/track", headers=pre)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://shop.example.com"
        r = await a.client.options("/v1/track", headers={**pre, "Origin": "https://evil.example.net"})
        assert "access-control-allow-origin" not in r.headers
    async with api(Settings.from_env(env={}, data_dir=tmp_path / "b")) as a:
        r = await a.client.options("/v1/track", headers=pre)
        assert "access-control-allow-origin" not in r.headers


async def test_tokens_elsewhere_than_the_authorization_header_are_ignored(tmp_path: Any) -> None:
    async with api(Settings.from_env(env={}, data_dir=tmp_path)) as a:
        assert (await a.client.get(f"/v1/stats?token={a.owner}")).status_code == 401
        assert (await a.client.get("/v1/stats", headers={"X-Api-Key": a.owner})).status_code == 401
        assert (await a.client.get("/v1/stats", headers={"Cookie": f"token={a.owner}"})).status_code == 401


async def test_slow_bodies_are_cut_off(tmp_path: Any) -> None:
    import asyncio

    settings = Settings.from_env(env={}, data_dir=tmp_path, body_timeout_seconds=1)
    async with api(settings) as a:

        async def trickle() -> Any:
            yield b'{"userId": "u", '
            await asyncio.sleep(2.5)
            yield b'"event": "E"}'

        r = await a.client.post(
            "/v1/track", content=trickle(), headers={**basic(a.write_key), "Content-Type": "application/json"}
        )
        assert r.status_code == 408 and r.json()["error"]["code"] == "body_timeout"
        assert a.count() == 0


async def test_no_page_loads_third_party_scripts(tmp_path: Any) -> None:
    async with api(Settings.from_env(env={}, data_dir=tmp_path)) as a:
        assert (await a.client.get("/docs")).status_code == 404
        r = await a.client.get("/openapi.json")
        assert r.status_code == 200 and r.headers["content-security-policy"].startswith("default-src 'none'")


async def test_every_route_has_a_body_size_limit(tmp_path: Any) -> None:
    async with api(Settings.from_env(env={}, data_dir=tmp_path)) as a:
        huge = b'{"id": "n", "version": 1, "text": "' + b"x" * (1024 * 1024 + 10) + b'"}'
        r = await a.client.post(
            "/v1/notices", content=huge, headers={**bearer(a.owner), "Content-Type": "application/json"}
        )
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
        assert a.rt.consent.list_notices() == []
