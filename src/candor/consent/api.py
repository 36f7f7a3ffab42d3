"""HTTP routes for consent: record a choice, explain a decision, prove it; notices and purposes."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from candor.auth import AuthError, Public, Require, SourceAuth, Staff, basic_username
from candor.consent.ledger import ConsentError
from candor.consent.purposes import GPC_PURPOSES
from candor.events import RequestError, parse_body, parse_time
from candor.http import STAFF_RESPONSES, ErrorBody

router = APIRouter(tags=["consent"])

ID = str | int
_SOURCE_ERRORS: dict[int | str, dict[str, Any]] = {
    "400": {"description": "Invalid consent record", "model": ErrorBody},
    "401": {"description": "Missing or unknown write key", "model": ErrorBody},
    "404": {"description": "Unknown notice version", "model": ErrorBody},
    "413": {"description": "Body larger than the limit", "model": ErrorBody},
    "429": {"description": "Rate limit exceeded; see Retry-After", "model": ErrorBody},
}


class NoticeRef(BaseModel):
    id: str = Field(..., max_length=100)
    version: int = Field(..., ge=1)
    language: str = Field("en", max_length=20)


class ConsentIn(BaseModel):
    """One choice, as a banner, a preference center or a server records it."""

    model_config = ConfigDict(extra="forbid")
    userId: ID | None = None
    anonymousId: ID | None = None
    granted: list[str] = Field(default_factory=list, description="Purposes the person agreed to")
    denied: list[str] = Field(default_factory=list, description="Purposes the person refused or withdrew")
    categoryPreferences: dict[str, bool] | None = Field(None, description="Segment's form: purpose → yes/no")
    notice: NoticeRef | None = None
    uiAction: Literal["accept_all", "reject_all", "custom"] | None = None
    source: Literal["banner", "preference_center", "api", "import"] = "api"
    jurisdiction: Literal["EU", "UK", "US-CA", "US", "OTHER"] | None = None
    confirmed: bool = Field(False, description="An explicit confirmation of an opt-in over a GPC signal")
    objection: bool = Field(False, description="The denial is an objection (GDPR Art. 21)")
    tcString: str | None = Field(None, max_length=4096)
    gppString: str | None = Field(None, max_length=4096)
    timestamp: str | None = None
    messageId: str | None = Field(None, max_length=200)
    writeKey: str | None = None


class Recorded(BaseModel):
    success: Literal[True]
    seq: list[int]


class DecisionOut(BaseModel):
    purpose: str
    allowed: bool
    reasons: list[str]
    proof: list[int]
    basis: str
    jurisdiction: str
    explicit: bool


class Explanation(BaseModel):
    found: bool
    decisions: list[DecisionOut]


class ProofRecord(BaseModel):
    seq: int
    ts_ms: int
    recorded_ms: int
    source: str
    granted: list[str]
    denied: list[str]
    objection: bool
    jurisdiction: str | None
    expires_ms: int | None
    notice: dict[str, Any] | None
    ui_action: str | None
    raw_signal: str | None
    confirmed: bool
    actor: str
    message_id: str | None


class Proof(BaseModel):
    found: bool
    records: list[ProofRecord]


class PurposeOut(BaseModel):
    name: str
    description: str
    basis: dict[str, str]
    channel: str | None


class NoticeOut(BaseModel):
    id: str
    version: int
    language: str
    sha256: str
    requires_reconsent: bool
    text: str


class NoticeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(..., min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    version: int = Field(..., ge=1, le=1_000_000)
    language: str = Field("en", min_length=2, max_length=20, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
    text: str = Field(..., min_length=1, max_length=200_000)
    requires_reconsent: bool = False


def _split(body: ConsentIn) -> tuple[set[str], set[str]]:
    granted, denied = set(body.granted), set(body.denied)
    for purpose, ok in (body.categoryPreferences or {}).items():
        (granted if ok else denied).add(purpose)
    both = granted & denied
    if both:
        raise ConsentError(f"a purpose cannot be granted and denied at once: {', '.join(sorted(both))}")
    return granted, denied


@router.post(
    "/v1/consent",
    response_model=Recorded,
    responses=_SOURCE_ERRORS,
    dependencies=[Depends(SourceAuth())],
    summary="Record a consent choice (banner, preference center, SDK)",
)
async def record_consent(request: Request) -> Any:
    """Write key auth, like collection. A ``Sec-GPC: 1`` header also records an opt-out of sale and
    sharing and of targeted advertising, unless the person confirmed an opt-in explicitly."""
    rt = request.app.state.candor
    from candor.collect import read_body

    try:
        async with asyncio.timeout(rt.settings.body_timeout_seconds):
            raw = await read_body(request, rt.settings.max_event_bytes)  # stops reading past the limit
    except TimeoutError:
        raise RequestError(
            408, "body_timeout", f"the body took longer than {rt.settings.body_timeout_seconds} s"
        ) from None
    data = parse_body(raw, rt.settings.max_json_depth)
    key = basic_username(request.headers.get("authorization")) or data.get("writeKey")
    source = rt.directory.source_for_key(key) if isinstance(key, str) and key else None
    if source is None:
        raise AuthError(401, "invalid_write_key", "send a valid source write key as HTTP Basic user name or writeKey")
    try:
        body = ConsentIn.model_validate(data)
    except ValidationError as exc:  # name the field and the rule, never the value
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ConsentError(f"{where}: {first['msg']}") from None
    gpc = request.headers.get("sec-gpc") == "1"
    return await _record(request, body, f"source:{source.id}", gpc)


@router.post(
    "/v1/consent/on-behalf",
    response_model=Recorded,
    responses=STAFF_RESPONSES,
    summary="Record a choice a person made by other means (phone, store, letter)",
)
async def record_on_behalf(body: ConsentIn, request: Request, staff: Staff = Depends(Require("consent:write"))) -> Any:
    return await _record(request, body, f"token:{staff.token_id}", False)


async def _record(request: Request, body: ConsentIn, actor: str, gpc: bool) -> Any:
    rt = request.app.state.candor
    consent = rt.consent
    granted, denied = _split(body)
    signal: str | None = None
    if body.tcString:
        from candor.consent.signals import _tcf_signals

        signal = body.tcString
        for p, ok in _tcf_signals(body.tcString, None).items():
            (granted if ok else denied).add(p)
    if body.gppString:
        from candor.consent.signals import _gpp_signals

        signal = body.gppString
        for p in _gpp_signals(body.gppString):
            denied.add(p)
            granted.discard(p)
    granted -= denied
    if body.userId is not None:
        id_type, value = "user_id", str(body.userId)
    elif body.anonymousId is not None:
        id_type, value = "anonymous_id", str(body.anonymousId)
    else:
        raise ConsentError("userId or anonymousId is required")
    try:
        ts = parse_time(body.timestamp) if body.timestamp else None
    except ValueError:
        raise ConsentError("timestamp is not an ISO-8601 date-time") from None
    consent.check_purposes(granted | denied)

    def write() -> list[int]:
        with rt.store.write() as conn:
            sid, pid = consent.ensure_subject(conn, id_type, value)
            seqs = []
            if granted or denied:
                src = "tcf" if body.tcString else "gpp" if body.gppString else body.source
                seqs.append(
                    consent.record(
                        conn,
                        sid,
                        granted=granted,
                        denied=denied,
                        source=src,
                        actor=actor,
                        ts_ms=ts,
                        jurisdiction=body.jurisdiction,
                        notice_id=body.notice.id if body.notice else None,
                        notice_version=body.notice.version if body.notice else None,
                        language=body.notice.language if body.notice else "en",
                        ui_action=body.uiAction,
                        raw_signal=signal,
                        confirmed=body.confirmed,
                        objection=body.objection,
                        id_type=id_type,
                        pseudonym=pid,
                        message_id=body.messageId,
                    )
                )
            if gpc and not body.confirmed:
                seqs.append(
                    consent.record(
                        conn,
                        sid,
                        denied=GPC_PURPOSES,
                        source="gpc",
                        actor=actor,
                        ts_ms=ts,
                        raw_signal="Sec-GPC: 1",
                        id_type=id_type,
                        pseudonym=pid,
                    )
                )
            if not seqs:
                raise ConsentError("nothing to record: grant or deny at least one purpose")
            return seqs

    seqs = await asyncio.get_running_loop().run_in_executor(None, write)
    return {"success": True, "seq": seqs}


def _subject(request: Request, user_id: str | None, anonymous_id: str | None, email: str | None) -> str | None:
    consent = request.app.state.candor.consent
    given = [(t, v) for t, v in (("user_id", user_id), ("anonymous_id", anonymous_id), ("email", email)) if v]
    if len(given) != 1:
        raise ConsentError("give exactly one of userId, anonymousId or email")
    return consent.subject_for(*given[0])


@router.get("/v1/consent/explain", response_model=Explanation, responses=STAFF_RESPONSES)
def explain(
    request: Request,
    userId: str | None = Query(None, max_length=1024),
    anonymousId: str | None = Query(None, max_length=1024),
    email: str | None = Query(None, max_length=320),
    purpose: str | None = Query(None, max_length=100, description="One purpose; all when absent"),
    category: list[str] = Query(
        [], max_length=20, description="Data categories the use involves (dictionary); special ones need an opt-in"
    ),
    _: Staff = Depends(Require("consent:read")),
) -> Any:
    """Why a person's data may or may not be used for a purpose, with the records that prove it.
    An unknown person gets "not allowed" for every purpose, with the reason."""
    from candor.dictionary import CATEGORIES

    rt = request.app.state.candor
    for c in category:
        if c not in CATEGORIES:
            raise ConsentError(f"category: unknown data category {c[:40]!r}; one of {', '.join(CATEGORIES)}")
    sid = _subject(request, userId, anonymousId, email)
    decisions = rt.consent.explain(sid, [purpose] if purpose else None, categories=category)
    return {"found": sid is not None, "decisions": [d.as_dict() for d in decisions]}


@router.get("/v1/consent/proof", response_model=Proof, responses=STAFF_RESPONSES)
def proof(
    request: Request,
    userId: str | None = Query(None, max_length=1024),
    anonymousId: str | None = Query(None, max_length=1024),
    email: str | None = Query(None, max_length=320),
    _: Staff = Depends(Require("consent:read")),
) -> Any:
    """What the person saw (notice version and SHA-256 of its text), when, and how they chose."""
    rt = request.app.state.candor
    sid = _subject(request, userId, anonymousId, email)
    return {"found": sid is not None, "records": rt.consent.proof(sid) if sid else []}


@router.get("/v1/purposes", response_model=list[PurposeOut], dependencies=[Depends(Public())])
def purposes(request: Request) -> Any:
    """The purposes of processing, in plain words, with the lawful basis per jurisdiction."""
    return [
        {"name": p.name, "description": p.description, "basis": p.basis, "channel": p.channel}
        for p in request.app.state.candor.taxonomy.purposes.values()
    ]


@router.get(
    "/v1/notices/{notice_id}",
    response_model=NoticeOut,
    dependencies=[Depends(Public())],
    responses={"404": {"description": "No such notice", "model": ErrorBody}, "400": {"model": ErrorBody}},
)
def get_notice(
    request: Request,
    notice_id: str,
    language: str = Query("en", max_length=20),
    version: int | None = Query(None, ge=1, le=1_000_000),
) -> Any:
    """A notice text (the newest version unless one is asked for), for banners and preference centers."""
    n = request.app.state.candor.consent.notice(notice_id[:100], version, language)
    if n is None:
        raise ConsentError(f"no notice {notice_id!r} in {language!r}" + (f" version {version}" if version else ""), 404)
    return {
        "id": n.notice_id,
        "version": n.version,
        "language": n.language,
        "sha256": n.sha256,
        "requires_reconsent": n.requires_reconsent,
        "text": n.text,
    }


@router.post("/v1/notices", response_model=NoticeOut, responses={**STAFF_RESPONSES, "409": {"model": ErrorBody}})
def add_notice(body: NoticeIn, request: Request, staff: Staff = Depends(Require("settings:write"))) -> Any:
    """Add a notice version (notices are never edited)."""
    n = request.app.state.candor.consent.add_notice(
        body.id,
        body.version,
        body.language,
        body.text,
        requires_reconsent=body.requires_reconsent,
        actor=f"token:{staff.token_id}",
    )
    return {
        "id": n.notice_id,
        "version": n.version,
        "language": n.language,
        "sha256": n.sha256,
        "requires_reconsent": n.requires_reconsent,
        "text": n.text,
    }


@router.get(
    "/.well-known/gpc.json",
    dependencies=[Depends(Public())],
    response_class=Response,
    responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}},
)
def gpc_json() -> Response:
    """Global Privacy Control support statement (this site honours GPC)."""
    body = '{"gpc": true, "lastUpdate": "%s"}' % time.strftime("%Y-%m-%d", time.gmtime())  # noqa: UP031
    return Response(body, media_type="application/json")


class AudienceCounts(BaseModel):
    usable: int
    not_consented: int
    suppressed: int
    restricted: int


@router.get("/v1/consent/audience", response_model=dict[str, AudienceCounts], responses=STAFF_RESPONSES)
def audience(request: Request, _: Staff = Depends(Require("consent:read"))) -> Any:
    """For every purpose: how many people may be used, have not consented, are on a do-not-contact
    list for the purpose's channel, or are restricted. Aggregates only."""
    from candor.consent.audience import audience_counts

    rt = request.app.state.candor
    return audience_counts(rt.consent, rt.analytics)


class SuppressionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel: Literal["email", "sms", "phone", "post", "push", "all"]
    email: str | None = Field(None, max_length=320)
    phone: str | None = Field(None, max_length=64)
    address: str | None = Field(None, max_length=500)
    reason: Literal[
        "unsubscribe", "complaint", "bounce", "objection", "erasure", "imported", "preference-service", "do-not-call"
    ] = "unsubscribe"
    source: str | None = Field(None, max_length=100)


class SuppressionCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel: Literal["email", "sms", "phone", "post", "push", "all"]
    email: str | None = Field(None, max_length=320)
    phone: str | None = Field(None, max_length=64)
    address: str | None = Field(None, max_length=500)


class SuppressionEntry(BaseModel):
    channel: str
    reason: str
    source: str | None
    created_ms: int


class SuppressionAdded(BaseModel):
    added: bool


class SuppressionStatus(BaseModel):
    suppressed: bool
    entries: list[SuppressionEntry]


def _contact(body: SuppressionIn | SuppressionCheck) -> tuple[str, str]:
    given = [(t, v) for t, v in (("email", body.email), ("phone", body.phone), ("address", body.address)) if v]
    if len(given) != 1:
        raise ConsentError("give exactly one of email, phone or address")
    return given[0]


@router.post("/v1/suppressions", response_model=SuppressionAdded, responses=STAFF_RESPONSES)
def add_suppression(body: SuppressionIn, request: Request, staff: Staff = Depends(Require("consent:write"))) -> Any:
    """Put a contact on a channel's do-not-contact list (stored as a keyed hash, kept after erasure)."""
    id_type, value = _contact(body)
    added = request.app.state.candor.suppressions.add(
        body.channel, id_type, value, body.reason, source=body.source, actor=f"token:{staff.token_id}"
    )
    return {"added": added}


@router.post("/v1/suppressions/check", response_model=SuppressionStatus, responses=STAFF_RESPONSES)
def check_suppression(body: SuppressionCheck, request: Request, _: Staff = Depends(Require("consent:read"))) -> Any:
    """Whether a contact is suppressed on a channel (its own list or ``all``). POST keeps the contact
    out of URLs and logs."""
    id_type, value = _contact(body)
    entries = request.app.state.candor.suppressions.check(body.channel, id_type, value)
    return {"suppressed": bool(entries), "entries": entries}
