"""What providers post is parsed strictly: any input gives events or a clear 400, never a crash."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from candor.campaigns import feedback, signing, sms
from candor.campaigns.definition import CampaignError

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**53), max_value=2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
KEYS = st.sampled_from(["Type", "Message", "notificationType", "bounce", "event", "email", "type", "events"])
VALUES = st.one_of(JSON, st.sampled_from(["Bounce", "Complaint", "Notification", "bounce", "spamreport", "Permanent"]))
SHAPED = st.dictionaries(KEYS, VALUES, max_size=5)
SES = st.fixed_dictionaries(
    {"notificationType": st.sampled_from(["Bounce", "Complaint"])},
    optional={"bounce": JSON, "complaint": JSON, "mail": JSON},
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(JSON, SHAPED, SES, st.lists(st.one_of(SHAPED, SES), max_size=3)))
def test_feedback_bodies_give_events_or_a_clear_error(doc: Any) -> None:
    try:
        events, confirmation = feedback.parse(orjson.dumps(doc))
    except CampaignError as exc:
        assert str(exc)
        return
    for kind, email, permanent, mid in events:
        assert kind in ("bounce", "complaint") and isinstance(email, str) and isinstance(permanent, bool)
        assert mid is None or isinstance(mid, str)
    assert not (confirmation and events)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["application/json", "application/x-www-form-urlencoded", ""]))
def test_inbound_sms_bodies_give_sender_and_text_or_a_clear_error(body: bytes, content_type: str) -> None:
    try:
        sender, text = sms.parse_inbound(body, content_type)
    except CampaignError as exc:
        assert str(exc)
        return
    assert sender and isinstance(text, str)


def test_the_providers_formats() -> None:
    ses = {
        "Type": "Notification",
        "Message": orjson.dumps(
            {
                "notificationType": "Bounce",
                "bounce": {"bounceType": "Transient", "bouncedRecipients": [{"emailAddress": "a@example.org"}]},
                "mail": {"commonHeaders": {"messageId": "<m1@shop.example>"}},
            }
        ).decode(),
    }
    assert feedback.parse(orjson.dumps(ses)) == ([("bounce", "a@example.org", False, "<m1@shop.example>")], False)
    grid = [{"event": "spamreport", "email": "b@example.org"}, {"event": "open", "email": "c@example.org"}]
    assert feedback.parse(orjson.dumps(grid)) == ([("complaint", "b@example.org", True, None)], False)
    assert sms.parse_inbound(b"msisdn=447911123456&text=STOP", "") == ("447911123456", "STOP")


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=2**31), st.binary(min_size=1, max_size=8))
def test_signatures_verify_only_the_exact_body_at_a_fresh_time(body: bytes, now: int, extra: bytes) -> None:
    secret = "whsec_test"
    headers = signing.headers(secret, body, "d-1", now=now)
    assert signing.verify(secret, headers, body, now=now + 299)
    assert not signing.verify(secret, headers, body + extra, now=now)
    assert not signing.verify("whsec_other", headers, body, now=now)
    assert not signing.verify(secret, headers, body, now=now + 301)  # a replay later is refused
    assert not signing.verify(secret, {**headers, "Candor-Timestamp": "soon"}, body, now=now)
