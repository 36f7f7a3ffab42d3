"""``/v1/privacy-requests``: the people in the data ask; privacy officers answer.

The public routes never reveal whether someone is a customer: the same answer, words and timing
for everyone, and processing runs after the answer is sent.
"""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from candor.auth import Public, Require, Staff
from candor.http import STAFF_RESPONSES, ErrorBody
from candor.rights.requests import ACCEPTED, TYPES, RightsError

router = APIRouter(tags=["privacy requests"])
ERR: dict[int | str, dict[str, Any]] = {
    "400": {"model": ErrorBody},
    "404": {"model": ErrorBody},
    "409": {"model": ErrorBody},
    "429": {"model": ErrorBody},
    "503": {"model": ErrorBody},
}
RID = Path(pattern="^[0-9a-f]{32}$", description="The request id")


class NewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field(description="one of: " + ", ".join(TYPES))
    email: str | None = Field(None, max_length=320)
    phone: str | None = Field(None, max_length=64)
    userId: str | None = Field(None, max_length=1024)
    jurisdiction: str | None = Field(None, description="EU, UK, US-CA, US or OTHER (default: the installation's)")
    contact: str | None = Field(None, max_length=320, description="email for the answer, when identified otherwise")
    details: dict[str, Any] | None = Field(None, description='rectification: {"traits": {...}}')


class StaffRequest(NewRequest):
    verified_reason: str | None = Field(
        None, max_length=300, description="record the person as verified by other means (audited)"
    )


class Accepted(BaseModel):
    id: str
    state: str
    message: str


class Status(BaseModel):
    id: str
    type: str
    state: str
    jurisdiction: str
    received_ms: int
    due_ms: int
    completed_ms: int | None


class StaffView(Status):
    id_type: str
    ack_due_ms: int | None
    extended: bool
    verified_ms: int | None
    verification: str | None
    denial_reason: str | None
    outcome: dict[str, Any]
    notes: list[dict[str, Any]]
    channel: str
    overdue: bool
    due_soon: bool


class Code(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(..., min_length=1, max_length=12)


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(..., min_length=1, max_length=300)


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(..., min_length=1, max_length=1000)


class Hold(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject_id: str = Field(..., pattern="^[0-9a-f]{32}$")
    store: str = Field(..., max_length=40, description="the table the hold keeps, e.g. events")
    reason: str = Field(..., min_length=1, max_length=300)


class HoldCreated(BaseModel):
    id: int


def _identifier(body: NewRequest) -> tuple[str, str]:
    given = [(t, v) for t, v in (("email", body.email), ("phone", body.phone), ("user_id", body.userId)) if v]
    if len(given) != 1:
        raise RightsError("give exactly one of email, phone or userId")
    return given[0]


def _process_later(background: BackgroundTasks, rt: Any, request_id: str) -> None:
    def run() -> None:
        with contextlib.suppress(RightsError):  # already processed by someone else
            rt.rights.process(request_id, actor="system")

    background.add_task(run)


@router.post(
    "/v1/privacy-requests",
    status_code=202,
    response_model=Accepted,
    dependencies=[Depends(Public())],
    responses=ERR,
)
def create(body: NewRequest, request: Request) -> Any:
    """Ask for access, erasure, correction, restriction, or object / opt out. A one-time code goes to
    the email address; the answer is the same whether or not we hold data about you."""
    rt = request.app.state.candor
    ip = request.client.host if request.client else "unknown"
    rt.limits.hit("privacy_ip", ip)
    id_type, value = _identifier(body)
    norm, _, _ = rt.requests.check(body.type, id_type, value, body.jurisdiction, body.contact, body.details)
    rt.limits.hit("privacy_identifier", rt.vault.pseudonym("rate", f"{id_type}:{norm}"))
    req, _ = rt.requests.create(
        body.type, id_type, value, jurisdiction=body.jurisdiction, contact=body.contact, details=body.details
    )
    return {"id": req.id, "state": req.state, "message": ACCEPTED}


@router.post(
    "/v1/privacy-requests/{request_id}/verify",
    response_model=Status,
    dependencies=[Depends(Public())],
    responses=ERR,
)
def verify(body: Code, request: Request, background: BackgroundTasks, request_id: str = RID) -> Any:
    """Prove control of the email address with the code we sent (10 minutes, 5 attempts)."""
    rt = request.app.state.candor
    rt.limits.hit("verify_ip", request.client.host if request.client else "unknown")
    req = rt.requests.verify(request_id, body.code)
    _process_later(background, rt, request_id)
    return req.public()


@router.get(
    "/v1/privacy-requests/download/{token}",
    dependencies=[Depends(Public())],
    responses={
        "200": {"content": {"application/zip": {}}},
        "400": {"model": ErrorBody},
        "404": {"model": ErrorBody},
        "410": {"model": ErrorBody},
        "429": {"model": ErrorBody},
    },
)
def download(request: Request, token: str = Path(min_length=20, max_length=100)) -> Any:
    """The access export behind a single-use, expiring link."""
    rt = request.app.state.candor
    rt.limits.hit("verify_ip", request.client.host if request.client else "unknown")
    name, data = rt.rights.download(token)
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )


@router.get(
    "/v1/privacy-requests/{request_id}",
    response_model=Status,
    dependencies=[Depends(Public())],
    responses=ERR,
)
def status(request: Request, request_id: str = RID) -> Any:
    """Where a request stands (its id is the secret that lets you see this; no data is shown)."""
    return request.app.state.candor.requests.get(request_id).public()


# -- staff -----------------------------------------------------------------------------------------
@router.get("/v1/privacy-requests", response_model=list[StaffView], responses=STAFF_RESPONSES)
def listing(
    request: Request,
    state: str | None = Query(None, max_length=40),
    overdue: bool = Query(False),
    due_soon: bool = Query(False, description="due within 7 days"),
    staff: Staff = Depends(Require("rights:manage")),
) -> Any:
    """Requests by due date, with overdue and due-soon flags."""
    return request.app.state.candor.requests.listing(state=state, overdue=overdue, due_soon=due_soon)


@router.post(
    "/v1/privacy-requests/staff", status_code=201, response_model=StaffView, responses={**STAFF_RESPONSES, **ERR}
)
def staff_create(body: StaffRequest, request: Request, staff: Staff = Depends(Require("rights:manage"))) -> Any:
    """Record a request received by phone, post or in store; optionally verified by other means."""
    rt = request.app.state.candor
    id_type, value = _identifier(body)
    actor = f"token:{staff.token_id}"
    req, _ = rt.requests.create(
        body.type,
        id_type,
        value,
        jurisdiction=body.jurisdiction,
        contact=body.contact,
        details=body.details,
        channel="staff",
        actor=actor,
        send_code=not body.verified_reason,
    )
    if body.verified_reason:
        req = rt.requests.verify_by_staff(req.id, actor=actor, reason=body.verified_reason)
    from candor.store import now_ms

    return req.staff(now_ms())


def _staff_view(rt: Any, request_id: str) -> Any:
    from candor.store import now_ms

    return rt.requests.get(request_id).staff(now_ms())


@router.post(
    "/v1/privacy-requests/{request_id}/staff-verify", response_model=StaffView, responses={**STAFF_RESPONSES, **ERR}
)
def staff_verify(
    body: Reason, request: Request, request_id: str = RID, staff: Staff = Depends(Require("rights:manage"))
) -> Any:
    """Record a verification done by other means (ID checked in store, ...), with the reason; audited."""
    rt = request.app.state.candor
    rt.requests.verify_by_staff(request_id, actor=f"token:{staff.token_id}", reason=body.reason)
    return _staff_view(rt, request_id)


@router.post(
    "/v1/privacy-requests/{request_id}/process", response_model=StaffView, responses={**STAFF_RESPONSES, **ERR}
)
def process(request: Request, request_id: str = RID, staff: Staff = Depends(Require("rights:manage"))) -> Any:
    """Carry out a verified request now."""
    rt = request.app.state.candor
    rt.rights.process(request_id, actor=f"token:{staff.token_id}")
    return _staff_view(rt, request_id)


@router.post("/v1/privacy-requests/{request_id}/notes", response_model=StaffView, responses={**STAFF_RESPONSES, **ERR})
def annotate(
    body: Note, request: Request, request_id: str = RID, staff: Staff = Depends(Require("rights:manage"))
) -> Any:
    """Add a note (no personal data, please: it is not encrypted)."""
    rt = request.app.state.candor
    rt.requests.annotate(request_id, body.text, actor=f"token:{staff.token_id}")
    return _staff_view(rt, request_id)


@router.post("/v1/privacy-requests/{request_id}/extend", response_model=StaffView, responses={**STAFF_RESPONSES, **ERR})
def extend(
    body: Reason, request: Request, request_id: str = RID, staff: Staff = Depends(Require("rights:manage"))
) -> Any:
    """Extend the deadline once (GDPR two months, CCPA 45 days); the subject is told why."""
    rt = request.app.state.candor
    rt.requests.extend(request_id, body.reason, actor=f"token:{staff.token_id}")
    return _staff_view(rt, request_id)


@router.post("/v1/privacy-requests/{request_id}/deny", response_model=StaffView, responses={**STAFF_RESPONSES, **ERR})
def deny(
    body: Reason, request: Request, request_id: str = RID, staff: Staff = Depends(Require("rights:manage"))
) -> Any:
    """Refuse a request, with the reason the subject is given."""
    rt = request.app.state.candor
    rt.requests.deny(request_id, body.reason, actor=f"token:{staff.token_id}")
    return _staff_view(rt, request_id)


@router.post("/v1/legal-holds", status_code=201, response_model=HoldCreated, responses={**STAFF_RESPONSES, **ERR})
def add_hold(body: Hold, request: Request, staff: Staff = Depends(Require("rights:manage"))) -> Any:
    """Keep one store of a subject through an erasure for a legal reason (an open order, a dispute)."""
    rt = request.app.state.candor
    try:
        hold_id = rt.rights.erasure.add_hold(body.subject_id, body.store, body.reason, actor=f"token:{staff.token_id}")
    except ValueError as exc:
        raise RightsError(str(exc)) from None
    return {"id": hold_id}
