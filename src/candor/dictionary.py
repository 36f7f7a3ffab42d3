"""The data dictionary: what kind of data each field holds, per source, and how long it is kept.

Every event property, trait and context field may be declared, per source, with a **data category**
(:data:`CATEGORIES`) and a **retention**. Segment's reserved traits and context fields come
pre-declared (:data:`BUILTIN`); a source's own declaration of the same field wins. The category
decides:

- **encryption**: a field of a category with ``sealed=True`` is sealed under the subject's key
  wherever it is nested (only ``behavioural`` stays in clear, for analytics);
- **special categories** (GDPR Art. 9 and 10, CPRA sensitive personal information): kept at
  collection, and used, only for people who opted in to that category (the purpose
  ``sensitive.<category>``, see consent/purposes.py); ``precise_location`` is coarsened to about
  1 km instead of dropped;
- **never stored**: ``credentials`` (passwords, card security codes) are removed at collection;
- **retention**: :func:`retention_rules` is what a retention job reads (see below);
- **access export**: the export's ``categories`` section (rights/export.py) names every category
  held about the person, with its fields and retention;
- **erasure**: every sealed category is erased by crypto-shredding, clear ones with the event rows;
- **records of processing**: :func:`processing_records` lists per category the sources and fields,
  retention and purposes, for the GDPR Art. 30 record.

Interface for the retention job (operations)
--------------------------------------------
``retention_rules(conn)`` returns :class:`RetentionRule` rows: ``(source_id or None for every source,
scope, path, category, days)``, with ``days=None`` meaning "as long as the profile exists". The
fixed periods are :data:`EVENT_RETENTION_DAYS` (events, 13 months), :data:`IP_RETENTION_DAYS` (the
full IP address, 30 days; stored in ``event_ips``, see :mod:`candor.location`) and
:data:`REJECTED_RETENTION_DAYS` (rejected records). ``candor.location.drop_expired_ips(conn, now_ms)``
deletes full IP addresses past their retention.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, select

from candor import audit
from candor.store import Store, now_ms
from candor.store.schema import data_dictionary, sources

DAY_MS = 86_400_000
EVENT_RETENTION_DAYS = 395  # 13 months
IP_RETENTION_DAYS = 30
REJECTED_RETENTION_DAYS = 30
SCOPES = ("traits", "properties", "context")
MAX_PATH = 200
PATH_RE = re.compile(r"[A-Za-z0-9_$@\-]{1,64}(\.[A-Za-z0-9_$@\-]{1,64}){0,7}")


class DictionaryError(ValueError):
    """A bad declaration: the message says which field and what to do. ``status``: HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Category:
    name: str
    title: str
    description: str
    sealed: bool = True  # encrypted under the subject's key (False: clear, for analytics)
    special: bool = False  # GDPR Art. 9/10 or CPRA sensitive: explicit opt-in per category
    never_stored: bool = False  # removed at collection, whatever the policy
    retention_days: int | None = EVENT_RETENTION_DAYS  # None: as long as the profile exists
    law: str = ""

    @property
    def purpose(self) -> str | None:
        """The consent purpose a person grants to opt in to this category (special ones only)."""
        return f"sensitive.{self.name}" if self.special else None


def _c(*args: Any, **kw: Any) -> Category:
    return Category(*args, **kw)


CATEGORIES: dict[str, Category] = {
    c.name: c
    for c in (
        _c("contact", "Contact details", "email, phone, postal address, website", retention_days=None),
        _c("identifier", "Identifiers", "names, user ids, usernames, device ids, IP addresses", retention_days=None),
        _c("demographic", "Demographics", "age, birthday, gender, job title, company", retention_days=None),
        _c("behavioural", "Behaviour", "what someone did: pages, products, clicks", sealed=False),
        _c("financial", "Financial", "bank accounts (IBAN), order values, payment details other than card numbers"),
        _c("location", "Location", "city, region, country, coarse coordinates (about 1 km)"),
        _c(
            "precise_location",
            "Precise location",
            "coordinates finer than about 1 km",
            special=True,
            retention_days=30,
            law="CPRA §1798.140(ae)(1)(C)",
        ),
        _c("health", "Health", "physical or mental health, care, diagnoses", special=True, law="GDPR Art. 9"),
        _c("religion", "Religion or beliefs", "religious or philosophical beliefs", special=True, law="GDPR Art. 9"),
        _c("ethnicity", "Racial or ethnic origin", "racial or ethnic origin", special=True, law="GDPR Art. 9"),
        _c(
            "sexual_orientation",
            "Sex life or sexual orientation",
            "sex life or sexual orientation",
            special=True,
            law="GDPR Art. 9",
        ),
        _c("political_opinion", "Political opinions", "political opinions", special=True, law="GDPR Art. 9"),
        _c("trade_union", "Trade-union membership", "trade-union membership", special=True, law="GDPR Art. 9"),
        _c("biometric", "Biometric data", "fingerprints, face or voice prints", special=True, law="GDPR Art. 9"),
        _c("genetic", "Genetic data", "DNA, genetic test results", special=True, law="GDPR Art. 9"),
        _c(
            "government_id",
            "Government identifiers",
            "social security, passport, driving licence and national id numbers",
            special=True,
            law="CPRA §1798.140(ae)(1)(A)",
        ),
        _c(
            "credentials",
            "Credentials",
            "passwords, card numbers and card security codes: never stored",
            never_stored=True,
            retention_days=0,
            law="PCI DSS 3.3; CPRA §1798.140(ae)(1)(B)",
        ),
        _c(
            "communications",
            "Contents of communications",
            "the text of messages, emails, reviews and comments",
            special=True,
            law="CPRA §1798.140(ae)(1)(D)",
        ),
        _c(
            "children",
            "Children's data",
            "data about children under 16 (13 in the US)",
            special=True,
            law="GDPR Art. 8; COPPA",
        ),
    )
}
SPECIAL = frozenset(c.name for c in CATEGORIES.values() if c.special)
SEALED = frozenset(c.name for c in CATEGORIES.values() if c.sealed)


@dataclass(frozen=True)
class Declaration:
    scope: str  # traits | properties | context
    path: str  # dotted; the last part is the field name
    category: str
    retention_days: int | None
    source_id: int | None = None  # None: built in, for every source
    note: str = ""

    @property
    def name(self) -> str:
        return self.path.rpartition(".")[2]

    def as_dict(self) -> dict[str, Any]:
        cat = CATEGORIES[self.category]
        return {
            "scope": self.scope,
            "path": self.path,
            "category": self.category,
            "retention_days": self.retention_days,
            "special": cat.special,
            "sealed": cat.sealed,
            "builtin": self.source_id is None,
            "note": self.note,
        }


def _b(scope: str, path: str, category: str, days: int | None = -1) -> Declaration:
    retention = CATEGORIES[category].retention_days if days == -1 else days
    return Declaration(scope, path, category, retention)


# Segment's reserved traits (the Identify spec) and context fields, and the properties every source
# treats as personal (events.DEFAULT_PERSONAL_PROPERTIES), pre-declared.
BUILTIN: tuple[Declaration, ...] = (
    *(
        _b("traits", k, c)
        for k, c in (
            ("address", "contact"),
            ("age", "demographic"),
            ("avatar", "identifier"),
            ("birthday", "demographic"),
            ("company", "demographic"),
            ("createdAt", "behavioural"),
            ("description", "demographic"),
            ("email", "contact"),
            ("firstName", "identifier"),
            ("gender", "demographic"),
            ("id", "identifier"),
            ("lastName", "identifier"),
            ("name", "identifier"),
            ("phone", "contact"),
            ("title", "demographic"),
            ("username", "identifier"),
            ("website", "contact"),
        )
    ),
    _b("context", "ip", "identifier", IP_RETENTION_DAYS),
    _b("context", "userAgent", "identifier"),
    _b("context", "device", "identifier"),
    _b("context", "location", "location"),
    _b("context", "page", "behavioural"),
    _b("context", "network", "behavioural"),
    *(
        _b("properties", k, c)
        for k, c in (
            ("email", "contact"),
            ("phone", "contact"),
            ("name", "identifier"),
            ("firstName", "identifier"),
            ("lastName", "identifier"),
            ("first_name", "identifier"),
            ("last_name", "identifier"),
            ("address", "contact"),
            ("birthday", "demographic"),
            ("ip", "identifier"),
            ("url", "behavioural"),
            ("referrer", "behavioural"),
            ("search", "behavioural"),
        )
    ),
)


@dataclass(frozen=True)
class SourceDictionary:
    """Everything the collection path needs to know about one source's declared fields."""

    declarations: tuple[Declaration, ...]

    def by_scope(self, scope: str) -> dict[str, Declaration]:
        """Declarations of a scope by path; a source's own wins over a built-in."""
        out: dict[str, Declaration] = {}
        for d in self.declarations:
            if d.scope == scope and (d.path not in out or d.source_id is not None):
                out[d.path] = d
        return out

    def declared(self, scope: str) -> frozenset[str]:
        """Paths and field names declared in ``scope`` (a declared name counts at any depth)."""
        decl = self.by_scope(scope)
        return frozenset(decl) | frozenset(d.name for d in decl.values())

    def sealed_names(self, scope: str = "properties") -> frozenset[str]:
        return frozenset(d.name for d in self.by_scope(scope).values() if CATEGORIES[d.category].sealed)

    def special_names(self, scope: str) -> dict[str, str]:
        """Field name → special category, for the fields that need an opt-in to be kept."""
        return {
            d.name: d.category
            for d in self.by_scope(scope).values()
            if CATEGORIES[d.category].special and d.category != "precise_location"
        }

    def never_stored_names(self) -> frozenset[str]:
        return frozenset(d.name for d in self.declarations if CATEGORIES[d.category].never_stored)

    def category_of(self, scope: str, path: str) -> str | None:
        decl = self.by_scope(scope)
        d = decl.get(path)
        if d is None:
            name = path.rpartition(".")[2]
            d = next((x for x in decl.values() if x.name == name), None)
        return d.category if d else None


def check_declaration(scope: str, path: str, category: str, retention_days: int | None) -> None:
    if scope not in SCOPES:
        raise DictionaryError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    if not isinstance(path, str) or len(path) > MAX_PATH or not PATH_RE.fullmatch(path):
        raise DictionaryError(
            "path must be a field name or a dotted path (letters, digits, _ - $ @; at most 8 parts of 64 characters)"
        )
    if category not in CATEGORIES:
        raise DictionaryError(f"unknown category {category!r}; one of {', '.join(CATEGORIES)}")
    if retention_days is not None and not 0 <= retention_days <= 36_500:
        raise DictionaryError("retention_days must be between 0 and 36500, or null for the profile's lifetime")


class Dictionary:
    """Declarations in the store (``data_dictionary``), with a per-source cache for collection."""

    CACHE_SECONDS = 5.0

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[int, tuple[float, SourceDictionary]] = {}
        self.generation = 0  # bumped on every change made by this process

    def for_source(self, source_id: int) -> SourceDictionary:
        import time

        hit = self._cache.get(source_id)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        with self.store.engine.connect() as conn:
            own = self._rows(conn, source_id)
        sd = SourceDictionary((*BUILTIN, *own))
        self._cache[source_id] = (now + self.CACHE_SECONDS, sd)
        return sd

    @staticmethod
    def _rows(conn: Any, source_id: int | None) -> list[Declaration]:
        q = select(data_dictionary)
        if source_id is not None:
            q = q.where(data_dictionary.c.source_id == source_id)
        return [
            Declaration(r["scope"], r["path"], r["category"], r["retention_days"], int(r["source_id"]), r["note"] or "")
            for r in conn.execute(q.order_by(data_dictionary.c.scope, data_dictionary.c.path)).mappings()
        ]

    def source_id(self, name: str, conn: Any) -> int:
        sid = conn.execute(select(sources.c.id).where(sources.c.name == name)).scalar()
        if sid is None:
            raise DictionaryError(f"no source named {name!r}", 404)
        return int(sid)

    def list(self, source: str) -> list[dict[str, Any]]:
        """The effective dictionary of a source: its own declarations and the built-in ones."""
        with self.store.engine.connect() as conn:
            sid = self.source_id(source, conn)
            own = self._rows(conn, sid)
        sd = SourceDictionary((*BUILTIN, *own))
        out: list[dict[str, Any]] = []
        for scope in SCOPES:
            out.extend(d.as_dict() for d in sorted(sd.by_scope(scope).values(), key=lambda d: d.path))
        return out

    def declare(
        self,
        source: str,
        scope: str,
        path: str,
        category: str,
        retention_days: int | None = -1,
        *,
        note: str = "",
        actor: str = "cli",
        conn: Any = None,
    ) -> dict[str, Any]:
        """Declare (or re-declare) a field of a source; ``retention_days=-1``: the category's default."""
        if retention_days == -1:
            retention_days = CATEGORIES[category].retention_days if category in CATEGORIES else None
        check_declaration(scope, path, category, retention_days)
        if conn is None:
            with self.store.write() as c:
                return self.declare(source, scope, path, category, retention_days, note=note, actor=actor, conn=c)
        sid = self.source_id(source, conn)
        now = now_ms()
        conn.execute(
            delete(data_dictionary).where(
                and_(
                    data_dictionary.c.source_id == sid,
                    data_dictionary.c.scope == scope,
                    data_dictionary.c.path == path,
                )
            )
        )
        conn.execute(
            data_dictionary.insert(),
            {
                "source_id": sid,
                "scope": scope,
                "path": path,
                "category": category,
                "retention_days": retention_days,
                "note": note[:300],
                "declared_by": actor[:100],
                "updated_ms": now,
            },
        )
        audit.record(
            conn,
            actor,
            "dictionary.declare",
            target=f"source:{source}",
            details={"scope": scope, "path": path, "category": category, "retention_days": retention_days},
        )
        self._cache.pop(sid, None)
        self.generation += 1
        return Declaration(scope, path, category, retention_days, sid, note).as_dict()

    def forget(self, source: str, scope: str, path: str, *, actor: str = "cli") -> bool:
        with self.store.write() as conn:
            sid = self.source_id(source, conn)
            n = conn.execute(
                delete(data_dictionary).where(
                    and_(
                        data_dictionary.c.source_id == sid,
                        data_dictionary.c.scope == scope,
                        data_dictionary.c.path == path,
                    )
                )
            ).rowcount
            if n:
                audit.record(
                    conn, actor, "dictionary.forget", target=f"source:{source}", details={"scope": scope, "path": path}
                )
        self._cache.pop(sid, None)
        self.generation += 1
        return bool(n)

    def special_traits(self, conn: Any = None) -> dict[str, str]:
        """Trait name → special category, over every source's declarations (what segments must respect)."""
        if conn is None:
            with self.store.engine.connect() as c:
                return self.special_traits(c)
        out: dict[str, str] = {}
        for d in (*BUILTIN, *self._rows(conn, None)):
            if d.scope == "traits" and CATEGORIES[d.category].special:
                out[d.path.partition(".")[0]] = d.category
        return out

    def special_in_use(self) -> set[str]:
        """Special categories some source declares (plus precise location, which any event may carry):
        the opt-ins worth offering people."""
        with self.store.engine.connect() as conn:
            rows = self._rows(conn, None)
        return {"precise_location"} | {d.category for d in (*BUILTIN, *rows) if CATEGORIES[d.category].special}

    def invalidate(self) -> None:
        self._cache.clear()
        self.generation += 1


@dataclass(frozen=True)
class RetentionRule:
    source_id: int | None  # None: every source
    scope: str
    path: str
    category: str
    days: int | None  # None: as long as the profile exists


def retention_rules(conn: Any) -> list[RetentionRule]:
    """Every declared retention, built-in ones first (``source_id=None``), for the retention job."""
    out = [RetentionRule(None, d.scope, d.path, d.category, d.retention_days) for d in BUILTIN]
    out.extend(
        RetentionRule(d.source_id, d.scope, d.path, d.category, d.retention_days) for d in Dictionary._rows(conn, None)
    )
    return out


def processing_records(conn: Any, purposes: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Per data category: sources and fields declared, retention, special or not, the purposes that may use
    it and the condition (for the GDPR Art. 30 records of processing). Aggregates only, no values."""
    names = dict(conn.execute(select(sources.c.id, sources.c.name)).all())
    decl = [*BUILTIN, *Dictionary._rows(conn, None)]
    purposes = list(purposes)
    out = []
    for cat in CATEGORIES.values():
        mine = [d for d in decl if d.category == cat.name]
        srcs = sorted({"(every source)" if d.source_id is None else names.get(d.source_id, "?") for d in mine})
        days = sorted({d.retention_days for d in mine if d.retention_days is not None})
        out.append(
            {
                "category": cat.name,
                "title": cat.title,
                "special": cat.special,
                "sealed": cat.sealed,
                "never_stored": cat.never_stored,
                "law": cat.law,
                "fields": sorted({f"{d.scope}.{d.path}" for d in mine}),
                "sources": srcs,
                "retention_days": days or ([cat.retention_days] if cat.retention_days is not None else []),
                "purposes": [] if cat.never_stored else [p for p in purposes if not p.startswith("sensitive.")],
                "condition": (
                    "never stored"
                    if cat.never_stored
                    else f"explicit opt-in ({cat.purpose})"
                    if cat.special
                    else "the purpose's lawful basis"
                ),
            }
        )
    return out
