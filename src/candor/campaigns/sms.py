"""The SMS channel: messages go to an SMS provider as signed JSON POSTs (a destination of kind
``sms``), and the provider posts what people text back to ``/v1/sms/inbound``.

Marketing texts need ``marketing.sms`` consent (opt-in everywhere) given with *written* proof: the
grant that decides must name the notice the person agreed to (its id, version and the SHA-256 of
its text are in the ledger record). A grant without one (a checkbox we cannot show the wording of,
an import) is skipped as ``skipped:no_written_consent``. Quiet hours apply (CANDOR_QUIET_HOURS_CHANNELS).

Inbound STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT (alone, any case) opt the number out at once:
a ``sms_stop`` record withdrawing ``marketing.sms`` for every person with that number, and the number
on the ``sms`` do-not-contact list (also for numbers we do not know). HELP and INFO get
CANDOR_SMS_HELP_TEXT. Any other text is ignored.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import orjson
from sqlalchemy import and_, select

from candor import normalize
from candor.campaigns.channels import Channel, Compose, Outgoing, register
from candor.campaigns.definition import CampaignError
from candor.campaigns.webhook import DestinationSender, outgoing
from candor.store.schema import consent_records, identifiers, subjects

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
HELP_WORDS = frozenset({"HELP", "INFO"})
STOP_FOOTER = "\nReply STOP to opt out, HELP for help."


class SmsChannel(Channel):
    name = "sms"
    contact = "phone"
    required = ("destination", "sender")
    destination_kind = "sms"

    def check(self, rt: Any, conn: Any, profile: str, definition: Any) -> str | None:
        decision = rt.consent.can_use(profile, definition.purpose, conn=conn)
        if not decision.proof:
            return "skipped:no_written_consent"
        rows = conn.execute(
            select(consent_records.c.notice_sha256, consent_records.c.granted).where(
                consent_records.c.seq.in_(list(decision.proof))
            )
        ).all()
        written = any(sha and definition.purpose in orjson.loads(granted) for sha, granted in rows)
        return None if written else "skipped:no_written_consent"

    def compose(self, rt: Any, c: Compose) -> Outgoing:
        return outgoing(rt, c, c.body.rstrip() + STOP_FOOTER)

    def open(self, rt: Any, definition: Any) -> DestinationSender:
        dest = rt.campaigns.destinations.get(definition.destination)
        return DestinationSender(
            rt.campaigns.destinations.poster(dest),
            lambda m: {
                "type": "sms",
                "id": m.key,
                "to": m.to,
                "from": definition.sender,
                "text": m.text,
                "candorId": m.ref,
            },
        )


register(SmsChannel())


def parse_inbound(body: bytes, content_type: str) -> tuple[str, str]:
    """(from, text) of an inbound message: JSON ``{"from", "text"}``, or a form as Twilio (``From``,
    ``Body``) or Vonage (``msisdn``, ``text``) post it."""
    fields: dict[str, Any]
    if "json" in content_type:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise CampaignError("the body is not JSON") from None
        fields = doc if isinstance(doc, dict) else {}
    else:
        try:
            fields = {k: v[0] for k, v in parse_qs(body.decode("utf-8"), strict_parsing=False).items()}
        except UnicodeDecodeError:
            raise CampaignError("the body is not UTF-8") from None
    sender = next((fields[k] for k in ("from", "From", "msisdn") if isinstance(fields.get(k), str)), None)
    text = next((fields[k] for k in ("text", "Body", "body") if isinstance(fields.get(k), str)), None)
    if not sender or text is None:
        raise CampaignError("an inbound message needs the sender's number (from) and its text")
    return sender, text


def inbound(rt: Any, body: bytes, content_type: str, source: str) -> dict[str, Any]:
    sender, text = parse_inbound(body, content_type)
    phone = normalize.phone(sender, rt.settings.default_phone_region)
    if phone is None:
        raise CampaignError("from: not a phone number")
    word = text.strip().upper()
    if word in HELP_WORDS:
        return {"action": "help", "reply": rt.settings.sms_help_text}
    if word not in STOP_WORDS:
        return {"action": "none", "reply": None}
    pseudonyms = rt.vault.all_pseudonyms("phone", phone)
    rt.vault.contact_hash("phone", phone)  # keys are loaded (or created) before the write transaction
    with rt.store.write() as conn:
        people = list(
            conn.execute(
                select(identifiers.c.subject_id)
                .join(subjects, subjects.c.subject_id == identifiers.c.subject_id)
                .where(
                    and_(
                        identifiers.c.id_type == "phone",
                        identifiers.c.pseudonym.in_(pseudonyms),
                        subjects.c.state != "erased",
                    )
                )
            ).scalars()
        )
        for sid in people:
            rt.consent.record(
                conn, sid, denied=frozenset({"marketing.sms"}), source="sms_stop", actor="subject", id_type="phone"
            )
        rt.suppressions.add(
            "sms", "phone", phone, "unsubscribe", source=f"sms:{source}"[:100], actor="subject", conn=conn
        )
    for sid in people:
        rt.consent.invalidate(sid)
    return {
        "action": "opt_out",
        "reply": "You are unsubscribed and will receive no more marketing texts from us.",
    }
