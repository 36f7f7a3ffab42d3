"""Which probabilistic matches may join two profiles: one person has one birthday and one first name.

Pairwise match probabilities are not enough to build profiles: in a household, two people share a
surname, an address and often a phone, and a record with a missing birthday can score high against
each of them, so that connected components chain a mother to her son through it. Resolution
therefore adds matches strongest first to a union-find over the current profiles, and each cluster
carries its *evidence* (the birthdays, first and last names of its records, and how many identifiers
of each limited type it holds). A match between two clusters is refused, and queued for review, when

- **birthdays conflict**: both clusters hold a birthday, and no birthday of one is compatible with any
  of the other. Compatible means equal, day and month transposed, or one character off: the levels at
  which the model itself counts birthdays as agreeing (identity/matching.py). A person has one
  birthday; a typo or a transposition is the noise a data-entry clerk makes, a different date is
  someone else (a family member, most often);
- **first names conflict**: both hold a first name, and none is compatible with any of the other:
  equal, in one nickname group, Jaro-Winkler ≥ 0.8 (the model's lowest name level), or one cluster's
  first name is the other's last name (swapped fields). Twins share a birthday, not a first name;
- **limits**: the merge would put more identifiers of a limited type in one profile than allowed (two
  authenticated userIds by default): the graph would hold that edge anyway (identity/graph.py), so the
  clusters mirror its rule and later matches are judged against the profiles the graph will compute.

Nothing here is tuned on a particular data set: the compatibility tests are the model's own
agreement levels, and a refused match is never lost, it waits in the review queue with its reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler

from candor.identity.matching import _canonical_first_name, normalise_record

FIRST_NAME_SIMILARITY = 0.8  # the model's lowest first-name agreement level ("jaro-winkler >= 0.8")
SWAPPED_SIMILARITY = 0.92  # the model's "swapped with last name" level


def _merged(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    return a + tuple(v for v in b if v not in a) if b else a


@dataclass(slots=True)
class Evidence:
    """What one cluster of records says about the person: normalised values, in memory only.

    Tuples, not sets: a cluster holds a handful of values, and a million of them must stay small."""

    birthdays: tuple[str, ...] = ()
    first_names: tuple[str, ...] = ()
    last_names: tuple[str, ...] = ()
    limited: tuple[tuple[str, int], ...] = ()

    @classmethod
    def of(cls, record: Mapping[str, object] | None, limited: Mapping[str, int] | None = None) -> Evidence:
        """The evidence of one matcher record, normalised as the model compares it."""
        lim = tuple(sorted(limited.items())) if limited else ()
        if record is None:
            return cls(limited=lim)
        r = normalise_record(record)
        return cls(
            birthdays=(r["birthday"],) if r["birthday"] else (),
            first_names=(r["first_name"],) if r["first_name"] else (),
            last_names=(r["last_name"],) if r["last_name"] else (),
            limited=lim,
        )

    def count(self, id_type: str) -> int:
        return sum(n for t, n in self.limited if t == id_type)

    def absorb(self, other: Evidence) -> None:
        self.birthdays = _merged(self.birthdays, other.birthdays)
        self.first_names = _merged(self.first_names, other.first_names)
        self.last_names = _merged(self.last_names, other.last_names)
        if other.limited:
            totals = dict(self.limited)
            for t, n in other.limited:
                totals[t] = totals.get(t, 0) + n
            self.limited = tuple(sorted(totals.items()))


def birthdays_compatible(a: str, b: str) -> bool:
    """Equal, day and month transposed, or one character off (``YYYY-MM-DD``)."""
    if a == b:
        return True
    if len(a) == 10 and len(b) == 10 and a[:5] + a[8:10] + "-" + a[5:7] == b:
        return True
    return DamerauLevenshtein.distance(a, b) <= 1


def first_names_compatible(a: str, b: str) -> bool:
    """Equal, one nickname group, or Jaro-Winkler ≥ 0.8."""
    if a == b or _canonical_first_name(a) == _canonical_first_name(b):
        return True
    return JaroWinkler.similarity(a, b) >= FIRST_NAME_SIMILARITY


def conflict(a: Evidence, b: Evidence, limits: Mapping[str, int]) -> str | None:
    """Why clusters ``a`` and ``b`` cannot be one person (a short reason, no values), or None."""
    for t, limit in limits.items():
        na, nb = a.count(t), b.count(t)
        if na and nb and na + nb > limit:
            return f"over the limit of {limit} {t}"
    if a.birthdays and b.birthdays and not any(birthdays_compatible(x, y) for x in a.birthdays for y in b.birthdays):
        return "different birthdays"
    if a.first_names and b.first_names:
        if any(first_names_compatible(x, y) for x in a.first_names for y in b.first_names):
            return None
        swapped = any(
            JaroWinkler.similarity(x, y) >= SWAPPED_SIMILARITY
            for names, lasts in ((a.first_names, b.last_names), (b.first_names, a.last_names))
            for x in names
            for y in lasts
        )
        if not swapped:
            return "different first names"
    return None


class Clusters:
    """A union-find over subjects whose clusters carry their :class:`Evidence`."""

    def __init__(self, limits: Mapping[str, int]) -> None:
        self.limits = dict(limits)
        self.parent: dict[str, str] = {}
        self.evidence: dict[str, Evidence] = {}

    def add(self, subject: str, evidence: Evidence) -> None:
        """A subject with its own evidence (once; a second call adds nothing)."""
        if subject not in self.parent:
            self.parent[subject] = subject
            self.evidence[subject] = evidence

    def find(self, s: str) -> str:
        if s not in self.parent:
            self.add(s, Evidence())
        root = s
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[s] != root:
            self.parent[s], s = root, self.parent[s]
        return root

    def join(self, a: str, b: str) -> None:
        """Put ``a`` and ``b`` in one cluster unconditionally (they already share a profile)."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        keep, drop = (ra, rb) if ra < rb else (rb, ra)
        self.parent[drop] = keep
        self.evidence[keep].absorb(self.evidence.pop(drop))

    def try_join(self, a: str, b: str) -> str | None:
        """Join ``a`` and ``b`` unless their clusters conflict; the reason when refused."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return None
        why = conflict(self.evidence[ra], self.evidence[rb], self.limits)
        if why is None:
            self.join(ra, rb)
        return why

    def same(self, a: str, b: str) -> bool:
        return self.find(a) == self.find(b)

    @classmethod
    def of_profiles(
        cls,
        evidence: Mapping[str, Evidence],
        profile_of: Mapping[str, str],
        limits: Mapping[str, int],
        extra: Iterable[str] = (),
    ) -> Clusters:
        """Clusters initialised with the current profiles (``profile_of``: subject -> profile id)."""
        out = cls(limits)
        for s, ev in evidence.items():
            out.add(s, ev)
        for s in extra:
            out.add(s, Evidence())
        for s, p in profile_of.items():
            out.join(s, p)
        return out
