"""The webhook channel: each message is a signed JSON POST to a destination (a CRM, a push service,
a partner's system), with retries and a dead-letter queue (campaigns/destinations.py).

The body: ``{"type": "campaign.message", "id", "campaign", "purpose", "candorId", "to", "subject",
"text", "variant", "unsubscribeUrl"}``. ``to`` is the contact the destination was set up to receive
(``email``, ``phone``, or none); ``candorId`` is the destination's own pseudonymous id of the person.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from candor.campaigns.channels import Channel, Compose, Outgoing, register


class DestinationSender:
    def __init__(self, poster: Any, payload: Callable[[Outgoing], dict[str, Any]]) -> None:
        self.poster = poster
        self.payload = payload
        self.attempts = 0

    def deliver(self, m: Outgoing) -> str:
        try:
            self.poster.post(self.payload(m), m.key)
        finally:
            self.attempts = self.poster.attempts
        return m.key

    def close(self) -> None:
        self.poster.close()


def outgoing(rt: Any, c: Compose, text: str) -> Outgoing:
    d = c.definition
    dest = rt.campaigns.destinations.get(d.destination)
    return Outgoing(
        campaign_id=c.campaign_id,
        campaign=d.name,
        purpose=d.purpose,
        profile=c.profile,
        to=c.address,
        subject=c.subject,
        text=text,
        variant="personalised" if c.personal else "generic",
        key=f"{c.campaign_id}:{c.profile}",
        ref=rt.campaigns.destinations.ref(dest.id, c.profile),
        unsubscribe_url=c.unsubscribe_url,
    )


class WebhookChannel(Channel):
    name = "webhook"
    required = ("destination",)
    destination_kind = "webhook"

    def contact_for(self, rt: Any, definition: Any) -> str | None:
        contact = rt.campaigns.destinations.get(definition.destination).contact
        return None if contact == "none" else str(contact)

    def suppression_channel(self, rt: Any, definition: Any) -> str:
        return rt.taxonomy.get(definition.purpose).channel or "all"

    def compose(self, rt: Any, c: Compose) -> Outgoing:
        return outgoing(rt, c, c.body)

    def open(self, rt: Any, definition: Any) -> DestinationSender:
        dest = rt.campaigns.destinations.get(definition.destination)
        return DestinationSender(
            rt.campaigns.destinations.poster(dest),
            lambda m: {
                "type": "campaign.message",
                "id": m.key,
                "campaign": m.campaign,
                "purpose": m.purpose,
                "candorId": m.ref,
                "to": m.to,
                "subject": m.subject,
                "text": m.text,
                "variant": m.variant,
                "unsubscribeUrl": m.unsubscribe_url,
            },
        )


register(WebhookChannel())
