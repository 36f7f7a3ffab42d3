"""Helpers for running a real ``candor serve`` from tests and benchmarks (shared by both)."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def candor_command() -> list[str]:
    """The ``candor`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("candor")
    if script.exists():
        return [str(script)]
    found = shutil.which("candor")
    if found:
        return [found]
    return [sys.executable, "-c", "from candor.cli import main; main()"]
