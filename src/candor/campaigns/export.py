"""What campaigns add to a person's access export: their engagement with our messages, and which
destinations received data about them (registered in rights/export.py's SECTIONS, like any feature)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from candor.events import iso_ms
from candor.rights.export import SECTIONS, Section
from candor.store.schema import campaigns, deliveries, destination_recipients, destinations, engagements


def _engagement(rt: Any, conn: Any, people: list[str], _rid: str) -> list[dict[str, Any]]:
    names = dict(conn.execute(select(campaigns.c.id, campaigns.c.name)).all())
    rows = conn.execute(
        select(engagements).where(engagements.c.subject_id.in_(people)).order_by(engagements.c.ts_ms)
    ).mappings()
    return [
        {"campaign": names.get(r["campaign_id"], f"#{r['campaign_id']}"), "what": r["kind"], "at": iso_ms(r["ts_ms"])}
        for r in rows
    ]


def _recipients(rt: Any, conn: Any, people: list[str], _rid: str) -> list[dict[str, Any]]:
    dests = {
        int(i): (n, k, p)
        for i, n, k, p in conn.execute(
            select(destinations.c.id, destinations.c.name, destinations.c.kind, destinations.c.purpose)
        )
    }
    out = []
    for r in conn.execute(
        select(destination_recipients).where(destination_recipients.c.subject_id.in_(people))
    ).mappings():
        name, kind, purpose = dests.get(int(r["destination_id"]), ("?", "?", None))
        out.append(
            {
                "destination": name,
                "kind": kind,
                "purpose": purpose,
                "your_id_there": r["ref"],
                "first": iso_ms(r["first_ms"]),
                "last": iso_ms(r["last_ms"]),
            }
        )
    for r in conn.execute(
        select(deliveries).where(deliveries.c.subject_id.in_(people), deliveries.c.state == "dead")
    ).mappings():
        name = dests.get(int(r["destination_id"]), ("?", "?", None))[0]
        out.append(
            {"destination": name, "kind": "undelivered message", "state": r["state"], "first": iso_ms(r["created_ms"])}
        )
    return out


def register() -> None:
    if any(s.name == "engagement" for s in SECTIONS):
        return
    SECTIONS.append(
        Section(
            "engagement",
            "What you did with our messages",
            "Opens and clicks (only while you agreed to analytics), bounces and spam complaints.",
            "message engagement",
            "measuring our campaigns (analytics, only with your consent); not mailing addresses that bounce",
            "our emails and our mail provider",
            "no one",
            "as long as your profile exists",
            _engagement,
        )
    )
    SECTIONS.append(
        Section(
            "recipients",
            "Who received data about you",
            "The services our campaigns sent your data to (webhooks, the SMS provider, ad platforms) and the "
            "id they know you by; each is told when you ask us to erase your data.",
            "contact details as each service needs them, hashed for ad platforms",
            "the purpose of each service, only where you agreed to it",
            "our campaigns",
            "the services listed",
            "as long as your profile exists; erasure notices are sent to each",
            _recipients,
        )
    )
