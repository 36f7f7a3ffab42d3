"""HTTP routes for privacy officers: the records of processing and the retention job."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from candor import audit, retention, ropa
from candor.auth import Require, Staff
from candor.http import STAFF_RESPONSES, error

router = APIRouter(tags=["operations"], responses=STAFF_RESPONSES)
# the page has no script and its only style is inline; nothing else may load
ROPA_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"


class RetentionStatus(BaseModel):
    rules: list[dict[str, Any]]
    last_run: dict[str, Any] | None
    running: bool


class RetentionRun(BaseModel):
    now_ms: int
    rules: list[dict[str, Any]]
    results: dict[str, Any]


@router.get("/v1/ropa", response_model=dict[str, Any])
def records_of_processing(request: Request, staff: Staff = Depends(Require("rights:manage"))) -> dict[str, Any]:
    """The records of processing activities (GDPR Art. 30), generated from the configuration, as JSON."""
    rt = request.app.state.candor
    audit.append(rt.store, f"token:{staff.token_id}", "ropa.read", details={"format": "json"})
    return ropa.build(rt)


@router.get(
    "/v1/ropa.html", responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}}}
)  # errors stay JSON (the default response class); the page itself is text/html
def records_of_processing_page(request: Request, staff: Staff = Depends(Require("rights:manage"))) -> HTMLResponse:
    """The same records as a printable HTML page."""
    rt = request.app.state.candor
    audit.append(rt.store, f"token:{staff.token_id}", "ropa.read", details={"format": "html"})
    page = HTMLResponse(ropa.render_html(ropa.build(rt)))
    page.headers["Content-Security-Policy"] = ROPA_CSP
    return page


@router.get("/v1/retention", response_model=RetentionStatus)
def retention_status(request: Request, _: Staff = Depends(Require("rights:manage"))) -> dict[str, Any]:
    """The retention rules in force and the last completed run of the retention job."""
    return retention.status(request.app.state.candor)


@router.post("/v1/retention/run", response_model=RetentionRun, responses={409: {"description": "Already running"}})
def retention_run(request: Request, staff: Staff = Depends(Require("settings:write"))) -> Any:
    """Run the retention job now (it also runs on the server's schedule); 409 while another run goes on."""
    try:
        return retention.run(request.app.state.candor, actor=f"token:{staff.token_id}")
    except retention.Busy as exc:
        return error(409, "conflict", str(exc))
