"""Staff routes for the data dictionary, the per-source detection policy and the privacy inbox."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from candor.auth import Require, Staff
from candor.http import STAFF_RESPONSES, ErrorBody

router = APIRouter(tags=["privacy"])
ERR: dict[int | str, dict[str, Any]] = {
    **STAFF_RESPONSES,
    "404": {"description": "No such source or inbox item", "model": ErrorBody},
    "409": {"description": "The inbox item was already decided", "model": ErrorBody},
}
SOURCE = Path(min_length=1, max_length=200, description="the source name")
Scope = Literal["traits", "properties", "context"]


class Declare(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scope: Scope
    path: str = Field(..., min_length=1, max_length=200, description="field name or dotted path")
    category: str = Field(
        ..., min_length=1, max_length=40, description="a data category (GET /v1/dictionary/categories)"
    )
    retention_days: int | None = Field(
        -1, ge=-1, le=36_500, description="-1: the category's default; null: profile lifetime"
    )
    note: str = Field("", max_length=300)


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    policy: Literal["encrypt", "redact", "drop"]


class Decide(BaseModel):
    model_config = ConfigDict(extra="forbid")
    category: str | None = Field(None, min_length=1, max_length=40, description="default: the category guessed")
    retention_days: int | None = Field(-1, ge=-1, le=36_500)


def _actor(staff: Staff) -> str:
    return f"token:{staff.token_id}"


@router.get("/v1/dictionary/categories", responses=STAFF_RESPONSES)
def categories(request: Request, staff: Staff = Depends(Require("privacy:read"))) -> Any:
    """Every data category: encrypted or not, special (needs an opt-in), never stored, default retention."""
    from candor.dictionary import CATEGORIES

    return [
        {
            "name": c.name,
            "title": c.title,
            "description": c.description,
            "sealed": c.sealed,
            "special": c.special,
            "never_stored": c.never_stored,
            "retention_days": c.retention_days,
            "opt_in_purpose": c.purpose,
            "law": c.law,
        }
        for c in CATEGORIES.values()
    ]


@router.get("/v1/dictionary/records", responses=STAFF_RESPONSES)
def records(request: Request, staff: Staff = Depends(Require("privacy:read"))) -> Any:
    """Per category: sources, fields, retention, purposes and the condition of use (records of processing)."""
    from candor.dictionary import processing_records

    rt = request.app.state.candor
    with rt.store.engine.connect() as conn:
        return processing_records(conn, rt.taxonomy.names())


@router.get("/v1/sources/{source}/dictionary", responses=ERR)
def source_dictionary(request: Request, source: str = SOURCE, staff: Staff = Depends(Require("privacy:read"))) -> Any:
    """The source's declared fields (its own and the built-in Segment ones) with category and retention."""
    return request.app.state.candor.dictionary.list(source)


@router.post("/v1/sources/{source}/dictionary", status_code=201, responses=ERR)
def declare(
    request: Request, body: Declare, source: str = SOURCE, staff: Staff = Depends(Require("privacy:write"))
) -> Any:
    """Declare a field of the source (or change its declaration); it is no longer flagged by detection."""
    rt = request.app.state.candor
    return rt.dictionary.declare(
        source, body.scope, body.path, body.category, body.retention_days, note=body.note, actor=_actor(staff)
    )


@router.delete("/v1/sources/{source}/dictionary", responses=ERR)
def forget(
    request: Request,
    source: str = SOURCE,
    scope: Scope = Query(...),
    path: str = Query(..., min_length=1, max_length=200),
    staff: Staff = Depends(Require("privacy:write")),
) -> Any:
    """Remove a source's own declaration (a built-in one then applies again, if any)."""
    from candor.dictionary import DictionaryError

    if not request.app.state.candor.dictionary.forget(source, scope, path, actor=_actor(staff)):
        raise DictionaryError(f"{source!r} has no declaration of {scope}.{path}", 404)
    return {"deleted": True}


@router.get("/v1/sources/{source}/privacy-policy", responses=ERR)
def get_policy(request: Request, source: str = SOURCE, staff: Staff = Depends(Require("privacy:read"))) -> Any:
    """What collection does with undeclared personal data in the source's properties."""
    rt = request.app.state.candor
    with rt.store.engine.connect() as conn:
        sid = rt.dictionary.source_id(source, conn)
    return {"source": source, "policy": rt.inbox.policy_for(sid)}


@router.put("/v1/sources/{source}/privacy-policy", responses=ERR)
def set_policy(
    request: Request, body: Policy, source: str = SOURCE, staff: Staff = Depends(Require("privacy:write"))
) -> Any:
    """``encrypt`` (seal and flag, the default), ``redact`` (mask the personal part) or ``drop`` the field."""
    return request.app.state.candor.inbox.set_policy(source, body.policy, actor=_actor(staff))


@router.get("/v1/privacy/inbox", responses=ERR)
def inbox(
    request: Request,
    state: Literal["open", "declared", "dismissed"] | None = Query("open"),
    source: str | None = Query(None, min_length=1, max_length=200),
    limit: int = Query(500, ge=1, le=5000),
    staff: Staff = Depends(Require("privacy:read")),
) -> Any:
    """Undeclared personal data found at collection: field, source, category guessed, detector, what was
    done, count, first and last seen. Never the value."""
    rt = request.app.state.candor
    return {"summary": rt.inbox.summary(), "items": rt.inbox.list(state=state, source=source, limit=limit)}


@router.post("/v1/privacy/inbox/{item_id}/declare", responses=ERR)
def declare_item(
    request: Request,
    body: Decide,
    item_id: int = Path(ge=1, le=2**62),
    staff: Staff = Depends(Require("privacy:write")),
) -> Any:
    """Declare the item's field in its source's dictionary (with the guessed category unless told)."""
    return request.app.state.candor.inbox.declare(
        item_id, category=body.category, retention_days=body.retention_days, actor=_actor(staff)
    )


@router.post("/v1/privacy/inbox/{item_id}/dismiss", responses=ERR)
def dismiss_item(
    request: Request, item_id: int = Path(ge=1, le=2**62), staff: Staff = Depends(Require("privacy:write"))
) -> Any:
    """Close the item without declaring the field (a false alarm)."""
    return request.app.state.candor.inbox.dismiss(item_id, actor=_actor(staff))
