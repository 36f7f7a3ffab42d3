"""Console pages for segments and campaigns (server-rendered, no JavaScript, CSRF on every form).

Segments: the list, and per segment its definition, a live preview (size and, per purpose, who is
usable, without consent, suppressed or restricted) and membership over time, with a refresh button.
Campaigns: the list with a form to create one, and per campaign a preview of each recipient variant
(rendered without personal values), the send button, and the report: skipped-by-reason counts,
engagement, spend against budget, conversions, revenue and ROI.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup

from candor.auth import SessionAuth
from candor.campaigns import channels
from candor.campaigns.definition import CampaignError
from candor.segments import SegmentError
from candor.web.charts import bar_chart, line_chart
from candor.web.common import check_csrf
from candor.web.console import HTML, _entry, _render

router = APIRouter(tags=["admin console"])
NAME = Path(min_length=1, max_length=200)
FIELDS = (
    "name",
    "segment",
    "channel",
    "destination",
    "purpose",
    "subject",
    "template",
    "generic_template",
    "sender",
    "postal_address",
    "cost_per_message",
    "budget",
    "conversion_window_days",
)


def _day(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M")


def _message(request: Request, staff: Any, s: dict[str, Any], title: str, text: str, status: int) -> Response:
    return _render(request, staff, s, "console/message.html", {"title": title, "text": text}, status=status)


async def _post(request: Request, scope: str) -> tuple[Any, dict[str, Any], dict[str, str]] | Response:
    """Session, role and CSRF checked; the form's fields (templates may be long: up to 20,000 characters)."""
    entry = _entry(request, scope)
    if isinstance(entry, Response):
        return entry
    staff, s = entry
    form = {k: v[:20_000] for k, v in (await request.form()).items() if isinstance(v, str)}
    if not check_csrf(s, form.get("csrf")):
        return _message(
            request, staff, s, "Please try again", "The form had expired or did not come from this console.", 403
        )
    return staff, s, form


# -- segments --------------------------------------------------------------------------------------
@router.get(
    "/admin/segments",
    dependencies=[Depends(SessionAuth("console", "segments:write"))],
    response_class=Response,
    responses=HTML,
)
def segments_page(request: Request) -> Response:
    """Segments with their definition and, from the last refresh, size and who may be used per purpose."""
    entry = _entry(request, "segments:write")
    if isinstance(entry, Response):
        return entry
    staff, s = entry
    rt = request.app.state.candor
    rows = []
    for seg in rt.segments.list():
        runs = rt.segments.runs(seg["name"], limit=30)
        chart = None
        if runs:
            last = runs[0]
            breakdown = last.get("purposes") or {}
            chart = bar_chart(
                f"{seg['name']}: usable per purpose ({last.get('size', 0)} members)",
                [(p, float(c.get("usable", 0))) for p, c in breakdown.items()],
            )
        rows.append(
            {
                "name": seg["name"],
                "href": "/admin/segments/" + quote(seg["name"], safe=""),
                "definition": seg["definition"],
                "runs": runs,
                "chart": chart,
            }
        )
    return _render(request, staff, s, "console/segments.html", {"title": "Segments", "rows": rows})


@router.get(
    "/admin/segments/{name}",
    dependencies=[Depends(SessionAuth("console", "segments:write"))],
    response_class=Response,
    responses=HTML,
)
def segment_page(request: Request, name: str = NAME) -> Response:
    """One segment: definition, a live preview with the purpose breakdown, membership over time."""
    entry = _entry(request, "segments:write")
    if isinstance(entry, Response):
        return entry
    staff, s = entry
    rt = request.app.state.candor
    seg = rt.segments.get(name)
    if seg is None:
        return _message(request, staff, s, "No such segment", f"There is no segment named {name!r}.", 404)
    preview = rt.segments.preview(name)
    runs = list(reversed(rt.segments.runs(name, limit=60)))
    history: Markup | None = None
    if len(runs) == 1:  # one point makes no line
        history = bar_chart(f"{name}: members at {_day(runs[0]['run_ms'])}", [("members", float(runs[0]["size"]))])
    elif runs:
        history = line_chart(
            f"{name}: members over time",
            [_day(r["run_ms"]) for r in runs],
            {"members": [float(r["size"]) for r in runs]},
        )
    return _render(
        request,
        staff,
        s,
        "console/segment.html",
        {
            "title": f"Segment {name}",
            "name": name,
            "href": "/admin/segments/" + quote(name, safe=""),
            "definition": seg["definition"],
            "preview": preview,
            "history": history,
            "runs": [{**r, "at": _day(r["run_ms"])} for r in reversed(runs)][:10],
        },
    )


@router.post(
    "/admin/segments/{name}/refresh",
    dependencies=[Depends(SessionAuth("console", "segments:write"))],
    response_class=Response,
    responses=HTML,
)
async def segment_refresh(request: Request, name: str = NAME) -> Response:
    """Evaluate now and record who entered and who left (membership history)."""
    entry = await _post(request, "segments:write")
    if isinstance(entry, Response):
        return entry
    staff, s, _ = entry
    try:
        request.app.state.candor.segments.refresh(name, f"token:{staff.token_id}")
    except SegmentError as exc:
        return _message(request, staff, s, "Not refreshed", str(exc), exc.status)
    return RedirectResponse("/admin/segments/" + quote(name, safe=""), status_code=303)


# -- campaigns -------------------------------------------------------------------------------------
def _form_context(rt: Any, values: dict[str, str], error: str | None = None) -> dict[str, Any]:
    return {
        "title": "Campaigns",
        "rows": [{**c, "href": "/admin/campaigns/" + quote(c["name"], safe="")} for c in rt.campaigns.names()],
        "segments": [seg["name"] for seg in rt.segments.list()],
        "channels": channels.names(),
        "destinations": [d["name"] for d in rt.campaigns.destinations.listing() if d["kind"] != "ad_audience"],
        "purposes": [p for p in rt.taxonomy.names() if p.startswith("marketing.")],
        "values": values,
        "error": error,
    }


@router.get(
    "/admin/campaigns",
    dependencies=[Depends(SessionAuth("console", "campaigns:send"))],
    response_class=Response,
    responses=HTML,
)
def campaigns_page(request: Request) -> Response:
    """Campaigns with their state, and the form to create one."""
    entry = _entry(request, "campaigns:send")
    if isinstance(entry, Response):
        return entry
    staff, s = entry
    ctx = _form_context(request.app.state.candor, {"channel": "email"})
    return _render(request, staff, s, "console/campaigns.html", ctx)


def _definition(form: dict[str, str]) -> dict[str, Any]:
    """The campaign definition a form describes: empty fields left out, numbers read as numbers."""
    raw: dict[str, Any] = {}
    for key in FIELDS:
        value = form.get(key, "").strip() if "template" not in key else form.get(key, "")
        if not value.strip():
            continue
        if key in ("cost_per_message", "budget"):
            try:
                raw[key] = float(value)
            except ValueError:
                raise CampaignError(f"{key}: a number such as 0.002") from None
        elif key == "conversion_window_days":
            if not value.isdigit():
                raise CampaignError(f"{key}: a whole number of days")
            raw[key] = int(value)
        else:
            raw[key] = value
    return raw


@router.post(
    "/admin/campaigns",
    dependencies=[Depends(SessionAuth("console", "campaigns:send"))],
    response_class=Response,
    responses=HTML,
)
async def campaign_create(request: Request) -> Response:
    """Create a campaign; its templates are checked against sample profiles first (an error refuses it)."""
    entry = await _post(request, "campaigns:send")
    if isinstance(entry, Response):
        return entry
    staff, s, form = entry
    rt = request.app.state.candor
    try:
        out = rt.campaigns.create(_definition(form), actor=f"token:{staff.token_id}")
    except CampaignError as exc:
        values = {k: form.get(k, "") for k in FIELDS}
        return _render(request, staff, s, "console/campaigns.html", _form_context(rt, values, str(exc)), status=400)
    return RedirectResponse("/admin/campaigns/" + quote(out["name"], safe=""), status_code=303)


@router.get(
    "/admin/campaigns/{name}",
    dependencies=[Depends(SessionAuth("console", "campaigns:send"))],
    response_class=Response,
    responses=HTML,
)
def campaign_page(request: Request, name: str = NAME) -> Response:
    """One campaign: what sending now would do (per variant, without personal values), the report."""
    entry = _entry(request, "campaigns:send")
    if isinstance(entry, Response):
        return entry
    staff, s = entry
    rt = request.app.state.candor
    try:
        report = rt.campaigns.report(name)
        preview = rt.campaigns.preview(name)
    except CampaignError as exc:
        return _message(request, staff, s, "No such campaign", str(exc), exc.status)
    outcomes = sorted(report["outcomes"].items())
    chart = bar_chart(f"{name}: outcomes", [(k, float(v)) for k, v in outcomes]) if outcomes else None
    return _render(
        request,
        staff,
        s,
        "console/campaign.html",
        {
            "title": f"Campaign {name}",
            "name": name,
            "href": "/admin/campaigns/" + quote(name, safe=""),
            "report": report,
            "preview": preview,
            "chart": chart,
        },
    )


@router.post(
    "/admin/campaigns/{name}/send",
    dependencies=[Depends(SessionAuth("console", "campaigns:send"))],
    response_class=Response,
    responses=HTML,
)
async def campaign_send(request: Request, name: str = NAME) -> Response:
    """Send (or resume) now; every recipient is decided at this moment, nobody receives it twice."""
    entry = await _post(request, "campaigns:send")
    if isinstance(entry, Response):
        return entry
    staff, s, _ = entry
    try:
        request.app.state.candor.campaigns.send(name, actor=f"token:{staff.token_id}")
    except CampaignError as exc:
        return _message(request, staff, s, "Not sent", str(exc), exc.status)
    return RedirectResponse("/admin/campaigns/" + quote(name, safe=""), status_code=303)
