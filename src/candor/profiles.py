"""Looking up one person: identities, traits with their provenance, consent, recent events.

Staff see personal values masked unless their role holds ``pii:read`` and they ask to reveal them;
every reveal is an audit entry (``pii.read``) naming the fields, never their values. Lookups are by
one exact identifier at a time: there is no way to list people here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
from sqlalchemy import desc, select

from candor import audit, normalize
from candor.consent.ledger import Consent
from candor.events import iso_ms
from candor.identity.service import Identity
from candor.store import Store
from candor.store.schema import events, identifiers, profile_subjects, sources
from candor.store.schema import subjects as subjects_t
from candor.vault import KeyDestroyed, Vault, VaultError

RECENT_EVENTS = 20
TRAIT_SCAN = 500  # identify events read per lookup, newest first


def mask(value: Any) -> Any:
    """A masked form that shows the shape of a value, never enough to identify anyone."""
    if isinstance(value, dict):
        return {k: mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    text = str(value)
    if "@" in text:
        local, _, domain = text.partition("@")
        return f"{local[:1]}***@{domain}"
    digits = sum(ch.isdigit() for ch in text)
    if digits >= 7:
        return "*" * (len(text) - 4) + text[-4:] if len(text) > 4 else "****"
    return f"{text[:1]}***" if text else ""


def survive(candidates: list[tuple[Any, str, int]], rule: str, trusted: list[str]) -> tuple[Any, str, int]:
    """The value a golden record keeps from ``(value, source, ts)`` candidates."""
    if rule == "trusted":
        rank = {name: i for i, name in enumerate(trusted)}
        return min(candidates, key=lambda c: (rank.get(c[1], len(rank)), -c[2]))
    if rule == "frequent":
        counts = Counter(orjson.dumps(c[0], option=orjson.OPT_SORT_KEYS) for c in candidates)
        return max(candidates, key=lambda c: (counts[orjson.dumps(c[0], option=orjson.OPT_SORT_KEYS)], c[2]))
    return max(candidates, key=lambda c: c[2])


def identity_values(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """Plaintext identifiers in one sealed event document (for the owner's export)."""
    out: list[tuple[str, str]] = []
    for key, kind in (("userId", "user_id"), ("anonymousId", "anonymous_id")):
        if isinstance(doc.get(key), str | int):
            out.append((kind, str(doc[key])))
    traits = doc.get("traits") if isinstance(doc.get("traits"), dict) else {}
    assert isinstance(traits, dict)
    em = normalize.email(traits.get("email"))
    if em:
        out.append(("email", em))
    ph = normalize.phone(traits.get("phone"), "US")
    if ph:
        out.append(("phone", ph))
    ctx = doc.get("context") if isinstance(doc.get("context"), dict) else {}
    assert isinstance(ctx, dict)
    for item in ctx.get("externalIds") or []:
        if isinstance(item, dict) and isinstance(item.get("type"), str) and item.get("id") is not None:
            out.append(("ext:" + item["type"], str(item["id"])))
    rec = doc.get("record")
    if isinstance(rec, dict):
        out.append(("record", f"{rec.get('source')}:{rec.get('id')}"))
    return out


class Profiles:
    def __init__(
        self,
        store: Store,
        vault: Vault,
        consent: Consent,
        identity: Identity | None = None,
        *,
        survivorship: str = "recent",
        trusted_sources: list[str] | None = None,
        priority: list[str] | None = None,
    ) -> None:
        self.store = store
        self.vault = vault
        self.consent = consent
        self.identity = identity
        self.survivorship = survivorship
        self.trusted = trusted_sources or []
        self.priority = priority or ["user_id", "email", "phone", "anonymous_id"]

    def find(self, id_type: str, value: str) -> str | None:
        return self.consent.subject_for(id_type, value)

    def _rank(self, id_type: str) -> int:
        return self.priority.index(id_type) if id_type in self.priority else len(self.priority)

    def members(self, subject_id: str, conn: Any) -> tuple[str, list[str]]:
        if self.identity is None:
            return subject_id, [subject_id]
        pid = self.identity.profile_of(subject_id, conn)
        return pid, self.identity.members(pid, conn)

    def golden_many(self, groups: dict[str, list[str]], conn: Any, names: dict[int, str]) -> dict[str, dict[str, Any]]:
        """Golden trait values (no provenance) of many profiles, in a few queries: for bulk work."""
        owner = {m: p for p, ms in groups.items() for m in ms}
        everyone = sorted(owner)
        keys = self.vault.keys_for(everyone, conn)
        candidates: dict[str, dict[str, list[tuple[Any, str, int]]]] = {p: {} for p in groups}
        for i in range(0, len(everyone), 500):
            for sid, source_id, ts, sealed in conn.execute(
                select(events.c.subject_id, events.c.source_id, events.c.ts_ms, events.c.sealed).where(
                    events.c.subject_id.in_(everyone[i : i + 500]), events.c.type == "identify"
                )
            ):
                aead = keys.get(sid)
                if aead is None:
                    continue
                try:
                    doc = orjson.loads(self.vault.open_with(aead, sealed, sid.encode()))
                except (KeyDestroyed, VaultError):
                    continue
                per = candidates[owner[sid]]
                source = names.get(source_id, f"#{source_id}")
                for k, v in (doc.get("traits") or {}).items():
                    per.setdefault(k, []).append((v, source, ts))
        return {
            p: {k: survive(c, self.survivorship, self.trusted)[0] for k, c in per.items()}
            for p, per in candidates.items()
        }

    def golden(
        self, members: list[str], conn: Any, names: dict[int, str], scan: int = TRAIT_SCAN
    ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], bool]:
        """Traits with provenance by the survivorship rule, the documents read, and readability."""
        rows = conn.execute(
            select(events.c.subject_id, events.c.source_id, events.c.ts_ms, events.c.sealed)
            .where(events.c.subject_id.in_(members), events.c.type == "identify")
            .order_by(desc(events.c.ts_ms))
            .limit(scan)
        ).all()
        keys = self.vault.keys_for(members, conn)
        candidates: dict[str, list[tuple[Any, str, int]]] = {}
        docs: list[dict[str, Any]] = []
        readable = True
        for sid, source_id, ts, sealed in rows:
            aead = keys.get(sid)
            if aead is None:
                readable = False
                continue
            try:
                doc = orjson.loads(self.vault.open_with(aead, sealed, sid.encode()))
            except (KeyDestroyed, VaultError):
                readable = False
                continue
            docs.append(doc)
            source = names.get(source_id, f"#{source_id}")
            for k, v in (doc.get("traits") or {}).items():
                candidates.setdefault(k, []).append((v, source, ts))
        traits: dict[str, dict[str, Any]] = {}
        for k, cands in candidates.items():
            value, source, ts = survive(cands, self.survivorship, self.trusted)
            distinct = {orjson.dumps(c[0], option=orjson.OPT_SORT_KEYS) for c in cands}
            traits[k] = {
                "value": value,
                "source": source,
                "at": iso_ms(ts),
                "rule": self.survivorship,
                "alternatives": len(distinct) - 1,
            }
        return traits, docs, readable

    def view(self, subject_id: str, *, reveal: bool, actor: str) -> dict[str, Any]:
        with self.store.engine.connect() as conn:
            profile_id, members = self.members(subject_id, conn)
            ids = conn.execute(
                select(identifiers.c.id_type, identifiers.c.pseudonym).where(identifiers.c.subject_id.in_(members))
            ).all()
            names = dict(conn.execute(select(sources.c.id, sources.c.name)).all())
            traits, docs, readable = self.golden(members, conn, names)
            recent = conn.execute(
                select(events.c.type, events.c.event, events.c.ts_ms, events.c.source_id)
                .where(events.c.subject_id.in_(members))
                .order_by(desc(events.c.ts_ms))
                .limit(RECENT_EVENTS)
            ).all()
            links = self.identity.edges_of(members, conn) if self.identity is not None else []
        records = sorted(
            {(v.split(":", 1)[0], v.split(":", 1)[1]) for doc in docs for t, v in identity_values(doc) if t == "record"}
        )
        shown = {k: {**t, "value": t["value"] if reveal else mask(t["value"])} for k, t in traits.items()}
        decisions = self.consent.explain(subject_id)
        if reveal and traits:
            audit.append(
                self.store,
                actor,
                "pii.read",
                subject_id=subject_id,
                details={"fields": sorted(traits), "profile": profile_id},
            )
        else:
            audit.append(self.store, actor, "profile.read", subject_id=subject_id, details={"profile": profile_id})
        return {
            "profile_id": profile_id,
            "subjects": members,
            "revealed": reveal,
            "readable": readable,
            "identities": [
                {"type": t, "pseudonym": p} for t, p in sorted(ids, key=lambda i: (self._rank(i[0]), i[0], i[1]))
            ],
            "records": [{"source": s, "id": rid if reveal else mask(rid)} for s, rid in records],
            "traits": shown,
            "consent": {d.purpose: d.allowed for d in decisions},
            "links": [
                {
                    "edge": e["id"],
                    "rule": e["rule"],
                    "state": e["state"],
                    "a_type": e["a_type"],
                    "b_type": e["b_type"],
                    "score": e["score"],
                    "source": names.get(e["source_id"]) if e["source_id"] is not None else None,
                    "at": iso_ms(e["created_ms"]),
                }
                for e in links
            ],
            "recent_events": [
                {"type": t, "event": e, "at": iso_ms(ts), "source": names.get(s, f"#{s}")} for t, e, ts, s in recent
            ],
        }

    def export(self, conn: Any) -> Iterator[dict[str, Any]]:
        """Every profile, one at a time: records, plaintext identities and golden traits (owner only)."""
        names = dict(conn.execute(select(sources.c.id, sources.c.name)).all())
        grouped: dict[str, list[str]] = {}
        for sid, pid in conn.execute(select(profile_subjects.c.subject_id, profile_subjects.c.profile_id)):
            grouped.setdefault(pid, []).append(sid)
        in_profile = {s for ms in grouped.values() for s in ms}
        for (sid,) in conn.execute(select(subjects_t.c.subject_id).where(subjects_t.c.state != "erased")):
            if sid not in in_profile:
                grouped[sid] = [sid]
        for pid in sorted(grouped):
            members = sorted(grouped[pid])
            traits, docs, _ = self.golden(members, conn, names, scan=10_000)
            idents = sorted(
                {iv for doc in docs for iv in identity_values(doc)}, key=lambda i: (self._rank(i[0]), i[0], i[1])
            )
            yield {
                "profile_id": pid,
                "records": [
                    {"source": v.split(":", 1)[0], "id": v.split(":", 1)[1]} for t, v in idents if t == "record"
                ],
                "identities": [{"type": t, "value": v} for t, v in idents if t != "record"],
                "traits": {k: t["value"] for k, t in traits.items()},
            }
