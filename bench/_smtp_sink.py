"""A real SMTP server (aiosmtpd) in a process of its own, for the campaign benchmark.

    python bench/_smtp_sink.py PORT RECIPIENTS_FILE

It accepts every message and appends each envelope recipient, one per line, to ``RECIPIENTS_FILE``
(written before the 250 answer, so a message the sender saw accepted is in the file). It prints
``ready`` once it listens and stops when its standard input closes. In a process of its own, the
server does not compete with the sender for one interpreter's lock, as a mail server on the same
machine would not: what the benchmark measures is the sender.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        os.write(self.fd, "".join(f"{r}\n" for r in envelope.rcpt_tos).encode())
        return "250 OK"


def main(argv: list[str]) -> None:
    port, path = int(argv[0]), argv[1]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    controller = Controller(Sink(fd), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        print("ready", flush=True)
        sys.stdin.read()  # until the benchmark closes our standard input
    finally:
        controller.stop()
        os.close(fd)


if __name__ == "__main__":
    main(sys.argv[1:])
