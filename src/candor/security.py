"""Abuse limits and protective HTTP headers.

Rate limits use the ``limits`` library, in process memory (each worker process counts on its own, so
with N workers the effective limit is up to N times the setting). The collection and staff limits, which
count thousands, use sliding-window counters; the small limits that guard logins, tokens, privacy
requests and verification codes use exact moving windows: a counter weighs the previous window and
rounds down, which let a fourth failed login through right after a window boundary under "3/minute".
"""

from __future__ import annotations

from typing import Any

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter, RateLimiter, SlidingWindowCounterRateLimiter

from candor.config import Settings


class RateLimited(Exception):
    def __init__(self, what: str, retry_after: int) -> None:
        super().__init__(what)
        self.what = what
        self.retry_after = max(1, retry_after)


class RateLimits:
    """Named limits, each keyed by a write key, a token id or a client address."""

    # limits an attacker probes a few times a minute: counted exactly (one timestamp per use)
    EXACT = frozenset({"auth_failure_ip", "login_ip", "login_user", "privacy_ip", "privacy_identifier", "verify_ip"})

    def __init__(self, settings: Settings) -> None:
        storage = MemoryStorage()
        self._counter = SlidingWindowCounterRateLimiter(storage)
        self._exact = MovingWindowRateLimiter(storage)
        self.limits: dict[str, RateLimitItem] = {
            "collect_key": parse(settings.rate_collect_per_key),
            "collect_ip": parse(settings.rate_collect_per_ip),
            "staff_token": parse(settings.rate_staff_per_token),
            "auth_failure_ip": parse(settings.rate_auth_failures_per_ip),
            "login_ip": parse(settings.rate_login_per_ip),
            "login_user": parse(settings.rate_login_failures_per_user),
            "privacy_ip": parse(settings.rate_privacy_requests_per_ip),
            "privacy_identifier": parse(settings.rate_privacy_requests_per_identifier),
            "verify_ip": parse(settings.rate_verify_per_ip),
        }

    def hit(self, name: str, key: str) -> None:
        """Count one use; raise RateLimited when the limit is exceeded."""
        item = self.limits[name]
        if not self._limiter(name).hit(item, name, key):
            raise RateLimited(name, self._retry_after(item, name, key))

    def hit_quietly(self, name: str, key: str) -> None:
        """Count one use without raising (e.g. a failed login, checked on the next attempt)."""
        self._limiter(name).hit(self.limits[name], name, key)

    def exceeded(self, name: str, key: str) -> int | None:
        """Seconds to wait if ``key`` is over the limit now (without counting a use), else None."""
        item = self.limits[name]
        if self._limiter(name).test(item, name, key):
            return None
        return self._retry_after(item, name, key)

    def _limiter(self, name: str) -> RateLimiter:
        return self._exact if name in self.EXACT else self._counter

    def _retry_after(self, item: RateLimitItem, name: str, key: str) -> int:
        import time

        stats = self._limiter(name).get_window_stats(item, name, key)
        return int(stats.reset_time - time.time()) + 1


SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


class SecurityHeaders:
    """ASGI middleware adding protective headers to every HTTP response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for k, v in SECURITY_HEADERS:
                    if k not in present:
                        headers.append((k, v))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimit:
    """ASGI middleware: no request body larger than ``max_bytes`` reaches any route.

    A declared Content-Length over the limit gets 413 at once; a body that grows past it while
    streaming is cut off (the route sees the client disconnect). Collection routes apply their own,
    smaller limits on top.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                body = b'{"success":false,"error":{"code":"too_large","message":"the request body is too large"}}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 413,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, limited, send)
