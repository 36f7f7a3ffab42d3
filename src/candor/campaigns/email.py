"""The email channel: SMTP through ``CANDOR_SMTP_URL``, RFC 8058 one-click unsubscribe, a footer
with the sender's postal address, and open/click tracking for recipients with analytics consent."""

from __future__ import annotations

import time
from typing import Any

from candor.campaigns import tracking
from candor.campaigns.channels import Channel, Compose, DeliveryError, DeliveryUnconfirmed, Outgoing, register
from candor.campaigns.definition import CampaignError
from candor.rights.mailer import MailError, MailUnconfirmed

RETRIES = 3


class EmailSender:
    def __init__(self, session: Any) -> None:
        self.session = session
        self.attempts = 0

    def deliver(self, m: Outgoing) -> str:
        last: Exception | None = None
        for attempt in range(1, RETRIES + 1):
            self.attempts = attempt
            try:
                return str(self.session.send(m.to or "", m.subject, m.text, headers=m.headers, html=m.html))
            except MailUnconfirmed as exc:
                raise DeliveryUnconfirmed(str(exc)) from None  # retrying could deliver it twice
            except MailError as exc:
                last = exc
                time.sleep(0.2 * attempt)
        raise DeliveryError(str(last))

    def close(self) -> None:
        self.session.close()


class EmailChannel(Channel):
    name = "email"
    contact = "email"
    required = ("subject", "sender", "postal_address")

    def compose(self, rt: Any, c: Compose) -> Outgoing:
        d = c.definition
        url = c.unsubscribe_url
        sender_domain = d.sender.rpartition("@")[2].rstrip(">") or "candor.invalid"
        footer = (
            f"\n\n--\n{d.postal_address}\nYou receive this because you agreed to {d.purpose}. "
            f"Unsubscribe in one click: {url}\n"
        )
        text = c.body + footer
        html = None  # untracked recipients get plain text: no HTML part, so no image to load
        if c.tracked:
            text = tracking.rewrite(rt, c.campaign_id, c.profile, text, keep={url})
            html = tracking.html_part(text, tracking.pixel_url(rt, c.campaign_id, c.profile))
        headers = {
            "From": d.sender,
            "List-Unsubscribe": f"<mailto:unsubscribe@{sender_domain}?subject=unsubscribe-{c.campaign_id}>, <{url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
        return Outgoing(
            campaign_id=c.campaign_id,
            campaign=d.name,
            purpose=d.purpose,
            profile=c.profile,
            to=c.address,
            subject=c.subject,
            text=text,
            html=html,
            headers=headers,
            variant="personalised" if c.personal else "generic",
            key=f"{c.campaign_id}:{c.profile}",
            unsubscribe_url=url,
        )

    def open(self, rt: Any, definition: Any) -> EmailSender:
        if not rt.mailer.configured:
            raise CampaignError("no mail server is configured (CANDOR_SMTP_URL)", 503)
        return EmailSender(rt.mailer.session())

    def connections(self, rt: Any) -> int:
        # one SMTP connection waits for the server at every step of every message (MAIL, RCPT, DATA):
        # several in parallel keep the sender busy (CANDOR_SMTP_CONNECTIONS)
        return int(rt.settings.smtp_connections)


register(EmailChannel())
