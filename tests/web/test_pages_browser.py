"""The preference center and the console in a real browser (Debian's Chromium through Playwright)."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from candor.testing import candor_command
from tests.serverproc import ServerProcess
from tests.web.browser import axe_violations, browser, screenshot  # noqa: F401 - the fixture

EMAIL = "browser.person@example.org"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("pages") / "data"
    with ServerProcess(data, env={"CANDOR_DEFAULT_JURISDICTION": "EU"}) as srv:
        key = srv.create_source("web")
        auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
        consent = {"context": {"consent": {"categoryPreferences": {"analytics": True}}}}
        r = httpx.post(
            f"{srv.base_url}/v1/identify",
            json={
                "userId": "b-1",
                "traits": {"email": EMAIL, "firstName": "Brow<b>ser</b>", "city": "Lisboa"},
                **consent,
            },
            headers=auth,
        )
        assert r.status_code == 200, r.text
        notice = data.parent / "notice.txt"
        notice.write_text("We use your data to run the shop and, if you agree, for the purposes below.")
        srv.cli("notices", "add", "preference-center", "--version", "2", "--file", str(notice))
        for user, role in (("dpo", "privacy_officer"), ("mark", "marketer")):
            subprocess.run(
                [*candor_command(), "users", "create", user, "--role", role, "--password-stdin"],
                input=b"a long enough password\n",
                env=srv.env,
                check=True,
                capture_output=True,
            )
        yield srv


def link(server: ServerProcess) -> str:
    url = server.cli("preferences", "link", "--email", EMAIL)
    return server.base_url + "/preferences/open?" + url.split("?", 1)[1]


# Through the API, not the database file: the server's own connection sees its newest commits.
def owner(server: ServerProcess) -> dict[str, str]:
    if not hasattr(server, "_owner"):
        server._owner = server.create_token("owner")  # type: ignore[attr-defined]
    return {"Authorization": f"Bearer {server._owner}"}  # type: ignore[attr-defined]


def requests(server: ServerProcess) -> list[dict[str, Any]]:
    r = httpx.get(server.base_url + "/v1/privacy-requests", headers=owner(server))
    return sorted(r.json(), key=lambda x: x["received_ms"])


def ledger(server: ServerProcess) -> list[dict[str, Any]]:
    r = httpx.get(server.base_url + "/v1/consent/proof", params={"email": EMAIL}, headers=owner(server))
    return list(r.json()["records"])


def test_preference_center_in_the_browser(server: ServerProcess, browser: Any) -> None:  # noqa: F811
    # axe-core is injected as a script, which the page's own CSP rightly forbids: let the test in
    page = browser.new_context(bypass_csp=True).new_page()
    page.goto(link(server))
    assert page.url.endswith("/preferences")
    assert page.get_by_role("heading", name="Your privacy choices").is_visible()
    assert "Brow<b>ser</b>" in page.inner_text("body")  # shown as text, not markup
    violations = axe_violations(page)
    assert violations == [], violations
    screenshot(page, "preference-center")
    page.check("#p-personalization")
    page.get_by_role("button", name="Save my choices").first.click()
    assert page.get_by_role("status").inner_text() == "Saved."
    last = ledger(server)[-1]
    assert last["source"] == "preference_center" and "personalization" in last["granted"]
    assert last["notice"]["version"] == 2
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, "preference-center-mobile")
    page.get_by_role("button", name="Download my data").click()
    assert page.get_by_role("heading", name="Your data is ready").is_visible()
    with page.expect_download() as download:
        page.get_by_role("link", name="Download my data (zip)").click()
    assert download.value.suggested_filename.endswith(".zip")
    assert [(r["type"], r["verification"], r["state"]) for r in requests(server)] == [("access", "link", "completed")]
    page.close()


def test_bad_links_get_a_clear_page(server: ServerProcess, browser: Any) -> None:  # noqa: F811
    page = browser.new_page()
    good = link(server)
    page.goto(good[:-4] + "AAAA")
    assert page.get_by_role("heading", name="This link is not valid").is_visible()
    page.goto(server.base_url + "/preferences")
    assert page.get_by_role("heading", name="This link is not valid").is_visible()
    screenshot(page, "preference-center-bad-link")
    page.close()


def test_delete_me_in_the_browser(server: ServerProcess, browser: Any, tmp_path: Path) -> None:  # noqa: F811
    key = server.create_source(f"web-{tmp_path.name[-6:]}")
    auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    httpx.post(
        f"{server.base_url}/v1/identify",
        json={"userId": "b-2", "traits": {"email": "leaving@example.org"}},
        headers=auth,
    )
    page = browser.new_page()
    url = server.cli("preferences", "link", "--email", "leaving@example.org")
    page.goto(server.base_url + "/preferences/open?" + url.split("?", 1)[1])
    page.get_by_role("link", name="Delete me").click()
    page.get_by_role("button", name="Erase my data").click()
    assert page.url.endswith("/preferences/delete")  # the box was not ticked: the browser refuses
    page.check("#confirm")
    page.get_by_role("button", name="Erase my data").click()
    assert page.get_by_role("heading", name="Your data was erased").is_visible()
    rows = [(r["type"], r["verification"], r["state"]) for r in requests(server) if r["type"] == "erasure"]
    assert rows == [("erasure", "link", "completed")]
    page.close()


def sign_in(browser: Any, server: ServerProcess, user: str) -> Any:  # noqa: F811
    page = browser.new_page()
    page.goto(server.base_url + "/admin")
    assert page.url.endswith("/admin/login")
    page.fill("#username", user)
    page.fill("#password", "a long enough password")
    page.get_by_role("button", name="Sign in").click()
    assert page.url.endswith("/admin")
    return page


def test_console_in_the_browser(server: ServerProcess, browser: Any) -> None:  # noqa: F811
    page = sign_in(browser, server, "dpo")
    charts = page.locator("svg[role=img]")
    assert charts.count() == 3 and charts.first.bounding_box()["height"] > 50
    screenshot(page, "console-dashboard")
    # a request received by phone: verified by other means, then processed
    server.cli("privacy", "request", "access", "--email", EMAIL, "--verified", "--no-process")
    page.goto(server.base_url + "/admin/requests")
    screenshot(page, "console-requests")
    with page.expect_navigation():
        page.get_by_role("button", name="Process").first.click()
    assert [r["state"] for r in requests(server)] == ["completed"] * len(requests(server))
    page.goto(server.base_url + f"/admin/profiles?kind=email&q={EMAIL}")
    with page.expect_navigation():
        page.get_by_role("button", name="Reveal personal values (audited)").click()
    assert "Lisboa" in page.inner_text("body")
    screenshot(page, "console-profile-revealed")
    page.close()
    marketer = sign_in(browser, server, "mark")
    marketer.goto(server.base_url + f"/admin/profiles?kind=email&q={EMAIL}")
    assert "Lisboa" not in marketer.inner_text("body")
    assert marketer.get_by_role("button", name="Reveal personal values (audited)").count() == 0
    marketer.goto(server.base_url + "/admin/audit")
    assert marketer.get_by_role("heading", name="Not for your role").is_visible()
    marketer.close()
