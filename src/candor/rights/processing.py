"""Carrying out verified requests: access exports, erasure, rectification, restriction, objections.

The person is found through the identifier in the request, then widened to the whole unified
profile (every subject in it). A request about someone we do not know completes like any other,
with "no data found" in its receipt and the same wording towards the requester.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select, update

from candor import audit
from candor.rights.erasure import Erasure
from candor.rights.export import build_export
from candor.rights.requests import Requests, RightsError
from candor.store import now_ms
from candor.store.schema import download_links, events, privacy_requests, sources, subjects
from candor.vault import Vault, secret_hash

log = logging.getLogger("candor.rights")
LINK_TTL_MS = 7 * 86_400_000
PRIVACY_SOURCE = "privacy-requests"

OBJECTIONS = {
    "objection_marketing": ("marketing.email", "marketing.sms", "marketing.phone", "marketing.post", "marketing.push"),
    "objection_profiling": ("profiling", "personalization"),
    "opt_out_sale": ("sale_sharing", "advertising"),
    "limit_sensitive": ("sensitive",),
}


class Processor:
    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self.requests: Requests = rt.requests
        self.vault: Vault = rt.vault
        self.erasure = Erasure(rt)
        self.exports_dir = Path(rt.settings.data_dir) / "exports"
        self._tokens: dict[str, str] = {}  # request id -> its download token, for the page that asked

    def people(self, request_id: str, *, include_erased: bool = False) -> list[str]:
        """Every subject of the unified profile the request's identifier belongs to (or none).

        ``include_erased`` also returns subjects shredded but not yet purged (a resumed erasure).
        """
        private = self.requests.private(request_id)
        if not private:
            return []
        sid = private.get("subject") or self.rt.consent.subject_for(private["id_type"], private["value"])
        if sid is None:
            return []
        with self.rt.store.engine.connect() as conn:
            members = self.rt.identity.members(sid, conn)
            alive = set(
                conn.execute(
                    select(subjects.c.subject_id).where(
                        subjects.c.subject_id.in_(members),
                        subjects.c.state.in_(
                            ("active", "restricted", "erased") if include_erased else ("active", "restricted")
                        ),
                    )
                ).scalars()
            )
        return [m for m in members if m in alive]

    def process(self, request_id: str, *, actor: str = "system") -> dict[str, Any]:
        req = self.requests.get(request_id)
        if req.state not in ("verified", "in_progress"):
            raise RightsError(f"the request is {req.state}; only a verified request can be processed", 409, "conflict")
        started = time.perf_counter()
        with self.rt.store.write() as conn:
            conn.execute(
                update(privacy_requests).where(privacy_requests.c.id == request_id).values(state="in_progress")
            )
            audit.record(conn, actor, "rights.in_progress", target=f"request:{request_id}", details={"type": req.type})
        people = self.people(request_id, include_erased=req.type == "erasure")
        outcome: dict[str, Any] = {"found": bool(people), "subjects": len(people)}
        final = "completed"
        message = "We have completed your request."
        if people:
            if req.type in ("access", "portability"):
                outcome.update(self._access(request_id, people, actor))
                message = (
                    "Your data is ready. Download it within 7 days (the link works once): "
                    f"{self.rt.settings.public_url.rstrip('/')}/v1/privacy-requests/download/{outcome.pop('token')}"
                )
            elif req.type == "erasure":
                stores = self.erasure.erase(people, request_id=request_id, actor=actor)
                outcome["stores"] = stores
                if any(v.get("held") for v in stores.values() if isinstance(v, dict)):
                    final = "completed_with_exceptions"
                    message = "We erased your data, except what the law obliges us to keep for now."
                else:
                    message = "We erased your data."
            elif req.type == "rectification":
                outcome.update(self._rectify(request_id, people, actor))
            elif req.type == "restriction":
                outcome.update(self._restrict(people, actor))
                message = "We have stopped using your data; we keep it stored until the restriction is lifted."
            else:
                outcome.update(self._object(req.type, people, actor))
        else:
            outcome["result"] = "no data found"
        outcome["seconds"] = round(time.perf_counter() - started, 3)
        with self.rt.store.write() as conn:
            conn.execute(
                update(privacy_requests)
                .where(privacy_requests.c.id == request_id)
                .values(state=final, completed_ms=now_ms(), outcome=orjson.dumps(outcome).decode())
            )
            audit.record(
                conn,
                actor,
                "rights.completed",
                target=f"request:{request_id}",
                details={"type": req.type, "state": final, "found": bool(people)},
            )
        self.requests.notify(request_id, "Your privacy request", message)
        if req.type not in ("access", "portability"):
            self.requests.close(request_id)
        return outcome

    # -- access --------------------------------------------------------------------------------
    def export_bytes(self, people: list[str], request_id: str) -> bytes:
        return build_export(self.rt, people, request_id)

    def _access(self, request_id: str, people: list[str], actor: str) -> dict[str, Any]:
        data = self.export_bytes(people, request_id)
        owner = people[0]
        self.exports_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"{owner}-{request_id}.zip.sealed"
        # sealed under the person's own key: erasing them later makes the file unreadable too
        sealed = self.vault.seal(owner, data)
        tmp = self.exports_dir / (name + ".tmp")
        tmp.write_bytes(sealed)
        tmp.replace(self.exports_dir / name)
        token = secrets.token_urlsafe(32)
        with self.rt.store.write() as conn:
            conn.execute(
                download_links.insert(),
                {
                    "token_hash": secret_hash(token),
                    "request_id": request_id,
                    "file": name,
                    "expires_ms": now_ms() + LINK_TTL_MS,
                    "used_ms": None,
                },
            )
            audit.record(conn, actor, "rights.export_ready", subject_id=owner, target=f"request:{request_id}")
        self._tokens[request_id] = token
        while len(self._tokens) > 1000:  # only the page that asked collects it; never grow without bound
            self._tokens.pop(next(iter(self._tokens)))
        return {"bytes": len(data), "token": token}

    def last_token(self, request_id: str) -> str | None:
        """The download token of an access request processed in this process (once)."""
        return self._tokens.pop(request_id, None)

    def download(self, token: str) -> tuple[str, bytes]:
        """The export behind a single-use link; the link is spent whether or not the file is readable."""
        h = secret_hash(token)
        with self.rt.store.write() as conn:
            row = conn.execute(select(download_links).where(download_links.c.token_hash == h)).mappings().first()
            if row is None or row["used_ms"] is not None or row["expires_ms"] < now_ms():
                raise RightsError("this link is not valid (used, expired or mistyped)", 404, "not_found")
            conn.execute(update(download_links).where(download_links.c.token_hash == h).values(used_ms=now_ms()))
            audit.record(conn, "subject", "rights.downloaded", target=f"request:{row['request_id']}")
        path = self.exports_dir / row["file"]
        owner = row["file"].split("-", 1)[0]
        try:
            data = self.vault.open(owner, path.read_bytes())
        except Exception as exc:  # noqa: BLE001 - erased since, or the file is gone: the same answer
            log.info("export unavailable: %s", type(exc).__name__)
            raise RightsError("this export is no longer available", 410, "gone") from None
        return f"candor-data-{row['request_id'][:8]}.zip", data

    # -- rectification, restriction, objections ------------------------------------------------
    def source_id(self, name: str = PRIVACY_SOURCE) -> int:
        """A built-in source (``privacy-requests``, ``preference-center``), created on first use."""
        query = select(sources.c.id).where(sources.c.name == name)
        with self.rt.store.engine.connect() as conn:
            sid = conn.execute(query).scalar()
        if sid is None:
            with contextlib.suppress(ValueError):  # created meanwhile by another request
                self.rt.directory.create_source(name)
            with self.rt.store.engine.connect() as conn:
                sid = conn.execute(query).scalar()
        return int(sid)

    def add_traits(self, subject_id: str, traits: dict[str, Any], *, source: str, message_id: str) -> None:
        """Record traits the person gave us directly, as an identify from a built-in source."""
        source_id = self.source_id(source)
        ts = now_ms()
        with self.rt.store.write() as conn:
            conn.execute(
                self.rt.store.insert_ignore(events),
                {
                    "source_id": source_id,
                    "message_id": message_id[:200],
                    "type": "identify",
                    "event": None,
                    "subject_id": subject_id,
                    "user_pid": None,
                    "anon_pid": None,
                    "ts_ms": ts,
                    "received_ms": ts,
                    "properties": "{}",
                    "context": "{}",
                    "sealed": self.vault.seal(subject_id, orjson.dumps({"traits": traits})),
                },
            )

    def _rectify(self, request_id: str, people: list[str], actor: str) -> dict[str, Any]:
        traits = self.requests.private(request_id).get("details", {}).get("traits") or {}
        if not isinstance(traits, dict) or not traits:
            return {"rectified": []}
        owner = people[0]
        self.add_traits(owner, traits, source=PRIVACY_SOURCE, message_id=f"rectification:{request_id}")
        with self.rt.store.write() as conn:
            audit.record(
                conn,
                actor,
                "rights.rectified",
                subject_id=owner,
                target=f"request:{request_id}",
                details={"fields": sorted(traits)},
            )
        return {"rectified": sorted(traits)}

    def _restrict(self, people: list[str], actor: str) -> dict[str, Any]:
        with self.rt.store.write() as conn:
            conn.execute(update(subjects).where(subjects.c.subject_id.in_(people)).values(state="restricted"))
            for sid in people:
                audit.record(conn, actor, "rights.restricted", subject_id=sid)
        for sid in people:
            self.rt.consent.invalidate(sid)
        return {"restricted": len(people)}

    def lift_restriction(self, people: list[str], actor: str) -> None:
        with self.rt.store.write() as conn:
            conn.execute(
                update(subjects)
                .where(subjects.c.subject_id.in_(people), subjects.c.state == "restricted")
                .values(state="active")
            )
            for sid in people:
                audit.record(conn, actor, "rights.restriction_lifted", subject_id=sid)
        for sid in people:
            self.rt.consent.invalidate(sid)

    def _object(self, type_: str, people: list[str], actor: str) -> dict[str, Any]:
        known = set(self.rt.taxonomy.names())
        denied = frozenset(p for p in OBJECTIONS[type_] if p in known)
        with self.rt.store.write() as conn:
            for sid in people:
                self.rt.consent.record(
                    conn,
                    sid,
                    denied=denied,
                    source="rights_request",
                    actor=actor,
                    objection=type_.startswith("objection"),
                )
        for sid in people:
            self.rt.consent.invalidate(sid)
        return {"denied": sorted(denied)}
