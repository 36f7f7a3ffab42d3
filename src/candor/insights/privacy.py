"""Small cells are never released: a minimum of ``k`` distinct profiles, and complementary suppression.

A report is made of tables of **cells**; each cell counts the distinct profiles behind it. The rules:

1. **Primary**: a cell (totals included) of fewer than ``k`` profiles is suppressed.
2. **Margins** (complementary suppression): a table declares *groups*: cells whose values a released
   total sums up (a row of a funnel adds up to the people who entered, the paths of a journey add up
   to everyone). In a group whose total is released, the hidden cells must be either none, or at
   least two whose people together are at least ``k`` — so that ``total - released`` reveals neither
   one cell nor a small group. The union is the sum of the hidden cells in an *exclusive* group (each
   person in one cell) and, conservatively, the largest hidden cell otherwise. The next smallest
   released cell is hidden until that holds (or the total too, when nothing is left). Groups are
   revisited until nothing changes, because a cell hidden for one group matters to the others.
3. **Differencing two segments**: in a table broken down by segments, two segments whose members
   differ by fewer than ``k`` people (``0 < |A Δ B| < k``) cannot both be released — every cell of
   the smaller one is hidden — and neither can a segment and the whole population that differ so.

The report says how many cells were hidden for each reason. ``k`` defaults to 50
(``CANDOR_INSIGHTS_MIN_PROFILES``) and is never below ``K_FLOOR`` (11).

Across separate requests, differencing is what the optional differential privacy guards against
(dp.py); suppression alone cannot know what was released before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

K_FLOOR = 11
K_DEFAULT = 50


@dataclass
class Cell:
    key: dict[str, Any]  # the dimensions (e.g. {"channel": "web", "stage": "completed"})
    profiles: int  # distinct profiles behind the cell
    values: dict[str, Any] = field(default_factory=dict)  # the measures
    total: bool = False  # a total (margin) of other cells
    suppressed: str | None = None  # primary | complementary | differencing

    def public(self, dp: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.key)
        if self.suppressed:
            out["profiles"] = None
            out.update(dict.fromkeys(k for k in self.values if not k.startswith("_")))
            out["suppressed"] = self.suppressed
        else:
            out["profiles"] = self.profiles
            out.update({k: v for k, v in self.values.items() if not k.startswith("_")})
        if self.total:
            out["total"] = True
        return out


@dataclass
class Group:
    members: list[int]  # indexes of cells
    total: int | None  # index of the released total those cells add up to (None: the sum is not released)
    exclusive: bool = True  # each person is in one member cell


@dataclass
class Table:
    name: str
    title: str
    dims: list[str]
    measures: list[str]
    cells: list[Cell] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    segment_dim: str | None = None  # the dimension that holds segment names (rule 3)
    # differential privacy: measure → L1 sensitivity of that measure over the whole table when one
    # profile comes or goes ("profiles" is the count of every cell); means are sum / count pairs
    dp_sums: dict[str, float] = field(default_factory=dict)
    dp_means: dict[str, tuple[str, str]] = field(default_factory=dict)
    dp_keep: set[str] = field(default_factory=set)
    derive: Any = None  # cell -> None: recompute derived measures (after noise)

    def add(self, key: dict[str, Any], profiles: int, **values: Any) -> int:
        """A cell; ``total=True`` among the values makes it a total (margin) cell."""
        total = bool(values.pop("total", False))
        self.cells.append(Cell(key, int(profiles), values, total))
        return len(self.cells) - 1

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "columns": [*self.dims, "profiles", *self.measures],
            "rows": [c.public() for c in self.cells],
        }


@dataclass
class Suppressed:
    primary: int = 0
    complementary: int = 0
    differencing: int = 0

    @property
    def total(self) -> int:
        return self.primary + self.complementary + self.differencing

    def as_json(self) -> dict[str, int]:
        return {
            "total": self.total,
            "primary": self.primary,
            "complementary": self.complementary,
            "differencing": self.differencing,
        }


def check_k(k: int | None, default: int) -> int:
    from candor.insights.reports import InsightError

    value = default if k is None else k
    if isinstance(value, bool) or not isinstance(value, int):
        raise InsightError("k must be a whole number", "k")
    if value < K_FLOOR:
        raise InsightError(f"k must be at least {K_FLOOR} (the floor no configuration can lower); got {value}", "k")
    if value > 1_000_000:
        raise InsightError("k must be at most 1,000,000", "k")
    return value


def suppress(
    table: Table, k: int, segments: Mapping[str, set[str]] | None = None, everyone: set[str] | None = None
) -> Suppressed:
    """Apply the three rules to ``table`` in place; ``segments``: name → allowed member profiles."""
    out = Suppressed()
    cells = table.cells
    for c in cells:
        if c.profiles < k:
            c.suppressed = "primary"
            out.primary += 1
    if table.segment_dim and segments:
        names = sorted({str(c.key.get(table.segment_dim)) for c in cells if table.segment_dim in c.key})
        sets = {n: segments.get(n, set()) for n in names}
        if everyone is not None:
            sets["(all)"] = everyone
        hidden: set[str] = set()
        for i, a in enumerate(sorted(sets)):
            for b in sorted(sets)[i + 1 :]:
                if a in hidden or b in hidden:
                    continue
                diff = len(sets[a] ^ sets[b])
                if 0 < diff < k:
                    smaller = b if a == "(all)" else a if len(sets[a]) <= len(sets[b]) and b != "(all)" else b
                    hidden.add(smaller)
        for c in cells:
            if str(c.key.get(table.segment_dim)) in hidden and not c.suppressed:
                c.suppressed = "differencing"
                out.differencing += 1
    changed = True
    while changed:
        changed = False
        for g in table.groups:
            if g.total is None or cells[g.total].suppressed:
                continue  # the sum is not released: nothing to subtract from
            hidden_cells = [cells[i] for i in g.members if cells[i].suppressed]
            if not hidden_cells:
                continue
            sizes = [c.profiles for c in hidden_cells]
            union = sum(sizes) if g.exclusive else max(sizes)
            if len(hidden_cells) >= 2 and union >= k:
                continue
            released = sorted((cells[i].profiles, i) for i in g.members if not cells[i].suppressed)
            if released:
                cells[released[0][1]].suppressed = "complementary"
            else:
                cells[g.total].suppressed = "complementary"
            out.complementary += 1
            changed = True
    return out
