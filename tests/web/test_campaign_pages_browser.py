"""The segment and campaign pages in a real browser (Debian's Chromium through Playwright): a marketer
previews a segment, creates a campaign from the form, previews its variants, sends it to a real SMTP
server (aiosmtpd) and reads the report; axe-core finds no serious or critical problem."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from candor.testing import candor_command
from tests.rights.smtp import Inbox, smtp_server
from tests.serverproc import ServerProcess
from tests.web.browser import axe_violations, browser, screenshot  # noqa: F401 - the fixture


@pytest.fixture(scope="module")
def inbox() -> Iterator[Inbox]:
    with smtp_server() as box:
        yield box


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, inbox: Inbox) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("campaign-pages") / "data"
    env = {"CANDOR_DEFAULT_JURISDICTION": "US", "CANDOR_SMTP_URL": inbox.url, "CANDOR_QUIET_HOURS": ""}
    with ServerProcess(data, env=env) as srv:
        key = srv.create_source("web")
        auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
        for uid, name in (("c-1", "Ada"), ("c-2", "Grace"), ("c-3", "Hedy")):
            r = httpx.post(
                f"{srv.base_url}/v1/identify",
                json={"userId": uid, "traits": {"email": f"{uid}@example.org", "firstName": name}},
                headers=auth,
            )
            assert r.status_code == 200, r.text
        r = httpx.post(
            f"{srv.base_url}/v1/consent",
            json={"userId": "c-2", "denied": ["personalization"], "source": "preference_center"},
            headers=auth,
        )
        assert r.status_code in (200, 201), r.text
        r = httpx.post(
            f"{srv.base_url}/v1/consent",
            json={"userId": "c-3", "denied": ["marketing.email"], "source": "preference_center"},
            headers=auth,
        )
        assert r.status_code in (200, 201), r.text
        segment = data.parent / "seg.json"
        segment.write_text('{"name": "recent", "conditions": [{"last_seen": {"within_days": 30}}]}')
        srv.cli("segments", "create", str(segment))
        subprocess.run(
            [*candor_command(), "users", "create", "mia", "--role", "marketer", "--password-stdin"],
            input=b"a long enough password\n",
            env=srv.env,
            check=True,
            capture_output=True,
        )
        yield srv


def test_a_marketer_previews_creates_sends_and_reads_the_report(
    server: ServerProcess,
    inbox: Inbox,
    browser: Any,  # noqa: F811
) -> None:
    page = browser.new_context(bypass_csp=True).new_page()  # axe-core is injected as a script
    page.goto(server.base_url + "/admin")
    page.fill("#username", "mia")
    page.fill("#password", "a long enough password")
    page.get_by_role("button", name="Sign in").click()
    page.goto(server.base_url + "/admin/segments")
    page.get_by_role("link", name="recent").click()
    assert page.get_by_role("heading", name="Segment recent").is_visible()
    assert "3 members" in page.inner_text("main")
    with page.expect_navigation():
        page.get_by_role("button", name="Refresh now").click()
    assert page.locator("svg[role=img]").count() == 1  # membership over time
    assert axe_violations(page) == []
    screenshot(page, "console-segment")

    page.goto(server.base_url + "/admin/campaigns")
    page.fill("#c-name", "vinyl-week")
    page.select_option("#c-segment", "recent")
    page.fill("#c-subject", "Vinyl week")
    page.fill("#c-template", "Hi {{ traits.firstName }}, vinyl is back.")
    page.fill("#c-generic", "Vinyl is back.")
    page.fill("#c-sender", "Shop <news@shop.example>")
    page.fill("#c-postal", "1 Main Street, Salem")
    page.fill("#c-cost", "0.5")
    page.fill("#c-budget", "10")
    assert axe_violations(page) == []
    screenshot(page, "console-campaign-new")
    with page.expect_navigation():
        page.get_by_role("button", name="Create (templates are checked first)").click()
    assert page.get_by_role("heading", name="Campaign vinyl-week").is_visible()
    text = page.inner_text("main")
    assert "send:personalised" in text and "send:generic" in text and "skipped:no_consent" in text
    assert "Hi , vinyl is back." in text  # the personalised sample is rendered without personal values
    assert "Ada" not in text
    screenshot(page, "console-campaign-preview")
    with page.expect_navigation():
        page.get_by_role("button", name="Send now").click()
    assert sorted(m["To"] for m in inbox.messages) == ["c-1@example.org", "c-2@example.org"]
    report = page.inner_text("main")
    assert "1.00 of a budget of 10.00" in report and "skipped:no_consent" in report
    assert "Conversions" in report and "ROI" in report
    assert axe_violations(page) == []
    screenshot(page, "console-campaign-report")
    page.close()
