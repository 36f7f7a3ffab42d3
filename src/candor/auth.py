"""Principals, roles and scopes; every route declares what it needs.

Two kinds of principal reach the API:

* a **source**, by its write key (HTTP Basic user name, or ``writeKey`` in the body): may only send
  events (``events:write``);
* a **staff member**, by an API token (``Authorization: Bearer ...``) that carries one role.

Secrets are stored as SHA-256 hashes only. A route declares its need with one of the dependency
classes below (``Require``, ``Public``, ``SourceAuth``); the authorization-matrix test reads those
declarations from the route table, so a new route without one fails the suite.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from fastapi import Request
from sqlalchemy import select, update

from candor import audit
from candor.http import JSON, error
from candor.security import RateLimited
from candor.store import Store, now_ms
from candor.store.schema import sources, tokens, users
from candor.vault import secret_hash

SCOPES: dict[str, str] = {
    "events:write": "send events to the collection API (source write keys only)",
    "stats:read": "read collection statistics",
    "profiles:read": "read profiles with personal values masked",
    "pii:read": "see personal values in plaintext (each read is recorded)",
    "consent:read": "read consent state, decisions and proof",
    "consent:write": "record consent on behalf of a subject",
    "rights:manage": "process data-subject requests",
    "identity:write": "split and merge profiles, decide the identity review queue",
    "profiles:export": "export every profile with its identities and traits in plaintext",
    "segments:write": "create and change segments",
    "campaigns:send": "create and send campaigns",
    "insights:read": "read aggregate insights",
    "audit:read": "read and verify the audit log",
    "settings:write": "change sources, tokens, purposes, notices and retention",
    "privacy:read": "read the data dictionary and the privacy inbox (field names and counts, never values)",
    "privacy:write": "declare data categories and retention, set detection policies, decide the privacy inbox",
    "loyalty:read": "read loyalty members, balances, offers and value statements",
    "loyalty:write": "enrol and remove members, redeem points, run expiry, manage value-exchange offers",
    "recommendations:read": "read recommendations and next-best-action decisions for one person (consent-gated)",
}

ROLES: dict[str, frozenset[str]] = {
    "owner": frozenset(SCOPES) - {"events:write"},  # the only role with profiles:export
    "privacy_officer": frozenset(
        {
            "stats:read",
            "profiles:read",
            "pii:read",
            "consent:read",
            "consent:write",
            "rights:manage",
            "identity:write",
            "audit:read",
            "privacy:read",
            "privacy:write",
            "loyalty:read",
        }
    ),
    "marketer": frozenset(
        {
            "stats:read",
            "profiles:read",
            "consent:read",
            "segments:write",
            "campaigns:send",
            "insights:read",
            "loyalty:read",
            "loyalty:write",
            "recommendations:read",
        }
    ),
    "analyst": frozenset({"stats:read", "insights:read"}),
    "support": frozenset({"profiles:read", "consent:read", "loyalty:read"}),
}


class AuthError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> JSON:
        headers = {"WWW-Authenticate": 'Basic realm="candor"'} if self.status == 401 else None
        return error(self.status, self.code, self.message, headers)


@dataclass(frozen=True)
class SourceInfo:
    id: int
    name: str
    strict: bool
    personal_properties: frozenset[str]


@dataclass(frozen=True)
class Staff:
    token_id: int
    name: str
    role: str
    scopes: frozenset[str]

    def can(self, scope: str) -> bool:
        return scope in self.scopes


_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("candor: a password nobody has")


def new_write_key() -> str:
    return "wk_" + secrets.token_urlsafe(24)


def new_api_token() -> str:
    return "cnd_" + secrets.token_urlsafe(32)


class Directory:
    """Looks up sources and tokens by secret, with a short cache so revocation is felt quickly."""

    TTL = 5.0

    def __init__(self, store: Store) -> None:
        self.store = store
        self._sources: dict[str, tuple[float, SourceInfo | None]] = {}
        self._staff: dict[str, tuple[float, Staff | None]] = {}
        self._lock = threading.Lock()

    # -- management (CLI and admin API) --------------------------------------------------------
    def create_source(
        self, name: str, strict: bool = False, personal: list[str] | None = None, actor: str = "cli"
    ) -> str:
        if not name or len(name) > 200:
            raise ValueError("a source name must have 1 to 200 characters")
        key = new_write_key()
        with self.store.write() as conn:
            exists = conn.execute(select(sources.c.id).where(sources.c.name == name)).scalar()
            if exists is not None:
                raise ValueError(f"a source named {name!r} already exists")
            audit.record(conn, actor, "source.create", target=f"source:{name}", details={"strict": strict})
            conn.execute(
                sources.insert(),
                {
                    "name": name,
                    "write_key_hash": secret_hash(key),
                    "strict": strict,
                    "personal_properties": orjson.dumps(sorted(set(personal or []))).decode(),
                    "created_ms": now_ms(),
                },
            )
        return key

    def reset_write_key(self, name: str, actor: str = "cli") -> str:
        """Give an existing source a new write key (the old one stops working at once)."""
        key = new_write_key()
        with self.store.write() as conn:
            audit.record(conn, actor, "source.rotate_write_key", target=f"source:{name}")
            res = conn.execute(update(sources).where(sources.c.name == name).values(write_key_hash=secret_hash(key)))
        if not res.rowcount:
            raise ValueError(f"no source named {name!r}")
        with self._lock:
            self._sources.clear()
        return key

    # -- console users -------------------------------------------------------------------------
    def create_user(self, username: str, role: str, password: str, actor: str = "cli") -> int:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
        if not 3 <= len(username) <= 100 or not username.isprintable() or " " in username:
            raise ValueError("a user name has 3 to 100 printable characters and no spaces")
        if len(password) < 12:
            raise ValueError("a password needs at least 12 characters")
        with self.store.write() as conn:
            if conn.execute(select(users.c.id).where(users.c.username == username)).scalar() is not None:
                raise ValueError(f"a user named {username!r} already exists")
            uid = conn.execute(
                users.insert().returning(users.c.id),
                {"username": username, "password_hash": _hasher.hash(password), "role": role, "created_ms": now_ms()},
            ).scalar_one()
            audit.record(conn, actor, "user.create", target=f"user:{uid}", details={"role": role})
        return int(uid)

    def login(self, username: str, password: str, ttl_hours: float = 12.0) -> tuple[str, int, str] | None:
        """A session token (token, expiry, role) for a correct user name and password, else None.

        An unknown user costs the same argon2 verification as a known one, so timing does not tell
        which user names exist.
        """
        with self.store.engine.connect() as conn:
            row = conn.execute(
                select(users.c.id, users.c.password_hash, users.c.role).where(
                    users.c.username == username[:100], users.c.disabled_ms.is_(None)
                )
            ).first()
        try:
            _hasher.verify(row[1] if row else _DUMMY_HASH, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if row is None:
            return None
        token = self.create_token(f"session:{username[:80]}", row[2], ttl_hours / 24, actor=f"user:{row[0]}")
        return token, now_ms() + int(ttl_hours * 3_600_000), row[2]

    def revoke_token_value(self, token: str, actor: str) -> bool:
        with self.store.write() as conn:
            res = conn.execute(
                update(tokens)
                .where(tokens.c.token_hash == secret_hash(token), tokens.c.revoked_ms.is_(None))
                .values(revoked_ms=now_ms())
            )
            if res.rowcount:
                audit.record(conn, actor, "token.revoke", details={"reason": "logout"})
        with self._lock:
            self._staff.clear()
        return bool(res.rowcount)

    def list_sources(self) -> list[dict[str, Any]]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(sources).order_by(sources.c.id)).mappings().all()
        return [
            {
                "id": r["id"],
                "name": r["name"],
                "strict": bool(r["strict"]),
                "personal_properties": orjson.loads(r["personal_properties"]),
                "created_ms": r["created_ms"],
            }
            for r in rows
        ]

    def create_token(self, name: str, role: str, ttl_days: float | None = None, actor: str = "cli") -> str:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
        if ttl_days is not None and ttl_days <= 0:
            raise ValueError("--ttl-days must be positive")
        token = new_api_token()
        created = now_ms()
        expires = created + int(ttl_days * 86_400_000) if ttl_days else None
        with self.store.write() as conn:
            audit.record(conn, actor, "token.create", target=f"role:{role}", details={"name": name[:100]})
            conn.execute(
                tokens.insert(),
                {
                    "name": name,
                    "token_hash": secret_hash(token),
                    "role": role,
                    "created_ms": created,
                    "expires_ms": expires,
                },
            )
        return token

    def list_tokens(self) -> list[dict[str, Any]]:
        with self.store.engine.connect() as conn:
            rows = (
                conn.execute(
                    select(
                        tokens.c.id,
                        tokens.c.name,
                        tokens.c.role,
                        tokens.c.created_ms,
                        tokens.c.expires_ms,
                        tokens.c.revoked_ms,
                        tokens.c.last_used_ms,
                    ).order_by(tokens.c.id)
                )
                .mappings()
                .all()
            )
        return [dict(r) for r in rows]

    def revoke_token(self, token_id: int, actor: str = "cli") -> bool:
        with self.store.write() as conn:
            res = conn.execute(
                update(tokens).where(tokens.c.id == token_id, tokens.c.revoked_ms.is_(None)).values(revoked_ms=now_ms())
            )
            if res.rowcount:
                audit.record(conn, actor, "token.revoke", target=f"token:{token_id}")
        with self._lock:
            self._staff.clear()
        return bool(res.rowcount)

    # -- lookups -------------------------------------------------------------------------------
    def source_for_key(self, write_key: str) -> SourceInfo | None:
        h = secret_hash(write_key)
        now = time.monotonic()
        hit = self._sources.get(h)
        if hit is not None and hit[0] > now:
            return hit[1]
        with self.store.engine.connect() as conn:
            row = (
                conn.execute(select(sources).where(sources.c.write_key_hash == h, sources.c.disabled_ms.is_(None)))
                .mappings()
                .first()
            )
        info = None
        if row is not None:
            info = SourceInfo(
                id=row["id"],
                name=row["name"],
                strict=bool(row["strict"]),
                personal_properties=frozenset(orjson.loads(row["personal_properties"])),
            )
        with self._lock:
            if len(self._sources) > 10_000:
                self._sources.clear()
            self._sources[h] = (now + (60.0 if info else 1.0), info)
        return info

    def staff_for_token(self, token: str) -> Staff | None:
        h = secret_hash(token)
        now = time.monotonic()
        hit = self._staff.get(h)
        if hit is not None and hit[0] > now:
            return hit[1]
        with self.store.engine.connect() as conn:
            row = conn.execute(select(tokens).where(tokens.c.token_hash == h)).mappings().first()
        staff = None
        ms = now_ms()
        if (
            row is not None
            and row["revoked_ms"] is None
            and (row["expires_ms"] is None or row["expires_ms"] > ms)
            and row["role"] in ROLES
        ):
            staff = Staff(row["id"], row["name"], row["role"], ROLES[row["role"]])
        with self._lock:
            if len(self._staff) > 10_000:
                self._staff.clear()
            self._staff[h] = (now + self.TTL, staff)
        return staff


def basic_username(header: str | None) -> str | None:
    """The user name of an HTTP Basic ``Authorization`` header (Segment puts the write key there)."""
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.split(":", 1)[0] or None


def bearer_token(header: str | None) -> str | None:
    if not header or header[:7].lower() != "bearer ":
        return None
    return header[7:].strip() or None


# -- route declarations ------------------------------------------------------------------------
class Public:
    """Declares a route that anyone may call (health, metrics, public documents)."""

    scope: str | None = None

    async def __call__(self) -> None:
        return None


class SourceAuth:
    """Declares a collection route: a source write key is checked by the handler (it may be in
    the body, as Segment allows)."""

    scope = "events:write"

    async def __call__(self) -> None:
        return None


class SessionAuth:
    """Declares a server-rendered page behind a browser session cookie: the customer's own
    (``kind="preferences"``, from a signed link) or staff's (``kind="console"``, after sign-in),
    with the scope the page needs. The page handler checks the cookie and its CSRF token; without a
    valid session a page answers 401 or redirects to the sign-in page (303)."""

    def __init__(self, kind: str, scope: str | None = None) -> None:
        if kind not in ("preferences", "console"):
            raise ValueError(f"unknown session kind {kind!r}")
        if scope is not None and scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}")
        self.kind = kind
        self.scope = scope

    async def __call__(self) -> None:
        return None


class Require:
    """Declares and enforces that the caller is staff holding ``scope`` (any staff when None)."""

    def __init__(self, scope: str | None) -> None:
        if scope is not None and scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}")
        self.scope = scope

    async def __call__(self, request: Request) -> Staff:
        rt = request.app.state.candor
        directory: Directory = rt.directory
        if request.client:
            wait = rt.limits.exceeded("auth_failure_ip", request.client.host)
            if wait is not None:
                raise RateLimited("auth_failure_ip", wait)
        header = request.headers.get("authorization")
        token = bearer_token(header)
        if token is None:
            raise AuthError(401, "unauthenticated", "send an API token as 'Authorization: Bearer <token>'")
        staff = directory.staff_for_token(token)
        if staff is None:
            raise AuthError(401, "invalid_token", "the API token is unknown, expired or revoked")
        rt.limits.hit("staff_token", str(staff.token_id))
        if self.scope is not None and not staff.can(self.scope):
            raise AuthError(403, "forbidden", f"this token's role ({staff.role}) lacks the scope {self.scope}")
        request.state.staff = staff
        request.state.token = token
        return staff
