"""Bounces and complaints from the mail provider, posted to ``/v1/email/feedback``.

Formats read:

- **Amazon SES through SNS**: the SNS envelope (``{"Type": "Notification", "Message": "<JSON>"}``)
  around an SES notification: ``notificationType`` ``Bounce`` (``bounce.bounceType`` ``Permanent`` or
  ``Transient``, ``bounce.bouncedRecipients[].emailAddress``) or ``Complaint``
  (``complaint.complainedRecipients[].emailAddress``), with ``mail.commonHeaders.messageId``. A
  ``SubscriptionConfirmation`` is acknowledged without following its link (confirm it in AWS).
- **SendGrid-style event lists**: ``[{"event": "bounce"|"dropped"|"spamreport", "email", "type"}]``.
- **Generic JSON**: ``{"type": "bounce"|"complaint", "email", "permanent": true, "messageId"?}``, or a
  list of those, or ``{"events": [...]}``.

A permanent bounce puts the address on the ``email`` do-not-contact list (``bounce``); a transient one
is only counted. A complaint ("this is spam") suppresses the address (``complaint``) and withdraws
``marketing.email`` in the consent ledger (``email_feedback``). Each is counted on the campaign of
the message (by its Message-ID, else the person's latest email).
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import and_, desc, select

from candor import normalize
from candor.campaigns.definition import CampaignError
from candor.store import now_ms
from candor.store.schema import engagements, sends, subjects

Event = tuple[str, str, bool, str | None]  # kind (bounce | complaint), email, permanent, message id


def parse(body: bytes) -> tuple[list[Event], bool]:
    """The events in a feedback body, and whether it was an SNS subscription confirmation."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise CampaignError("the body is not JSON") from None
    if isinstance(doc, dict) and doc.get("Type") == "SubscriptionConfirmation":
        return [], True
    if isinstance(doc, dict) and doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):
        try:
            doc = orjson.loads(doc["Message"])
        except orjson.JSONDecodeError:
            raise CampaignError("Message: the SNS notification does not hold JSON") from None
    if isinstance(doc, dict) and isinstance(doc.get("events"), list):
        doc = doc["events"]
    items = doc if isinstance(doc, list) else [doc]
    out: list[Event] = []
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise CampaignError(f"[{n}]: an event is a JSON object")
        out.extend(_one(item, n))
    return out, False


def _dict(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _addresses(recipients: Any) -> list[str]:
    items = recipients if isinstance(recipients, list) else []
    return [str(r["emailAddress"]) for r in items if isinstance(r, dict) and isinstance(r.get("emailAddress"), str)]


def _one(item: dict[str, Any], n: int) -> list[Event]:
    if "notificationType" in item:  # SES
        kind = str(item["notificationType"]).lower()
        mid = _dict(_dict(item.get("mail")).get("commonHeaders")).get("messageId")
        mid = mid if isinstance(mid, str) else None
        if kind == "bounce":
            b = _dict(item.get("bounce"))
            permanent = b.get("bounceType") == "Permanent"
            return [("bounce", a, permanent, mid) for a in _addresses(b.get("bouncedRecipients"))]
        if kind == "complaint":
            c = _dict(item.get("complaint"))
            return [("complaint", a, True, mid) for a in _addresses(c.get("complainedRecipients"))]
        return []  # deliveries and other notifications
    if "event" in item:  # SendGrid-style
        event = str(item["event"]).lower()
        email = item.get("email")
        if not isinstance(email, str):
            return []
        mid = item.get("smtp-id") if isinstance(item.get("smtp-id"), str) else None
        if event in ("bounce", "dropped"):
            return [("bounce", email, item.get("type") != "blocked", mid)]
        if event == "spamreport":
            return [("complaint", email, True, mid)]
        return []
    kind = str(item.get("type"))
    if kind not in ("bounce", "complaint"):
        raise CampaignError(f"[{n}].type: bounce or complaint")
    if not isinstance(item.get("email"), str):
        raise CampaignError(f"[{n}].email: required")
    mid = item.get("messageId") if isinstance(item.get("messageId"), str) else None
    return [(kind, item["email"], bool(item.get("permanent", kind == "complaint")), mid)]


def apply(rt: Any, body: bytes, source: str) -> dict[str, Any]:
    events, confirmation = parse(body)
    if confirmation:
        return {"subscription": "received; confirm it in the AWS console (Candor does not follow the link)"}
    counts = {"bounces": 0, "complaints": 0, "suppressed": 0, "ignored": 0}
    known: dict[str, str | None] = {}
    for _, raw_email, _, _ in events:  # look-ups (and key loading) before the write transaction
        email = normalize.email(raw_email)
        if email is not None and email not in known:
            rt.vault.contact_hash("email", email)
            known[email] = rt.consent.subject_for("email", email)
    with rt.store.write() as conn:
        for kind, raw_email, permanent, mid in events:
            email = normalize.email(raw_email)
            if email is None:
                counts["ignored"] += 1
                continue
            counts["bounces" if kind == "bounce" else "complaints"] += 1
            sid = known[email]
            profile = rt.identity.profile_of(sid, conn) if sid else None
            if (kind == "complaint" or permanent) and rt.suppressions.add(
                "email", "email", email, kind, source=f"feedback:{source}"[:100], actor="mail-provider", conn=conn
            ):
                counts["suppressed"] += 1
            if kind == "complaint" and sid is not None:
                state = conn.execute(select(subjects.c.state).where(subjects.c.subject_id == sid)).scalar()
                if state not in (None, "erased"):
                    rt.consent.record(
                        conn,
                        sid,
                        denied=frozenset({"marketing.email"}),
                        source="email_feedback",
                        actor="mail-provider",
                        id_type="email",
                    )
            if profile is not None:
                q = select(sends.c.campaign_id).where(
                    and_(sends.c.subject_id == profile, sends.c.channel == "email", sends.c.outcome == "sent")
                )
                if mid:
                    q = q.where(sends.c.message_id == (mid if mid.startswith("<") else f"<{mid}>"))
                cid = conn.execute(q.order_by(desc(sends.c.ts_ms)).limit(1)).scalar()
                if cid is not None:
                    conn.execute(
                        engagements.insert(),
                        {
                            "campaign_id": cid,
                            "subject_id": profile,
                            "kind": kind,
                            "ts_ms": now_ms(),
                            "detail": "permanent" if permanent else "transient",
                        },
                    )
    return counts
