"""The customer's preference center: ``/preferences``, reached through a signed, expiring link.

``candor preferences link --email X`` (and every campaign email) carries a link to
``/preferences/open?t=...``. Opening it sets a session cookie (HttpOnly, SameSite=Lax, one hour)
and redirects to ``/preferences`` so the token leaves the address bar. Every form carries a CSRF
token. Every change is a consent-ledger record with the notice version shown, or a trait recorded
from the source ``preference-center``; "download my data" and "delete me" are rights requests
verified by the link itself.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import and_, select

from candor import audit
from candor.auth import Public, SessionAuth
from candor.http import ErrorBody
from candor.rights.requests import RightsError
from candor.store.schema import identifiers
from candor.web.common import BadToken, Signer, check_csrf, page, set_cookie

router = APIRouter(tags=["preference center"])
COOKIE = "candor_pc"
LINK_TTL_MS = 72 * 3600 * 1000
SESSION_SECONDS = 3600
NOTICE_ID = "preference-center"
SOURCE = "preference-center"
INTERESTS = (
    "fiction",
    "crime",
    "science-fiction",
    "history",
    "children",
    "cookery",
    "jazz",
    "classical",
    "rock",
    "pop",
    "folk",
    "vinyl",
)
FREQUENCIES = ("weekly", "fortnightly", "monthly", "rarely")
CHANNELS = ("email", "sms", "post", "push", "phone")
HTML: dict[int | str, dict[str, Any]] = {
    "200": {"content": {"text/html": {}}},
    "303": {"description": "redirect"},
    "400": {"model": ErrorBody, "content": {"text/html": {}}},
    "401": {"content": {"text/html": {}}},
    "403": {"content": {"text/html": {}}},
    "404": {"content": {"text/html": {}}},
    "429": {"content": {"text/html": {}}},
}


def make_link(rt: Any, id_type: str, value: str, ttl_ms: int = LINK_TTL_MS) -> str:
    """A signed, expiring preference-center link for the person with this identifier."""
    from candor import normalize

    norm = {"email": normalize.email, "phone": lambda v: normalize.phone(v, rt.settings.default_phone_region)}.get(
        id_type, normalize.text_id
    )(value)
    if norm is None:
        raise RightsError(f"that is not a valid {id_type}")
    token = Signer(rt.vault).sign("preference-link", {"t": id_type, "p": rt.vault.pseudonym(id_type, norm)}, ttl_ms)
    return f"{rt.settings.public_url.rstrip('/')}/preferences/open?t={token}"


def _subject(rt: Any, id_type: str, pseudonym: str) -> str | None:
    with rt.store.engine.connect() as conn:
        sid = conn.execute(
            select(identifiers.c.subject_id).where(
                and_(identifiers.c.id_type == id_type, identifiers.c.pseudonym == pseudonym)
            )
        ).scalar()
    return str(sid) if sid else None


def _session(request: Request) -> dict[str, Any] | None:
    rt = request.app.state.candor
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        s = Signer(rt.vault).verify("preference-session", raw)
    except BadToken:
        return None
    sid = _subject(rt, s.get("t", ""), s.get("p", ""))
    if sid is None:
        return None
    return {**s, "subject": sid}


def _no_session(request: Request) -> Response:
    return page(
        request,
        "message.html",
        {
            "title": "This link is not valid",
            "text": "Open the newest link from one of our emails, or ask us for a new one. Links expire after "
            "72 hours and a session after one hour.",
        },
        status=401,
    )


async def _form(request: Request) -> dict[str, list[str]]:
    form = await request.form()
    out: dict[str, list[str]] = {}
    for k, v in form.multi_items():
        if isinstance(v, str):
            out.setdefault(k, []).append(v[:200])
    return out


def _notice(rt: Any, lang: str) -> Any:
    return rt.consent.notice(NOTICE_ID, None, lang) or rt.consent.notice(NOTICE_ID, None, "en")


@router.get("/preferences/open", dependencies=[Depends(Public())], response_class=Response, responses=HTML)
def open_link(request: Request, t: str = Query("", max_length=4096)) -> Response:
    """Exchange a signed link for a session cookie, then show the preference center."""
    rt = request.app.state.candor
    try:
        payload = Signer(rt.vault).verify("preference-link", t)
    except BadToken:
        return page(
            request,
            "message.html",
            {
                "title": "This link is not valid",
                "text": "It may have expired (links last 72 hours) or been changed. Ask us for a new one.",
            },
            status=400,
        )
    if _subject(rt, payload.get("t", ""), payload.get("p", "")) is None:
        return page(
            request,
            "message.html",
            {"title": "Nothing to show", "text": "We hold no data linked to this address."},
            status=200,
        )
    session = Signer(rt.vault).sign(
        "preference-session",
        {"t": payload["t"], "p": payload["p"], "csrf": secrets.token_urlsafe(24)},
        SESSION_SECONDS * 1000,
    )
    response = RedirectResponse("/preferences", status_code=303)
    set_cookie(response, request, COOKIE, session, SESSION_SECONDS, "lax")
    return response


@router.get("/preferences", dependencies=[Depends(SessionAuth("preferences"))], response_class=Response, responses=HTML)
def show(request: Request, saved: str | None = Query(None, max_length=20)) -> Response:
    """Purposes in plain words with their state, channels, interests, what we know, your rights."""
    s = _session(request)
    if s is None:
        return _no_session(request)
    rt = request.app.state.candor
    sid = s["subject"]
    from candor.web.common import language_of

    lang = language_of(request)
    notice = _notice(rt, lang)
    decisions = {d.purpose: d for d in rt.consent.explain(sid)}
    offered = set(_offered(rt))
    purposes = [
        {
            "name": p.name,
            "description": p.description,
            "allowed": decisions[p.name].allowed if p.name in decisions else False,
            "fixed": p.name == "necessary",
        }
        for p in rt.taxonomy.purposes.values()
        if p.name in offered
    ]
    channels = [
        {"name": c, "allowed": decisions.get(f"marketing.{c}") is not None and decisions[f"marketing.{c}"].allowed}
        for c in CHANNELS
        if f"marketing.{c}" in decisions
    ]
    with rt.store.engine.connect() as conn:
        members = rt.identity.members(sid, conn)
        names = {}
        from candor.store.schema import sources

        names = dict(conn.execute(select(sources.c.id, sources.c.name)).all())
        traits, _, _ = rt.profiles.golden(members, conn, names)
    interests = traits.get("interests", {}).get("value") or []
    frequency = traits.get("contactFrequency", {}).get("value") or "monthly"
    known = [
        {"name": k, "value": v["value"], "source": v["source"], "at": v["at"]}
        for k, v in sorted(traits.items())
        if k not in ("interests", "contactFrequency")
    ]
    with rt.store.write() as conn:
        audit.record(conn, "subject", "preferences.viewed", subject_id=sid)
    return page(
        request,
        "preferences.html",
        {
            "csrf": s["csrf"],
            "purposes": purposes,
            "channels": channels,
            "interests": [{"name": i, "chosen": i in interests} for i in INTERESTS],
            "frequencies": FREQUENCIES,
            "frequency": frequency,
            "known": known,
            "notice": notice,
            "saved": saved,
            "us": rt.settings.default_jurisdiction in ("US", "US-CA"),
            "loyalty": rt.loyalty.status(sid),
        },
        language=lang,
    )


def _offered(rt: Any) -> list[str]:
    """The purposes a person chooses here: all but marketing channels, and of the explicit opt-ins per
    special category (``sensitive.<category>``) only those of categories the brand declares. ``loyalty`` is
    chosen on its own page, against its notice of financial incentive (loyalty_pages.py)."""
    in_use = {f"sensitive.{c}" for c in rt.dictionary.special_in_use()}
    return [
        n
        for n in rt.taxonomy.names()
        if not n.startswith("marketing.") and (not n.startswith("sensitive.") or n in in_use) and n != "loyalty"
    ]


def _guard(request: Request, form: dict[str, list[str]]) -> dict[str, Any] | Response:
    s = _session(request)
    if s is None:
        return _no_session(request)
    if not check_csrf(s, (form.get("csrf") or [""])[0]):
        return page(
            request,
            "message.html",
            {"title": "Please try again", "text": "The form had expired. Reload the page and send it again."},
            status=403,
        )
    return s


def _record(rt: Any, sid: str, form: dict[str, list[str]], granted: set[str], denied: set[str]) -> None:
    notice_id = (form.get("notice_id") or [""])[0]
    version = (form.get("notice_version") or [""])[0]
    with rt.store.write() as conn:
        rt.consent.record(
            conn,
            sid,
            granted=frozenset(granted),
            denied=frozenset(denied),
            source="preference_center",
            actor="subject",
            notice_id=notice_id or None,
            notice_version=int(version) if version and version.isdigit() else None,
            language=(form.get("language") or ["en"])[0][:20],
            ui_action="custom",
        )
    rt.consent.invalidate(sid)


@router.post(
    "/preferences/consent", dependencies=[Depends(SessionAuth("preferences"))], response_class=Response, responses=HTML
)
async def save_consent(request: Request) -> Response:
    """Record the purposes ticked (granted) and unticked (denied), with the notice version shown."""
    form = await _form(request)
    s = _guard(request, form)
    if isinstance(s, Response):
        return s
    rt = request.app.state.candor
    names = [n for n in _offered(rt) if n != "necessary"]
    ticked = set(form.get("purpose", []))
    _record(rt, s["subject"], form, {n for n in names if n in ticked}, {n for n in names if n not in ticked})
    return RedirectResponse("/preferences?saved=purposes", status_code=303)


@router.post(
    "/preferences/channels", dependencies=[Depends(SessionAuth("preferences"))], response_class=Response, responses=HTML
)
async def save_channels(request: Request) -> Response:
    """Marketing channels (each a purpose) and how often we may write."""
    form = await _form(request)
    s = _guard(request, form)
    if isinstance(s, Response):
        return s
    rt = request.app.state.candor
    known = set(rt.taxonomy.names())
    names = {f"marketing.{c}" for c in CHANNELS} & known
    ticked = {f"marketing.{c}" for c in form.get("channel", [])}
    _record(rt, s["subject"], form, names & ticked, names - ticked)
    freq = (form.get("frequency") or ["monthly"])[0]
    if freq in FREQUENCIES:
        rt.rights.add_traits(
            s["subject"],
            {"contactFrequency": freq},
            source=SOURCE,
            message_id=f"preferences:{secrets.token_hex(12)}",
        )
    return RedirectResponse("/preferences?saved=channels", status_code=303)


@router.post(
    "/preferences/interests",
    dependencies=[Depends(SessionAuth("preferences"))],
    response_class=Response,
    responses=HTML,
)
async def save_interests(request: Request) -> Response:
    """Stated interests: data you give us so personalisation (where you allow it) can use it."""
    form = await _form(request)
    s = _guard(request, form)
    if isinstance(s, Response):
        return s
    chosen = sorted(i for i in form.get("interest", []) if i in INTERESTS)
    request.app.state.candor.rights.add_traits(
        s["subject"], {"interests": chosen}, source=SOURCE, message_id=f"preferences:{secrets.token_hex(12)}"
    )
    return RedirectResponse("/preferences?saved=interests", status_code=303)


def _request(rt: Any, s: dict[str, Any], type_: str) -> Any:
    """A rights request verified by the signed link (the session came from it), carried out now."""
    from candor.rights.requests import Request as Req

    req: Req
    req, _ = rt.requests.create_verified_by_link(type_, s["t"], s["p"], s["subject"])
    rt.rights.process(req.id, actor="subject")
    return rt.requests.get(req.id)


@router.post(
    "/preferences/download", dependencies=[Depends(SessionAuth("preferences"))], response_class=Response, responses=HTML
)
async def download(request: Request) -> Response:
    """Start an access request; the download link is shown here (and sent by email when we can)."""
    form = await _form(request)
    s = _guard(request, form)
    if isinstance(s, Response):
        return s
    rt = request.app.state.candor
    req = _request(rt, s, "access")
    token = rt.rights.last_token(req.id)
    return page(
        request,
        "message.html",
        {
            "title": "Your data is ready",
            "text": "The link works once and for 7 days.",
            "link": f"/v1/privacy-requests/download/{token}" if token else None,
            "link_text": "Download my data (zip)",
        },
    )


@router.get(
    "/preferences/delete", dependencies=[Depends(SessionAuth("preferences"))], response_class=Response, responses=HTML
)
def confirm_delete(request: Request) -> Response:
    """Ask once more, plainly, before erasing."""
    s = _session(request)
    if s is None:
        return _no_session(request)
    return page(request, "confirm_delete.html", {"csrf": s["csrf"]})


@router.post(
    "/preferences/delete", dependencies=[Depends(SessionAuth("preferences"))], response_class=Response, responses=HTML
)
async def delete(request: Request) -> Response:
    """Erase everything about the person (after the confirmation box was ticked)."""
    form = await _form(request)
    s = _guard(request, form)
    if isinstance(s, Response):
        return s
    if (form.get("confirm") or [""])[0] != "yes":
        return page(request, "confirm_delete.html", {"csrf": s["csrf"], "missing": True}, status=400)
    rt = request.app.state.candor
    _request(rt, s, "erasure")
    response = page(
        request,
        "message.html",
        {"title": "Your data was erased", "text": "We keep only a note that you must never be contacted again."},
    )
    response.delete_cookie(COOKIE, path="/")
    return response


@router.post(
    "/preferences/do-not-sell",
    dependencies=[Depends(SessionAuth("preferences"))],
    response_class=Response,
    responses=HTML,
)
async def do_not_sell(request: Request) -> Response:
    """Do Not Sell or Share My Personal Information: effective at once."""
    form = await _form(request)
    s = _guard(request, form)
    if isinstance(s, Response):
        return s
    _request(request.app.state.candor, s, "opt_out_sale")
    return RedirectResponse("/preferences?saved=do-not-sell", status_code=303)


@router.post(
    "/preferences/limit-sensitive",
    dependencies=[Depends(SessionAuth("preferences"))],
    response_class=Response,
    responses=HTML,
)
async def limit_sensitive(request: Request) -> Response:
    """Limit the Use of My Sensitive Personal Information: effective at once."""
    form = await _form(request)
    s = _guard(request, form)
    if isinstance(s, Response):
        return s
    _request(request.app.state.candor, s, "limit_sensitive")
    return RedirectResponse("/preferences?saved=limit-sensitive", status_code=303)


@router.post(
    "/preferences/signout", dependencies=[Depends(SessionAuth("preferences"))], response_class=Response, responses=HTML
)
async def signout(request: Request) -> Response:
    form = await _form(request)
    s = _guard(request, form)
    if isinstance(s, Response):
        return s
    response = page(request, "message.html", {"title": "Signed out", "text": "You can close this page."})
    response.delete_cookie(COOKIE, path="/")
    return response
