"""Small HTTP helpers shared by the routers."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class JSON(JSONResponse):
    """A JSON response rendered with orjson (fast, strict UTF-8)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSON:
    """The one error body every route uses: ``{"success": false, "error": {"code", "message"}}``."""
    return JSON({"success": False, "error": {"code": code, "message": message}}, status_code=status, headers=headers)
