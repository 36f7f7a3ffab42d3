"""GPP strings: the specification's examples, usnat vectors, every error, round trips, opt-outs."""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from candor.consent import gpp, tcf
from candor.consent.gpp import GPPError, GPPString, UsNat
from tests.consent.test_tcf import FAST, VALID_CORE, b64, bits_of, f, make, tc_strings

# "Global Privacy Platform String" v1.0, GPP String Examples 1-3 (the TCF section predates v2.2).
TCF_SECTION = "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA"
EXAMPLE_1 = "DBABMA~" + TCF_SECTION
EXAMPLE_2 = "DBACNYA~" + TCF_SECTION + "~1YNN"
EXAMPLE_3 = "DBABjw~" + TCF_SECTION + "~1YNN"

# usnat sections from the IAB reference library's tests (iabgpp-es UsNat.test.ts).
V1_ALL_ONES = UsNat(
    version=1,
    sharing_notice=1,
    sale_opt_out_notice=1,
    sharing_opt_out_notice=1,
    targeted_advertising_opt_out_notice=1,
    sensitive_data_processing_opt_out_notice=1,
    sensitive_data_limit_use_notice=1,
    sale_opt_out=1,
    sharing_opt_out=1,
    targeted_advertising_opt_out=1,
    sensitive_data_processing=(2, 1, 0) * 4,
    known_child_sensitive_data_consents=(2, 1),
    personal_data_consents=1,
    mspa_covered_transaction=1,
    mspa_opt_out_option_mode=1,
    mspa_service_provider_mode=2,
    gpc=True,
)
V1_ALL_TWOS = UsNat(
    version=1,
    sharing_notice=2,
    sale_opt_out_notice=2,
    sharing_opt_out_notice=2,
    targeted_advertising_opt_out_notice=2,
    sensitive_data_processing_opt_out_notice=2,
    sensitive_data_limit_use_notice=2,
    sale_opt_out=2,
    sharing_opt_out=2,
    targeted_advertising_opt_out=2,
    sensitive_data_processing=(2,) * 12,
    known_child_sensitive_data_consents=(2, 2),
    personal_data_consents=2,
    mspa_covered_transaction=2,
    mspa_opt_out_option_mode=2,
    mspa_service_provider_mode=2,
)
V2_MIXED = UsNat(
    version=2,
    sharing_notice=1,
    sale_opt_out_notice=1,
    sharing_opt_out_notice=1,
    targeted_advertising_opt_out_notice=1,
    sensitive_data_processing_opt_out_notice=1,
    sensitive_data_limit_use_notice=1,
    sale_opt_out=1,
    sharing_opt_out=1,
    targeted_advertising_opt_out=1,
    sensitive_data_processing=(2, 1, 0, 2, 1, 0, 2, 1, 0, 2, 1, 0, 2, 1, 0, 2),
    known_child_sensitive_data_consents=(2, 1, 0),
    personal_data_consents=1,
    mspa_covered_transaction=1,
    mspa_opt_out_option_mode=1,
    mspa_service_provider_mode=2,
    gpc=True,
)
USNAT_VECTORS = [
    ("BVVVkkkklWA.YA", V1_ALL_ONES),
    ("BqqqqqqqqqA", V1_ALL_TWOS),
    (
        "BAAAAAAAAQA.QA",
        UsNat(
            version=1,
            sensitive_data_processing=(0,) * 12,
            known_child_sensitive_data_consents=(0, 0),
            mspa_covered_transaction=1,
            gpc=False,
        ),
    ),
    ("CVVVkkkkkpFY.YA", V2_MIXED),
    ("CVVVkkkkkpFY", UsNat(**{**{n: getattr(V2_MIXED, n) for n in V2_MIXED.__slots__}, "gpc": None})),
    ("CAAAAAAAAABA.QA", UsNat(mspa_covered_transaction=1, gpc=False)),
]


def header(ids: list[int]) -> str:
    """The GPP header for ``ids``, taken from a string with those sections."""
    value = GPPString(
        tcf=make() if 2 in ids else None,
        usnat=UsNat() if 7 in ids else None,
        other={i: "x" for i in ids if i not in (2, 7)},
    )
    return gpp.encode(value).split("~")[0]


def usnat_bits(**values: Any) -> str:
    """A version 2 usnat core segment's bits, with fields overridden by attribute name."""
    u = UsNat(mspa_covered_transaction=1)
    fields = {name: getattr(u, name) for name in u.__slots__} | values
    head = [
        "sharing_notice",
        "sale_opt_out_notice",
        "sharing_opt_out_notice",
        "targeted_advertising_opt_out_notice",
        "sensitive_data_processing_opt_out_notice",
        "sensitive_data_limit_use_notice",
        "sale_opt_out",
        "sharing_opt_out",
        "targeted_advertising_opt_out",
    ]
    tail = [
        "personal_data_consents",
        "mspa_covered_transaction",
        "mspa_opt_out_option_mode",
        "mspa_service_provider_mode",
    ]
    bits = f(fields["version"], 6) + "".join(f(fields[n], 2) for n in head)
    bits += "".join(f(v, 2) for v in fields["sensitive_data_processing"])
    bits += "".join(f(v, 2) for v in fields["known_child_sensitive_data_consents"])
    return bits + "".join(f(fields[n], 2) for n in tail)


def with_usnat(section: str) -> str:
    return header([7]) + "~" + section


# --------------------------------------------------------------------------------------------
# Specification examples and reference vectors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ids"),
    [("DBABMA", [2]), ("DBABM", [2]), ("DBACNYA", [2, 6]), ("DBACNY", [2, 6]), ("DBABjw", [5, 6]), ("DBAA", [])],
)
def test_header_examples(text: str, ids: list[int]) -> None:
    s = text + "".join("~" + (VALID_CORE if i == 2 else "x" * i) for i in ids)
    assert gpp.decode(s).section_ids == tuple(ids)


@pytest.mark.parametrize(("ids", "text"), [([2], "DBABMA"), ([2, 6], "DBACNYA"), ([5, 6], "DBABjw"), ([], "DBAA")])
def test_header_encoding_matches_the_reference(ids: list[int], text: str) -> None:
    assert header(ids) == text


def test_header_bits_for_usnat() -> None:
    # Type 3, Version 1, one entry: single, Fibonacci(7) = 2 + 5 -> 0101 and the terminating 1.
    assert bits_of(header([7]))[:30] == "000011" + "000001" + "000000000001" + "0" + "01011"


def test_example_1_eu_tcf() -> None:
    g = gpp.decode(EXAMPLE_1, strict=False)
    assert g.section_ids == (2,)
    assert g.tcf is not None and g.usnat is None and g.other == {}
    assert (g.tcf.cmp_id, g.tcf.cmp_version, g.tcf.vendor_list_version) == (31, 640, 126)
    assert g.tcf.publisher_cc == "DE" and g.tcf.consent_language == "EN"
    assert g.tcf.created == datetime(2022, 4, 20, 22, 0, tzinfo=UTC)
    assert g.tcf == tcf.decode(TCF_SECTION, strict=False)
    assert gpp.encode(g) == EXAMPLE_1


def test_example_2_eu_tcf_and_us_privacy() -> None:
    g = gpp.decode(EXAMPLE_2, strict=False)
    assert g.section_ids == (2, 6)
    assert g.other == {6: "1YNN"}
    assert gpp.encode(g) == EXAMPLE_2
    assert gpp.opt_outs(g) == set()


def test_example_3_canadian_tcf_stays_raw() -> None:
    g = gpp.decode(EXAMPLE_3)
    assert g.section_ids == (5, 6)
    assert g.tcf is None and g.other == {5: TCF_SECTION, 6: "1YNN"}
    assert gpp.encode(g) == EXAMPLE_3


@pytest.mark.parametrize("s", [EXAMPLE_1, EXAMPLE_2])
def test_strict_decoding_rejects_the_pre_v22_tcf_section(s: str) -> None:
    with pytest.raises(GPPError, match=r"section 2 \(tcfeuv2\): core segment: field TcfPolicyVersion is 2"):
        gpp.decode(s)


@pytest.mark.parametrize(("section", "expected"), USNAT_VECTORS)
def test_usnat_reference_vectors(section: str, expected: UsNat) -> None:
    g = gpp.decode(with_usnat(section))
    assert g.usnat == expected
    assert gpp.encode(g) == with_usnat(section)


def test_empty_gpp_string() -> None:
    assert gpp.encode(GPPString()) == "DBAA"
    assert gpp.decode("DBAA") == GPPString()


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("s", "message"),
    [
        ("", r"the GPP string is empty"),
        (
            TCF_SECTION,
            r"GPP header: field Type is 2 at bit offset 0, expected 3 \(a string starting with 'C' is a bare",
        ),
        ("DCAA", r"GPP header: field Version is 2 at bit offset 6, expected 1"),
        ("DB", r"GPP header: field Sections \(entry count\) needs 12 bits at bit offset 12 but only 0 are left"),
        ("DB!A", r"GPP header: invalid character '!' at position 2"),
        ("DBAA=", r"GPP header: invalid character '=' at position 4"),
        ("~1YNN", r"GPP header is empty"),
        ("DBABMA", r"GPP header: Sections entry 1 lists more section ids than the 0 section\(s\) that follow"),
        ("DBAA~1YNN", r"the GPP header lists 0 section\(s\) \[\] but 1 section\(s\) follow it"),
        ("DBACNYA~~1YNN", r"section 2 \(tcfeuv2\) is empty"),
        ("DBACNYA~" + VALID_CORE + "~", r"section 6 \(uspv1\) is empty"),
        ("DBACNYA~" + VALID_CORE + "~1Y N", r"section 6 \(uspv1\) holds characters outside"),
        (
            b64("000011" + "000001" + f(1, 12) + "0" + "0101" * 5, pad_to=6) + "~x",
            r"Fibonacci-coded field Sections entry 1 offset at bit offset 25 has no '11' terminator",
        ),
        (
            b64("000011" + "000001" + f(1, 12) + "0" + "0011") + "~x",
            r"GPP header: the section ids list 3, which is the header itself",
        ),
        (
            b64("000011" + "000001" + f(1, 12) + "0" + "11" + "1", pad_to=6) + "~x",
            r"GPP header: unexpected data after the last field at bit offset 27",
        ),
        ("DBABMAAAAAAA~" + TCF_SECTION, r"GPP header: 44 bits of zero padding after the last field at bit offset 28"),
    ],
)
def test_gpp_errors(s: str, message: str) -> None:
    with pytest.raises(GPPError, match=message):
        gpp.decode(s, strict=True)


def test_not_a_string() -> None:
    with pytest.raises(GPPError, match="must be a str, not bytes"):
        gpp.decode(b"DBAA")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            b64(usnat_bits(version=3)),
            r"core segment: field Version is 3 at bit offset 0; supported versions are 1 and 2",
        ),
        (b64(usnat_bits(sale_opt_out=3)), r"field SaleOptOut is 3 at bit offset 18; allowed values are 0, 1, 2"),
        (b64(usnat_bits(sharing_notice=3)), r"field SharingNotice is 3 at bit offset 6"),
        (
            b64(usnat_bits(sensitive_data_processing=(0,) * 15 + (3,))),
            r"field SensitiveDataProcessing\[16\] is 3 at bit offset 54",
        ),
        (
            b64(usnat_bits(mspa_covered_transaction=0)),
            r"field MspaCoveredTransaction is 0 at bit offset 64; allowed values are 1, 2",
        ),
        (b64(usnat_bits(mspa_service_provider_mode=3)), r"field MspaServiceProviderMode is 3 at bit offset 68"),
        ("CVVVkkkk", r"field SensitiveDataProcessing\[13\] needs 2 bits at bit offset 48 but only 0 are left"),
        ("CVVVkkkkkpFYB", r"core segment: unexpected data after the last field at bit offset 70"),
        (
            "CVVVkkkkkpFYAAAA",
            r"core segment: 26 bits of zero padding after the last field at bit offset 70; at most 23",
        ),
        ("CVVVkkkkkpFY.gA", r"subsection 2: field SubsectionType is 2 at bit offset 0; only 1 \(GPC\) is defined"),
        (
            "CVVVkkkkkpFY.AA",
            r"subsection 2: field SubsectionType is 0 at bit offset 0; the core segment may only come first",
        ),
        ("CVVVkkkkkpFY.YA.QA", r"subsection 3: a second GPC subsection"),
        ("CVVVkkkkkpFY.", r"subsection 2 is empty"),
        ("CVVVkkkkkpFY.Y+", r"subsection 2: invalid character '\+' at position 1"),
        ("CVVVkkkkkpFY.Z", r"subsection 2: unexpected data after the last field at bit offset 3"),
    ],
)
def test_usnat_errors(section: str, message: str) -> None:
    with pytest.raises(GPPError, match=r"section 7 \(usnat\).*" + message):
        gpp.decode(with_usnat(section))


def test_long_zero_padding_only_when_not_strict() -> None:
    s = with_usnat("CVVVkkkkkpFYAAAA")
    assert gpp.decode(s, strict=False).usnat == gpp.decode(with_usnat("CVVVkkkkkpFY")).usnat


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (GPPString(usnat=UsNat(version=3)), r"usnat version 3 is not supported"),
        (GPPString(usnat=UsNat(sale_opt_out=3)), r"usnat SaleOptOut is 3; allowed values are 0, 1, 2"),
        (
            GPPString(usnat=UsNat(mspa_covered_transaction=0)),
            r"usnat MspaCoveredTransaction is 0; allowed values are 1, 2",
        ),
        (GPPString(usnat=UsNat(version=1)), r"usnat version 1 needs 12 SensitiveDataProcessing values"),
        (GPPString(other={7: "CAAA"}), r"section id 7 cannot be raw text; use the tcf and usnat fields"),
        (GPPString(other={0: "x"}), r"section id 0 must be a positive integer"),
        (GPPString(other={6: "1Y~N"}), r"section 6 \(uspv1\) must be non-empty text"),
        (GPPString(tcf=make(cmp_id=5000)), r"section 2 \(tcfeuv2\): cannot encode: cmp_id is 5000"),
    ],
)
def test_encode_errors(value: GPPString, message: str) -> None:
    with pytest.raises(GPPError, match=message):
        gpp.encode(value)


# --------------------------------------------------------------------------------------------
# Candor's view: opt-outs and JSON
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usnat", "expected"),
    [
        (UsNat(), set()),
        (UsNat(sale_opt_out_notice=1, sale_opt_out=1), {"sale_sharing"}),
        (UsNat(sharing_opt_out_notice=1, sharing_opt_out=1), {"sale_sharing"}),
        (UsNat(sale_opt_out=2, sharing_opt_out=2, targeted_advertising_opt_out=2), set()),
        (UsNat(targeted_advertising_opt_out_notice=1, targeted_advertising_opt_out=1), {"advertising"}),
        (UsNat(gpc=True), {"sale_sharing", "advertising"}),
        (UsNat(gpc=False), set()),
    ],
)
def test_opt_outs_from_usnat(usnat: UsNat, expected: set[str]) -> None:
    assert gpp.opt_outs(GPPString(usnat=usnat)) == expected
    assert gpp.opt_outs(gpp.decode(gpp.encode(GPPString(usnat=usnat)))) == expected


def test_opt_outs_from_us_privacy_and_unread_state_sections() -> None:
    assert gpp.opt_outs(GPPString(other={6: "1YYN"})) == {"sale_sharing"}
    assert gpp.opt_outs(GPPString(other={6: "1YNN"})) == set()
    assert gpp.opt_outs(GPPString(other={6: "1---"})) == set()
    assert gpp.opt_outs(GPPString(other={6: "garbage"})) == {"sale_sharing"}  # unreadable: fail closed
    assert gpp.opt_outs(GPPString(other={6: "garbage"}), fail_closed=False) == set()
    california = GPPString(other={8: "BVgAAAAAAAA"})
    assert gpp.opt_outs(california) == {"sale_sharing", "advertising"}
    assert gpp.opt_outs(california, fail_closed=False) == set()
    assert gpp.opt_outs(GPPString(other={5: "CPXx"})) == set()  # Canadian TCF is not a US opt-out signal


def test_to_json() -> None:
    g = GPPString(tcf=make(vendor_consents=frozenset({755})), usnat=V2_MIXED, other={6: "1YNN", 99: "abc"})
    out = json.loads(json.dumps(gpp.to_json(g)))
    assert out["sectionIds"] == [2, 6, 7, 99]
    assert out["sections"]["tcfeuv2"]["vendor"]["consents"] == {"755": True}
    assert out["sections"]["uspv1"] == "1YNN" and out["sections"]["section99"] == "abc"
    usnat = out["sections"]["usnat"]
    assert usnat["Version"] == 2 and usnat["SaleOptOut"] == 1 and usnat["MspaServiceProviderMode"] == 2
    assert usnat["SensitiveDataProcessing"] == list(V2_MIXED.sensitive_data_processing)
    assert usnat["KnownChildSensitiveDataConsents"] == [2, 1, 0]
    assert usnat["Gpc"] is True and usnat["GpcSegmentIncluded"] is True
    assert out["optOuts"] == ["advertising", "sale_sharing"]


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------


@st.composite
def usnats(draw: st.DrawFn) -> UsNat:
    version = draw(st.sampled_from([1, 2]))
    sensitive, child = gpp.USNAT_LAYOUTS[version]
    two = st.integers(0, 2)
    return UsNat(
        version=version,
        sharing_notice=draw(two),
        sale_opt_out_notice=draw(two),
        sharing_opt_out_notice=draw(two),
        targeted_advertising_opt_out_notice=draw(two),
        sensitive_data_processing_opt_out_notice=draw(two),
        sensitive_data_limit_use_notice=draw(two),
        sale_opt_out=draw(two),
        sharing_opt_out=draw(two),
        targeted_advertising_opt_out=draw(two),
        sensitive_data_processing=tuple(draw(st.lists(two, min_size=sensitive, max_size=sensitive))),
        known_child_sensitive_data_consents=tuple(draw(st.lists(two, min_size=child, max_size=child))),
        personal_data_consents=draw(two),
        mspa_covered_transaction=draw(st.integers(1, 2)),
        mspa_opt_out_option_mode=draw(two),
        mspa_service_provider_mode=draw(two),
        gpc=draw(st.none() | st.booleans()),
    )


RAW_IDS = st.integers(1, 60).filter(lambda i: i not in (2, 3, 7))
RAW_TEXT = st.text(alphabet=string.ascii_letters + string.digits + "-_.", min_size=1, max_size=30)
gpp_strings = st.builds(
    GPPString,
    tcf=st.none() | tc_strings(),
    usnat=st.none() | usnats(),
    other=st.dictionaries(RAW_IDS, RAW_TEXT, max_size=5),
)


@FAST
@given(gpp_strings)
def test_encode_decode_round_trip(g: GPPString) -> None:
    s = gpp.encode(g)
    assert gpp.decode(s) == g
    assert gpp.encode(gpp.decode(s)) == s
    json.dumps(gpp.to_json(g))


@FAST
@given(st.lists(st.integers(1, 300), unique=True, max_size=12))
def test_header_round_trip(ids: list[int]) -> None:
    ids = [i for i in ids if i not in (2, 3, 7)]
    g = GPPString(other=dict.fromkeys(ids, "x"))
    assert gpp.decode(gpp.encode(g)).section_ids == tuple(sorted(ids))


def _decodes_or_gpp_error(s: str, strict: bool = True) -> None:
    try:
        result = gpp.decode(s, strict=strict)
    except GPPError:
        return
    assert isinstance(result, GPPString)


B64URL = string.ascii_letters + string.digits + "-_"


@settings(FAST, max_examples=150)
@given(st.text(max_size=100) | st.text(alphabet=B64URL + ".~", max_size=200), st.booleans())
def test_garbage_raises_only_gpp_error(s: str, strict: bool) -> None:
    _decodes_or_gpp_error(s, strict)


@settings(FAST, max_examples=150)
@given(gpp_strings, st.data())
def test_corrupted_strings_raise_only_gpp_error(g: GPPString, data: st.DataObject) -> None:
    s = gpp.encode(g)
    at = data.draw(st.integers(0, len(s) - 1))
    how = data.draw(st.sampled_from(["replace", "truncate", "insert"]))
    char = data.draw(st.sampled_from(B64URL + ".~=+ "))
    corrupted = {"replace": s[:at] + char + s[at + 1 :], "truncate": s[:at], "insert": s[:at] + char + s[at:]}[how]
    _decodes_or_gpp_error(corrupted)
