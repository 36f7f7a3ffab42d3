"""``GET /v1/profiles/lookup``: one person by one identifier (masked unless revealed with pii:read)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from candor.auth import AuthError, Require, Staff
from candor.consent.ledger import ConsentError
from candor.http import STAFF_RESPONSES, ErrorBody

router = APIRouter(prefix="/v1/profiles", tags=["profiles"])


class Trait(BaseModel):
    value: Any
    source: str
    at: str
    rule: str = Field(description="survivorship rule that chose this value (CANDOR_SURVIVORSHIP)")
    alternatives: int = Field(description="other distinct values seen across the profile's sources")


class Identity(BaseModel):
    type: str
    pseudonym: str


class RecentEvent(BaseModel):
    type: str
    event: str | None
    at: str
    source: str


class SourceRecord(BaseModel):
    source: str
    id: str


class Link(BaseModel):
    edge: int
    rule: str
    state: str = Field(description="linked, held (waiting for review), flagged (supernode) or removed (split)")
    a_type: str
    b_type: str
    score: float | None
    source: str | None
    at: str


class Profile(BaseModel):
    profile_id: str
    subjects: list[str]
    revealed: bool
    readable: bool
    identities: list[Identity]
    records: list[SourceRecord]
    traits: dict[str, Trait]
    consent: dict[str, bool]
    links: list[Link] = Field(description="why these records are one person: the edges of the identity graph")
    recent_events: list[RecentEvent]


@router.get(
    "/lookup",
    response_model=Profile,
    responses={**STAFF_RESPONSES, "404": {"description": "No such person", "model": ErrorBody}},
)
def lookup(
    request: Request,
    userId: str | None = Query(None, max_length=1024),
    anonymousId: str | None = Query(None, max_length=1024),
    email: str | None = Query(None, max_length=320),
    phone: str | None = Query(None, max_length=64),
    reveal: bool = Query(False, description="Show personal values in clear (needs pii:read; recorded)"),
    staff: Staff = Depends(Require("profiles:read")),
) -> Any:
    """One person, found by exactly one identifier. Personal values are masked unless ``reveal=true``
    and the role holds ``pii:read``; each reveal is written to the audit log."""
    given = [
        (t, v) for t, v in (("user_id", userId), ("anonymous_id", anonymousId), ("email", email), ("phone", phone)) if v
    ]
    if len(given) != 1:
        raise ConsentError("give exactly one of userId, anonymousId, email or phone")
    if reveal and not staff.can("pii:read"):
        raise AuthError(403, "forbidden", f"this token's role ({staff.role}) lacks the scope pii:read needed to reveal")
    rt = request.app.state.candor
    subject_id = rt.profiles.find(*given[0])
    if subject_id is None:
        raise ConsentError("no person with that identifier", 404)
    return rt.profiles.view(subject_id, reveal=reveal, actor=f"token:{staff.token_id}")


@router.get(
    "/{profile_id}",
    response_model=Profile,
    responses={**STAFF_RESPONSES, "404": {"description": "No such profile", "model": ErrorBody}},
)
def get_profile(
    request: Request,
    profile_id: str = Path(pattern="^[0-9a-f]{32}$", description="A profile id, or the id of any subject in it"),
    reveal: bool = Query(False, description="Show personal values in clear (needs pii:read; recorded)"),
    staff: Staff = Depends(Require("profiles:read")),
) -> Any:
    """The golden record of one unified profile: traits with provenance, identities, source records,
    consent (from ``can_use``), the links that explain the merge, recent events."""
    if reveal and not staff.can("pii:read"):
        raise AuthError(403, "forbidden", f"this token's role ({staff.role}) lacks the scope pii:read needed to reveal")
    rt = request.app.state.candor
    from sqlalchemy import select

    from candor.store.schema import subjects

    with rt.store.engine.connect() as conn:
        known = conn.execute(select(subjects.c.subject_id).where(subjects.c.subject_id == profile_id)).scalar()
    if known is None:
        raise ConsentError("no profile with that id", 404)
    return rt.profiles.view(profile_id, reveal=reveal, actor=f"token:{staff.token_id}")
