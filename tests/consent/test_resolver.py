"""Resolver invariants (Hypothesis) and the documented rules, one example each."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from candor.consent.purposes import DEFAULT_PURPOSES
from candor.consent.resolver import Context, Record, resolve

PURPOSES = sorted(DEFAULT_PURPOSES)
CONSENT_PURPOSES = [p for p in PURPOSES if DEFAULT_PURPOSES[p].basis_in("EU") == "consent"]
MARKETING = [p for p in PURPOSES if p.startswith("marketing.")]
NOW = 10_000

purpose_sets = st.frozensets(st.sampled_from(PURPOSES), max_size=4)


@st.composite
def records(draw: st.DrawFn, *, allow_objection: bool = True, allow_signals: bool = True) -> list[Record]:
    n = draw(st.integers(0, 8))
    out = []
    for seq in range(1, n + 1):
        sources = ["banner", "api", "preference_center"] + (["gpc", "gpp"] if allow_signals else [])
        out.append(
            Record(
                seq=seq,
                ts_ms=draw(st.integers(0, 20)),
                granted=draw(purpose_sets),
                denied=draw(purpose_sets),
                objection=draw(st.booleans()) if allow_objection else False,
                source=draw(st.sampled_from(sources)),
                expires_ms=draw(st.none() | st.integers(0, 2 * NOW)),
                confirmed=draw(st.booleans()),
            )
        )
    return out


def ctx(**kw: object) -> Context:
    return Context(jurisdiction="EU", now_ms=NOW, **kw)  # type: ignore[arg-type]


@settings(max_examples=300, derandomize=True)
@given(records(), st.sampled_from(MARKETING), st.integers(0, 20))
def test_objection_to_direct_marketing_is_absolute(recs: list[Record], purpose: str, ts: int) -> None:
    objection = Record(seq=99, ts_ms=ts, denied=frozenset({purpose}), objection=True, source="rights_request")
    later_grants = [
        Record(seq=100 + i, ts_ms=ts + 1 + i, granted=frozenset({purpose}), confirmed=True) for i in range(3)
    ]
    d = resolve([*recs, objection, *later_grants], DEFAULT_PURPOSES[purpose], ctx())
    assert not d.allowed and 99 in d.proof


@settings(max_examples=300, derandomize=True)
@given(records(allow_objection=False, allow_signals=False), st.sampled_from(CONSENT_PURPOSES), st.integers(21, 30))
def test_withdrawal_beats_a_grant_at_the_same_instant(recs: list[Record], purpose: str, ts: int) -> None:
    grant = Record(seq=200, ts_ms=ts, granted=frozenset({purpose}))
    deny = Record(seq=201, ts_ms=ts, denied=frozenset({purpose}))
    for pair in ([grant, deny], [deny, grant]):
        # whatever order they were written in
        renumbered = [Record(**{**r.__dict__, "seq": 200 + i}) for i, r in enumerate(pair)]
        assert not resolve([*recs, *renumbered], DEFAULT_PURPOSES[purpose], ctx()).allowed


@settings(max_examples=300, derandomize=True)
@given(st.sampled_from(CONSENT_PURPOSES), st.integers(0, NOW))
def test_expired_consent_is_no_consent(purpose: str, expiry: int) -> None:
    grant = Record(seq=1, ts_ms=0, granted=frozenset({purpose}), expires_ms=expiry)
    assert not resolve([grant], DEFAULT_PURPOSES[purpose], ctx()).allowed
    fresh = Record(seq=1, ts_ms=0, granted=frozenset({purpose}), expires_ms=NOW + 1)
    assert resolve([fresh], DEFAULT_PURPOSES[purpose], ctx()).allowed


@settings(max_examples=300, derandomize=True)
@given(records(allow_objection=False, allow_signals=False), st.sampled_from(CONSENT_PURPOSES))
def test_latest_explicit_choice_wins(recs: list[Record], purpose: str) -> None:
    live = [
        r
        for r in recs
        if purpose in r.denied or (purpose in r.granted and (r.expires_ms is None or r.expires_ms > NOW))
    ]
    # model: sort by time, withdrawals after grants at the same instant; the last one decides
    live.sort(key=lambda r: (r.ts_ms, purpose in r.denied, r.seq))
    expected = bool(live) and purpose not in live[-1].denied
    assert resolve(recs, DEFAULT_PURPOSES[purpose], ctx()).allowed == expected


@settings(max_examples=200, derandomize=True)
@given(records(), st.sampled_from(PURPOSES))
def test_restricted_subjects_are_not_used(recs: list[Record], purpose: str) -> None:
    d = resolve(recs, DEFAULT_PURPOSES[purpose], ctx(restricted=True))
    assert d.allowed == (purpose == "necessary")


@settings(max_examples=200, derandomize=True)
@given(records(), st.sampled_from(PURPOSES), st.sampled_from(["EU", "UK", "US", "US-CA", "OTHER"]))
def test_decisions_are_deterministic_and_explained(recs: list[Record], purpose: str, j: str) -> None:
    c = Context(jurisdiction=j, now_ms=NOW)
    a, b = resolve(recs, DEFAULT_PURPOSES[purpose], c), resolve(list(reversed(recs)), DEFAULT_PURPOSES[purpose], c)
    assert a == b
    assert a.reasons and all(isinstance(r, str) and r for r in a.reasons)


def test_gpc_opt_out_needs_a_confirmed_opt_in() -> None:
    p = DEFAULT_PURPOSES["sale_sharing"]
    us = Context(jurisdiction="US-CA", now_ms=NOW)
    assert resolve([], p, us).allowed  # opt-out model in California
    gpc = Record(seq=1, ts_ms=1, denied=frozenset({"sale_sharing", "advertising"}), source="gpc")
    assert not resolve([gpc], p, us).allowed
    unconfirmed = Record(seq=2, ts_ms=2, granted=frozenset({"sale_sharing"}), source="banner")
    d = resolve([gpc, unconfirmed], p, us)
    assert not d.allowed and "Global Privacy Control" in d.reasons[0]
    confirmed = Record(seq=3, ts_ms=3, granted=frozenset({"sale_sharing"}), source="preference_center", confirmed=True)
    assert resolve([gpc, unconfirmed, confirmed], p, us).allowed


def test_bases_by_jurisdiction() -> None:
    eu, us = Context(jurisdiction="EU", now_ms=NOW), Context(jurisdiction="US", now_ms=NOW)
    assert not resolve([], DEFAULT_PURPOSES["marketing.email"], eu).allowed
    assert resolve([], DEFAULT_PURPOSES["marketing.email"], us).allowed  # CAN-SPAM: opt-out
    assert not resolve([], DEFAULT_PURPOSES["marketing.sms"], us).allowed  # TCPA: prior express consent
    refuse = Record(seq=1, ts_ms=1, denied=frozenset({"necessary"}))
    assert resolve([refuse], DEFAULT_PURPOSES["necessary"], eu).allowed


def test_reconsent_voids_older_grants() -> None:
    p = DEFAULT_PURPOSES["analytics"]
    old = Record(seq=1, ts_ms=1, granted=frozenset({"analytics"}), notice_id="privacy", notice_version=1)
    assert resolve([old], p, ctx()).allowed
    assert not resolve([old], p, ctx(reconsent_from={"privacy": 2})).allowed
    new = Record(seq=2, ts_ms=2, granted=frozenset({"analytics"}), notice_id="privacy", notice_version=2)
    assert resolve([old, new], p, ctx(reconsent_from={"privacy": 2})).allowed
