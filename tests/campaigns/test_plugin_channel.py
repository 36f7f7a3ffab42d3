"""A channel from outside Candor joins through the same ``register`` as email, SMS and webhook, and
gets every check for free: consent, address, do-not-contact, caps, the send log, resume."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from candor.campaigns import channels
from candor.campaigns.channels import Channel, Compose, DeliveryError, Outgoing
from candor.config import Settings
from tests.helpers import api

pytestmark = pytest.mark.anyio


class Pager(Channel):
    """Pages people by email address (a stand-in for any third-party service)."""

    name = "pager"
    contact = "email"
    def __init__(self) -> None:
        self.sent: list[Outgoing] = []
        self.broken = False

    def suppression_channel(self, rt: Any, definition: Any) -> str:
        return "push"

    def compose(self, rt: Any, c: Compose) -> Outgoing:
        return Outgoing(
            c.campaign_id,
            c.definition.name,
            c.definition.purpose,
            c.profile,
            c.address,
            c.subject,
            c.body,
            "personalised" if c.personal else "generic",
            f"{c.campaign_id}:{c.profile}",
        )

    def open(self, rt: Any, definition: Any) -> Any:
        channel = self

        class Sender:
            attempts = 1

            def deliver(self, m: Outgoing) -> str:
                if channel.broken:
                    raise DeliveryError("pager down")
                channel.sent.append(m)
                return m.key

            def close(self) -> None:
                return None

        return Sender()


async def test_a_registered_channel_gets_every_check(make_settings: Callable[..., Settings]) -> None:
    pager = Pager()
    channels.register(pager)
    try:
        async with api(make_settings(default_jurisdiction="US", quiet_hours="")) as a:
            for uid in ("p1", "p2", "p3"):
                await a.post("/v1/identify", {"userId": uid, "traits": {"email": f"{uid}@example.org"}})
                await a.post("/v1/consent", {"userId": uid, "granted": ["marketing.push"], "source": "api"})
            a.rt.suppressions.add("push", "email", "p3@example.org", "unsubscribe")
            a.rt.segments.create("all", {"name": "all", "conditions": [{"last_seen": {"within_days": 30}}]}, "t")
            base = {
                "segment": "all",
                "channel": "pager",
                "purpose": "marketing.push",
                "template": "Hi",
                "generic_template": "Hello",
            }
            a.rt.campaigns.create({**base, "name": "page"}, actor="test")
            pager.broken = True
            assert a.rt.campaigns.send("page", actor="test")["outcomes"] == {"failed": 2, "skipped:suppressed": 1}
            pager.broken = False
            out = a.rt.campaigns.send("page", actor="test")["outcomes"]
            assert out == {"sent": 2, "skipped:suppressed": 1}
            assert sorted(m.to or "" for m in pager.sent) == ["p1@example.org", "p2@example.org"]
            assert a.rt.campaigns.send("page", actor="test")["outcomes"]["already_sent"] == 2
    finally:
        channels.REGISTRY.pop("pager", None)
