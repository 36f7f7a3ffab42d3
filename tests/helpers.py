"""Small helpers for in-process API tests (httpx over ASGI, no sockets)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import func, select

from candor.app import Runtime, create_app
from candor.config import Settings
from candor.store.schema import events, rejected_events


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Api:
    client: httpx.AsyncClient
    rt: Runtime
    write_key: str
    owner: str

    def count(self, table: Any = events) -> int:
        with self.rt.store.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)

    def rejected(self) -> int:
        return self.count(rejected_events)

    async def post(self, path: str, body: Any, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", None) or basic(self.write_key)
        return await self.client.post(path, json=body, headers=headers, **kw)


@asynccontextmanager
async def api(settings: Settings, **source_opts: Any) -> AsyncIterator[Api]:
    rt = Runtime(settings)
    key = rt.directory.create_source("test-source", **source_opts)
    owner = rt.directory.create_token("test owner", "owner")
    app = create_app(runtime=rt)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 51000), raise_app_exceptions=False)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://candor.test") as client,
        ):
            yield Api(client, rt, key, owner)
    finally:
        rt.close()


FEEDBACK_SECRET = "feedback-test-secret"


def provider_settings(settings: Settings, **more: Any) -> Settings:
    """``settings`` with the test source allowed to post provider callbacks, signed with the generic
    HMAC (campaigns/callbacks.py)."""
    import dataclasses

    return dataclasses.replace(
        settings, **{"feedback_sources": "test-source", "feedback_secret": FEEDBACK_SECRET, **more}
    )


def signed(body: Any, key: str, content_type: str = "application/json") -> dict[str, Any]:
    """``client.post`` keyword arguments: ``body`` (bytes, or JSON) with the write key and the generic
    HMAC signature of campaigns/callbacks.py."""
    import time

    import orjson

    from candor.campaigns import signing

    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    ts = int(time.time())
    headers = {
        **basic(key),
        "Content-Type": content_type,
        "Candor-Timestamp": str(ts),
        "Candor-Signature": signing.signature(FEEDBACK_SECRET, ts, raw),
    }
    return {"content": raw, "headers": headers}
