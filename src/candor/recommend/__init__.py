"""Recommendations and next best action, only as far as each person allowed.

* ``types``: the interface recommenders implement; ``recommenders``: the built-ins and the blend;
* ``catalog``: what may be recommended; ``model``: the item-to-item model built on DuckDB or Spark;
* ``service``: answers for one person, with explanations; ``decide``: placements and their rules.
"""

from __future__ import annotations

from candor.recommend.decide import DecideError, Decider
from candor.recommend.recommenders import REGISTRY, blend, register
from candor.recommend.service import Answer, Recommendations, RecommendError
from candor.recommend.types import Ask, Interaction, Item, Model, Recommender, Suggestion

__all__ = [
    "REGISTRY",
    "Answer",
    "Ask",
    "DecideError",
    "Decider",
    "Interaction",
    "Item",
    "Model",
    "RecommendError",
    "Recommendations",
    "Recommender",
    "Suggestion",
    "blend",
    "register",
]
