"""TCF v2.2 TC strings: public examples, iab-tcf cross-checks, every validation rule, round trips."""

from __future__ import annotations

import json
import string
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

import iab_tcf
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from candor.consent import tcf
from candor.consent.tcf import IdSet, PublisherRestriction, PublisherTC, TCFError, TCString

FAST = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY = datetime(2024, 5, 1, tzinfo=UTC)

# Public TC strings. The first three and the last two come from the IAB reference library's tests
# (iabgpp-es, TcfEuV2.test.ts); SPEC_* are the example strings of the TCF v2.2 specification
# ("Consent string and vendor list formats v2", May 2023). All predate TCF v2.2 (policy 2).
SERVICE_SPECIFIC_2022 = "CPSG_8APSG_8AAAAAAENAACgAAAAAAAAAAAAAAAAAAAA.YAAAAAAAAAAA"
CMP14_2022 = (
    "CPi8wgAPi8wgAAOACBENCuCoAP_AAEfAACiQJHNd_H__bX9n-f7_6ft0eY1f9_r37uQzDhfNk-8F3L_W_LwX_2E7NF36tq4KmR4ku1L"
    "BIUNtHMnUDUmxaokVrzHsak2cpzNKJ_BkknsZe2dYGF9vm5tj-QKZ7_5_d3f52T_9_9v-39z33913v3d93-_13LjdV5_9H_v9fR_b8_K"
    "f9_5-_4v8_____3_e______8AEEggCTDVuIAuxLHAm0DCKBECMKwkKoFABBQDC0QGADg4KdlYBPrCBAAgFAEYEQIcAUYEAgAAAgCQiACQ"
    "IsEAAAIgEAAIAEQiEABAwCCgAsDAIAAQDQMUQoABAkIMiAiKUwICIEggJbKhBKC6Q0wgCrLACgkRsFAAiAAAUgACAsHAMESAlYsECTFG"
    "-QAjBCgFEqFaAGGgAwABBI4RABgACCRwqADAAEEjgA"
)
CMP14_SEPT_2022 = (
    "CPgA5EAPgA5EAAOACBENCuCoAP_AAEfAACiQI0Nd_H__bX9n-f7_6Pt0cY1f9_r3ruQzDhfFk-8F3L_W3LwX32E7NF36pq4KmR4ku1L"
    "BIQFtHMnUDUmxaokVrzHsak2cpyNKI7BkknsZe2dYGF9Pm5lD-QKZ7_5_d3f52T_9_9v-39z339V3v3d93-_12PjdV599H_v9fR_b8_K"
    "f9_5-_4v8___4IQAAAAQQ_AJMNW4gC7EscCbQMIoAQIwrCQqAUAEFAMLRAYAODgpmVgEusIEACAUARgRAhxBRgQCAAACAJCIAJAiwQAIA"
    "iAQAAgARAIQAEDAIKACwMAgABANAxACgAECQgyICIpTAgIgSCAlsqEEoKpDTCAKssAKARGwUACIAABSAAICwcAwRICViwQJMUbwAw0AG"
    "AAIJHCIAMAAQSOFQAYAAgkcA"
)
GLOBAL_OOB_2022 = (
    "CPcqBNJPcqBNJNwAAAENAwCAAAAAAAAAAAAAAAAAAAAA.YAAAAAAAAAA."
    "QGLtV_T9fb2vj-_Z99_tkeYwf95y3p-wzhheMs-8NyZeH_B4Wv2MyvBX4JiQKGRgksjLBAQdtHGlcTQgBwIlViTLMYk2MjzNKJrJEils"
    "bO2dYGD9Pn8HT3ZCY70-vv__7v3ff_3g."
    "IGLtV_T9fb2vj-_Z99_tkeYwf95y3p-wzhheMs-8NyZeH_B4Wv2MyvBX4JiQKGRgksjLBAQdtHGlcTQgBwIlViTLMYk2MjzNKJrJEils"
    "bO2dYGD9Pn8HT3ZCY70-vv__7v3ff_3g"
)
DEFAULTS_WITH_OOB = "CAAAAAAAAAAAAAAAAAENAACAAAAAAAAAAAAAAAAAAAAA.QAAA.IAAA"
SPEC_MACRO_EXAMPLE = (
    "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA."
    "IFoEUQQgAIQwgIwQABAEAAAAOIAACAIAAAAQAIAgEAACEAAAAAgAQBAAAAAAAGBAAgAAAAAAAFAAECAAAgAAQARAEQAAAAAJAAIAAgAAAYQ"
    "EAAAQmAgBC3ZAYzUw"
)
SPEC_PUBLISHER_TC = (
    "CLcVDxRMWfGmWAVAHCENAXCkAKDAADnAABRgA5mdfCKZuYJez-NQm0TBMYA4oCAAGQYIAAAAAAEAIAEgAA.argAC0gAAAAAAAAAAAA"
)
PUBLIC_STRINGS = [
    SERVICE_SPECIFIC_2022,
    CMP14_2022,
    CMP14_SEPT_2022,
    GLOBAL_OOB_2022,
    DEFAULTS_WITH_OOB,
    SPEC_MACRO_EXAMPLE,
    SPEC_PUBLISHER_TC,
]


# --------------------------------------------------------------------------------------------
# Helpers: a TCString factory, iab-tcf, and hand-made bit strings for invalid input
# --------------------------------------------------------------------------------------------


def make(**fields: Any) -> TCString:
    base: dict[str, Any] = {
        "created": DAY,
        "last_updated": DAY,
        "cmp_id": 300,
        "cmp_version": 2,
        "consent_screen": 1,
        "consent_language": "EN",
        "vendor_list_version": 120,
        "tcf_policy_version": 4,
    }
    base.update(fields)
    return TCString(**base)


def iab(s: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # iab-tcf uses datetime.utcfromtimestamp
        return iab_tcf.decode_v2(s)


def iab_vendors(consent: Any, which: str) -> set[int]:
    if which == "consent":
        if consent.is_consent_range_encoding:
            return {i for a, b in consent.consented_vendors_range for i in range(a, b + 1)}
        return {i for i, flag in consent.consented_vendors.items() if flag}
    if consent.is_interests_range_encoding:
        return {i for a, b in consent.interests_vendors_range for i in range(a, b + 1)}
    return {i for i, flag in consent.interests_vendors.items() if flag}


def flagged(flags: dict[int, bool]) -> set[int]:
    return {i for i, flag in flags.items() if flag}


def assert_same_as_iab(s: str, tc: TCString) -> None:
    """Every field iab-tcf decodes agrees with ours."""
    theirs = iab(s)
    assert theirs.version == 2
    assert theirs.created == tc.created.replace(tzinfo=None, microsecond=0)
    assert theirs.last_updated == tc.last_updated.replace(tzinfo=None, microsecond=0)
    assert theirs.cmp_id == tc.cmp_id
    assert theirs.cmp_version == tc.cmp_version
    assert theirs.consent_screen == tc.consent_screen
    assert theirs.consent_language.decode() == tc.consent_language
    assert theirs.vendor_list_version == tc.vendor_list_version
    assert theirs.tcf_policy_version == tc.tcf_policy_version
    assert theirs.is_service_specific == tc.is_service_specific
    assert theirs.use_non_standard_stacks == tc.use_non_standard_texts  # same bit, renamed in v2.2
    assert flagged(theirs.special_features_optin) == set(tc.special_feature_optins)
    assert flagged(theirs.purposes_consent) == set(tc.purpose_consents)
    assert flagged(theirs.purposes_legitimate_interests) == set(tc.purpose_legitimate_interests)
    assert theirs.purpose_one_treatment == tc.purpose_one_treatment
    assert theirs.publisher_cc.decode() == tc.publisher_cc
    assert iab_vendors(theirs, "consent") == set(tc.vendor_consents)
    assert iab_vendors(theirs, "interest") == set(tc.vendor_legitimate_interests)
    restrictions: dict[tuple[int, int], set[int]] = {}
    for entry in theirs.pub_restriction_entries:
        ids = {i for a, b in entry.restrictions_range for i in range(a, b + 1)}
        restrictions.setdefault((entry.purpose_id, entry.restriction_type), set()).update(ids)
    assert {k: v for k, v in restrictions.items() if v} == {
        (r.purpose_id, r.restriction_type): set(r.vendors) for r in tc.publisher_restrictions
    }
    if tc.disclosed_vendors is None:
        assert not hasattr(theirs, "oob_disclosed_vendors")
    else:
        assert flagged(theirs.oob_disclosed_vendors) == set(tc.disclosed_vendors)
    if tc.publisher_tc is None:
        assert not hasattr(theirs, "publisher_tc")
    else:
        pub = theirs.publisher_tc
        assert flagged(pub.purposes_consent) == set(tc.publisher_tc.purpose_consents)
        assert flagged(pub.purposes_lit_transparency) == set(tc.publisher_tc.purpose_legitimate_interests)
        assert len(pub.custom_purposes_consent) == tc.publisher_tc.num_custom_purposes
        assert flagged(pub.custom_purposes_consent) == set(tc.publisher_tc.custom_purpose_consents)
        assert flagged(pub.custom_purposes_lit_transparency) == set(tc.publisher_tc.custom_purpose_legitimate_interests)


def bits_of(segment: str) -> str:
    """A base64url segment as a string of '0'/'1' (test-side, independent of the decoder)."""
    return "".join(
        format("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(c), "06b") for c in segment
    )


def b64(bits: str, pad_to: int = 24) -> str:
    """'0'/'1' text to base64url, zero-padded to a multiple of ``pad_to`` bits (then of 6)."""
    bits += "0" * (-len(bits) % pad_to)
    bits += "0" * (-len(bits) % 6)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(alphabet[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))


def f(value: int, width: int) -> str:
    return format(value, f"0{width}b")


# The fixed part of the core segment, in order (name, width), from the specification's table.
CORE_LAYOUT = [
    ("Version", 6),
    ("Created", 36),
    ("LastUpdated", 36),
    ("CmpId", 12),
    ("CmpVersion", 12),
    ("ConsentScreen", 6),
    ("ConsentLanguage", 12),
    ("VendorListVersion", 12),
    ("TcfPolicyVersion", 6),
    ("IsServiceSpecific", 1),
    ("UseNonStandardTexts", 1),
    ("SpecialFeatureOptIns", 12),
    ("PurposesConsent", 24),
    ("PurposesLITransparency", 24),
    ("PurposeOneTreatment", 1),
    ("PublisherCC", 12),
]
CORE_VALUES = {
    "Version": 2,
    "Created": 17_145_216_000,
    "LastUpdated": 17_145_216_000,
    "CmpId": 300,
    "CmpVersion": 2,
    "ConsentScreen": 1,
    "ConsentLanguage": (4 << 6) | 13,  # EN
    "VendorListVersion": 120,
    "TcfPolicyVersion": 4,
    "IsServiceSpecific": 1,
    "UseNonStandardTexts": 0,
    "SpecialFeatureOptIns": 0,
    "PurposesConsent": 0b111 << 21,  # purposes 1-3
    "PurposesLITransparency": 0,
    "PurposeOneTreatment": 0,
    "PublisherCC": (3 << 6) | 4,  # DE
}
NO_VENDORS = f(0, 16) + "0"  # MaxVendorId 0, bitfield
NO_RESTRICTIONS = f(0, 12)


def ranges(entries: list[tuple[int, int]]) -> str:
    out = f(len(entries), 12)
    for start, end in entries:
        out += "0" + f(start, 16) if start == end else "1" + f(start, 16) + f(end, 16)
    return out


def range_section(max_id: int, entries: list[tuple[int, int]]) -> str:
    return f(max_id, 16) + "1" + ranges(entries)


def restriction(purpose: int, kind: int, entries: list[tuple[int, int]]) -> str:
    return f(purpose, 6) + f(kind, 2) + ranges(entries)


def core(
    vendors: str = NO_VENDORS,
    li: str = NO_VENDORS,
    restrictions: str = NO_RESTRICTIONS,
    tail: str = "",
    **values: Any,
) -> str:
    """A core segment's bits; keyword arguments override fixed fields by specification name."""
    fields = CORE_VALUES | values
    return "".join(f(fields[name], width) for name, width in CORE_LAYOUT) + vendors + li + restrictions + tail


VALID_CORE = b64(core())


def test_hand_made_core_is_valid() -> None:
    tc = tcf.decode(VALID_CORE)
    assert tc.created == tc.last_updated == DAY
    assert (tc.cmp_id, tc.consent_language, tc.publisher_cc) == (300, "EN", "DE")
    assert tc.purpose_consents == {1, 2, 3}
    assert tcf.encode(tc) == VALID_CORE


# --------------------------------------------------------------------------------------------
# Public strings, field by field, and against iab-tcf
# --------------------------------------------------------------------------------------------


def test_service_specific_example_field_by_field_and_canonical() -> None:
    tc = tcf.decode(SERVICE_SPECIFIC_2022, strict=False)
    assert tc.created == tc.last_updated == datetime(2022, 1, 1, tzinfo=UTC)
    assert (tc.cmp_id, tc.cmp_version, tc.consent_screen) == (0, 0, 0)
    assert tc.consent_language == "EN"
    assert tc.vendor_list_version == 0
    assert tc.tcf_policy_version == 2
    assert tc.is_service_specific is True
    assert tc.use_non_standard_texts is False
    assert not tc.special_feature_optins and not tc.purpose_consents and not tc.purpose_legitimate_interests
    assert tc.purpose_one_treatment is False
    assert tc.publisher_cc == "AA"
    assert not tc.vendor_consents and not tc.vendor_legitimate_interests and tc.publisher_restrictions == ()
    assert tc.disclosed_vendors is None
    assert tc.publisher_tc == PublisherTC()
    # The reference encoder made this string, so ours must reproduce it bit for bit.
    assert tcf.encode(tc) == SERVICE_SPECIFIC_2022


def test_real_cmp_string_field_by_field() -> None:
    tc = tcf.decode(CMP14_2022, strict=False)
    assert (tc.cmp_id, tc.cmp_version, tc.consent_screen) == (14, 2, 1)
    assert tc.consent_language == "EN"
    assert tc.vendor_list_version == 174
    assert tc.tcf_policy_version == 2
    assert tc.is_service_specific is True
    assert tc.use_non_standard_texts is False
    assert tc.special_feature_optins == {1}
    assert tc.purpose_consents == set(range(1, 11))
    assert tc.purpose_legitimate_interests == {2, 6, 7, 8, 9, 10}  # LI for 6: legal before TCF v2.2
    assert tc.purpose_one_treatment is False
    assert tc.publisher_cc == "US"
    assert len(tc.vendor_consents) == 772
    assert len(tc.vendor_legitimate_interests) == 280
    assert tc.created == datetime(2022, 11, 24, tzinfo=UTC)


def test_global_scope_string_with_out_of_band_segments() -> None:
    tc = tcf.decode(GLOBAL_OOB_2022, strict=False)
    assert tc.cmp_id == 880
    assert tc.vendor_list_version == 48
    assert tc.is_service_specific is False
    assert tc.publisher_tc == PublisherTC()
    disclosed = sorted(tc.disclosed_vendors or ())
    assert len(disclosed) == 434
    assert disclosed[:10] == [1, 2, 4, 6, 8, 10, 11, 12, 13, 14]
    assert disclosed[-9:] == [782, 783, 784, 785, 786, 788, 789, 790, 791]


def test_defaults_with_empty_out_of_band_segments() -> None:
    tc = tcf.decode(DEFAULTS_WITH_OOB, strict=False)
    assert tc.created == EPOCH
    assert tc.disclosed_vendors == set()  # present but empty, unlike None
    assert tc.publisher_tc is None


@pytest.mark.parametrize("s", PUBLIC_STRINGS)
def test_public_strings_agree_with_iab_tcf(s: str) -> None:
    assert_same_as_iab(s, tcf.decode(s, strict=False))


@pytest.mark.parametrize("s", PUBLIC_STRINGS)
def test_public_strings_reencode_to_the_same_content(s: str) -> None:
    tc = tcf.decode(s, strict=False)
    assert tcf.decode(tcf.encode(tc), strict=False) == tc


@pytest.mark.parametrize("s", PUBLIC_STRINGS)
def test_pre_v22_strings_need_strict_false(s: str) -> None:
    with pytest.raises(TCFError, match=r"TcfPolicyVersion is 2 at bit offset 132.*strict=False"):
        tcf.decode(s)


# --------------------------------------------------------------------------------------------
# Validation: every rule has a failing example
# --------------------------------------------------------------------------------------------


def test_rejects_non_strings_and_empty() -> None:
    with pytest.raises(TCFError, match="must be a str, not NoneType"):
        tcf.decode(None)  # type: ignore[arg-type]
    with pytest.raises(TCFError, match="the TC string is empty"):
        tcf.decode("")


@pytest.mark.parametrize(
    ("s", "message"),
    [
        (VALID_CORE + "=", r"invalid character '=' at position \d+: .*without '=' padding"),
        (VALID_CORE[:10] + "+" + VALID_CORE[11:], r"invalid character '\+' at position 10"),
        (VALID_CORE[:10] + "/" + VALID_CORE[11:], r"invalid character '/' at position 10"),
        (VALID_CORE + "\n", r"invalid character U\+000A at position \d+"),
        (" " + VALID_CORE, r"invalid character ' ' at position 0"),
        (VALID_CORE[:5] + "é" + VALID_CORE[6:], r"invalid character 'é' at position 5"),
    ],
)
def test_strict_base64url_alphabet(s: str, message: str) -> None:
    with pytest.raises(TCFError, match=message):
        tcf.decode(s)


@pytest.mark.parametrize(
    ("s", "message"),
    [
        (VALID_CORE + "..IAAA", "segment 2 is empty"),
        (VALID_CORE + ".", "segment 2 is empty"),
        ("." + VALID_CORE, "core segment is empty"),
    ],
)
def test_empty_segments(s: str, message: str) -> None:
    with pytest.raises(TCFError, match=message):
        tcf.decode(s)


@pytest.mark.parametrize(
    ("version", "message"),
    [(1, r"Version is 1 at bit offset 0, expected 2 \(TCF v1"), (3, "Version is 3 at bit offset 0, expected 2")],
)
def test_version_must_be_2(version: int, message: str) -> None:
    with pytest.raises(TCFError, match=message):
        tcf.decode(b64(core(Version=version)))


@pytest.mark.parametrize(
    ("chars", "message"),
    [
        (1, r"core segment: field Created needs 36 bits at bit offset 6 but the segment has only 0 bits left"),
        (10, r"field LastUpdated needs 36 bits at bit offset 42 but the segment has only 18 bits left"),
        (30, r"field PurposesLITransparency needs 24 bits at bit offset 176 but the segment has only 4 bits left"),
        (36, r"field vendor consents MaxVendorId needs 16 bits at bit offset 213 but the segment has only 3 bits"),
    ],
)
def test_truncated_core(chars: int, message: str) -> None:
    with pytest.raises(TCFError, match=message):
        tcf.decode(VALID_CORE[:chars])


def test_truncated_bitfield_names_its_section_and_offset() -> None:
    s = b64(core(vendors=f(500, 16) + "0" + "1" * 100), pad_to=6)
    with pytest.raises(TCFError, match=r"vendor consents BitField \(500 bits for MaxVendorId 500\) needs 500 bits at"):
        tcf.decode(s)


def test_policy_version_must_be_4_or_later_when_strict() -> None:
    s = b64(core(TcfPolicyVersion=3))
    with pytest.raises(TCFError, match=r"TcfPolicyVersion is 3 at bit offset 132; TCF v2.2 strings need 4"):
        tcf.decode(s)
    assert tcf.decode(s, strict=False).tcf_policy_version == 3


def test_global_scope_is_invalid() -> None:
    s = b64(core(IsServiceSpecific=0))
    with pytest.raises(
        TCFError,
        match=r"IsServiceSpecific is 0 at bit offset 138; globally-scoped TC strings are invalid and TCF v2.2 requires",
    ):
        tcf.decode(s)
    # strict=False relaxes it only for strings from before TCF v2.2.
    with pytest.raises(TCFError, match="IsServiceSpecific is 0"):
        tcf.decode(s, strict=False)
    assert tcf.decode(b64(core(IsServiceSpecific=0, TcfPolicyVersion=2)), strict=False).is_service_specific is False


@pytest.mark.parametrize(
    ("purposes", "listed"),
    [({1}, "1"), ({3}, "3"), ({3, 5}, "3, 5"), ({4, 6, 2}, "4, 6"), ({1, 3, 4, 5, 6, 7}, "1, 3, 4, 5, 6")],
)
def test_no_legitimate_interest_for_purposes_1_and_3_to_6(purposes: set[int], listed: str) -> None:
    li = sum(1 << (24 - p) for p in purposes)
    with pytest.raises(
        TCFError,
        match=rf"PurposesLITransparency \(bit offset 176\) sets legitimate interest for purpose\(s\) {listed};",
    ):
        tcf.decode(b64(core(PurposesLITransparency=li)))


def test_legitimate_interest_for_other_purposes_is_fine() -> None:
    li = sum(1 << (24 - p) for p in (2, 7, 8, 9, 10, 11))
    assert tcf.decode(b64(core(PurposesLITransparency=li))).purpose_legitimate_interests == {2, 7, 8, 9, 10, 11}
    old = b64(core(PurposesLITransparency=li | (1 << 21), TcfPolicyVersion=2))  # purpose 3, policy 2
    assert 3 in tcf.decode(old, strict=False).purpose_legitimate_interests


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("ConsentLanguage", (26 << 6) | 1, r"field ConsentLanguage has letter value 26 at bit offset 108"),
        ("ConsentLanguage", (4 << 6) | 63, r"field ConsentLanguage has letter value 63 at bit offset 114"),
        ("PublisherCC", (1 << 6) | 40, r"field PublisherCC has letter value 40 at bit offset 207"),
    ],
)
def test_letters_are_a_to_z(field: str, value: int, message: str) -> None:
    values: dict[str, Any] = {field: value}
    with pytest.raises(TCFError, match=message):
        tcf.decode(b64(core(**values)))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            range_section(100, [(10, 20), (5, 7)]),
            r"range entry 2 at bit offset 275 starts at vendor 5 but the previous entry ended at vendor 20; range "
            "entries must be in ascending order",
        ),
        (
            range_section(100, [(10, 20), (20, 30)]),
            r"range entry 2 at bit offset 275 starts at vendor 20 but the previous entry ended at vendor 20",
        ),
        (range_section(100, [(0, 3)]), r"range entry 1 at bit offset 242 starts at vendor id 0; vendor ids start at 1"),
        (range_section(100, [(9, 4)]), r"range entry 1 at bit offset 242 ends at vendor 4, before its start vendor 9"),
        (
            range_section(10, [(2, 3), (8, 11)]),
            r"range entry 2 at bit offset 275 reaches vendor 11, beyond MaxVendorId 10",
        ),
        (range_section(10, [(12, 12)]), r"range entry 1 at bit offset 242 reaches vendor 12, beyond MaxVendorId 10"),
    ],
    ids=["descending", "overlapping", "vendor-0", "end-before-start", "beyond-max", "single-beyond-max"],
)
def test_range_entries(section: str, message: str) -> None:
    with pytest.raises(TCFError, match="core segment: vendor consents " + message):
        tcf.decode(b64(core(vendors=section)))


def test_range_entries_in_legitimate_interest_section_are_named() -> None:
    with pytest.raises(
        TCFError, match=r"vendor legitimate interests range entry 1 at bit offset \d+ starts at vendor id 0"
    ):
        tcf.decode(b64(core(li=range_section(5, [(0, 0)]))))


def test_truncated_range_entry() -> None:
    bits = core(vendors=f(100, 16) + "1" + f(2, 12) + "0" + f(5, 16), li="", restrictions="")  # 2 entries, 1 given
    with pytest.raises(TCFError, match=r"vendor consents range entry 2 of 2 \(IsARange, StartOrOnlyVendorId\) needs"):
        tcf.decode(b64(bits, pad_to=6))


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (
            [restriction(0, 0, [(1, 1)])],
            r"publisher restriction 1 of 1 at bit offset 259 has PurposeId 0; purposes are 1-24",
        ),
        ([restriction(25, 1, [(1, 1)])], r"has PurposeId 25; purposes are 1-24"),
        (
            [restriction(2, 3, [(1, 1)])],
            r"publisher restriction 1 of 1 at bit offset 265 has RestrictionType 3, which is undefined",
        ),
        (
            [restriction(2, 0, [(1, 1)]), restriction(2, 0, [(5, 5)])],
            r"restriction 2 of 2 at bit offset \d+ repeats purpose 2 with restriction type 0 \(already in entry 1\)",
        ),
        (
            [restriction(2, 0, [(1, 10)]), restriction(2, 1, [(10, 12)])],
            r"gives vendor 10 restriction type 1 for purpose 2, which already has type 0; a vendor has at most one",
        ),
        (
            [restriction(2, 1, [(7, 7), (3, 3)])],
            r"publisher restriction 1 of 1 range entry 2 at bit offset \d+ starts at vendor 3",
        ),
    ],
)
def test_publisher_restrictions(entries: list[str], message: str) -> None:
    bits = core(restrictions=f(len(entries), 12) + "".join(entries))
    with pytest.raises(TCFError, match=message):
        tcf.decode(b64(bits))


def test_restrictions_decode_and_skip_empty_entries() -> None:
    entries = restriction(2, 1, [(3, 5)]) + restriction(7, 0, []) + restriction(2, 0, [(9, 9)])
    tc = tcf.decode(b64(core(restrictions=f(3, 12) + entries)))
    assert tc.publisher_restrictions == (
        PublisherRestriction(2, 0, frozenset({9})),
        PublisherRestriction(2, 1, frozenset({3, 4, 5})),
    )


def disclosed(ids: list[tuple[int, int]], max_id: int) -> str:
    return b64("001" + range_section(max_id, ids))


def test_optional_segments() -> None:
    pub = b64("011" + f(0b11 << 22, 24) + f(1 << 22, 24) + f(3, 6) + "101" + "010")
    tc = tcf.decode(".".join([VALID_CORE, disclosed([(1, 3), (7, 7)], 7), pub]))
    assert tc.disclosed_vendors == {1, 2, 3, 7}
    assert tc.publisher_tc == PublisherTC(frozenset({1, 2}), frozenset({2}), 3, frozenset({1, 3}), frozenset({2}))


def test_allowed_vendors_segment_is_checked_then_ignored() -> None:
    allowed = b64("010" + range_section(9, [(1, 9)]))
    assert tcf.decode(VALID_CORE + "." + allowed) == tcf.decode(VALID_CORE)
    broken = b64("010" + range_section(9, [(4, 2)]))
    with pytest.raises(
        TCFError,
        match=r"segment 2 \(allowed vendors\): allowed vendors range entry 1 at bit offset 32 ends at vendor 2",
    ):
        tcf.decode(VALID_CORE + "." + broken)


@pytest.mark.parametrize(
    ("segments", "message"),
    [
        (
            [b64("000" + "0" * 21)],
            r"segment 2: field SegmentType is 0 \(core\) at bit offset 0; the core segment may only come first",
        ),
        ([b64("101" + "0" * 21)], r"segment 2: field SegmentType is 5 at bit offset 0, an unknown segment type"),
        ([b64("111" + "0" * 21)], r"SegmentType is 7 at bit offset 0, an unknown segment type"),
        (
            [disclosed([(1, 1)], 1), disclosed([(2, 2)], 2)],
            r"segment 3: duplicate disclosed vendors segment \(type 1\); segment 2 already is one",
        ),
        (
            [b64("011" + "0" * 54), disclosed([(1, 1)], 1), b64("011" + "0" * 54)],
            r"segment 4: duplicate publisher TC segment \(type 3\)",
        ),
    ],
)
def test_segment_types(segments: list[str], message: str) -> None:
    with pytest.raises(TCFError, match=message):
        tcf.decode(".".join([VALID_CORE, *segments]))


def test_truncated_publisher_tc() -> None:
    pub = b64("011" + f(0, 24) + f(0, 24) + f(40, 6) + "1" * 10, pad_to=6)
    with pytest.raises(
        TCFError, match=r"segment 2 \(publisher TC\): field CustomPurposesConsent needs 40 bits at bit offset 57"
    ):
        tcf.decode(VALID_CORE + "." + pub)


def test_trailing_data_must_be_zero_padding() -> None:
    with pytest.raises(TCFError, match=r"core segment: unexpected data after the last field at bit offset 259"):
        tcf.decode(b64(core(tail="1")))
    with pytest.raises(
        TCFError, match=r"segment 2 \(disclosed vendors\): unexpected data after the last field at bit offset 49"
    ):
        tcf.decode(VALID_CORE + "." + b64("001" + range_section(1, [(1, 1)]) + "0001"))


def test_long_zero_padding_only_when_not_strict() -> None:
    padded = b64(core(tail="0" * 30))
    with pytest.raises(
        TCFError, match=r"core segment: \d+ bits of zero padding after the last field at bit offset 259; at most 23"
    ):
        tcf.decode(padded)
    assert tcf.decode(padded, strict=False) == tcf.decode(VALID_CORE)


def test_padding_to_a_byte_or_a_base64_quantum_is_fine() -> None:
    plain = tcf.decode(VALID_CORE)
    assert tcf.decode(b64(core(), pad_to=8)) == plain
    assert tcf.decode(b64(core(), pad_to=6)) == plain


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def is_range_encoded(s: str) -> bool:
    return bits_of(s.split(".")[0])[213 + 16] == "1"  # IsRangeEncoding after MaxVendorId


def test_encoder_picks_the_shorter_vendor_encoding() -> None:
    block = make(vendor_consents=frozenset(range(1, 1001)))
    assert is_range_encoded(tcf.encode(block))  # 12 + 33 bits instead of 1000
    dense = make(vendor_consents=frozenset(range(1, 1001, 2)))
    assert not is_range_encoded(tcf.encode(dense))  # 500 singles would take 8512 bits
    few = make(vendor_consents=frozenset({3, 900}))
    assert is_range_encoded(tcf.encode(few))
    # Tie: bitfield of 46 bits against 12 + 17 + 17 bits of ranges; the bitfield is kept.
    tie = make(vendor_consents=frozenset({1, 46}))
    assert not is_range_encoded(tcf.encode(tie))
    for tc in (block, dense, few, tie):
        assert tcf.decode(tcf.encode(tc)) == tc


def test_encoder_matches_iab_reference_on_a_vendor_string() -> None:
    # CMP14_SEPT_2022 came out of the reference encoder; re-encoding its content is bit-exact.
    assert tcf.encode(tcf.decode(CMP14_SEPT_2022, strict=False)) == CMP14_SEPT_2022


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cmp_id": 4096}, r"cannot encode: cmp_id is 4096; it must be an integer 0-4095 \(12 bits\)"),
        ({"consent_screen": -1}, r"consent_screen is -1"),
        ({"tcf_policy_version": 64}, r"tcf_policy_version is 64"),
        ({"created": datetime(2024, 5, 1)}, r"created must be a timezone-aware datetime"),
        ({"last_updated": datetime(1960, 1, 1, tzinfo=UTC)}, r"last_updated 1960-01-01T00:00:00\+00:00 is outside"),
        ({"consent_language": "E1"}, r"consent_language is 'E1'; it must be two letters A-Z"),
        ({"publisher_cc": "DEU"}, r"publisher_cc is 'DEU'"),
        ({"purpose_consents": frozenset({25})}, r"purpose_consents holds 25; ids here are integers 1-24"),
        ({"special_feature_optins": frozenset({13})}, r"special_feature_optins holds 13"),
        ({"purpose_legitimate_interests": frozenset({2, 4})}, r"purpose_legitimate_interests holds 4; TCF v2.2 allows"),
        ({"is_service_specific": False}, r"is_service_specific must be True"),
        (
            {"publisher_restrictions": (PublisherRestriction(2, 3, frozenset({1})),)},
            r"the restriction for purpose 2 has type 3",
        ),
        (
            {"publisher_restrictions": (PublisherRestriction(30, 0, frozenset({1})),)},
            r"a publisher restriction has purpose 30",
        ),
        (
            {"publisher_restrictions": (PublisherRestriction(2, 0, frozenset()),)},
            r"the type 0 restriction for purpose 2 has no vendors",
        ),
        (
            {
                "publisher_restrictions": (
                    PublisherRestriction(2, 0, frozenset({1})),
                    PublisherRestriction(2, 0, frozenset({2})),
                )
            },
            r"purpose 2 has two restrictions of type 0; merge their vendors",
        ),
        (
            {
                "publisher_restrictions": (
                    PublisherRestriction(2, 0, frozenset({1, 5})),
                    PublisherRestriction(2, 2, frozenset({5})),
                )
            },
            r"vendor 5 has restriction types 0 and 2 for purpose 2",
        ),
        (
            {"publisher_tc": PublisherTC(custom_purpose_consents=frozenset({1}))},
            r"publisher_tc.custom_purpose_consents is not empty but num_custom_purposes is 0",
        ),
        (
            {"publisher_tc": PublisherTC(num_custom_purposes=2, custom_purpose_consents=frozenset({3}))},
            r"publisher_tc.custom_purpose_consents holds 3; ids here are integers 1-2",
        ),
    ],
)
def test_encode_rejects_invalid_values(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(TCFError, match=message):
        tcf.encode(make(**fields))


def test_id_sets_are_checked_when_built() -> None:
    with pytest.raises(TCFError, match=r"vendor_consents: ids are integers 1-65535, not 0"):
        make(vendor_consents={0, 1})
    with pytest.raises(TCFError, match=r"purpose_consents: ids are integers 1-65535, not str '1'"):
        make(purpose_consents=["1"])
    with pytest.raises(TCFError, match=r"vendor_consents must be a set of ids, not int"):
        make(vendor_consents=5)


def test_old_policy_versions_can_still_be_encoded_for_records() -> None:
    old = make(tcf_policy_version=2, is_service_specific=False, purpose_legitimate_interests=frozenset({3}))
    assert tcf.decode(tcf.encode(old), strict=False) == old


def test_timestamps_are_floored_to_deciseconds() -> None:
    tc = make(created=datetime(2024, 5, 1, 12, 0, 0, 123_456, tzinfo=UTC))
    assert tcf.decode(tcf.encode(tc)).created == datetime(2024, 5, 1, 12, 0, 0, 100_000, tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# IdSet
# --------------------------------------------------------------------------------------------


def test_id_set_behaves_like_a_frozenset() -> None:
    ids = IdSet({5, 1, 700})
    assert ids == frozenset({1, 5, 700}) and frozenset({1, 5, 700}) == ids
    assert hash(ids) == hash(frozenset({1, 5, 700}))
    assert list(ids) == [1, 5, 700] and len(ids) == 3 and ids.max_id == 700
    assert 5 in ids and 6 not in ids and 0 not in ids and "5" not in ids and 10**9 not in ids
    assert ids & IdSet({5, 6}) == {5} and ids | IdSet({6}) == {1, 5, 6, 700} and ids - IdSet({1}) == {5, 700}
    assert ids & {5, 6} == {5} and ids | {6} == {1, 5, 6, 700} and ids - {1} == {5, 700}
    assert IdSet({1}) <= ids and ids >= {1, 5} and not ids <= {1}
    assert repr(IdSet()) == "IdSet()" and repr(IdSet({2, 1})) == "IdSet({1, 2})"
    assert not IdSet() and IdSet.from_mask(0b110) == {1, 2} and IdSet({3}).mask == 0b1000
    with pytest.raises(ValueError, match="ids are integers 1-65535, not 65536"):
        IdSet({65536})
    with pytest.raises(ValueError, match="bits 1-65535"):
        IdSet.from_mask(1)


# --------------------------------------------------------------------------------------------
# TCData JSON
# --------------------------------------------------------------------------------------------


def test_to_tcdata_shape() -> None:
    tc = make(
        special_feature_optins=frozenset({1}),
        purpose_consents=frozenset({1, 2}),
        purpose_legitimate_interests=frozenset({7}),
        vendor_consents=frozenset({755, 2}),
        vendor_legitimate_interests=frozenset({10}),
        publisher_restrictions=(PublisherRestriction(2, 1, frozenset({755, 8})),),
        disclosed_vendors=frozenset({2, 10, 755}),
        publisher_tc=PublisherTC(frozenset({1}), frozenset(), 2, frozenset({2}), frozenset()),
    )
    data = tcf.to_tcdata(tc)
    assert data["cmpId"] == 300 and data["cmpVersion"] == 2 and data["tcfPolicyVersion"] == 4
    assert data["isServiceSpecific"] is True and data["useNonStandardTexts"] is False
    assert data["publisherCC"] == "AA" and data["purposeOneTreatment"] is False
    assert data["purpose"]["consents"] == {str(i): i in (1, 2) for i in range(1, 25)}
    assert data["purpose"]["legitimateInterests"]["7"] is True and len(data["purpose"]["legitimateInterests"]) == 24
    assert data["specialFeatureOptins"] == {str(i): i == 1 for i in range(1, 13)}
    assert data["vendor"] == {"consents": {"2": True, "755": True}, "legitimateInterests": {"10": True}}
    assert data["publisher"]["restrictions"] == {"2": {"8": 1, "755": 1}}
    assert data["publisher"]["consents"]["1"] is True and len(data["publisher"]["consents"]) == 24
    assert data["publisher"]["customPurpose"] == {
        "consents": {"1": False, "2": True},
        "legitimateInterests": {"1": False, "2": False},
    }
    assert data["created"] == data["lastUpdated"] == "2024-05-01T00:00:00.000Z"
    assert (data["consentLanguage"], data["vendorListVersion"], data["consentScreen"]) == ("EN", 120, 1)
    assert data["disclosedVendors"] == {"2": True, "10": True, "755": True}
    assert tcf.from_tcdata(json.loads(json.dumps(data))) == tc


def test_to_tcdata_without_optional_segments() -> None:
    data = tcf.to_tcdata(make())
    assert data["disclosedVendors"] is None
    assert data["publisher"] == {
        "consents": {},
        "legitimateInterests": {},
        "customPurpose": {"consents": {}, "legitimateInterests": {}},
        "restrictions": {},
    }
    assert tcf.from_tcdata(data) == make()


def test_from_tcdata_accepts_cmp_api_extras_and_false_vendors() -> None:
    data = tcf.to_tcdata(make(vendor_consents=frozenset({4})))
    data |= {"tcString": "ignored", "gdprApplies": True, "eventStatus": "tcloaded", "cmpStatus": "loaded"}
    data["vendor"]["consents"]["9"] = False
    data["created"] = "2024-05-01T02:00:00+02:00"
    assert tcf.from_tcdata(data) == make(vendor_consents=frozenset({4}))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("cmpId"), r"tcdata: cmpId is missing"),
        (lambda d: d["purpose"].pop("consents"), r"tcdata: purpose.consents is missing"),
        (lambda d: d.update(cmpId="7"), r"tcdata: cmpId must be an integer 0-4095, not '7'"),
        (lambda d: d.update(isServiceSpecific=1), r"tcdata: isServiceSpecific must be true or false, not 1"),
        (lambda d: d["purpose"]["consents"].update({"25": True}), r"purpose.consents has key '25'; keys are ids 1-24"),
        (lambda d: d["vendor"]["consents"].update({"x": True}), r"vendor.consents has key 'x'"),
        (lambda d: d["vendor"]["consents"].update({"3": "yes"}), r"vendor.consents\['3'\] must be true or false"),
        (lambda d: d.update(created="yesterday"), r"tcdata: created is not an ISO-8601 timestamp"),
        (lambda d: d.update(created="2024-05-01T00:00:00"), r"created '2024-05-01T00:00:00' has no timezone"),
        (lambda d: d.update(consentLanguage="e"), r"consentLanguage must be two letters A-Z"),
        (
            lambda d: d["publisher"].update(restrictions={"2": {"5": 3}}),
            r"publisher.restrictions\['2'\]\['5'\] must be a restriction type",
        ),
        (lambda d: d.update(vendor=[]), r"tcdata: vendor must be an object, not list"),
    ],
)
def test_from_tcdata_errors(change: Any, message: str) -> None:
    data = tcf.to_tcdata(make())
    change(data)
    with pytest.raises(TCFError, match=message):
        tcf.from_tcdata(data)


# --------------------------------------------------------------------------------------------
# Candor purposes
# --------------------------------------------------------------------------------------------


def test_default_purpose_map_fails_closed() -> None:
    everything = make(purpose_consents=frozenset(range(1, 11)))
    assert tcf.purposes_allowed(everything) == {"advertising": True, "personalization": True, "analytics": True}
    no_storage = make(purpose_consents=frozenset(range(2, 11)))
    assert tcf.purposes_allowed(no_storage) == {"advertising": False, "personalization": False, "analytics": False}
    partial = make(purpose_consents=frozenset({1, 2, 3, 4, 5, 7, 8, 9}), purpose_legitimate_interests=frozenset({10}))
    # analytics needs 7, 8, 9 and 10 by consent (LI does not count); personalization needs 5 and 6.
    assert tcf.purposes_allowed(partial) == {"advertising": True, "personalization": False, "analytics": False}


def test_custom_mapping_and_publisher_segment() -> None:
    tc = make(
        purpose_consents=frozenset({1, 7}),
        publisher_tc=PublisherTC(purpose_consents=frozenset({1, 2, 3, 4})),
    )
    assert tcf.purposes_allowed(tc, {7: "measurement", 2: "ads"}) == {"measurement": True, "ads": False}
    assert tcf.purposes_allowed(tc, {2: "ads"}, publisher=True) == {"ads": True}
    assert tcf.purposes_allowed(make(), {2: "ads"}, publisher=True) == {"ads": False}
    assert tcf.purposes_allowed(tc, {7: "measurement"}, preconditions=frozenset()) == {"measurement": True}


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

LI_ALLOWED = [2, *range(7, 25)]


def _dense(mask: int) -> frozenset[int]:
    return frozenset(i for i in range(1, 1201) if mask >> (i - 1) & 1)


def _blocks(blocks: list[tuple[int, int]]) -> frozenset[int]:
    return frozenset(i for start, length in blocks for i in range(start, min(start + length, 65535) + 1))


vendor_sets: st.SearchStrategy[frozenset[int]] = st.one_of(
    st.just(frozenset()),
    st.frozensets(st.integers(1, 65535), max_size=12),
    st.integers(0, (1 << 1200) - 1).map(_dense),
    st.integers(1, 1200).map(lambda n: frozenset(range(1, n + 1))),
    st.lists(st.tuples(st.integers(1, 3000), st.integers(0, 200)), max_size=6).map(_blocks),
)


def _restrictions(spec: dict[int, dict[int, int]]) -> tuple[PublisherRestriction, ...]:
    out: list[PublisherRestriction] = []
    for purpose, per_vendor in spec.items():
        by_type: dict[int, set[int]] = {}
        for vendor, kind in per_vendor.items():
            by_type.setdefault(kind, set()).add(vendor)
        out.extend(PublisherRestriction(purpose, kind, frozenset(v)) for kind, v in by_type.items())
    return tuple(out)


restriction_sets = st.dictionaries(
    st.integers(1, 24),
    st.dictionaries(st.integers(1, 2500), st.integers(0, 2), min_size=1, max_size=20),
    max_size=4,
).map(_restrictions)


@st.composite
def publisher_tcs(draw: st.DrawFn) -> PublisherTC:
    n = draw(st.integers(0, 63))
    custom = st.frozensets(st.integers(1, n), max_size=n) if n else st.just(frozenset[int]())
    purposes = st.frozensets(st.integers(1, 24))
    return PublisherTC(draw(purposes), draw(purposes), n, draw(custom), draw(custom))


@st.composite
def tc_strings(draw: st.DrawFn) -> TCString:
    """Any TCString that a TCF v2.2 CMP may write."""
    created = EPOCH + timedelta(milliseconds=100 * draw(st.integers(14_000_000_000, 30_000_000_000)))
    updated = created + timedelta(milliseconds=100 * draw(st.integers(0, 1_000_000_000)))
    letters = st.text(alphabet=string.ascii_uppercase, min_size=2, max_size=2)
    return TCString(
        created=created,
        last_updated=updated,
        cmp_id=draw(st.integers(0, 4095)),
        cmp_version=draw(st.integers(0, 4095)),
        consent_screen=draw(st.integers(0, 63)),
        consent_language=draw(letters),
        vendor_list_version=draw(st.integers(0, 4095)),
        tcf_policy_version=draw(st.integers(4, 63)),
        use_non_standard_texts=draw(st.booleans()),
        special_feature_optins=draw(st.frozensets(st.integers(1, 12))),
        purpose_consents=draw(st.frozensets(st.integers(1, 24))),
        purpose_legitimate_interests=draw(st.frozensets(st.sampled_from(LI_ALLOWED))),
        purpose_one_treatment=draw(st.booleans()),
        publisher_cc=draw(letters),
        vendor_consents=draw(vendor_sets),
        vendor_legitimate_interests=draw(vendor_sets),
        publisher_restrictions=draw(restriction_sets),
        disclosed_vendors=draw(st.none() | vendor_sets),
        publisher_tc=draw(st.none() | publisher_tcs()),
    )


@FAST
@given(tc_strings())
def test_encode_decode_round_trip(tc: TCString) -> None:
    s = tcf.encode(tc)
    assert tcf.decode(s) == tc
    assert tcf.encode(tcf.decode(s)) == s


@FAST
@given(tc_strings())
def test_tcdata_round_trip(tc: TCString) -> None:
    data = json.loads(json.dumps(tcf.to_tcdata(tc)))
    assert tcf.from_tcdata(data) == tc
    assert tcf.encode(tcf.from_tcdata(data)) == tcf.encode(tc)


@settings(FAST, max_examples=40)
@given(tc_strings())
def test_random_strings_agree_with_iab_tcf(tc: TCString) -> None:
    s = tcf.encode(tc)
    assert_same_as_iab(s, tcf.decode(s))


B64URL = string.ascii_letters + string.digits + "-_"


def _decodes_or_tcf_error(s: str, strict: bool = True) -> None:
    try:
        result = tcf.decode(s, strict=strict)
    except TCFError:
        return
    assert isinstance(result, TCString)


@settings(FAST, max_examples=150)
@given(st.text(max_size=120) | st.text(alphabet=B64URL + ".", max_size=400), st.booleans())
def test_garbage_raises_only_tcf_error(s: str, strict: bool) -> None:
    _decodes_or_tcf_error(s, strict)


@settings(FAST, max_examples=150)
@given(tc_strings(), st.data())
def test_corrupted_strings_raise_only_tcf_error(tc: TCString, data: st.DataObject) -> None:
    s = tcf.encode(tc)
    at = data.draw(st.integers(0, len(s) - 1))
    how = data.draw(st.sampled_from(["replace", "truncate", "insert"]))
    char = data.draw(st.sampled_from(B64URL + ".=+/ "))
    corrupted = {"replace": s[:at] + char + s[at + 1 :], "truncate": s[:at], "insert": s[:at] + char + s[at:]}[how]
    _decodes_or_tcf_error(corrupted)
