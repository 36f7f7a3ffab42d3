"""The product catalogue: what may be recommended. Items that left it (``active`` false) are never
suggested; items of a sensitive category are never used at all (CANDOR_RECOMMEND_SENSITIVE_CATEGORIES,
matched against an item's category and its data category from the data dictionary)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from candor import audit
from candor.dictionary import CATEGORIES
from candor.recommend.types import Item
from candor.store import Store, now_ms
from candor.store.schema import catalog_items, markers

MARKER = "recommend"  # moves on every catalogue or model change: serving processes reload
MAX_ITEMS_PER_CALL = 10_000


class CatalogError(ValueError):
    """A bad catalogue entry: the message names the entry and the field."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def bump(store: Store, conn: Any) -> None:
    stmt = store.insert(markers).on_conflict_do_update(index_elements=["name"], set_={"value": markers.c.value + 1})
    conn.execute(stmt, {"name": MARKER, "value": 1})


def _text(entry: dict[str, Any], key: str, where: str, limit: int, required: bool = True) -> str | None:
    value = entry.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise CatalogError(f"{where}.{key}: a text of 1 to {limit} characters is required")
    return value.strip()


def validate(entries: Any) -> list[dict[str, Any]]:
    """Catalogue entries as the API and CLI take them; raises CatalogError naming the first bad field."""
    if not isinstance(entries, list) or not entries:
        raise CatalogError("items: a non-empty list of products is required")
    if len(entries) > MAX_ITEMS_PER_CALL:
        raise CatalogError(f"items: at most {MAX_ITEMS_PER_CALL} products per call")
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, e in enumerate(entries):
        where = f"items[{i}]"
        if not isinstance(e, dict):
            raise CatalogError(f"{where}: an object with product_id, name and category is required")
        pid = _text(e, "product_id", where, 100)
        assert pid is not None
        if pid in seen:
            raise CatalogError(f"{where}.product_id: appears twice in this call")
        seen.add(pid)
        data_category = _text(e, "data_category", where, 40, required=False)
        if data_category is not None and data_category not in CATEGORIES:
            raise CatalogError(f"{where}.data_category: not a data dictionary category ({', '.join(CATEGORIES)})")
        active = e.get("active", True)
        if not isinstance(active, bool):
            raise CatalogError(f"{where}.active: true or false")
        out.append(
            {
                "product_id": pid,
                "name": _text(e, "name", where, 300),
                "category": _text(e, "category", where, 100),
                "department": _text(e, "department", where, 100, required=False),
                "data_category": data_category,
                "active": active,
            }
        )
    return out


class Catalog:
    def __init__(self, store: Store) -> None:
        self.store = store

    def upsert(self, entries: Any, actor: str = "cli") -> int:
        """Add or change products (all or none). Returns how many were written."""
        rows = validate(entries)
        ms = now_ms()
        with self.store.write() as conn:
            for r in rows:
                stmt = self.store.insert(catalog_items).on_conflict_do_update(
                    index_elements=["product_id"],
                    set_={k: r[k] for k in ("name", "category", "department", "data_category", "active")}
                    | {"updated_ms": ms},
                )
                conn.execute(stmt, {**r, "updated_ms": ms})
            bump(self.store, conn)
            audit.record(conn, actor, "catalog.upsert", details={"items": len(rows)})
        return len(rows)

    def retire(self, product_ids: list[str], actor: str = "cli") -> int:
        """Products that left the catalogue: kept (purchases still explain), never recommended again."""
        with self.store.write() as conn:
            res = conn.execute(
                update(catalog_items)
                .where(catalog_items.c.product_id.in_(product_ids), catalog_items.c.active.is_(True))
                .values(active=False, updated_ms=now_ms())
            )
            bump(self.store, conn)
            audit.record(conn, actor, "catalog.retire", details={"items": int(res.rowcount or 0)})
        return int(res.rowcount or 0)

    def items(self, conn: Any = None) -> dict[str, Item]:
        def load(c: Any) -> dict[str, Item]:
            return {
                r.product_id: Item(r.product_id, r.name, r.category, r.department, r.data_category, bool(r.active))
                for r in c.execute(select(catalog_items))
            }

        if conn is not None:
            return load(conn)
        with self.store.engine.connect() as c:
            return load(c)

    def seed_demo(self, actor: str = "cli") -> int:
        """The demo shop's catalogue (candor.demo), books and music."""
        from candor.demo import _catalog

        return self.upsert(
            [
                {"product_id": p["product_id"], "name": p["name"], "category": p["category"],
                 "department": p["department"]}
                for p in _catalog()
            ],
            actor=actor,
        )  # fmt: skip


def sensitive_ids(items: dict[str, Item], sensitive: frozenset[str]) -> frozenset[str]:
    """Items whose category or data category is sensitive (compared in lower case, ``-``/space as ``_``)."""

    def norm(text: str | None) -> str:
        return (text or "").strip().lower().replace("-", "_").replace(" ", "_")

    wanted = {norm(s) for s in sensitive}
    return frozenset(
        i.product_id for i in items.values() if norm(i.category) in wanted or norm(i.data_category) in wanted
    )
