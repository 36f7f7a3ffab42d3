"""The profile constraints of resolution: one person has one birthday and one first name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from candor.app import Runtime
from candor.config import Settings
from candor.identity.clusters import Clusters, Evidence, birthdays_compatible, conflict, first_names_compatible
from candor.identity.resolve import ResolveReport
from candor.store.schema import identifiers, identity_edges, identity_reviews

LIMITS = {"user_id": 1}


def ev(**kw: Any) -> Evidence:
    return Evidence.of(kw)


def test_compatible_birthdays_are_the_models_agreement_levels() -> None:
    assert birthdays_compatible("1970-03-04", "1970-03-04")
    assert birthdays_compatible("1970-03-04", "1970-04-03")  # day and month transposed
    assert birthdays_compatible("1970-03-04", "1970-03-05")  # one character off
    assert not birthdays_compatible("1970-03-04", "1971-08-04")
    assert not birthdays_compatible("1970-03-04", "2001-11-23")


def test_compatible_first_names() -> None:
    assert first_names_compatible("robert", "bob")  # nickname group
    assert first_names_compatible("jessica", "jesica")  # typo
    assert not first_names_compatible("jessica", "donald")


def test_a_household_conflicts_and_one_person_does_not() -> None:
    mother = ev(first_name="Mary", last_name="Smith", birthday="1970-03-04")
    son = ev(first_name="John", last_name="Smith", birthday="2001-11-23")
    assert conflict(mother, son, LIMITS) == "different birthdays"
    assert conflict(mother, ev(first_name="John", last_name="Smith"), LIMITS) == "different first names"
    assert conflict(mother, ev(first_name="Smith", last_name="Mary", birthday="1970-04-03"), LIMITS) is None
    assert conflict(mother, ev(first_name="Maryy", last_name="Smith"), LIMITS) is None
    assert conflict(mother, ev(last_name="Smith"), LIMITS) is None  # no evidence against
    two_users = conflict(Evidence.of(None, {"user_id": 1}), Evidence.of(None, {"user_id": 1}), LIMITS)
    assert two_users == "over the limit of 1 user_id"


dates = st.dates().map(lambda d: d.isoformat())
names = st.sampled_from(["mary", "john", "robert", "bob", "ann", "anne", "li", "jessica", "donald", ""])
evidences = st.builds(
    lambda b, f, last, u: Evidence.of(
        {"birthday": b, "first_name": f, "last_name": last}, {"user_id": 1} if u else None
    ),
    st.one_of(st.none(), dates),
    names,
    names,
    st.booleans(),
)


@given(evidences, evidences)
def test_conflict_is_symmetric(a: Evidence, b: Evidence) -> None:
    assert (conflict(a, b, LIMITS) is None) == (conflict(b, a, LIMITS) is None)


@given(st.lists(evidences, min_size=1, max_size=12), st.lists(st.tuples(st.integers(0, 11), st.integers(0, 11))))
@settings(max_examples=60)
def test_clusters_hold_their_members_evidence_and_respect_the_limits(
    items: list[Evidence], joins: list[tuple[int, int]]
) -> None:
    cl = Clusters(LIMITS)
    for i, e in enumerate(items):
        cl.add(f"s{i}", Evidence(e.birthdays, e.first_names, e.last_names, e.limited))
    for a, b in joins:
        if a < len(items) and b < len(items):
            cl.try_join(f"s{a}", f"s{b}")
    groups: dict[str, list[int]] = {}
    for i in range(len(items)):
        groups.setdefault(cl.find(f"s{i}"), []).append(i)
    for root, members in groups.items():
        held = cl.evidence[root]
        assert set(held.birthdays) == {b for i in members for b in items[i].birthdays}
        assert set(held.first_names) == {f for i in members for f in items[i].first_names}
        # never two authenticated users in one cluster
        assert held.count("user_id") == sum(items[i].count("user_id") for i in members) <= 1


def _import(rt: Runtime, tmp_path: Path, rows: list[dict[str, str]]) -> dict[str, str]:
    """record id -> subject id, through the import path of ``candor import records``."""
    import csv

    from candor.identity.records import Importer, ImportReport, parse_mapping
    from candor.ingest import Work
    from candor.store import now_ms

    path = tmp_path / "pos.csv"
    cols = ["id", "first", "last", "birthday", "street", "phone"]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    rt.directory.create_source("pos")
    src = next(s for s in rt.directory.list_sources() if s["name"] == "pos")
    from candor.auth import SourceInfo

    info = SourceInfo(id=int(src["id"]), name="pos", strict=False, personal_properties=frozenset())
    importer = Importer(rt.validator_for(info), rt.vault.pseudonym, "pos")
    mapping = parse_mapping("first=firstName,last=lastName,birthday=birthday,street=address.street,phone=phone")
    for batch in importer.messages(path, "id", mapping, ImportReport()):
        rt.ingestor.submit_sync(Work(info.id, batch, [], now_ms()))
    out = {}
    with rt.store.engine.connect() as conn:
        for r in rows:
            pid = rt.vault.pseudonym("record", f"pos:{r['id']}")
            out[r["id"]] = conn.execute(
                select(identifiers.c.subject_id).where(identifiers.c.pseudonym == pid)
            ).scalar_one()
    return out


@pytest.mark.parametrize("bulk", [True, False])
def test_a_record_matching_two_family_members_joins_one_and_the_other_goes_to_review(
    tmp_path: Path, bulk: bool
) -> None:
    rt = Runtime(Settings.from_env(env={}, data_dir=tmp_path / "data", default_jurisdiction="US"))
    try:
        home = {"last": "Okafor", "street": "12 Quay Street", "phone": "+12025550143"}
        sid = _import(
            rt,
            tmp_path,
            [
                {"id": "1", "first": "Adaeze", "birthday": "1971-02-14", **home},
                {"id": "2", "first": "Chinedu", "birthday": "2003-09-30", **home},
                {"id": "3", "first": "", "birthday": "", **home},  # no birthday, no first name
            ],
        )
        with rt.store.engine.connect() as conn:
            recs = rt.resolver.records(list(sid.values()), conn)
        report = ResolveReport()
        # the birthday-less record scores high against both: chained, they would be one profile
        pairs = [(sid["1"], sid["3"], 0.99), (sid["2"], sid["3"], 0.98)]
        rt.resolver._apply(pairs, "test", report, lambda *_: None, recs if bulk else {}, bulk=bulk)
        assert (report.linked, report.conflicts, report.review) == (1, 1, 1)
        assert rt.identity.profile_of(sid["3"]) == rt.identity.profile_of(sid["1"])
        assert rt.identity.profile_of(sid["2"]) != rt.identity.profile_of(sid["1"])
        with rt.store.engine.connect() as conn:
            (reason,) = conn.execute(select(identity_reviews.c.reason)).scalars().all()
            assert reason.endswith("not linked: different birthdays")
            assert conn.execute(select(identity_edges.c.score).where(identity_edges.c.rule == "probabilistic")).all()
        # what was stored is what a full replay of the log gives
        assert rt.identity.rebuild()["merged_profiles"] == 1
        assert rt.identity.profile_of(sid["2"]) != rt.identity.profile_of(sid["1"])
    finally:
        rt.close()
