"""Campaigns: the audience is decided at the moment of sending, one recipient at a time.

A campaign names a segment, a channel (campaigns/channels.py: email, SMS, webhook, or any other
registered one) and the purpose it serves (``marketing.email``). Sending walks the segment's
profiles and, for each, in this order: a send already made (resuming never sends twice), consent
for the purpose (``can_use``, which also covers restriction and objection), what the channel checks
beyond that (SMS: written proof), a contact address, the do-not-contact list, the frequency cap of
the channel, quiet hours in the recipient's own time, the budget. Every recipient ends with one row
in ``sends``: sent, failed, or skipped with the reason. Only recipients with ``personalization``
consent get the personalised template; the others get the generic one. Templates run in Jinja2's
sandbox (campaigns/templates.py) and are rendered against sample profiles when the campaign is
created, so a template error never leaves a campaign half sent.
"""

from __future__ import annotations

import logging
import queue
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from sqlalchemy import and_, desc, func, select, update

from candor import audit, normalize
from candor.campaigns import channels, templates
from candor.campaigns.caps import in_quiet_hours, local_time, parse_cap, parse_quiet
from candor.campaigns.channels import Compose, DeliveryError, DeliveryUnconfirmed, Outgoing
from candor.campaigns.definition import CampaignError, Definition
from candor.campaigns.destinations import Destinations
from candor.store import now_ms
from candor.store.schema import campaigns, events, identifiers, sends, sources, suppressions
from candor.store.schema import subjects as subjects_t
from candor.web.common import Signer

log = logging.getLogger("candor.campaigns")
UNSUBSCRIBE_TTL_MS = 400 * 86_400_000
BATCH = 200


class Campaigns:
    def __init__(self, rt: Any) -> None:
        self.rt = rt
        s = rt.settings
        self.caps = {"email": parse_cap(s.email_frequency_cap)}
        self.caps.update({ch: parse_cap(cap) for ch, cap in s.frequency_cap_map.items()})
        self.quiet = parse_quiet(s.quiet_hours)
        self.quiet_channels = {c.strip() for c in s.quiet_hours_channels.split(",") if c.strip()}
        self.now = now_ms  # the clock sends are decided by (tests pin it)
        self.destinations = Destinations(rt)
        from candor.campaigns import export

        export.register()
        from candor.campaigns.audiences import Audiences

        self.audiences = Audiences(rt)
        erasure = getattr(getattr(rt, "rights", None), "erasure", None)
        if erasure is not None:  # an erasure reaches every destination that received the person's data
            erasure.hooks.append(self.destinations.notify_erasure)
            erasure.after.append(self.destinations.flush)

    @property
    def cap(self) -> tuple[int, int]:
        """The email frequency cap (messages, window in ms)."""
        return self.caps["email"]

    @cap.setter
    def cap(self, value: tuple[int, int]) -> None:
        self.caps["email"] = value

    def cost_of(self, d: Definition) -> float:
        if d.cost_per_message is not None:
            return d.cost_per_message
        return float(self.rt.settings.channel_cost_map.get(d.channel, 0.0))

    # -- definitions ---------------------------------------------------------------------------
    def create(self, raw: dict[str, Any], *, actor: str) -> dict[str, Any]:
        d = Definition.parse(raw, set(self.rt.taxonomy.names()))
        d.check_templates()
        channel = channels.get(d.channel)
        channel.validate(self.rt, d)
        seg = self.rt.segments.get(d.segment)
        if seg is None:
            raise CampaignError(f"segment: no segment named {d.segment!r}", 404)
        stored = {**raw, "purpose": d.purpose, "cost_per_message": self.cost_of(d)}
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
                    "definition": orjson.dumps(stored).decode(),
                    "state": "draft",
                    "created_ms": now_ms(),
                    "created_by": actor[:100],
                },
            )
            cid = int(res.inserted_primary_key[0])
            audit.record(
                conn,
                actor,
                "campaign.created",
                target=f"campaign:{cid}",
                details={"purpose": d.purpose, "channel": d.channel},
            )
        return {"id": cid, "name": d.name, "state": "draft", "channel": d.channel}

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

    def _load_id(self, cid: int) -> Definition:
        with self.rt.store.engine.connect() as conn:
            text = conn.execute(select(campaigns.c.definition).where(campaigns.c.id == cid)).scalar()
        if text is None:
            raise CampaignError(f"no campaign {cid}", 404)
        return Definition.parse(orjson.loads(text), set(self.rt.taxonomy.names()))

    def names(self) -> list[dict[str, Any]]:
        with self.rt.store.engine.connect() as conn:
            return [
                dict(r)
                for r in conn.execute(
                    select(campaigns.c.name, campaigns.c.channel, campaigns.c.purpose, campaigns.c.state).order_by(
                        campaigns.c.id
                    )
                ).mappings()
            ]

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
        order (already sent, consent, the channel's own check, address, do-not-contact, frequency cap, quiet
        hours), one query per check for the whole batch."""
        from candor.store.schema import profile_subjects

        channel = channels.get(d.channel)
        contact = channel.contact_for(self.rt, d)
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
        limit, window = self.caps.get(d.channel, (10**9, 86_400_000))
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
        region = self.rt.settings.default_phone_region
        addresses: dict[str, str | None] = {}
        for p in profiles:
            value = traits_of.get(p, {}).get(contact) if contact else None
            if contact == "email":
                addresses[p] = normalize.email(value)
            elif contact == "phone":
                addresses[p] = normalize.phone(value, region)
            else:
                addresses[p] = None
        all_hashes = {
            p: [self.rt.vault.contact_hash(contact, a)] if (a and contact) else [] for p, a in addresses.items()
        }
        for p, hs in member_hashes.items():
            all_hashes[p].extend(hs)
        flat = sorted({h for hs in all_hashes.values() for h in hs})
        suppressed = self._suppressed_hashes(channel.suppression_channel(self.rt, d), flat, conn)
        tracked_channel = d.channel == "email"
        out: list[tuple[str, str, dict[str, Any] | None]] = []
        # special data categories the segment uses (a health-interest trait): each needs its opt-in
        categories = self.rt.segments.categories(d.segment)
        for p in profiles:
            if done.get(p) in ("sent", "sending", "unconfirmed"):
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
            extra = channel.check(self.rt, conn, p, d)
            if extra is not None:
                out.append((p, extra, None))
                continue
            if contact and addresses[p] is None:
                out.append((p, "skipped:no_address", None))
                continue
            if any(h in suppressed for h in all_hashes[p]):
                out.append((p, "skipped:suppressed", None))
                continue
            if recent[p] >= limit:
                out.append((p, "skipped:frequency_cap", None))
                continue
            if (
                self.quiet is not None
                and d.channel in self.quiet_channels
                and in_quiet_hours(local_time(now, self._timezone(groups[p], conn)), self.quiet)
            ):
                out.append((p, "skipped:quiet_hours", None))
                continue
            personal = self.rt.consent.can_use(p, "personalization", conn=conn).allowed
            tracked = tracked_channel and self.rt.consent.can_use(p, "analytics", conn=conn).allowed
            traits = traits_of.get(p, {}) if personal else {}
            out.append(
                (p, "send", {"address": addresses[p], "traits": traits, "personal": personal, "tracked": tracked})
            )
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
    def unsubscribe_token(self, profile: str, cid: int, channel: str, purpose: str | None = None) -> str:
        payload: dict[str, Any] = {"s": profile, "c": cid, "ch": channel}
        if purpose is not None:
            payload["p"] = purpose
        return Signer(self.rt.vault).sign("unsubscribe", payload, UNSUBSCRIBE_TTL_MS)

    def render(self, cid: int, d: Definition, profile: str, info: dict[str, Any]) -> Outgoing:
        """The message for one recipient: the template (campaigns/templates.py), framed by the channel."""
        channel = channels.get(d.channel)
        base = self.rt.settings.public_url.rstrip("/")
        token = self.unsubscribe_token(profile, cid, channel.suppression_channel(self.rt, d), d.purpose)
        personal = bool(info["personal"])
        body = templates.render_body(
            d.template if personal else d.generic_template,
            info["traits"],
            personal,
            recommendations=self.rt.recommend.template_helper(profile if personal else None),
        )
        return channel.compose(
            self.rt,
            Compose(
                campaign_id=cid,
                definition=d,
                profile=profile,
                address=info.get("address"),
                subject=templates.render_subject(d.subject),
                body=body,
                personal=personal,
                tracked=bool(info.get("tracked")),
                unsubscribe_url=f"{base}/v1/unsubscribe/{token}",
            ),
        )

    def preview(self, name: str) -> dict[str, Any]:
        cid, d, state = self._load(name)
        members = self.rt.segments.evaluate(d.segment)
        now = self.now()
        counts: Counter[str] = Counter()
        sample: dict[str, str] = {}
        with self.rt.store.engine.connect() as conn:
            for i in range(0, len(members), BATCH):
                for profile, outcome, info in self.decide_many(cid, d, members[i : i + BATCH], conn, now):
                    if outcome == "send" and info is not None:
                        variant = "personalised" if info["personal"] else "generic"
                        counts[f"send:{variant}"] += 1
                        if variant not in sample:
                            shown = {**info, "traits": {}, "tracked": False, "address": None}
                            sample[variant] = self.render(cid, d, profile, shown).text[:2000]
                    else:
                        counts[outcome] += 1
        return {
            "campaign": name,
            "state": state,
            "channel": d.channel,
            "members": len(members),
            "outcomes": dict(counts),
            "sample": sample,
        }

    # -- sending -------------------------------------------------------------------------------
    def send(self, name: str, *, actor: str) -> dict[str, Any]:
        cid, d, _ = self._load(name)
        sender = Senders(channels.get(d.channel), self.rt, d)  # refuses before anything is marked (no mail server)
        try:
            with self.rt.store.write() as conn:
                conn.execute(update(campaigns).where(campaigns.c.id == cid).values(state="sending"))
                audit.record(conn, actor, "campaign.send", target=f"campaign:{cid}")
            members = self.rt.segments.evaluate(d.segment)
            counts: Counter[str] = Counter()
            started = time.perf_counter()
            spent = self._send_all(cid, d, members, sender, counts)
        finally:
            sender.close()
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

    def resend(self, cid: int, profiles: list[str]) -> dict[str, int]:
        """Send a campaign again to some of its recipients (a dead-letter replay): decided again now."""
        d = self._load_id(cid)
        sender = Senders(channels.get(d.channel), self.rt, d)
        counts: Counter[str] = Counter()
        try:
            self._send_all(cid, d, sorted(set(profiles)), sender, counts)
        finally:
            sender.close()
        return dict(counts)

    def _spent(self, cid: int, d: Definition) -> float:
        with self.rt.store.engine.connect() as conn:
            n = conn.execute(
                select(func.count()).where(and_(sends.c.campaign_id == cid, sends.c.outcome == "sent"))
            ).scalar()
        return int(n or 0) * self.cost_of(d)

    def _send_all(
        self, cid: int, d: Definition, members: list[str], sender: Senders, counts: Counter[str]
    ) -> float:
        """Decide for 200 recipients at a time; mark a batch ``sending`` before the first message leaves and
        record the outcomes after it: a crash mid-batch leaves ``sending`` rows that a resume never sends
        again (at most once), and failed messages are retried by a resume (or a dead-letter replay)."""
        cost = self.cost_of(d)
        spent = self._spent(cid, d)  # what earlier runs of this campaign spent counts against the budget
        dest = self.destinations.get(d.destination) if channels.get(d.channel).destination_kind else None
        for i in range(0, len(members), BATCH):
            now = self.now()
            with self.rt.store.engine.connect() as conn:
                decided = self.decide_many(cid, d, members[i : i + BATCH], conn, now)
            skipped: list[tuple[str, str]] = []
            to_send: list[tuple[str, dict[str, Any]]] = []
            for profile, outcome, info in decided:
                if outcome == "already_sent":
                    counts["already_sent"] += 1
                elif outcome == "send" and info is not None:
                    if d.budget is not None and spent + cost > d.budget + 1e-9:
                        skipped.append((profile, "skipped:budget"))
                    else:
                        spent += cost
                        to_send.append((profile, info))
                else:
                    skipped.append((profile, outcome))
            rows = [(p, o, None, None, 0) for p, o in skipped]
            rows += [(p, "sending", None, None, 0) for p, _ in to_send]
            self._log_many(cid, d.channel, rows)
            results = []
            dead: list[tuple[str, int, str]] = []
            messages = [self.render(cid, d, profile, info) for profile, info in to_send]
            for (profile, _), message, (message_id, outcome, attempts, error) in zip(
                to_send, messages, sender.deliver_all(messages), strict=True
            ):
                if error is not None:
                    spent -= cost
                    dead.append((profile, attempts, error))
                results.append((profile, outcome, message.variant, message_id, attempts))
            self._log_many(cid, d.channel, results)
            if dest is not None:
                delivered = [p for p, o, *_ in results if o == "sent"]
                refs = self.destinations.refs(dest.id, delivered)
                with self.rt.store.write() as conn:
                    self.destinations.remember(conn, dest.id, refs)
                    self.destinations.resolved(conn, dest.id, cid, delivered)
                    self.destinations.resolved(conn, dest.id, cid, [p for p, _ in skipped], "skipped")
                    for profile, attempts, error in dead:
                        self.destinations.dead(
                            conn,
                            dest.id,
                            "message",
                            campaign_id=cid,
                            profile=profile,
                            payload=None,
                            attempts=attempts,
                            error=error,
                        )
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

    # -- reporting -----------------------------------------------------------------------------
    def report(self, name: str) -> dict[str, Any]:
        """Outcomes (sent, failed, skipped by reason), variants, engagement, spend, conversions and ROI."""
        from candor.campaigns import spend

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
        cost = self.cost_of(d)
        total = round(sent * cost, 4)
        window = d.conversion_window_days or self.rt.settings.conversion_window_days
        result = spend.attribute(self.rt, cid, window)
        roi = round((result["revenue"] - total) / total, 4) if total > 0 else None
        return {
            "campaign": name,
            "state": state,
            "channel": d.channel,
            "purpose": d.purpose,
            "outcomes": dict(outcomes),
            "variants": dict(variants),
            "engagement": spend.engagement(self.rt, cid),
            "cost_per_message": cost,
            "spend": total,
            "budget": d.budget,
            "conversions": result["conversions"],
            "revenue": round(result["revenue"], 2),
            "roi": roi,
            "attribution": {
                "model": "last touch (a send or a click)",
                "event": self.rt.settings.conversion_event,
                "window_days": window,
            },
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
        purpose = str(payload.get("p") or f"marketing.{channel}")
        id_types = {"email": ["email"], "sms": ["phone"], "phone": ["phone"], "post": ["address"]}.get(
            channel, ["email", "phone"]
        )
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
                    identifiers.c.id_type.in_(id_types),
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


class Senders:
    """The senders of one campaign run: one, or as many as the channel's ``connections`` delivering from
    threads at once (each sender used by one thread at a time). Outcomes come back in message order:
    ``sent`` with the message id, ``unconfirmed`` (handed over, then the connection failed: never sent
    again), or ``failed`` with the error (a resume or a dead-letter replay retries it)."""

    def __init__(self, channel: channels.Channel, rt: Any, d: Definition) -> None:
        n = max(1, channel.connections(rt))
        self._pool: ThreadPoolExecutor | None = None
        self.senders = [channel.open(rt, d)]  # the first refuses when the channel cannot send at all
        try:
            self.senders += [channel.open(rt, d) for _ in range(n - 1)]
        except BaseException:
            self.close()
            raise
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for one in self.senders:
            self._idle.put(one)
        if n > 1:
            self._pool = ThreadPoolExecutor(n, thread_name_prefix="candor-send")

    def _deliver(self, message: Outgoing) -> tuple[str | None, str, int, str | None]:
        sender = self._idle.get()
        try:
            try:
                return sender.deliver(message), "sent", sender.attempts, None
            except DeliveryUnconfirmed:
                return None, "unconfirmed", sender.attempts, None  # may have been delivered (at most once)
            except DeliveryError as exc:
                return None, "failed", sender.attempts, str(exc)
        finally:
            self._idle.put(sender)

    def deliver_all(self, messages: list[Outgoing]) -> list[tuple[str | None, str, int, str | None]]:
        if self._pool is None or len(messages) < 2:
            return [self._deliver(m) for m in messages]
        return list(self._pool.map(self._deliver, messages))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        for one in self.senders:
            one.close()
