"""``/v1/loyalty/*``: the loyalty programme for staff and the brand's backends (docs/api.md, docs/loyalty.md).

People are named by ``userId``, ``anonymousId`` or ``email`` in the query string (GET) or the body (POST),
never in the path, so no identifier reaches an access log.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from candor import audit
from candor.auth import Public, Require, Staff
from candor.http import STAFF_RESPONSES, ErrorBody
from candor.loyalty import MAX_POINTS, LoyaltyError

log = logging.getLogger("candor.loyalty")
router = APIRouter(tags=["loyalty"])
ERR: dict[int | str, dict[str, Any]] = {
    **STAFF_RESPONSES,
    "404": {"description": "No such person or offer", "model": ErrorBody},
    "409": {
        "description": "Already a member, not a member, not enough points, offer not open or already accepted",
        "model": ErrorBody,
    },
    "410": {"description": "The offer has ended", "model": ErrorBody},
}


class Who(BaseModel):
    model_config = ConfigDict(extra="forbid")
    userId: str | None = Field(None, min_length=1, max_length=1024)
    anonymousId: str | None = Field(None, min_length=1, max_length=1024)
    email: str | None = Field(None, min_length=3, max_length=320)


class Join(Who):
    noticeVersion: int = Field(..., ge=1, description="the version of the notice of financial incentive shown")


class Redeem(Who):
    points: int = Field(..., gt=0, le=MAX_POINTS)
    ref: str | None = Field(
        None, min_length=1, max_length=200, description="idempotency key (e.g. the order id): redeemed once"
    )


class Price(Who):
    amount: float = Field(..., gt=0, le=1e9, description="the regular price")
    orderId: str | None = Field(
        None, min_length=1, max_length=200, description="records the discount once in the value statement"
    )


class Offer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., min_length=1, max_length=100)
    title: str = Field(..., min_length=1, max_length=200)
    ask: str = Field(..., min_length=1, max_length=500, description="what we ask, in plain words")
    fields: list[str] = Field(..., min_length=1, max_length=10, description="trait names the answer fills")
    category: str = Field(..., min_length=1, max_length=40, description="the data category of the answers")
    purposes: list[str] = Field([], max_length=10, description="purposes the member agrees to by accepting")
    points: int = Field(..., gt=0, le=MAX_POINTS)
    starts: datetime | None = Field(None, description="default: now")
    ends: datetime


class Accept(Who):
    values: dict[str, Any] = Field(..., description="one value per field of the offer")


def subject_of(rt: Any, who: Who | dict[str, str | None]) -> str:
    given = who.model_dump() if isinstance(who, Who) else who
    named = [(t, v) for t, v in (("user_id", given.get("userId")), ("anonymous_id", given.get("anonymousId")),
                                 ("email", given.get("email"))) if v]  # fmt: skip
    if len(named) != 1:
        raise LoyaltyError("give exactly one of userId, anonymousId or email")
    sid = rt.consent.subject_for(*named[0])
    if sid is None:
        raise LoyaltyError("no one is known by that identifier", 404, "not_found")
    return str(sid)


def _query(userId: str | None, anonymousId: str | None, email: str | None) -> dict[str, str | None]:
    return {"userId": userId, "anonymousId": anonymousId, "email": email}


def _actor(staff: Staff) -> str:
    return f"token:{staff.token_id}"


def _ms(value: datetime) -> int:
    if value.tzinfo is None:
        raise LoyaltyError("give times with a time zone (e.g. 2027-01-31T00:00:00Z)")
    return int(value.timestamp() * 1000)


@router.get("/v1/loyalty/notice", dependencies=[Depends(Public())])
def notice(request: Request) -> Any:
    """The current notice of financial incentive (what data for what value), to show before joining."""
    n = request.app.state.candor.loyalty.notice()
    return {"notice_id": n.notice_id, "version": n.version, "language": n.language, "sha256": n.sha256, "text": n.text}


@router.post("/v1/loyalty/notice", responses=STAFF_RESPONSES)
def publish_notice(request: Request, staff: Staff = Depends(Require("settings:write"))) -> Any:
    """Publish a new version of the notice when the programme's settings changed its text."""
    n = request.app.state.candor.loyalty.publish_notice(actor=_actor(staff))
    return {"notice_id": n.notice_id, "version": n.version, "sha256": n.sha256}


@router.get("/v1/loyalty/members", responses=ERR)
def member(
    request: Request,
    userId: str | None = Query(None, max_length=1024),
    anonymousId: str | None = Query(None, max_length=1024),
    email: str | None = Query(None, max_length=320),
    _: Staff = Depends(Require("loyalty:read")),
) -> Any:
    """Membership, balance, tier and member discount of a person."""
    rt = request.app.state.candor
    return rt.loyalty.status(subject_of(rt, _query(userId, anonymousId, email)))


@router.post("/v1/loyalty/members", status_code=201, responses=ERR)
def join(request: Request, body: Join, staff: Staff = Depends(Require("loyalty:write"))) -> Any:
    """Enrol a person who opted in on the brand's site or till, against the notice version shown."""
    rt = request.app.state.candor
    return rt.loyalty.join(subject_of(rt, body), notice_version=body.noticeVersion, source="api", actor=_actor(staff))


@router.post("/v1/loyalty/members/leave", responses=ERR)
def leave(request: Request, body: Who, staff: Staff = Depends(Require("loyalty:write"))) -> Any:
    """End a membership at once; the points already earned stay redeemable until they expire."""
    rt = request.app.state.candor
    return rt.loyalty.leave(subject_of(rt, body), source="api", actor=_actor(staff))


@router.post("/v1/loyalty/redeem", responses=ERR)
def redeem(request: Request, body: Redeem, staff: Staff = Depends(Require("loyalty:write"))) -> Any:
    """Spend points; never more than the balance (409), once per ``ref``."""
    rt = request.app.state.candor
    return rt.loyalty.redeem(subject_of(rt, body), body.points, ref=body.ref, actor=_actor(staff))


@router.post("/v1/loyalty/price", responses=ERR)
def price(request: Request, body: Price, staff: Staff = Depends(Require("loyalty:write"))) -> Any:
    """The member price of an amount by the person's tier; with ``orderId`` the discount is recorded."""
    rt = request.app.state.candor
    return rt.loyalty.price(subject_of(rt, body), body.amount, order=body.orderId, actor=_actor(staff))


@router.get("/v1/loyalty/statement", responses=ERR)
def statement(
    request: Request,
    userId: str | None = Query(None, max_length=1024),
    anonymousId: str | None = Query(None, max_length=1024),
    email: str | None = Query(None, max_length=320),
    staff: Staff = Depends(Require("loyalty:read")),
) -> Any:
    """The value statement: what the person shared (purposes, data categories, offer answers by field
    name, never values) and what they got (points, redemptions, discounts, personalised offers)."""
    rt = request.app.state.candor
    sid = subject_of(rt, _query(userId, anonymousId, email))
    out = rt.loyalty.statement(sid)
    with rt.store.write() as conn:
        audit.record(conn, _actor(staff), "loyalty.statement.read", subject_id=sid)
    return out


@router.get("/v1/loyalty/offers", responses=STAFF_RESPONSES)
def offers(
    request: Request,
    state: Literal["upcoming", "open", "expired"] | None = Query(None),
    _: Staff = Depends(Require("loyalty:read")),
) -> Any:
    """Value-exchange offers, with their state (upcoming, open, expired)."""
    return request.app.state.candor.loyalty.offers(state=state)


@router.post("/v1/loyalty/offers", status_code=201, responses=ERR)
def create_offer(request: Request, body: Offer, staff: Staff = Depends(Require("loyalty:write"))) -> Any:
    """A new offer: points for telling us something, within a validity window. Offers are never edited."""
    from candor.store import now_ms

    rt = request.app.state.candor
    return rt.loyalty.create_offer(
        body.name,
        title=body.title,
        ask=body.ask,
        fields=body.fields,
        category=body.category,
        purposes=body.purposes,
        points=body.points,
        starts_ms=_ms(body.starts) if body.starts else now_ms(),
        ends_ms=_ms(body.ends),
        actor=_actor(staff),
    )


@router.post("/v1/loyalty/offers/{name}/accept", responses=ERR)
def accept(
    request: Request,
    body: Accept,
    name: str = Path(..., min_length=1, max_length=100),
    staff: Staff = Depends(Require("loyalty:write")),
) -> Any:
    """A member accepts an offer: the answers (sealed), the consent and the points, once."""
    rt = request.app.state.candor
    return rt.loyalty.accept_offer(subject_of(rt, body), name, body.values, source="api", actor=_actor(staff))


@router.post("/v1/loyalty/earn", responses=STAFF_RESPONSES)
def earn(request: Request, _: Staff = Depends(Require("loyalty:write"))) -> Any:
    """Credit the purchases received since the last run now (the server also runs it on a schedule)."""
    return request.app.state.candor.loyalty.earn_purchases()


@router.post("/v1/loyalty/expire", responses=STAFF_RESPONSES)
def expire(request: Request, _: Staff = Depends(Require("loyalty:write"))) -> Any:
    """Expire points past their date now (the server also runs it on a schedule)."""
    return request.app.state.candor.loyalty.expire()


def run(rt: Any) -> dict[str, Any]:
    return {"earned": rt.loyalty.earn_purchases(), "expired": rt.loyalty.expire()}


async def every(rt: Any, seconds: int) -> None:
    """The server's schedule: credit purchases and expire points every ``seconds`` (0: never)."""
    if seconds <= 0:
        return
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(seconds)
        try:
            await loop.run_in_executor(None, run, rt)
        except Exception as exc:  # noqa: BLE001 - retried at the next tick
            log.warning("loyalty run failed: %s", type(exc).__name__)
