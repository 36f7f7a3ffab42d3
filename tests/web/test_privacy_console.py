"""The console's privacy inbox: what arrived undeclared (never the value), declare or dismiss, policies."""

from __future__ import annotations

import pytest

from candor.config import Settings
from tests.helpers import api
from tests.web.test_pages import csrf, login

pytestmark = pytest.mark.anyio


async def test_privacy_inbox_page_shows_fields_never_values_and_decides(settings: Settings) -> None:
    async with api(settings) as a:
        value = "inbox.canary@example.com"
        await a.post("/v1/track", {"userId": "u", "event": "E", "properties": {"contactMail": value}})
        await a.post("/v1/track", {"userId": "u", "event": "E", "properties": {"ref": "AB123456C"}})
        home = await login(a, "analyst")
        assert "/admin/privacy" not in home
        assert (await a.client.get("/admin/privacy")).status_code == 403
        a.client.cookies.clear()
        home = await login(a, "privacy_officer")
        assert "/admin/privacy" in home
        page = await a.client.get("/admin/privacy")
        assert page.status_code == 200
        assert "properties.contactMail" in page.text and "properties.ref" in page.text
        assert value not in page.text and "AB123456C" not in page.text
        assert "Government identifiers" in page.text
        items = {i["field"]: i["id"] for i in a.rt.inbox.list()}
        r = await a.client.post(
            "/admin/privacy/declare",
            data={"csrf": csrf(home), "id": str(items["properties.contactMail"]), "category": "contact"},
        )
        assert r.status_code == 303
        r = await a.client.post("/admin/privacy/dismiss", data={"csrf": csrf(home), "id": str(items["properties.ref"])})
        assert r.status_code == 303
        page = await a.client.get("/admin/privacy")
        assert "Nothing waiting" in page.text
        decl = {d["path"]: d["category"] for d in a.rt.dictionary.list("test-source") if not d["builtin"]}
        assert decl == {"contactMail": "contact"}
        r = await a.client.post(
            "/admin/privacy/policy", data={"csrf": csrf(home), "source": "test-source", "policy": "drop"}
        )
        assert r.status_code == 303 and a.rt.inbox.policies() == [{"source": "test-source", "policy": "drop"}]
        r = await a.client.post(
            "/admin/privacy/policy", data={"csrf": csrf(home), "source": "test-source", "policy": "x"}
        )
        assert r.status_code == 400
        r = await a.client.post("/admin/privacy/dismiss", data={"id": "1"})
        assert r.status_code == 403  # no CSRF token
