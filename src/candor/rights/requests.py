"""Data-subject requests: received → awaiting verification → verified → in progress → completed.

A request names one identifier (email, phone or userId). What the requester gives us (the
identifier, where to write back, corrections) is sealed under a key of the request's own, shredded
when the request is closed. Requests about people we do not know go through exactly the same steps,
words and timing as real ones and end as "completed": nobody learns from the answers whether
someone is a customer. Every step is in the audit log.

Deadlines: GDPR (EU, UK) one month, extendable by two with notice; CCPA (US-CA) acknowledge within
10 business days and answer within 45 days, extendable by 45; other US states 45 days; elsewhere
one month.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import and_, select, update

from candor import audit, normalize
from candor.rights.mailer import Mailer, MailError
from candor.store import Store, now_ms
from candor.store.schema import privacy_requests, verification_codes
from candor.vault import KeyDestroyed, Vault, VaultError

log = logging.getLogger("candor.rights")

TYPES = {
    "access": "a copy of the data we hold about you, with where it came from and how it is used",
    "portability": "your data in machine-readable form (JSON and CSV) to take elsewhere",
    "erasure": "deletion of your data (the right to be forgotten)",
    "rectification": "correction of data about you",
    "restriction": "we keep your data but stop using it until the restriction is lifted",
    "objection_marketing": "no more direct marketing",
    "objection_profiling": "no profiling or personalisation",
    "opt_out_sale": "do not sell or share my personal information",
    "limit_sensitive": "limit the use of my sensitive personal information",
}
ID_TYPES = ("email", "phone", "user_id")
OPEN_STATES = ("received", "awaiting_verification", "verified", "in_progress")
FINAL_STATES = ("completed", "denied", "completed_with_exceptions")
CODE_TTL_MS = 10 * 60 * 1000
MAX_ATTEMPTS = 5
DAY_MS = 86_400_000
# One sentence for every request, known person or not.
ACCEPTED = (
    "We received your request. If it can be verified, we will answer at the contact address you gave "
    "within the legal time limit."
)


class RightsError(Exception):
    """A request Candor cannot take or act on; the message says why and what to do."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def add_months(ms: int, months: int) -> int:
    d = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    month = d.month - 1 + months
    year, month = d.year + month // 12, month % 12 + 1
    day = min(d.day, calendar.monthrange(year, month)[1])
    return int(d.replace(year=year, month=month, day=day).timestamp() * 1000)


def add_business_days(ms: int, days: int) -> int:
    d = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    while days > 0:
        d += dt.timedelta(days=1)
        if d.weekday() < 5:
            days -= 1
    return int(d.timestamp() * 1000)


def deadlines(jurisdiction: str, received_ms: int) -> tuple[int | None, int]:
    """(acknowledge by, answer by) for a request received at ``received_ms``."""
    if jurisdiction == "US-CA":
        return add_business_days(received_ms, 10), received_ms + 45 * DAY_MS
    if jurisdiction == "US":
        return None, received_ms + 45 * DAY_MS
    return None, add_months(received_ms, 1)


def extended(jurisdiction: str, due_ms: int) -> int:
    if jurisdiction in ("US-CA", "US"):
        return due_ms + 45 * DAY_MS
    return add_months(due_ms, 2)


@dataclass
class Request:
    id: str
    type: str
    state: str
    jurisdiction: str
    id_type: str
    received_ms: int
    due_ms: int
    ack_due_ms: int | None
    extended_ms: int | None
    verified_ms: int | None
    verification: str | None
    completed_ms: int | None
    denial_reason: str | None
    outcome: dict[str, Any]
    notes: list[dict[str, Any]]
    channel: str

    @classmethod
    def of(cls, r: Any) -> Request:
        return cls(
            id=r["id"],
            type=r["type"],
            state=r["state"],
            jurisdiction=r["jurisdiction"],
            id_type=r["id_type"],
            received_ms=r["received_ms"],
            due_ms=r["due_ms"],
            ack_due_ms=r["ack_due_ms"],
            extended_ms=r["extended_ms"],
            verified_ms=r["verified_ms"],
            verification=r["verification"],
            completed_ms=r["completed_ms"],
            denial_reason=r["denial_reason"],
            outcome=orjson.loads(r["outcome"] or "{}"),
            notes=orjson.loads(r["notes"] or "[]"),
            channel=r["channel"],
        )

    def public(self) -> dict[str, Any]:
        """What the holder of the request id may see: no data, no hint whether we know the person."""
        return {
            "id": self.id,
            "type": self.type,
            "state": self.state,
            "jurisdiction": self.jurisdiction,
            "received_ms": self.received_ms,
            "due_ms": self.extended_ms or self.due_ms,
            "completed_ms": self.completed_ms,
        }

    def staff(self, now: int) -> dict[str, Any]:
        due = self.extended_ms or self.due_ms
        return {
            **self.public(),
            "id_type": self.id_type,
            "ack_due_ms": self.ack_due_ms,
            "extended": self.extended_ms is not None,
            "verified_ms": self.verified_ms,
            "verification": self.verification,
            "denial_reason": self.denial_reason,
            "outcome": self.outcome,
            "notes": self.notes,
            "channel": self.channel,
            "overdue": self.state in OPEN_STATES and due < now,
            "due_soon": self.state in OPEN_STATES and now <= due < now + 7 * DAY_MS,
        }


class Requests:
    """The request lifecycle. ``processor`` carries out a verified request (rights/processing.py)."""

    def __init__(self, store: Store, vault: Vault, mailer: Mailer, settings: Any) -> None:
        self.store = store
        self.vault = vault
        self.mailer = mailer
        self.settings = settings
        self.default_jurisdiction = settings.default_jurisdiction
        self.region = settings.default_phone_region
        self.processor: Any = None

    # -- helpers -------------------------------------------------------------------------------
    def _norm(self, id_type: str, value: object) -> str:
        if id_type not in ID_TYPES:
            raise RightsError(f"identify yourself by one of {', '.join(ID_TYPES)}")
        norm = {"email": normalize.email, "phone": lambda v: normalize.phone(v, self.region)}.get(
            id_type, normalize.text_id
        )(value)
        if norm is None:
            raise RightsError(f"that is not a valid {id_type}", code="invalid_identifier")
        return norm

    def _code_hash(self, request_id: str, code: str) -> str:
        return self.vault.pseudonym("verification_code", f"{request_id}:{code}")

    def get(self, request_id: str, conn: Any = None) -> Request:
        def q(c: Any) -> Any:
            return c.execute(select(privacy_requests).where(privacy_requests.c.id == request_id)).mappings().first()

        if conn is not None:
            row = q(conn)
        else:
            with self.store.engine.connect() as c:
                row = q(c)
        if row is None:
            raise RightsError("no such request", 404, "not_found")
        return Request.of(row)

    def private(self, request_id: str, conn: Any = None) -> dict[str, Any]:
        """The sealed part of a request (identifier, contact, corrections), or {} once shredded."""

        def q(c: Any) -> Any:
            return c.execute(select(privacy_requests.c.sealed).where(privacy_requests.c.id == request_id)).scalar()

        if conn is not None:
            sealed = q(conn)
        else:
            with self.store.engine.connect() as c:
                sealed = q(c)
        if not sealed:
            return {}
        try:
            return dict(orjson.loads(self.vault.open(_key_id(request_id), sealed, conn)))
        except (KeyDestroyed, VaultError):
            return {}

    # -- creating ------------------------------------------------------------------------------
    def check(
        self,
        type_: str,
        id_type: str,
        value: object,
        jurisdiction: str | None = None,
        contact: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> tuple[str, str, str | None]:
        """Validate a new request: (normalised identifier, jurisdiction, address to write to)."""
        if type_ not in TYPES:
            raise RightsError(f"type must be one of {', '.join(TYPES)}")
        norm = self._norm(id_type, value)
        jur = jurisdiction or self.default_jurisdiction
        if jur not in ("EU", "UK", "US-CA", "US", "OTHER"):
            raise RightsError("jurisdiction must be one of EU, UK, US-CA, US, OTHER", code="unsupported_jurisdiction")
        mail_to = norm if id_type == "email" else (normalize.email(contact) if contact else None)
        if contact and mail_to is None:
            raise RightsError("contact must be an email address", code="invalid_identifier")
        if type_ == "rectification" and not (details or {}).get("traits"):
            raise RightsError('a rectification needs details.traits, e.g. {"traits": {"lastName": "Smith"}}')
        return norm, jur, mail_to

    def create(
        self,
        type_: str,
        id_type: str,
        value: object,
        *,
        jurisdiction: str | None = None,
        contact: str | None = None,
        details: dict[str, Any] | None = None,
        channel: str = "api",
        actor: str = "subject",
        send_code: bool = True,
    ) -> tuple[Request, bool]:
        """A new request (or the open one of the same type for the same identifier); and whether it is new."""
        norm, jur, mail_to = self.check(type_, id_type, value, jurisdiction, contact, details)
        pseudonym = self.vault.pseudonym(id_type, norm)
        received = now_ms()
        with self.store.write() as conn:
            existing = (
                conn.execute(
                    select(privacy_requests).where(
                        and_(
                            privacy_requests.c.pseudonym == pseudonym,
                            privacy_requests.c.type == type_,
                            privacy_requests.c.state.in_(("received", "awaiting_verification")),
                        )
                    )
                )
                .mappings()
                .first()
            )
            if existing is not None:
                req, new = Request.of(existing), False
            else:
                request_id = self._insert(
                    conn,
                    type_,
                    jur,
                    id_type,
                    pseudonym,
                    {"id_type": id_type, "value": norm, "contact": mail_to, "details": details or {}},
                    channel,
                    actor,
                    received,
                )
                req, new = self.get(request_id, conn), True
        if send_code and req.state in ("received", "awaiting_verification") and mail_to:
            self.send_code(req.id)
            req = self.get(req.id)
        return req, new

    def create_verified_by_link(
        self, type_: str, id_type: str, pseudonym: str, subject_id: str
    ) -> tuple[Request, bool]:
        """A request from the preference center: the signed link already proved control of the identifier."""
        if type_ not in TYPES:
            raise RightsError(f"type must be one of {', '.join(TYPES)}")
        with self.store.write() as conn:
            request_id = self._insert(
                conn,
                type_,
                self.default_jurisdiction,
                id_type,
                pseudonym,
                {"id_type": id_type, "subject": subject_id, "contact": None, "details": {}},
                "preference_center",
                "subject",
                now_ms(),
            )
            self._mark_verified(conn, request_id, "link", "subject")
        return self.get(request_id), True

    def _insert(
        self,
        conn: Any,
        type_: str,
        jurisdiction: str,
        id_type: str,
        pseudonym: str,
        private: dict[str, Any],
        channel: str,
        actor: str,
        received: int,
    ) -> str:
        """One new request row, its own key sealing ``private``, and the audit entry; the new id."""
        request_id = secrets.token_hex(16)
        key_id = _key_id(request_id)
        key = self.vault.new_key(conn, key_id)
        ack, due = deadlines(jurisdiction, received)
        conn.execute(
            privacy_requests.insert(),
            {
                "id": request_id,
                "type": type_,
                "state": "received",
                "jurisdiction": jurisdiction,
                "id_type": id_type,
                "pseudonym": pseudonym,
                "requester_subject": key_id,
                "sealed": self.vault.seal_with(key, orjson.dumps(private), key_id.encode()),
                "channel": channel,
                "received_ms": received,
                "ack_due_ms": ack,
                "due_ms": due,
                "outcome": "{}",
                "notes": "[]",
            },
        )
        audit.record(
            conn, actor, "rights.received", target=f"request:{request_id}", details={"type": type_, "via": channel}
        )
        return request_id

    def send_code(self, request_id: str) -> None:
        """Email a fresh one-time code (10 minutes, 5 attempts) to the request's contact address."""
        private = self.private(request_id)
        to = private.get("contact")
        if not to:
            raise RightsError(
                "this request has no email address to send a code to; staff must verify it", 409, "conflict"
            )
        if not self.mailer.configured:
            raise RightsError("email verification is not available here (no mail server)", 503, "unavailable")
        code = f"{secrets.randbelow(10**6):06d}"
        with self.store.write() as conn:
            stmt = self.store.insert(verification_codes)
            stmt = stmt.on_conflict_do_update(
                index_elements=["request_id"],
                set_={
                    "code_hash": stmt.excluded.code_hash,
                    "expires_ms": stmt.excluded.expires_ms,
                    "attempts": 0,
                    "sent_ms": stmt.excluded.sent_ms,
                },
            )
            conn.execute(
                stmt,
                {
                    "request_id": request_id,
                    "code_hash": self._code_hash(request_id, code),
                    "expires_ms": now_ms() + CODE_TTL_MS,
                    "attempts": 0,
                    "sent_ms": now_ms(),
                },
            )
            conn.execute(
                update(privacy_requests)
                .where(and_(privacy_requests.c.id == request_id, privacy_requests.c.state == "received"))
                .values(state="awaiting_verification")
            )
        try:
            self.mailer.send(
                to,
                "Your verification code",
                f"Your code is {code}. It is valid for 10 minutes.\n\n"
                f"Someone (we hope you) asked us about the personal data linked to this address.\n"
                f"If it was not you, ignore this message: nothing will happen.\n",
            )
        except MailError as exc:
            raise RightsError(f"the code could not be sent: {exc}", 503, "unavailable") from None

    # -- verifying -----------------------------------------------------------------------------
    def verify(self, request_id: str, code: str) -> Request:
        """Check a one-time code (constant time); 5 wrong codes lock it."""
        with self.store.write() as conn:
            req = self.get(request_id, conn)
            if req.state != "awaiting_verification":
                raise RightsError("this request is not waiting for a code", 409, "conflict")
            row = (
                conn.execute(select(verification_codes).where(verification_codes.c.request_id == request_id))
                .mappings()
                .first()
            )
            if row is None or row["expires_ms"] < now_ms():
                raise RightsError("the code has expired; ask for a new one", 400, "code_expired")
            if row["attempts"] >= MAX_ATTEMPTS:
                raise RightsError("too many wrong codes; ask for a new one", 429, "too_many_attempts")
            expected = row["code_hash"]
            given = self._code_hash(request_id, (code or "").strip())
            if not hmac.compare_digest(expected.encode(), given.encode()):
                conn.execute(
                    update(verification_codes)
                    .where(verification_codes.c.request_id == request_id)
                    .values(attempts=verification_codes.c.attempts + 1)
                )
                wrong = True
            else:
                wrong = False
                conn.execute(verification_codes.delete().where(verification_codes.c.request_id == request_id))
                self._mark_verified(conn, request_id, "email_code", "subject")
        if wrong:
            raise RightsError("that code is not right", 400, "wrong_code")
        return self.get(request_id)

    def verify_by_staff(self, request_id: str, *, actor: str, reason: str) -> Request:
        """A privacy officer records a verification done by other means (with the reason, audited)."""
        if not reason.strip():
            raise RightsError("say how the person was verified (reason)")
        with self.store.write() as conn:
            req = self.get(request_id, conn)
            if req.state not in ("received", "awaiting_verification"):
                raise RightsError(f"the request is {req.state}, not waiting for verification", 409, "conflict")
            self._mark_verified(conn, request_id, "staff", actor, reason)
        return self.get(request_id)

    def _mark_verified(self, conn: Any, request_id: str, how: str, actor: str, reason: str = "") -> None:
        conn.execute(
            update(privacy_requests)
            .where(privacy_requests.c.id == request_id)
            .values(state="verified", verified_ms=now_ms(), verification=how, verified_by=actor[:100])
        )
        audit.record(
            conn,
            actor,
            "rights.verified",
            target=f"request:{request_id}",
            details={"method": how, **({"reason": reason[:300]} if reason else {})},
        )

    # -- staff ---------------------------------------------------------------------------------
    def listing(
        self, *, state: str | None = None, overdue: bool = False, due_soon: bool = False
    ) -> list[dict[str, Any]]:
        now = now_ms()
        with self.store.engine.connect() as conn:
            q = select(privacy_requests).order_by(privacy_requests.c.due_ms)
            if state:
                q = q.where(privacy_requests.c.state == state)
            rows = [Request.of(r).staff(now) for r in conn.execute(q.limit(5000)).mappings()]
        if overdue:
            rows = [r for r in rows if r["overdue"]]
        if due_soon:
            rows = [r for r in rows if r["due_soon"]]
        return rows

    def annotate(self, request_id: str, text: str, *, actor: str) -> Request:
        if not text.strip() or len(text) > 1000:
            raise RightsError("a note is 1 to 1000 characters")
        with self.store.write() as conn:
            req = self.get(request_id, conn)
            notes = [*req.notes, {"at": now_ms(), "by": actor, "text": text}]
            conn.execute(
                update(privacy_requests)
                .where(privacy_requests.c.id == request_id)
                .values(notes=orjson.dumps(notes).decode())
            )
            audit.record(conn, actor, "rights.note", target=f"request:{request_id}")
        return self.get(request_id)

    def extend(self, request_id: str, reason: str, *, actor: str) -> Request:
        """Extend the deadline once (GDPR: two months; CCPA: 45 days), telling the subject why."""
        with self.store.write() as conn:
            req = self.get(request_id, conn)
            if req.state not in OPEN_STATES:
                raise RightsError(f"the request is {req.state}", 409, "conflict")
            if req.extended_ms is not None:
                raise RightsError("the deadline was already extended once", 409, "conflict")
            if not reason.strip():
                raise RightsError("the subject must be told why: give a reason")
            conn.execute(
                update(privacy_requests)
                .where(privacy_requests.c.id == request_id)
                .values(extended_ms=extended(req.jurisdiction, req.due_ms), extension_reason=reason[:300])
            )
            audit.record(
                conn, actor, "rights.extended", target=f"request:{request_id}", details={"reason": reason[:300]}
            )
        self.notify(request_id, "We need more time", f"We need more time to answer your request: {reason}")
        return self.get(request_id)

    def deny(self, request_id: str, reason: str, *, actor: str) -> Request:
        with self.store.write() as conn:
            req = self.get(request_id, conn)
            if req.state not in OPEN_STATES:
                raise RightsError(f"the request is {req.state}", 409, "conflict")
            if not reason.strip():
                raise RightsError("a denial needs a reason")
            conn.execute(
                update(privacy_requests)
                .where(privacy_requests.c.id == request_id)
                .values(state="denied", denial_reason=reason[:300], completed_ms=now_ms())
            )
            audit.record(conn, actor, "rights.denied", target=f"request:{request_id}", details={"reason": reason[:300]})
        self.notify(request_id, "Your request", f"We could not carry out your request: {reason}")
        self.close(request_id)
        return self.get(request_id)

    def notify(self, request_id: str, subject: str, text: str) -> bool:
        """Write to the requester, when we have an address and a mail server; never fails the request."""
        to = self.private(request_id).get("contact")
        if not to or not self.mailer.configured:
            return False
        try:
            self.mailer.send(to, subject, text)
            return True
        except MailError as exc:
            log.warning("could not notify the requester: %s", exc)
            return False

    def close(self, request_id: str) -> None:
        """Shred what the requester gave us; the request row stays as the receipt."""
        with self.store.write() as conn:
            self.vault.shred(conn, _key_id(request_id))
            conn.execute(update(privacy_requests).where(privacy_requests.c.id == request_id).values(sealed=None))
            conn.execute(verification_codes.delete().where(verification_codes.c.request_id == request_id))


def _key_id(request_id: str) -> str:
    return "rq" + request_id[:30]
