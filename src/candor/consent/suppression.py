"""Do-not-contact lists: suppression per channel, checked before every send and export.

Entries are keyed by an HMAC of the normalised identifier (emails through email-validator, phones
to E.164 through phonenumbers, postal addresses normalised) under a key of their own, so they hold no
personal data and outlive the erasure of the person: a tombstone that keeps old lists and new imports
from contacting them again. This is separate from consent to processing: a customer may agree to
personalisation and still be on the do-not-mail list.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, select

from candor import audit, normalize
from candor.store import Store, now_ms
from candor.store.schema import identifiers, suppressions
from candor.vault import Vault

CHANNELS = ("email", "sms", "phone", "post", "push", "all")
REASONS = (
    "unsubscribe",
    "complaint",
    "bounce",
    "objection",
    "erasure",
    "imported",
    "preference-service",
    "do-not-call",
)
ID_TYPES = ("email", "phone", "address")


class SuppressionError(ValueError):
    pass


def normalise(id_type: str, value: object, region: str = "US") -> str | None:
    if id_type == "email":
        return normalize.email(value)
    if id_type == "phone":
        return normalize.phone(value, region)
    if id_type == "address":
        return normalize.postal_address(value)
    raise SuppressionError(f"unknown identifier type {id_type!r}; one of {', '.join(ID_TYPES)}")


@dataclass
class ImportReport:
    rows: int = 0
    added: int = 0
    already: int = 0
    matched_profiles: int = 0
    errors: list[str] = field(default_factory=list)


class Suppressions:
    def __init__(self, store: Store, vault: Vault, region: str = "US") -> None:
        self.store = store
        self.vault = vault
        self.region = region

    def _hash(self, id_type: str, value: object) -> str:
        norm = normalise(id_type, value, self.region)
        if norm is None:
            raise SuppressionError(f"not a valid {id_type}")
        return self.vault.contact_hash(id_type, norm)

    def add(
        self,
        channel: str,
        id_type: str,
        value: object,
        reason: str,
        *,
        source: str | None = None,
        actor: str = "cli",
        conn: Any = None,
    ) -> bool:
        """Suppress one contact on a channel; returns False when it already was."""
        self._check(channel, reason)
        h = self._hash(id_type, value)
        if conn is None:
            with self.store.write() as c:
                return self._insert(c, channel, id_type, h, reason, source, actor)
        return self._insert(conn, channel, id_type, h, reason, source, actor)

    def _insert(
        self, conn: Any, channel: str, id_type: str, h: str, reason: str, source: str | None, actor: str
    ) -> bool:
        # RETURNING says reliably, on both databases, whether the row is new
        res = conn.execute(
            self.store.insert_ignore(suppressions).returning(suppressions.c.hash),
            {
                "channel": channel,
                "hash": h,
                "id_type": id_type,
                "reason": reason,
                "source": source,
                "created_ms": now_ms(),
            },
        )
        added = res.first() is not None
        if added:
            audit.record(conn, actor, "suppression.add", target=f"{channel}:{h[:16]}", details={"reason": reason})
        return added

    @staticmethod
    def _check(channel: str, reason: str) -> None:
        if channel not in CHANNELS:
            raise SuppressionError(f"unknown channel {channel!r}; one of {', '.join(CHANNELS)}")
        if reason not in REASONS:
            raise SuppressionError(f"unknown reason {reason!r}; one of {', '.join(REASONS)}")

    def check(self, channel: str, id_type: str, value: object) -> list[dict[str, Any]]:
        """The entries that suppress this contact on this channel (its own or ``all``)."""
        if channel not in CHANNELS:
            raise SuppressionError(f"unknown channel {channel!r}; one of {', '.join(CHANNELS)}")
        h = self._hash(id_type, value)
        return self.entries_for_hashes(channel, [h])

    def entries_for_hashes(self, channel: str, hashes: Iterable[str], conn: Any = None) -> list[dict[str, Any]]:
        hs = list(hashes)
        if not hs:
            return []
        q = select(
            suppressions.c.channel, suppressions.c.reason, suppressions.c.source, suppressions.c.created_ms
        ).where(and_(suppressions.c.hash.in_(hs), suppressions.c.channel.in_([channel, "all"])))
        if conn is not None:
            return [dict(r) for r in conn.execute(q).mappings()]
        with self.store.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def subject_suppressed(self, subject_id: str, channel: str, conn: Any = None) -> list[dict[str, Any]]:
        """Entries that suppress any contact of a subject on a channel."""
        q = select(identifiers.c.contact_hash).where(
            and_(identifiers.c.subject_id == subject_id, identifiers.c.contact_hash.is_not(None))
        )
        if conn is not None:
            hashes = [h for (h,) in conn.execute(q)]
        else:
            with self.store.engine.connect() as c:
                hashes = [h for (h,) in c.execute(q)]
        return self.entries_for_hashes(channel, hashes, conn)

    def import_file(
        self, path: Path, channel: str, reason: str, *, source: str | None = None, actor: str = "cli"
    ) -> ImportReport:
        """Import a do-not-contact list (CSV with a header naming email, phone or address columns;
        a file with one unnamed column is read as emails or phones, whichever each value is)."""
        self._check(channel, reason)
        report = ImportReport()
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise SuppressionError(f"{path} is not UTF-8 text") from None
        rows = list(csv.reader(io.StringIO(text)))
        if not rows:
            return report
        header = [h.strip().lower() for h in rows[0]]
        address_cols = [
            i
            for i, h in enumerate(header)
            if h in ("street", "city", "postalcode", "postal_code", "zip", "state", "country", "address")
        ]
        cols: dict[str, int] = {t: header.index(t) for t in ("email", "phone") if t in header}
        body = rows[1:] if (cols or address_cols) else rows
        hashes: list[tuple[str, str]] = []
        for n, row in enumerate(body, start=2 if (cols or address_cols) else 1):
            report.rows += 1
            found = False
            for id_type, idx in cols.items():
                if idx < len(row) and row[idx].strip():
                    norm = normalise(id_type, row[idx], self.region)
                    if norm is None:
                        report.errors.append(f"line {n}: the {id_type} column is not a valid {id_type}")
                        continue
                    hashes.append((id_type, self.vault.contact_hash(id_type, norm)))
                    found = True
            if address_cols:
                parts = [row[i] for i in address_cols if i < len(row) and row[i].strip()]
                norm = normalize.postal_address(" ".join(parts)) if parts else None
                if norm:
                    hashes.append(("address", self.vault.contact_hash("address", norm)))
                    found = True
            if not cols and not address_cols and row:
                value = row[0].strip()
                for guess in ("email", "phone"):
                    norm = normalise(guess, value, self.region)
                    if norm:
                        hashes.append((guess, self.vault.contact_hash(guess, norm)))
                        found = True
                        break
            if not found and not any(e.startswith(f"line {n}:") for e in report.errors):
                report.errors.append(f"line {n}: no email, phone or address found")
        with self.store.write() as conn:
            for id_type, h in hashes:
                if self._insert(conn, channel, id_type, h, reason, source, actor):
                    report.added += 1
                else:
                    report.already += 1
            unique = list({h for _, h in hashes})
            for i in range(0, len(unique), 500):
                report.matched_profiles += int(
                    conn.execute(
                        select(func.count(func.distinct(identifiers.c.subject_id))).where(
                            identifiers.c.contact_hash.in_(unique[i : i + 500])
                        )
                    ).scalar()
                    or 0
                )
        return report
