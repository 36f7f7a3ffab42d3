"""``/v1/segments``: definitions, preview with the purpose breakdown, refresh with history."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request

from candor.auth import Require, Staff
from candor.http import STAFF_RESPONSES, ErrorBody

router = APIRouter(tags=["segments"])
ERR: dict[int | str, dict[str, Any]] = {
    "400": {"model": ErrorBody},
    "404": {"model": ErrorBody},
    "409": {"model": ErrorBody},
}
NAME = Path(min_length=1, max_length=200)


@router.post("/v1/segments", status_code=201, responses={**STAFF_RESPONSES, **ERR})
def create(
    request: Request,
    body: dict[str, Any] = Body(..., description="a segment definition (docs/segments.md), with its name"),
    staff: Staff = Depends(Require("segments:write")),
) -> Any:
    """Create a segment; an invalid definition gets 400 naming the place (``conditions[2].count.gte``)."""
    name = body.get("name")
    if not isinstance(name, str):
        from candor.segments import SegmentError

        raise SegmentError("a segment needs a name", "name")
    return request.app.state.candor.segments.create(name, body, f"token:{staff.token_id}")


@router.get("/v1/segments", responses=STAFF_RESPONSES)
def listing(request: Request, staff: Staff = Depends(Require("segments:write"))) -> Any:
    """Every segment with its definition and last run."""
    return request.app.state.candor.segments.list()


@router.get("/v1/segments/{name}/preview", responses={**STAFF_RESPONSES, **ERR})
def preview(
    request: Request,
    name: str = NAME,
    purpose: list[str] | None = Query(None, description="purposes to break down (default: all)"),
    staff: Staff = Depends(Require("segments:write")),
) -> Any:
    """Size and, per purpose, how many are usable, without consent, suppressed or restricted."""
    rt = request.app.state.candor
    if rt.segments.get(name) is None:
        from candor.segments import SegmentError

        raise SegmentError(f"no segment named {name!r}", status=404)
    return rt.segments.preview(name, purpose)


@router.post("/v1/segments/{name}/refresh", responses={**STAFF_RESPONSES, **ERR})
def refresh(request: Request, name: str = NAME, staff: Staff = Depends(Require("segments:write"))) -> Any:
    """Evaluate now and keep the membership history (who entered, who left)."""
    return request.app.state.candor.segments.refresh(name, f"token:{staff.token_id}")
