"""Destinations: signed webhook endpoints (a CRM, a push service, a partner), SMS providers and
ad-platform audience endpoints.

Every request is signed (campaigns/signing.py) and retried with exponential backoff (tenacity) on
what is worth retrying: no connection, a timeout, 429 and 5xx. What still fails goes to the
dead-letter queue (``deliveries`` in state ``dead``), which staff inspect and replay
(``/v1/destinations/{name}/dead-letters``, ``candor destinations dead-letters|replay``). A replay
decides again: a person who withdrew consent since gets nothing.

Every person a destination receives data about is remembered with the pseudonymous id it got
(``candorId``). When that person is erased, each such destination gets an erasure notice carrying
those ids, in the same transaction as the erasure (an outbox), delivered right after it.
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from sqlalchemy import and_, select, update
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from candor import audit
from candor.campaigns import signing
from candor.campaigns.channels import DeliveryError
from candor.campaigns.definition import CampaignError
from candor.store import now_ms
from candor.store.schema import deliveries, destination_recipients, destinations, keyring

log = logging.getLogger("candor.destinations")
# httpx logs every request line with its URL at INFO; destination URLs may carry credentials
logging.getLogger("httpx").setLevel(logging.WARNING)
KINDS = ("webhook", "sms", "ad_audience")
CONTACTS = ("email", "phone", "none")


@dataclass(frozen=True)
class Destination:
    id: int
    name: str
    kind: str
    url: str
    purpose: str | None
    contact: str
    secret: str


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, DeliveryError) and exc.transient


class Poster:
    """Signed POSTs to one destination over one connection pool, with retries and backoff."""

    def __init__(self, dest: Destination, settings: Any) -> None:
        self.dest = dest
        self.settings = settings
        self.client = httpx.Client(timeout=settings.webhook_timeout_seconds, follow_redirects=False)
        self.attempts = 0

    def post(self, payload: dict[str, Any], delivery_id: str) -> None:
        body = orjson.dumps(payload)
        retrying = Retrying(
            stop=stop_after_attempt(self.settings.webhook_attempts),
            wait=wait_exponential(multiplier=self.settings.webhook_backoff_seconds, max=60),
            retry=retry_if_exception(_transient),
            reraise=True,
        )
        self.attempts = 0
        for attempt in retrying:
            with attempt:
                self.attempts += 1
                self._once(body, delivery_id)

    def _once(self, body: bytes, delivery_id: str) -> None:
        headers = signing.headers(self.dest.secret, body, delivery_id)
        try:
            r = self.client.post(self.dest.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"unreachable ({type(exc).__name__})") from None
        if r.status_code == 429 or r.status_code >= 500:
            raise DeliveryError(f"HTTP {r.status_code}")
        if r.status_code >= 300:
            raise DeliveryError(f"HTTP {r.status_code}", transient=False)

    def close(self) -> None:
        self.client.close()


class Destinations:
    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self._known: dict[str, Destination] = {}  # destinations are never edited: safe to keep

    # -- definitions ---------------------------------------------------------------------------
    def create(
        self, name: str, kind: str, url: str, *, purpose: str | None = None, contact: str | None = None, actor: str
    ) -> dict[str, Any]:
        """A new destination; the answer holds its signing secret, shown this once."""
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise CampaignError("name: required text, up to 100 characters")
        if kind not in KINDS:
            raise CampaignError(f"kind: one of {', '.join(KINDS)}")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")) or len(url) > 2000:
            raise CampaignError("url: an http:// or https:// address, up to 2,000 characters")
        if purpose is not None and purpose not in self.rt.taxonomy.names():
            raise CampaignError(f"purpose: unknown purpose {purpose!r}")
        if kind == "ad_audience":
            purpose, contact = "advertising", "none"
        elif kind == "sms":
            purpose, contact = purpose or "marketing.sms", "phone"
        contact = contact or "email"
        if contact not in CONTACTS:
            raise CampaignError(f"contact: one of {', '.join(CONTACTS)}")
        secret = "whsec_" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        with self.rt.store.write() as conn:
            if conn.execute(select(destinations.c.id).where(destinations.c.name == name)).scalar() is not None:
                raise CampaignError(f"a destination named {name!r} exists", 409)
            did = int(
                conn.execute(
                    destinations.insert(),
                    {
                        "name": name.strip(),
                        "kind": kind,
                        "url": url,
                        "purpose": purpose,
                        "contact": contact,
                        "created_ms": now_ms(),
                        "created_by": actor[:100],
                    },
                ).inserted_primary_key[0]
            )
            aad = f"keyring:destination:{did}:1".encode()
            wrapped, kek = self.rt.vault.wrap_with_id(secret.encode(), aad)
            conn.execute(
                keyring.insert(),
                {"kind": f"destination:{did}", "version": 1, "wrapped": wrapped, "kek_id": kek, "created_ms": now_ms()},
            )
            audit.record(conn, actor, "destination.created", target=f"destination:{did}", details={"kind": kind})
        return {
            "name": name.strip(),
            "kind": kind,
            "url": url,
            "purpose": purpose,
            "contact": contact,
            "secret": secret,
        }

    def _from_row(self, row: Any, conn: Any) -> Destination:
        wrapped = conn.execute(
            select(keyring.c.wrapped).where(and_(keyring.c.kind == f"destination:{row['id']}", keyring.c.version == 1))
        ).scalar()
        secret = self.rt.vault.unwrap(wrapped, f"keyring:destination:{row['id']}:1".encode()).decode()
        return Destination(int(row["id"]), row["name"], row["kind"], row["url"], row["purpose"], row["contact"], secret)

    def find(self, name: str | None) -> Destination | None:
        if not name:
            return None
        known = self._known.get(name)
        if known is not None:
            return known
        with self.rt.store.engine.connect() as conn:
            row = conn.execute(select(destinations).where(destinations.c.name == name)).mappings().first()
            found = None if row is None else self._from_row(row, conn)
        if found is not None:
            self._known[name] = found
        return found

    def get(self, name: str) -> Destination:
        found = self.find(name)
        if found is None:
            raise CampaignError(f"no destination named {name!r}", 404)
        return found

    def by_id(self, did: int, conn: Any) -> Destination:
        row = conn.execute(select(destinations).where(destinations.c.id == did)).mappings().first()
        return self._from_row(row, conn)

    def listing(self) -> list[dict[str, Any]]:
        with self.rt.store.engine.connect() as conn:
            rows = conn.execute(select(destinations).order_by(destinations.c.name)).mappings().all()
            dead: dict[int, int] = {}
            for (did,) in conn.execute(select(deliveries.c.destination_id).where(deliveries.c.state == "dead")):
                dead[int(did)] = dead.get(int(did), 0) + 1
        return [
            {
                "name": r["name"],
                "kind": r["kind"],
                "url": r["url"],
                "purpose": r["purpose"],
                "contact": r["contact"],
                "created_ms": r["created_ms"],
                "dead_letters": dead.get(int(r["id"]), 0),
            }
            for r in rows
        ]

    def poster(self, dest: Destination) -> Poster:
        return Poster(dest, self.rt.settings)

    # -- who received what ---------------------------------------------------------------------
    def ref(self, dest_id: int, profile: str) -> str:
        """The pseudonymous id a destination knows a profile by: an HMAC under the suppression key, which
        is never rotated or erased, so an erasure notice can name it after the person is gone."""
        return str(self.rt.vault.contact_hash(f"destination:{dest_id}", profile))[:32]

    def refs(self, dest_id: int, profiles: Iterable[str]) -> dict[str, str]:
        """Computed before a write transaction opens (the first use of the key may have to create it)."""
        return {p: self.ref(dest_id, p) for p in profiles}

    def remember(self, conn: Any, dest_id: int, refs: dict[str, str]) -> None:
        ts = now_ms()
        stmt = self.rt.store.insert(destination_recipients)
        stmt = stmt.on_conflict_do_update(
            index_elements=["destination_id", "subject_id"], set_={"last_ms": stmt.excluded.last_ms}
        )
        rows = [
            {"destination_id": dest_id, "subject_id": p, "ref": ref, "first_ms": ts, "last_ms": ts}
            for p, ref in refs.items()
        ]
        if rows:
            conn.execute(stmt, rows)

    # -- the dead-letter queue -----------------------------------------------------------------
    def dead(
        self,
        conn: Any,
        dest_id: int,
        kind: str,
        *,
        campaign_id: int | None,
        profile: str | None,
        payload: dict[str, Any] | None,
        attempts: int,
        error: str,
    ) -> None:
        """Put a delivery in the dead-letter queue (one row per destination, campaign and profile)."""
        ts = now_ms()
        existing = None
        if profile is not None:
            existing = conn.execute(
                select(deliveries.c.id).where(
                    and_(
                        deliveries.c.destination_id == dest_id,
                        deliveries.c.campaign_id == campaign_id,
                        deliveries.c.subject_id == profile,
                        deliveries.c.state == "dead",
                    )
                )
            ).scalar()
        if existing is not None:
            conn.execute(
                update(deliveries)
                .where(deliveries.c.id == existing)
                .values(attempts=deliveries.c.attempts + attempts, last_error=error[:200], updated_ms=ts)
            )
            return
        conn.execute(
            deliveries.insert(),
            {
                "destination_id": dest_id,
                "kind": kind,
                "campaign_id": campaign_id,
                "subject_id": profile,
                "payload": orjson.dumps(payload).decode() if payload is not None else None,
                "state": "dead",
                "attempts": attempts,
                "last_error": error[:200],
                "created_ms": ts,
                "updated_ms": ts,
            },
        )

    def resolved(self, conn: Any, dest_id: int, campaign_id: int, profiles: list[str], state: str = "replayed") -> None:
        """Messages delivered at last (``replayed``), or decided against this time (``skipped``: consent
        withdrawn, suppressed since): their dead letters are done."""
        for i in range(0, len(profiles), 500):
            conn.execute(
                update(deliveries)
                .where(
                    and_(
                        deliveries.c.destination_id == dest_id,
                        deliveries.c.campaign_id == campaign_id,
                        deliveries.c.subject_id.in_(profiles[i : i + 500]),
                        deliveries.c.state == "dead",
                    )
                )
                .values(state=state, updated_ms=now_ms())
            )

    def dead_letters(self, name: str) -> list[dict[str, Any]]:
        dest = self.get(name)
        from candor.store.schema import campaigns

        with self.rt.store.engine.connect() as conn:
            names = dict(conn.execute(select(campaigns.c.id, campaigns.c.name)).all())
            rows = conn.execute(
                select(deliveries)
                .where(and_(deliveries.c.destination_id == dest.id, deliveries.c.state == "dead"))
                .order_by(deliveries.c.id)
            ).mappings()
            return [
                {
                    "id": int(r["id"]),
                    "kind": r["kind"],
                    "campaign": names.get(r["campaign_id"]) if r["campaign_id"] is not None else None,
                    "profile": r["subject_id"],
                    "attempts": r["attempts"],
                    "last_error": r["last_error"],
                    "created_ms": r["created_ms"],
                    "updated_ms": r["updated_ms"],
                }
                for r in rows
            ]

    def replay(self, name: str, ids: list[int] | None = None, *, actor: str) -> dict[str, Any]:
        """Try dead letters again (all, or ``ids``). Messages are decided and rendered again now."""
        dest = self.get(name)
        with self.rt.store.engine.connect() as conn:
            q = select(deliveries).where(and_(deliveries.c.destination_id == dest.id, deliveries.c.state == "dead"))
            if ids:
                q = q.where(deliveries.c.id.in_(ids))
            rows = [dict(r) for r in conn.execute(q.order_by(deliveries.c.id)).mappings()]
        if ids:
            missing = set(ids) - {int(r["id"]) for r in rows}
            if missing:
                raise CampaignError(f"no dead letter {sorted(missing)[0]} at destination {name!r}", 404)
        with self.rt.store.write() as conn:
            audit.record(conn, actor, "destination.replay", target=f"destination:{dest.id}", details={"n": len(rows)})
        out = {"replayed": len(rows), "delivered": 0, "dead": 0, "skipped": 0}
        by_campaign: dict[int, list[str]] = {}
        for r in rows:
            if r["kind"] == "message" and r["campaign_id"] is not None and r["subject_id"]:
                by_campaign.setdefault(int(r["campaign_id"]), []).append(r["subject_id"])
            elif r["kind"] == "erasure":
                ok = self._deliver_notice(dest, r)
                out["delivered" if ok else "dead"] += 1
            elif r["kind"] == "audience":
                segment = orjson.loads(r["payload"] or "{}").get("segment", "")
                with self.rt.store.write() as conn:
                    conn.execute(update(deliveries).where(deliveries.c.id == r["id"]).values(state="replayed"))
                try:
                    self.rt.campaigns.audiences.export(segment, destination=name, actor=actor)
                    out["delivered"] += 1
                except CampaignError:
                    out["dead"] += 1
        for cid, profiles in by_campaign.items():
            counts = self.rt.campaigns.resend(cid, profiles)
            out["delivered"] += counts.get("sent", 0)
            out["dead"] += counts.get("failed", 0)
            out["skipped"] += sum(n for k, n in counts.items() if k.startswith("skipped:") or k == "already_sent")
        return out

    # -- erasure reaches destinations ----------------------------------------------------------
    def notify_erasure(self, conn: Any, people: list[str], request_id: str) -> int:
        """Inside the erasure's transaction: an erasure notice for each destination that received data
        about these people, naming the ids it received them under. Nothing personal is in a notice."""
        refs: dict[int, list[str]] = {}
        for i in range(0, len(people), 500):
            for did, ref in conn.execute(
                select(destination_recipients.c.destination_id, destination_recipients.c.ref).where(
                    destination_recipients.c.subject_id.in_(people[i : i + 500])
                )
            ):
                refs.setdefault(int(did), []).append(ref)
        ts = now_ms()
        for did, ids in refs.items():
            conn.execute(
                deliveries.insert(),
                {
                    "destination_id": did,
                    "kind": "erasure",
                    "campaign_id": None,
                    "subject_id": None,
                    "payload": orjson.dumps({"type": "erasure", "candorIds": sorted(set(ids)), "at": ts}).decode(),
                    "state": "pending",
                    "attempts": 0,
                    "last_error": None,
                    "created_ms": ts,
                    "updated_ms": ts,
                },
            )
            audit.record(
                conn,
                "system",
                "destination.erasure_notice",
                target=f"destination:{did}",
                details={"request": request_id[:40], "ids": len(set(ids))},
            )
        return len(refs)

    def flush(self) -> dict[str, int]:
        """Send the erasure notices waiting in the outbox; what fails stays in the dead-letter queue."""
        out = {"delivered": 0, "dead": 0}
        with self.rt.store.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(select(deliveries).where(deliveries.c.state == "pending")).mappings()]
            dests = {int(r["destination_id"]): self.by_id(int(r["destination_id"]), conn) for r in rows}
        for r in rows:
            ok = self._deliver_notice(dests[int(r["destination_id"])], r)
            out["delivered" if ok else "dead"] += 1
        return out

    def _deliver_notice(self, dest: Destination, row: dict[str, Any]) -> bool:
        payload = orjson.loads(row["payload"] or "{}")
        payload["id"] = f"erasure-{row['id']}"
        poster = self.poster(dest)
        error = None
        try:
            poster.post(payload, payload["id"])
        except DeliveryError as exc:
            error = str(exc)
        finally:
            poster.close()
        with self.rt.store.write() as conn:
            conn.execute(
                update(deliveries)
                .where(deliveries.c.id == row["id"])
                .values(
                    state="delivered" if error is None else "dead",
                    attempts=deliveries.c.attempts + poster.attempts,
                    last_error=error,
                    updated_ms=now_ms(),
                )
            )
        if error is not None:
            log.warning("an erasure notice to destination %s failed: %s", dest.id, error)
        return error is None
