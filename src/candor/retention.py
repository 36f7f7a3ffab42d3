"""Retention: how long each kind of data is kept, and the job that enforces it.

Rules name a data category or a purpose and a period: ``raw_events=13mo`` (behavioural events),
``ip_address=30d`` (full IP addresses: kept apart in ``event_ips`` since the data dictionary, and
sealed inside older events' context and properties),
``rejected_records=30d`` (the record of each refused event), ``purpose:necessary=10y`` (events the
tracking plan records for that purpose, such as orders). An event needed for several purposes is kept
for the longest of their periods; one whose purposes have no rule of their own falls under
``raw_events``. Events that need no purpose in the tracking plan (identify, alias, group: the profile
itself) are kept while the person is, and go with an erasure. Periods are ``N`` followed by ``d``
(days), ``w`` (weeks), ``mo`` (months of 30 days) or ``y`` (years of 365 days), or ``keep``.

Rules come from *sources*: ``CANDOR_RETENTION`` today, and any other source registered with
``register_source``: the data dictionary's per-field retention is one (target ``data_dictionary``:
each field declared with a retention is removed from the events older than it, clear and sealed
parts, and from the analytics store). When two sources give
the same target a period, the shorter one applies: a retention period is a maximum.

The *job* (``run``) applies every rule with the handler registered for its target (``register``):
deletions in chunks of their own transaction, re-sealing without the IP address in chunks, each
chunk's place saved in ``retention_state``, so an interrupted run resumes where it stopped. One
process runs the job at a time (a lease row). Each run that changes something is one audit entry with
the counts per rule and the cut-off times, never a value. The server runs it every
``CANDOR_RETENTION_SECONDS``; ``candor retention run`` runs it now.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import and_, delete, func, select, update

from candor import audit
from candor.config import ConfigError
from candor.store import now_ms
from candor.store.schema import events, rejected_events, retention_state

log = logging.getLogger("candor.retention")
DAY_MS = 86_400_000
UNITS = {"d": 1, "w": 7, "mo": 30, "y": 365}
CHUNK = 2000
LEASE_MS = 15 * 60_000
LATE_OVERLAP = 1000  # ids re-read at the boundary of the "arrived late" window (idempotent)

# The data categories the built-in handlers know, with what each covers (also in the records of
# processing and docs/privacy-model.md).
CATEGORIES: dict[str, str] = {
    "raw_events": "behavioural events (track, page, screen) whose purposes have no period of their own",
    "ip_address": "full IP addresses: those kept apart in event_ips (by when they were collected), and any "
    "still sealed inside older events (context.ip, properties named ip)",
    "rejected_records": "records of refused events: reason, field, source and time (never their values)",
}
_DURATION = re.compile(r"^(\d{1,5})(d|w|mo|y)$")


@dataclass(frozen=True)
class Rule:
    """Keep ``target`` (a category, or ``purpose:NAME``) at most ``days`` days (None: keep)."""

    target: str
    days: int | None
    source: str = "settings"

    @property
    def purpose(self) -> str | None:
        return self.target.split(":", 1)[1] if self.target.startswith("purpose:") else None

    def cutoff(self, now: int) -> int | None:
        return None if self.days is None else now - self.days * DAY_MS

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "days": self.days, "period": _show(self.days), "source": self.source}


def _show(days: int | None) -> str:
    if days is None:
        return "kept"
    if days % 365 == 0:
        return f"{days // 365} years" if days != 365 else "1 year"
    if days % 30 == 0 and days >= 60:
        return f"{days // 30} months"
    return f"{days} days" if days != 1 else "1 day"


def parse_period(text: str, where: str = "CANDOR_RETENTION") -> int | None:
    value = text.strip().lower()
    if value in ("keep", "forever"):
        return None
    found = _DURATION.match(value)
    if not found or int(found.group(1)) == 0:
        raise ConfigError(
            f"{where}: {text!r} is not a period: write a number and d, w, mo or y (30d, 13mo, 10y), or keep"
        )
    return int(found.group(1)) * UNITS[found.group(2)]


def parse_rules(text: str, source: str = "settings") -> list[Rule]:
    """CANDOR_RETENTION: ``target=period`` pairs separated by commas."""
    out: dict[str, Rule] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        target, sep, period = part.partition("=")
        target = target.strip()
        if not sep:
            raise ConfigError(f"CANDOR_RETENTION: {part.strip()!r} is not a target=period pair (e.g. ip_address=30d)")
        if target not in CATEGORIES and not (target.startswith("purpose:") and len(target) > len("purpose:")):
            raise ConfigError(
                f"CANDOR_RETENTION: unknown target {target!r}: use one of {', '.join(CATEGORIES)} or purpose:NAME"
            )
        out[target] = Rule(target, parse_period(period, f"CANDOR_RETENTION {target}"), source)
    return list(out.values())


# -- where rules come from -------------------------------------------------------------------------
RuleSource = Callable[[Any], list[Rule]]


def _from_settings(rt: Any) -> list[Rule]:
    return parse_rules(rt.settings.retention)


SOURCES: list[RuleSource] = [_from_settings]


def register_source(source: RuleSource) -> None:
    """Add a source of rules (e.g. the data dictionary): ``source(runtime) -> [Rule, ...]``."""
    if source not in SOURCES:
        SOURCES.append(source)


def rules(rt: Any) -> list[Rule]:
    """Every rule in force: per target, the shortest period any source gives."""
    merged: dict[str, Rule] = {}
    for source in SOURCES:
        for rule in source(rt):
            have = merged.get(rule.target)
            if have is None or (rule.days is not None and (have.days is None or rule.days < have.days)):
                merged[rule.target] = rule
    known = set(rt.taxonomy.names())
    for rule in merged.values():
        if rule.purpose is not None and rule.purpose not in known:
            raise ConfigError(f"retention rule {rule.target}: unknown purpose (known: {', '.join(sorted(known))})")
    return sorted(merged.values(), key=lambda r: r.target)


# -- state and lease ---------------------------------------------------------------------------------
class Busy(RuntimeError):
    """Another process holds the retention lease."""


def _load(conn: Any, name: str) -> dict[str, Any]:
    raw = conn.execute(select(retention_state.c.state).where(retention_state.c.name == name)).scalar()
    return orjson.loads(raw) if raw else {}


def _save(store: Any, conn: Any, name: str, state: dict[str, Any]) -> None:
    stmt = store.insert(retention_state)
    stmt = stmt.on_conflict_do_update(
        index_elements=["name"], set_={"state": stmt.excluded.state, "updated_ms": stmt.excluded.updated_ms}
    )
    conn.execute(stmt, {"name": name, "state": orjson.dumps(state).decode(), "updated_ms": now_ms()})


def _take_lease(store: Any, holder: str, now: int) -> None:
    with store.write() as conn:
        current = _load(conn, "_lease")
        if current and current.get("holder") != holder and int(current.get("until", 0)) > now:
            raise Busy("the retention job is running in another process; it will go on there")
        _save(store, conn, "_lease", {"holder": holder, "until": now + LEASE_MS})


def _drop_lease(store: Any, holder: str) -> None:
    with store.write() as conn:
        if _load(conn, "_lease").get("holder") == holder:
            conn.execute(delete(retention_state).where(retention_state.c.name == "_lease"))


# -- handlers ----------------------------------------------------------------------------------------
Progress = Callable[[str, int, int], None]


def _nothing(_phase: str, _done: int, _total: int) -> None:
    return None


@dataclass
class Context:
    rt: Any
    now: int
    progress: Progress
    holder: str

    def renew(self) -> None:
        _take_lease(self.rt.store, self.holder, self.now)


def _delete_chunks(ctx: Context, table: Any, cond: Any, label: str) -> int:
    store = ctx.rt.store
    done = 0
    while True:
        with store.write() as conn:
            ids = conn.execute(select(table.c.id).where(cond).limit(CHUNK)).scalars().all()
            if ids:
                conn.execute(delete(table).where(table.c.id.in_(ids)))
        done += len(ids)
        ctx.progress(label, done, done + (CHUNK if len(ids) == CHUNK else 0))
        if len(ids) < CHUNK:
            return done


def rejected_records(ctx: Context, rule: Rule, _all: list[Rule]) -> dict[str, Any]:
    cutoff = rule.cutoff(ctx.now)
    if cutoff is None:
        return {"deleted": 0}
    n = _delete_chunks(ctx, rejected_events, rejected_events.c.received_ms < cutoff, "rejected records")
    return {"deleted": n, "before_ms": cutoff}


def _event_periods(all_rules: list[Rule]) -> tuple[int | None, dict[str, int | None]]:
    default = next((r.days for r in all_rules if r.target == "raw_events"), None)
    per_purpose: dict[str, int | None] = {}
    for r in all_rules:
        if r.purpose is not None:
            per_purpose[r.purpose] = r.days
    return default, per_purpose


def _keep_days(purposes: tuple[str, ...], default: int | None, per_purpose: dict[str, int | None]) -> int | None:
    """The period an event needed for ``purposes`` is kept: the longest of theirs (None: keep)."""
    if not purposes:
        return None  # profile events (identify, alias, group) go with the person, not by age
    periods = [per_purpose.get(p, default) for p in purposes]
    return None if any(d is None for d in periods) else max(d for d in periods if d is not None)


def raw_events(ctx: Context, _rule: Rule, all_rules: list[Rule]) -> dict[str, Any]:
    """Events older than the period of their purposes (raw_events and every purpose:NAME rule)."""
    default, per_purpose = _event_periods(all_rules)
    periods = [d for d in (default, *per_purpose.values()) if d is not None]
    if not periods:
        return {"deleted": 0}
    oldest_cutoff = ctx.now - min(periods) * DAY_MS
    store = ctx.rt.store
    with store.engine.connect() as conn:
        kinds = conn.execute(
            select(events.c.type, events.c.event).where(events.c.ts_ms < oldest_cutoff).distinct()
        ).all()
    total = 0
    by_purpose: dict[str, int] = {}
    for etype, name in kinds:
        purposes = ctx.rt.plan.required(etype, name)
        days = _keep_days(tuple(purposes), default, per_purpose)
        if days is None:
            continue
        cond = and_(
            events.c.type == etype,
            events.c.event.is_(None) if name is None else events.c.event == name,
            events.c.ts_ms < ctx.now - days * DAY_MS,
        )
        n = _delete_chunks(ctx, events, cond, "events")
        total += n
        key = ",".join(purposes)
        by_purpose[key] = by_purpose.get(key, 0) + n
        ctx.renew()
    if total:
        store.checkpoint()
    return {"deleted": total, "by_purposes": by_purpose}


def _strip_ip(doc: dict[str, Any]) -> bool:
    changed = False
    context = doc.get("context")
    if isinstance(context, dict) and "ip" in context:
        context.pop("ip")
        changed = True
    props = doc.get("properties")
    if isinstance(props, dict):
        for path in [p for p in props if p == "ip" or p.endswith(".ip")]:
            props.pop(path)
            changed = True
        if not props:
            doc.pop("properties")
    return changed


def ip_address(ctx: Context, rule: Rule, _all: list[Rule]) -> dict[str, Any]:
    """Drop IP addresses from the sealed part of events older than the period.

    Two windows, each walked by id with its place saved: events whose time fell past the cut-off since
    the last completed run, and events that arrived since then with an older time (imports).
    """
    cutoff = rule.cutoff(ctx.now)
    if cutoff is None or rule.days is None:
        return {"stripped": 0, "deleted": 0}
    store, vault = ctx.rt.store, ctx.rt.vault
    # the full addresses collected since the data dictionary (location.py) are kept apart, in event_ips:
    # they go by the time they were collected, in one statement
    from candor.location import drop_expired_ips

    with store.write() as conn:
        deleted = drop_expired_ips(conn, ctx.now, rule.days)
    ctx.progress("IP addresses kept apart", deleted, deleted)
    name = "ip_address"
    with store.engine.connect() as conn:
        state = _load(conn, name)
        top = int(conn.execute(select(func.max(events.c.id))).scalar() or 0)
    run = state.get("run")
    if not run:  # a new run (else: resume the interrupted one where it stopped)
        last = state.get("done") or {}
        run = {
            "cutoff": cutoff,
            "lo": int(last.get("cutoff", 0)),
            "late_from": max(0, int(last.get("max_id", 0)) - LATE_OVERLAP),
            "max_id": top,
            "phase": "window",
            "cursor": 0,
            "stripped": 0,
            "read": 0,
        }
    windows = {
        "window": lambda: and_(events.c.ts_ms >= run["lo"], events.c.ts_ms < run["cutoff"]),
        "late": lambda: and_(events.c.id > run["late_from"], events.c.ts_ms < run["lo"]),
    }
    for phase in ("window", "late"):
        if run["phase"] == "late" and phase == "window":
            continue
        run["phase"] = phase
        while True:
            with store.write() as conn:
                rows = conn.execute(
                    select(events.c.id, events.c.subject_id, events.c.sealed)
                    .where(windows[phase](), events.c.id > run["cursor"], events.c.id <= run["max_id"])
                    .order_by(events.c.id)
                    .limit(CHUNK)
                ).all()
                keys = vault.keys_for(sorted({r[1] for r in rows}), conn)
                for eid, sid, sealed in rows:
                    aead = keys.get(sid)
                    if aead is None:
                        continue  # shredded: nothing readable is left
                    doc = orjson.loads(vault.open_with(aead, sealed, sid.encode()))
                    if isinstance(doc, dict) and _strip_ip(doc):
                        resealed = vault.seal_with(aead, orjson.dumps(doc), sid.encode())
                        conn.execute(update(events).where(events.c.id == eid).values(sealed=resealed))
                        run["stripped"] += 1
                run["read"] += len(rows)
                if rows:
                    run["cursor"] = rows[-1][0]
                _save(store, conn, name, {**state, "run": run})
            ctx.progress("IP addresses", run["read"], run["read"] + (CHUNK if len(rows) == CHUNK else 0))
            if len(rows) < CHUNK:
                break
        run["cursor"] = 0
        ctx.renew()
    with store.write() as conn:
        _save(store, conn, name, {"done": {"cutoff": run["cutoff"], "max_id": run["max_id"], "ms": ctx.now}})
    if run["stripped"] or deleted:
        store.checkpoint()
    return {"stripped": run["stripped"], "deleted": deleted, "read": run["read"], "before_ms": run["cutoff"]}


# -- fields declared in the data dictionary with a retention ------------------------------------------
FIELDS_TARGET = "data_dictionary"
# the full IP address has its own category and handler (ip_address above: the clear network is kept)
_OWN_HANDLER = frozenset({("context", "ip"), ("properties", "ip")})


def _field_plan(conn: Any) -> dict[int, dict[int, list[tuple[str, str]]]]:
    """days -> source id -> the (scope, path) fields of that source kept that many days. A source's own
    declaration of a field wins over the built-in one (as at collection)."""
    from candor.dictionary import retention_rules
    from candor.store.schema import sources

    builtin: dict[tuple[str, str], int | None] = {}
    own: dict[int, dict[tuple[str, str], int | None]] = {}
    for r in retention_rules(conn):
        if (r.scope, r.path) in _OWN_HANDLER:
            continue
        if r.source_id is None:
            builtin[(r.scope, r.path)] = r.days
        else:
            own.setdefault(int(r.source_id), {})[(r.scope, r.path)] = r.days
    plan: dict[int, dict[int, list[tuple[str, str]]]] = {}
    for (sid,) in conn.execute(select(sources.c.id)):
        for field, days in {**builtin, **own.get(int(sid), {})}.items():
            if days is not None:
                plan.setdefault(int(days), {}).setdefault(int(sid), []).append(field)
    for per_source in plan.values():
        for fields in per_source.values():
            fields.sort()
    return plan


def _from_dictionary(rt: Any) -> list[Rule]:
    with rt.store.engine.connect() as conn:
        plan = _field_plan(conn)
    return [Rule(FIELDS_TARGET, min(plan), "data dictionary")] if plan else []


def _pop_path(node: Any, parts: list[str]) -> bool:
    """Remove the value at the dotted ``parts`` of a JSON object (empty objects left behind go too)."""
    if not isinstance(node, dict) or parts[0] not in node:
        return False
    if len(parts) == 1:
        node.pop(parts[0])
        return True
    child = node[parts[0]]
    changed = _pop_path(child, parts[1:])
    if changed and isinstance(child, dict) and not child:
        node.pop(parts[0])
    return changed


def _strip_sealed_properties(sealed: dict[str, Any], path: str) -> bool:
    """Sealed properties are kept by dotted path (events.split_personal): drop ``path`` and below, and
    ``path`` inside a value kept at a shorter path."""
    changed = False
    for key in list(sealed):
        if key == path or key.startswith(path + "."):
            sealed.pop(key)
            changed = True
        elif path.startswith(key + "."):
            changed = _pop_path(sealed[key], path[len(key) + 1 :].split(".")) or changed
    return changed


def _strip_fields(
    clear_props: Any, clear_ctx: Any, doc: Any, fields: list[tuple[str, str]]
) -> tuple[bool, bool, list[str]]:
    """Remove ``fields`` from an event's clear properties and context and its sealed document; returns
    (clear changed, sealed changed, the fields found)."""
    clear = sealed = False
    found = []
    for scope, path in fields:
        parts = path.split(".")
        hit_clear = hit_sealed = False
        if scope == "properties":
            hit_clear = _pop_path(clear_props, parts)
            props = doc.get("properties") if isinstance(doc, dict) else None
            if isinstance(props, dict):
                hit_sealed = _strip_sealed_properties(props, path)
                if not props:
                    doc.pop("properties")
        elif scope == "context":
            hit_clear = _pop_path(clear_ctx, parts)
            hit_sealed = isinstance(doc, dict) and _pop_path(doc.get("context"), parts)
        elif scope == "traits":
            hit_sealed = isinstance(doc, dict) and _pop_path(doc.get("traits"), parts)
        clear, sealed = clear or hit_clear, sealed or hit_sealed
        if hit_clear or hit_sealed:
            found.append(f"{scope}.{path}")
    return clear, sealed, found


def data_dictionary(ctx: Context, _rule: Rule, _all: list[Rule]) -> dict[str, Any]:
    """Remove each declared field from the events older than its retention: from the clear properties
    and context, from the sealed part (re-sealed without it) and from the analytics store.

    Per period, like ip_address: the events whose time passed the cut-off since the last completed run,
    and those that arrived since then with an older time, each walked by id with its place saved. When
    the fields of a period change (a new declaration), its events are walked again from the start."""
    import hashlib

    from candor.store.schema import events as ev

    store, vault = ctx.rt.store, ctx.rt.vault
    with store.engine.connect() as conn:
        plan = _field_plan(conn)
        top = int(conn.execute(select(func.max(ev.c.id))).scalar() or 0)
    total_events = 0
    per_field: dict[str, int] = {}
    changed_ids: list[int] = []
    cutoffs: dict[str, int] = {}
    for days in sorted(plan):
        per_source = plan[days]
        fingerprint = hashlib.sha256(orjson.dumps(sorted((k, v) for k, v in per_source.items()))).hexdigest()[:16]
        name = f"fields:{days}"
        cutoff = ctx.now - days * DAY_MS
        cutoffs[str(days)] = cutoff
        with store.engine.connect() as conn:
            state = _load(conn, name)
        run = state.get("run")
        if not run or run.get("fingerprint") != fingerprint:
            last = state.get("done") or {}
            fresh = last.get("fingerprint") == fingerprint
            run = {
                "fingerprint": fingerprint,
                "cutoff": cutoff,
                "lo": int(last.get("cutoff", 0)) if fresh else 0,
                "late_from": max(0, int(last.get("max_id", 0)) - LATE_OVERLAP) if fresh else 0,
                "max_id": top,
                "phase": "window",
                "cursor": 0,
                "events": 0,
            }
        source_ids = sorted(per_source)
        for phase in ("window", "late"):
            if run["phase"] == "late" and phase == "window":
                continue
            run["phase"] = phase
            if phase == "window":
                in_window = and_(ev.c.ts_ms >= run["lo"], ev.c.ts_ms < run["cutoff"])
            else:
                in_window = and_(ev.c.id > run["late_from"], ev.c.ts_ms < run["lo"])
            while True:
                with store.write() as conn:
                    rows = conn.execute(
                        select(ev.c.id, ev.c.source_id, ev.c.subject_id, ev.c.properties, ev.c.context, ev.c.sealed)
                        .where(in_window, ev.c.source_id.in_(source_ids), ev.c.id > run["cursor"],
                               ev.c.id <= run["max_id"])
                        .order_by(ev.c.id)
                        .limit(CHUNK)
                    ).all()  # fmt: skip
                    keys = vault.keys_for(sorted({r[2] for r in rows}), conn)
                    for eid, src, sid, props_json, ctx_json, sealed_blob in rows:
                        fields = per_source.get(int(src), [])
                        props, cctx = orjson.loads(props_json), orjson.loads(ctx_json)
                        aead = keys.get(sid)
                        doc = orjson.loads(vault.open_with(aead, sealed_blob, sid.encode())) if aead else None
                        clear, sealed, found = _strip_fields(props, cctx, doc, fields)
                        values: dict[str, Any] = {}
                        if clear:
                            values["properties"] = orjson.dumps(props).decode()
                            values["context"] = orjson.dumps(cctx).decode()
                        if sealed and aead is not None:
                            values["sealed"] = vault.seal_with(aead, orjson.dumps(doc), sid.encode())
                        if values:
                            conn.execute(update(ev).where(ev.c.id == eid).values(**values))
                            run["events"] += 1
                            changed_ids.append(int(eid))
                            for f in found:
                                per_field[f] = per_field.get(f, 0) + 1
                    if rows:
                        run["cursor"] = rows[-1][0]
                    _save(store, conn, name, {**state, "run": run})
                ctx.progress("declared fields", run["events"], run["events"] + (CHUNK if len(rows) == CHUNK else 0))
                if len(rows) < CHUNK:
                    break
            run["cursor"] = 0
            ctx.renew()
        with store.write() as conn:
            _save(store, conn, name, {"done": {"cutoff": run["cutoff"], "max_id": run["max_id"],
                                               "fingerprint": fingerprint, "ms": ctx.now}})  # fmt: skip
        total_events += run["events"]
    lake_rows = 0
    lake = getattr(ctx.rt.analytics, "lake", None)
    if changed_ids and lake is not None:
        lake_rows = lake.recopy(changed_ids)
    if total_events:
        store.checkpoint()
    # an event holding fields of two periods is changed once per period, counted once
    return {"stripped": len(set(changed_ids)), "fields": per_field, "analytics_rows": lake_rows, "before_ms": cutoffs}


Handler = Callable[[Context, Rule, list[Rule]], dict[str, Any]]
HANDLERS: dict[str, Handler] = {
    "rejected_records": rejected_records,
    "raw_events": raw_events,
    "ip_address": ip_address,
    FIELDS_TARGET: data_dictionary,
}
SOURCES.append(_from_dictionary)  # the data dictionary's per-field retention (dictionary.py)


def register(target: str, handler: Handler) -> None:
    """Enforce ``target`` (a category, e.g. one the data dictionary adds) with ``handler``."""
    HANDLERS[target] = handler


def _handler_for(rule: Rule) -> tuple[str, Handler] | None:
    if rule.purpose is not None:
        return "raw_events", raw_events  # purpose rules are applied by the events handler
    handler = HANDLERS.get(rule.target)
    return (rule.target, handler) if handler else None


def run(rt: Any, *, now: int | None = None, actor: str = "system", progress: Progress | None = None) -> dict[str, Any]:
    """Apply every rule once (resuming an interrupted run). Raises Busy when another process runs it."""
    now = now_ms() if now is None else now
    holder = secrets.token_hex(8)
    store = rt.store
    _take_lease(store, holder, now)
    ctx = Context(rt, now, progress or _nothing, holder)
    try:
        in_force = rules(rt)
        results: dict[str, Any] = {}
        for rule in in_force:
            found = _handler_for(rule)
            if found is None:
                results[rule.target] = {"skipped": "no handler for this target"}
                continue
            key, handler = found
            if key in results:
                continue
            results[key] = handler(ctx, rule, in_force)
        changed = {k: v for k, v in results.items() if v.get("deleted") or v.get("stripped")}
        if changed:
            audit.append(store, actor, "retention.applied", details={"now_ms": now, "results": changed})
        with store.write() as conn:
            _save(store, conn, "_last", {"ms": now, "results": results})
        return {"now_ms": now, "rules": [r.as_dict() for r in in_force], "results": results}
    finally:
        _drop_lease(store, holder)


def status(rt: Any) -> dict[str, Any]:
    """The rules in force and the last completed run."""
    with rt.store.engine.connect() as conn:
        last = _load(conn, "_last")
        lease = _load(conn, "_lease")
    return {"rules": [r.as_dict() for r in rules(rt)], "last_run": last or None, "running": bool(lease)}



async def every(rt: Any, seconds: int) -> None:
    """The server's schedule: a first run a minute after start (sooner for short intervals), then every
    ``seconds``. Failures are logged by type and retried at the next tick; another process's run is left
    alone."""
    import asyncio

    if seconds <= 0:
        return
    loop = asyncio.get_running_loop()
    delay = min(seconds, 60)
    while True:
        await asyncio.sleep(delay)
        delay = seconds
        try:
            await loop.run_in_executor(None, lambda: run(rt, actor="system"))
        except Busy:
            continue
        except Exception as exc:  # noqa: BLE001 - retried at the next tick; the type says enough
            log.warning("retention run failed: %s", type(exc).__name__)
