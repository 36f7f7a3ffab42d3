"""Structured logs (one JSON object per line) that never carry personal data.

Log messages in Candor name pseudonyms and ids only. Exception *messages* can quote data (a driver
error may echo a parameter), so they are never written: a logged exception keeps its type and the
places in the code (file, line, function), not its text.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any

import orjson


class ScrubbedJsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, _exc, tb = record.exc_info
            entry["exc_type"] = exc_type.__name__
            entry["frames"] = [f"{f.filename}:{f.lineno}:{f.name}" for f in traceback.extract_tb(tb)][-8:]
        return orjson.dumps(entry).decode()


def configure(level: str = "info") -> None:
    """Send every logger (ours, uvicorn's, alembic's) through the scrubbing JSON formatter."""
    handler = logging.StreamHandler()
    handler.setFormatter(ScrubbedJsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("alembic").setLevel(logging.WARNING)
