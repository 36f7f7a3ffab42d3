"""Phone normalisation with a job's memo: the same answers as without it, each number parsed once."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from candor import normalize

REGIONS = st.sampled_from(["US", "GB", "DE", "FR", "IN", "BR"])
# digits and separators only (the memo's fast path), written the ways people write numbers
plain = st.from_regex(re.compile(r"\A[ ]*\+?[0-9 ().\-]{0,20}\Z"))
written = st.builds(
    lambda prefix, parts, seps: prefix + "".join(p + s for p, s in zip(parts, seps, strict=False)),
    st.sampled_from(["", "+", "+1 ", "1-", "(", "00", "011 ", "+44 ", "+49", "0"]),
    st.lists(st.text("0123456789", min_size=1, max_size=4), min_size=1, max_size=5),
    st.lists(st.sampled_from(["", " ", "-", ".", ") ", "("]), min_size=5, max_size=5),
)
anything = st.one_of(st.text(max_size=30), st.integers(), st.none(), st.booleans())


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.one_of(plain, written, anything), max_size=8), REGIONS)
def test_a_memo_never_changes_the_answer(values: list[object], region: str) -> None:
    memo: dict[tuple[str, str], str | None] = {}
    for value in values * 2:  # the second time round, from the memo
        assert normalize.phone(value, region, memo) == normalize.phone(value, region)


def test_one_number_written_several_ways_is_parsed_once() -> None:
    memo: dict[tuple[str, str], str | None] = {}
    ways = ["(415) 555-0132", "415.555.0132", "415 555 0132", "+1 415-555-0132", "1-415-555-0132"]
    assert {normalize.phone(w, "US", memo) for w in ways} == {"+14155550132"}
    assert memo == {("4155550132", "US"): "+14155550132", ("+14155550132", "US"): "+14155550132",
                    ("14155550132", "US"): "+14155550132"}  # fmt: skip
    # letters or an extension: parsed as written, not through the memo
    assert normalize.phone("415-555-0132 ext. 7", "US", memo) == normalize.phone("415-555-0132 ext. 7", "US")
    assert len(memo) == 3
    # no digits at all: not a number, and nothing remembered
    assert normalize.phone("(-)", "US", memo) is None and len(memo) == 3
