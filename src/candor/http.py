"""Small HTTP helpers shared by the routers."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse


class JSON(JSONResponse):
    """A JSON response rendered with orjson (fast, strict UTF-8)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSON:
    """The one error body every route uses: ``{"success": false, "error": {"code", "message"}}``."""
    return JSON({"success": False, "error": {"code": code, "message": message}}, status_code=status, headers=headers)


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class EventError(BaseModel):
    index: int
    message: str
    field: str | None = None
    messageId: str | None = None


class ErrorBody(BaseModel):
    success: Literal[False]
    error: ErrorDetail
    errors: list[EventError] | None = Field(None, description="One entry per rejected event (strict mode)")


STAFF_RESPONSES: dict[int | str, dict[str, Any]] = {
    "400": {"description": "Invalid parameters", "model": ErrorBody},
    "401": {"description": "Missing, unknown, expired or revoked API token", "model": ErrorBody},
    "403": {"description": "The token's role lacks the scope this route needs", "model": ErrorBody},
    "413": {"description": "Request body larger than the limit", "model": ErrorBody},
    "429": {"description": "Rate limit exceeded; see Retry-After", "model": ErrorBody},
}
