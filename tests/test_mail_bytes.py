"""Campaign mail serialised without the email package's generator parses back to what was sent."""

from __future__ import annotations

import email
from email import policy

from hypothesis import given, settings
from hypothesis import strategies as st

from candor.rights.mailer import Mailer

MAILER = Mailer("smtp://127.0.0.1:2525", "news@shop.example")
TEXT = st.text(st.characters(codec="utf-8"), max_size=400) | st.sampled_from(
    [".", "..\n.\nend", "From here\n", "trailing  \n\ttab\t", "=3D and =\n", "a" * 300, "naïve café ☕\r\nline"]
)


def _norm(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _parse(data: bytes) -> email.message.EmailMessage:
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")  # CRLF only
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    msg = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


@settings(max_examples=150, deadline=None)
@given(
    subject=st.text(max_size=120),
    text=TEXT,
    html=st.none() | TEXT,
    unsubscribe=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=600),
)
def test_serialised_campaign_mail_parses_back_to_its_parts(
    subject: str, text: str, html: str | None, unsubscribe: str
) -> None:
    built = MAILER.bulk_bytes(
        "Ann <ann@example.org>",
        subject,
        text,
        {"From": "Shop <news@shop.example>", "List-Unsubscribe": f"<{unsubscribe}>"},
        html,
    )
    assert built is not None
    data, env_from, env_to, message_id = built
    assert (env_from, env_to) == ("news@shop.example", "ann@example.org")
    msg = _parse(data)
    assert msg["To"] == "Ann <ann@example.org>" and msg["From"] == "Shop <news@shop.example>"
    assert msg["Message-ID"] == message_id
    assert "".join(str(msg["Subject"]).split()) == "".join(subject.split())  # folding moves only whitespace
    assert str(msg["List-Unsubscribe"]).replace(" ", "") == f"<{unsubscribe}>".replace(" ", "")
    plain = msg.get_body(("plain",))
    assert plain is not None and _norm(plain.get_content()).rstrip("\n") == _norm(text).rstrip("\n")
    if html is None:
        assert not msg.is_multipart()
    else:
        part = msg.get_body(("html",))
        assert msg.get_content_type() == "multipart/alternative"
        assert part is not None and _norm(part.get_content()).rstrip("\n") == _norm(html).rstrip("\n")


def test_non_ascii_addresses_leave_it_to_the_email_package() -> None:
    assert MAILER.bulk_bytes("Zoë <zoë@exämple.org>", "Hi", "text") is None
    built = MAILER.bulk_bytes("Zoë <zoe@example.org>", "Hi", "text")
    assert built is None  # a non-ASCII display name too (formataddr encodes it there)


def test_a_line_break_in_a_header_value_cannot_add_a_header() -> None:
    built = MAILER.bulk_bytes("ann@example.org", "Hello\r\nBcc: eve@example.org", "text")
    assert built is not None
    msg = _parse(built[0])
    assert msg["Bcc"] is None and "Bcc" in str(msg["Subject"])
