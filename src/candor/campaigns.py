"""Campaigns: the audience is decided at the moment of sending, one recipient at a time.

A campaign names a segment, a channel and the purpose it serves (``marketing.email``). Sending walks
the segment's profiles and, for each, in this order: a send already made (resuming never sends
twice), consent for the purpose (``can_use``, which also covers restriction and objection), a
contact address, the do-not-contact list, the frequency cap of the channel, quiet hours in the
recipient's own time. Every recipient ends with one row in ``sends``: sent, failed, or skipped with
the reason. Only recipients with ``personalization`` consent get the personalised template; the
others get the generic one. Every email carries ``List-Unsubscribe`` (mailto and https) and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058), and a footer with the sender's postal
address. Templates run in Jinja2's sandbox and are rendered against sample profiles when the campaign
is created, so a template error never leaves a campaign half sent.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import zoneinfo
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import and_, desc, func, select, update

from candor import audit
from candor.rights.mailer import MailError
from candor.store import now_ms
from candor.store.schema import campaigns, events, identifiers, sends, sources, suppressions
from candor.store.schema import subjects as subjects_t
from candor.web.common import Signer

log = logging.getLogger("candor.campaigns")
CHANNELS = ("email",)
SAMPLE_TRAITS: tuple[dict[str, Any], ...] = (
    {},
    {"firstName": "Ann", "lastName": "Lee", "email": "ann@example.com", "address": {"city": "Salem"}},
    {"firstName": "Zoë", "interests": ["jazz", "crime"], "loyaltyTier": "gold"},
)
UNSUBSCRIBE_TTL_MS = 400 * 86_400_000
RETRIES = 3


class CampaignError(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


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


_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_LENIENT = SandboxedEnvironment(autoescape=False)
_TEMPLATES: dict[tuple[int, str], Any] = {}


def _compiled(env: SandboxedEnvironment, text: str) -> Any:
    """Templates compile once per process (compiling costs more than rendering)."""
    key = (id(env), text)
    tpl = _TEMPLATES.get(key)
    if tpl is None:
        if len(_TEMPLATES) > 256:
            _TEMPLATES.clear()
        tpl = _TEMPLATES[key] = env.from_string(text)
    return tpl


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
        for where, text, personal in (
            ("subject", self.subject, False),
            ("template", self.template, True),
            ("generic_template", self.generic_template, False),
        ):
            try:
                tpl = _LENIENT.from_string(text) if personal else _ENV.from_string(text)
                for traits in SAMPLE_TRAITS if personal else ({},):
                    tpl.render(traits=traits, first_name=traits.get("firstName", ""))
            except TemplateError as exc:
                raise CampaignError(f"{where}: {type(exc).__name__}: {exc}") from None


class Campaigns:
    def __init__(self, rt: Any) -> None:
        self.rt = rt
        s = rt.settings
        self.cap = parse_cap(s.email_frequency_cap)
        self.quiet = parse_quiet(s.quiet_hours)
        self.quiet_channels = {c.strip() for c in s.quiet_hours_channels.split(",") if c.strip()}
        self.now = now_ms  # the clock sends are decided by (tests pin it)

    # -- definitions ---------------------------------------------------------------------------
    def create(self, raw: dict[str, Any], *, actor: str) -> dict[str, Any]:
        d = Definition.parse(raw, set(self.rt.taxonomy.names()))
        d.check_templates()
        seg = self.rt.segments.get(d.segment)
        if seg is None:
            raise CampaignError(f"segment: no segment named {d.segment!r}", 404)
        with self.rt.store.write() as conn:
            exists = conn.execute(select(campaigns.c.id).where(campaigns.c.name == d.name)).scalar()
            if exists is not None:
                raise CampaignError(f"a campaign named {d.name!r} exists", 409)
            res = conn.execute(
                campaigns.insert(),
                {
                    "name": d.name,
                    "segment_id": int(seg["id"]),
                    "channel": d.channel,
                    "purpose": d.purpose,
                    "definition": orjson.dumps(raw).decode(),
                    "state": "draft",
                    "created_ms": now_ms(),
                    "created_by": actor[:100],
                },
            )
            cid = int(res.inserted_primary_key[0])
            audit.record(conn, actor, "campaign.created", target=f"campaign:{cid}", details={"purpose": d.purpose})
        return {"id": cid, "name": d.name, "state": "draft"}

    def _load(self, name: str) -> tuple[int, Definition, str]:
        with self.rt.store.engine.connect() as conn:
            row = conn.execute(select(campaigns).where(campaigns.c.name == name)).mappings().first()
        if row is None:
            raise CampaignError(f"no campaign named {name!r}", 404)
        return (
            int(row["id"]),
            Definition.parse(orjson.loads(row["definition"]), set(self.rt.taxonomy.names())),
            row["state"],
        )

    # -- recipients ----------------------------------------------------------------------------
    def _timezone(self, members: list[str], conn: Any) -> str | None:
        row = conn.execute(
            select(events.c.context)
            .where(events.c.subject_id.in_(members), events.c.context.like('%"timezone"%'))
            .order_by(desc(events.c.ts_ms))
            .limit(1)
        ).scalar()
        if not row:
            return None
        tz = orjson.loads(row).get("timezone")
        return tz if isinstance(tz, str) else None

    def decide_many(
        self, cid: int, d: Definition, profiles: list[str], conn: Any, now: int
    ) -> list[tuple[str, str, dict[str, Any] | None]]:
        """Why each profile may not receive the message now (``skipped:<reason>``), or ``send``: the checks in
        order (already sent, consent, address, do-not-contact, frequency cap, quiet hours), one query per
        check for the whole batch."""
        from candor import normalize
        from candor.store.schema import profile_subjects

        done = dict(
            conn.execute(
                select(sends.c.subject_id, sends.c.outcome).where(
                    and_(sends.c.campaign_id == cid, sends.c.subject_id.in_(profiles))
                )
            ).all()
        )
        groups: dict[str, list[str]] = {p: [] for p in profiles}
        for sid, pid in conn.execute(
            select(profile_subjects.c.subject_id, profile_subjects.c.profile_id).where(
                profile_subjects.c.profile_id.in_(profiles)
            )
        ):
            groups[pid].append(sid)
        for p, ms in groups.items():
            if not ms:
                ms.append(p)
        everyone = [m for ms in groups.values() for m in ms]
        self.rt.consent.preload(everyone, conn)
        names = dict(conn.execute(select(sources.c.id, sources.c.name)).all())
        traits_of = self.rt.profiles.golden_many(groups, conn, names)
        member_hashes: dict[str, list[str]] = {}
        owner = {m: p for p, ms in groups.items() for m in ms}
        for sid, h in conn.execute(
            select(identifiers.c.subject_id, identifiers.c.contact_hash).where(
                identifiers.c.subject_id.in_(everyone), identifiers.c.contact_hash.is_not(None)
            )
        ):
            member_hashes.setdefault(owner[sid], []).append(h)
        limit, window = self.cap
        recent: Counter[str] = Counter()
        for sid, n in conn.execute(
            select(sends.c.subject_id, func.count())
            .where(
                and_(
                    sends.c.subject_id.in_(everyone),
                    sends.c.channel == d.channel,
                    sends.c.outcome == "sent",
                    sends.c.ts_ms >= now - window,
                )
            )
            .group_by(sends.c.subject_id)
        ):
            recent[owner[sid]] += int(n)
        addresses = {p: normalize.email(traits_of.get(p, {}).get("email")) for p in profiles}
        all_hashes = {p: [self.rt.vault.contact_hash("email", a)] if a else [] for p, a in addresses.items()}
        for p, hs in member_hashes.items():
            all_hashes[p].extend(hs)
        flat = sorted({h for hs in all_hashes.values() for h in hs})
        suppressed = self._suppressed_hashes(d.channel, flat, conn)
        out: list[tuple[str, str, dict[str, Any] | None]] = []
        # special data categories the segment uses (a health-interest trait): each needs its opt-in
        categories = self.rt.segments.categories(d.segment)
        for p in profiles:
            if done.get(p) in ("sent", "sending"):
                out.append((p, "already_sent", None))
                continue
            decision = self.rt.consent.can_use(p, d.purpose, conn=conn, categories=categories)
            if not decision.allowed:
                why = " ".join(decision.reasons)
                reason = (
                    "skipped:restricted"
                    if "restricted" in why
                    else "skipped:sensitive"
                    if "opt-in (sensitive." in why or "limited the use" in why
                    else "skipped:no_consent"
                )
                out.append((p, reason, None))
                continue
            if addresses[p] is None:
                out.append((p, "skipped:no_address", None))
                continue
            if any(h in suppressed for h in all_hashes[p]):
                out.append((p, "skipped:suppressed", None))
                continue
            if recent[p] >= limit:
                out.append((p, "skipped:frequency_cap", None))
                continue
            if self.quiet is not None and d.channel in self.quiet_channels:
                tz = self._timezone(groups[p], conn) or "UTC"
                try:
                    local = dt.datetime.fromtimestamp(now / 1000, tz=zoneinfo.ZoneInfo(tz)).time()
                except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                    local = dt.datetime.fromtimestamp(now / 1000, tz=dt.UTC).time()
                if in_quiet_hours(local, self.quiet):
                    out.append((p, "skipped:quiet_hours", None))
                    continue
            personal = self.rt.consent.can_use(p, "personalization", conn=conn).allowed
            traits = traits_of.get(p, {}) if personal else {}
            out.append((p, "send", {"address": addresses[p], "traits": traits, "personal": personal}))
        return out

    def _suppressed_hashes(self, channel: str, hashes: list[str], conn: Any) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(hashes), 500):
            found.update(
                conn.execute(
                    select(suppressions.c.hash).where(
                        and_(
                            suppressions.c.hash.in_(hashes[i : i + 500]),
                            suppressions.c.channel.in_([channel, "all"]),
                        )
                    )
                ).scalars()
            )
        return found

    # -- rendering -----------------------------------------------------------------------------
    def unsubscribe_token(self, profile: str, cid: int, channel: str) -> str:
        return Signer(self.rt.vault).sign("unsubscribe", {"s": profile, "c": cid, "ch": channel}, UNSUBSCRIBE_TTL_MS)

    def render(self, cid: int, d: Definition, profile: str, info: dict[str, Any]) -> tuple[str, str, dict[str, str]]:
        base = self.rt.settings.public_url.rstrip("/")
        token = self.unsubscribe_token(profile, cid, d.channel)
        url = f"{base}/v1/unsubscribe/{token}"
        sender_domain = d.sender.rpartition("@")[2].rstrip(">") or "candor.invalid"
        text_tpl = d.template if info["personal"] else d.generic_template
        traits = info["traits"]
        body = _compiled(_LENIENT, text_tpl).render(traits=traits, first_name=traits.get("firstName", ""))
        subject = _compiled(_ENV, d.subject).render(traits={}, first_name="")
        footer = (
            f"\n\n--\n{d.postal_address}\nYou receive this because you agreed to {d.purpose}. "
            f"Unsubscribe in one click: {url}\n"
        )
        headers = {
            "List-Unsubscribe": f"<mailto:unsubscribe@{sender_domain}?subject=unsubscribe-{cid}>, <{url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
        return subject, body + footer, headers

    def preview(self, name: str) -> dict[str, Any]:
        cid, d, state = self._load(name)
        members = self.rt.segments.evaluate(d.segment)
        now = self.now()
        counts: Counter[str] = Counter()
        sample: dict[str, str] = {}
        with self.rt.store.engine.connect() as conn:
            for i in range(0, len(members), 200):
                for profile, outcome, info in self.decide_many(cid, d, members[i : i + 200], conn, now):
                    if outcome == "send" and info is not None:
                        variant = "personalised" if info["personal"] else "generic"
                        counts[f"send:{variant}"] += 1
                        if variant not in sample:
                            sample[variant] = self.render(cid, d, profile, {**info, "traits": {}})[1][:2000]
                    else:
                        counts[outcome] += 1
        return {"campaign": name, "state": state, "members": len(members), "outcomes": dict(counts), "sample": sample}

    # -- sending -------------------------------------------------------------------------------
    def send(self, name: str, *, actor: str) -> dict[str, Any]:
        cid, d, _ = self._load(name)
        if not self.rt.mailer.configured:
            raise CampaignError("no mail server is configured (CANDOR_SMTP_URL)", 503)
        with self.rt.store.write() as conn:
            conn.execute(update(campaigns).where(campaigns.c.id == cid).values(state="sending"))
            audit.record(conn, actor, "campaign.send", target=f"campaign:{cid}")
        members = self.rt.segments.evaluate(d.segment)
        counts: Counter[str] = Counter()
        spent = 0.0
        started = time.perf_counter()
        with self.rt.mailer.session() as mail:
            spent = self._send_all(cid, d, members, mail, counts)
        final = "failed" if counts["failed"] else "sent"
        with self.rt.store.write() as conn:
            conn.execute(update(campaigns).where(campaigns.c.id == cid).values(state=final, sent_ms=now_ms()))
            audit.record(conn, actor, "campaign.sent", target=f"campaign:{cid}", details=dict(counts))
        return {
            "campaign": name,
            "state": final,
            "outcomes": dict(counts),
            "spent": round(spent, 4),
            "seconds": round(time.perf_counter() - started, 3),
        }

    def _send_all(self, cid: int, d: Definition, members: list[str], mail: Any, counts: Counter[str]) -> float:
        """Decide for 200 recipients at a time; mark a batch ``sending`` before the first message leaves and
        record the outcomes after it: a crash mid-batch leaves ``sending`` rows that a resume never sends
        again (at most once), and failed messages are retried by a resume."""
        spent = 0.0
        for i in range(0, len(members), 200):
            now = self.now()
            with self.rt.store.engine.connect() as conn:
                decided = self.decide_many(cid, d, members[i : i + 200], conn, now)
            skipped: list[tuple[str, str]] = []
            to_send: list[tuple[str, dict[str, Any]]] = []
            for profile, outcome, info in decided:
                if outcome == "already_sent":
                    counts["already_sent"] += 1
                elif outcome == "send" and info is not None:
                    if d.budget is not None and spent + d.cost_per_message > d.budget:
                        skipped.append((profile, "skipped:budget"))
                    else:
                        spent += d.cost_per_message
                        to_send.append((profile, info))
                else:
                    skipped.append((profile, outcome))
            rows = [(p, o, None, None, 0) for p, o in skipped]
            rows += [(p, "sending", None, None, 0) for p, _ in to_send]
            self._log_many(cid, d.channel, rows)
            results = []
            for profile, info in to_send:
                subject, body, headers = self.render(cid, d, profile, info)
                variant = "personalised" if info["personal"] else "generic"
                message_id, attempts = None, 0
                for attempts in range(1, RETRIES + 1):
                    try:
                        message_id = mail.send(info["address"], subject, body, headers={"From": d.sender, **headers})
                        break
                    except MailError:
                        time.sleep(0.2 * attempts)
                if message_id is None:
                    spent -= d.cost_per_message
                results.append((profile, "sent" if message_id else "failed", variant, message_id, attempts))
            self._log_many(cid, d.channel, results)
            for _, outcome in skipped:
                counts[outcome] += 1
            for r in results:
                counts[r[1]] += 1
        return spent

    def _log_many(self, cid: int, channel: str, rows: Sequence[tuple[str, str, str | None, str | None, int]]) -> None:
        if not rows:
            return
        stmt = self.rt.store.insert(sends)
        stmt = stmt.on_conflict_do_update(
            index_elements=["campaign_id", "subject_id"],
            set_={
                "outcome": stmt.excluded.outcome,
                "variant": stmt.excluded.variant,
                "ts_ms": stmt.excluded.ts_ms,
                "message_id": stmt.excluded.message_id,
                "attempts": sends.c.attempts + stmt.excluded.attempts,
            },
        )
        ts = self.now()
        with self.rt.store.write() as conn:
            conn.execute(
                stmt,
                [
                    {
                        "campaign_id": cid,
                        "subject_id": p,
                        "outcome": o,
                        "variant": v,
                        "channel": channel,
                        "ts_ms": ts,
                        "message_id": mid,
                        "attempts": a,
                    }
                    for p, o, v, mid, a in rows
                ],
            )

    def _log(
        self, cid: int, profile: str, outcome: str, variant: str | None, channel: str, mid: str | None, attempts: int
    ) -> None:
        stmt = self.rt.store.insert(sends)
        stmt = stmt.on_conflict_do_update(
            index_elements=["campaign_id", "subject_id"],
            set_={
                "outcome": stmt.excluded.outcome,
                "variant": stmt.excluded.variant,
                "ts_ms": stmt.excluded.ts_ms,
                "message_id": stmt.excluded.message_id,
                "attempts": sends.c.attempts + stmt.excluded.attempts,
            },
        )
        with self.rt.store.write() as conn:
            conn.execute(
                stmt,
                {
                    "campaign_id": cid,
                    "subject_id": profile,
                    "outcome": outcome,
                    "variant": variant,
                    "channel": channel,
                    "ts_ms": self.now(),
                    "message_id": mid,
                    "attempts": attempts,
                },
            )

    def report(self, name: str) -> dict[str, Any]:
        cid, d, state = self._load(name)
        with self.rt.store.engine.connect() as conn:
            rows = conn.execute(
                select(sends.c.outcome, sends.c.variant, func.count())
                .where(sends.c.campaign_id == cid)
                .group_by(sends.c.outcome, sends.c.variant)
            ).all()
        outcomes: Counter[str] = Counter()
        variants: Counter[str] = Counter()
        for outcome, variant, n in rows:
            outcomes[outcome] += n
            if outcome == "sent" and variant:
                variants[variant] += n
        sent = outcomes.get("sent", 0)
        return {
            "campaign": name,
            "state": state,
            "purpose": d.purpose,
            "outcomes": dict(outcomes),
            "variants": dict(variants),
            "spend": round(sent * d.cost_per_message, 4),
            "budget": d.budget,
        }

    # -- unsubscribe ---------------------------------------------------------------------------
    def unsubscribe(self, token: str) -> dict[str, Any]:
        """One click: the purpose is withdrawn in the ledger and the addresses suppressed, at once."""
        from candor.web.common import BadToken

        try:
            payload = Signer(self.rt.vault).verify("unsubscribe", token)
        except BadToken:
            raise CampaignError("this unsubscribe link is not valid", 404) from None
        profile, channel = str(payload["s"]), str(payload.get("ch", "email"))
        purpose = f"marketing.{channel}"
        with self.rt.store.write() as conn:
            members = self.rt.identity.members(profile, conn)
            alive = list(
                conn.execute(
                    select(subjects_t.c.subject_id).where(
                        subjects_t.c.subject_id.in_(members), subjects_t.c.state != "erased"
                    )
                ).scalars()
            )
            if alive:
                self.rt.consent.record(
                    conn, alive[0], denied=frozenset({purpose}), source="email_unsubscribe", actor="subject"
                )
            hashes = conn.execute(
                select(identifiers.c.id_type, identifiers.c.contact_hash).where(
                    identifiers.c.subject_id.in_(members),
                    identifiers.c.contact_hash.is_not(None),
                    identifiers.c.id_type == "email",
                )
            ).all()
            for id_type, h in hashes:
                conn.execute(
                    self.rt.store.insert_ignore(suppressions),
                    {
                        "channel": channel,
                        "hash": h,
                        "id_type": id_type,
                        "reason": "unsubscribe",
                        "source": f"campaign:{payload.get('c')}",
                        "created_ms": now_ms(),
                    },
                )
        for m in members:
            self.rt.consent.invalidate(m)
        return {"unsubscribed": True, "channel": channel}
