"""``/v1/campaigns`` (marketers) and ``/v1/unsubscribe/{token}`` (one click, RFC 8058)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Path, Request
from fastapi.responses import Response

from candor.auth import Public, Require, Staff
from candor.http import STAFF_RESPONSES, ErrorBody
from candor.web.common import page

router = APIRouter(tags=["campaigns"])
ERR: dict[int | str, dict[str, Any]] = {
    "400": {"model": ErrorBody},
    "404": {"model": ErrorBody},
    "409": {"model": ErrorBody},
    "503": {"model": ErrorBody},
}
NAME = Path(min_length=1, max_length=200)


@router.post("/v1/campaigns", status_code=201, responses={**STAFF_RESPONSES, **ERR})
def create(
    request: Request,
    body: dict[str, Any] = Body(..., description="the campaign definition (see docs/campaigns.md)"),
    staff: Staff = Depends(Require("campaigns:send")),
) -> Any:
    """Create a campaign; its templates are rendered against sample profiles first (errors refuse it)."""
    return request.app.state.candor.campaigns.create(body, actor=f"token:{staff.token_id}")


@router.get("/v1/campaigns/{name}/preview", responses={**STAFF_RESPONSES, **ERR})
def preview(request: Request, name: str = NAME, staff: Staff = Depends(Require("campaigns:send"))) -> Any:
    """What sending now would do, per outcome (send personalised / generic, or skipped with the reason),
    with a sample of each variant rendered without personal values."""
    return request.app.state.candor.campaigns.preview(name)


@router.post("/v1/campaigns/{name}/send", responses={**STAFF_RESPONSES, **ERR})
def send(request: Request, name: str = NAME, staff: Staff = Depends(Require("campaigns:send"))) -> Any:
    """Send now, deciding for each recipient at this moment; resuming never sends twice."""
    return request.app.state.candor.campaigns.send(name, actor=f"token:{staff.token_id}")


@router.get("/v1/campaigns/{name}/report", responses={**STAFF_RESPONSES, **ERR})
def report(request: Request, name: str = NAME, staff: Staff = Depends(Require("campaigns:send"))) -> Any:
    """Sent, failed and skipped-by-reason counts, variants, spend against the budget."""
    return request.app.state.candor.campaigns.report(name)


HTML: dict[int | str, dict[str, Any]] = {
    "200": {"content": {"text/html": {}, "application/json": {}}},
    "400": {"model": ErrorBody},
    "404": {"model": ErrorBody, "content": {"text/html": {}}},
}


@router.get("/v1/unsubscribe/{token}", dependencies=[Depends(Public())], response_class=Response, responses=HTML)
def unsubscribe_page(request: Request, token: str = Path(min_length=10, max_length=2048)) -> Response:
    """A confirmation page (mail scanners follow links: a GET never unsubscribes)."""
    return page(request, "unsubscribe.html", {"title": "Unsubscribe", "token": token})


@router.post("/v1/unsubscribe/{token}", dependencies=[Depends(Public())], response_class=Response, responses=HTML)
def unsubscribe(request: Request, token: str = Path(min_length=10, max_length=2048)) -> Response:
    """One-click unsubscribe (``List-Unsubscribe=One-Click``): effective at once, in the consent ledger
    and on the do-not-contact list."""
    out = request.app.state.candor.campaigns.unsubscribe(token)
    if "text/html" in request.headers.get("accept", ""):
        return page(request, "message.html", {"title": "You are unsubscribed", "text": "No more of these messages."})
    from candor.http import JSON

    return JSON(out)
