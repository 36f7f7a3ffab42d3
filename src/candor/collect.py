"""The Segment-compatible collection API: /v1/identify|track|page|screen|group|alias|batch|import.

Official Segment and RudderStack SDKs work unchanged against these routes. A request is answered
only after its events are committed (see ingest.py). Rejected events are kept as rejected records
(reason, source, time; never their values) and counted.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any, Literal, NoReturn

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from candor.auth import AuthError, SourceAuth, basic_username
from candor.events import Message, RequestError, parse_body, parse_time
from candor.http import JSON, ErrorBody
from candor.ingest import Work
from candor.security import RateLimited
from candor.store import now_ms

router = APIRouter(prefix="/v1", tags=["collection"])

ID = str | int


class _Base(BaseModel):
    model_config = ConfigDict(extra="allow")
    userId: ID | None = Field(None, description="Your id for the user; userId or anonymousId is required")
    anonymousId: ID | None = Field(None, description="A pseudo-unique id for an anonymous visitor")
    messageId: str | None = Field(None, max_length=200, description="Deduplication key; generated when absent")
    timestamp: str | None = Field(None, description="ISO-8601 time the event happened (client clock)")
    originalTimestamp: str | None = None
    sentAt: str | None = Field(None, description="ISO-8601 time the client sent the event (skew correction)")
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    writeKey: str | None = Field(None, description="The source write key, when not sent as HTTP Basic auth")


class Identify(_Base):
    type: Literal["identify"] | None = None
    traits: dict[str, Any] | None = None


class Track(_Base):
    type: Literal["track"] | None = None
    event: str = Field(..., min_length=1, max_length=200)
    properties: dict[str, Any] | None = None


class Page(_Base):
    type: Literal["page"] | None = None
    name: str | None = Field(None, max_length=200)
    category: str | None = None
    properties: dict[str, Any] | None = None


class Screen(Page):
    type: Literal["screen"] | None = None  # type: ignore[assignment]


class Group(_Base):
    type: Literal["group"] | None = None
    groupId: ID
    traits: dict[str, Any] | None = None


class Alias(_Base):
    type: Literal["alias"] | None = None
    previousId: ID
    userId: ID


class Batch(BaseModel):
    model_config = ConfigDict(extra="allow")
    batch: list[dict[str, Any]] = Field(
        ..., description="Up to 2,500 messages, each with a type; 500 KB per request, 32 KB per message"
    )
    context: dict[str, Any] | None = Field(None, description="Merged into every message's context")
    integrations: dict[str, Any] | None = Field(None, description="Merged into every message's integrations")
    sentAt: str | None = None
    writeKey: str | None = None


class Accepted(BaseModel):
    success: Literal[True]


MODELS: dict[str, type[BaseModel]] = {
    "identify": Identify,
    "track": Track,
    "page": Page,
    "screen": Screen,
    "group": Group,
    "alias": Alias,
    "batch": Batch,
}

_ERRORS: dict[int | str, dict[str, Any]] = {
    "400": {"description": "Malformed or invalid input", "model": ErrorBody},
    "401": {"description": "Missing or unknown write key", "model": ErrorBody},
    "408": {"description": "The body was not received in time", "model": ErrorBody},
    "413": {"description": "Body larger than the limit", "model": ErrorBody},
    "415": {"description": "Unsupported Content-Encoding", "model": ErrorBody},
    "429": {"description": "Rate limit exceeded; see Retry-After", "model": ErrorBody},
    "503": {"description": "The store is unavailable; retry later", "model": ErrorBody},
}


async def read_body(request: Request, limit: int) -> bytes:
    """Read at most ``limit`` bytes (after gzip/deflate decoding) or raise 413."""
    declared = request.headers.get("content-length")
    encoding = request.headers.get("content-encoding", "").lower().strip()
    if declared and declared.isdigit() and int(declared) > limit and not encoding:
        raise RequestError(413, "too_large", f"the body is larger than {limit} bytes")
    if encoding not in ("", "identity", "gzip", "deflate"):
        raise RequestError(415, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        # compressed data is never much larger than what it decompresses to
        if size > limit + (1024 if encoding in ("gzip", "deflate") else 0):
            raise RequestError(413, "too_large", f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if encoding in ("gzip", "deflate"):
        d = zlib.decompressobj(wbits=47)  # auto-detects gzip and zlib headers
        try:
            raw = d.decompress(raw, limit + 1)
        except zlib.error:
            raise RequestError(400, "bad_encoding", f"the body is not valid {encoding} data") from None
        if len(raw) > limit or d.unconsumed_tail:
            raise RequestError(413, "too_large", f"the decompressed body is larger than {limit} bytes")
    return raw


async def _refuse(rt: Any, source_id: int, received: int, kind: str, problem: RequestError) -> NoReturn:
    """Record a request refused as a whole against its source, then raise its 4xx."""
    await rt.record_rejection(source_id, received, kind, problem.message)
    raise problem


async def collect(request: Request, kind: str) -> JSONResponse:
    rt = request.app.state.candor
    settings = rt.settings
    received = now_ms()
    client_ip = request.client.host if request.client else None
    limits = rt.limits
    if client_ip:
        wait = limits.exceeded("auth_failure_ip", client_ip)
        if wait is not None:
            raise RateLimited("auth_failure_ip", wait)
        limits.hit("collect_ip", client_ip)
    header_key = basic_username(request.headers.get("authorization"))
    source = None
    if header_key is not None:
        source = rt.directory.source_for_key(header_key)
        if source is None:
            raise AuthError(401, "invalid_write_key", "the write key is unknown or disabled")
    limit = settings.max_batch_bytes if kind == "batch" else settings.max_event_bytes
    try:
        async with asyncio.timeout(settings.body_timeout_seconds):
            raw = await read_body(request, limit)
        body = parse_body(raw, settings.max_json_depth)
    except TimeoutError:
        raise RequestError(
            408, "body_timeout", f"the body took longer than {settings.body_timeout_seconds} s"
        ) from None
    except RequestError as exc:
        if source is not None:
            await rt.record_rejection(source.id, received, kind, exc.message)
        raise
    if source is None:
        key = body.get("writeKey")
        if not isinstance(key, str) or not key:
            raise AuthError(
                401, "missing_write_key", "send the source write key as HTTP Basic user name or as writeKey"
            )
        source = rt.directory.source_for_key(key)
        if source is None:
            raise AuthError(401, "invalid_write_key", "the write key is unknown or disabled")
    limits.hit("collect_key", str(source.id))
    strict = source.strict or request.query_params.get("strict", "").lower() in ("1", "true", "yes")
    validator = rt.validator_for(source)
    rt.vault.refresh_hmac()

    sent_raw = body.get("sentAt")
    try:
        sent_at = parse_time(sent_raw) if sent_raw is not None else None
    except ValueError:
        await _refuse(
            rt,
            source.id,
            received,
            kind,
            RequestError(400, "invalid_sent_at", "sentAt is not an ISO-8601 date-time", "sentAt"),
        )

    if kind == "batch":
        items = body.get("batch")
        if not isinstance(items, list):
            await _refuse(
                rt,
                source.id,
                received,
                kind,
                RequestError(400, "invalid_batch", "batch must be a JSON array of messages", "batch"),
            )
        if not items:
            raise RequestError(400, "empty_batch", "batch is empty; send at least one message", "batch")
        if len(items) > settings.max_batch_events:
            problem = RequestError(
                400,
                "batch_too_long",
                f"batch has {len(items)} messages; the limit is {settings.max_batch_events}",
                "batch",
            )
            await _refuse(rt, source.id, received, kind, problem)
        shared_ctx = body.get("context")
        shared_int = body.get("integrations")
        if isinstance(shared_ctx, dict) or isinstance(shared_int, dict):
            merged = []
            for item in items:
                if isinstance(item, dict):
                    item = dict(item)
                    if isinstance(shared_ctx, dict):
                        own = item.get("context")
                        item["context"] = {**shared_ctx, **own} if isinstance(own, dict) else dict(shared_ctx)
                    if isinstance(shared_int, dict):
                        own = item.get("integrations")
                        item["integrations"] = {**shared_int, **own} if isinstance(own, dict) else dict(shared_int)
                merged.append(item)
            items = merged
        type_ = None
    else:
        items = [body]
        type_ = kind

    messages = []
    rejections = []
    validate = validator.validate
    gpc = request.headers.get("sec-gpc") == "1"  # exactly "1", as the GPC specification says
    for i, item in enumerate(items):
        out = validate(
            item, type_=type_, received_ms=received, sent_at_ms=sent_at, client_ip=client_ip, index=i, gpc=gpc
        )
        if isinstance(out, Message):
            messages.append(out)
        else:
            rejections.append(out)

    if rejections and (strict or kind != "batch"):
        # Nothing of this request is stored; the rejections are recorded and returned.
        await rt.ingestor.submit(Work(source.id, [], rejections, received))
        first = rejections[0]
        body_out: dict[str, Any] = {
            "success": False,
            "error": {
                "code": "invalid_event",
                "message": first.reason if kind != "batch" else f"{len(rejections)} of {len(items)} events are invalid",
                **({"field": first.field} if first.field else {}),
            },
        }
        if kind == "batch":
            body_out["errors"] = [r.as_error() for r in rejections]
        return JSON(body_out, status_code=400)

    result = await rt.ingestor.submit(Work(source.id, messages, rejections, received))
    headers = {"X-Candor-Rejected": str(result.rejected)} if result.rejected else None
    return JSON({"success": True}, headers=headers)


def _route(kind: str, summary: str) -> None:
    model = MODELS[kind]

    async def handler(request: Request) -> JSONResponse:
        return await collect(request, "batch" if kind == "import" else kind)

    handler.__name__ = f"collect_{kind}"
    responses: dict[int | str, dict[str, Any]] = dict(_ERRORS)
    router.add_api_route(
        f"/{'import' if kind == 'import' else kind}",
        handler,
        methods=["POST"],
        summary=summary,
        response_model=Accepted,
        responses=responses,
        dependencies=[Depends(SourceAuth())],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
            },
            "security": [{"writeKeyBasic": []}],
        },
    )


for _kind, _summary in (
    ("identify", "Identify a user and record their traits"),
    ("track", "Record an action a user performed"),
    ("page", "Record a page view"),
    ("screen", "Record a mobile screen view"),
    ("group", "Associate a user with a group"),
    ("alias", "Merge two user identities"),
    ("batch", "Send up to 2,500 messages at once"),
):
    _route(_kind, _summary)
MODELS["import"] = Batch
_route("import", "Synonym of /v1/batch (historical imports)")
