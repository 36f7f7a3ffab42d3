"""The consent ledger (append-only), notices, and the one decision every use goes through.

``Consent.can_use(subject_id, purpose)`` answers yes or no with reasons and the ledger records that
prove it. Segments, campaigns, insights, recommendations and exports call it; nothing reads personal
data for a purpose any other way.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import and_, bindparam, func, select
from sqlalchemy.sql.elements import BindParameter

from candor import audit, normalize
from candor.consent.purposes import SENSITIVE_CATEGORIES, Taxonomy, UnknownPurpose
from candor.consent.resolver import Context, Decision, Record, jurisdiction_of, resolve
from candor.store import Store, now_ms
from candor.store.schema import consent_records, identifiers, notices, profile_subjects, subjects
from candor.vault import Vault

SOURCES = (
    "banner",
    "preference_center",
    "api",
    "import",
    "tcf",
    "gpp",
    "gpc",
    "email_unsubscribe",
    "sms_stop",
    "email_feedback",
    "rights_request",
    "segment_event",
)
UI_ACTIONS = ("accept_all", "reject_all", "custom")
DAY_MS = 86_400_000


class ConsentError(ValueError):
    """Bad consent input: the message says what and where. ``status`` is the HTTP status to use."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Notice:
    notice_id: str
    version: int
    language: str
    sha256: str
    requires_reconsent: bool
    text: str


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Consent:
    CACHE_SECONDS = 1.0  # other processes' records are seen within this time; this process's at once

    def __init__(
        self, store: Store, vault: Vault, taxonomy: Taxonomy, *, default_jurisdiction: str = "EU", ttl_days: int = 395
    ) -> None:
        self.store = store
        self.vault = vault
        self.taxonomy = taxonomy
        self.default_jurisdiction = default_jurisdiction
        self.ttl_ms = ttl_days * DAY_MS
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, list[Record], bool]] = {}
        self._reconsent: tuple[float, dict[str, int]] = (0.0, {})
        # decisions already made: subject → purpose → (monotonic expiry, valid-until ms, decision)
        self._memo: dict[str, dict[str, tuple[float, int, Decision]]] = {}

    # -- notices -------------------------------------------------------------------------------
    def add_notice(
        self,
        notice_id: str,
        version: int,
        language: str,
        text: str,
        *,
        requires_reconsent: bool = False,
        actor: str = "cli",
    ) -> Notice:
        if not notice_id or len(notice_id) > 100 or version < 1 or not language or len(language) > 20 or not text:
            raise ConsentError("a notice needs an id (≤100 chars), a version ≥ 1, a language and a text")
        sha = text_sha256(text)
        with self.store.write() as conn:
            exists = conn.execute(
                select(notices.c.sha256).where(
                    and_(notices.c.notice_id == notice_id, notices.c.version == version, notices.c.language == language)
                )
            ).scalar()
            if exists is not None:
                raise ConsentError(
                    f"notice {notice_id} version {version} ({language}) already exists; "
                    "notices are never edited, add a new version",
                    409,
                )
            conn.execute(
                notices.insert(),
                {
                    "notice_id": notice_id,
                    "version": version,
                    "language": language,
                    "text": text,
                    "sha256": sha,
                    "requires_reconsent": requires_reconsent,
                    "created_ms": now_ms(),
                },
            )
            audit.record(
                conn,
                actor,
                "notice.add",
                target=f"notice:{notice_id}:{version}:{language}",
                details={"sha256": sha, "requires_reconsent": requires_reconsent},
            )
        self._reconsent = (0.0, {})
        self.invalidate()  # a notice that requires re-consent changes decisions at once
        return Notice(notice_id, version, language, sha, requires_reconsent, text)

    def notice(self, notice_id: str, version: int | None = None, language: str = "en") -> Notice | None:
        q = select(notices).where(and_(notices.c.notice_id == notice_id, notices.c.language == language))
        q = (
            q.where(notices.c.version == version)
            if version is not None
            else q.order_by(notices.c.version.desc()).limit(1)
        )
        with self.store.engine.connect() as conn:
            row = conn.execute(q).mappings().first()
        if row is None:
            return None
        return Notice(
            row["notice_id"],
            row["version"],
            row["language"],
            row["sha256"],
            bool(row["requires_reconsent"]),
            row["text"],
        )

    def list_notices(self) -> list[dict[str, Any]]:
        with self.store.engine.connect() as conn:
            rows = (
                conn.execute(
                    select(
                        notices.c.notice_id,
                        notices.c.version,
                        notices.c.language,
                        notices.c.sha256,
                        notices.c.requires_reconsent,
                        notices.c.created_ms,
                    ).order_by(notices.c.notice_id, notices.c.version, notices.c.language)
                )
                .mappings()
                .all()
            )
        return [dict(r) for r in rows]

    def reconsent_from(self, conn: Any = None) -> dict[str, int]:
        at, value = self._reconsent
        if time.monotonic() - at < self.CACHE_SECONDS:
            return value
        if conn is None:
            with self.store.engine.connect() as c:
                return self._load_reconsent(c)
        return self._load_reconsent(conn)

    def _load_reconsent(self, conn: Any) -> dict[str, int]:
        rows = conn.execute(
            select(notices.c.notice_id, func.max(notices.c.version))
            .where(notices.c.requires_reconsent.is_(True))
            .group_by(notices.c.notice_id)
        ).all()
        value = {nid: int(v) for nid, v in rows}
        self._reconsent = (time.monotonic(), value)
        return value

    # -- subjects ------------------------------------------------------------------------------
    def subject_for(self, id_type: str, value: str) -> str | None:
        """The subject of a plaintext identifier (userId, anonymousId, email, phone), or None."""
        norm = {"email": normalize.email, "phone": normalize.phone}.get(id_type, normalize.text_id)(value)
        if norm is None:
            return None
        pids = self.vault.all_pseudonyms(id_type, norm)
        with self.store.engine.connect() as conn:
            return conn.execute(
                select(identifiers.c.subject_id)
                .where(and_(identifiers.c.id_type == id_type, identifiers.c.pseudonym.in_(pids)))
                .limit(1)
            ).scalar()

    def ensure_subject(self, conn: Any, id_type: str, value: str) -> tuple[str, str]:
        """Subject and pseudonym for a first-party id (userId / anonymousId), created if new."""
        if id_type not in ("user_id", "anonymous_id"):
            raise ConsentError(f"a new person can only be created from a userId or anonymousId, not {id_type}")
        norm = normalize.text_id(value)
        if norm is None:
            raise ConsentError(f"{id_type} is missing or a placeholder value")
        pids = self.vault.all_pseudonyms(id_type, norm)
        sid = conn.execute(
            select(identifiers.c.subject_id)
            .where(and_(identifiers.c.id_type == id_type, identifiers.c.pseudonym.in_(pids)))
            .limit(1)
        ).scalar()
        if sid is None:
            sid, _ = self.vault.new_subject(conn)
            conn.execute(
                self.store.insert_ignore(identifiers),
                {
                    "id_type": id_type,
                    "pseudonym": pids[0],
                    "hmac_version": self.vault.hmac_version,
                    "subject_id": sid,
                    "first_seen_ms": now_ms(),
                },
            )
        return sid, pids[0]

    # -- recording -----------------------------------------------------------------------------
    def check_purposes(self, names: list[str] | set[str] | frozenset[str]) -> None:
        for n in names:
            try:
                self.taxonomy.get(n)
            except UnknownPurpose as exc:
                if n != "marketing":  # "marketing" in an objection means every marketing channel
                    raise ConsentError(str(exc)) from None

    def record(
        self,
        conn: Any,
        subject_id: str,
        *,
        granted: set[str] | frozenset[str] = frozenset(),
        denied: set[str] | frozenset[str] = frozenset(),
        source: str,
        actor: str,
        ts_ms: int | None = None,
        jurisdiction: str | None = None,
        notice_id: str | None = None,
        notice_version: int | None = None,
        language: str = "en",
        ui_action: str | None = None,
        raw_signal: str | None = None,
        expires_ms: int | None = None,
        confirmed: bool = False,
        objection: bool = False,
        id_type: str | None = None,
        pseudonym: str | None = None,
        message_id: str | None = None,
    ) -> int:
        """Append one record inside the caller's write transaction (with its audit entry)."""
        from candor.consent.purposes import JURISDICTIONS

        if source not in SOURCES:
            raise ConsentError(f"unknown consent source {source!r}; one of {', '.join(SOURCES)}")
        if ui_action is not None and ui_action not in UI_ACTIONS:
            raise ConsentError(f"uiAction must be one of {', '.join(UI_ACTIONS)}")
        if jurisdiction is not None and jurisdiction not in JURISDICTIONS:
            raise ConsentError(f"unknown jurisdiction {jurisdiction!r}; one of {', '.join(JURISDICTIONS)}")
        if not granted and not denied:
            raise ConsentError("a consent record must grant or deny at least one purpose")
        self.check_purposes(set(granted) | set(denied))
        sha = None
        if notice_id is not None:
            if notice_version is None:
                raise ConsentError("noticeVersion is required with noticeId")
            row = conn.execute(
                select(notices.c.sha256).where(
                    and_(
                        notices.c.notice_id == notice_id,
                        notices.c.version == notice_version,
                        notices.c.language == language,
                    )
                )
            ).scalar()
            if row is None:
                raise ConsentError(f"notice {notice_id} version {notice_version} ({language}) does not exist", 404)
            sha = row
        now = now_ms()
        ts = ts_ms if ts_ms is not None else now
        if expires_ms is None and granted:
            expires_ms = ts + self.ttl_ms
        result = conn.execute(
            consent_records.insert().returning(consent_records.c.seq),
            {
                "subject_id": subject_id,
                "id_type": id_type,
                "pseudonym": pseudonym,
                "granted": orjson.dumps(sorted(granted)).decode(),
                "denied": orjson.dumps(sorted(denied)).decode(),
                "objection": objection,
                "source": source,
                "jurisdiction": jurisdiction,
                "ts_ms": ts,
                "recorded_ms": now,
                "expires_ms": expires_ms,
                "notice_id": notice_id,
                "notice_version": notice_version,
                "notice_sha256": sha,
                "ui_action": ui_action,
                "raw_signal": raw_signal,
                "confirmed": confirmed,
                "actor": actor[:100],
                "message_id": message_id,
            },
        )
        seq = int(result.scalar_one())
        audit.record(
            conn,
            actor,
            "consent.record",
            subject_id=subject_id,
            details={
                "seq": seq,
                "source": source,
                "granted": sorted(granted),
                "denied": sorted(denied),
                "objection": objection,
            },
        )
        self.invalidate(subject_id)
        return seq

    def invalidate(self, subject_id: str | None = None) -> None:
        with self._lock:
            if subject_id is None:
                self._cache.clear()
                self._memo.clear()
            else:
                self._cache.pop(subject_id, None)
                self._memo.pop(subject_id, None)

    # -- deciding ------------------------------------------------------------------------------
    def _state(self, subject_id: str, conn: Any = None) -> tuple[list[Record], bool] | None:
        hit = self._cache.get(subject_id)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1], hit[2]

        def load(c: Any) -> tuple[list[Record], bool] | None:
            state = c.execute(select(subjects.c.state).where(subjects.c.subject_id == subject_id)).scalar()
            if state is None:
                return None
            # one person, one set of choices: the records of every subject in the unified profile count
            members = _profile_members(c, [subject_id]).get(subject_id, [subject_id])
            rows = c.execute(select(consent_records).where(consent_records.c.subject_id.in_(members))).mappings().all()
            restricted = state == "restricted"
            if len(members) > 1:
                restricted = restricted or bool(
                    c.execute(
                        select(subjects.c.subject_id)
                        .where(and_(subjects.c.subject_id.in_(members), subjects.c.state == "restricted"))
                        .limit(1)
                    ).first()
                )
            return sorted((_record(r) for r in rows), key=_record_order), restricted

        if conn is None:
            with self.store.engine.connect() as c:
                loaded = load(c)
        else:
            loaded = load(conn)
        if loaded is not None:
            with self._lock:
                if len(self._cache) > 500_000:
                    self._cache.clear()
                self._cache[subject_id] = (now + self.CACHE_SECONDS, loaded[0], loaded[1])
        return loaded

    def preload(self, subject_ids: list[str], conn: Any) -> None:
        """Load the state of many subjects in a few queries (the writer calls this once per group)."""
        now = time.monotonic()
        cache = self._cache
        missing = [sid for sid in set(subject_ids) if (hit := cache.get(sid)) is None or hit[0] <= now]
        for i in range(0, len(missing), 500):
            chunk = missing[i : i + 500]
            members = _profile_members(conn, chunk)
            everyone = sorted({m for ms in members.values() for m in ms} | set(chunk))
            states: dict[str, str] = {}
            recs: dict[str, list[Record]] = {}
            for j in range(0, len(everyone), 500):
                part = everyone[j : j + 500]
                states.update(conn.execute(_STATES, {"ids": part}).all())
                for r in conn.execute(_RECORDS, {"ids": part}).mappings():
                    recs.setdefault(r["subject_id"], []).append(_record(r))
            with self._lock:
                if len(cache) > 500_000:
                    cache.clear()
                for sid in chunk:
                    if sid not in states:
                        continue
                    group = members.get(sid, [sid])
                    if len(group) == 1:
                        records = recs.get(sid, [])
                    else:
                        records = sorted((r for m in group for r in recs.get(m, [])), key=_record_order)
                    restricted = any(states.get(m) == "restricted" for m in group)
                    cache[sid] = (now + self.CACHE_SECONDS, records, restricted)
                    self._memo.pop(sid, None)

    def can_use(
        self,
        subject_id: str | None,
        purpose: str,
        *,
        conn: Any = None,
        now: int | None = None,
        remember: bool = True,
        categories: Iterable[str] = (),
    ) -> Decision:
        """The one decision: may this subject's data be used for this purpose, right now?

        ``categories`` are the data categories (dictionary.py) the use involves. For a special
        category (health, religion, precise location, ...; GDPR Art. 9, CPRA sensitive personal
        information) the person must also have opted in to it explicitly (``sensitive.<category>``),
        and after "Limit the Use of My Sensitive Personal Information" (a refusal of ``sensitive``) only
        ``necessary`` uses remain, unless the person opted in to the category again since.
        """
        decision = self._can_use(subject_id, purpose, conn=conn, now=now, remember=remember)
        special = sorted({c for c in categories if c in SENSITIVE_CATEGORIES})
        if not decision.allowed or not special:
            return decision
        reasons = list(decision.reasons)
        proof = list(decision.proof)
        limit: Decision | None = None
        for cat in special:
            opt = self._can_use(subject_id, f"sensitive.{cat}", conn=conn, now=now, remember=remember)
            if not opt.allowed:
                return Decision(
                    purpose,
                    False,
                    (f"uses {cat.replace('_', ' ')} data, which needs the person's explicit opt-in "
                     f"(sensitive.{cat}): {opt.reasons[0]}",),
                    opt.proof,
                    decision.basis,
                    decision.jurisdiction,
                    opt.explicit,
                )  # fmt: skip
            if purpose != "necessary":
                if limit is None:
                    limit = self._can_use(subject_id, "sensitive", conn=conn, now=now, remember=remember)
                limited = not limit.allowed and limit.explicit
                if limited and (not opt.proof or max(limit.proof or (0,)) > max(opt.proof)):
                    return Decision(
                        purpose,
                        False,
                        ("the person limited the use of their sensitive personal information: only uses necessary "
                         f"for the service remain ({limit.reasons[0]})",),
                        limit.proof,
                        decision.basis,
                        decision.jurisdiction,
                        True,
                    )  # fmt: skip
            reasons.append(f"opted in to {cat.replace('_', ' ')} data: {opt.reasons[0]}")
            proof.extend(opt.proof)
        return Decision(
            purpose, True, tuple(reasons), tuple(proof), decision.basis, decision.jurisdiction, decision.explicit
        )

    def _can_use(
        self, subject_id: str | None, purpose: str, *, conn: Any = None, now: int | None = None, remember: bool = True
    ) -> Decision:
        try:
            p = self.taxonomy.get(purpose)
        except UnknownPurpose as exc:
            return Decision(purpose, False, (str(exc),), (), "unknown", self.default_jurisdiction)
        state = self._state(subject_id, conn) if subject_id else None
        if state is None:
            return Decision(
                purpose,
                False,
                ("no such person",),
                (),
                p.basis_in(self.default_jurisdiction),
                self.default_jurisdiction,
            )
        assert subject_id is not None
        records, restricted = state
        live = now is None and remember
        current = now_ms() if now is None else now
        if live:
            memo = self._memo.get(subject_id)
            hit = memo.get(purpose) if memo else None
            if hit is not None and hit[0] > time.monotonic() and hit[1] > current:
                return hit[2]
        ctx = Context(
            jurisdiction_of(records, self.default_jurisdiction),
            current,
            restricted,
            self.reconsent_from(conn),
        )
        decision = resolve(records, p, ctx)
        if live:
            # valid until the cache entry ages or the next grant of this person expires
            until = min((r.expires_ms for r in records if r.expires_ms and r.expires_ms > current), default=2**62)
            remembered = self._memo
            if len(remembered) > 500_000:
                remembered.clear()
            per = remembered.get(subject_id)
            if per is None:
                per = remembered[subject_id] = {}
            per[purpose] = (time.monotonic() + self.CACHE_SECONDS, until, decision)
        return decision

    def allowed_without_choice(self, purpose: str) -> bool:
        """Whether a person with no choice on record may be processed for ``purpose`` (opt-out basis)."""
        try:
            p = self.taxonomy.get(purpose)
        except UnknownPurpose:
            return False
        from candor.consent.purposes import CONSENT

        return p.basis_in(self.default_jurisdiction) != CONSENT

    def has_signal(self, subject_id: str, source: str, conn: Any = None) -> bool:
        state = self._state(subject_id, conn)
        return bool(state) and any(r.source == source for r in state[0])  # type: ignore[index]

    def explain(
        self, subject_id: str | None, purposes: list[str] | None = None, categories: Iterable[str] = ()
    ) -> list[Decision]:
        cats = tuple(categories)
        return [self.can_use(subject_id, p, categories=cats) for p in (purposes or self.taxonomy.names())]

    def proof(self, subject_id: str) -> list[dict[str, Any]]:
        """Every ledger record of the subject: what they saw (notice version and text hash), when, how."""
        with self.store.engine.connect() as conn:
            rows = (
                conn.execute(
                    select(consent_records)
                    .where(consent_records.c.subject_id == subject_id)
                    .order_by(consent_records.c.seq)
                )
                .mappings()
                .all()
            )
        out = []
        for r in rows:
            out.append(
                {
                    "seq": r["seq"],
                    "ts_ms": r["ts_ms"],
                    "recorded_ms": r["recorded_ms"],
                    "source": r["source"],
                    "granted": orjson.loads(r["granted"]),
                    "denied": orjson.loads(r["denied"]),
                    "objection": bool(r["objection"]),
                    "jurisdiction": r["jurisdiction"],
                    "expires_ms": r["expires_ms"],
                    "notice": (
                        {"id": r["notice_id"], "version": r["notice_version"], "sha256": r["notice_sha256"]}
                        if r["notice_id"]
                        else None
                    ),
                    "ui_action": r["ui_action"],
                    "raw_signal": r["raw_signal"],
                    "confirmed": bool(r["confirmed"]),
                    "actor": r["actor"],
                    "message_id": r["message_id"],
                }
            )
        return out


# the writer's per-group reads (``preload``), built once: building a statement cost more than running it
_IDS: BindParameter[list[str]] = bindparam("ids", expanding=True)
_STATES = select(subjects.c.subject_id, subjects.c.state).where(subjects.c.subject_id.in_(_IDS))
_RECORDS = select(consent_records).where(consent_records.c.subject_id.in_(_IDS))
_PROFILE_OF = select(profile_subjects.c.subject_id, profile_subjects.c.profile_id).where(
    profile_subjects.c.subject_id.in_(_IDS)
)
_MEMBERS = select(profile_subjects.c.subject_id, profile_subjects.c.profile_id).where(
    profile_subjects.c.profile_id.in_(_IDS)
)


def _record_order(r: Record) -> tuple[int, int]:
    return (r.ts_ms, r.seq)


def _profile_members(conn: Any, subject_ids: list[str]) -> dict[str, list[str]]:
    """For subjects in a unified profile of several, every subject of that profile."""
    rows = conn.execute(_PROFILE_OF, {"ids": list(subject_ids)}).all()
    if not rows:
        return {}
    profile_of = dict(rows)
    groups: dict[str, list[str]] = {}
    for sid, pid in conn.execute(_MEMBERS, {"ids": sorted(set(profile_of.values()))}):
        groups.setdefault(pid, []).append(sid)
    return {sid: groups.get(pid, [sid]) for sid, pid in profile_of.items()}


def _record(r: Any) -> Record:
    return Record(
        seq=r["seq"],
        ts_ms=r["ts_ms"],
        granted=frozenset(orjson.loads(r["granted"])),
        denied=frozenset(orjson.loads(r["denied"])),
        objection=bool(r["objection"]),
        source=r["source"],
        expires_ms=r["expires_ms"],
        confirmed=bool(r["confirmed"]),
        notice_id=r["notice_id"],
        notice_version=r["notice_version"],
        jurisdiction=r["jurisdiction"],
    )


def audience_counts(consent: Consent, suppressions: Any) -> dict[str, dict[str, int]]:
    """For every purpose, how many people are usable, not consented, suppressed or restricted.

    The reference implementation, person by person through the resolver: the API and the CLI use
    the same computation on DuckDB (consent/audience.py), which a test checks against this one.

    People with no ledger record share one decision per purpose (their basis in the default
    jurisdiction), so only people with records are resolved one by one.
    """
    from candor.store.schema import suppressions as supp_t

    now = now_ms()
    reconsent = consent.reconsent_from()
    names = consent.taxonomy.names()
    counts = {p: {"usable": 0, "not_consented": 0, "suppressed": 0, "restricted": 0} for p in names}
    by_subject: dict[str, list[Record]] = {}
    with consent.store.engine.connect() as conn:
        for r in conn.execute(select(consent_records)).mappings():
            by_subject.setdefault(r["subject_id"], []).append(_record(r))
        states = dict(conn.execute(select(subjects.c.subject_id, subjects.c.state)).all())
        suppressed: dict[str, set[str]] = {}
        rows = conn.execute(
            select(supp_t.c.channel, identifiers.c.subject_id).select_from(
                identifiers.join(supp_t, identifiers.c.contact_hash == supp_t.c.hash)
            )
        ).all()
    for channel, sid in rows:
        suppressed.setdefault(channel, set()).add(sid)
    everywhere = suppressed.get("all", set())
    purposes = [consent.taxonomy.get(p) for p in names]
    default_ctx = Context(consent.default_jurisdiction, now, False, reconsent)
    default_allowed = {p.name: resolve([], p, default_ctx).allowed for p in purposes}
    for sid, state in states.items():
        if state == "erased":
            continue
        recs = by_subject.get(sid)
        restricted = state == "restricted"
        ctx = None
        for p in purposes:
            c = counts[p.name]
            if restricted and p.name != "necessary":
                c["restricted"] += 1
                continue
            if recs is None:
                allowed = default_allowed[p.name]
            else:
                if ctx is None:
                    ctx = Context(jurisdiction_of(recs, consent.default_jurisdiction), now, restricted, reconsent)
                allowed = resolve(recs, p, ctx).allowed
            if not allowed:
                c["not_consented"] += 1
            elif p.channel and (sid in everywhere or sid in suppressed.get(p.channel, ())):
                c["suppressed"] += 1
            else:
                c["usable"] += 1
    return counts
