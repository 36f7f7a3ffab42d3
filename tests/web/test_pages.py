"""The preference center and the console, in-process: links, sessions, CSRF, roles, safe rendering."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from sqlalchemy import select

from candor import audit
from candor.config import Settings
from candor.store.schema import consent_records
from candor.web.preferences import make_link
from tests.helpers import Api, api

pytestmark = pytest.mark.anyio

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


async def person(a: Api) -> None:
    await a.post(
        "/v1/identify",
        {
            "userId": "pc-1",
            "traits": {"email": "pc@example.org", "firstName": XSS, "lastName": "‏مرحبا 👋", "city": "x" * 3000},
        },
    )


async def open_center(a: Api) -> str:
    link = make_link(a.rt, "email", "pc@example.org")
    r = await a.client.get(link.split("127.0.0.1:8000", 1)[-1].replace(a.rt.settings.public_url, ""))
    assert r.status_code == 303 and r.headers["location"] == "/preferences"
    assert "httponly" in r.headers["set-cookie"].lower() and "samesite=lax" in r.headers["set-cookie"].lower()
    page = await a.client.get("/preferences")
    assert page.status_code == 200
    return page.text


async def test_preference_center_changes_are_ledger_records_with_the_notice(
    make_settings: Callable[..., Settings],
) -> None:
    async with api(make_settings(default_jurisdiction="EU")) as a:
        a.rt.consent.add_notice("preference-center", 3, "en", "We use your data for ...")
        await person(a)
        html = await open_center(a)
        # traits are shown as text, never as markup; long and right-to-left values are safe
        assert XSS not in html and "&lt;script&gt;" in html
        assert "Content-Security-Policy" in (await a.client.get("/preferences")).headers
        token = csrf(html)
        r = await a.client.post(
            "/preferences/consent",
            data={"csrf": token, "purpose": ["analytics"], "notice_id": "preference-center", "notice_version": "3"},
        )
        assert r.status_code == 303
        sid = a.rt.consent.subject_for("user_id", "pc-1")
        with a.rt.store.engine.connect() as conn:
            rec = conn.execute(select(consent_records).where(consent_records.c.subject_id == sid)).mappings().all()[-1]
        assert rec["source"] == "preference_center" and rec["notice_version"] == 3
        assert "analytics" in rec["granted"] and "advertising" in rec["denied"]
        assert a.rt.consent.can_use(sid, "analytics").allowed
        # a form without the CSRF token changes nothing
        before = len(audit.entries(a.rt.store, limit=10_000))
        r = await a.client.post("/preferences/consent", data={"purpose": ["advertising"]})
        assert r.status_code == 403
        assert not a.rt.consent.can_use(sid, "advertising").allowed
        assert len(audit.entries(a.rt.store, limit=10_000)) == before
        # interests: zero-party data shown back with its source
        await a.client.post("/preferences/interests", data={"csrf": token, "interest": ["jazz", "crime", "<bad>"]})
        view = a.rt.profiles.view(sid or "", reveal=True, actor="test")
        assert view["traits"]["interests"]["value"] == ["crime", "jazz"]
        assert view["traits"]["interests"]["source"] == "preference-center"


async def test_tampered_expired_and_missing_links(settings: Settings) -> None:
    async with api(settings) as a:
        await person(a)
        link = make_link(a.rt, "email", "pc@example.org")
        path = "/preferences/open?t=" + link.split("t=", 1)[1]
        tampered = path[:-3] + ("aaa" if not path.endswith("aaa") else "bbb")
        r = await a.client.get(tampered)
        assert r.status_code == 400 and "not valid" in r.text
        expired = make_link(a.rt, "email", "pc@example.org", ttl_ms=-1)
        r = await a.client.get("/preferences/open?t=" + expired.split("t=", 1)[1])
        assert r.status_code == 400
        r = await a.client.get("/preferences")
        assert r.status_code == 401
        # a link signed for one purpose is no session cookie
        a.client.cookies.set("candor_pc", link.split("t=", 1)[1])
        assert (await a.client.get("/preferences")).status_code == 401


async def test_download_and_delete_from_the_preference_center(settings: Settings) -> None:
    async with api(settings) as a:
        await person(a)
        html = await open_center(a)
        r = await a.client.post("/preferences/download", data={"csrf": csrf(html)})
        assert r.status_code == 200
        link = re.search(r'href="(/v1/privacy-requests/download/[^"]+)"', r.text)
        assert link
        z = await a.client.get(link.group(1))
        assert z.status_code == 200 and z.content[:2] == b"PK"
        r = await a.client.post("/preferences/delete", data={"csrf": csrf(html)})
        assert r.status_code == 400  # not confirmed: nothing happens
        assert a.rt.consent.subject_for("user_id", "pc-1") is not None
        r = await a.client.post("/preferences/delete", data={"csrf": csrf(html), "confirm": "yes"})
        assert r.status_code == 200 and "erased" in r.text
        assert a.rt.consent.subject_for("user_id", "pc-1") is None
        kinds = {(q["type"], q["verification"]) for q in a.rt.requests.listing()}
        assert kinds == {("access", "link"), ("erasure", "link")}


async def login(a: Api, role: str) -> str:
    a.rt.directory.create_user(f"{role}-user", role, "correct horse battery staple")
    page = await a.client.get("/admin/login")
    r = await a.client.post(
        "/admin/login",
        data={"csrf": csrf(page.text), "username": f"{role}-user", "password": "correct horse battery staple"},
    )
    assert r.status_code == 303, r.text
    assert "samesite=strict" in r.headers["set-cookie"].lower()
    home = await a.client.get("/admin")
    assert home.status_code == 200
    return home.text


async def test_console_roles_reveal_and_csrf(settings: Settings) -> None:
    async with api(settings) as a:
        await person(a)
        r = await a.client.get("/admin")
        assert r.status_code == 303 and r.headers["location"] == "/admin/login"
        home = await login(a, "marketer")
        assert "<svg" in home and "People usable per purpose" in home
        assert "/admin/audit" not in home  # not in a marketer's navigation
        r = await a.client.get("/admin/profiles", params={"kind": "email", "q": "pc@example.org"})
        assert r.status_code == 200 and "P***" not in r.text and XSS not in r.text
        assert "Reveal personal values" not in r.text
        r = await a.client.post("/admin/profiles/reveal", data={"csrf": csrf(home), "profile_id": "0" * 32})
        assert r.status_code == 403
        assert (await a.client.get("/admin/audit")).status_code == 403
        a.client.cookies.clear()
        home = await login(a, "privacy_officer")
        r = await a.client.get("/admin/profiles", params={"kind": "email", "q": "pc@example.org"})
        pid = re.search(r'name="profile_id" value="([0-9a-f]{32})"', r.text)
        assert pid
        r = await a.client.post("/admin/profiles/reveal", data={"csrf": csrf(home), "profile_id": pid.group(1)})
        assert r.status_code == 200 and "&lt;script&gt;" in r.text
        assert any(e["action"] == "pii.read" for e in audit.entries(a.rt.store, limit=10_000))
        r = await a.client.post("/admin/profiles/reveal", data={"profile_id": pid.group(1)})
        assert r.status_code == 403  # no CSRF token
        r = await a.client.post("/admin/audit/verify", data={"csrf": csrf(home)})
        assert r.status_code == 200 and "Intact" in r.text


async def test_console_processes_a_rights_request_and_login_is_rate_limited(
    make_settings: Callable[..., Settings],
) -> None:
    async with api(make_settings(rate_login_per_ip="5/minute")) as a:
        await person(a)
        req, _ = a.rt.requests.create("access", "email", "pc@example.org", send_code=False)
        home = await login(a, "privacy_officer")
        page = await a.client.get("/admin/requests")
        assert req.id in page.text
        r = await a.client.post(f"/admin/requests/{req.id}/verify", data={"csrf": csrf(home), "reason": "called back"})
        assert r.status_code == 303
        r = await a.client.post(f"/admin/requests/{req.id}/process", data={"csrf": csrf(home)})
        assert r.status_code == 303
        assert a.rt.requests.get(req.id).state == "completed"
        a.client.cookies.clear()
        codes = []
        for _ in range(6):
            p = await a.client.get("/admin/login")
            r = await a.client.post("/admin/login", data={"csrf": csrf(p.text), "username": "x", "password": "y"})
            codes.append(r.status_code)
        assert codes[-1] == 429 and 401 in codes


async def test_console_segment_and_campaign_pages(settings: Settings) -> None:
    async with api(settings) as a:
        await person(a)
        a.rt.segments.create("recent", {"name": "recent", "conditions": [{"last_seen": {"within_days": 30}}]}, "t")
        a.rt.segments.refresh("recent", "t")
        await login(a, "marketer")
        page = await a.client.get("/admin/segments")
        assert page.status_code == 200 and "recent: usable per purpose (1 members)" in page.text
        assert "<svg" in page.text
        page = await a.client.get("/admin/campaigns")
        assert page.status_code == 200 and "No campaigns yet" in page.text
        token = csrf(page.text)
        # the segment's own page: a live preview with the purpose breakdown and membership over time
        page = await a.client.get("/admin/segments/recent")
        assert (
            page.status_code == 200 and "<strong>1</strong> members" in page.text and "recent: members at" in page.text
        )
        assert "marketing.email" in page.text
        r = await a.client.post("/admin/segments/recent/refresh", data={"csrf": token})
        assert r.status_code == 303
        assert len(a.rt.segments.runs("recent")) == 2
        assert "recent: members over time" in (await a.client.get("/admin/segments/recent")).text  # now a line
        assert (await a.client.post("/admin/segments/recent/refresh", data={})).status_code == 403
        assert (await a.client.get("/admin/segments/nobody")).status_code == 404
        # a campaign from the form: a bad template is refused with the reason and the values kept
        form = {
            "csrf": token,
            "name": "from-console",
            "segment": "recent",
            "channel": "email",
            "subject": "Hello",
            "template": "Hi {{ traits.firstName ",
            "generic_template": "Hello there <b>friend</b>",
            "sender": "Shop <news@shop.example>",
            "postal_address": "1 Main Street",
            "cost_per_message": "0.01",
        }
        r = await a.client.post("/admin/campaigns", data=form)
        assert r.status_code == 400 and "template" in r.text and "Hello there &lt;b&gt;friend&lt;/b&gt;" in r.text
        assert a.rt.campaigns.names() == []
        r = await a.client.post("/admin/campaigns", data={**form, "cost_per_message": "cheap"})
        assert r.status_code == 400 and "cost_per_message" in r.text
        r = await a.client.post("/admin/campaigns", data={**form, "template": "Hi {{ traits.firstName }}"})
        assert r.status_code == 303 and r.headers["location"] == "/admin/campaigns/from-console"
        page = await a.client.get("/admin/campaigns/from-console")
        assert page.status_code == 200 and "If sent now" in page.text and "Not sent yet" in page.text
        assert "send:personalised" in page.text and "The personalised variant" in page.text
        assert XSS not in page.text  # the sample is rendered without personal values
        assert (await a.client.post("/admin/campaigns", data={**form, "csrf": "forged"})).status_code == 403
        r = await a.client.post("/admin/campaigns/from-console/send", data={"csrf": token})
        assert r.status_code == 503 and "CANDOR_SMTP_URL" in r.text  # no mail server here: nothing was marked
        assert a.rt.campaigns.report("from-console")["outcomes"] == {}
        a.client.cookies.clear()
        await login(a, "support")
        assert (await a.client.get("/admin/segments")).status_code == 403
