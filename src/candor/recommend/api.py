"""HTTP: recommendations, next best action, the catalogue, and the customer's own view of them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import Response

from candor.auth import AuthError, Require, SessionAuth, SourceAuth, basic_username
from candor.http import JSON, ErrorBody, error
from candor.recommend.catalog import CatalogError
from candor.recommend.decide import DecideError
from candor.recommend.service import RecommendError

router = APIRouter(tags=["recommendations"])
ERRORS: dict[int | str, dict[str, Any]] = {
    "400": {"model": ErrorBody},
    "401": {"model": ErrorBody},
    "403": {"model": ErrorBody},
    "404": {"model": ErrorBody},
}


def _fail(exc: RecommendError | DecideError | CatalogError) -> Response:
    code = getattr(exc, "code", "invalid_catalog")
    return error(exc.status, code, str(exc))


@router.get("/v1/recommendations", dependencies=[Depends(Require("recommendations:read"))], responses=ERRORS)
def recommendations(
    request: Request,
    userId: str | None = Query(None, max_length=400),
    anonymousId: str | None = Query(None, max_length=400),
    limit: int = Query(10),
) -> Any:
    """Recommendations for one person, each with its reason; bestsellers (marked) without consent."""
    try:
        answer = request.app.state.candor.recommend.for_identifiers(userId, anonymousId, limit)
    except RecommendError as exc:
        return _fail(exc)
    return JSON(answer.as_json())


@router.get("/v1/decide", dependencies=[Depends(Require("recommendations:read"))], responses=ERRORS)
def decide(
    request: Request,
    userId: str | None = Query(None, max_length=400),
    anonymousId: str | None = Query(None, max_length=400),
    placement: str = Query("", max_length=100),
) -> Any:
    """The offer for one person at one placement, from the configured rules (server to server)."""
    return _decide(request, userId, anonymousId, placement)


def _decide(request: Request, user_id: str | None, anonymous_id: str | None, placement: str) -> Any:
    rt = request.app.state.candor
    if not placement:
        return error(400, "invalid_request", "placement: required")
    try:
        return JSON(rt.decider.decide(user_id, anonymous_id, placement))
    except (RecommendError, DecideError) as exc:
        return _fail(exc)


@router.get("/v1/decide/client", dependencies=[Depends(SourceAuth())], responses=ERRORS)
def decide_client(
    request: Request, anonymousId: str | None = Query(None, max_length=400), placement: str = Query("", max_length=100)
) -> Any:
    """Client-side decide with the source write key: by anonymousId only (a browser can forge a userId,
    not guess another visitor's random anonymousId)."""
    rt = request.app.state.candor
    key = basic_username(request.headers.get("authorization"))
    source = rt.directory.source_for_key(key) if key else None
    if source is None:
        raise AuthError(401, "invalid_write_key", "send the source write key as HTTP Basic user name")
    rt.limits.hit("collect_key", str(source.id))
    if not anonymousId:
        return error(400, "invalid_request", "anonymousId: required (client-side decide takes no userId)")
    return _decide(request, None, anonymousId, placement)


@router.get("/v1/catalog", dependencies=[Depends(Require("recommendations:read"))], responses=ERRORS)
def catalog(request: Request) -> Any:
    """The product catalogue (what may be recommended)."""
    items = request.app.state.candor.recommend.catalog.items()
    return JSON(
        {"items": [
            {"product_id": i.product_id, "name": i.name, "category": i.category, "department": i.department,
             "data_category": i.data_category, "active": i.active}
            for i in sorted(items.values(), key=lambda i: i.product_id)
        ]}
    )  # fmt: skip


@router.post("/v1/catalog", dependencies=[Depends(Require("settings:write"))], responses=ERRORS)
def upsert_catalog(request: Request, body: Any = Body(None)) -> Any:
    """Add or change products; ``active: false`` takes one out of the catalogue (never recommended)."""
    staff = request.state.staff
    items = body.get("items") if isinstance(body, dict) else None
    try:
        n = request.app.state.candor.recommend.catalog.upsert(items, actor=f"staff:{staff.token_id}")
    except CatalogError as exc:
        return _fail(exc)
    return JSON({"written": n})


@router.get("/v1/recommendations/model", dependencies=[Depends(Require("recommendations:read"))], responses=ERRORS)
def model_state(request: Request) -> Any:
    """The model's version, when it was built, and on which engine."""
    return JSON({"model": request.app.state.candor.recommend.builder.state()})


@router.get(
    "/preferences/recommendations",
    dependencies=[Depends(SessionAuth("preferences"))],
    response_class=Response,
    responses={"200": {"content": {"text/html": {}}}, "401": {"content": {"text/html": {}}}},
)
def my_recommendations(request: Request) -> Response:
    """The customer's own recommendations and the reason for each (or the bestsellers everyone sees)."""
    from candor.web.common import page
    from candor.web.preferences import _no_session, _session

    s = _session(request)
    if s is None:
        return _no_session(request)
    answer = request.app.state.candor.recommend.for_subject(s["subject"], 10)
    return page(request, "recommendations.html", {"items": answer.items, "personalized": answer.personalized})
