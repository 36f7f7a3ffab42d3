"""The access export: one zip with complete JSON, a CSV per record type and an index.html that
explains each section in plain words (what it is, categories, purposes, sources, recipients,
retention).

Sections are providers registered in ``SECTIONS``; later features (segments, campaigns, loyalty,
recommendations) register theirs, and every export lists every section, empty or not.
"""

from __future__ import annotations

import csv
import html
import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import or_, select

from candor.events import iso_ms
from candor.profiles import identity_values
from candor.store.schema import (
    audit_log,
    consent_records,
    events,
    identifiers,
    identity_edges,
    privacy_requests,
    sources,
    suppressions,
)
from candor.vault import KeyDestroyed, VaultError


@dataclass(frozen=True)
class Section:
    name: str
    title: str
    what: str
    categories: str
    purposes: str
    sources: str
    recipients: str
    retention: str
    rows: Callable[[Any, Any, list[str], str], list[dict[str, Any]]]


def _names(conn: Any) -> dict[int, str]:
    return dict(conn.execute(select(sources.c.id, sources.c.name)).all())


def _docs(rt: Any, conn: Any, people: list[str]) -> list[tuple[Any, dict[str, Any]]]:
    """Every event of the people with its opened personal part (once per export: sections share it)."""
    cached = _DOCS.get((id(conn), tuple(people)))
    if cached is not None:
        return cached
    keys = rt.vault.keys_for(people, conn)
    out = []
    for r in conn.execute(select(events).where(events.c.subject_id.in_(people)).order_by(events.c.ts_ms)).mappings():
        aead = keys.get(r["subject_id"])
        doc: dict[str, Any] = {}
        if aead is not None:
            try:
                doc = orjson.loads(rt.vault.open_with(aead, r["sealed"], r["subject_id"].encode()))
            except (KeyDestroyed, VaultError):
                doc = {}
        out.append((r, doc))
    _DOCS[(id(conn), tuple(people))] = out
    return out


# documents opened during one build_export (cleared when it ends)
_DOCS: dict[tuple[int, tuple[str, ...]], list[tuple[Any, dict[str, Any]]]] = {}


def _profile(rt: Any, conn: Any, people: list[str], _rid: str) -> list[dict[str, Any]]:
    traits, _, _ = rt.profiles.golden(people, conn, _names(conn), scan=100_000)
    return [
        {"trait": k, "value": t["value"], "source": t["source"], "at": t["at"], "rule": t["rule"]}
        for k, t in sorted(traits.items())
    ]


def _identities(rt: Any, conn: Any, people: list[str], _rid: str) -> list[dict[str, Any]]:
    values: set[tuple[str, str]] = set()
    for _, doc in _docs(rt, conn, people):
        values.update(identity_values(doc))
    stored = conn.execute(
        select(identifiers.c.id_type, identifiers.c.first_seen_ms).where(identifiers.c.subject_id.in_(people))
    ).all()
    first_seen: dict[str, int] = {}
    for t, ms in stored:
        first_seen[t] = min(ms, first_seen.get(t, ms))
    return [
        {"type": t, "value": v, "first_seen": iso_ms(first_seen[t]) if t in first_seen else None}
        for t, v in sorted(values)
    ]


def _links(rt: Any, conn: Any, people: list[str], _rid: str) -> list[dict[str, Any]]:
    names = _names(conn)
    rows = conn.execute(
        select(identity_edges).where(
            or_(identity_edges.c.a_subject.in_(people), identity_edges.c.b_subject.in_(people))
        )
    ).mappings()
    return [
        {
            "link": r["id"],
            "between": f"{r['a_type']} and {r['b_type']}",
            "rule": r["rule"],
            "state": r["state"],
            "score": r["score"],
            "source": names.get(r["source_id"]) if r["source_id"] is not None else None,
            "at": iso_ms(r["created_ms"]),
        }
        for r in rows
    ]


def _events(rt: Any, conn: Any, people: list[str], _rid: str) -> list[dict[str, Any]]:
    names = _names(conn)
    out = []
    for r, doc in _docs(rt, conn, people):
        out.append(
            {
                "type": r["type"],
                "event": r["event"],
                "timestamp": iso_ms(r["ts_ms"]),
                "received": iso_ms(r["received_ms"]),
                "source": names.get(r["source_id"], f"#{r['source_id']}"),
                "message_id": r["message_id"],
                "properties": {**orjson.loads(r["properties"]), **(doc.get("properties") or {})},
                "traits": doc.get("traits"),
                "context": {**orjson.loads(r["context"]), **(doc.get("context") or {})},
            }
        )
    return out


def _consent(rt: Any, conn: Any, people: list[str], _rid: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(consent_records).where(consent_records.c.subject_id.in_(people)).order_by(consent_records.c.ts_ms)
    ).mappings()
    return [
        {
            "at": iso_ms(r["ts_ms"]),
            "granted": orjson.loads(r["granted"]),
            "denied": orjson.loads(r["denied"]),
            "objection": bool(r["objection"]),
            "how": r["source"],
            "notice": f"{r['notice_id']} v{r['notice_version']}" if r["notice_id"] else None,
            "notice_sha256": r["notice_sha256"],
            "signal": r["raw_signal"],
            "expires": iso_ms(r["expires_ms"]) if r["expires_ms"] else None,
        }
        for r in rows
    ]


def _suppressions(rt: Any, conn: Any, people: list[str], _rid: str) -> list[dict[str, Any]]:
    hashes = [
        h
        for (h,) in conn.execute(
            select(identifiers.c.contact_hash).where(
                identifiers.c.subject_id.in_(people), identifiers.c.contact_hash.is_not(None)
            )
        )
    ]
    if not hashes:
        return []
    return [
        {"channel": r["channel"], "identifier": r["id_type"], "reason": r["reason"], "since": iso_ms(r["created_ms"])}
        for r in conn.execute(select(suppressions).where(suppressions.c.hash.in_(hashes))).mappings()
    ]


def _requests(rt: Any, conn: Any, people: list[str], rid: str) -> list[dict[str, Any]]:
    pids = [p for (p,) in conn.execute(select(identifiers.c.pseudonym).where(identifiers.c.subject_id.in_(people)))]
    rows = conn.execute(
        select(privacy_requests).where(or_(privacy_requests.c.pseudonym.in_(pids), privacy_requests.c.id == rid))
    ).mappings()
    return [
        {
            "request": r["id"][:8],
            "type": r["type"],
            "state": r["state"],
            "received": iso_ms(r["received_ms"]),
            "completed": iso_ms(r["completed_ms"]) if r["completed_ms"] else None,
        }
        for r in rows
    ]


def _reads(rt: Any, conn: Any, people: list[str], _rid: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(audit_log.c.ts_ms, audit_log.c.actor, audit_log.c.action)
        .where(audit_log.c.subject_id.in_(people), audit_log.c.action.in_(("pii.read", "profile.read")))
        .order_by(audit_log.c.seq)
    ).all()
    return [{"at": iso_ms(ts), "who": actor, "what": action} for ts, actor, action in rows]


def _segments(rt: Any, conn: Any, people: list[str], _rid: str) -> list[dict[str, Any]]:
    from candor.store.schema import segment_members, segments

    names = dict(conn.execute(select(segments.c.id, segments.c.name)).all())
    rows = conn.execute(select(segment_members).where(segment_members.c.subject_id.in_(people))).mappings()
    return [
        {
            "segment": names.get(r["segment_id"], f"#{r['segment_id']}"),
            "member_since": iso_ms(r["since_ms"]),
            "until": iso_ms(r["until_ms"]) if r["until_ms"] else None,
        }
        for r in rows
    ]


def _recommendations(rt: Any, conn: Any, people: list[str], _rid: str) -> list[dict[str, Any]]:
    rec = getattr(rt, "recommend", None)
    if rec is None or not people:
        return []
    answer = rec.for_subject(people[0], 10)
    return [
        {
            "product_id": i["product_id"],
            "name": i["name"],
            "why": i["reason"]["text"],
            "personalized": answer.personalized,
        }
        for i in answer.items
    ]


def _messages(rt: Any, conn: Any, people: list[str], _rid: str) -> list[dict[str, Any]]:
    from candor.store.schema import campaigns, sends

    names = dict(conn.execute(select(campaigns.c.id, campaigns.c.name)).all())
    rows = conn.execute(select(sends).where(sends.c.subject_id.in_(people)).order_by(sends.c.ts_ms)).mappings()
    return [
        {
            "campaign": names.get(r["campaign_id"], f"#{r['campaign_id']}"),
            "channel": r["channel"],
            "outcome": r["outcome"],
            "variant": r["variant"],
            "at": iso_ms(r["ts_ms"]),
        }
        for r in rows
    ]


def _categories(rt: Any, conn: Any, people: list[str], _rid: str) -> list[dict[str, Any]]:
    """The kinds of data held about the person, by the data dictionary: fields seen per category."""
    from candor.dictionary import CATEGORIES

    fields: dict[str, set[str]] = {}
    for r, doc in _docs(rt, conn, people):
        sd = rt.dictionary.for_source(r["source_id"])
        seen = [("properties", k) for k in orjson.loads(r["properties"])]
        for scope in ("traits", "properties", "context"):
            part = doc.get(scope)
            if isinstance(part, dict):
                seen.extend((scope, k) for k in part)
        for scope, key in seen:
            cat = sd.category_of(scope, key) or ("behavioural" if scope == "properties" else None)
            if cat is not None:
                fields.setdefault(cat, set()).add(f"{scope}.{key}")
    if _ips(rt, conn, people, _rid):
        fields.setdefault("identifier", set()).add("context.ip")
    out = []
    for name, fs in sorted(fields.items()):
        c = CATEGORIES[name]
        out.append(
            {
                "category": c.title,
                "fields": sorted(fs),
                "special": c.special,
                "kept": "as long as your profile exists" if c.retention_days is None else f"{c.retention_days} days",
                "condition": f"only because you opted in ({c.purpose})" if c.special else "the purposes you agreed to",
            }
        )
    return out


def _ips(rt: Any, conn: Any, people: list[str], _rid: str) -> list[dict[str, Any]]:
    from candor.location import ips_of

    return ips_of(rt, conn, people)


OUR_SOURCES = "the websites, apps, stores, emails and call centre of the brand, as listed per row"
SECTIONS: list[Section] = [
    Section(
        "profile",
        "Your profile",
        "What we know about you, merged from every source, with where each value came from and when.",
        "contact details, demographics you gave us",
        "necessary; personalization and marketing only where you agreed",
        OUR_SOURCES,
        "no one outside the brand",
        "while you are a customer, until you ask us to erase it",
        _profile,
    ),
    Section(
        "identities",
        "Your identifiers",
        "The ids, email addresses and phone numbers we recognise you by.",
        "identifiers",
        "recognising you across visits and channels",
        OUR_SOURCES,
        "no one outside the brand",
        "as long as your profile exists",
        _identities,
    ),
    Section(
        "links",
        "Why these records are you",
        "The links between your identifiers: which event or match joined them, and how sure we were.",
        "pseudonymous links",
        "keeping one profile per person",
        "our identity matching",
        "no one",
        "as long as your profile exists",
        _links,
    ),
    Section(
        "events",
        "Everything you did that we recorded",
        "Every visit, purchase, email interaction and contact we stored, with its time and source.",
        "behaviour, transactions, device and location details you sent",
        "the purposes you agreed to (see Consent)",
        OUR_SOURCES,
        "no one outside the brand",
        "as long as your profile exists",
        _events,
    ),
    Section(
        "consent",
        "Your choices and our proof",
        "Every consent choice and signal (banner, preference centre, Global Privacy Control, TCF/GPP), "
        "with the notice version you saw.",
        "consent records",
        "proving that we use your data only as you allowed",
        "you",
        "no one",
        "as long as we hold data about you, to prove what we were allowed to do",
        _consent,
    ),
    Section(
        "suppressions",
        "Do-not-contact entries",
        "Channels on which we must not contact you.",
        "a keyed hash of your email or phone, never the value",
        "not contacting you",
        "you, or public do-not-contact lists",
        "no one",
        "for good: kept even after erasure so we never contact you again",
        _suppressions,
    ),
    Section(
        "segments",
        "Groups we put you in",
        "The marketing segments your profile belongs or belonged to, and since when.",
        "derived groupings",
        "choosing who receives which message, only where you agreed to the purpose",
        "computed from the data above",
        "no one",
        "as long as your profile exists",
        _segments,
    ),
    Section(
        "messages",
        "Messages we sent you, or decided not to",
        "Every campaign message: sent, or skipped and why (no consent, do-not-contact, too many messages).",
        "contact history",
        "marketing you agreed to; proving we respected your choices",
        "our campaigns",
        "our mail provider, to deliver them",
        "as long as your profile exists",
        _messages,
    ),
    Section(
        "recommendations",
        "What we recommend to you, and why",
        "The items we would suggest to you now, each with the reason (something you bought or viewed, or an "
        "interest you told us); only when you allowed personalisation, otherwise everyone's bestsellers.",
        "derived preferences",
        "personalization, only where you agreed",
        "computed from your purchases, views and stated interests",
        "no one",
        "computed when asked; the model itself holds nothing about you",
        _recommendations,
    ),
    Section(
        "requests",
        "Your privacy requests",
        "Earlier requests you made (access, erasure, ...), and their outcome.",
        "request records",
        "answering your requests and proving we did",
        "you",
        "no one",
        "as required to prove compliance",
        _requests,
    ),
    Section(
        "categories",
        "Kinds of data we hold about you",
        "Every kind of data in the sections above, by our data dictionary: which fields, how long we keep "
        "them, and which need your explicit opt-in (health, beliefs, precise location, ...).",
        "data categories",
        "as each category says",
        OUR_SOURCES,
        "no one outside the brand",
        "per category, as listed",
        _categories,
    ),
    Section(
        "ip_addresses",
        "Your full IP addresses",
        "The full network address of your recent visits; our analytics only ever see it shortened.",
        "online identifiers",
        "security and fraud prevention",
        "your browser or app",
        "no one",
        "30 days, then deleted",
        _ips,
    ),
    Section(
        "access_log",
        "Who at the brand looked at your data",
        "Every time a member of staff opened your profile.",
        "access records",
        "accountability",
        "our audit log",
        "no one",
        "as long as the audit log is kept",
        _reads,
    ),
]


# -- the loyalty programme (loyalty.py) ------------------------------------------------------------
def _loyalty(rt: Any, conn: Any, people: list[str], _rid: str) -> list[dict[str, Any]]:
    from candor.store.schema import loyalty_members

    rows: list[dict[str, Any]] = [
        {
            "record": "membership",
            "state": r["state"],
            "at": iso_ms(r["joined_ms"]),
            "left": iso_ms(r["left_ms"]) if r["left_ms"] else None,
            "notice_version": r["notice_version"],
            "balance_after": int(r["balance"]),
        }
        for r in conn.execute(select(loyalty_members).where(loyalty_members.c.subject_id.in_(people))).mappings()
    ]
    return rows + [{"record": "points", **e} for e in rt.loyalty.ledger(conn, people)]


def _benefits(rt: Any, conn: Any, people: list[str], _rid: str) -> list[dict[str, Any]]:
    return list(rt.loyalty.benefits(conn, people))


def _value(rt: Any, conn: Any, people: list[str], _rid: str) -> list[dict[str, Any]]:
    from candor.store.schema import loyalty_members

    if (
        conn.execute(select(loyalty_members.c.subject_id).where(loyalty_members.c.subject_id.in_(people))).first()
        is None
    ):
        return []
    st = rt.loyalty.statement(people[0])
    return [{"shared": st["shared"], "received": st["received"]}]


SECTIONS.extend(
    [
        Section(
            "loyalty",
            "Your loyalty membership and points",
            "When you joined or left, the notice of financial incentive you agreed to, and every points "
            "movement: earned for purchases and offers, redeemed, expired.",
            "membership, points, order values",
            "the loyalty programme you joined (loyalty)",
            "your purchases and the offers you accepted",
            "no one outside the brand",
            "as long as your profile exists",
            _loyalty,
        ),
        Section(
            "loyalty_benefits",
            "What you got besides points",
            "Member discounts and personalised offers you used.",
            "benefits",
            "showing you the value you get for what you share",
            "our checkout and personalisation",
            "no one",
            "as long as your profile exists",
            _benefits,
        ),
        Section(
            "value_statement",
            "Your value statement",
            "In short: what you shared with us (purposes and kinds of data) and what you got for it.",
            "a summary of the sections above",
            "transparency about the value exchange",
            "computed from the data above",
            "no one",
            "computed when you ask",
            _value,
        ),
    ]
)


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    w = csv.writer(buf)
    w.writerow(cols)
    for r in rows:
        w.writerow(
            [
                "" if r.get(c) is None else (orjson.dumps(r[c]).decode() if isinstance(r.get(c), dict | list) else r[c])
                for c in cols
            ]
        )
    return buf.getvalue()


def _index(content: dict[str, list[dict[str, Any]]], generated: str) -> str:
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<title>Your data</title><style>body{font-family:system-ui,sans-serif;max-width:50rem;margin:2rem auto;"
        "padding:0 1rem;line-height:1.5}dt{font-weight:600}section{border-top:1px solid #ccc;margin-top:1.5rem}"
        "</style></head><body>",
        "<h1>Your data</h1>",
        f"<p>This archive holds every piece of data we keep about you, as of {html.escape(generated)}. "
        "Each section below is also in <code>data.json</code> (everything, machine-readable) and in a CSV file.</p>",
    ]
    for s in SECTIONS:
        n = len(content.get(s.name, []))
        parts.append(
            f"<section><h2>{html.escape(s.title)}</h2><p>{html.escape(s.what)}</p><dl>"
            f"<dt>Records</dt><dd>{n} (<code>{s.name}.csv</code>)</dd>"
            f"<dt>Kinds of data</dt><dd>{html.escape(s.categories)}</dd>"
            f"<dt>Why we use it</dt><dd>{html.escape(s.purposes)}</dd>"
            f"<dt>Where it comes from</dt><dd>{html.escape(s.sources)}</dd>"
            f"<dt>Who receives it</dt><dd>{html.escape(s.recipients)}</dd>"
            f"<dt>How long we keep it</dt><dd>{html.escape(s.retention)}</dd></dl></section>"
        )
    parts.append(
        "<section><h2>Your rights</h2><p>You can ask us to correct, erase, restrict or stop using this data, "
        "and object to marketing or profiling, at any time from the preference centre.</p></section></body></html>"
    )
    return "".join(parts)


def build_export(rt: Any, people: list[str], request_id: str) -> bytes:
    """The zip for these subjects (one unified profile), in memory."""
    from candor.store import now_ms

    generated = iso_ms(now_ms())
    with rt.store.engine.connect() as conn:
        try:
            content = {s.name: s.rows(rt, conn, people, request_id) for s in SECTIONS}
        finally:
            _DOCS.pop((id(conn), tuple(people)), None)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(
            "data.json",
            orjson.dumps({"generated": generated, **content}, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS),
        )
        for name, rows in content.items():
            z.writestr(f"{name}.csv", _csv(rows))
        z.writestr("index.html", _index(content, generated))
    return buf.getvalue()
