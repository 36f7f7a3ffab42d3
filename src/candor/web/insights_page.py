"""``/admin/insights``: the insights as charts and tables in the console (scope ``insights:read``).

One insight at a time (journeys, funnel, attribution, experience, RFM, cohorts, CLV), over a period
and with the parameters of a small GET form; the same released reports as ``/v1/insights``, drawn
with the server-side SVG charts of insights/render.py. Analysts see aggregates only.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from candor.auth import SessionAuth
from candor.insights.render import TITLES, sections
from candor.insights.reports import INSIGHTS, InsightError
from candor.web.console import HTML, _entry, _render

router = APIRouter(tags=["admin console"])


@router.get(
    "/admin/insights",
    dependencies=[Depends(SessionAuth("console", "insights:read"))],
    response_class=Response,
    responses=HTML,
)
def insights_page(
    request: Request,
    show: str = Query("journeys", pattern="^(journeys|funnel|attribution|experience|rfm|cohorts|clv)$"),
    since: str = Query("", max_length=30),
    until: str = Query("", max_length=30),
    goal: str = Query("Order Completed", max_length=200),
    steps: str = Query("Product Viewed,Product Added,Order Completed", max_length=2000),
    by: str = Query("", max_length=20),
) -> Response:
    """One insight of the period, as charts and the table of released cells."""
    entry = _entry(request, "insights:read")
    if isinstance(entry, Response):
        return entry
    staff, s = entry
    rt = request.app.state.candor
    params: dict[str, Any] = {}
    if since:
        params["since"] = since
    if until:
        params["until"] = until
    own: dict[str, dict[str, Any]] = {
        "journeys": {"goal": goal},
        "funnel": {"steps": [x.strip() for x in steps.split(",") if x.strip()]},
        "attribution": {"conversion": goal},
        "experience": {},
        "rfm": {"event": goal},
        "cohorts": {},
        "clv": {"event": goal},
    }
    params.update(own[show])
    if by:
        params["by"] = by
    status = 200
    try:
        report = rt.insights.run(show, params, actor=f"token:{staff.token_id}")
        section = sections([report])[0]
    except InsightError as exc:
        section = {"title": TITLES[show], "error": str(exc)}
        status = exc.status if exc.status in (400, 404, 409) else 400
    ctx = {
        "title": "Insights",
        "show": show,
        "tabs": [(name, TITLES[name]) for name in INSIGHTS],
        "section": section,
        "form": {"since": since, "until": until, "goal": goal, "steps": steps, "by": by},
        "k": rt.insights.k_default,
    }
    return _render(request, staff, s, "console/insights.html", ctx, status=status)
