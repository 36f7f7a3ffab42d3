"""Segment-spec messages: parsing, validation and the split into clear and sealed parts.

This module is the hot path of collection: it turns one decoded JSON object into a
:class:`Message` ready for the writer, or a :class:`Rejection` that says what was wrong and where.
The rules follow Segment's HTTP tracking API so that its SDKs work unchanged.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from candor import normalize

TYPES = ("identify", "track", "page", "screen", "group", "alias")
MAX_ID_CHARS = 1024
MAX_NAME_CHARS = 200
MAX_MESSAGE_ID_CHARS = 200

# Properties that hold personal data on every source unless a source says otherwise: they are sealed.
DEFAULT_PERSONAL_PROPERTIES = frozenset(
    {
        "email",
        "phone",
        "name",
        "firstName",
        "lastName",
        "first_name",
        "last_name",
        "address",
        "birthday",
        "ip",
        "url",
        "referrer",
        "search",
        # free text a person writes (survey comments, reviews): it can say anything about them
        "comment",
        "comments",
    }
)
# Context keys kept in clear for analytics; everything else in context (ip, userAgent, device ids,
# traits, location, page urls, ...) is sealed under the subject's key.
CLEAR_CONTEXT_KEYS = ("library", "locale", "timezone", "campaign", "channel", "app", "os")


class RequestError(Exception):
    """A problem with a whole request (not one event): becomes a 4xx JSON error."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            err["field"] = self.field
        return {"success": False, "error": err}


@dataclass(slots=True)
class Rejection:
    reason: str
    field: str | None
    type: str | None
    message_id: str | None
    index: int = 0

    def as_error(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "message": self.reason}
        if self.field:
            out["field"] = self.field
        if self.message_id:
            out["messageId"] = self.message_id
        return out


@dataclass(slots=True)
class Message:
    """A validated event, with identifiers already pseudonymised and personal values set apart."""

    type: str
    message_id: str
    event: str | None
    ts_ms: int
    received_ms: int
    user_pid: str | None
    anon_pid: str | None
    # (type, pseudonym) of every identifier in the message, the primary one first
    identifiers: list[tuple[str, str]]
    previous_pids: tuple[str, str] | None  # alias: previousId as (user_id pid, anonymous_id pid)
    # during an HMAC key rotation: identifier → its pseudonyms under older keys still in force
    legacy: dict[tuple[str, str], list[str]] | None
    properties: str  # JSON, clear
    context: str  # JSON, clear subset
    sealed_doc: bytes  # JSON of the personal part, to be sealed under the subject's key
    # consent: purposes the event needs, what its own signals say, and a preference update it carries
    required: tuple[str, ...] = ()
    signals: dict[str, bool] | None = None
    raw_signal: str | None = None
    gpc: bool = False
    consent_update: tuple[frozenset[str], frozenset[str]] | None = None
    # email and phone identifiers → their hash under the suppression key (do-not-contact matching)
    contacts: dict[tuple[str, str], str] | None = None
    # screening.py: inbox findings, values held back until the writer knows the subject's opt-ins,
    # and the full IP address (sealed apart from the event)
    findings: list[tuple[str, str, str, str, str]] | None = None
    held: list[Any] | None = None
    ip: str | None = None


def json_depth_ok(value: Any, limit: int) -> bool:
    """True when ``value`` nests no deeper than ``limit`` containers (iterative, no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(node, dict):
            for child in node.values():
                if isinstance(child, dict | list):
                    stack.append((child, depth + 1))
        elif isinstance(node, list):
            for child in node:
                if isinstance(child, dict | list):
                    stack.append((child, depth + 1))
    return True


def parse_body(raw: bytes, max_depth: int) -> Any:
    """Decode a JSON request body or raise a RequestError that says what is wrong with it."""
    if not raw.strip():
        raise RequestError(400, "empty_body", "the request body is empty; send a JSON object")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        msg = str(exc)
        if "UTF-8" in msg or "surrogate" in msg:
            raise RequestError(400, "invalid_utf8", f"the body is not valid UTF-8 JSON: {msg}") from None
        if "depth" in msg:
            raise RequestError(400, "too_deep", f"JSON nests deeper than {max_depth} levels; flatten it") from None
        raise RequestError(400, "malformed_json", f"the body is not valid JSON: {msg}") from None
    if not isinstance(data, dict):
        raise RequestError(400, "not_an_object", "the body must be a JSON object")
    if not json_depth_ok(data, max_depth):
        raise RequestError(400, "too_deep", f"JSON nests deeper than {max_depth} levels; flatten it")
    return data


def parse_time(value: Any) -> int | None:
    """ISO-8601 date-time → epoch milliseconds; naive times are taken as UTC. Raises ValueError."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError("not an ISO-8601 date-time string")
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def split_personal(properties: dict[str, Any], personal: frozenset[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Properties without the personal keys (at any depth), and the personal values by dotted path."""
    sealed: dict[str, Any] = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                where = f"{path}.{k}" if path else k
                if k in personal:
                    sealed[where] = v
                else:
                    out[k] = walk(v, where) if isinstance(v, dict | list) else v
            return out
        if isinstance(node, list):
            return [walk(v, f"{path}.{i}") if isinstance(v, dict | list) else v for i, v in enumerate(node)]
        return node

    # fast path: flat properties with no personal key need no copy
    if not any(k in personal or isinstance(v, dict | list) for k, v in properties.items()):
        return properties, sealed
    return walk(properties, ""), sealed


class _Reject(Exception):
    def __init__(self, reason: str, field: str | None) -> None:
        self.reason = reason
        self.field = field


def _id_value(msg: dict[str, Any], key: str) -> str | None:
    raw = msg.get(key)
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise _Reject(f"{key} must be a string", key)
    if isinstance(raw, str) and len(raw) > MAX_ID_CHARS:
        raise _Reject(f"{key} is longer than {MAX_ID_CHARS} characters", key)
    return normalize.text_id(raw)


def _obj(msg: dict[str, Any], key: str) -> dict[str, Any]:
    value = msg.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Reject(f"{key} must be a JSON object", key)
    return value


def _name(msg: dict[str, Any], key: str, required: bool) -> str | None:
    value = msg.get(key)
    if value is None or value == "":
        if required:
            raise _Reject(f"{key} is required", key)
        return None
    if not isinstance(value, str):
        raise _Reject(f"{key} must be a string", key)
    if len(value) > MAX_NAME_CHARS:
        raise _Reject(f"{key} is longer than {MAX_NAME_CHARS} characters", key)
    return value


class Validator:
    """Validates and splits messages for one source. ``pseudonym`` is the vault's HMAC function."""

    def __init__(
        self,
        pseudonym: Any,
        personal_properties: frozenset[str] = DEFAULT_PERSONAL_PROPERTIES,
        default_phone_region: str = "US",
        max_event_bytes: int = 32 * 1024,
        legacy_pseudonyms: Any = None,
        plan: Any = None,
        purposes: frozenset[str] | None = None,
        tcf_map: dict[int, str] | None = None,
        contact_hash: Any = None,
        legacy_active: Any = None,
        junk: frozenset[str] = frozenset(),
        screen: Any = None,
    ) -> None:
        # screening.Screen of the source: detection, special categories, location, IP (None: off)
        self.screen = screen
        # identifier values this brand knows to be placeholders (CANDOR_IDENTITY_JUNK_VALUES), lower-case
        self.junk = junk
        # whether any older HMAC key is in its rotation window (cheap check before the work)
        self.legacy_active = legacy_active or (lambda: True)
        self.contact_hash = contact_hash
        self.pseudonym = pseudonym
        self.legacy_pseudonyms = legacy_pseudonyms
        self.plan = plan
        self.purposes = purposes
        self.tcf_map = tcf_map
        self.max_event_bytes = max_event_bytes
        self.personal_properties = personal_properties
        self.region = default_phone_region

    def validate(
        self,
        msg: Any,
        *,
        type_: str | None,
        received_ms: int,
        sent_at_ms: int | None,
        client_ip: str | None,
        index: int = 0,
        gpc: bool = False,
    ) -> Message | Rejection:
        mtype = type_
        message_id = None
        try:
            if not isinstance(msg, dict):
                raise _Reject("each event must be a JSON object", None)
            raw_mid = msg.get("messageId")
            if raw_mid is not None:
                if not isinstance(raw_mid, str) or not raw_mid or len(raw_mid) > MAX_MESSAGE_ID_CHARS:
                    raise _Reject(
                        f"messageId must be a non-empty string of at most {MAX_MESSAGE_ID_CHARS} characters",
                        "messageId",
                    )
                message_id = raw_mid
            if mtype is None:
                t = msg.get("type")
                if t is None:
                    raise _Reject("type is required on each batch item", "type")
                if not isinstance(t, str) or t not in TYPES:
                    raise _Reject(f"type must be one of {', '.join(TYPES)}", "type")
                mtype = t
            return self._validate(msg, mtype, message_id, received_ms, sent_at_ms, client_ip, gpc)
        except _Reject as r:
            return Rejection(r.reason, r.field, mtype, message_id, index)

    def _validate(
        self,
        msg: dict[str, Any],
        mtype: str,
        message_id: str | None,
        received_ms: int,
        sent_at_ms: int | None,
        client_ip: str | None,
        gpc: bool = False,
    ) -> Message:
        user_id = _id_value(msg, "userId")
        anonymous_id = _id_value(msg, "anonymousId")
        junk = self.junk
        if junk:
            if user_id is not None and user_id.lower() in junk:
                user_id = None
            if anonymous_id is not None and anonymous_id.lower() in junk:
                anonymous_id = None
        previous_id = None
        if mtype == "alias":
            previous_id = _id_value(msg, "previousId")
            if previous_id is not None and previous_id.lower() in junk:
                previous_id = None
            if previous_id is None:
                raise _Reject("previousId is required for alias", "previousId")
            if user_id is None:
                raise _Reject("userId is required for alias", "userId")
        elif user_id is None and anonymous_id is None:
            raise _Reject(
                "userId or anonymousId is required (placeholder values such as 'null' do not count)", "userId"
            )
        event = None
        if mtype == "track":
            event = _name(msg, "event", True)
        elif mtype in ("page", "screen"):
            event = _name(msg, "name", False)
        group_id = None
        if mtype == "group":
            group_id = _id_value(msg, "groupId")
            if group_id is None:
                raise _Reject("groupId is required for group", "groupId")

        properties = _obj(msg, "properties")
        traits = _obj(msg, "traits")
        context = _obj(msg, "context")
        integrations = _obj(msg, "integrations")

        # timestamps and clock-skew correction: timestamp = receivedAt - (sentAt - originalTimestamp)
        try:
            original = parse_time(msg.get("timestamp") or msg.get("originalTimestamp"))
        except ValueError:
            raise _Reject("timestamp is not an ISO-8601 date-time", "timestamp") from None
        own_sent = msg.get("sentAt")
        if own_sent is not None:
            try:
                sent_at_ms = parse_time(own_sent)
            except ValueError:
                raise _Reject("sentAt is not an ISO-8601 date-time", "sentAt") from None
        if original is not None and sent_at_ms is not None:
            ts = received_ms - (sent_at_ms - original)
        elif original is not None:
            ts = original
        else:
            ts = received_ms

        if context.get("direct") is True and client_ip:
            context = {**context, "ip": client_ip}
        screened = None
        if self.screen is not None:
            screened = self.screen.apply(properties, traits, context)
            properties, traits, context = screened.properties, screened.traits, screened.context

        # identifiers → pseudonyms (primary first)
        raw_ids: list[tuple[str, str]] = []
        if user_id is not None:
            raw_ids.append(("user_id", user_id))
        if anonymous_id is not None:
            raw_ids.append(("anonymous_id", anonymous_id))
        if mtype == "identify" and traits:
            em = normalize.email(traits.get("email"))
            if em:
                raw_ids.append(("email", em))
            ph = normalize.phone(traits.get("phone"), self.region)
            if ph:
                raw_ids.append(("phone", ph))
        ext = context.get("externalIds")
        if isinstance(ext, list):
            for item in ext[:20]:
                if isinstance(item, dict) and isinstance(item.get("type"), str):
                    val = normalize.text_id(item.get("id"))
                    if val:
                        raw_ids.append(("ext:" + item["type"][:32], val))
        if junk:
            raw_ids = [(t, v) for t, v in raw_ids if v.lower() not in junk]
        pseudonym = self.pseudonym
        ids = [(t, pseudonym(t, v)) for t, v in raw_ids]
        user_pid = ids[0][1] if user_id is not None else None
        anon_pid = (ids[1][1] if user_id is not None else ids[0][1]) if anonymous_id is not None else None
        previous_pids = None
        if previous_id is not None:
            previous_pids = (pseudonym("user_id", previous_id), pseudonym("anonymous_id", previous_id))
        contacts = None
        ch = self.contact_hash
        if ch is not None and len(raw_ids) > 2 - (anonymous_id is None) - (user_id is None):
            contacts = {
                ident: ch(t, v) for (t, v), ident in zip(raw_ids, ids, strict=True) if t in ("email", "phone")
            } or None
        legacy = None
        if self.legacy_pseudonyms is not None and self.legacy_active():
            lp = self.legacy_pseudonyms
            legacy = {ident: old for (t, v), ident in zip(raw_ids, ids, strict=True) if (old := lp(t, v))}
            if previous_id is not None:
                legacy[("user_id", previous_pids[0])] = lp("user_id", previous_id)  # type: ignore[index]
                legacy[("anonymous_id", previous_pids[1])] = lp("anonymous_id", previous_id)  # type: ignore[index]
            legacy = {k: v for k, v in legacy.items() if v} or None

        # split personal from clear: a personal key is sealed wherever it is nested
        clear_props, sealed_props = split_personal(properties, self.personal_properties)
        clear_ctx = {k: context[k] for k in CLEAR_CONTEXT_KEYS if k in context}
        if screened is not None:
            if screened.sealed_properties:
                sealed_props.update(screened.sealed_properties)
            if screened.ip_network is not None:
                clear_ctx["ip"] = screened.ip_network
        sealed: dict[str, Any] = {}
        if user_id is not None:
            sealed["userId"] = msg.get("userId")
        if anonymous_id is not None:
            sealed["anonymousId"] = msg.get("anonymousId")
        if previous_id is not None:
            sealed["previousId"] = msg.get("previousId")
        if group_id is not None:
            sealed["groupId"] = msg.get("groupId")
        if traits:
            sealed["traits"] = traits
        if context:
            sealed["context"] = context
        if sealed_props:
            sealed["properties"] = sealed_props
        if integrations:
            sealed["integrations"] = integrations
        try:
            sealed_doc = orjson.dumps(sealed)
            props_json = orjson.dumps(clear_props).decode()
            ctx_json = orjson.dumps(clear_ctx).decode()
        except TypeError as exc:  # e.g. integers beyond 64 bits
            raise _Reject(f"a value cannot be stored: {exc}", None) from None
        size = len(sealed_doc) + len(props_json) + len(ctx_json)
        if size > self.max_event_bytes:
            raise _Reject(f"the event is {size} bytes; the limit is {self.max_event_bytes} bytes", None)
        required: tuple[str, ...] = ()
        signals = None
        raw_signal = None
        update = None
        if self.plan is not None:
            from candor.consent.signals import SEGMENT_CONSENT_EVENT, event_signals

            required = self.plan.required(mtype, event)
            sig, raw_signal = event_signals(context, gpc, self.tcf_map)
            if self.purposes is not None:
                sig = {p: v for p, v in sig.items() if p in self.purposes}
            signals = sig or None
            if event == SEGMENT_CONSENT_EVENT:
                if not sig:
                    raise _Reject("a consent preference update needs context.consent.categoryPreferences", "context")
                update = (frozenset(p for p, v in sig.items() if v), frozenset(p for p, v in sig.items() if not v))
        return Message(
            required=required,
            signals=signals,
            raw_signal=raw_signal,
            gpc=gpc,
            consent_update=update,
            contacts=contacts,
            findings=screened.findings or None if screened is not None else None,
            held=screened.held or None if screened is not None else None,
            ip=screened.ip if screened is not None else None,
            type=mtype,
            message_id=message_id or ("candor-" + secrets.token_hex(16)),
            event=event,
            ts_ms=ts,
            received_ms=received_ms,
            user_pid=user_pid,
            anon_pid=anon_pid,
            identifiers=ids,
            previous_pids=previous_pids,
            legacy=legacy,
            properties=props_json,
            context=ctx_json,
            sealed_doc=sealed_doc,
        )
