"""A small generated world for insight tests, and brute-force Python computations of every insight."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import select

from candor.app import Runtime
from candor.store.schema import campaigns, events, profile_subjects, sends, sources, subjects

NOW = 1_790_000_000_000  # 2026-09-21
DAY = 86_400_000
SOURCES = {1: "web", 2: "app", 3: "pos", 4: "email", 5: "callcenter"}
CHANNEL = {1: "web", 2: "app", 3: "store", 4: "email", 5: "call_center"}
EVENTS = {
    1: ["Product Viewed", "Product Viewed", "Product Added", "Order Completed", "Signed Up"],
    2: ["Product Viewed", "Product Added", "Order Completed"],
    3: ["Order Completed"],
    4: ["Email Opened", "Email Link Clicked"],
    5: ["Call Completed", "Survey Answered"],
}


@dataclass
class Ev:
    id: int
    profile: str
    subject: str
    event: str
    ts: int
    channel: str
    revenue: float | None
    props: dict[str, Any]


@dataclass
class World:
    profiles: dict[str, list[str]]  # profile id → subjects
    events: list[Ev] = field(default_factory=list)
    sends: list[tuple[str, int, str, str]] = field(default_factory=list)  # profile, ts, channel, campaign


def build(
    rt: Runtime, rng: random.Random, people: int = 160, n_events: int = 4000, prefix: str = "p", first_id: int = 1
) -> World:
    """People (some joined into profiles), events from five sources over 200 days, and campaign sends."""
    with rt.store.write() as conn:
        have = {r[0] for r in conn.execute(select(sources.c.id))}
        missing = [
            {
                "id": i,
                "name": n,
                "write_key_hash": f"h{i}",
                "strict": False,
                "personal_properties": "[]",
                "created_ms": 0,
            }
            for i, n in SOURCES.items()
            if i not in have
        ]
        if missing:
            conn.execute(sources.insert(), missing)
        sids = [f"{prefix}{i:04d}" for i in range(people)]
        conn.execute(subjects.insert(), [{"subject_id": s, "created_ms": 0, "state": "active"} for s in sids])
        profiles: dict[str, list[str]] = {}
        i = 0
        while i < people:
            group = sids[i : i + rng.choice([1, 1, 1, 2])]
            i += len(group)
            profiles[min(group)] = group
            if len(group) > 1:
                conn.execute(profile_subjects.insert(), [{"subject_id": s, "profile_id": min(group)} for s in group])
        owner = {s: p for p, ss in profiles.items() for s in ss}
        w = World(profiles)
        rows = []
        for k in range(n_events):
            src = rng.choice([1, 1, 1, 2, 3, 4, 5])
            name = rng.choice(EVENTS[src])
            sid = rng.choice(sids)
            ts = NOW - rng.randint(0, 200 * DAY)
            props: dict[str, Any] = {}
            revenue = None
            if name == "Order Completed":
                revenue = round(rng.uniform(5, 300), 2)
                props = {"revenue": revenue, "currency": "USD"}
            elif name == "Survey Answered":
                kind = rng.choice(["nps", "csat"])
                props = {"survey_type": kind, "score": rng.randint(0, 10) if kind == "nps" else rng.randint(1, 5)}
                if rng.random() < 0.1:
                    props["score"] = 42  # out of range: ignored
            ctx: dict[str, Any] = {}
            if src == 1:
                ctx = {"library": {"name": "analytics.js", "version": "1"}}
            elif src == 2:
                ctx = {"app": {"name": "Shop"}, "library": {"name": "analytics-ios"}}
            rows.append(
                {
                    "id": first_id + k,
                    "source_id": src,
                    "message_id": f"{prefix}m{k}",
                    "type": "track",
                    "event": name,
                    "subject_id": sid,
                    "ts_ms": ts,
                    "received_ms": NOW,
                    "properties": orjson.dumps(props).decode(),
                    "context": orjson.dumps(ctx).decode(),
                    "sealed": b"x",
                }
            )
            w.events.append(Ev(first_id + k, owner[sid], sid, name, ts, CHANNEL[src], revenue, props))
        conn.execute(events.insert(), rows)
        cid = conn.execute(select(campaigns.c.id).where(campaigns.c.name == f"{prefix}-spring")).scalar()
        if cid is None:
            cid = conn.execute(
                campaigns.insert().values(
                    name=f"{prefix}-spring",
                    segment_id=1,
                    channel="email",
                    purpose="marketing.email",
                    definition="{}",
                    state="sent",
                    created_ms=0,
                    created_by="test",
                )
            ).inserted_primary_key[0]
        for sid in rng.sample(sids, people // 3):
            ts = NOW - rng.randint(0, 200 * DAY)
            outcome = rng.choice(["sent", "sent", "sent", "skipped:no_consent"])
            conn.execute(
                sends.insert(),
                {
                    "campaign_id": cid,
                    "subject_id": sid,
                    "outcome": outcome,
                    "channel": "email",
                    "ts_ms": ts,
                    "attempts": 1,
                },
            )
            if outcome == "sent":
                w.sends.append((owner[sid], ts, "email", f"{prefix}-spring"))
    return w


def allowed(rt: Runtime, w: World) -> set[str]:
    """The profiles ``can_use`` allows analytics for: the reference decision."""
    with rt.store.engine.connect() as conn:
        return {p for p in w.profiles if rt.consent.can_use(p, "analytics", conn=conn, now=NOW).allowed}


def touchpoints(w: World, ok: set[str]) -> dict[str, list[tuple[int, str, str | None, str | None]]]:
    """Per allowed profile: (ts, channel, event, campaign), events and sends."""
    out: dict[str, list[tuple[int, str, str | None, str | None]]] = defaultdict(list)
    for e in w.events:
        if e.profile in ok:
            out[e.profile].append((e.ts, e.channel, e.event, e.props.get("campaign_id")))
    for p, ts, ch, camp in w.sends:
        if p in ok:
            out[p].append((ts, ch, None, camp))
    return out


# -- brute force ---------------------------------------------------------------------------------------
def journeys(
    w: World, ok: set[str], goal: str, since: int, until: int, win: int, steps: int
) -> dict[tuple[str, bool], int]:
    tps = touchpoints(w, ok)
    conv: dict[str, int] = {}
    for e in w.events:
        if e.profile in ok and e.event == goal and since <= e.ts < until:
            conv[e.profile] = min(conv.get(e.profile, e.ts), e.ts)
    pop = {p for p, ts in tps.items() if any(since <= t < until for t, *_ in ts)} | set(conv)
    out: dict[tuple[str, bool], int] = defaultdict(int)
    for p in pop:
        ref = conv.get(p, until)
        seq = sorted((t, ch) for t, ch, ev, _ in tps.get(p, []) if ref - win <= t < ref and (ev or "") != goal)
        ded: list[str] = []
        for _, ch in seq:
            if not ded or ded[-1] != ch:
                ded.append(ch)
        path = " > ".join(ded[-steps:]) if ded else "(no touchpoint)"
        out[(path, p in conv)] += 1
    return dict(out)


def funnel(w: World, ok: set[str], steps: list[str], since: int, until: int, win: int) -> dict[tuple[str, int], int]:
    by_p: dict[str, list[Ev]] = defaultdict(list)
    for e in w.events:
        if e.profile in ok:
            by_p[e.profile].append(e)
    out: dict[tuple[str, int], int] = defaultdict(int)
    for _, evs in by_p.items():
        evs.sort(key=lambda e: (e.ts, e.id))
        first = next((e for e in evs if e.event == steps[0] and since <= e.ts < until), None)
        if first is None:
            continue
        t, stage = first.ts, 1
        for s in steps[1:]:
            nxt = [e.ts for e in evs if e.event == s and t < e.ts <= first.ts + win]
            if not nxt:
                break
            t, stage = min(nxt), stage + 1
        out[(first.channel, stage)] += 1
    return dict(out)


def attribution(
    w: World,
    ok: set[str],
    conversion: str,
    since: int,
    until: int,
    win: int,
    half: float,
) -> dict[str, dict[str, float]]:
    tps = touchpoints(w, ok)
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    who: dict[str, set[str]] = defaultdict(set)
    for c in w.events:
        if c.profile not in ok or c.event != conversion or not since <= c.ts < until:
            continue
        rev = c.revenue or 0.0
        seq = sorted(
            (t, ch) for t, ch, ev, _ in tps.get(c.profile, []) if c.ts - win <= t < c.ts and (ev or "") != conversion
        )
        if not seq:
            credits = {"(direct)": dict.fromkeys(("first_touch", "last_touch", "linear", "time_decay"), 1.0)}
        else:
            credits = defaultdict(lambda: defaultdict(float))
            weights = [0.5 ** ((c.ts - t) / half) for t, _ in seq]
            for i, (_, ch) in enumerate(seq):
                credits[ch]["first_touch"] += 1.0 if i == 0 else 0.0
                credits[ch]["last_touch"] += 1.0 if i == len(seq) - 1 else 0.0
                credits[ch]["linear"] += 1.0 / len(seq)
                credits[ch]["time_decay"] += weights[i] / sum(weights)
        for ch, ms in credits.items():
            who[ch].add(c.profile)
            for m, v in ms.items():
                out[ch][m] += v
                out[ch][f"{m}_revenue"] += v * rev
    for ch in out:
        out[ch]["profiles"] = len(who[ch])
    return {k: dict(v) for k, v in out.items()}


def experience(w: World, ok: set[str], since: int, until: int, by: str) -> dict[tuple[str, str], dict[str, float]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for e in w.events:
        if e.profile not in ok or e.event != "Survey Answered" or not since <= e.ts < until:
            continue
        kind, score = e.props["survey_type"], e.props["score"]
        if not (0 <= score <= 10 if kind == "nps" else 1 <= score <= 5):
            continue
        g = e.channel if by == "channel" else datetime.fromtimestamp(e.ts / 1000, tz=UTC).strftime("%Y-%m")
        cell = out.setdefault(
            (g, kind), {"profiles": set(), "responses": 0, "promoters": 0, "detractors": 0, "satisfied": 0, "sum": 0.0}
        )
        cell["profiles"].add(e.profile)
        cell["responses"] += 1
        cell["promoters"] += kind == "nps" and score >= 9
        cell["detractors"] += kind == "nps" and score <= 6
        cell["satisfied"] += kind == "csat" and score >= 4
        cell["sum"] += score
    return {k: {**v, "profiles": len(v["profiles"])} for k, v in out.items()}


def ntile(n: int, buckets: int) -> list[int]:
    """SQL's ntile: the first n % buckets groups get one row more."""
    size, extra = divmod(n, buckets)
    out = []
    for b in range(buckets):
        out += [b + 1] * (size + (1 if b < extra else 0))
    return out


def rfm(w: World, ok: set[str], since: int, until: int) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for name in rfm_names(w, ok, since, until).values():
        out[name] += 1
    return dict(out)


def month_label(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m")


def clv_values(w: World, ok: set[str], since: int, until: int, horizon: int, until_for_tenure: int | None = None,
               ) -> dict[str, float]:  # fmt: skip
    agg: dict[str, list[float]] = {}
    for e in w.events:
        if e.profile in ok and e.event == "Order Completed" and since <= e.ts < until:
            a = agg.setdefault(e.profile, [0.0, math.inf])
            a[0] += e.revenue or 0.0
            a[1] = min(a[1], e.ts)
    end = until if until_for_tenure is None else until_for_tenure
    return {p: rev / max(1.0, (end - first) / (30.0 * DAY)) * horizon for p, (rev, first) in agg.items()}


def rfm_names(w: World, ok: set[str], since: int, until: int) -> dict[str, str]:
    agg: dict[str, list[float]] = {}
    for e in w.events:
        if e.profile in ok and e.event == "Order Completed" and since <= e.ts < until:
            a = agg.setdefault(e.profile, [0, 0, 0.0])
            a[0] = max(a[0], e.ts)
            a[1] += 1
            a[2] += e.revenue or 0.0
    ps = sorted(agg)
    score: dict[str, dict[str, int]] = {p: {} for p in ps}
    for dim, idx in (("r", 0), ("f", 1), ("m", 2)):
        order = sorted(ps, key=lambda p: (agg[p][idx], p))
        for p, t in zip(order, ntile(len(order), 5), strict=True):
            score[p][dim] = t
    names: dict[str, str] = {}
    for p in ps:
        r, f = score[p]["r"], score[p]["f"]
        if r >= 4 and f >= 4:
            names[p] = "champions"
        elif r >= 3 and f >= 3:
            names[p] = "loyal"
        elif r >= 4 and f <= 1:
            names[p] = "new"
        elif r >= 3:
            names[p] = "potential"
        elif r == 2 and f >= 3:
            names[p] = "at_risk"
        elif r == 2:
            names[p] = "hibernating"
        else:
            names[p] = "lost"
    return names


def month_index(ms: int) -> int:
    d = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return d.year * 12 + d.month - 1


def cohorts(w: World, ok: set[str], since: int, until: int, periods: int) -> dict[tuple[int, int], int]:
    acts: dict[str, list[int]] = defaultdict(list)
    for e in w.events:
        if e.profile in ok and e.ts < until:
            acts[e.profile].append(e.ts)
    out: dict[tuple[int, int], set[str]] = defaultdict(set)
    for p, ts in acts.items():
        first = min(ts)
        if first < since:
            continue
        c = month_index(first)
        for t in ts:
            o = month_index(t) - c
            if o <= periods:
                out[(c, o)].add(p)
    return {k: len(v) for k, v in out.items()}


def clv(w: World, ok: set[str], since: int, until: int, horizon: int) -> dict[int, int]:
    agg: dict[str, list[float]] = {}
    for e in w.events:
        if e.profile in ok and e.event == "Order Completed" and since <= e.ts < until:
            a = agg.setdefault(e.profile, [0.0, math.inf])
            a[0] += e.revenue or 0.0
            a[1] = min(a[1], e.ts)
    out: dict[int, int] = defaultdict(int)
    for rev, first in agg.values():
        value = rev / max(1.0, (until - first) / (30.0 * DAY)) * horizon
        band = 0 if value < 50 else 1 if value < 200 else 2 if value < 500 else 3 if value < 1000 else 4
        out[band] += 1
    return dict(out)
