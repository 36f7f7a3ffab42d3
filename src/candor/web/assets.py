"""Static files the pages use (one stylesheet), served with long caching and no sniffing."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path
from fastapi.responses import Response

from candor.auth import Public
from candor.web.common import HERE

router = APIRouter(tags=["pages"])
FILES = {"candor.css": "text/css; charset=utf-8"}


@router.get(
    "/static/{name}",
    dependencies=[Depends(Public())],
    response_class=Response,
    responses={
        "200": {"content": {"text/css": {}}},
        "400": {"description": "A malformed name"},
        "404": {"description": "No such file"},
    },
)
def static(name: str = Path(max_length=64)) -> Response:
    """The pages' stylesheet."""
    kind = FILES.get(name)
    if kind is None:
        return Response(
            b'{"success":false,"error":{"code":"not_found","message":"no such file"}}',
            404,
            media_type="application/json",
        )
    return Response(
        (HERE / "static" / name).read_bytes(), media_type=kind, headers={"Cache-Control": "public, max-age=3600"}
    )
