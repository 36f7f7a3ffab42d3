"""The privacy inbox: personal data that arrived where nobody declared it, for a person to decide.

Each item is one source, field (``properties.customer.email``, list positions folded as ``[]``),
guessed category, detector and what collection did (``encrypted``, ``redacted``, ``dropped``,
``removed`` for card numbers and passwords, ``withheld`` for special categories without an opt-in),
with a count and the first and last time seen. Never the value. The writer adds to it in the same
transaction as the events (:meth:`Inbox.record`).

A privacy officer **declares** the field (it enters the source's data dictionary with a category and
a retention, and stops being flagged) or **dismisses** the item. Per source, the **policy** says what
collection does with undeclared personal data in properties: ``encrypt`` (default), ``redact`` or
``drop``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, select, update

from candor import audit, metrics
from candor.dictionary import CATEGORIES, Dictionary, DictionaryError
from candor.screening import DEFAULT_POLICY, POLICIES
from candor.store import Store, now_ms
from candor.store.schema import privacy_findings, source_policies, sources

STATES = ("open", "declared", "dismissed")
Key = tuple[int, str, str, str, str, str]  # source, scope, path, category, detector, action


class Inbox:
    CACHE_SECONDS = 5.0

    def __init__(self, store: Store, dictionary: Dictionary) -> None:
        self.store = store
        self.dictionary = dictionary
        self._policies: tuple[float, dict[int, str]] = (0.0, {})

    # -- policies ------------------------------------------------------------------------------------
    def policy_for(self, source_id: int) -> str:
        at, cached = self._policies
        now = time.monotonic()
        if now - at > self.CACHE_SECONDS:
            with self.store.engine.connect() as conn:
                cached = {
                    int(s): p for s, p in conn.execute(select(source_policies.c.source_id, source_policies.c.policy))
                }
            self._policies = (now, cached)
        return cached.get(source_id, DEFAULT_POLICY)

    def set_policy(self, source: str, policy: str, *, actor: str) -> dict[str, Any]:
        if policy not in POLICIES:
            raise DictionaryError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
        with self.store.write() as conn:
            sid = self.dictionary.source_id(source, conn)
            stmt = self.store.insert(source_policies).values(
                source_id=sid, policy=policy, updated_ms=now_ms(), updated_by=actor[:100]
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["source_id"],
                    set_={
                        "policy": policy,
                        "updated_ms": stmt.excluded.updated_ms,
                        "updated_by": stmt.excluded.updated_by,
                    },
                )
            )
            audit.record(conn, actor, "privacy.policy", target=f"source:{source}", details={"policy": policy})
        self._policies = (0.0, {})
        return {"source": source, "policy": policy}

    def policies(self) -> list[dict[str, Any]]:
        with self.store.engine.connect() as conn:
            names = dict(conn.execute(select(sources.c.id, sources.c.name)).all())
            own = dict(conn.execute(select(source_policies.c.source_id, source_policies.c.policy)).all())
        return [
            {"source": n, "policy": own.get(i, DEFAULT_POLICY)} for i, n in sorted(names.items(), key=lambda x: x[1])
        ]

    # -- the writer's side ---------------------------------------------------------------------------
    def record(self, conn: Any, batches: Iterable[tuple[int, int, list[tuple[str, str, str, str, str]]]]) -> None:
        """Add findings of stored events, inside the writer's transaction: ``(source_id, ms, findings)``."""
        agg: dict[Key, list[int]] = defaultdict(lambda: [0, 2**62, 0])
        for source_id, ms, findings in batches:
            for scope, path, category, detector, action in findings:
                a = agg[(source_id, scope, path, category, detector, action)]
                a[0] += 1
                a[1] = min(a[1], ms)
                a[2] = max(a[2], ms)
        if not agg:
            return
        stmt = self.store.insert(privacy_findings)
        stmt = stmt.on_conflict_do_update(
            index_elements=["source_id", "scope", "path", "category", "detector", "action"],
            set_={
                "count": privacy_findings.c.count + stmt.excluded.count,
                "last_seen_ms": stmt.excluded.last_seen_ms,
            },
        )
        rows = [
            {
                "source_id": k[0],
                "scope": k[1],
                "path": k[2],
                "category": k[3],
                "detector": k[4],
                "action": k[5],
                "count": n,
                "first_seen_ms": first,
                "last_seen_ms": last,
                "state": "open",
            }
            for k, (n, first, last) in agg.items()
        ]
        for row in rows:
            conn.execute(stmt, row)
        for k, (n, _, _) in agg.items():
            metrics.pii_findings_total.labels(k[3], k[5]).inc(n)

    # -- the privacy officer's side ------------------------------------------------------------------
    def list(self, *, state: str | None = "open", source: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        if state is not None and state not in STATES:
            raise DictionaryError(f"state must be one of {', '.join(STATES)}")
        with self.store.engine.connect() as conn:
            names = dict(conn.execute(select(sources.c.id, sources.c.name)).all())
            q = select(privacy_findings)
            if state is not None:
                q = q.where(privacy_findings.c.state == state)
            if source is not None:
                q = q.where(privacy_findings.c.source_id == self.dictionary.source_id(source, conn))
            rows = conn.execute(q.order_by(privacy_findings.c.last_seen_ms.desc()).limit(limit)).mappings().all()
        return [self._public(r, names) for r in rows]

    @staticmethod
    def _public(r: Any, names: dict[int, str]) -> dict[str, Any]:
        return {
            "id": int(r["id"]),
            "source": names.get(r["source_id"], f"#{r['source_id']}"),
            "field": f"{r['scope']}.{r['path']}",
            "category": r["category"],
            "special": CATEGORIES[r["category"]].special if r["category"] in CATEGORIES else False,
            "detector": r["detector"],
            "action": r["action"],
            "count": int(r["count"]),
            "first_seen_ms": int(r["first_seen_ms"]),
            "last_seen_ms": int(r["last_seen_ms"]),
            "state": r["state"],
        }

    def get(self, item_id: int) -> dict[str, Any]:
        with self.store.engine.connect() as conn:
            names = dict(conn.execute(select(sources.c.id, sources.c.name)).all())
            r = conn.execute(select(privacy_findings).where(privacy_findings.c.id == item_id)).mappings().first()
        if r is None:
            raise DictionaryError(f"no inbox item {item_id}", 404)
        return self._public(r, names)

    def declare(
        self, item_id: int, *, category: str | None = None, retention_days: int | None = -1, actor: str
    ) -> dict[str, Any]:
        """Declare the item's field in its source's dictionary (with the guessed category unless told)."""
        item = self.get(item_id)
        scope, _, path = item["field"].partition(".")
        path = path.replace("[]", "")
        cat = category or item["category"]
        with self.store.write() as conn:
            decl = self.dictionary.declare(item["source"], scope, path, cat, retention_days, actor=actor, conn=conn)
            self._close(conn, item, "declared", actor)
        self.dictionary.invalidate()
        return {**self.get(item_id), "declaration": decl}

    def dismiss(self, item_id: int, *, actor: str) -> dict[str, Any]:
        item = self.get(item_id)
        with self.store.write() as conn:
            self._close(conn, item, "dismissed", actor)
        return self.get(item_id)

    def _close(self, conn: Any, item: dict[str, Any], state: str, actor: str) -> None:
        if item["state"] != "open":
            raise DictionaryError(f"inbox item {item['id']} is {item['state']}, not open", 409)
        conn.execute(
            update(privacy_findings)
            .where(and_(privacy_findings.c.id == item["id"], privacy_findings.c.state == "open"))
            .values(state=state, decided_by=actor[:100], decided_ms=now_ms())
        )
        audit.record(
            conn,
            actor,
            f"privacy.inbox.{state}",
            target=f"finding:{item['id']}",
            details={"field": item["field"], "source": item["source"], "category": item["category"]},
        )

    def summary(self) -> dict[str, Any]:
        """Open items and events affected, per category and action (the console's headline)."""
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                select(privacy_findings.c.category, privacy_findings.c.action, privacy_findings.c.count).where(
                    privacy_findings.c.state == "open"
                )
            ).all()
        by_cat: dict[str, int] = defaultdict(int)
        by_action: dict[str, int] = defaultdict(int)
        for cat, action, n in rows:
            by_cat[cat] += int(n)
            by_action[action] += int(n)
        return {"open": len(rows), "by_category": dict(by_cat), "by_action": dict(by_action)}
