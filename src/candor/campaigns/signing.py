"""Signed webhooks: every request Candor sends to a destination carries an HMAC-SHA256 signature.

Headers: ``Candor-Delivery`` (a stable id: the same message retried keeps it, so receivers can
drop duplicates), ``Candor-Timestamp`` (Unix seconds when this attempt was signed) and
``Candor-Signature: v1=<hex>``, the HMAC-SHA256 under the destination's secret of
``"<timestamp>.<raw body>"``. A receiver recomputes it over the bytes it received, compares in
constant time and refuses timestamps more than five minutes away from its clock (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

TOLERANCE_SECONDS = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def headers(secret: str, body: bytes, delivery_id: str, now: float | None = None) -> dict[str, str]:
    ts = int(time.time() if now is None else now)
    return {
        "Content-Type": "application/json",
        "Candor-Delivery": delivery_id,
        "Candor-Timestamp": str(ts),
        "Candor-Signature": signature(secret, ts, body),
    }


def verify(secret: str, given: Mapping[str, str], body: bytes, now: float | None = None) -> bool:
    """True when ``given`` (request headers, any case) carry a valid, fresh signature of ``body``."""
    lower = {k.lower(): v for k, v in given.items()}
    try:
        ts = int(lower.get("candor-timestamp", ""))
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts) > TOLERANCE_SECONDS:
        return False
    expected = signature(secret, ts, body).encode()
    return any(
        hmac.compare_digest(expected, part.strip().encode()) for part in lower.get("candor-signature", "").split(",")
    )
