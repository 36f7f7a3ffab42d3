"""The console's privacy inbox (``/admin/privacy``): undeclared personal data found at collection.

Field, source, guessed category, what collection did, count, first and last seen; never a value.
Roles with ``privacy:write`` declare a field (it enters the source's data dictionary) or dismiss an
item, and set each source's policy. Built on the console's session, CSRF and rendering (console.py).
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import RedirectResponse, Response

from candor.auth import SessionAuth
from candor.dictionary import CATEGORIES, DictionaryError
from candor.web.console import HTML, _entry, _post_entry, _render

router = APIRouter(tags=["admin console"])


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


@router.get(
    "/admin/privacy",
    dependencies=[Depends(SessionAuth("console", "privacy:read"))],
    response_class=Response,
    responses=HTML,
)
def privacy_page(request: Request) -> Response:
    """Open inbox items, the summary per category and action, and each source's policy."""
    entry = _entry(request, "privacy:read")
    if isinstance(entry, Response):
        return entry
    staff, s = entry
    rt = request.app.state.candor
    items = rt.inbox.list(state="open", limit=500)
    for i in items:
        i["first"], i["last"] = _when(i["first_seen_ms"]), _when(i["last_seen_ms"])
        i["title"] = CATEGORIES[i["category"]].title if i["category"] in CATEGORIES else i["category"]
    return _render(
        request,
        staff,
        s,
        "console/privacy.html",
        {
            "title": "Privacy inbox",
            "items": items,
            "summary": rt.inbox.summary(),
            "policies": rt.inbox.policies(),
            "categories": list(CATEGORIES.values()),
            "can_write": staff.can("privacy:write"),
        },
    )


@router.post(
    "/admin/privacy/{action}",
    dependencies=[Depends(SessionAuth("console", "privacy:write"))],
    response_class=Response,
    responses=HTML,
)
async def privacy_action(request: Request, action: str = Path(max_length=20)) -> Response:
    """Declare or dismiss an inbox item, or set a source's policy; audited."""
    entry = await _post_entry(request, "privacy:write")
    if isinstance(entry, Response):
        return entry
    staff, s, form = entry
    if action not in ("declare", "dismiss", "policy"):
        return _render(request, staff, s, "console/message.html", {"title": "No such action", "text": ""}, status=404)
    rt = request.app.state.candor
    actor = f"token:{staff.token_id}"
    try:
        if action == "policy":
            rt.inbox.set_policy(form.get("source", ""), form.get("policy", ""), actor=actor)
        else:
            ident = int(form.get("id", "0") or 0)
            if action == "declare":
                rt.inbox.declare(ident, category=form.get("category") or None, actor=actor)
            else:
                rt.inbox.dismiss(ident, actor=actor)
    except (ValueError, DictionaryError) as exc:
        status = getattr(exc, "status", 400)
        return _render(
            request, staff, s, "console/message.html", {"title": "Not done", "text": str(exc)}, status=status
        )
    return RedirectResponse("/admin/privacy", status_code=303)
