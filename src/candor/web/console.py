"""The staff console at ``/admin``: server-rendered, behind sign-in, one page per job.

Sign-in uses the staff users (argon2id), rate-limited per address and per user name; the session
cookie is HttpOnly and SameSite=Strict and carries a CSRF token that every form must echo. What a
page shows follows the role's scopes: marketers and support see masked values, only roles with
``pii:read`` may reveal (each reveal is audited), analysts see aggregates only.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup
from sqlalchemy import func, select

from candor import audit
from candor.auth import Public, SessionAuth, Staff
from candor.consent.ledger import ConsentError
from candor.http import ErrorBody
from candor.identity.service import IdentityError
from candor.rights.requests import RightsError
from candor.security import RateLimited
from candor.store import now_ms
from candor.store.schema import consent_records, subjects
from candor.web.charts import bar_chart, line_chart
from candor.web.common import BadToken, Signer, check_csrf, page, set_cookie

router = APIRouter(tags=["admin console"])
COOKIE = "candor_admin"
LOGIN_COOKIE = "candor_login"
SESSION_SECONDS = 12 * 3600
HTML: dict[int | str, dict[str, Any]] = {
    "200": {"content": {"text/html": {}}},
    "303": {"description": "redirect (to the sign-in page without a session)"},
    "400": {"model": ErrorBody, "content": {"text/html": {}}},
    "401": {"content": {"text/html": {}}},
    "403": {"content": {"text/html": {}}},
    "404": {"content": {"text/html": {}}},
    "429": {"content": {"text/html": {}}},
}
NAV = (
    ("/admin", "Dashboard", None),
    ("/admin/requests", "Privacy requests", "rights:manage"),
    ("/admin/profiles", "Profiles", "profiles:read"),
    ("/admin/identity", "Identity review", "identity:write"),
    ("/admin/audit", "Audit log", "audit:read"),
    ("/admin/segments", "Segments", "segments:write"),
    ("/admin/campaigns", "Campaigns", "campaigns:send"),
    ("/admin/insights", "Insights", "insights:read"),
    ("/admin/settings", "Settings", "settings:write"),
    ("/admin/privacy", "Privacy inbox", "privacy:read"),  # web/privacy_console.py
)


def _staff(request: Request) -> tuple[Staff, dict[str, Any]] | None:
    rt = request.app.state.candor
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        s = Signer(rt.vault).verify("console-session", raw)
    except BadToken:
        return None
    staff = rt.directory.staff_for_token(str(s.get("tok", "")))
    if staff is None:
        return None
    return staff, s


def _render(
    request: Request, staff: Staff, s: dict[str, Any], template: str, ctx: dict[str, Any], status: int = 200
) -> Response:
    nav = [(href, label) for href, label, scope in NAV if scope is None or staff.can(scope)]
    return page(
        request,
        template,
        {**ctx, "staff": staff, "csrf": s["csrf"], "nav": nav, "title": ctx.get("title", "Candor")},
        status=status,
        language="en",
    )


def _deny(request: Request, staff: Staff, s: dict[str, Any], scope: str) -> Response:
    return _render(
        request,
        staff,
        s,
        "console/message.html",
        {"title": "Not for your role", "text": f"This page needs the scope {scope}; your role is {staff.role}."},
        status=403,
    )


def _entry(request: Request, scope: str | None) -> tuple[Staff, dict[str, Any]] | Response:
    found = _staff(request)
    if found is None:
        if request.method == "GET":
            return RedirectResponse("/admin/login", status_code=303)
        return page(request, "message.html", {"title": "Sign in again", "text": "Your session ended."}, status=401)
    staff, s = found
    if scope is not None and not staff.can(scope):
        return _deny(request, staff, s, scope)
    return staff, s


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v[:2000] for k, v in form.items() if isinstance(v, str)}


async def _post_entry(request: Request, scope: str | None) -> tuple[Staff, dict[str, Any], dict[str, str]] | Response:
    entry = _entry(request, scope)
    if isinstance(entry, Response):
        return entry
    staff, s = entry
    form = await _form(request)
    if not check_csrf(s, form.get("csrf")):
        return _render(
            request,
            staff,
            s,
            "console/message.html",
            {"title": "Please try again", "text": "The form had expired or did not come from this console."},
            status=403,
        )
    return staff, s, form


# -- signing in ----------------------------------------------------------------------------------
@router.get("/admin/login", dependencies=[Depends(Public())], response_class=Response, responses=HTML)
def login_page(request: Request) -> Response:
    """The sign-in form (a pre-session CSRF token is set as a cookie and echoed by the form)."""
    token = secrets.token_urlsafe(24)
    response = page(request, "console/login.html", {"title": "Sign in", "csrf": token}, language="en")
    set_cookie(response, request, LOGIN_COOKIE, token, 900, "strict")
    return response


@router.post("/admin/login", dependencies=[Depends(Public())], response_class=Response, responses=HTML)
async def login(request: Request) -> Response:
    """Check the password (argon2id), rate-limited; never says whether the user name exists."""
    rt = request.app.state.candor
    form = await _form(request)
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not check_csrf({"csrf": expected}, form.get("csrf")):
        return page(
            request,
            "console/login.html",
            {"title": "Sign in", "csrf": expected, "error": "Reload the page and try again."},
            status=400,
            language="en",
        )
    ip = request.client.host if request.client else "unknown"
    username = form.get("username", "")[:100]
    try:
        rt.limits.hit("login_ip", ip)
        wait = rt.limits.exceeded("login_user", username.lower())
        if wait is not None:
            raise RateLimited("login_user", wait)
    except RateLimited as limited:
        return page(
            request,
            "console/login.html",
            {"title": "Sign in", "csrf": expected, "error": f"Too many attempts; wait {limited.retry_after} seconds."},
            status=429,
            language="en",
        )
    session = rt.directory.login(username, form.get("password", "")[:1024])
    if session is None:
        rt.limits.hit_quietly("login_user", username.lower())
        return page(
            request,
            "console/login.html",
            {"title": "Sign in", "csrf": expected, "error": "The user name or the password is wrong."},
            status=401,
            language="en",
        )
    token, _expires, _role = session
    cookie = Signer(rt.vault).sign(
        "console-session", {"tok": token, "csrf": secrets.token_urlsafe(24)}, SESSION_SECONDS * 1000
    )
    response = RedirectResponse("/admin", status_code=303)
    set_cookie(response, request, COOKIE, cookie, SESSION_SECONDS, "strict")
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


@router.post("/admin/logout", dependencies=[Depends(SessionAuth("console"))], response_class=Response, responses=HTML)
async def logout(request: Request) -> Response:
    entry = await _post_entry(request, None)
    if isinstance(entry, Response):
        return entry
    _, s, _ = entry
    request.app.state.candor.directory.revoke_token_value(str(s["tok"]), "console")
    response = RedirectResponse("/admin/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


# -- dashboard ---------------------------------------------------------------------------------------
def _trend(rt: Any, days: int = 30) -> tuple[list[str], dict[str, list[float]]]:
    since = now_ms() - days * 86_400_000
    with rt.store.engine.connect() as conn:
        rows = conn.execute(
            select(
                consent_records.c.ts_ms, consent_records.c.granted, consent_records.c.denied, consent_records.c.source
            ).where(consent_records.c.ts_ms >= since)
        ).all()
    labels = [
        (dt.datetime.fromtimestamp(since / 1000, tz=dt.UTC) + dt.timedelta(days=i)).strftime("%m-%d")
        for i in range(days + 1)
    ]
    grants = [0.0] * len(labels)
    denials = [0.0] * len(labels)
    opt_outs = [0.0] * len(labels)
    for ts, granted, denied, source in rows:
        i = min(len(labels) - 1, int((ts - since) // 86_400_000))
        if granted not in ("[]", ""):
            grants[i] += 1
        if denied not in ("[]", ""):
            denials[i] += 1
        if source in ("gpc", "email_unsubscribe", "sms_stop", "rights_request"):
            opt_outs[i] += 1
    return labels, {"choices granting": grants, "choices refusing": denials, "opt-out signals": opt_outs}


@router.get("/admin", dependencies=[Depends(SessionAuth("console"))], response_class=Response, responses=HTML)
def dashboard(request: Request) -> Response:
    """What may I use: usable audience per purpose, consent trends, the share of browsers sending GPC."""
    entry = _entry(request, None)
    if isinstance(entry, Response):
        return entry
    staff, s = entry
    rt = request.app.state.candor
    charts: list[Markup] = []
    numbers: dict[str, Any] = {}
    if staff.can("consent:read"):
        from candor.consent.audience import audience_counts

        counts = audience_counts(rt.consent, rt.analytics)
        charts.append(bar_chart("People usable per purpose", [(p, c["usable"]) for p, c in counts.items()]))
        labels, series = _trend(rt)
        charts.append(line_chart("Consent choices per day (30 days)", labels, series))
        with rt.store.engine.connect() as conn:
            people = (
                conn.execute(select(func.count()).select_from(subjects).where(subjects.c.state != "erased")).scalar()
                or 0
            )
            gpc = (
                conn.execute(
                    select(func.count(func.distinct(consent_records.c.subject_id))).where(
                        consent_records.c.source == "gpc"
                    )
                ).scalar()
                or 0
            )
        share = 100.0 * gpc / people if people else 0.0
        charts.append(
            bar_chart("Global Privacy Control", [("sending GPC", share), ("not sending", 100.0 - share)], unit=" %")
        )
        numbers = {"people": people, "gpc_share": round(share, 1)}
    if staff.can("rights:manage"):
        open_requests = rt.requests.listing()
        numbers["open_requests"] = sum(
            1 for r in open_requests if r["state"] in ("received", "awaiting_verification", "verified", "in_progress")
        )
        numbers["overdue"] = sum(1 for r in open_requests if r["overdue"])
    return _render(
        request, staff, s, "console/dashboard.html", {"title": "Dashboard", "charts": charts, "numbers": numbers}
    )


# -- privacy requests ---------------------------------------------------------------------------------
@router.get(
    "/admin/requests",
    dependencies=[Depends(SessionAuth("console", "rights:manage"))],
    response_class=Response,
    responses=HTML,
)
def requests_page(request: Request) -> Response:
    """The rights-request queue with deadlines and actions."""
    entry = _entry(request, "rights:manage")
    if isinstance(entry, Response):
        return entry
    staff, s = entry
    rows = request.app.state.candor.requests.listing()
    for r in rows:
        r["due"] = dt.datetime.fromtimestamp(r["due_ms"] / 1000, tz=dt.UTC).strftime("%Y-%m-%d")
    return _render(request, staff, s, "console/requests.html", {"title": "Privacy requests", "rows": rows})


@router.post(
    "/admin/requests/{request_id}/{action}",
    dependencies=[Depends(SessionAuth("console", "rights:manage"))],
    response_class=Response,
    responses=HTML,
)
async def request_action(
    request: Request,
    request_id: str = Path(max_length=64),
    action: str = Path(max_length=20),
) -> Response:
    """Verify (by other means), process, extend or deny a request; each is audited."""
    entry = await _post_entry(request, "rights:manage")
    if isinstance(entry, Response):
        return entry
    staff, s, form = entry
    if action not in ("verify", "process", "extend", "deny") or not re.fullmatch("[0-9a-f]{32}", request_id):
        return _render(request, staff, s, "console/message.html", {"title": "No such action", "text": ""}, status=404)
    rt = request.app.state.candor
    actor = f"token:{staff.token_id}"
    reason = form.get("reason", "").strip()
    try:
        if action == "verify":
            rt.requests.verify_by_staff(request_id, actor=actor, reason=reason)
        elif action == "process":
            rt.rights.process(request_id, actor=actor)
        elif action == "extend":
            rt.requests.extend(request_id, reason, actor=actor)
        else:
            rt.requests.deny(request_id, reason, actor=actor)
    except RightsError as exc:
        return _render(
            request, staff, s, "console/message.html", {"title": "Not done", "text": str(exc)}, status=exc.status
        )
    return RedirectResponse("/admin/requests", status_code=303)


# -- profiles -------------------------------------------------------------------------------------------
@router.get(
    "/admin/profiles",
    dependencies=[Depends(SessionAuth("console", "profiles:read"))],
    response_class=Response,
    responses=HTML,
)
def profiles_page(
    request: Request,
    kind: str = Query("email", pattern="^(email|user_id|phone|anonymous_id)$"),
    q: str = Query("", max_length=320),
) -> Response:
    """Find one person by one identifier; values masked (reveal needs pii:read and is audited)."""
    entry = _entry(request, "profiles:read")
    if isinstance(entry, Response):
        return entry
    staff, s = entry
    rt = request.app.state.candor
    view = None
    missing = False
    if q:
        sid = rt.profiles.find(kind, q)
        if sid is None:
            missing = True
        else:
            view = rt.profiles.view(sid, reveal=False, actor=f"token:{staff.token_id}")
    return _render(
        request,
        staff,
        s,
        "console/profiles.html",
        {
            "title": "Profiles",
            "kind": kind,
            "q": q,
            "view": view,
            "missing": missing,
            "can_reveal": staff.can("pii:read"),
        },
    )


@router.post(
    "/admin/profiles/reveal",
    dependencies=[Depends(SessionAuth("console", "pii:read"))],
    response_class=Response,
    responses=HTML,
)
async def reveal(request: Request) -> Response:
    """Show one profile's personal values in clear (recorded in the audit log as pii.read)."""
    entry = await _post_entry(request, "pii:read")
    if isinstance(entry, Response):
        return entry
    staff, s, form = entry
    rt = request.app.state.candor
    profile_id = form.get("profile_id", "")
    if len(profile_id) != 32:
        return _render(request, staff, s, "console/message.html", {"title": "No such profile", "text": ""}, status=404)
    view = rt.profiles.view(profile_id, reveal=True, actor=f"token:{staff.token_id}")
    return _render(
        request,
        staff,
        s,
        "console/profiles.html",
        {"title": "Profiles", "kind": "email", "q": "", "view": view, "missing": False, "can_reveal": True},
    )


# -- identity -------------------------------------------------------------------------------------------
@router.get(
    "/admin/identity",
    dependencies=[Depends(SessionAuth("console", "identity:write"))],
    response_class=Response,
    responses=HTML,
)
def identity_page(request: Request) -> Response:
    """The identity review queue: conflicts and grey-zone matches; split a wrong link."""
    entry = _entry(request, "identity:write")
    if isinstance(entry, Response):
        return entry
    staff, s = entry
    rows = request.app.state.candor.identity.reviews("open", 200)
    return _render(request, staff, s, "console/identity.html", {"title": "Identity review", "rows": rows})


@router.post(
    "/admin/identity/{action}",
    dependencies=[Depends(SessionAuth("console", "identity:write"))],
    response_class=Response,
    responses=HTML,
)
async def identity_action(request: Request, action: str = Path(max_length=20)) -> Response:
    """Approve or reject a review item, or split an edge; audited."""
    entry = await _post_entry(request, "identity:write")
    if isinstance(entry, Response):
        return entry
    staff, s, form = entry
    if action not in ("approve", "reject", "split"):
        return _render(request, staff, s, "console/message.html", {"title": "No such action", "text": ""}, status=404)
    rt = request.app.state.candor
    actor = f"token:{staff.token_id}"
    try:
        ident = int(form.get("id", "0"))
        if action == "split":
            rt.identity.split(ident, actor=actor, reason=form.get("reason", ""))
        else:
            rt.identity.decide_review(ident, approve=action == "approve", actor=actor)
    except (ValueError, IdentityError) as exc:
        status = exc.status if isinstance(exc, IdentityError) else 400
        return _render(
            request, staff, s, "console/message.html", {"title": "Not done", "text": str(exc)}, status=status
        )
    return RedirectResponse("/admin/identity", status_code=303)


# -- audit -----------------------------------------------------------------------------------------------
@router.get(
    "/admin/audit",
    dependencies=[Depends(SessionAuth("console", "audit:read"))],
    response_class=Response,
    responses=HTML,
)
def audit_page(request: Request, after: int = Query(0, ge=0, le=2**62)) -> Response:
    """The newest audit entries, with a button to verify the whole chain."""
    entry = _entry(request, "audit:read")
    if isinstance(entry, Response):
        return entry
    staff, s = entry
    rt = request.app.state.candor
    return _render(
        request, staff, s, "console/audit.html", {"title": "Audit log", "entries": _newest(rt, after), "result": None}
    )


@router.post(
    "/admin/audit/verify",
    dependencies=[Depends(SessionAuth("console", "audit:read"))],
    response_class=Response,
    responses=HTML,
)
async def audit_verify(request: Request) -> Response:
    entry = await _post_entry(request, "audit:read")
    if isinstance(entry, Response):
        return entry
    staff, s, _ = entry
    rt = request.app.state.candor
    result = audit.verify(rt.store, rt.checkpoints)
    with rt.store.write() as conn:
        audit.record(conn, f"token:{staff.token_id}", "audit.verified", details={"ok": result.ok})
    return _render(
        request, staff, s, "console/audit.html", {"title": "Audit log", "entries": _newest(rt, 0), "result": result}
    )


def _newest(rt: Any, after: int) -> list[dict[str, Any]]:
    """The 100 entries after ``after``, or the newest 100; newest first."""
    from candor.events import iso_ms
    from candor.store.schema import audit_log

    if not after:
        with rt.store.engine.connect() as conn:
            head = conn.execute(select(func.max(audit_log.c.seq))).scalar() or 0
        after = max(0, int(head) - 100)
    rows = audit.entries(rt.store, after=after, limit=100)
    return [{**e, "ts": iso_ms(e["ts_ms"])} for e in reversed(rows)]


# -- segments and campaigns: web/console_campaigns.py -------------------------------------------


# -- settings ------------------------------------------------------------------------------------------------
@router.get(
    "/admin/settings",
    dependencies=[Depends(SessionAuth("console", "settings:write"))],
    response_class=Response,
    responses=HTML,
)
def settings_page(request: Request) -> Response:
    """Purposes (from the taxonomy), notices and their versions, retention."""
    entry = _entry(request, "settings:write")
    if isinstance(entry, Response):
        return entry
    staff, s = entry
    rt = request.app.state.candor
    return _render(
        request,
        staff,
        s,
        "console/settings.html",
        {
            "title": "Settings",
            "purposes": list(rt.taxonomy.purposes.values()),
            "notices": rt.consent.list_notices(),
            "consent_ttl_days": rt.settings.consent_ttl_days,
        },
    )


@router.post(
    "/admin/settings/notices",
    dependencies=[Depends(SessionAuth("console", "settings:write"))],
    response_class=Response,
    responses=HTML,
)
async def add_notice(request: Request) -> Response:
    """Add a notice version (never edited; optionally requiring everyone to choose again)."""
    entry = await _post_entry(request, "settings:write")
    if isinstance(entry, Response):
        return entry
    staff, s, form = entry
    rt = request.app.state.candor
    try:
        rt.consent.add_notice(
            form.get("notice_id", "")[:100],
            int(form.get("version", "0") or 0),
            form.get("language", "en")[:20] or "en",
            form.get("text", ""),
            requires_reconsent=form.get("reconsent") == "yes",
            actor=f"token:{staff.token_id}",
        )
    except (ValueError, ConsentError) as exc:
        return _render(request, staff, s, "console/message.html", {"title": "Not added", "text": str(exc)}, status=400)
    return RedirectResponse("/admin/settings", status_code=303)
