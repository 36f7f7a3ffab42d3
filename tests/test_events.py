"""The message validator: Segment's rules, and properties that hold for any input (Hypothesis)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from candor.events import (
    TYPES,
    Message,
    Rejection,
    RequestError,
    Validator,
    json_depth_ok,
    parse_body,
    parse_time,
)


def fake_pseudonym(id_type: str, value: str) -> str:
    return hashlib.sha256(f"{id_type}:{value}".encode()).hexdigest()[:32]


V = Validator(fake_pseudonym)
NOW = 1_700_000_000_000


def check(msg: Any, type_: str | None = None, sent: int | None = None) -> Message | Rejection:
    return V.validate(msg, type_=type_, received_ms=NOW, sent_at_ms=sent, client_ip="198.51.100.1")


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=20,
)
ids = st.none() | st.text(max_size=12) | st.integers() | st.booleans() | st.lists(st.text(max_size=3), max_size=2)
messages = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from([*TYPES, "bogus", ""]) | json_scalars,
        "userId": ids,
        "anonymousId": ids,
        "previousId": ids,
        "groupId": ids,
        "event": st.text(max_size=10) | json_scalars,
        "name": st.text(max_size=10) | json_scalars,
        "messageId": st.text(max_size=10) | json_scalars,
        "timestamp": st.datetimes().map(lambda d: d.isoformat()) | st.text(max_size=10) | json_scalars,
        "sentAt": st.datetimes().map(lambda d: d.isoformat() + "Z") | json_scalars,
        "properties": json_values,
        "traits": json_values,
        "context": json_values | st.fixed_dictionaries({"direct": st.booleans(), "ip": st.text(max_size=5)}),
        "integrations": json_values,
    },
)


@settings(max_examples=400, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(messages, st.sampled_from([None, *TYPES]))
def test_any_message_gives_a_message_or_a_rejection(msg: dict[str, Any], type_: str | None) -> None:
    out = check(msg, type_)
    assert isinstance(out, Message | Rejection)
    if isinstance(out, Message):
        assert out.type in TYPES
        assert out.user_pid or out.anon_pid
        assert out.identifiers and out.identifiers[0][0] in ("user_id", "anonymous_id")
        if out.type == "track":
            assert isinstance(msg.get("event"), str) and msg["event"]
        # everything is serialisable and the clear parts never include traits
        assert isinstance(orjson.loads(out.properties), dict)
        sealed = orjson.loads(out.sealed_doc)
        if msg.get("traits"):
            assert sealed["traits"] == msg["traits"]
        assert "ip" not in orjson.loads(out.context)
    else:
        assert out.reason


@settings(max_examples=200, derandomize=True)
@given(st.binary(max_size=200))
def test_parse_body_never_crashes_on_bytes(raw: bytes) -> None:
    try:
        body = parse_body(raw, 32)
    except RequestError as exc:
        assert 400 <= exc.status < 500
        assert exc.code
    else:
        assert isinstance(body, dict)


@settings(max_examples=200, derandomize=True)
@given(json_values)
def test_depth_check_matches_definition(value: Any) -> None:
    def depth(v: Any) -> int:
        if isinstance(v, dict):
            return 1 + max((depth(c) for c in v.values()), default=0)
        if isinstance(v, list):
            return 1 + max((depth(c) for c in v), default=0)
        return 0

    for limit in (1, 2, 3, 5):
        assert json_depth_ok(value, limit) == (depth(value) <= limit)


@settings(max_examples=100, derandomize=True)
@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)))
def test_parse_time_reads_iso_8601_naive_as_utc(dt: datetime) -> None:
    expected = int(dt.replace(tzinfo=UTC).timestamp() * 1000)
    assert parse_time(dt.isoformat()) == expected
    assert parse_time(dt.isoformat() + "Z") == expected
    assert parse_time(dt.isoformat() + "+00:00") == expected


def test_parse_time_rejects_non_dates() -> None:
    for bad in ("yesterday", "2024-13-01", 12, "x" * 100):
        with pytest.raises(ValueError):
            parse_time(bad)


def test_skew_correction_formula() -> None:
    out = check(
        {"userId": "u", "event": "E", "timestamp": "2024-01-01T00:00:00Z"},
        "track",
        sent=parse_time("2024-01-01T00:00:05Z"),
    )
    assert isinstance(out, Message)
    assert out.ts_ms == NOW - 5000


def test_type_mismatch_in_batch_item() -> None:
    out = check({"userId": "u"}, None)
    assert isinstance(out, Rejection) and out.field == "type"


def test_numeric_user_ids_are_text() -> None:
    a = check({"userId": 42, "event": "E"}, "track")
    b = check({"userId": "42", "event": "E"}, "track")
    assert isinstance(a, Message) and isinstance(b, Message)
    assert a.user_pid == b.user_pid


@pytest.mark.parametrize("junk", ["null", "undefined", "0", "-1", "anonymous", "  ", "0000-0000", "[object Object]"])
def test_junk_ids_do_not_identify(junk: str) -> None:
    out = check({"userId": junk, "event": "E"}, "track")
    assert isinstance(out, Rejection) and out.field == "userId"


def test_external_ids_become_identifiers() -> None:
    out = check(
        {
            "userId": "u",
            "event": "E",
            "context": {"externalIds": [{"id": "C-77", "type": "loyalty_card"}, {"id": "null", "type": "x"}, "junk"]},
        },
        "track",
    )
    assert isinstance(out, Message)
    assert [t for t, _ in out.identifiers] == ["user_id", "ext:loyalty_card"]


def test_invalid_email_and_phone_traits_are_not_identifiers() -> None:
    out = check({"userId": "u", "traits": {"email": "not-an-email", "phone": "12"}}, "identify")
    assert isinstance(out, Message)
    assert [t for t, _ in out.identifiers] == ["user_id"]


def test_personal_keys_are_sealed_at_any_depth() -> None:
    from candor.events import split_personal

    props = {"sku": "B-1", "customer": {"email": "a@example.com", "tier": "gold"}, "items": [{"name": "Ann", "q": 1}]}
    clear, sealed = split_personal(props, frozenset({"email", "name"}))
    assert clear == {"sku": "B-1", "customer": {"tier": "gold"}, "items": [{"q": 1}]}
    assert sealed == {"customer.email": "a@example.com", "items.0.name": "Ann"}
    flat = {"sku": "B-1", "price": 3}
    assert split_personal(flat, frozenset({"email"})) == (flat, {})


@settings(max_examples=200, derandomize=True)
@given(json_values)
def test_split_personal_never_leaves_a_personal_key_in_clear(value: Any) -> None:
    from candor.events import split_personal

    if not isinstance(value, dict):
        value = {"v": value}
    keys = frozenset({"a", "email", ""})
    clear, _sealed = split_personal(value, keys)

    def has_key(node: Any) -> bool:
        if isinstance(node, dict):
            return any(k in keys or has_key(v) for k, v in node.items())
        if isinstance(node, list):
            return any(has_key(v) for v in node)
        return False

    assert not has_key(clear)


@settings(max_examples=300, derandomize=True)
@given(
    st.from_regex(r"[A-Za-z0-9._%+'-]{1,20}@[A-Za-z0-9-]{1,12}(\.[A-Za-z0-9-]{1,8}){1,3}", fullmatch=True)
    | st.emails()
    | st.text(max_size=30)
)
def test_email_fast_path_agrees_with_email_validator(value: str) -> None:
    """The regular-expression fast path must never accept what email-validator refuses, nor
    normalise differently."""
    from email_validator import EmailNotValidError, validate_email

    from candor import normalize

    try:
        expected: str | None = str(validate_email(value.strip(), check_deliverability=False).normalized).lower()
    except EmailNotValidError:
        expected = None
    assert normalize.email(value) == expected


def test_special_use_domains_are_single_labels() -> None:
    """normalize._special relies on every special-use domain being one label."""
    from email_validator import SPECIAL_USE_DOMAIN_NAMES

    assert all("." not in d for d in SPECIAL_USE_DOMAIN_NAMES)
