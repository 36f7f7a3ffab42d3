"""Sending mail over SMTP (``CANDOR_SMTP_URL``): verification codes, download links, campaigns later.

``smtp://user:pass@host:port`` (plain, or ``?starttls=1`` to upgrade), ``smtps://host:465`` (TLS from
the start). The standard library's smtplib does the protocol; nothing here logs addresses or bodies.
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from email import charset, policy
from email.header import Header
from email.message import EmailMessage, Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr, make_msgid, parseaddr
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

_QP: Any = charset.Charset("utf-8")  # MIMEText takes a Charset too (its stub says str)
_QP.body_encoding = charset.QP


def _text_header(value: str) -> Any:
    """A header value: as given when ASCII, else a ``Header`` that encodes it (RFC 2047)."""
    return value if value.isascii() else Header(value, "utf-8")


def _address(value: str) -> str:
    if value.isascii():
        return value
    name, addr = parseaddr(value)
    return formataddr((name, addr), charset="utf-8")


class MailError(Exception):
    """Mail could not be sent; the message names the reason, never the recipient."""


class Mailer:
    def __init__(self, url: str, sender: str, timeout: float = 15.0) -> None:
        self.url = url
        self.sender = sender
        self.timeout = timeout

    @property
    def configured(self) -> bool:
        return bool(self.url)

    def _connect(self) -> smtplib.SMTP:
        parts = urlsplit(self.url)
        query = parse_qs(parts.query)
        host, port = parts.hostname or "127.0.0.1", parts.port
        if parts.scheme == "smtps":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                host, port or 465, timeout=self.timeout, context=ssl.create_default_context()
            )
        else:
            client = smtplib.SMTP(host, port or 25, timeout=self.timeout)
        if query.get("starttls", ["0"])[0] in ("1", "true", "yes"):
            client.starttls(context=ssl.create_default_context())
        if parts.username:
            client.login(unquote(parts.username), unquote(parts.password or ""))
        return client

    def message(
        self, to: str, subject: str, text: str, headers: dict[str, str] | None = None, html: str | None = None
    ) -> EmailMessage:
        # long header values (List-Unsubscribe URLs) must stay plain text, never RFC 2047 encoded words
        msg = EmailMessage(policy=policy.default.clone(max_line_length=998))
        extra = dict(headers or {})
        msg["From"] = extra.pop("From", None) or self.sender
        msg["To"] = to
        msg["Subject"] = subject
        msg["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or None)
        for k, v in extra.items():
            msg[k] = v
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
        return msg

    def bulk_message(
        self, to: str, subject: str, text: str, headers: dict[str, str] | None = None, html: str | None = None
    ) -> Message:
        """The same message built with the standard library's ``email.mime`` classes (compat32 policy),
        several times cheaper than ``message`` for campaigns: headers are stored as given (non-ASCII text
        is RFC 2047-encoded, addresses stay readable), bodies are UTF-8 quoted-printable."""
        body: Message
        if html is None:
            body = MIMEText(text, "plain", _QP)
        else:
            body = MIMEMultipart("alternative")
            body.attach(MIMEText(text, "plain", _QP))
            body.attach(MIMEText(html, "html", _QP))
        extra = dict(headers or {})
        body["From"] = _address(extra.pop("From", "") or self.sender)
        body["To"] = _address(to)
        body["Subject"] = _text_header(subject)
        body["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or None)
        for k, v in extra.items():
            body[k] = _text_header(v)
        return body

    def send(self, to: str, subject: str, text: str, headers: dict[str, str] | None = None) -> str:
        """Send one plain-text message on a connection of its own; returns its Message-ID."""
        if not self.url:
            raise MailError("no mail server is configured (set CANDOR_SMTP_URL)")
        msg = self.message(to, subject, text, headers)
        try:
            with self._connect() as client:
                client.send_message(msg)
        except (OSError, smtplib.SMTPException) as exc:
            raise MailError(f"the mail server refused or could not be reached ({type(exc).__name__})") from None
        return str(msg["Message-ID"])

    def session(self) -> MailSession:
        """Many messages over one connection (a campaign); reconnects once when the server drops it."""
        if not self.url:
            raise MailError("no mail server is configured (set CANDOR_SMTP_URL)")
        return MailSession(self)


class MailSession:
    def __init__(self, mailer: Mailer) -> None:
        self.mailer = mailer
        self.client: smtplib.SMTP | None = None

    def __enter__(self) -> MailSession:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                self.client.quit()
            self.client = None

    def send(
        self, to: str, subject: str, text: str, headers: dict[str, str] | None = None, html: str | None = None
    ) -> str:
        msg = self.mailer.bulk_message(to, subject, text, headers, html)
        for attempt in (1, 2):
            try:
                if self.client is None:
                    self.client = self.mailer._connect()
                self.client.send_message(msg)
                return str(msg["Message-ID"])
            except smtplib.SMTPRecipientsRefused as exc:
                raise MailError("the mail server refused the recipient") from exc
            except (OSError, smtplib.SMTPException) as exc:
                self.close()
                if attempt == 2:
                    raise MailError(f"the mail server refused or could not be reached ({type(exc).__name__})") from None
        raise MailError("unreachable")
