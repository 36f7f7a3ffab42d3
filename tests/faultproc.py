"""A Candor job in a child process that stops at a named point, so a test can SIGKILL it exactly there.

    python -m tests.faultproc erasure REQUEST_ID POINT
    python -m tests.faultproc resolve POINT

Everything runs for real (the store, the vault, Splink); the only change is a pause: at POINT the child
prints ``PAUSED POINT`` and sleeps until it is killed. Settings come from the environment
(``CANDOR_DATA_DIR``, ``CANDOR_DATABASE_URL``) like ``candor`` itself.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from candor import audit
from candor.app import Runtime
from candor.config import Settings


def pause(point: str) -> None:
    print(f"PAUSED {point}", flush=True)
    time.sleep(600)
    raise SystemExit(3)  # never reached when the test kills the process


def around(owner: Any, name: str, point: str, *, before: bool = True) -> None:
    original: Callable[..., Any] = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if before:
            pause(point)
        out = original(*args, **kwargs)
        if not before:
            pause(point)
        return out

    setattr(owner, name, wrapped)


def main(argv: list[str]) -> None:
    job = argv[0]
    rt = Runtime(Settings.from_env())
    if job == "erasure":
        request_id, point = argv[1], argv[2]
        from candor.rights.erasure import Erasure

        if point == "after-shred":  # keys destroyed and committed; nothing purged yet
            around(Erasure, "purge", point)
        elif point == "inside-purge":  # every row deleted, the purge's transaction not yet committed
            record = audit.record

            def record_then_pause(conn: Any, actor: str, action: str, **kw: Any) -> int:
                seq = record(conn, actor, action, **kw)
                if action == "rights.erasure.purged":
                    pause(point)
                return seq

            audit.record = record_then_pause
        rt.rights.process(request_id, actor="cli")
    elif job == "resolve":
        point = argv[1]
        from candor.identity import matching
        from candor.identity.service import Identity

        if point == "after-training":  # the model is saved; nothing linked yet
            around(matching.Model, "predict", point)
        elif point == "inside-linking":  # edges inserted, the chunk's transaction not committed
            around(Identity, "after_edges", point, before=False)
        rt.resolver.resolve(actor="cli")
    else:
        raise SystemExit(f"unknown job {job}")
    rt.close()


if __name__ == "__main__":
    main(sys.argv[1:])
