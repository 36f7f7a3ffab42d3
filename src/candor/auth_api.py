"""Signing in and out: a console user exchanges a user name and password for a session token."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from candor.auth import AuthError, Public, Require, Staff
from candor.http import STAFF_RESPONSES, ErrorBody
from candor.security import RateLimited

router = APIRouter(prefix="/v1/auth", tags=["authentication"])


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(..., min_length=1, max_length=100)
    password: str = Field(..., min_length=1, max_length=1024)


class Session(BaseModel):
    token: str
    expires_ms: int
    role: str


class LoggedOut(BaseModel):
    success: bool


@router.post(
    "/login",
    response_model=Session,
    dependencies=[Depends(Public())],
    responses={"400": {"model": ErrorBody}, "401": {"model": ErrorBody}, "429": {"model": ErrorBody}},
)
def login(body: Login, request: Request) -> Any:
    """A session token for 12 hours. Rate-limited per client address and per user name; the error
    never says whether the user name exists."""
    rt = request.app.state.candor
    ip = request.client.host if request.client else "unknown"
    rt.limits.hit("login_ip", ip)
    wait = rt.limits.exceeded("login_user", body.username.lower())
    if wait is not None:
        raise RateLimited("login_user", wait)
    session = rt.directory.login(body.username, body.password)
    if session is None:
        rt.limits.hit_quietly("login_user", body.username.lower())
        raise AuthError(401, "invalid_login", "the user name or the password is wrong")
    token, expires, role = session
    return {"token": token, "expires_ms": expires, "role": role}


@router.post("/logout", response_model=LoggedOut, responses=STAFF_RESPONSES)
def logout(request: Request, staff: Staff = Depends(Require(None))) -> Any:
    """Revoke the token this request was made with."""
    rt = request.app.state.candor
    return {"success": rt.directory.revoke_token_value(request.state.token, f"token:{staff.token_id}")}
