"""A campaign definition: what to send, to which segment, on which channel, for which purpose."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from candor.campaigns import templates

CHANNELS = ("email",)


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
    subject: str
    template: str
    generic_template: str
    sender: str
    postal_address: str
    cost_per_message: float = 0.0
    budget: float | None = None

    @classmethod
    def parse(cls, raw: dict[str, Any], purposes: set[str]) -> Definition:
        if not isinstance(raw, dict):
            raise CampaignError("a campaign is a JSON object")
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise CampaignError(f"unknown field(s): {', '.join(sorted(unknown))}")
        for key in ("name", "segment", "subject", "template", "generic_template", "sender", "postal_address"):
            v = raw.get(key)
            if not isinstance(v, str) or not v.strip() or len(v) > (20_000 if "template" in key else 500):
                raise CampaignError(f"{key}: required text (templates up to 20,000 characters, others 500)")
        channel = raw.get("channel", "email")
        if channel not in CHANNELS:
            raise CampaignError(f"channel: one of {', '.join(CHANNELS)}")
        purpose = raw.get("purpose", f"marketing.{channel}")
        if purpose not in purposes:
            raise CampaignError(f"purpose: unknown purpose {purpose!r}")
        for key in ("cost_per_message", "budget"):
            v = raw.get(key)
            if v is not None and (not isinstance(v, int | float) or isinstance(v, bool) or v < 0):
                raise CampaignError(f"{key}: a number ≥ 0")
        return cls(
            name=raw["name"].strip(),
            segment=raw["segment"],
            channel=channel,
            purpose=purpose,
            subject=raw["subject"],
            template=raw["template"],
            generic_template=raw["generic_template"],
            sender=raw["sender"],
            postal_address=raw["postal_address"],
            cost_per_message=float(raw.get("cost_per_message") or 0.0),
            budget=float(raw["budget"]) if raw.get("budget") is not None else None,
        )

    def check_templates(self) -> None:
        """Render every template against sample profiles; any error refuses the campaign."""
        try:
            templates.check("subject", self.subject, False)
            templates.check("template", self.template, True)
            templates.check("generic_template", self.generic_template, False)
        except ValueError as exc:
            raise CampaignError(str(exc)) from None
