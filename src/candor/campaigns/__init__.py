"""Campaigns and channels: who receives what is decided at the moment of sending.

``core`` (Campaigns: create, preview, send, report, unsubscribe), ``definition`` (what a campaign
is), ``templates`` (the one place messages are rendered), ``caps`` (frequency caps and quiet hours),
``api`` and ``cli`` (the routes and commands).
"""

from __future__ import annotations

from candor.campaigns.caps import in_quiet_hours, parse_cap, parse_quiet
from candor.campaigns.core import Campaigns
from candor.campaigns.definition import CampaignError, Definition

__all__ = ["CampaignError", "Campaigns", "Definition", "in_quiet_hours", "parse_cap", "parse_quiet"]
