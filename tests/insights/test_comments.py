"""Survey comments are personal data: sealed at collection, never in the analytics store, shown only
redacted by the personal-data detector and only for a large group."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from candor import audit
from candor.config import Settings
from candor.store.schema import events
from tests.helpers import api, bearer
from tests.test_lake import everything_in

pytestmark = pytest.mark.anyio
CANARY = "quill.vexbourne@example.org"


async def test_comments_are_sealed_and_shown_only_redacted(settings: Settings) -> None:
    async with api(settings) as a:
        for i in range(14):
            r = await a.post(
                "/v1/track",
                {"userId": f"sv-{i}", "event": "Survey Answered", "context": {"channel": "call_center"},
                 "properties": {"survey_type": "nps", "score": 9, "comment": f"great help, mail me at {CANARY} #{i}"}},
            )  # fmt: skip
            assert r.status_code == 200
        with a.rt.store.engine.connect() as conn:
            props = [p for (p,) in conn.execute(select(events.c.properties))]
        assert props and all(CANARY not in p and "comment" not in p for p in props)  # sealed, not clear
        lake = a.rt.analytics.lake
        assert lake is not None
        lake.refresh()
        assert CANARY not in everything_in(lake.all_files())
        analyst = bearer(a.rt.directory.create_token("analyst", "analyst"))
        ask = {"by": "channel", "group": "call_center", "k": 11}
        r = await a.client.post("/v1/insights/experience/comments", json=ask, headers=analyst)
        assert r.status_code == 200, r.text
        shown = r.json()["comments"]
        assert shown and all(CANARY not in c and "great help" in c and "<EMAIL_ADDRESS>" in c for c in shown)
        assert any(e["action"] == "insights.comments" for e in audit.entries(a.rt.store, limit=1000))
        # a group smaller than k is never shown
        r = await a.client.post("/v1/insights/experience/comments", json={**ask, "k": 50}, headers=analyst)
        assert r.status_code == 400 and CANARY not in r.text
