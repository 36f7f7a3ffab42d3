"""HTTP routes for the audit log (staff with ``audit:read``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from candor import audit
from candor.auth import Require, Staff
from candor.http import STAFF_RESPONSES

router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=STAFF_RESPONSES)


class AuditEntry(BaseModel):
    seq: int
    ts_ms: int
    actor: str
    action: str
    subject_id: str | None
    target: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    next_after: int | None


class VerifyResult(BaseModel):
    ok: bool
    entries: int
    head_seq: int
    first_bad_seq: int | None
    problem: str | None
    checkpoints_checked: int


class Checkpoint(BaseModel):
    seq: int
    hash: str
    ts_ms: int
    signature: str


@router.get("", response_model=AuditPage)
def list_entries(
    request: Request,
    after: int = Query(0, ge=0, le=2**62, description="Return entries with a sequence number above this"),
    limit: int = Query(100, ge=1, le=1000),
    subject_id: str | None = Query(None, max_length=32, pattern="^[0-9a-f]{1,32}$"),
    _: Staff = Depends(Require("audit:read")),
) -> dict[str, Any]:
    """Audit entries in order (pseudonyms and ids only)."""
    rows = audit.entries(request.app.state.candor.store, after=after, limit=limit, subject_id=subject_id)
    return {"entries": rows, "next_after": rows[-1]["seq"] if len(rows) == limit else None}


@router.post("/verify", response_model=VerifyResult)
def verify_chain(request: Request, _: Staff = Depends(Require("audit:read"))) -> dict[str, Any]:
    """Recompute the whole hash chain and check it against the signed checkpoints."""
    rt = request.app.state.candor
    return audit.verify(rt.store, rt.checkpoints).as_dict()


@router.post("/checkpoints", response_model=Checkpoint)
def write_checkpoint(request: Request, staff: Staff = Depends(Require("audit:read"))) -> dict[str, Any]:
    """Sign the current chain head into the checkpoint file now."""
    rt = request.app.state.candor
    return rt.checkpoints.write()
