"""Where someone is: IP addresses truncated for analytics, coordinates coarsened by default.

- **IP addresses**: analytics sees the network only (IPv4 without its last octet, ``203.0.113.0``;
  IPv6 to its /48, ``2001:db8:1::``), in the clear part of the event's context. The full address is
  sealed under the subject's key in ``event_ips``, apart from the event, so that it can be dropped
  when its retention (``dictionary.IP_RETENTION_DAYS``, 30 days) ends while the event is kept.
- **Coordinates** (``context.location.latitude/longitude`` and properties named ``latitude``,
  ``longitude``, ``lat``, ``lng``, ``lon``): rounded to two decimals (about 1.1 km of latitude) unless
  the person opted in to precise location (the purpose ``sensitive.precise_location``).

Interface for the retention job: ``drop_expired_ips(conn, now_ms, days=IP_RETENTION_DAYS)`` deletes
every full address received before ``now_ms - days``; it returns the number of rows deleted.
"""

from __future__ import annotations

import ipaddress
import math
from typing import Any

from sqlalchemy import delete, select

from candor.dictionary import DAY_MS, IP_RETENTION_DAYS
from candor.store import insert_sql
from candor.store.schema import event_ips

COORD_KEYS = frozenset({"latitude", "longitude", "lat", "lng", "lon", "long"})
DECIMALS = 2  # 0.01 degree: about 1.1 km of latitude, less of longitude away from the equator
IP_COLUMNS = ("source_id", "message_id", "subject_id", "received_ms", "sealed")


def truncate_ip(value: Any) -> str | None:
    """The network of an address (IPv4 /24, IPv6 /48), or None when ``value`` is not an IP address."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    parts = value.split(".")
    if len(parts) == 4 and all(p.isdigit() and len(p) <= 3 and int(p) <= 255 for p in parts):
        return f"{int(parts[0])}.{int(parts[1])}.{int(parts[2])}.0"  # the common case, without ipaddress
    try:
        addr = ipaddress.ip_address(value.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False).network_address)


def coarse(value: Any) -> Any:
    """A coordinate rounded to about 1 km; other values unchanged (a string number is rounded too)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        if not math.isfinite(value):
            return value
        return round(float(value), DECIMALS)
    if isinstance(value, str) and len(value) <= 40:
        try:
            f = float(value)
        except ValueError:
            return value
        if math.isfinite(f):
            return f"{round(f, DECIMALS):.{DECIMALS}f}"
    return value


def is_precise(value: Any) -> bool:
    """Whether a coordinate carries more precision than the coarse form."""
    return coarse(value) != value and not isinstance(value, bool)


def coarsen_location(context: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``context`` with ``location`` coordinates coarsened, and the precise ones (``{key: value}``) or None."""
    loc = context.get("location")
    if not isinstance(loc, dict):
        return context, None
    precise = {k: v for k, v in loc.items() if k in COORD_KEYS and is_precise(v)}
    if not precise:
        return context, None
    return {**context, "location": {**loc, **{k: coarse(v) for k, v in precise.items()}}}, precise


def ip_sql(conn: Any) -> str:
    return insert_sql(conn, "event_ips", IP_COLUMNS, "source_id, message_id")


def drop_expired_ips(conn: Any, now_ms: int, days: int = IP_RETENTION_DAYS) -> int:
    """Delete the full IP addresses received more than ``days`` ago (the retention job calls this)."""
    return int(conn.execute(delete(event_ips).where(event_ips.c.received_ms < now_ms - days * DAY_MS)).rowcount or 0)


def ips_of(rt: Any, conn: Any, people: list[str]) -> list[dict[str, Any]]:
    """The full IP addresses still kept for these subjects, opened (for the access export)."""
    from candor.events import iso_ms
    from candor.vault import KeyDestroyed, VaultError

    keys = rt.vault.keys_for(people, conn)
    out = []
    for sid, mid, received, sealed in conn.execute(
        select(event_ips.c.subject_id, event_ips.c.message_id, event_ips.c.received_ms, event_ips.c.sealed)
        .where(event_ips.c.subject_id.in_(people))
        .order_by(event_ips.c.received_ms)
    ):
        aead = keys.get(sid)
        if aead is None:
            continue
        try:
            ip = rt.vault.open_with(aead, sealed, sid.encode()).decode()
        except (KeyDestroyed, VaultError):
            continue
        out.append(
            {
                "ip": ip,
                "message_id": mid,
                "received": iso_ms(received),
                "kept_until": iso_ms(received + IP_RETENTION_DAYS * DAY_MS),
            }
        )
    return out
