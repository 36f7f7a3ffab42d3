"""Sending mail over SMTP (``CANDOR_SMTP_URL``): verification codes, download links, campaigns later.

``smtp://user:pass@host:port`` (plain, or ``?starttls=1`` to upgrade), ``smtps://host:465`` (TLS from
the start). The standard library's smtplib does the protocol; nothing here logs addresses or bodies.
"""

from __future__ import annotations

import binascii
import contextlib
import secrets
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


def _header_line(name: str, value: str) -> bytes:
    """``Name: value`` with CRLF: as given when ASCII and short enough, else RFC 2047 encoded and folded.
    Line breaks in a value become spaces (no header injection)."""
    value = value.replace("\r", " ").replace("\n", " ")
    if value.isascii() and len(name) + len(value) <= 996:
        return f"{name}: {value}\r\n".encode()
    folded = Header(value, "utf-8" if not value.isascii() else "us-ascii", header_name=name).encode(linesep="\r\n")
    return f"{name}: {folded}\r\n".encode()


def _qp(text: str) -> bytes:
    """UTF-8 quoted-printable with CRLF line ends (binascii: in C)."""
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return binascii.b2a_qp(data, quotetabs=False, istext=True, header=False).replace(b"\n", b"\r\n")


_TEXT_PART = b'Content-Type: text/%s; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'


class MailError(Exception):
    """Mail could not be sent; the message names the reason, never the recipient."""


class MailUnconfirmed(MailError):
    """The connection failed after the message was handed over (during DATA): the server may have
    delivered it. Sending it again could deliver it twice, so it is not retried."""


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

    def bulk_bytes(
        self, to: str, subject: str, text: str, headers: dict[str, str] | None = None, html: str | None = None
    ) -> tuple[bytes, str, str, str] | None:
        """The message of :meth:`bulk_message` serialised directly (several times cheaper than the
        ``email`` package's generator, which a campaign would otherwise run per recipient): returns
        (bytes with CRLF line ends, envelope sender, envelope recipient, Message-ID), or None when an
        address is not ASCII (then :meth:`bulk_message` and SMTPUTF8 take over). Quoted-printable bodies never contain
        ``=_``, so the boundary cannot occur in them."""
        extra = dict(headers or {})
        sender = extra.pop("From", "") or self.sender
        env_from, env_to = parseaddr(sender)[1], parseaddr(to)[1]
        if not (sender + to).isascii():
            return None
        message_id = make_msgid(domain=self.sender.rpartition("@")[2] or None)
        out = [
            _header_line("From", sender),
            _header_line("To", to),
            _header_line("Subject", subject),
            _header_line("Message-ID", message_id),
        ]
        out += [_header_line(k, v) for k, v in extra.items()]
        out.append(b"MIME-Version: 1.0\r\n")
        if html is None:
            out += [_TEXT_PART % b"plain", _qp(text), b"\r\n"]
        else:
            boundary = b"=_" + secrets.token_hex(16).encode()
            out.append(b'Content-Type: multipart/alternative; boundary="%s"\r\n\r\n' % boundary)
            for subtype, body in ((b"plain", text), (b"html", html)):
                out += [b"--%s\r\n" % boundary, _TEXT_PART % subtype, _qp(body), b"\r\n"]
            out.append(b"--%s--\r\n" % boundary)
        return b"".join(out), env_from or sender, env_to or to, message_id

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
        self.in_data = False

    def __enter__(self) -> MailSession:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                self.client.quit()
            self.client = None

    def _open(self) -> smtplib.SMTP:
        client = self.mailer._connect()
        handed_over = client.data

        def data(message: Any) -> tuple[int, bytes]:
            # from here on a failure is ambiguous: the server may already hold the message
            self.in_data = True
            return handed_over(message)

        client.data = data  # type: ignore[method-assign,assignment]
        return client

    def send(
        self, to: str, subject: str, text: str, headers: dict[str, str] | None = None, html: str | None = None
    ) -> str:
        """Send one message; reconnects once when the server dropped the connection before the message was
        handed over. A failure after that raises MailUnconfirmed and is never retried (at most once)."""
        built = self.mailer.bulk_bytes(to, subject, text, headers, html)
        msg = self.mailer.bulk_message(to, subject, text, headers, html) if built is None else None
        for attempt in (1, 2):
            self.in_data = False
            try:
                if self.client is None:
                    self.client = self._open()
                if built is not None:
                    data, env_from, env_to, message_id = built
                    self.client.sendmail(env_from, [env_to], data)
                    return message_id
                assert msg is not None
                self.client.send_message(msg)
                return str(msg["Message-ID"])
            except smtplib.SMTPRecipientsRefused as exc:
                raise MailError("the mail server refused the recipient") from exc
            except smtplib.SMTPDataError as exc:
                raise MailError(f"the mail server refused the message ({exc.smtp_code})") from None
            except (OSError, smtplib.SMTPException) as exc:
                self.close()
                if self.in_data:
                    raise MailUnconfirmed(
                        f"the connection failed after the message was handed over ({type(exc).__name__})"
                    ) from None
                if attempt == 2:
                    raise MailError(f"the mail server refused or could not be reached ({type(exc).__name__})") from None
        raise MailError("unreachable")
