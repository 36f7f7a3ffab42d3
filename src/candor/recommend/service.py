"""Serving recommendations to one person, with the reason for each, only as far as they allowed.

Per request: the person is looked up by their identifier; their ``personalization`` consent is read
from the ledger afresh (no cached decision survives a change, in this process or another); without it,
or for an unknown or erased person, the answer is the non-personal bestsellers, marked as such. With
it, their recent interactions are read from the store's events (so an erased person's history is gone
with their events) and their stated interests from their profile; items of sensitive categories are
dropped from both. The model snapshot is reloaded when the ``recommend`` marker moved (a catalogue
change or a rebuild in any process), so an item that left the catalogue is never suggested.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import bindparam, desc, select

from candor.recommend.catalog import MARKER, Catalog, sensitive_ids
from candor.recommend.model import Builder
from candor.recommend.recommenders import blend
from candor.recommend.types import CART, PURCHASE, VIEW, Ask, Interaction, Item, Model
from candor.store.schema import events, markers, profile_subjects, rec_neighbors, rec_popular

EVENTS = {"Order Completed": PURCHASE, "Product Added": CART, "Product Viewed": VIEW}
# built once: a request's cost is its queries, not composing them
HISTORY = (
    select(events.c.event, events.c.ts_ms, events.c.properties)
    .where(
        events.c.subject_id.in_(bindparam("members", expanding=True)),
        events.c.type == "track",
        events.c.event.in_(list(EVENTS)),
    )
    .order_by(desc(events.c.ts_ms))
    .limit(bindparam("cap"))
)
MARK = select(markers.c.value).where(markers.c.name == MARKER)
_PROFILE = select(profile_subjects.c.profile_id).where(profile_subjects.c.subject_id == bindparam("s"))
MEMBERS = select(profile_subjects.c.profile_id, profile_subjects.c.subject_id).where(
    profile_subjects.c.profile_id == _PROFILE.scalar_subquery()
)
MAX_LIMIT = 50


class RecommendError(ValueError):
    def __init__(self, message: str, status: int = 400, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class Answer:
    personalized: bool
    basis: str  # personalized | no_consent | unknown_person | no_history
    items: list[dict[str, Any]] = field(default_factory=list)
    profile: str | None = None  # internal: never returned by the API

    def as_json(self) -> dict[str, Any]:
        return {"personalized": self.personalized, "basis": self.basis, "items": self.items}


def explain(kind: str, because: str, catalog: dict[str, Item]) -> str:
    if kind == "interest":
        return f"because you said you like {because.replace('-', ' ')}"
    if kind in (PURCHASE, CART, VIEW):
        name = catalog[because].name if because in catalog else "an item"
        verb = {PURCHASE: "bought", CART: "put in your basket", VIEW: "looked at"}[kind]
        return f"because you {verb} {name}"
    return "popular with our customers"


class Recommendations:
    """One runtime's recommendations: catalogue, model snapshot, per-person answers, rebuilds."""

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self.catalog = Catalog(rt.store)
        self.builder = Builder(rt)
        self._model: Model | None = None
        self._seen: int | None = None
        self._lock = threading.Lock()

    # -- the model snapshot ---------------------------------------------------------------------
    def model(self, conn: Any) -> Model:
        mark = conn.execute(MARK).scalar()
        current = self._model
        if current is not None and mark == self._seen:
            return current
        with self._lock:
            catalog = self.catalog.items(conn)
            sensitive = sensitive_ids(catalog, self.rt.settings.recommend_sensitive_set)
            neighbors: dict[str, list[tuple[str, float]]] = {}
            for a, b, s in conn.execute(
                select(rec_neighbors.c.item_id, rec_neighbors.c.neighbor_id, rec_neighbors.c.score)
            ):
                if b in catalog and catalog[b].active and b not in sensitive:  # usable targets only
                    neighbors.setdefault(a, []).append((b, float(s)))
            for lst in neighbors.values():
                lst.sort(key=lambda x: -x[1])
            ranked = conn.execute(
                select(rec_popular.c.item_id, rec_popular.c.score).order_by(
                    desc(rec_popular.c.score), rec_popular.c.item_id
                )
            )
            popular = [(i, float(s)) for i, s in ranked if i in catalog and catalog[i].active and i not in sensitive]
            by_category: dict[str, list[tuple[str, float]]] = {}
            for i, s in popular:
                by_category.setdefault(catalog[i].category, []).append((i, s))
            for cat, lst in by_category.items():
                top = lst[0][1] or 1.0
                by_category[cat] = [(i, s / top) for i, s in lst]
            interest_map = {
                k: tuple(c for c in v if c.lower() not in self.rt.settings.recommend_sensitive_set)
                for k, v in self.rt.settings.recommend_interest_map.items()
            }
            self._model = Model(int(mark or 0), catalog, neighbors, popular, by_category, sensitive, interest_map)
            self._seen = mark
            return self._model

    # -- one person -----------------------------------------------------------------------------
    def subject(self, user_id: str | None, anonymous_id: str | None) -> str | None:
        if bool(user_id) == bool(anonymous_id):
            raise RecommendError("send exactly one of userId and anonymousId")
        if user_id:
            return self.rt.consent.subject_for("user_id", user_id)
        return self.rt.consent.subject_for("anonymous_id", anonymous_id)

    def personal(self, subject_id: str | None, conn: Any = None) -> bool:
        """``personalization`` consent, read afresh from the ledger (never a decision cached before a change)."""
        if subject_id is None:
            return False
        self.rt.consent.invalidate(subject_id)
        return bool(self.rt.consent.can_use(subject_id, "personalization", conn=conn, remember=False).allowed)

    def members(self, subject_id: str, conn: Any) -> tuple[str, list[str]]:
        """The person's profile and its subjects, in one query (identity/service.py's rule)."""
        rows = conn.execute(MEMBERS, {"s": subject_id}).all()
        if not rows:
            return subject_id, [subject_id]
        return str(rows[0][0]), sorted(str(r[1]) for r in rows)

    def history(self, members: list[str], conn: Any, model: Model) -> tuple[Interaction, ...]:
        cap = self.rt.settings.recommend_max_items
        out: list[Interaction] = []
        rows = conn.execute(HISTORY, {"members": members, "cap": cap * 2}).all()
        for name, ts, props in rows:
            try:
                p = orjson.loads(props)
            except orjson.JSONDecodeError:
                continue
            kind = EVENTS[name]
            ids = (
                [x.get("product_id") for x in p.get("products") or [] if isinstance(x, dict)]
                if kind == PURCHASE
                else [p.get("product_id")]
            )
            for pid in ids:
                if isinstance(pid, str | int) and str(pid) in model.catalog and str(pid) not in model.sensitive:
                    out.append(Interaction(str(pid), kind, int(ts)))
        return tuple(out[:cap])

    def interests(self, members: list[str], conn: Any) -> tuple[str, ...]:
        traits, _, _ = self.rt.profiles.golden(members, conn, {}, scan=50)
        value = traits.get("interests", {}).get("value")
        if not isinstance(value, list):
            return ()
        return tuple(str(v) for v in value if isinstance(v, str))[:50]

    def for_subject(self, subject_id: str | None, limit: int = 10, *, allowed: bool | None = None) -> Answer:
        """``allowed``: the consent decision this same request already read (decide), else read here."""
        if not 1 <= limit <= MAX_LIMIT:
            raise RecommendError(f"limit must be between 1 and {MAX_LIMIT}")
        with self.rt.store.engine.connect() as conn:
            model = self.model(conn)
            if allowed is None:
                allowed = self.personal(subject_id, conn)
            basis = "personalized"
            ask = Ask(limit=limit)
            profile = None
            if subject_id is None:
                basis = "unknown_person"
            elif not allowed:
                basis = "no_consent"
            else:
                profile, members = self.members(subject_id, conn)
                history = self.history(members, conn, model)
                interests = self.interests(members, conn)
                bought = frozenset(i.item_id for i in history if i.kind == PURCHASE)
                ask = Ask(history, interests, bought, limit)
                if not history and not interests:
                    basis = "no_history"
        suggestions = blend(ask, model, personal=allowed and subject_id is not None)
        items = [
            {
                "product_id": s.item_id,
                "name": model.catalog[s.item_id].name,
                "category": model.catalog[s.item_id].category,
                "score": s.score,
                "reason": {"kind": s.kind, "text": explain(s.kind, s.because, model.catalog),
                           **({"item": s.because} if s.kind in (PURCHASE, CART, VIEW) else {}),
                           **({"interest": s.because} if s.kind == "interest" else {})},
            }
            for s in suggestions
        ]  # fmt: skip
        personalized = basis in ("personalized", "no_history") and any(s.kind != "bestseller" for s in suggestions)
        return Answer(personalized, basis, items, profile)

    def template_helper(self, subject_id: str | None) -> Any:
        """``recommendations(n)`` for a campaign template: this person's items with consent (checked again
        here), the bestsellers otherwise; plain dicts only (the template runs in Jinja's sandbox)."""
        cache: dict[int, list[dict[str, Any]]] = {}

        def recommendations(n: int = 3) -> list[dict[str, Any]]:
            k = max(1, min(int(n), 10))
            if k not in cache:
                answer = self.for_subject(subject_id, k)
                cache[k] = [
                    {"product_id": i["product_id"], "name": i["name"], "category": i["category"],
                     "why": i["reason"]["text"]}
                    for i in answer.items
                ]  # fmt: skip
            return [dict(i) for i in cache[k]]

        return recommendations

    def for_identifiers(self, user_id: str | None, anonymous_id: str | None, limit: int = 10) -> Answer:
        return self.for_subject(self.subject(user_id, anonymous_id), limit)

    def rebuild(self, *, full: bool = True, engine: str = "duckdb", progress: Any = None) -> dict[str, Any]:
        return self.builder.rebuild(full=full, engine=engine, progress=progress)
