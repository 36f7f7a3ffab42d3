"""A campaign definition: what to send, to which segment, on which channel, for which purpose."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from candor.campaigns import templates

TEXT_FIELDS = ("subject", "sender", "postal_address", "destination")


class CampaignError(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Definition:
    name: str
    segment: str
    channel: str
    purpose: str
    template: str
    generic_template: str
    subject: str = ""
    sender: str = ""
    postal_address: str = ""
    destination: str = ""
    cost_per_message: float | None = None  # None: the channel's cost (CANDOR_CHANNEL_COSTS)
    budget: float | None = None
    conversion_window_days: int | None = None

    @classmethod
    def parse(cls, raw: dict[str, Any], purposes: set[str]) -> Definition:
        from candor.campaigns import channels

        if not isinstance(raw, dict):
            raise CampaignError("a campaign is a JSON object")
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise CampaignError(f"unknown field(s): {', '.join(sorted(unknown))}")
        channel_name = raw.get("channel", "email")
        if not isinstance(channel_name, str):
            raise CampaignError(f"channel: one of {', '.join(channels.names())}")
        channel = channels.get(channel_name)
        for key in ("name", "segment", "template", "generic_template", *channel.required):
            v = raw.get(key)
            if not isinstance(v, str) or not v.strip() or len(v) > (20_000 if "template" in key else 500):
                raise CampaignError(f"{key}: required text (templates up to 20,000 characters, others 500)")
        for key in TEXT_FIELDS:
            v = raw.get(key)
            if v is not None and (not isinstance(v, str) or len(v) > 500):
                raise CampaignError(f"{key}: text up to 500 characters")
        purpose = raw.get("purpose") or (f"marketing.{channel_name}" if f"marketing.{channel_name}" in purposes else "")
        if not purpose:
            raise CampaignError(f"purpose: name the purpose a {channel_name} campaign serves (e.g. marketing.push)")
        if purpose not in purposes:
            raise CampaignError(f"purpose: unknown purpose {purpose!r}")
        for key in ("cost_per_message", "budget"):
            v = raw.get(key)
            if v is not None and (not isinstance(v, int | float) or isinstance(v, bool) or v < 0):
                raise CampaignError(f"{key}: a number ≥ 0")
        window = raw.get("conversion_window_days")
        if window is not None and (not isinstance(window, int) or isinstance(window, bool) or not 1 <= window <= 365):
            raise CampaignError("conversion_window_days: a whole number of days from 1 to 365")
        return cls(
            name=raw["name"].strip(),
            segment=raw["segment"],
            channel=channel_name,
            purpose=purpose,
            template=raw["template"],
            generic_template=raw["generic_template"],
            subject=raw.get("subject") or "",
            sender=raw.get("sender") or "",
            postal_address=raw.get("postal_address") or "",
            destination=raw.get("destination") or "",
            cost_per_message=float(raw["cost_per_message"]) if raw.get("cost_per_message") is not None else None,
            budget=float(raw["budget"]) if raw.get("budget") is not None else None,
            conversion_window_days=window,
        )

    def check_templates(self) -> None:
        """Render every template against sample profiles; any error refuses the campaign."""
        try:
            templates.check("subject", self.subject, False)
            templates.check("template", self.template, True)
            templates.check("generic_template", self.generic_template, False)
        except ValueError as exc:
            raise CampaignError(str(exc)) from None
