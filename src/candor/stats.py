"""Collection statistics: accepted, duplicate and rejected events per source and per type."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from sqlalchemy import func, select

from candor.auth import Require
from candor.http import STAFF_RESPONSES
from candor.store import Store
from candor.store.schema import event_counts, sources

router = APIRouter(prefix="/v1", tags=["operations"], responses=STAFF_RESPONSES)

OUTCOMES = ("accepted", "duplicate", "rejected", "no_consent")


class SourceStats(BaseModel):
    source: str
    accepted: dict[str, int]
    duplicate: dict[str, int]
    rejected: dict[str, int]
    no_consent: dict[str, int]
    total: dict[str, int]


class Stats(BaseModel):
    sources: list[SourceStats]
    total: dict[str, int]


def collect_stats(store: Store) -> dict[str, Any]:
    with store.engine.connect() as conn:
        names = dict(conn.execute(select(sources.c.id, sources.c.name)).all())
        rows = conn.execute(
            select(
                event_counts.c.source_id,
                event_counts.c.type,
                event_counts.c.outcome,
                func.sum(event_counts.c.n),
            ).group_by(event_counts.c.source_id, event_counts.c.type, event_counts.c.outcome)
        ).all()
    per: dict[int, dict[str, Any]] = {}
    total = dict.fromkeys(OUTCOMES, 0)
    for source_id, mtype, outcome, n in rows:
        entry = per.setdefault(
            source_id,
            {
                "source": names.get(source_id, f"#{source_id}"),
                **{o: {} for o in OUTCOMES},
                "total": dict.fromkeys(OUTCOMES, 0),
            },
        )
        entry[outcome][mtype] = int(n)
        entry["total"][outcome] += int(n)
        total[outcome] += int(n)
    for source_id, name in names.items():
        per.setdefault(source_id, {"source": name, **{o: {} for o in OUTCOMES}, "total": dict.fromkeys(OUTCOMES, 0)})
    return {"sources": [per[k] for k in sorted(per)], "total": total}


@router.get("/stats", response_model=Stats, dependencies=[Depends(Require("stats:read"))])
def get_stats(request: Request) -> dict[str, Any]:
    """Accepted, duplicate and rejected events per source and per event type."""
    return collect_stats(request.app.state.candor.store)
