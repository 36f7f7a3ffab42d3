"""The loyalty programme in the customer's preference center (``/preferences/loyalty``).

The same signed-link session and CSRF token as the rest of the preference center (preferences.py):
the notice of financial incentive before joining, the value statement, open offers, leaving.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import RedirectResponse, Response

from candor import audit
from candor.auth import SessionAuth
from candor.loyalty import LoyaltyError
from candor.web.common import page
from candor.web.preferences import HTML, _form, _guard, _no_session, _session

router = APIRouter(tags=["preference center"])
SAVED = ("joined", "left", "offer")


@router.get(
    "/preferences/loyalty", dependencies=[Depends(SessionAuth("preferences"))], response_class=Response, responses=HTML
)
def show(request: Request, saved: str | None = Query(None, max_length=20)) -> Response:
    """The notice and a join button, or the value statement, open offers and a leave button."""
    s = _session(request)
    if s is None:
        return _no_session(request)
    rt = request.app.state.candor
    sid = s["subject"]
    st = rt.loyalty.statement(sid)
    accepted = {o["offer"] for o in st["shared"]["offers"]}
    offers = [o for o in rt.loyalty.offers(state="open") if o["name"] not in accepted]
    with rt.store.write() as conn:
        audit.record(conn, "subject", "loyalty.statement.viewed", subject_id=sid)
    return page(
        request,
        "loyalty.html",
        {
            "csrf": s["csrf"],
            "st": st,
            "m": st["membership"],
            "notice": rt.loyalty.notice(),
            "offers": offers,
            "tiers": rt.loyalty.tiers,
            "saved": saved if saved in SAVED else None,
        },
    )


def _error(request: Request, exc: LoyaltyError) -> Response:
    return page(request, "message.html", {"title": "That did not work", "text": str(exc)}, status=exc.status)


@router.post(
    "/preferences/loyalty/join",
    dependencies=[Depends(SessionAuth("preferences"))],
    response_class=Response,
    responses=HTML,
)
async def join(request: Request) -> Response:
    """Join, against the notice version that was shown (409 if it changed meanwhile)."""
    form = await _form(request)
    s = _guard(request, form)
    if isinstance(s, Response):
        return s
    version = (form.get("notice_version") or [""])[0]
    if (form.get("agree") or [""])[0] != "yes" or not version.isdigit():
        return _error(request, LoyaltyError("tick the box to agree to the notice of financial incentive"))
    try:
        request.app.state.candor.loyalty.join(
            s["subject"], notice_version=int(version), source="preference_center", actor="subject"
        )
    except LoyaltyError as exc:
        return _error(request, exc)
    return RedirectResponse("/preferences/loyalty?saved=joined", status_code=303)


@router.post(
    "/preferences/loyalty/leave",
    dependencies=[Depends(SessionAuth("preferences"))],
    response_class=Response,
    responses=HTML,
)
async def leave(request: Request) -> Response:
    """Leave at once; points already earned stay yours."""
    form = await _form(request)
    s = _guard(request, form)
    if isinstance(s, Response):
        return s
    try:
        request.app.state.candor.loyalty.leave(s["subject"], source="preference_center", actor="subject")
    except LoyaltyError as exc:
        return _error(request, exc)
    return RedirectResponse("/preferences/loyalty?saved=left", status_code=303)


@router.post(
    "/preferences/loyalty/offers/{name}",
    dependencies=[Depends(SessionAuth("preferences"))],
    response_class=Response,
    responses=HTML,
)
async def accept(request: Request, name: str = Path(..., min_length=1, max_length=100)) -> Response:
    """Accept an offer: one form field per field of the offer (commas make a list)."""
    form = await _form(request)
    s = _guard(request, form)
    if isinstance(s, Response):
        return s
    rt = request.app.state.candor
    try:
        offer = rt.loyalty.offer(name)
        values: dict[str, Any] = {}
        for f in offer["fields"]:
            raw = (form.get(f"f-{f}") or [""])[0].strip()
            parts = [p.strip() for p in raw.split(",") if p.strip()]
            values[f] = parts if len(parts) > 1 else raw
        rt.loyalty.accept_offer(s["subject"], name, values, source="preference_center", actor="subject")
    except LoyaltyError as exc:
        return _error(request, exc)
    return RedirectResponse("/preferences/loyalty?saved=offer", status_code=303)
