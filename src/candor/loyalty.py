"""The loyalty programme: an opt-in value exchange with a points ledger, offers, tiers and a value statement.

Joining is an explicit opt-in (the ``loyalty`` purpose, consent everywhere) recorded in the consent
ledger against a versioned *notice of financial incentive* (CCPA regulations §7016, formerly §999.307:
what data is exchanged for what value, how points are calculated, a good-faith estimate of the value of
the data and how to withdraw). docs/loyalty.md is the full description; the rules in brief:

- **Ledger.** ``loyalty_ledger`` is append-only: earned points are positive rows, redeemed and expired
  points negative rows, each with the balance after it. ``loyalty_members.balance`` is the running sum,
  changed only in the transaction that appends the row, with the member's row locked, so the balance is
  never negative (a CHECK constraint backs it) and a crash leaves either both or neither.
- **Earning.** Purchases (``CANDOR_LOYALTY_PURCHASE_EVENT``) made while a member earn
  ``CANDOR_LOYALTY_POINTS_PER_UNIT`` points per currency unit of their ``revenue`` (else ``total``, else
  ``value``), once per message id; value-exchange offers earn their points once per member.
- **Expiry.** Earned points expire ``CANDOR_LOYALTY_EXPIRY_DAYS`` after they were earned; redemptions
  use the points that expire soonest first, so only what is left of a lot expires.
- **Tiers.** Points earned in the last ``CANDOR_LOYALTY_TIER_WINDOW_DAYS`` give a tier and its member
  discount (``CANDOR_LOYALTY_TIERS``); segments read it as the ``loyaltyTier`` trait.
- **Leaving** (or withdrawing the consent anywhere) stops earning, tiers and discounts at once. Points
  already earned are never taken back: they stay redeemable by the person until they expire.
"""

from __future__ import annotations

import itertools
import math
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import and_, bindparam, func, select, update

from candor import audit
from candor.events import iso_ms
from candor.store import now_ms
from candor.store.schema import (
    events,
    loyalty_benefits,
    loyalty_jobs,
    loyalty_ledger,
    loyalty_members,
    loyalty_offers,
    profile_subjects,
)

PURPOSE = "loyalty"
NOTICE_ID = "loyalty-financial-incentive"
SOURCE = "loyalty"  # the built-in source of what members tell us through offers
DAY_MS = 86_400_000
FOREVER_MS = 100 * 365 * DAY_MS  # a loyalty opt-in lasts until withdrawn, not for the banner's TTL
MAX_POINTS = 1_000_000_000
AMOUNT_PROPERTIES = ("revenue", "total", "value")
KINDS = ("purchase", "offer", "redeem", "expire")
OFFER_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,99}")
FIELD = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
BENEFIT_KIND = re.compile(r"[a-z][a-z0-9_]{0,29}")
REF = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
MAX_OFFER_FIELDS = 10
MAX_LIST = 20
MAX_VALUE = 200
SCAN = 2000  # events read per step of the purchase job
LOOKBACK = 10_000  # event ids re-read behind the cursor: a transaction may commit a lower id later
JOB = "purchases"
CREDIT_BATCH = SCAN  # purchases credited per write transaction


class LoyaltyError(ValueError):
    """Bad loyalty input or a state that forbids the action; ``status``/``code`` for the HTTP answer."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_loyalty") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Tier:
    name: str
    threshold: int  # points earned in the window
    discount: float  # percent off member prices


def parse_tiers(text: str) -> list[Tier]:
    """``member=0:0,silver=500:5,gold=2000:10`` → tiers by threshold; the first must start at 0."""
    out: list[Tier] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        m = re.fullmatch(r"([A-Za-z][A-Za-z0-9_-]{0,39})=(\d{1,10}):(\d{1,2}(?:\.\d+)?|100)", part)
        if m is None:
            raise ValueError(f"CANDOR_LOYALTY_TIERS: {part!r} is not name=points:discount% (e.g. gold=2000:10)")
        out.append(Tier(m.group(1), int(m.group(2)), float(m.group(3))))
    if not out or out[0].threshold != 0:
        raise ValueError("CANDOR_LOYALTY_TIERS: the first tier must start at 0 points (e.g. member=0:0)")
    for a, b in itertools.pairwise(out):
        if b.threshold <= a.threshold:
            raise ValueError("CANDOR_LOYALTY_TIERS: thresholds must increase from one tier to the next")
    if len({t.name for t in out}) != len(out):
        raise ValueError("CANDOR_LOYALTY_TIERS: tier names must differ")
    return out


def _points(value: Any, what: str = "points") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LoyaltyError(f"{what} must be a whole number")
    if value <= 0:
        raise LoyaltyError(f"{what} must be positive")
    if value > MAX_POINTS:
        raise LoyaltyError(f"{what} must be at most {MAX_POINTS}")
    return value


def _ref(value: str | None, what: str = "ref") -> str | None:
    if value is None:
        return None
    if not REF.fullmatch(value):
        raise LoyaltyError(f"{what}: 1-200 letters, digits, '_', '.', ':' or '-'")
    return value


def _amount(props: dict[str, Any]) -> float | None:
    for key in AMOUNT_PROPERTIES:
        v = props.get(key)
        if isinstance(v, bool):
            continue
        if isinstance(v, int | float) and math.isfinite(v) and v > 0:
            return float(v)
        if isinstance(v, str):
            try:
                f = float(v)
            except ValueError:
                continue
            if math.isfinite(f) and f > 0:
                return f
    return None


class Loyalty:
    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self.store = rt.store
        s = rt.settings
        if not (s.loyalty_points_per_unit >= 0 and math.isfinite(s.loyalty_points_per_unit)):
            raise ValueError("CANDOR_LOYALTY_POINTS_PER_UNIT must be a number ≥ 0")
        if not (s.loyalty_point_value >= 0 and math.isfinite(s.loyalty_point_value)):
            raise ValueError("CANDOR_LOYALTY_POINT_VALUE must be a number ≥ 0")
        if s.loyalty_expiry_days < 0 or s.loyalty_tier_window_days < 1:
            raise ValueError("CANDOR_LOYALTY_EXPIRY_DAYS must be ≥ 0 and CANDOR_LOYALTY_TIER_WINDOW_DAYS ≥ 1")
        self.tiers = parse_tiers(s.loyalty_tiers)
        self.per_unit = float(s.loyalty_points_per_unit)
        self.point_value = float(s.loyalty_point_value)
        self.currency = s.loyalty_currency
        self.expiry_ms = s.loyalty_expiry_days * DAY_MS
        self.window_ms = s.loyalty_tier_window_days * DAY_MS
        self.event_name = s.loyalty_purchase_event

    # -- the notice of financial incentive -----------------------------------------------------
    def notice_text(self) -> str:
        s = self.rt.settings
        tiers = "; ".join(f"{t.name}: from {t.threshold} points, {t.discount:g}% off member prices" for t in self.tiers)
        expiry = (
            f"Points expire {s.loyalty_expiry_days} days after you earn them; when you redeem, the points "
            "that expire soonest are used first."
            if s.loyalty_expiry_days
            else "Points do not expire."
        )
        return "\n\n".join(
            [
                "Notice of financial incentive: the loyalty programme",
                "What you give: when you join, we use your purchases (what you bought, when and for how much) "
                "to credit points, and whatever you choose to tell us through an offer (for example your "
                "favourite genres). Categories of personal information: identifiers, purchase history "
                "(financial and behavioural), and the answers you give to offers.",
                f"What you get: {self.per_unit:g} points per {self.currency} spent on purchases "
                f"(the order's revenue, else its total); the points each offer states for accepting it; "
                f"1 point is worth {self.point_value:g} {self.currency} when you redeem it. Tiers by points "
                f"earned in the last {s.loyalty_tier_window_days} days: {tiers}.",
                expiry,
                f"What your data is worth to us, in good faith: about {s.loyalty_data_value:g} {self.currency} "
                "per member and year. We calculate it as the value of the points and member discounts we "
                "expect to give an average member in a year, which is what we consider the data to be "
                "worth to us.",
                "Joining is optional. If you do not join you pay the same prices and get the same service; "
                "you only go without the points, tiers and member prices described here.",
                "How to leave: at any time, in the preference centre or by asking us. Leaving stops all "
                "use of your data for the programme at once. Points you already earned are never taken "
                "back: you can still redeem them until they expire.",
            ]
        )

    def notice(self, *, actor: str = "system") -> Any:
        """The current notice (published from the settings when there is none yet)."""
        n = self.rt.consent.notice(NOTICE_ID, None, "en")
        return n if n is not None else self.publish_notice(actor=actor)

    def publish_notice(self, *, actor: str = "cli") -> Any:
        """A new version when the settings changed the text; the current version otherwise."""
        from candor.consent.ledger import ConsentError, text_sha256

        text = self.notice_text()
        latest = self.rt.consent.notice(NOTICE_ID, None, "en")
        if latest is not None and latest.sha256 == text_sha256(text):
            return latest
        try:
            # a new version applies to joins from now on; members who joined under an older one keep
            # their membership (docs/loyalty.md says how to ask them again)
            return self.rt.consent.add_notice(
                NOTICE_ID, (latest.version + 1) if latest else 1, "en", text, requires_reconsent=False, actor=actor
            )
        except ConsentError:  # published meanwhile by another process
            return self.rt.consent.notice(NOTICE_ID, None, "en")

    # -- members -------------------------------------------------------------------------------
    def _member_row(self, conn: Any, subject: str, *, lock: bool = False) -> Any:
        """The membership of the subject's profile (any subject of it may have joined), or None."""
        people = self.rt.identity.members(subject, conn)
        q = select(loyalty_members).where(loyalty_members.c.subject_id.in_(people))
        if lock:
            q = q.with_for_update()
        rows = conn.execute(q.order_by(loyalty_members.c.joined_ms.desc())).mappings().all()
        if not rows:
            return None
        active = [r for r in rows if r["state"] == "active"]
        return (active or rows)[0]

    def _active(self, conn: Any, row: Any, now: int | None = None) -> bool:
        if row is None or row["state"] != "active":
            return False
        return bool(self.rt.consent.can_use(row["subject_id"], PURPOSE, conn=conn, now=now, remember=False).allowed)

    def join(
        self,
        subject: str,
        *,
        notice_version: int | None = None,
        source: str = "api",
        actor: str = "api",
        language: str = "en",
        now: int | None = None,
    ) -> dict[str, Any]:
        """Enrol the subject's profile: an explicit grant of ``loyalty`` against the notice shown."""
        notice = self.notice(actor=actor)
        if notice_version is not None and notice_version != notice.version:
            raise LoyaltyError(
                f"the notice of financial incentive is at version {notice.version}, not {notice_version}: "
                "show the current one (GET /v1/loyalty/notice) and ask again",
                409,
                "notice_changed",
            )
        ts = now if now is not None else now_ms()
        with self.store.write() as conn:
            row = self._member_row(conn, subject, lock=True)
            if self._active(conn, row, ts):
                raise LoyaltyError("already a member of the loyalty programme", 409, "already_member")
            member = row["subject_id"] if row is not None else subject
            seq = self.rt.consent.record(
                conn,
                member,
                granted=frozenset({PURPOSE}),
                source=source,
                actor=actor,
                ts_ms=ts,
                notice_id=NOTICE_ID,
                notice_version=notice.version,
                language="en",
                ui_action="custom",
                expires_ms=ts + FOREVER_MS,
            )
            values = {"state": "active", "joined_ms": ts, "left_ms": None, "notice_version": notice.version}
            if row is None:
                conn.execute(
                    loyalty_members.insert(), {"subject_id": member, "balance": 0, "consent_seq": seq, **values}
                )
            else:
                conn.execute(
                    update(loyalty_members)
                    .where(loyalty_members.c.subject_id == member)
                    .values(consent_seq=seq, **values)
                )
            audit.record(
                conn, actor, "loyalty.join", subject_id=member, details={"notice_version": notice.version, "seq": seq}
            )
        self.rt.consent.invalidate(member)
        return self.status(subject)

    def leave(self, subject: str, *, source: str = "api", actor: str = "api", now: int | None = None) -> dict[str, Any]:
        """End the membership at once (a refusal of ``loyalty`` in the ledger); points stay."""
        ts = now if now is not None else now_ms()
        with self.store.write() as conn:
            row = self._member_row(conn, subject, lock=True)
            if row is None:
                raise LoyaltyError("not a member of the loyalty programme", 409, "not_a_member")
            self.rt.consent.record(
                conn, row["subject_id"], denied=frozenset({PURPOSE}), source=source, actor=actor, ts_ms=ts
            )
            conn.execute(
                update(loyalty_members)
                .where(loyalty_members.c.subject_id == row["subject_id"])
                .values(state="left", left_ms=ts)
            )
            audit.record(
                conn, actor, "loyalty.leave", subject_id=row["subject_id"], details={"balance": row["balance"]}
            )
        self.rt.consent.invalidate(row["subject_id"])
        return self.status(subject)

    def status(self, subject: str, *, now: int | None = None) -> dict[str, Any]:
        ts = now if now is not None else now_ms()
        with self.store.engine.connect() as conn:
            row = self._member_row(conn, subject)
            if row is None:
                return {"member": False, "state": "not_joined", "balance": 0}
            active = self._active(conn, row, ts)
            tier = self._tier(conn, row["subject_id"], ts) if active else None
        state = "active" if active else ("left" if row["state"] == "left" else "consent_withdrawn")
        return {
            "member": active,
            "state": state,
            "joined": iso_ms(row["joined_ms"]),
            "left": iso_ms(row["left_ms"]) if row["left_ms"] else None,
            "notice_version": row["notice_version"],
            "balance": int(row["balance"]),
            "balance_value": round(int(row["balance"]) * self.point_value, 2),
            "currency": self.currency,
            "tier": tier.name if tier else None,
            "discount_percent": tier.discount if tier else 0.0,
        }

    # -- the ledger ----------------------------------------------------------------------------
    def _append(
        self,
        conn: Any,
        member: Any,
        kind: str,
        points: int,
        ref: str,
        *,
        actor: str,
        ts: int,
        detail: str | None = None,
        amount: float | None = None,
    ) -> dict[str, Any] | None:
        """Append one row and move the balance, the member's row already locked; None if ``ref`` exists."""
        sid = member["subject_id"]
        seen = conn.execute(
            select(loyalty_ledger.c.points, loyalty_ledger.c.balance_after).where(
                and_(loyalty_ledger.c.subject_id == sid, loyalty_ledger.c.ref == ref)
            )
        ).first()
        if seen is not None:
            return None
        balance = int(
            conn.execute(select(loyalty_members.c.balance).where(loyalty_members.c.subject_id == sid)).scalar_one()
        )
        after = balance + points
        if after < 0:
            raise LoyaltyError(
                f"not enough points: the balance is {balance}, {-points} were asked", 409, "insufficient_points"
            )
        conn.execute(update(loyalty_members).where(loyalty_members.c.subject_id == sid).values(balance=after))
        row = {
            "subject_id": sid,
            "kind": kind,
            "points": points,
            "balance_after": after,
            "ref": ref[:250],
            "detail": detail[:200] if detail else None,
            "amount": amount,
            "ts_ms": ts,
            "expires_ms": ts + self.expiry_ms if points > 0 and self.expiry_ms else None,
            "actor": actor[:100],
        }
        conn.execute(loyalty_ledger.insert(), row)
        return row

    def _lock(self, conn: Any, subject_id: str) -> Any:
        return (
            conn.execute(select(loyalty_members).where(loyalty_members.c.subject_id == subject_id).with_for_update())
            .mappings()
            .first()
        )

    def redeem(
        self, subject: str, points: int, *, ref: str | None = None, actor: str = "api", now: int | None = None
    ) -> dict[str, Any]:
        """Spend points (members and former members alike: earned points stay theirs)."""
        points = _points(points)
        ref = _ref(ref)
        ts = now if now is not None else now_ms()
        key = f"redeem:{ref or secrets.token_hex(12)}"
        with self.store.write() as conn:
            found = self._member_row(conn, subject)
            if found is None:
                raise LoyaltyError("not a member of the loyalty programme: nothing to redeem", 409, "not_a_member")
            member = self._lock(conn, found["subject_id"])
            row = self._append(conn, member, "redeem", -points, key, actor=actor, ts=ts)
            if row is None:
                prior = conn.execute(
                    select(loyalty_ledger.c.points, loyalty_ledger.c.balance_after, loyalty_ledger.c.ts_ms).where(
                        and_(loyalty_ledger.c.subject_id == member["subject_id"], loyalty_ledger.c.ref == key)
                    )
                ).one()
                if -prior[0] != points:
                    raise LoyaltyError(f"ref {ref} was already used for another redemption", 409, "ref_conflict")
                return {"redeemed": points, "balance": int(member["balance"]), "replayed": True}
            audit.record(conn, actor, "loyalty.redeem", subject_id=member["subject_id"], details={"points": points})
        return {
            "redeemed": points,
            "balance": row["balance_after"],
            "value": round(points * self.point_value, 2),
            "currency": self.currency,
            "replayed": False,
        }

    def expire(self, *, now: int | None = None, subjects: Iterable[str] | None = None) -> dict[str, int]:
        """Expire what is left of points past their date, for every member (or the given ones)."""
        ts = now if now is not None else now_ms()
        with self.store.engine.connect() as conn:
            q = select(loyalty_members.c.subject_id).where(loyalty_members.c.balance > 0)
            if subjects is not None:
                q = q.where(loyalty_members.c.subject_id.in_(list(subjects)))
            people = list(conn.execute(q).scalars())
        expired = members = 0
        for sid in people:
            with self.store.write() as conn:
                member = self._lock(conn, sid)
                if member is None:
                    continue
                due = self._due(conn, sid, ts)
                if due <= 0:
                    continue
                due = min(due, int(member["balance"]))
                if self._append(conn, member, "expire", -due, f"expire:{ts}", actor="system", ts=ts) is not None:
                    expired += due
                    members += 1
        if members:
            with self.store.write() as conn:
                audit.record(conn, "system", "loyalty.expire", details={"members": members, "points": expired})
        return {"members": members, "points": expired}

    def _due(self, conn: Any, sid: str, ts: int) -> int:
        """Points past their expiry not yet used: lots that expire soonest are used first."""
        matured = conn.execute(
            select(func.coalesce(func.sum(loyalty_ledger.c.points), 0)).where(
                and_(
                    loyalty_ledger.c.subject_id == sid,
                    loyalty_ledger.c.points > 0,
                    loyalty_ledger.c.expires_ms.is_not(None),
                    loyalty_ledger.c.expires_ms <= ts,
                )
            )
        ).scalar_one()
        used = conn.execute(
            select(func.coalesce(func.sum(loyalty_ledger.c.points), 0)).where(
                and_(loyalty_ledger.c.subject_id == sid, loyalty_ledger.c.points < 0)
            )
        ).scalar_one()
        return max(0, int(matured) + int(used))

    def earn(
        self,
        subject: str,
        points: int,
        *,
        kind: str,
        ref: str,
        detail: str | None = None,
        amount: float | None = None,
        actor: str = "system",
        now: int | None = None,
        conn: Any = None,
    ) -> dict[str, Any] | None:
        """Credit points to an active member once per ``ref``; None when already credited."""
        if kind not in ("purchase", "offer"):
            raise LoyaltyError(f"kind must be purchase or offer, not {kind!r}")
        points = _points(points)
        ts = now if now is not None else now_ms()
        if conn is None:
            with self.store.write() as c:
                return self.earn(
                    subject, points, kind=kind, ref=ref, detail=detail, amount=amount, actor=actor, now=ts, conn=c
                )
        found = self._member_row(conn, subject)
        if not self._active(conn, found, ts):
            raise LoyaltyError("not an active member of the loyalty programme", 409, "not_a_member")
        member = self._lock(conn, found["subject_id"])
        return self._append(conn, member, kind, points, ref, actor=actor, ts=ts, detail=detail, amount=amount)

    # -- earning on purchases ------------------------------------------------------------------
    def earn_purchases(self, *, now: int | None = None) -> dict[str, int]:
        """Read new purchase events and credit members (idempotent per source and message id)."""
        ts = now if now is not None else now_ms()
        out = {"events": 0, "credited": 0, "points": 0}
        with self.store.engine.connect() as conn:
            cursor = int(conn.execute(select(loyalty_jobs.c.value).where(loyalty_jobs.c.name == JOB)).scalar() or 0)
            any_member = conn.execute(select(loyalty_members.c.subject_id).limit(1)).first() is not None
            top = int(conn.execute(select(func.coalesce(func.max(events.c.id), 0))).scalar_one())
        if not any_member:  # purchases made before anyone joined never earn
            self._save_cursor(top)
            return out
        position = max(0, cursor - LOOKBACK)
        while position < top:
            with self.store.engine.connect() as conn:
                rows = conn.execute(
                    select(events.c.id, events.c.source_id, events.c.message_id, events.c.subject_id)
                    .add_columns(events.c.ts_ms, events.c.properties)
                    .where(and_(events.c.id > position, events.c.id <= top, events.c.event == self.event_name))
                    .order_by(events.c.id)
                    .limit(SCAN)
                ).all()
            if not rows:
                break
            candidates = self._candidates(rows)
            position = rows[-1][0]
            out["events"] += len(rows)
            todo = [r for r in rows if (r[1], r[2]) in candidates]
            for i in range(0, len(todo), CREDIT_BATCH):
                n, points = self._credit_batch(todo[i : i + CREDIT_BATCH], ts)
                out["credited"] += n
                out["points"] += points
            if len(rows) < SCAN:
                break
        self._save_cursor(top)
        return out

    def _members_of(self, conn: Any, sids: Iterable[str]) -> dict[str, Any]:
        """For many subjects at once: the membership of each one's profile (active preferred), if any."""
        sids = list(set(sids))
        profile_of: dict[str, str] = {}
        for i in range(0, len(sids), 500):
            profile_of.update(
                conn.execute(
                    select(profile_subjects.c.subject_id, profile_subjects.c.profile_id).where(
                        profile_subjects.c.subject_id.in_(sids[i : i + 500])
                    )
                ).all()
            )
        groups: dict[str, list[str]] = {}
        pids = list(set(profile_of.values()))
        for i in range(0, len(pids), 500):
            for sid, pid in conn.execute(
                select(profile_subjects.c.subject_id, profile_subjects.c.profile_id).where(
                    profile_subjects.c.profile_id.in_(pids[i : i + 500])
                )
            ):
                groups.setdefault(pid, []).append(sid)
        people = {s: groups.get(profile_of[s], [s]) if s in profile_of else [s] for s in sids}
        everyone = list({p for ps in people.values() for p in ps})
        rows: dict[str, Any] = {}
        for i in range(0, len(everyone), 500):
            for r in conn.execute(
                select(loyalty_members).where(loyalty_members.c.subject_id.in_(everyone[i : i + 500]))
            ).mappings():
                rows[r["subject_id"]] = r
        out: dict[str, Any] = {}
        for s, ps in people.items():
            found = sorted((rows[p] for p in ps if p in rows), key=lambda r: (r["state"] != "active", -r["joined_ms"]))
            if found:
                out[s] = found[0]
        return out

    def _candidates(self, rows: Sequence[Any]) -> set[tuple[int, str]]:
        """The purchases of a chunk that may earn: made by someone in a member's profile since the join,
        and not credited yet (read without a write lock; the write transaction checks again)."""
        out: set[tuple[int, str]] = set()
        with self.store.engine.connect() as conn:
            members = self._members_of(conn, (r[3] for r in rows))
            for _eid, source_id, message_id, sid, ets, _props in rows:
                m = members.get(sid)
                if m is not None and m["state"] == "active" and ets >= m["joined_ms"]:
                    out.add((source_id, message_id))
            refs = {f"order:{s}:{m}": (s, m) for s, m in out}
            names = list(refs)
            for i in range(0, len(names), 500):
                for ref in conn.execute(
                    select(loyalty_ledger.c.ref).where(loyalty_ledger.c.ref.in_(names[i : i + 500]))
                ).scalars():
                    out.discard(refs[ref])
        return out

    def _credit_batch(self, rows: Sequence[Any], ts: int) -> tuple[int, int]:
        """Credit a batch of purchases in one write transaction (all or none): the members' rows locked in
        one order, one look-up of the refs already credited, the rows appended in event order, one balance
        update per member."""
        credited = total = 0
        with self.store.write() as conn:
            members = self._members_of(conn, (r[3] for r in rows))
            per_member: dict[str, list[tuple[str, int, float, int]]] = {}
            found_of: dict[str, Any] = {}
            for _eid, source_id, message_id, sid, ets, props in rows:
                points, amount = self._purchase_points(props)
                found = members.get(sid)
                # only purchases made while a member, with the opt-in in force now
                if points <= 0 or found is None or ets < found["joined_ms"]:
                    continue
                found_of[found["subject_id"]] = found
                per_member.setdefault(found["subject_id"], []).append(
                    (f"order:{source_id}:{message_id}", points, amount, source_id)
                )
            msids = sorted(per_member)
            self.rt.consent.preload(msids, conn)
            active = [m for m in msids if self._active(conn, found_of[m], ts)]
            locked: dict[str, Any] = {}
            seen: set[tuple[str, str]] = set()
            for i in range(0, len(active), 500):  # rows locked in one order: concurrent runs cannot deadlock
                part = active[i : i + 500]
                for r in conn.execute(
                    select(loyalty_members)
                    .where(loyalty_members.c.subject_id.in_(part))
                    .order_by(loyalty_members.c.subject_id)
                    .with_for_update()
                ).mappings():
                    locked[r["subject_id"]] = r
            refs = sorted({item[0] for m in active for item in per_member[m]})
            for i in range(0, len(refs), 500):
                seen.update(
                    (str(sid), str(ref))
                    for sid, ref in conn.execute(
                        select(loyalty_ledger.c.subject_id, loyalty_ledger.c.ref).where(
                            loyalty_ledger.c.ref.in_(refs[i : i + 500])
                        )
                    )
                )
            new: list[dict[str, Any]] = []
            balances: list[dict[str, Any]] = []
            for msid in active:
                if msid not in locked:
                    continue
                balance = int(locked[msid]["balance"])
                gained = 0
                for ref, points, amount, source_id in per_member[msid]:
                    if (msid, ref) in seen:
                        continue
                    seen.add((msid, ref))
                    balance += points
                    gained += points
                    new.append(
                        {
                            "subject_id": msid,
                            "kind": "purchase",
                            "points": points,
                            "balance_after": balance,
                            "ref": ref[:250],
                            "detail": f"source #{source_id}",
                            "amount": round(amount, 2),
                            "ts_ms": ts,
                            "expires_ms": ts + self.expiry_ms if self.expiry_ms else None,
                            "actor": "system",
                        }
                    )
                    credited += 1
                if gained:
                    total += gained
                    balances.append({"sid": msid, "bal": balance})
            if new:
                conn.execute(loyalty_ledger.insert(), new)
                conn.execute(
                    update(loyalty_members)
                    .where(loyalty_members.c.subject_id == bindparam("sid"))
                    .values(balance=bindparam("bal")),
                    balances,
                )
        return credited, total

    def _purchase_points(self, props: str) -> tuple[int, float]:
        try:
            amount = _amount(orjson.loads(props))
        except orjson.JSONDecodeError:
            return 0, 0.0
        if amount is None:
            return 0, 0.0
        return min(MAX_POINTS, math.floor(amount * self.per_unit + 1e-9)), amount

    def _save_cursor(self, value: int) -> None:
        with self.store.write() as conn:
            conn.execute(
                self.store.insert(loyalty_jobs)
                .values(name=JOB, value=value, updated_ms=now_ms())
                .on_conflict_do_update(index_elements=["name"], set_={"value": value, "updated_ms": now_ms()})
            )

    # -- offers --------------------------------------------------------------------------------
    def create_offer(
        self,
        name: str,
        *,
        title: str,
        ask: str,
        fields: Sequence[str],
        category: str,
        points: int,
        starts_ms: int,
        ends_ms: int,
        purposes: Sequence[str] = (),
        actor: str = "cli",
    ) -> dict[str, Any]:
        from candor.dictionary import CATEGORIES
        from candor.segments import DIRECT_IDENTIFIERS

        if not OFFER_NAME.fullmatch(name or ""):
            raise LoyaltyError("name: 1-100 lower-case letters, digits and '-', starting with a letter or digit")
        if not title or len(title) > 200 or not ask or len(ask) > 500:
            raise LoyaltyError("title (1-200 characters) and ask (1-500 characters: what we ask, plainly) are required")
        fields = list(fields)
        if not 1 <= len(fields) <= MAX_OFFER_FIELDS or len(set(fields)) != len(fields):
            raise LoyaltyError(f"fields: 1 to {MAX_OFFER_FIELDS} different trait names")
        for i, f in enumerate(fields):
            if not FIELD.fullmatch(f):
                raise LoyaltyError(f"fields[{i}]: a trait name (letters, digits, '_'; starting with a letter)")
            if f in DIRECT_IDENTIFIERS or f == "loyaltyTier":
                raise LoyaltyError(f"fields[{i}]: an offer cannot ask for an identifier or the tier")
        cat = CATEGORIES.get(category)
        if cat is None:
            raise LoyaltyError(f"category: unknown data category; one of {', '.join(CATEGORIES)}")
        if cat.special or cat.never_stored:
            raise LoyaltyError(
                "category: points are never offered for special-category data or credentials (docs/loyalty.md)"
            )
        purposes = sorted(set(purposes))
        for i, p in enumerate(purposes):
            if p not in self.rt.taxonomy.purposes or p in ("necessary", PURPOSE) or p.startswith("sensitive"):
                raise LoyaltyError(f"purposes[{i}]: a consent purpose other than necessary, loyalty and sensitive ones")
        points = _points(points)
        if ends_ms <= starts_ms:
            raise LoyaltyError("the offer must end after it starts")
        ts = now_ms()
        self.rt.rights.source_id(SOURCE)  # the built-in source the answers are recorded from
        with self.store.write() as conn:
            if conn.execute(select(loyalty_offers.c.id).where(loyalty_offers.c.name == name)).first() is not None:
                raise LoyaltyError(f"an offer named {name} already exists; offers are never edited", 409, "conflict")
            conn.execute(
                loyalty_offers.insert(),
                {
                    "name": name,
                    "title": title,
                    "ask": ask,
                    "fields": orjson.dumps(fields).decode(),
                    "category": category,
                    "purposes": orjson.dumps(purposes).decode(),
                    "points": points,
                    "starts_ms": starts_ms,
                    "ends_ms": ends_ms,
                    "created_ms": ts,
                    "created_by": actor[:100],
                },
            )
            for f in fields:  # what members tell us is declared in the data dictionary of the loyalty source
                self.rt.dictionary.declare(
                    SOURCE, "traits", f, category, note=f"loyalty offer {name}", actor=actor, conn=conn
                )
            audit.record(conn, actor, "loyalty.offer.create", target=f"offer:{name}", details={"points": points})
        return self.offer(name)

    @staticmethod
    def _offer_dict(r: Any, ts: int) -> dict[str, Any]:
        state = "upcoming" if ts < r["starts_ms"] else ("open" if ts < r["ends_ms"] else "expired")
        return {
            "name": r["name"],
            "title": r["title"],
            "ask": r["ask"],
            "fields": orjson.loads(r["fields"]),
            "category": r["category"],
            "purposes": orjson.loads(r["purposes"]),
            "points": r["points"],
            "starts": iso_ms(r["starts_ms"]),
            "ends": iso_ms(r["ends_ms"]),
            "state": state,
        }

    def offer(self, name: str, *, now: int | None = None) -> dict[str, Any]:
        with self.store.engine.connect() as conn:
            r = conn.execute(select(loyalty_offers).where(loyalty_offers.c.name == name[:100])).mappings().first()
        if r is None:
            raise LoyaltyError("no offer with that name", 404, "not_found")
        return self._offer_dict(r, now if now is not None else now_ms())

    def offers(self, *, state: str | None = None, now: int | None = None) -> list[dict[str, Any]]:
        ts = now if now is not None else now_ms()
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(loyalty_offers).order_by(loyalty_offers.c.id)).mappings().all()
        out = [self._offer_dict(r, ts) for r in rows]
        return [o for o in out if state is None or o["state"] == state]

    def accept_offer(
        self,
        subject: str,
        name: str,
        values: dict[str, Any],
        *,
        source: str = "api",
        actor: str = "api",
        now: int | None = None,
    ) -> dict[str, Any]:
        """Record what the member shares, the consent it comes with, and the points: all or nothing."""
        ts = now if now is not None else now_ms()
        offer = self.offer(name, now=ts)
        if offer["state"] == "upcoming":
            raise LoyaltyError(f"offer {name} opens at {offer['starts']}", 409, "offer_not_open")
        if offer["state"] == "expired":
            raise LoyaltyError(f"offer {name} ended at {offer['ends']}", 410, "offer_expired")
        if not isinstance(values, dict) or set(values) != set(offer["fields"]):
            raise LoyaltyError(f"values: give exactly the fields {', '.join(offer['fields'])}")
        clean: dict[str, Any] = {}
        for k, v in values.items():
            clean[k] = _value(v, f"values.{k}")
        notice = self.notice(actor=actor)
        source_id = self.rt.rights.source_id(SOURCE)
        with self.store.write() as conn:
            found = self._member_row(conn, subject)
            if not self._active(conn, found, ts):
                raise LoyaltyError("join the loyalty programme before accepting an offer", 409, "not_a_member")
            member = self._lock(conn, found["subject_id"])
            sid = member["subject_id"]
            row = self._append(conn, member, "offer", offer["points"], f"offer:{name}", actor=actor, ts=ts, detail=name)
            if row is None:
                raise LoyaltyError(f"offer {name} was already accepted", 409, "already_accepted")
            if offer["purposes"]:
                self.rt.consent.record(
                    conn,
                    sid,
                    granted=frozenset(offer["purposes"]),
                    source=source,
                    actor=actor,
                    ts_ms=ts,
                    notice_id=NOTICE_ID,
                    notice_version=notice.version,
                    ui_action="custom",
                )
            conn.execute(
                events.insert(),
                {
                    "source_id": source_id,
                    "message_id": f"loyalty-offer:{name}:{sid}"[:200],
                    "type": "identify",
                    "event": None,
                    "subject_id": sid,
                    "user_pid": None,
                    "anon_pid": None,
                    "ts_ms": ts,
                    "received_ms": ts,
                    "properties": "{}",
                    "context": "{}",
                    "sealed": self.rt.vault.seal(sid, orjson.dumps({"traits": clean})),
                },
            )
            audit.record(
                conn,
                actor,
                "loyalty.offer.accept",
                subject_id=sid,
                target=f"offer:{name}",
                details={"fields": sorted(clean)},
            )
        self.rt.consent.invalidate(sid)
        return {"offer": name, "points": offer["points"], "balance": row["balance_after"], "granted": offer["purposes"]}

    # -- tiers and member prices ---------------------------------------------------------------
    def _earned_in_window(self, conn: Any, sids: Sequence[str], ts: int) -> dict[str, int]:
        rows = conn.execute(
            select(loyalty_ledger.c.subject_id, func.sum(loyalty_ledger.c.points))
            .where(
                and_(
                    loyalty_ledger.c.subject_id.in_(list(sids)),
                    loyalty_ledger.c.points > 0,
                    loyalty_ledger.c.ts_ms > ts - self.window_ms,
                    loyalty_ledger.c.ts_ms <= ts,
                )
            )
            .group_by(loyalty_ledger.c.subject_id)
        ).all()
        return {s: int(n) for s, n in rows}

    def tier_for(self, earned: int) -> Tier:
        found = self.tiers[0]
        for t in self.tiers:
            if earned >= t.threshold:
                found = t
        return found

    def _tier(self, conn: Any, sid: str, ts: int) -> Tier:
        return self.tier_for(self._earned_in_window(conn, [sid], ts).get(sid, 0))

    def tiers_of(self, conn: Any, subject_ids: Sequence[str], *, now: int | None = None) -> dict[str, str]:
        """The tier of every active member among these subjects (for the ``loyaltyTier`` trait)."""
        ts = now if now is not None else now_ms()
        out: dict[str, str] = {}
        for i in range(0, len(subject_ids), 500):
            part = list(subject_ids[i : i + 500])
            rows = (
                conn.execute(
                    select(loyalty_members).where(
                        and_(loyalty_members.c.subject_id.in_(part), loyalty_members.c.state == "active")
                    )
                )
                .mappings()
                .all()
            )
            active = [r["subject_id"] for r in rows if self._active(conn, r, ts)]
            if not active:
                continue
            earned = self._earned_in_window(conn, active, ts)
            for sid in active:
                out[sid] = self.tier_for(earned.get(sid, 0)).name
        return out

    def price(
        self, subject: str, amount: float, *, order: str | None = None, actor: str = "api", now: int | None = None
    ) -> dict[str, Any]:
        """The member price for an amount (the tier's discount); recorded as a benefit once per order."""
        if isinstance(amount, bool) or not isinstance(amount, int | float) or not math.isfinite(amount):
            raise LoyaltyError("amount must be a number")
        if amount <= 0 or amount > 1e9:
            raise LoyaltyError("amount must be positive (at most 1e9)")
        order = _ref(order, "orderId")
        ts = now if now is not None else now_ms()
        with self.store.engine.connect() as conn:
            found = self._member_row(conn, subject)
            active = self._active(conn, found, ts)
            tier = self._tier(conn, found["subject_id"], ts) if active else None
        discount = round(amount * (tier.discount if tier else 0.0) / 100, 2)
        out = {
            "member": active,
            "tier": tier.name if tier else None,
            "discount_percent": tier.discount if tier else 0.0,
            "discount": discount,
            "price": round(amount - discount, 2),
        }
        if active and discount > 0 and order is not None:
            self.record_benefit(
                found["subject_id"],
                "discount",
                f"{tier.name if tier else ''} member price",
                amount=discount,
                ref=f"order:{order}",
            )
        return out

    # -- benefits --------------------------------------------------------------------------------
    def record_benefit(
        self,
        subject: str,
        kind: str,
        detail: str | None = None,
        *,
        amount: float | None = None,
        ref: str | None = None,
        now: int | None = None,
    ) -> bool:
        """Count something the person got for sharing (a discount, a personalised offer or recommendation
        used) in their value statement. ``detail`` must not hold personal data. False if ``ref`` was seen."""
        if not BENEFIT_KIND.fullmatch(kind or ""):
            raise LoyaltyError("kind: 1-30 lower-case letters, digits or '_' (e.g. discount, personalised_offer)")
        if amount is not None and (not math.isfinite(amount) or amount < 0):
            raise LoyaltyError("amount must be a number ≥ 0")
        ts = now if now is not None else now_ms()
        with self.store.write() as conn:
            res = conn.execute(
                self.store.insert_ignore(loyalty_benefits).returning(loyalty_benefits.c.id),
                {
                    "subject_id": subject,
                    "kind": kind,
                    "detail": (detail or "")[:200] or None,
                    "amount": amount,
                    "ref": ref[:250] if ref else None,
                    "ts_ms": ts,
                },
            )
            return res.first() is not None

    # -- the value statement -------------------------------------------------------------------
    def ledger(self, conn: Any, people: Sequence[str]) -> list[dict[str, Any]]:
        rows = conn.execute(
            select(loyalty_ledger)
            .where(loyalty_ledger.c.subject_id.in_(list(people)))
            .order_by(loyalty_ledger.c.ts_ms, loyalty_ledger.c.id)
        ).mappings()
        return [
            {
                "at": iso_ms(r["ts_ms"]),
                "kind": r["kind"],
                "points": int(r["points"]),
                "balance_after": int(r["balance_after"]),
                "detail": r["detail"],
                "order_value": r["amount"],
                "expires": iso_ms(r["expires_ms"]) if r["expires_ms"] else None,
            }
            for r in rows
        ]

    def benefits(self, conn: Any, people: Sequence[str]) -> list[dict[str, Any]]:
        rows = conn.execute(
            select(loyalty_benefits)
            .where(loyalty_benefits.c.subject_id.in_(list(people)))
            .order_by(loyalty_benefits.c.ts_ms, loyalty_benefits.c.id)
        ).mappings()
        return [
            {"at": iso_ms(r["ts_ms"]), "kind": r["kind"], "detail": r["detail"], "amount": r["amount"]} for r in rows
        ]

    def statement(self, subject: str, *, now: int | None = None) -> dict[str, Any]:
        """What the person shared (purposes, data categories, offer answers) and what they got for it."""
        from candor.rights import export

        ts = now if now is not None else now_ms()
        status = self.status(subject, now=ts)
        decisions = self.rt.consent.explain(subject)
        with self.store.engine.connect() as conn:
            people = self.rt.identity.members(subject, conn)
            try:
                categories = export._categories(self.rt, conn, people, "")
            finally:
                export._DOCS.pop((id(conn), tuple(people)), None)
            ledger = self.ledger(conn, people)
            benefits = self.benefits(conn, people)
            offers = {
                r["name"]: r
                for r in conn.execute(select(loyalty_offers.c.name, loyalty_offers.c.title, loyalty_offers.c.fields))
                .mappings()
                .all()
            }
        accepted = [
            {
                "offer": e["detail"],
                "title": offers[e["detail"]]["title"] if e["detail"] in offers else e["detail"],
                "fields": orjson.loads(offers[e["detail"]]["fields"]) if e["detail"] in offers else [],
                "points": e["points"],
                "at": e["at"],
            }
            for e in ledger
            if e["kind"] == "offer"
        ]
        total = {k: sum(e["points"] for e in ledger if e["kind"] == k) for k in KINDS}
        kinds: dict[str, dict[str, Any]] = {}
        for b in benefits:
            k = kinds.setdefault(b["kind"], {"count": 0, "amount": 0.0})
            k["count"] += 1
            k["amount"] = round(k["amount"] + (b["amount"] or 0.0), 2)
        taxonomy = self.rt.taxonomy
        return {
            "membership": status,
            "shared": {
                "purposes": [
                    {"purpose": d.purpose, "description": taxonomy.get(d.purpose).description}
                    for d in decisions
                    if d.allowed and d.purpose != "necessary"
                ],
                "categories": [{"category": c["category"], "fields": c["fields"]} for c in categories],
                "offers": accepted,
            },
            "received": {
                "points_earned": total["purchase"] + total["offer"],
                "points_from_purchases": total["purchase"],
                "points_from_offers": total["offer"],
                "points_redeemed": -total["redeem"],
                "points_expired": -total["expire"],
                "balance": status["balance"],
                "value_redeemed": round(-total["redeem"] * self.point_value, 2),
                "discounts": kinds.get("discount", {"count": 0, "amount": 0.0}),
                "offers_accepted": len(accepted),
                "personalised_offers_used": sum(
                    v["count"] for k, v in kinds.items() if k in ("personalised_offer", "recommendation")
                ),
                "benefits": kinds,
                "currency": self.currency,
            },
            "ledger": ledger,
            "benefits": benefits,
        }


def _value(v: Any, where: str) -> Any:
    if isinstance(v, bool) or (isinstance(v, int | float) and math.isfinite(v)):
        return v
    if isinstance(v, str):
        v = v.strip()
        if not v or len(v) > MAX_VALUE:
            raise LoyaltyError(f"{where}: 1-{MAX_VALUE} characters")
        return v
    if isinstance(v, list):
        if not 1 <= len(v) <= MAX_LIST:
            raise LoyaltyError(f"{where}: a list of 1 to {MAX_LIST} values")
        if any(isinstance(x, list | dict) for x in v):
            raise LoyaltyError(f"{where}: a list of text, numbers or true/false, not of lists")
        return [_value(x, f"{where}[{i}]") for i, x in enumerate(v)]
    raise LoyaltyError(f"{where}: text, a number, true/false or a list of those")
