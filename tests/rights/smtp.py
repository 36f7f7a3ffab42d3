"""A real SMTP server (aiosmtpd) on a free localhost port, keeping what it receives."""

from __future__ import annotations

import email
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller

from candor.testing import free_port


@dataclass
class Inbox:
    port: int
    messages: list[Message] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def to(self, address: str) -> list[Message]:
        return [m for m in self.messages if m["To"] == address]

    def body(self, m: Message, subtype: str = "plain") -> str:
        """The text (or ``subtype="html"``) part of a message."""
        part = next((p for p in m.walk() if p.get_content_type() == f"text/{subtype}"), None)
        assert part is not None, f"no text/{subtype} part"
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        return payload.decode()

    def last_code(self, address: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in reversed(self.to(address)):
                found = re.search(r"Your code is (\d{6})", self.body(m))
                if found:
                    return found.group(1)
            time.sleep(0.02)
        raise AssertionError("no code arrived")

    def last_link(self, address: str) -> str:
        for m in reversed(self.to(address)):
            found = re.search(r"/v1/privacy-requests/download/(\S+)", self.body(m))
            if found:
                return found.group(1)
        raise AssertionError("no download link arrived")


@contextmanager
def smtp_server() -> Iterator[Inbox]:
    inbox = Inbox(free_port())
    controller = Controller(inbox, hostname="127.0.0.1", port=inbox.port)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()
