"""``/v1/identity``: the review queue, splits, supernode flags. Every decision is audited."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from candor.auth import Require, Staff
from candor.http import STAFF_RESPONSES, ErrorBody
from candor.store.schema import identity_flags

router = APIRouter(prefix="/v1/identity", tags=["identity"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {"404": {"description": "No such item", "model": ErrorBody}}
CONFLICT: dict[int | str, dict[str, Any]] = {"409": {"description": "Already decided or removed", "model": ErrorBody}}


class Review(BaseModel):
    id: int
    kind: str = Field(description="conflict (a held edge) or candidate (a probabilistic match in the grey zone)")
    edge_id: int | None
    a_type: str
    a_pid: str
    b_type: str
    b_pid: str
    a_subject: str | None
    b_subject: str | None
    score: float | None
    reason: str
    state: str
    created_ms: int
    decided_ms: int | None
    decided_by: str | None


class Decision(BaseModel):
    review: int
    state: str
    edge: int | None


class SplitBody(BaseModel):
    reason: str = Field("", max_length=300, description="Why the link was wrong (kept in the audit log)")


class SplitResult(BaseModel):
    edge: int
    profiles_before: list[str]
    profiles_after: list[str]
    new_subjects: list[str]


class Flag(BaseModel):
    id_type: str
    pseudonym: str
    reason: str
    neighbours: int
    created_ms: int


@router.get("/reviews", response_model=list[Review], responses=STAFF_RESPONSES)
def reviews(
    request: Request,
    state: str = Query("open", pattern="^(open|approved|rejected|all)$"),
    limit: int = Query(100, ge=1, le=1000),
    staff: Staff = Depends(Require("identity:write")),
) -> Any:
    """Merges waiting for a person: conflicting authenticated ids and grey-zone matches."""
    return request.app.state.candor.identity.reviews(state, limit)


@router.post(
    "/reviews/{review_id}/approve", response_model=Decision, responses={**STAFF_RESPONSES, **NOT_FOUND, **CONFLICT}
)
def approve(
    request: Request,
    review_id: int = Path(ge=1, le=2**62),
    staff: Staff = Depends(Require("identity:write")),
) -> Any:
    """Link the two identifiers with a ``manual`` edge (never held by the limits); audited."""
    return request.app.state.candor.identity.decide_review(review_id, approve=True, actor=f"token:{staff.token_id}")


@router.post(
    "/reviews/{review_id}/reject", response_model=Decision, responses={**STAFF_RESPONSES, **NOT_FOUND, **CONFLICT}
)
def reject(
    request: Request,
    review_id: int = Path(ge=1, le=2**62),
    staff: Staff = Depends(Require("identity:write")),
) -> Any:
    """Keep them apart: a held edge is removed from linking for good; audited."""
    return request.app.state.candor.identity.decide_review(review_id, approve=False, actor=f"token:{staff.token_id}")


@router.post(
    "/edges/{edge_id}/split", response_model=SplitResult, responses={**STAFF_RESPONSES, **NOT_FOUND, **CONFLICT}
)
def split(
    request: Request,
    body: SplitBody,
    edge_id: int = Path(ge=1, le=2**62),
    staff: Staff = Depends(Require("identity:write")),
) -> Any:
    """Remove a wrong link and recompute the profiles it touched by replay; the edge stays in the
    log as removed, with who and when."""
    return request.app.state.candor.identity.split(edge_id, actor=f"token:{staff.token_id}", reason=body.reason)


@router.get("/flags", response_model=list[Flag], responses=STAFF_RESPONSES)
def flags(request: Request, staff: Staff = Depends(Require("identity:write"))) -> Any:
    """Identifiers shared by too many others (supernodes): they no longer link anything."""
    with request.app.state.candor.store.engine.connect() as conn:
        rows = conn.execute(select(identity_flags).order_by(identity_flags.c.created_ms).limit(1000)).mappings()
        return [dict(r) for r in rows]
