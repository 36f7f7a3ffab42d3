"""``/v1/campaigns`` (marketers), ``/v1/unsubscribe/{token}`` (one click, RFC 8058), destinations and
their dead letters, audience exports, provider callbacks (bounces, complaints, inbound SMS) and the
open/click tracker."""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter, Body, Depends, Path, Request
from fastapi.responses import Response

from candor.auth import Public, Require, SourceAuth, Staff
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


# -- destinations, dead letters, audiences -----------------------------------------------------------
DEST_ERR: dict[int | str, dict[str, Any]] = {**ERR, "502": {"model": ErrorBody}}


def _text(body: dict[str, Any], key: str) -> str | None:
    v = body.get(key)
    if v is not None and not isinstance(v, str):
        from candor.campaigns.definition import CampaignError

        raise CampaignError(f"{key}: text")
    return v


@router.post("/v1/destinations", status_code=201, responses={**STAFF_RESPONSES, **ERR})
def create_destination(
    request: Request,
    body: dict[str, Any] = Body(..., description="{name, kind: webhook|sms|ad_audience, url, purpose?, contact?}"),
    staff: Staff = Depends(Require("settings:write")),
) -> Any:
    """A signed webhook destination, an SMS provider or an ad-platform audience endpoint. The answer
    holds the signing secret, shown this once."""
    return request.app.state.candor.campaigns.destinations.create(
        _text(body, "name") or "",
        _text(body, "kind") or "",
        _text(body, "url") or "",
        purpose=_text(body, "purpose"),
        contact=_text(body, "contact"),
        actor=f"token:{staff.token_id}",
    )


@router.get("/v1/destinations", responses=STAFF_RESPONSES)
def list_destinations(request: Request, staff: Staff = Depends(Require("campaigns:send"))) -> Any:
    """Every destination (never its secret) with the size of its dead-letter queue."""
    return request.app.state.candor.campaigns.destinations.listing()


@router.get("/v1/destinations/{name}/dead-letters", responses={**STAFF_RESPONSES, **ERR})
def dead_letters(request: Request, name: str = NAME, staff: Staff = Depends(Require("campaigns:send"))) -> Any:
    """Deliveries that failed after every retry: what, to whom (a profile id), how often, the last error."""
    return request.app.state.candor.campaigns.destinations.dead_letters(name)


@router.post("/v1/destinations/{name}/replay", responses={**STAFF_RESPONSES, **DEST_ERR})
def replay(
    request: Request,
    name: str = NAME,
    body: dict[str, Any] | None = Body(None, description='{"ids": [dead-letter ids]} (default: all)'),
    staff: Staff = Depends(Require("campaigns:send")),
) -> Any:
    """Try dead letters again; each message is decided and rendered again now (consent may have changed)."""
    from candor.campaigns.definition import CampaignError

    ids = (body or {}).get("ids")
    if ids is not None and (
        not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
    ):
        raise CampaignError("ids: a list of dead-letter ids")
    return request.app.state.candor.campaigns.destinations.replay(name, ids or None, actor=f"token:{staff.token_id}")


@router.post("/v1/audiences/export", responses={**STAFF_RESPONSES, **DEST_ERR})
def export_audience(
    request: Request,
    body: dict[str, Any] = Body(..., description="{segment, destination}"),
    staff: Staff = Depends(Require("campaigns:send")),
) -> Any:
    """Push a segment's advertising audience (SHA-256 of normalised email and phone, advertising consent
    only, at least 100 people) to an ad_audience destination; audited."""
    from candor.campaigns.definition import CampaignError

    segment, destination = _text(body, "segment"), _text(body, "destination")
    if not segment or not destination:
        raise CampaignError("segment and destination are required")
    return request.app.state.candor.campaigns.audiences.export(
        segment, destination=destination, actor=f"token:{staff.token_id}"
    )


# -- what providers post back: bounces, complaints, inbound SMS ---------------------------------------
def _provider(request: Request) -> str:
    """The source whose write key (HTTP Basic user name) the provider posts with; only the sources
    named in CANDOR_FEEDBACK_SOURCES may (none by default). Signatures: campaigns/callbacks.py."""
    from candor.auth import AuthError, basic_username
    from candor.campaigns import callbacks

    rt = request.app.state.candor
    key = basic_username(request.headers.get("authorization"))
    source = rt.directory.source_for_key(key) if key else None
    if source is None:
        raise AuthError(401, "invalid_write_key", "send a source write key as the HTTP Basic user name")
    callbacks.check_source(rt.settings, str(source.name))
    return str(source.name)


PROVIDER_RESPONSES: dict[int | str, dict[str, Any]] = {
    "400": {"model": ErrorBody},
    "401": {"model": ErrorBody},
    "403": {"model": ErrorBody},
    "413": {"model": ErrorBody},
}


@router.post("/v1/email/feedback", dependencies=[Depends(SourceAuth())], responses=PROVIDER_RESPONSES)
async def email_feedback(request: Request) -> Any:
    """Bounces and complaints from the mail provider (SES through SNS, SendGrid-style event lists, or
    generic JSON; docs/campaigns.md): permanent bounces and complaints go on the do-not-contact list."""
    from candor.campaigns import callbacks, feedback

    source = _provider(request)
    body = await request.body()
    rt = request.app.state.candor
    callbacks.verify_email_feedback(rt.settings, request.headers, body)
    return feedback.apply(rt, body, source)


@router.post("/v1/sms/inbound", dependencies=[Depends(SourceAuth())], responses=PROVIDER_RESPONSES)
async def sms_inbound(request: Request) -> Any:
    """A text someone sent us, as the SMS provider posts it (JSON ``{from, text}``, or Twilio's or Vonage's
    form fields): STOP and its synonyms opt out at once; HELP is answered (``reply``)."""
    from candor.campaigns import callbacks, sms

    source = _provider(request)
    body = await request.body()
    rt = request.app.state.candor
    ctype = request.headers.get("content-type", "")
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    callbacks.verify_sms_inbound(rt.settings, request.headers, body, ctype, path)
    return sms.inbound(rt, body, ctype, source)


# -- opens and clicks (analytics consent only) -------------------------------------------------------
TRACK: dict[int | str, dict[str, Any]] = {
    "200": {"content": {"image/gif": {}}},
    "302": {"description": "to the link in the message"},
    "400": {"model": ErrorBody},
    "404": {"content": {"text/html": {}}},
}


@router.get("/v1/t/o/{token}", dependencies=[Depends(Public())], response_class=Response, responses=TRACK)
def opened(request: Request, token: str = Path(min_length=10, max_length=4096)) -> Response:
    """The 1×1 image of a tracked email: an open, recorded if the person still agrees to analytics."""
    from candor.campaigns import tracking
    from candor.web.common import BadToken

    # an image that does not load helps nobody: a bad token gets the same picture, and nothing is recorded
    with contextlib.suppress(BadToken):
        tracking.hit(request.app.state.candor, token, "open")
    return Response(tracking.PIXEL, media_type="image/gif", headers={"Cache-Control": "no-store"})


@router.get("/v1/t/c/{token}", dependencies=[Depends(Public())], response_class=Response, responses=TRACK)
def clicked(request: Request, token: str = Path(min_length=10, max_length=4096)) -> Response:
    """A tracked link: the click is recorded (analytics consent only), then the browser goes where the
    message pointed (the target is inside the signed token: no open redirect)."""
    from fastapi.responses import RedirectResponse

    from candor.campaigns import tracking
    from candor.web.common import BadToken

    try:
        url = tracking.hit(request.app.state.candor, token, "click")
    except BadToken:
        url = None
    if url is None:
        return page(request, "message.html", {"title": "This link is not valid", "text": ""}, status=404)
    return RedirectResponse(url, status_code=302)
