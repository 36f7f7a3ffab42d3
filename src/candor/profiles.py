"""Looking up one person: identities, traits with their provenance, consent, recent events.

Staff see personal values masked unless their role holds ``pii:read`` and they ask to reveal them;
every reveal is an audit entry (``pii.read``) naming the fields, never their values. Lookups are by
one exact identifier at a time: there is no way to list people here.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import desc, select

from candor import audit
from candor.consent.ledger import Consent
from candor.events import iso_ms
from candor.store import Store
from candor.store.schema import events, identifiers, sources
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


class Profiles:
    def __init__(self, store: Store, vault: Vault, consent: Consent) -> None:
        self.store = store
        self.vault = vault
        self.consent = consent

    def find(self, id_type: str, value: str) -> str | None:
        return self.consent.subject_for(id_type, value)

    def view(self, subject_id: str, *, reveal: bool, actor: str) -> dict[str, Any]:
        with self.store.engine.connect() as conn:
            ids = conn.execute(
                select(identifiers.c.id_type, identifiers.c.pseudonym).where(identifiers.c.subject_id == subject_id)
            ).all()
            names = dict(conn.execute(select(sources.c.id, sources.c.name)).all())
            identify_rows = conn.execute(
                select(events.c.source_id, events.c.ts_ms, events.c.sealed)
                .where(events.c.subject_id == subject_id, events.c.type == "identify")
                .order_by(desc(events.c.ts_ms))
                .limit(TRAIT_SCAN)
            ).all()
            recent = conn.execute(
                select(events.c.type, events.c.event, events.c.ts_ms, events.c.source_id)
                .where(events.c.subject_id == subject_id)
                .order_by(desc(events.c.ts_ms))
                .limit(RECENT_EVENTS)
            ).all()
        traits: dict[str, dict[str, Any]] = {}
        readable = True
        for source_id, ts, sealed in identify_rows:  # newest first: the first value seen wins
            try:
                doc = orjson.loads(self.vault.open(subject_id, sealed))
            except (KeyDestroyed, VaultError):
                readable = False
                break
            for k, v in (doc.get("traits") or {}).items():
                if k not in traits:
                    traits[k] = {"value": v, "source": names.get(source_id, f"#{source_id}"), "at": iso_ms(ts)}
        shown = {k: {**t, "value": t["value"] if reveal else mask(t["value"])} for k, t in traits.items()}
        decisions = self.consent.explain(subject_id)
        if reveal and traits:
            audit.append(self.store, actor, "pii.read", subject_id=subject_id, details={"fields": sorted(traits)})
        else:
            audit.append(self.store, actor, "profile.read", subject_id=subject_id)
        return {
            "profile_id": subject_id,
            "revealed": reveal,
            "readable": readable,
            "identities": [{"type": t, "pseudonym": p} for t, p in ids],
            "traits": shown,
            "consent": {d.purpose: d.allowed for d in decisions},
            "recent_events": [
                {"type": t, "event": e, "at": iso_ms(ts), "source": names.get(s, f"#{s}")} for t, e, ts, s in recent
            ],
        }
