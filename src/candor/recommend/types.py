"""The contract recommenders implement (one small interface, STYLE.md), and the values they exchange.

A recommender gets a :class:`Ask` (the person's interactions and stated interests, already filtered:
only with ``personalization`` consent, never an item of a sensitive category) and the current
:class:`Model`, and returns :class:`Suggestion` s, each with the reason it was made. The built-ins
(recommenders.py) are registered like any other: item-to-item, stated interests, bestsellers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

PURCHASE, CART, VIEW = "bought", "added", "viewed"
WEIGHTS = {PURCHASE: 3.0, CART: 2.0, VIEW: 1.0}


@dataclass(frozen=True)
class Item:
    product_id: str
    name: str
    category: str
    department: str | None
    data_category: str | None
    active: bool


@dataclass(frozen=True)
class Interaction:
    item_id: str
    kind: str  # bought | added | viewed
    ts_ms: int

    @property
    def weight(self) -> float:
        return WEIGHTS[self.kind]


@dataclass(frozen=True)
class Ask:
    """What a recommender may use about one person (empty for a non-personal request)."""

    history: tuple[Interaction, ...] = ()
    interests: tuple[str, ...] = ()
    exclude: frozenset[str] = frozenset()  # already bought: never suggested again
    limit: int = 10


@dataclass(frozen=True)
class Suggestion:
    item_id: str
    score: float  # in [0, 1] relative to the recommender's best
    kind: str  # bought | added | viewed | interest | bestseller
    because: str  # the item id or the interest behind it ("" for bestsellers)


@dataclass
class Model:
    """An immutable snapshot of the catalogue and the item-to-item model, shared by requests."""

    version: int
    catalog: dict[str, Item]
    neighbors: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    popular: list[tuple[str, float]] = field(default_factory=list)  # best first, usable items only
    by_category: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    sensitive: frozenset[str] = frozenset()  # item ids never used as input or output
    interest_map: dict[str, tuple[str, ...]] = field(default_factory=dict)  # stated interest -> categories

    def usable(self, item_id: str) -> bool:
        """In the catalogue now, and of no sensitive category."""
        it = self.catalog.get(item_id)
        return it is not None and it.active and item_id not in self.sensitive


class Recommender(Protocol):
    name: str
    personal: bool  # True: runs only for people with personalization consent
    weight: float  # its share in the blend

    def suggest(self, ask: Ask, model: Model) -> list[Suggestion]: ...
