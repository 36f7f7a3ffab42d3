"""IAB Global Privacy Platform (GPP) strings: header, EU TCF v2 and US national (usnat) sections.

A GPP string is ``header~section~section...`` (IAB Tech Lab "Global Privacy Platform String",
v1.0). The header is base64url bits: ``Type`` int(6) = 3, ``Version`` int(6) = 1, then the section
ids as a Fibonacci range: int(12) entry count, and per entry a bit (0 single id, 1 group), the
Fibonacci-coded offset from the previous id (from 0 for the first entry) and, for a group, the
Fibonacci-coded distance from its first to its last id. Sections follow in the order of their ids.

Decoded here:

* section 2, ``tcfeuv2``: a full TC string, decoded by :func:`candor.consent.tcf.decode` (``strict``
  is passed through);
* section 7, ``usnat`` (MSPA US National, "IAB Privacy's MSPA US National Technical
  Specification"): core segment version 1 (12 sensitive-data categories, 2 known-child fields,
  60 bits) or version 2 (16 and 3, 70 bits), and the optional GPC subsection
  (``SubsectionType`` int(2) = 1, ``Gpc`` 1 bit) after a ``.``.

Every other section id is kept as its raw text in :attr:`GPPString.other`. Two-bit usnat fields
must be 0-2 (0 not applicable, 1 yes / opted out / no consent, 2 no / did not opt out / consent, as
each field's table says) and ``MspaCoveredTransaction`` 1 or 2; bits after the last field must be
zero padding (fewer than 24 bits when ``strict``). Errors are :class:`GPPError` naming the
section, field and bit offset.

:func:`encode` writes the header and sections the way the IAB reference library (iabgpp-es) does:
each bit string padded with zeros to a byte boundary and then to a whole base64 character.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from candor.consent import tcf
from candor.consent.tcf import TCFError, TCString

__all__ = ["GPPError", "GPPString", "UsNat", "decode", "encode", "opt_outs", "to_json"]


class GPPError(ValueError):
    """A GPP string is malformed or holds a value its specification does not allow."""


HEADER_TYPE = 3
HEADER_VERSION = 1
SECTION_TCFEUV2 = 2
SECTION_HEADER = 3
SECTION_USNAT = 7
# Client-side API prefixes of the sections registered with IAB Tech Lab.
SECTION_NAMES: Mapping[int, str] = {
    1: "tcfeuv1",
    2: "tcfeuv2",
    4: "gppsignalintegrity",
    5: "tcfcav1",
    6: "uspv1",
    7: "usnat",
    8: "usca",
    9: "usva",
    10: "usco",
    11: "usut",
    12: "usct",
    13: "usfl",
    14: "usmt",
    15: "usor",
    16: "ustx",
    17: "usde",
    18: "usia",
    19: "usne",
    20: "usnh",
    21: "usnj",
    22: "ustn",
    23: "usmn",
    24: "usmd",
    25: "usin",
    26: "usky",
    27: "usri",
}
# The registry assigns ids from 8 upward to US state sections, which this module keeps raw.
FIRST_US_STATE_SECTION = 8
MAX_PADDING_BITS = 23
OPT_OUT_SALE_SHARING = "sale_sharing"
OPT_OUT_ADVERTISING = "advertising"

_B64_RE = re.compile(r"[A-Za-z0-9_\-]+")
_RAW_SECTION_RE = re.compile(r"[A-Za-z0-9_\-.]+")
_TO_STANDARD_B64 = str.maketrans("-_", "+/")
_B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_FIBONACCI = [1, 2]
while len(_FIBONACCI) < 64:
    _FIBONACCI.append(_FIBONACCI[-1] + _FIBONACCI[-2])
_MAX_FIBONACCI_BITS = len(_FIBONACCI)

# usnat core layout per section version: (SensitiveDataProcessing count, KnownChild... count).
USNAT_LAYOUTS: Mapping[int, tuple[int, int]] = {1: (12, 2), 2: (16, 3)}
# Two-bit fields before and after the two lists, in wire order: (attribute, specification name).
_USNAT_HEAD = (
    ("sharing_notice", "SharingNotice"),
    ("sale_opt_out_notice", "SaleOptOutNotice"),
    ("sharing_opt_out_notice", "SharingOptOutNotice"),
    ("targeted_advertising_opt_out_notice", "TargetedAdvertisingOptOutNotice"),
    ("sensitive_data_processing_opt_out_notice", "SensitiveDataProcessingOptOutNotice"),
    ("sensitive_data_limit_use_notice", "SensitiveDataLimitUseNotice"),
    ("sale_opt_out", "SaleOptOut"),
    ("sharing_opt_out", "SharingOptOut"),
    ("targeted_advertising_opt_out", "TargetedAdvertisingOptOut"),
)
_USNAT_TAIL = (
    ("personal_data_consents", "PersonalDataConsents"),
    ("mspa_covered_transaction", "MspaCoveredTransaction"),
    ("mspa_opt_out_option_mode", "MspaOptOutOptionMode"),
    ("mspa_service_provider_mode", "MspaServiceProviderMode"),
)
_USNAT_LISTS = (
    ("sensitive_data_processing", "SensitiveDataProcessing", 0),
    ("known_child_sensitive_data_consents", "KnownChildSensitiveDataConsents", 1),
)


@dataclass(frozen=True, slots=True)
class UsNat:
    """The usnat section (GPP section id 7). Two-bit values follow the specification tables.

    Notices: 0 not applicable, 1 yes (notice given), 2 no. Opt-outs: 0 not applicable, 1 opted out,
    2 did not opt out. Consents (``sensitive_data_processing``, ``known_child_sensitive_data_consents``,
    ``personal_data_consents``): 0 not applicable, 1 no consent, 2 consent. MSPA modes: 0 not
    applicable, 1 yes, 2 no; ``mspa_covered_transaction`` is 1 (yes) or 2 (no). ``gpc`` is ``None``
    when the string has no GPC subsection. Version 1 has 12 sensitive-data categories and 2
    known-child fields; version 2 has 16 and 3.
    """

    version: int = 2
    sharing_notice: int = 0
    sale_opt_out_notice: int = 0
    sharing_opt_out_notice: int = 0
    targeted_advertising_opt_out_notice: int = 0
    sensitive_data_processing_opt_out_notice: int = 0
    sensitive_data_limit_use_notice: int = 0
    sale_opt_out: int = 0
    sharing_opt_out: int = 0
    targeted_advertising_opt_out: int = 0
    sensitive_data_processing: tuple[int, ...] = (0,) * 16
    known_child_sensitive_data_consents: tuple[int, ...] = (0,) * 3
    personal_data_consents: int = 0
    mspa_covered_transaction: int = 2
    mspa_opt_out_option_mode: int = 0
    mspa_service_provider_mode: int = 0
    gpc: bool | None = None


@dataclass(frozen=True, slots=True)
class GPPString:
    """A decoded GPP string. ``other`` maps every section id not decoded here to its raw text."""

    tcf: TCString | None = None
    usnat: UsNat | None = None
    other: dict[int, str] = field(default_factory=dict)

    @property
    def section_ids(self) -> tuple[int, ...]:
        """The header's section ids, ascending (the order of the sections in the string)."""
        ids = set(self.other)
        if self.tcf is not None:
            ids.add(SECTION_TCFEUV2)
        if self.usnat is not None:
            ids.add(SECTION_USNAT)
        return tuple(sorted(ids))


def _section_label(section_id: int) -> str:
    name = SECTION_NAMES.get(section_id)
    return f"section {section_id} ({name})" if name else f"section {section_id}"


# --------------------------------------------------------------------------------------------
# Bits
# --------------------------------------------------------------------------------------------


class _Bits:
    __slots__ = ("pos", "segment", "size", "value")

    def __init__(self, text: str, segment: str) -> None:
        if not text:
            raise GPPError(f"{segment} is empty")
        if not _B64_RE.fullmatch(text):
            index, char = next((i, c) for i, c in enumerate(text) if not _B64_RE.fullmatch(c))
            shown = repr(char) if char.isprintable() else f"U+{ord(char):04X}"
            raise GPPError(
                f"{segment}: invalid character {shown} at position {index}; use the base64url alphabet "
                "A-Z a-z 0-9 - _ without '=' padding"
            )
        pad = -len(text) % 4
        raw = binascii.a2b_base64((text + "AAA"[:pad]).translate(_TO_STANDARD_B64))
        self.value = int.from_bytes(raw, "big") >> (6 * pad)
        self.size = 6 * len(text)
        self.pos = 0
        self.segment = segment

    def take(self, width: int, name: str) -> int:
        end = self.pos + width
        if end > self.size:
            raise GPPError(
                f"{self.segment}: field {name} needs {width} bits at bit offset {self.pos} but only "
                f"{self.size - self.pos} are left; the string is truncated"
            )
        self.pos = end
        return (self.value >> (self.size - end)) & ((1 << width) - 1)

    def fibonacci(self, name: str) -> int:
        """A Fibonacci-coded integer (>= 1): bits weigh 1, 2, 3, 5, ... and end with ``11``."""
        start = self.pos
        value = 0
        previous = 0
        for index in range(_MAX_FIBONACCI_BITS + 1):
            if self.pos >= self.size:
                raise GPPError(
                    f"{self.segment}: Fibonacci-coded field {name} at bit offset {start} has no '11' "
                    "terminator before the end of the segment"
                )
            bit = (self.value >> (self.size - self.pos - 1)) & 1
            self.pos += 1
            if bit and previous:
                return value
            if bit:
                if index >= _MAX_FIBONACCI_BITS:
                    break
                value += _FIBONACCI[index]
            previous = bit
        raise GPPError(f"{self.segment}: Fibonacci-coded field {name} at bit offset {start} is too long")

    def end(self, strict: bool) -> None:
        left = self.size - self.pos
        if left <= 0:
            return
        if self.value & ((1 << left) - 1):
            raise GPPError(
                f"{self.segment}: unexpected data after the last field at bit offset {self.pos}: the "
                f"{left} bits that follow must be zero padding"
            )
        if strict and left > MAX_PADDING_BITS:
            raise GPPError(
                f"{self.segment}: {left} bits of zero padding after the last field at bit offset {self.pos}; "
                f"at most {MAX_PADDING_BITS} are allowed"
            )


class _Writer:
    __slots__ = ("size", "value")

    def __init__(self) -> None:
        self.value = 0
        self.size = 0

    def put(self, value: int, width: int) -> None:
        self.value = (self.value << width) | value
        self.size += width

    def fibonacci(self, n: int) -> None:
        """Zeckendorf representation of ``n`` >= 1, lowest weight first, then the extra ``1``."""
        top = 0
        while top + 1 < len(_FIBONACCI) and _FIBONACCI[top + 1] <= n:
            top += 1
        digits = [0] * (top + 1)
        rest = n
        for index in range(top, -1, -1):
            if _FIBONACCI[index] <= rest:
                digits[index] = 1
                rest -= _FIBONACCI[index]
        for digit in digits:
            self.put(digit, 1)
        self.put(1, 1)

    def text(self) -> str:
        """Pad to a byte boundary, then to a whole base64 character (as iabgpp-es does)."""
        size = self.size + (-self.size % 8)
        size += -size % 6
        value = self.value << (size - self.size)
        return "".join(_B64_ALPHABET[(value >> shift) & 0x3F] for shift in range(size - 6, -1, -6))


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _decode_header(text: str, strict: bool, available: int) -> list[int]:
    bits = _Bits(text, "GPP header")
    kind = bits.take(6, "Type")
    if kind != HEADER_TYPE:
        hint = " (a string starting with 'C' is a bare TCF TC string, not GPP)" if kind == 2 else ""
        raise GPPError(f"GPP header: field Type is {kind} at bit offset 0, expected {HEADER_TYPE}{hint}")
    version = bits.take(6, "Version")
    if version != HEADER_VERSION:
        raise GPPError(f"GPP header: field Version is {version} at bit offset 6, expected {HEADER_VERSION}")
    count = bits.take(12, "Sections (entry count)")
    ids: list[int] = []
    last = 0
    for index in range(1, count + 1):
        is_group = bits.take(1, f"Sections entry {index} IsGroup")
        start = last + bits.fibonacci(f"Sections entry {index} offset")
        end = start + bits.fibonacci(f"Sections entry {index} group length") if is_group else start
        if len(ids) + end - start + 1 > available:
            raise GPPError(
                f"GPP header: Sections entry {index} lists more section ids than the {available} section(s) "
                "that follow the header"
            )
        ids.extend(range(start, end + 1))
        last = end
    bits.end(strict)
    if SECTION_HEADER in ids:
        raise GPPError("GPP header: the section ids list 3, which is the header itself")
    return ids


def _check_two_bit(value: int, name: str, segment: str, at: int, allowed: tuple[int, ...] = (0, 1, 2)) -> None:
    if value not in allowed:
        raise GPPError(
            f"{segment}: field {name} is {value} at bit offset {at}; allowed values are {', '.join(map(str, allowed))}"
        )


def _decode_usnat(text: str, strict: bool) -> UsNat:
    parts = text.split(".")
    bits = _Bits(parts[0], "section 7 (usnat) core segment")
    segment = bits.segment
    version = bits.take(6, "Version")
    layout = USNAT_LAYOUTS.get(version)
    if layout is None:
        raise GPPError(f"{segment}: field Version is {version} at bit offset 0; supported versions are 1 and 2")
    values: dict[str, Any] = {"version": version}
    for attr, name in _USNAT_HEAD:
        value = bits.take(2, name)
        _check_two_bit(value, name, segment, bits.pos - 2)
        values[attr] = value
    for attr, name, which in _USNAT_LISTS:
        items = []
        for index in range(1, layout[which] + 1):
            value = bits.take(2, f"{name}[{index}]")
            _check_two_bit(value, f"{name}[{index}]", segment, bits.pos - 2)
            items.append(value)
        values[attr] = tuple(items)
    for attr, name in _USNAT_TAIL:
        value = bits.take(2, name)
        allowed = (1, 2) if attr == "mspa_covered_transaction" else (0, 1, 2)
        _check_two_bit(value, name, segment, bits.pos - 2, allowed)
        values[attr] = value
    bits.end(strict)
    gpc: bool | None = None
    for number, part in enumerate(parts[1:], start=2):
        sub = _Bits(part, f"section 7 (usnat) subsection {number}")
        kind = sub.take(2, "SubsectionType")
        if kind != 1:
            what = "the core segment may only come first" if kind == 0 else "only 1 (GPC) is defined"
            raise GPPError(f"{sub.segment}: field SubsectionType is {kind} at bit offset 0; {what}")
        if gpc is not None:
            raise GPPError(f"{sub.segment}: a second GPC subsection")
        gpc = bool(sub.take(1, "Gpc"))
        sub.end(strict)
    values["gpc"] = gpc
    return UsNat(**values)


def decode(s: str, *, strict: bool = True) -> GPPString:
    """Decode a GPP string; raise :class:`GPPError` naming the section, field and bit offset.

    ``strict`` is passed to :func:`candor.consent.tcf.decode` for the TCF section and limits zero
    padding; ``strict=False`` reads historical records.
    """
    if not isinstance(s, str):
        raise GPPError(f"a GPP string must be a str, not {type(s).__name__}")
    if not s:
        raise GPPError("the GPP string is empty")
    parts = s.split("~")
    ids = _decode_header(parts[0], strict, len(parts) - 1)
    sections = parts[1:]
    if len(sections) != len(ids):
        raise GPPError(f"the GPP header lists {len(ids)} section(s) {ids} but {len(sections)} section(s) follow it")
    tcf_section: TCString | None = None
    usnat: UsNat | None = None
    other: dict[int, str] = {}
    for section_id, text in zip(ids, sections, strict=True):
        label = _section_label(section_id)
        if not text:
            raise GPPError(f"{label} is empty")
        if section_id == SECTION_TCFEUV2:
            try:
                tcf_section = tcf.decode(text, strict=strict)
            except TCFError as exc:
                raise GPPError(f"{label}: {exc}") from exc
        elif section_id == SECTION_USNAT:
            usnat = _decode_usnat(text, strict)
        else:
            if not _RAW_SECTION_RE.fullmatch(text):
                raise GPPError(f"{label} holds characters outside A-Z a-z 0-9 - _ .")
            other[section_id] = text
    return GPPString(tcf=tcf_section, usnat=usnat, other=other)


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def _encode_header(ids: tuple[int, ...]) -> str:
    runs: list[tuple[int, int]] = []
    for i in ids:
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    w = _Writer()
    w.put(HEADER_TYPE, 6)
    w.put(HEADER_VERSION, 6)
    w.put(len(runs), 12)
    last = 0
    for start, end in runs:
        w.put(int(start != end), 1)
        w.fibonacci(start - last)
        if start != end:
            w.fibonacci(end - start)
        last = end
    return w.text()


def _encode_usnat(u: UsNat) -> str:
    if not isinstance(u, UsNat):
        raise GPPError(f"cannot encode: usnat must be a UsNat, not {type(u).__name__}")
    layout = USNAT_LAYOUTS.get(u.version)
    if layout is None:
        raise GPPError(f"cannot encode: usnat version {u.version!r} is not supported (1 or 2)")
    w = _Writer()
    w.put(u.version, 6)

    def two_bit(value: object, name: str, allowed: tuple[int, ...] = (0, 1, 2)) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value not in allowed:
            raise GPPError(
                f"cannot encode: usnat {name} is {value!r}; allowed values are {', '.join(map(str, allowed))}"
            )
        w.put(value, 2)

    for attr, name in _USNAT_HEAD:
        two_bit(getattr(u, attr), name)
    for attr, name, which in _USNAT_LISTS:
        items = getattr(u, attr)
        if not isinstance(items, tuple) or len(items) != layout[which]:
            raise GPPError(
                f"cannot encode: usnat version {u.version} needs {layout[which]} {name} values, got {items!r}"
            )
        for index, value in enumerate(items, start=1):
            two_bit(value, f"{name}[{index}]")
    for attr, name in _USNAT_TAIL:
        two_bit(getattr(u, attr), name, (1, 2) if attr == "mspa_covered_transaction" else (0, 1, 2))
    text = w.text()
    if u.gpc is not None:
        g = _Writer()
        g.put(1, 2)
        g.put(int(bool(u.gpc)), 1)
        text += "." + g.text()
    return text


def encode(gpp: GPPString) -> str:
    """Encode header, TCF (section 2), usnat (section 7) and raw sections in ascending id order."""
    if not isinstance(gpp, GPPString):
        raise GPPError(f"cannot encode {type(gpp).__name__}: expected a GPPString")
    for section_id, text in gpp.other.items():
        if not isinstance(section_id, int) or isinstance(section_id, bool) or section_id < 1:
            raise GPPError(f"cannot encode: section id {section_id!r} must be a positive integer")
        if section_id in (SECTION_TCFEUV2, SECTION_HEADER, SECTION_USNAT):
            raise GPPError(f"cannot encode: section id {section_id} cannot be raw text; use the tcf and usnat fields")
        if not isinstance(text, str) or not _RAW_SECTION_RE.fullmatch(text):
            raise GPPError(f"cannot encode: {_section_label(section_id)} must be non-empty text of A-Z a-z 0-9 - _ .")
    ids = gpp.section_ids
    parts = [_encode_header(ids)]
    for section_id in ids:
        if section_id == SECTION_TCFEUV2:
            assert gpp.tcf is not None
            try:
                parts.append(tcf.encode(gpp.tcf))
            except TCFError as exc:
                raise GPPError(f"section 2 (tcfeuv2): {exc}") from exc
        elif section_id == SECTION_USNAT:
            assert gpp.usnat is not None
            parts.append(_encode_usnat(gpp.usnat))
        else:
            parts.append(gpp.other[section_id])
    return "~".join(parts)


# --------------------------------------------------------------------------------------------
# Candor's view
# --------------------------------------------------------------------------------------------


def _uspv1_sale_opt_out(text: str) -> bool | None:
    """US Privacy string ``1NYN``: version 1, notice, opt-out of sale, LSPA. None if unreadable."""
    if len(text) != 4 or text[0] != "1" or any(c not in "YNyn-" for c in text[1:]):
        return None
    return text[2] in "Yy"


def opt_outs(gpp: GPPString, *, fail_closed: bool = True) -> set[str]:
    """The Candor purposes the person opted out of: ``"sale_sharing"`` and/or ``"advertising"``.

    * usnat ``SaleOptOut`` == 1 or ``SharingOptOut`` == 1 -> ``"sale_sharing"``;
    * usnat ``TargetedAdvertisingOptOut`` == 1 -> ``"advertising"``;
    * GPC subsection ``Gpc`` == 1 -> both;
    * US Privacy (section 6, ``uspv1``) with opt-out of sale ``Y`` -> ``"sale_sharing"``.

    TCF consent is opt-in and is read with :func:`candor.consent.tcf.purposes_allowed` instead.
    With ``fail_closed`` (the default) signals this module cannot read count as opt-outs: a US state
    section (ids 8 and up, kept raw) adds both purposes and an unreadable ``uspv1`` adds
    ``"sale_sharing"``. Pass ``fail_closed=False`` to use only the signals that were decoded.
    """
    out: set[str] = set()
    u = gpp.usnat
    if u is not None:
        if u.sale_opt_out == 1 or u.sharing_opt_out == 1:
            out.add(OPT_OUT_SALE_SHARING)
        if u.targeted_advertising_opt_out == 1:
            out.add(OPT_OUT_ADVERTISING)
        if u.gpc:
            out.update((OPT_OUT_SALE_SHARING, OPT_OUT_ADVERTISING))
    usp = gpp.other.get(6)
    if usp is not None:
        sale = _uspv1_sale_opt_out(usp)
        if sale or (sale is None and fail_closed):
            out.add(OPT_OUT_SALE_SHARING)
    if fail_closed and any(section_id >= FIRST_US_STATE_SECTION for section_id in gpp.other):
        out.update((OPT_OUT_SALE_SHARING, OPT_OUT_ADVERTISING))
    return out


_USNAT_JSON_NAMES = dict((*_USNAT_HEAD, *_USNAT_TAIL)) | {attr: name for attr, name, _ in _USNAT_LISTS}


def _usnat_json(u: UsNat) -> dict[str, Any]:
    out: dict[str, Any] = {"Version": u.version}
    for f in fields(UsNat):
        if f.name in _USNAT_JSON_NAMES:
            value = getattr(u, f.name)
            out[_USNAT_JSON_NAMES[f.name]] = list(value) if isinstance(value, tuple) else value
    out["GpcSegmentIncluded"] = u.gpc is not None
    out["Gpc"] = bool(u.gpc)
    return out


def to_json(gpp: GPPString) -> dict[str, Any]:
    """A JSON-ready view for ``candor gpp decode``: ids, sections by API prefix, Candor opt-outs.

    ``sections`` holds ``tcfeuv2`` as CMP API TCData (:func:`candor.consent.tcf.to_tcdata`),
    ``usnat`` with the specification's field names, and other sections as their raw text, keyed by
    their API prefix (or ``"section<id>"`` when the id is not registered).
    """
    sections: dict[str, Any] = {}
    for section_id in gpp.section_ids:
        if section_id == SECTION_TCFEUV2 and gpp.tcf is not None:
            sections["tcfeuv2"] = tcf.to_tcdata(gpp.tcf)
        elif section_id == SECTION_USNAT and gpp.usnat is not None:
            sections["usnat"] = _usnat_json(gpp.usnat)
        else:
            sections[SECTION_NAMES.get(section_id, f"section{section_id}")] = gpp.other[section_id]
    return {
        "sectionIds": list(gpp.section_ids),
        "sections": sections,
        "optOuts": sorted(opt_outs(gpp)),
    }
