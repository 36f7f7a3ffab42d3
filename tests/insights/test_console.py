"""The console's insights page: real SVG charts for an analyst, a clear message for a bad request,
nothing for a role without insights:read."""

from __future__ import annotations

import random

import pytest

from candor.config import Settings
from tests.helpers import api
from tests.insights import world as W
from tests.web.test_pages import login

pytestmark = pytest.mark.anyio


async def test_an_analyst_sees_charts_of_every_insight(settings: Settings) -> None:
    async with api(settings) as a:
        w = W.build(a.rt, random.Random(10), people=300, n_events=6000)
        home = await login(a, "analyst")
        assert 'href="/admin/insights"' in home
        period = {"since": "2026-05-01", "until": "2026-09-21"}
        for show in ("journeys", "funnel", "attribution", "experience", "rfm", "cohorts", "clv"):
            r = await a.client.get("/admin/insights", params={"show": show, **period})
            assert r.status_code == 200, (show, r.text[:500])
            assert "<svg" in r.text and 'role="img"' in r.text and "cells hidden" in r.text, show
            assert not any(p in r.text for p in w.profiles)
        r = await a.client.get("/admin/insights", params={"show": "funnel", "steps": "Product Viewed,Nope", **period})
        assert r.status_code == 400 and "unknown event name" in r.text and "<svg" not in r.text
        a.client.cookies.clear()
        await login(a, "support")
        assert (await a.client.get("/admin/insights")).status_code == 403
