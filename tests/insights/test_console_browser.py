"""The insights page in a real browser (Debian's Chromium through Playwright): charts drawn, no
serious accessibility violation (axe-core), screenshots for people to look at."""

from __future__ import annotations

import random
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from candor.app import Runtime
from candor.config import Settings
from candor.testing import candor_command
from tests.insights import world as W
from tests.serverproc import ServerProcess
from tests.web.browser import axe_violations, browser, screenshot  # noqa: F401 - the fixture


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("insights") / "data"
    rt = Runtime(Settings.from_env(env={}, data_dir=data, default_jurisdiction="US"))
    try:
        W.build(rt, random.Random(21), people=400, n_events=8000)
    finally:
        rt.close()
    with ServerProcess(data, env={"CANDOR_DEFAULT_JURISDICTION": "US", "CANDOR_INSIGHTS_MIN_PROFILES": "11"}) as srv:
        subprocess.run(
            [*candor_command(), "users", "create", "ana", "--role", "analyst", "--password-stdin"],
            input=b"a long enough password\n",
            env=srv.env,
            check=True,
            capture_output=True,
        )
        yield srv


def test_insights_page_in_the_browser(server: ServerProcess, browser: Any) -> None:  # noqa: F811
    page = browser.new_context(bypass_csp=True).new_page()  # axe-core is injected as a script
    page.goto(server.base_url + "/admin")
    page.fill("#username", "ana")
    page.fill("#password", "a long enough password")
    page.get_by_role("button", name="Sign in").click()
    assert page.url.endswith("/admin")
    for show in ("journeys", "attribution", "experience", "cohorts"):
        page.goto(f"{server.base_url}/admin/insights?show={show}&since=2026-05-01&until=2026-09-21")
        charts = page.locator("svg[role=img]")
        assert charts.count() >= 1 and charts.first.bounding_box()["height"] > 50, show
        assert "cells hidden" in page.inner_text("body")
        violations = axe_violations(page)
        assert violations == [], (show, violations)
        screenshot(page, f"console-insights-{show}")
    page.close()
