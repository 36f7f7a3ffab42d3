"""The consent banner a brand adds to its own site: ``<script src=".../banner.js" ...>``.

The script is a static file (``static/banner.js``, no dependencies). It is served with
``Cross-Origin-Resource-Policy: cross-origin`` because it is meant to be loaded by other origins
(the app's default is ``same-origin``), and with a short public cache lifetime so a fix reaches
every site within minutes. What the script does is described at the top of the file itself.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from candor.auth import Public

router = APIRouter(tags=["consent"])

BANNER_JS = Path(__file__).parent / "static" / "banner.js"
MEDIA_TYPE = "application/javascript; charset=utf-8"
CACHE_CONTROL = "public, max-age=300"


@lru_cache(maxsize=1)
def _script() -> tuple[bytes, str]:
    """The script's bytes and their ETag (read once per process: it changes only with a release)."""
    body = BANNER_JS.read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


@router.get(
    "/banner.js",
    dependencies=[Depends(Public())],
    response_class=Response,
    summary="The consent banner script for a brand's website",
    responses={
        200: {"content": {"application/javascript": {"schema": {"type": "string"}}}},
        304: {"description": "Not modified (the ETag in If-None-Match is current)"},
    },
)
def banner_js(request: Request) -> Response:
    """The consent banner: Accept all / Reject all / Customise, notice text, Global Privacy
    Control, activation of ``<script type="text/plain" data-purpose="...">`` tags after consent,
    proof posted to ``POST /v1/consent``. Configured by ``data-*`` attributes on its script tag."""
    body, etag = _script()
    headers = {
        "Cache-Control": CACHE_CONTROL,
        "ETag": etag,
        # loaded by the brand's pages, on another origin (the app default is same-origin)
        "Cross-Origin-Resource-Policy": "cross-origin",
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=MEDIA_TYPE, headers=headers)
