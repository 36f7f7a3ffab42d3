"""A real HTTP receiver for webhooks: a small threaded server on a free localhost port.

It keeps every request (headers and body), checks Candor's signature with the destination's secret,
and can be told to fail: answer 503 to everything (``down``) or to the next ``fail_next`` requests.
Only requests it accepted (2xx) count as delivered.
"""

from __future__ import annotations

import http.server
import threading
from dataclasses import dataclass, field
from typing import Any

import orjson

from candor.campaigns import signing
from candor.testing import free_port


@dataclass
class Hit:
    headers: dict[str, str]
    body: bytes
    accepted: bool
    signed: bool

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    port: int = field(default_factory=free_port)
    secret: str = ""
    down: bool = False
    fail_next: int = 0
    accept_at_most: int | None = None  # then behaves as down (a receiver that dies mid-send)
    hits: list[Hit] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def accepted(self) -> list[Hit]:
        return [h for h in self.hits if h.accepted]

    def start(self) -> Receiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = dict(self.headers.items())
                with receiver.lock:
                    signed = bool(receiver.secret) and signing.verify(receiver.secret, headers, body)
                    full = receiver.accept_at_most is not None and len(receiver.accepted) >= receiver.accept_at_most
                    refuse = receiver.down or full or receiver.fail_next > 0
                    if receiver.fail_next > 0:
                        receiver.fail_next -= 1
                    receiver.hits.append(Hit(headers, body, not refuse, signed))
                self.send_response(503 if refuse else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()
