"""The do-not-harass rules decided at send time: frequency caps and quiet hours (recipient's local time)."""

from __future__ import annotations

import datetime as dt
import zoneinfo

from candor.campaigns.definition import CampaignError


def parse_cap(text: str) -> tuple[int, int]:
    """``3/7d`` -> (3 messages, 7 days in ms)."""
    try:
        n, _, window = text.partition("/")
        if not window.endswith("d"):
            raise ValueError
        return int(n), int(window[:-1]) * 86_400_000
    except ValueError:
        raise CampaignError(f"a frequency cap looks like '3/7d', not {text!r}") from None


def parse_quiet(text: str) -> tuple[dt.time, dt.time] | None:
    if not text:
        return None
    try:
        a, b = text.split("-")
        return dt.time.fromisoformat(a.strip()), dt.time.fromisoformat(b.strip())
    except ValueError:
        raise CampaignError(f"quiet hours look like '21:00-08:00', not {text!r}") from None


def in_quiet_hours(local: dt.time, quiet: tuple[dt.time, dt.time]) -> bool:
    start, end = quiet
    if start <= end:
        return start <= local < end
    return local >= start or local < end


def local_time(now_ms: int, tz: str | None) -> dt.time:
    """The wall-clock time at ``now_ms`` in time zone ``tz`` (UTC when unknown or invalid)."""
    try:
        zone: dt.tzinfo = zoneinfo.ZoneInfo(tz or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zone = dt.UTC
    return dt.datetime.fromtimestamp(now_ms / 1000, tz=zone).time()
