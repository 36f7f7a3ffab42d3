"""``/v1/insights/*``: aggregate insights (scope ``insights:read``: analysts, marketers, owners).

Every answer is a report of tables of cells, each counting at least ``k`` distinct profiles that
agreed to analytics, with how many cells were suppressed; never a profile id or a personal value.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Path, Request

from candor.auth import Require, Staff
from candor.http import STAFF_RESPONSES, ErrorBody

router = APIRouter(tags=["insights"])
ERR: dict[int | str, dict[str, Any]] = {
    "400": {"model": ErrorBody},
    "404": {"model": ErrorBody},
    "409": {"model": ErrorBody, "description": "the differential-privacy budget is exhausted"},
}
KIND = Path(
    pattern="^(journeys|funnel|attribution|experience|rfm|cohorts|clv)$",
    description="journeys, funnel, attribution, experience, rfm, cohorts or clv",
)


@router.post("/v1/insights/{insight}", responses={**STAFF_RESPONSES, **ERR})
def insight(
    request: Request,
    insight: str = KIND,
    body: dict[str, Any] = Body(
        ...,
        description="parameters (docs/insights.md): since, until, k, segments, dp, and the insight's own "
        '(e.g. {"steps": ["Product Viewed", "Order Completed"], "window_days": 7} for a funnel)',
    ),
    staff: Staff = Depends(Require("insights:read")),
) -> Any:
    """An insight over the profiles that agreed to analytics; small cells suppressed, optionally with DP."""
    return request.app.state.candor.insights.run(insight, body, actor=f"token:{staff.token_id}")


@router.post("/v1/insights/experience/comments", responses={**STAFF_RESPONSES, **ERR})
def comments(
    request: Request,
    body: dict[str, Any] = Body(
        ..., description='{"by": "channel" or "month", "group": "call_center", "since", "until", "k", "limit"}'
    ),
    staff: Staff = Depends(Require("insights:read")),
) -> Any:
    """A shuffled sample of a large group's survey comments, each redacted by the personal-data detector."""
    from candor.insights.comments import Comments

    return Comments(request.app.state.candor).sample(body, actor=f"token:{staff.token_id}")


@router.get("/v1/insights/budget", responses=STAFF_RESPONSES)
def budget(request: Request, staff: Staff = Depends(Require("insights:read"))) -> Any:
    """The differential-privacy budget: epsilon spent and left per month of data."""
    return request.app.state.candor.insights.ledger.status()
