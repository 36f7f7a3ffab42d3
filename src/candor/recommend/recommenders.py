"""The built-in recommenders, registered like any other (``register``)."""

from __future__ import annotations

from typing import Any

from candor.recommend.types import VIEW, WEIGHTS, Ask, Model, Recommender, Suggestion

REGISTRY: dict[str, Recommender] = {}


def register(rec: Recommender) -> Recommender:
    """Add a recommender to the blend (by its ``name``; a second one of the same name replaces it)."""
    REGISTRY[rec.name] = rec
    return rec


def _normalised(scores: dict[str, tuple[float, str, str]], limit: int) -> list[Suggestion]:
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1][0], kv[0]))[:limit]
    if not ranked:
        return []
    top = ranked[0][1][0] or 1.0
    return [Suggestion(item, s / top, kind, because) for item, (s, kind, because) in ranked]


class ItemToItem:
    """Customers who bought (or viewed) this also bought: neighbours of the person's items, weighted by
    how strongly they interacted (bought > added to cart > viewed) and how recently."""

    name = "item_to_item"
    personal = True
    weight = 1.0

    def suggest(self, ask: Ask, model: Model) -> list[Suggestion]:
        strongest: dict[str, tuple[float, str]] = {}  # per history item: weight and kind
        for rank, it in enumerate(sorted(ask.history, key=lambda i: -i.ts_ms)):
            w = WEIGHTS[it.kind] * (0.98 ** min(rank, 200))  # recent interactions count a little more
            if w > strongest.get(it.item_id, (0.0, ""))[0]:
                strongest[it.item_id] = (w, it.kind)
        acc: dict[str, list[Any]] = {}  # item -> [total, best contribution, its kind, its source]
        neighbors = model.neighbors
        for src, (w, kind) in strongest.items():
            for nbr, sim in neighbors.get(src, ()):
                contrib = w * sim
                a = acc.get(nbr)
                if a is None:
                    acc[nbr] = [contrib, contrib, kind, src]
                else:
                    a[0] += contrib
                    if contrib > a[1]:
                        a[1], a[2], a[3] = contrib, kind, src
        # already bought or in the basket: not suggested (viewed items may be); then only usable items
        blocked = ask.exclude | {i for i, (_, k) in strongest.items() if k != VIEW}
        out: dict[str, tuple[float, str, str]] = {}
        for item, a in sorted(acc.items(), key=lambda kv: (-kv[1][0], kv[0])):
            if item in blocked or not model.usable(item):
                continue
            out[item] = (a[0], a[2], a[3])
            if len(out) >= ask.limit * 3:
                break
        return _normalised(out, ask.limit * 3)


class StatedInterests:
    """What the person told us they like (preference center): the best sellers of those categories."""

    name = "interests"
    personal = True
    weight = 0.35

    def suggest(self, ask: Ask, model: Model) -> list[Suggestion]:
        scores: dict[str, tuple[float, str, str]] = {}
        for interest in ask.interests:
            for cat in model.interest_map.get(interest, ()):
                for item, score in model.by_category.get(cat, [])[: ask.limit * 2]:
                    if item in ask.exclude or not model.usable(item):
                        continue
                    if score > scores.get(item, (0.0, "", ""))[0]:
                        scores[item] = (score, "interest", interest)
        return _normalised(scores, ask.limit * 2)


class Bestsellers:
    """Non-personal: what most people bought lately. The fallback for everyone."""

    name = "bestsellers"
    personal = False
    weight = 0.05

    def suggest(self, ask: Ask, model: Model) -> list[Suggestion]:
        scores = {
            item: (score, "bestseller", "")
            for item, score in model.popular[: ask.limit + len(ask.exclude)]
            if item not in ask.exclude and model.usable(item)
        }
        return _normalised(scores, ask.limit)


def blend(ask: Ask, model: Model, personal: bool, recommenders: list[Recommender] | None = None) -> list[Suggestion]:
    """The blended list: each recommender's normalised scores times its weight, the reason taken from
    the recommender that contributed most; non-personal recommenders only when ``personal`` is False."""
    total: dict[str, float] = {}
    reason: dict[str, tuple[float, Suggestion]] = {}
    for rec in recommenders if recommenders is not None else list(REGISTRY.values()):
        if rec.personal and not personal:
            continue
        for s in rec.suggest(ask, model):
            part = rec.weight * s.score
            total[s.item_id] = total.get(s.item_id, 0.0) + part
            if part > reason.get(s.item_id, (-1.0, s))[0]:
                reason[s.item_id] = (part, s)
    ranked = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[: ask.limit]
    return [Suggestion(i, round(score, 6), reason[i][1].kind, reason[i][1].because) for i, score in ranked]


register(ItemToItem())
register(StatedInterests())
register(Bestsellers())
