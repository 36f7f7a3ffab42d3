"""Logs and error bodies never contain personal data, whatever the traffic (canary values)."""

from __future__ import annotations

import logging
import secrets
from typing import Any

import pytest

from candor.config import Settings
from candor.logs import ScrubbedJsonFormatter
from tests.helpers import api, basic, bearer

pytestmark = pytest.mark.anyio


def canaries() -> dict[str, str]:
    tag = secrets.token_hex(4)
    return {
        "email": f"canary.{tag}@example.com",
        "name": f"Zyx{tag}canary",
        "phone": "+1 415 555 0199",
        "street": f"{tag} Canary Lane",
        "user": f"user-{tag}-canary",
        "secret": f"prop-{tag}-canary",
    }


async def test_traffic_with_canaries_leaves_no_trace_in_logs_or_errors(
    tmp_path: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = canaries()
    caplog.set_level(logging.DEBUG)
    bodies: list[str] = []
    async with api(Settings.from_env(env={}, data_dir=tmp_path, log_level="debug"), personal=["secret"]) as a:
        traits = {"email": c["email"], "name": c["name"], "phone": c["phone"], "address": {"street": c["street"]}}
        requests: list[tuple[str, Any]] = [
            ("/v1/identify", {"userId": c["user"], "traits": traits, "context": {"direct": True}}),
            ("/v1/track", {"userId": c["user"], "event": "E", "properties": {"secret": c["secret"]}}),
            (
                "/v1/page",
                {"anonymousId": c["user"], "properties": {"url": f"https://shop.example.com/?e={c['email']}"}},
            ),
            # invalid events that carry the canaries
            ("/v1/track", {"userId": c["user"]}),
            ("/v1/track", {"userId": c["user"] * 100, "event": "E"}),
            ("/v1/identify", {"userId": c["user"], "traits": c["email"]}),
            ("/v1/track", {"userId": c["user"], "event": "E", "timestamp": c["email"]}),
            ("/v1/track", {"userId": {"email": c["email"]}, "event": "E"}),
            ("/v1/alias", {"previousId": c["email"]}),
            (
                "/v1/batch",
                {"batch": [{"type": c["email"], "userId": c["user"]}, {"type": "track", "userId": c["user"]}]},
            ),
            ("/v1/batch?strict=1", {"batch": [{"type": "track", "userId": c["user"], "messageId": 5}]}),
            ("/v1/batch", {"batch": c["email"]}),
        ]
        for path, body in requests:
            r = await a.post(path, body)
            bodies.append(r.text)
        raw = [
            b'{"userId": "' + c["user"].encode() + b'", "event": ',
            b'{"email": "' + c["email"].encode() + b'" \xff}',
        ]
        for blob in raw:
            r = await a.client.post(
                "/v1/track", content=blob, headers={**basic(a.write_key), "Content-Type": "application/json"}
            )
            bodies.append(r.text)
        # credentials that are wrong, in every place
        r = await a.client.post("/v1/track", json={"writeKey": c["secret"], "userId": c["user"], "event": "E"})
        bodies.append(r.text)
        r = await a.client.get(f"/v1/stats?email={c['email']}", headers=bearer(c["secret"]))
        bodies.append(r.text)
        r = await a.client.get(f"/v1/audit?subject_id={c['email']}", headers=bearer(a.owner))
        bodies.append(r.text)
        assert r.status_code == 400
        # an unexpected failure whose exception text quotes personal data
        original = a.rt.ingestor.submit

        async def explode(work: Any) -> Any:
            raise ValueError(f"cannot store {c['email']} for {c['name']}")

        monkeypatch.setattr(a.rt.ingestor, "submit", explode)
        r = await a.post("/v1/track", {"userId": c["user"], "event": "E"})
        assert r.status_code == 500
        bodies.append(r.text)
        monkeypatch.setattr(a.rt.ingestor, "submit", original)
        stats = await a.client.get("/v1/stats", headers=bearer(a.owner))
        bodies.append(stats.text)

    formatter = ScrubbedJsonFormatter()
    # records of the test's own HTTP client (httpx) are the caller's, not the server's
    lines = [formatter.format(rec) for rec in caplog.records if not rec.name.startswith(("httpx", "httpcore"))]
    assert any("internal error" in line for line in lines), "the failure must be logged (without its text)"
    assert any('"exc_type"' in line or "ValueError" in line for line in lines)
    haystack = "\n".join(lines + bodies)
    needles = [*c.values(), "4155550199", c["email"].split("@")[0]]
    for needle in needles:
        assert needle not in haystack, f"canary {needle!r} leaked into logs or error bodies"


def test_formatter_drops_exception_text() -> None:
    try:
        raise RuntimeError("ann@example.com is unhappy")
    except RuntimeError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed for %s", ("pid-123",), sys.exc_info())
    line = ScrubbedJsonFormatter().format(record)
    assert "ann@example.com" not in line
    assert '"exc_type":"RuntimeError"' in line and "pid-123" in line
