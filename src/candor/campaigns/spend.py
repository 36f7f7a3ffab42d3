"""Spend and return: conversions attributed to the last touch, revenue, and engagement counts.

A conversion is a track event named CANDOR_CONVERSION_EVENT (``Order Completed``) of a recipient,
within the attribution window after a touch: a message sent to them or a click on one. Each
conversion goes to the person's *last* touch before it (of any campaign) inside that touch's
window; its ``revenue`` (else ``total``) property is the revenue. Linking purchases to messages is
measurement, so only recipients who agree to ``analytics`` count (``can_use``); the report says so.
"""

from __future__ import annotations

import bisect
from typing import Any

import orjson
from sqlalchemy import and_, func, select

from candor.store.schema import campaigns, engagements, events, profile_subjects, sends

DAY_MS = 86_400_000


def _revenue(properties: str) -> float:
    try:
        props = orjson.loads(properties)
    except orjson.JSONDecodeError:
        return 0.0
    if not isinstance(props, dict):
        return 0.0
    for key in ("revenue", "total"):
        v = props.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            return float(v)
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                continue
    return 0.0


def attribute(rt: Any, cid: int, window_days: int) -> dict[str, Any]:
    """Conversions and revenue of campaign ``cid`` by last touch."""
    out: dict[str, Any] = {"conversions": 0, "revenue": 0.0}
    with rt.store.engine.connect() as conn:
        recipients = [
            p
            for (p,) in conn.execute(
                select(sends.c.subject_id).where(and_(sends.c.campaign_id == cid, sends.c.outcome == "sent"))
            )
        ]
        if not recipients:
            return out
        windows: dict[int, int] = {}
        for other, text in conn.execute(select(campaigns.c.id, campaigns.c.definition)):
            days = orjson.loads(text).get("conversion_window_days")
            windows[int(other)] = (days if isinstance(days, int) else rt.settings.conversion_window_days) * DAY_MS
        windows[cid] = window_days * DAY_MS
        for i in range(0, len(recipients), 500):
            chunk = recipients[i : i + 500]
            groups: dict[str, list[str]] = {p: [] for p in chunk}
            for sid, pid in conn.execute(
                select(profile_subjects.c.subject_id, profile_subjects.c.profile_id).where(
                    profile_subjects.c.profile_id.in_(chunk)
                )
            ):
                groups[pid].append(sid)
            for p, ms in groups.items():
                if not ms:
                    ms.append(p)
            rt.consent.preload([m for ms in groups.values() for m in ms], conn)
            measured = [p for p in chunk if rt.consent.can_use(p, "analytics", conn=conn).allowed]
            if not measured:
                continue
            owner = {m: p for p in measured for m in groups[p]}
            touches: dict[str, list[tuple[int, int]]] = {p: [] for p in measured}
            for p, ts, c in conn.execute(
                select(sends.c.subject_id, sends.c.ts_ms, sends.c.campaign_id).where(
                    and_(sends.c.subject_id.in_(measured), sends.c.outcome == "sent")
                )
            ):
                touches[p].append((int(ts), int(c)))
            for p, ts, c in conn.execute(
                select(engagements.c.subject_id, engagements.c.ts_ms, engagements.c.campaign_id).where(
                    and_(engagements.c.subject_id.in_(measured), engagements.c.kind == "click")
                )
            ):
                touches[p].append((int(ts), int(c)))
            for ts_list in touches.values():
                ts_list.sort()
            first = min((t[0][0] for t in touches.values() if t), default=None)
            if first is None:
                continue
            for sid, ts, props in conn.execute(
                select(events.c.subject_id, events.c.ts_ms, events.c.properties).where(
                    and_(
                        events.c.subject_id.in_(list(owner)),
                        events.c.type == "track",
                        events.c.event == rt.settings.conversion_event,
                        events.c.ts_ms >= first,
                    )
                )
            ):
                mine = touches[owner[sid]]
                k = bisect.bisect_right(mine, (int(ts), 2**62)) - 1
                if k < 0:
                    continue
                touch_ts, touch_campaign = mine[k]
                if touch_campaign == cid and int(ts) - touch_ts <= windows.get(touch_campaign, window_days * DAY_MS):
                    out["conversions"] += 1
                    out["revenue"] += _revenue(props)
    return out


def engagement(rt: Any, cid: int) -> dict[str, int]:
    """People who opened and clicked (analytics consent only), bounces and complaints."""
    with rt.store.engine.connect() as conn:
        rows = conn.execute(
            select(engagements.c.kind, func.count(func.distinct(engagements.c.subject_id)))
            .where(engagements.c.campaign_id == cid)
            .group_by(engagements.c.kind)
        ).all()
    found = {k: int(n) for k, n in rows}
    return {k: found.get(k.rstrip("s"), 0) for k in ("opens", "clicks", "bounces", "complaints")}
