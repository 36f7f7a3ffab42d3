"""The loyalty programme in the preference center: the notice before joining, joining with the box
ticked, the value statement, offers and leaving, all behind the session and its CSRF token."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from candor.config import Settings
from tests.helpers import api
from tests.web.test_pages import csrf, open_center, person

pytestmark = pytest.mark.anyio


async def test_join_statement_offer_and_leave(make_settings: Callable[..., Settings]) -> None:
    async with api(make_settings(default_jurisdiction="EU")) as a:
        await person(a)
        html = await open_center(a)
        assert "/preferences/loyalty" in html
        assert 'value="loyalty"' not in html  # joining is not a box of the purposes form
        lo = a.rt.loyalty
        now = datetime.now(UTC)
        lo.create_offer(
            "genres",
            title="Your favourite genres",
            ask="Which genres do you like?",
            fields=["favouriteGenres"],
            category="behavioural",
            purposes=["personalization"],
            points=200,
            starts_ms=int((now - timedelta(days=1)).timestamp() * 1000),
            ends_ms=int((now + timedelta(days=9)).timestamp() * 1000),
        )
        page = (await a.client.get("/preferences/loyalty")).text
        assert "Notice of financial incentive" in page and "good faith" in page
        token = csrf(page)
        # without the box ticked, or without the CSRF token: nothing happens
        r = await a.client.post("/preferences/loyalty/join", data={"csrf": token, "notice_version": "1"})
        assert r.status_code == 400
        r = await a.client.post("/preferences/loyalty/join", data={"agree": "yes", "notice_version": "1"})
        assert r.status_code == 403
        sid = a.rt.consent.subject_for("user_id", "pc-1") or ""
        assert lo.status(sid)["state"] == "not_joined"
        r = await a.client.post(
            "/preferences/loyalty/join", data={"csrf": token, "agree": "yes", "notice_version": "1"}
        )
        assert r.status_code == 303
        page = (await a.client.get("/preferences/loyalty?saved=joined")).text
        assert "Welcome to the programme." in page and "Your favourite genres: +200 points" in page
        r = await a.client.post(
            "/preferences/loyalty/offers/genres", data={"csrf": token, "f-favouriteGenres": "jazz, folk"}
        )
        assert r.status_code == 303
        assert lo.status(sid)["balance"] == 200 and a.rt.consent.can_use(sid, "personalization").allowed
        again = await a.client.post(
            "/preferences/loyalty/offers/genres", data={"csrf": token, "f-favouriteGenres": "rock"}
        )
        assert again.status_code == 409
        page = (await a.client.get("/preferences/loyalty")).text
        assert "<strong>200</strong> points" in page and "Offers accepted" in page
        main = (await a.client.get("/preferences")).text
        assert "You have <strong>200</strong> points" in main
        r = await a.client.post("/preferences/loyalty/leave", data={"csrf": token})
        assert r.status_code == 303
        page = (await a.client.get("/preferences/loyalty?saved=left")).text
        assert "Your points stay yours" in page and "still have <strong>200</strong> points" in page
        assert lo.status(sid)["balance"] == 200


async def test_without_a_session(settings: Settings) -> None:
    async with api(settings) as a:
        assert (await a.client.get("/preferences/loyalty")).status_code == 401
        assert (await a.client.post("/preferences/loyalty/join", data={})).status_code == 401
