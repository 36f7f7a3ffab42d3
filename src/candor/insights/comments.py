"""Survey comments: personal data, sealed at collection, shown only redacted and only for large groups.

A ``Survey Answered`` event's ``comment`` is free text a person wrote, so it is a personal property
(events.py seals it under the subject's key, like an email); the analytics store never holds it, and
erasure shreds and purges it with the rest of the person. ``Comments.sample`` shows some of a group's
comments to staff with ``insights:read``:

- only of profiles that agreed to analytics, in a group (a channel or month of the experience
  insight) of at least ``k`` distinct profiles;
- each comment is decrypted in memory and scanned for personal information by the detector of
  ``candor.detect`` (``redact_text``: emails, phone numbers, cards, IBANs, IP addresses, national
  ids), and only the redacted text is shown; a comment that cannot be scanned is not shown;
- no profile id, time or score travels with a comment, the sample is shuffled, and every display
  is an audit entry (``insights.comments``, with how many were shown).
"""

from __future__ import annotations

import random
from typing import Any

import orjson
from sqlalchemy import select

from candor import audit
from candor.detect import redact_text
from candor.engines import DuckDBEngine
from candor.insights import privacy, views
from candor.insights.reports import SURVEY_EVENT, InsightError, _int, _ms
from candor.store import now_ms
from candor.store.schema import events
from candor.vault import KeyDestroyed, VaultError

MAX_SAMPLE = 50


class Comments:
    def __init__(self, rt: Any) -> None:
        self.rt = rt

    def sample(self, params: Any, *, actor: str, now: int | None = None) -> dict[str, Any]:
        if not isinstance(params, dict):
            raise InsightError("the request body must be a JSON object")
        unknown = sorted(set(params) - {"since", "until", "k", "by", "group", "limit", "event"})
        if unknown:
            raise InsightError(f"unknown parameter {unknown[0]!r}", unknown[0])
        at = now_ms() if now is None else now
        until = _ms(params.get("until", at), "until")
        since = _ms(params.get("since", until - 90 * 86_400_000), "since")
        if since >= until:
            raise InsightError("the period is empty: since must be before until", "since")
        k = privacy.check_k(params.get("k"), self.rt.insights.k_default)
        by = params.get("by", "channel")
        if by not in ("channel", "month"):
            raise InsightError("must be channel or month", "by")
        group = params.get("group")
        if not isinstance(group, str) or not group or len(group) > 40:
            raise InsightError("name the group: a channel (e.g. call_center) or a month (YYYY-MM)", "group")
        limit = _int(params, "limit", 10, 1, MAX_SAMPLE)
        event = params.get("event", SURVEY_EVENT)
        if not isinstance(event, str) or not event:
            raise InsightError("must be an event name", "event")
        key = "channel" if by == "channel" else "strftime(to_timestamp(ts_ms / 1000), '%Y-%m')"
        sql = (
            f"SELECT e.id, p.subject_id FROM ins_events e JOIN ins_profiles p ON p.profile_id = e.profile_id "
            f"JOIN main.events x ON x.id = e.id AND x.subject_id = p.subject_id "
            f"WHERE e.type = 'track' AND e.event = $event AND e.ts_ms >= $since AND e.ts_ms < $until AND {key} = $g"
        )
        con = DuckDBEngine(self.rt.settings).workspace(self.rt.analytics, tables=views.READS)
        try:
            views.install(
                con,
                source_channels=self.rt.insights.channels,
                default_jurisdiction=self.rt.consent.default_jurisdiction,
                now=at,
                analytics_purpose=self.rt.taxonomy.get("analytics"),
            )
            params_sql = {"event": event, "since": since, "until": until, "g": group}
            rows = con.execute(sql, params_sql).fetchall()
            people = con.execute(
                f"SELECT count(DISTINCT profile_id) FROM ins_events WHERE type = 'track' AND event = $event "
                f"AND ts_ms >= $since AND ts_ms < $until AND {key} = $g",
                params_sql,
            ).fetchone()
        finally:
            con.close()
        profiles = int(people[0]) if people else 0
        if profiles < k:
            raise InsightError(f"the group holds fewer than {k} people: its comments are not shown", "group")
        ids = [int(r[0]) for r in rows]
        random.SystemRandom().shuffle(ids)
        shown: list[str] = []
        scanned = unscannable = 0
        with self.rt.store.engine.connect() as conn:
            for i in range(0, len(ids), 200):
                if len(shown) >= limit:
                    break
                chunk = ids[i : i + 200]
                found = conn.execute(select(events.c.subject_id, events.c.sealed).where(events.c.id.in_(chunk))).all()
                keys = self.rt.vault.keys_for(sorted({s for s, _ in found}), conn)
                for sid, blob in found:
                    aead = keys.get(sid)
                    if aead is None:
                        continue
                    try:
                        doc = orjson.loads(self.rt.vault.open_with(aead, blob, sid.encode()))
                    except (KeyDestroyed, VaultError, orjson.JSONDecodeError):
                        continue
                    text = (doc.get("properties") or {}).get("comment") if isinstance(doc, dict) else None
                    if not isinstance(text, str) or not text.strip():
                        continue
                    scanned += 1
                    red = redact_text(text[:2000])
                    if red.unscannable:
                        unscannable += 1
                        continue
                    shown.append(red.text)
                    if len(shown) >= limit:
                        break
        with self.rt.store.write() as conn:
            audit.record(conn, actor, "insights.comments", details={"by": by, "shown": len(shown),
                                                                    "scanned": scanned})  # fmt: skip
        return {"by": by, "group": group, "k": k, "profiles": profiles, "comments": shown,
                "not_shown_unscannable": unscannable}  # fmt: skip
