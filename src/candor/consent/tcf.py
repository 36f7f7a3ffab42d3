"""IAB Europe TCF v2.2 / v2.3 TC strings: a strict decoder, a canonical encoder, CMP API JSON.

A TC string is one to four base64url segments joined by ``.``: the core segment first, then any
of the disclosed-vendors (type 1), allowed-vendors (type 2, deprecated) and publisher TC (type 3)
segments. Bits are big-endian and numbered from the left, as in the IAB specification
"Transparency and Consent String with Global Vendor & CMP List Formats" (v2.2, May 2023).

Decoding turns every segment into one ``int`` (``int.from_bytes`` of the base64-decoded bytes)
and reads fields by shifting and masking. Id sets are :class:`IdSet` values, themselves one
``int`` (bit ``i`` is id ``i``): a bitfield becomes one by reversing its bit order and a range
section by or-ing masks, never bit by bit and never one Python object per id. :func:`decode` is
strict and every :class:`TCFError` says which segment, which field and which bit offset is wrong:

* only the base64url alphabet ``A-Z a-z 0-9 - _`` and ``.`` between segments; no ``=`` padding;
* each segment must be long enough for the fields it declares; bits after the last field must be
  zero padding, fewer than 24 bits (encoders pad to a byte or to a 24-bit base64 quantum);
* core ``Version`` must be 2;
* ``TcfPolicyVersion`` must be 4 (TCF v2.2) or later;
* ``IsServiceSpecific`` must be 1 (global scope is invalid since September 2021);
* ``PurposesLITransparency`` must not set purpose 1 (consent only) nor purposes 3-6 (TCF v2.2);
* range entries must be in ascending order without overlap, start at vendor id 1 or more, end at
  or before ``MaxVendorId``; publisher restrictions use purposes 1-24 and restriction types 0-2,
  one entry per (purpose, type) and at most one restriction type per vendor and purpose;
* each optional segment type at most once; segment type 0 only first; types 4-7 are unknown.

``decode(s, strict=False)`` reads historical records: it accepts policy versions below 4 and then
applies the v2.2-only rules (service-specific scope, no legitimate interest for purposes 1, 3-6)
only when the string itself claims policy version 4 or later; it also accepts longer zero padding
(the specification's own example strings carry dozens of bits of it). Structural rules always hold.

The allowed-vendors segment (type 2) is checked for shape and then ignored: out-of-band legal
bases were deprecated together with global scope. A publisher restriction entry with no vendors
restricts nothing and is dropped. TCF v2.3 makes the disclosed-vendors segment mandatory for
strings created from March 2026; :func:`decode` does not demand it, since earlier strings stay
valid: check ``disclosed_vendors is not None`` where it matters.

:func:`encode` writes the canonical form: ``MaxVendorId`` is the highest id in the set, each vendor
section uses range encoding only when that is strictly shorter than the bitfield (as CMPs do), and
segments are zero-padded to a multiple of 24 bits like the IAB reference encoder (``@iabtcf/core``).
So ``decode(encode(tc)) == tc`` always, while ``encode(decode(s)) == s`` holds for canonical input.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import abc
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import compress
from types import MappingProxyType
from typing import Any, TypeVar

__all__ = [
    "DEFAULT_PURPOSE_MAP",
    "RESTRICTION_NOT_ALLOWED",
    "RESTRICTION_REQUIRE_CONSENT",
    "RESTRICTION_REQUIRE_LI",
    "IdSet",
    "PublisherRestriction",
    "PublisherTC",
    "TCFError",
    "TCString",
    "decode",
    "encode",
    "from_tcdata",
    "purposes_allowed",
    "to_tcdata",
]


class TCFError(ValueError):
    """A TC string (or TCData JSON) is malformed or breaks a TCF rule; the message says where."""


# Publisher restriction types (RestrictionType, 2 bits; 3 is undefined and rejected).
RESTRICTION_NOT_ALLOWED = 0
RESTRICTION_REQUIRE_CONSENT = 1
RESTRICTION_REQUIRE_LI = 2

MAX_PURPOSE_ID = 24
MAX_SPECIAL_FEATURE_ID = 12
MAX_VENDOR_ID = 0xFFFF
MAX_CUSTOM_PURPOSES = 63
MIN_POLICY_VERSION = 4  # TCF v2.2
# Purposes for which TCF v2.2 forbids legitimate interest: 1 is consent-only, 3-6 since v2.2.
LI_FORBIDDEN_PURPOSES = frozenset({1, 3, 4, 5, 6})
# Zero bits an encoder may leave after the last field: a byte boundary plus a partial base64
# character, or a whole 24-bit base64 quantum (@iabtcf/core). More is rejected when strict.
MAX_PADDING_BITS = 23

SEGMENT_CORE = 0
SEGMENT_DISCLOSED_VENDORS = 1
SEGMENT_ALLOWED_VENDORS = 2
SEGMENT_PUBLISHER_TC = 3
_SEGMENT_NAMES = {
    SEGMENT_CORE: "core",
    SEGMENT_DISCLOSED_VENDORS: "disclosed vendors",
    SEGMENT_ALLOWED_VENDORS: "allowed vendors",
    SEGMENT_PUBLISHER_TC: "publisher TC",
}

_CORE_HEADER_BITS = 213  # Version .. PublisherCC, before the vendor consent section
_CORE_FIELDS = (  # (name, bit offset, width) of the fixed part of the core segment
    ("Version", 0, 6),
    ("Created", 6, 36),
    ("LastUpdated", 42, 36),
    ("CmpId", 78, 12),
    ("CmpVersion", 90, 12),
    ("ConsentScreen", 102, 6),
    ("ConsentLanguage", 108, 12),
    ("VendorListVersion", 120, 12),
    ("TcfPolicyVersion", 132, 6),
    ("IsServiceSpecific", 138, 1),
    ("UseNonStandardTexts", 139, 1),
    ("SpecialFeatureOptIns", 140, 12),
    ("PurposesConsent", 152, 24),
    ("PurposesLITransparency", 176, 24),
    ("PurposeOneTreatment", 200, 1),
    ("PublisherCC", 201, 12),
)
_LI_FORBIDDEN_MASK = sum(1 << (MAX_PURPOSE_ID - p) for p in LI_FORBIDDEN_PURPOSES)

_STRING_RE = re.compile(r"[A-Za-z0-9_\-.]+")
_LETTERS_RE = re.compile(r"[A-Za-z]{2}")
_TO_STANDARD_B64 = str.maketrans("-_", "+/")
_ASCII01_TO_BYTES01 = bytes.maketrans(b"01", b"\x00\x01")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_DECISECONDS = (1 << 36) - 1
_T = TypeVar("_T")
_REVERSED12 = tuple(int(format(i, "012b")[::-1], 2) for i in range(4096))


class IdSet(abc.Set[int]):
    """An immutable set of ids 1-65535 held in one integer: bit ``i`` set means id ``i`` is in.

    Every id set of a decoded :class:`TCString` is one: decoding a bitfield or a range section is
    shifting and masking, ``id in ids`` is a bit test, and it equals (and hashes like) any other
    set of the same ids, so ``IdSet({1, 2}) == frozenset({1, 2})``. ``&``, ``|``, ``-`` and ``^``
    between two IdSets are single integer operations.
    """

    __slots__ = ("_mask",)

    def __init__(self, ids: Iterable[int] = ()) -> None:
        if isinstance(ids, IdSet):
            self._mask: int = ids._mask
            return
        items = list(ids)
        for i in items:
            if not isinstance(i, int) or isinstance(i, bool):
                raise TypeError(f"ids are integers 1-{MAX_VENDOR_ID}, not {type(i).__name__} {i!r}")
            if not 1 <= i <= MAX_VENDOR_ID:
                raise ValueError(f"ids are integers 1-{MAX_VENDOR_ID}, not {i}")
        if not items:
            self._mask = 0
            return
        top = max(items)
        digits = bytearray(b"0" * (top + 1))  # digits[top - i] is bit i: one linear int() at the end
        for i in items:
            digits[top - i] = 49  # ord("1")
        self._mask = int(digits, 2)

    @classmethod
    def from_mask(cls, mask: int) -> IdSet:
        """The set whose ids are the set bits of ``mask`` (bit 0 must be clear)."""
        if mask < 0 or mask & 1 or mask.bit_length() > MAX_VENDOR_ID + 1:
            raise ValueError("an id mask has bits 1-65535 only")
        new = object.__new__(cls)
        new._mask = mask
        return new

    @property
    def mask(self) -> int:
        """Bit ``i`` is set for id ``i``."""
        return self._mask

    @property
    def max_id(self) -> int:
        """The highest id, 0 for the empty set."""
        return max(self._mask.bit_length() - 1, 0)

    def __contains__(self, item: object) -> bool:
        return isinstance(item, int) and 0 < item <= MAX_VENDOR_ID and (self._mask >> item) & 1 == 1

    def __iter__(self) -> Iterator[int]:
        if not self._mask:
            return iter(())
        flags = format(self._mask, "b")[::-1].encode("ascii").translate(_ASCII01_TO_BYTES01)
        return compress(range(len(flags)), flags)

    def __len__(self) -> int:
        return self._mask.bit_count()

    def __bool__(self) -> bool:
        return self._mask != 0

    def __eq__(self, other: object) -> bool:
        if isinstance(other, IdSet):
            return self._mask == other._mask
        return super().__eq__(other)

    def __hash__(self) -> int:
        return self._hash()  # the frozenset algorithm: equal sets hash alike whatever their type

    def __le__(self, other: abc.Set[Any]) -> bool:
        if isinstance(other, IdSet):
            return self._mask & ~other._mask == 0
        return super().__le__(other)

    def __ge__(self, other: abc.Set[Any]) -> bool:
        if isinstance(other, IdSet):
            return other._mask & ~self._mask == 0
        return super().__ge__(other)

    def __and__(self, other: abc.Set[Any]) -> abc.Set[int]:
        if isinstance(other, IdSet):
            return IdSet._of(self._mask & other._mask)
        return super().__and__(other)

    def __or__(self, other: abc.Set[_T]) -> abc.Set[int | _T]:
        if isinstance(other, IdSet):
            return IdSet._of(self._mask | other._mask)
        return super().__or__(other)

    def __sub__(self, other: abc.Set[Any]) -> abc.Set[int]:
        if isinstance(other, IdSet):
            return IdSet._of(self._mask & ~other._mask)
        return super().__sub__(other)

    def __repr__(self) -> str:
        return f"IdSet({{{', '.join(map(str, self))}}})" if self._mask else "IdSet()"

    @classmethod
    def _of(cls, mask: int) -> IdSet:
        new = object.__new__(cls)
        new._mask = mask
        return new


_EMPTY = IdSet()


def _id_set(value: object, name: str) -> IdSet:
    """``value`` as an IdSet, or a TCFError naming the field."""
    if isinstance(value, IdSet):
        return value
    if not isinstance(value, Iterable) or isinstance(value, str | bytes):
        raise TCFError(f"{name} must be a set of ids, not {type(value).__name__}")
    try:
        return IdSet(value)
    except (TypeError, ValueError) as exc:
        raise TCFError(f"{name}: {exc}") from None


_TC_STRING_SETS = (
    "special_feature_optins",
    "purpose_consents",
    "purpose_legitimate_interests",
    "vendor_consents",
    "vendor_legitimate_interests",
)
_PUBLISHER_TC_SETS = (
    "purpose_consents",
    "purpose_legitimate_interests",
    "custom_purpose_consents",
    "custom_purpose_legitimate_interests",
)


def _normalise_sets(obj: object, names: tuple[str, ...], prefix: str = "") -> None:
    for name in names:
        value = getattr(obj, name)
        if type(value) is not IdSet:
            object.__setattr__(obj, name, _id_set(value, prefix + name))


@dataclass(frozen=True, slots=True)
class PublisherRestriction:
    """One PubRestrictionEntry: the publisher restricts ``vendors`` for ``purpose_id``.

    ``restriction_type`` is 0 (purpose not allowed), 1 (require consent) or 2 (require
    legitimate interest). ``vendors`` is stored as an :class:`IdSet`.
    """

    purpose_id: int
    restriction_type: int
    vendors: abc.Set[int]

    def __post_init__(self) -> None:
        if type(self.vendors) is not IdSet:
            object.__setattr__(self, "vendors", _id_set(self.vendors, "PublisherRestriction.vendors"))


@dataclass(frozen=True, slots=True)
class PublisherTC:
    """The publisher TC segment (type 3): the publisher's own purposes and custom purposes.

    Custom purpose ids run from 1 to ``num_custom_purposes``.
    """

    purpose_consents: abc.Set[int] = _EMPTY
    purpose_legitimate_interests: abc.Set[int] = _EMPTY
    num_custom_purposes: int = 0
    custom_purpose_consents: abc.Set[int] = _EMPTY
    custom_purpose_legitimate_interests: abc.Set[int] = _EMPTY

    def __post_init__(self) -> None:
        _normalise_sets(self, _PUBLISHER_TC_SETS, "publisher_tc.")


@dataclass(frozen=True, slots=True)
class TCString:
    """A decoded TC string (encoding format version 2). Id sets hold the ids whose bit is 1.

    Id sets may be given as any set or iterable of ids; they are stored as :class:`IdSet`.
    ``disclosed_vendors`` is ``None`` when the string has no disclosed-vendors segment and
    ``publisher_tc`` is ``None`` when it has no publisher TC segment. ``publisher_restrictions``
    is kept sorted by (purpose id, restriction type). Timestamps are UTC-aware datetimes with
    decisecond precision (TCF v2.2 CMPs set both to the day the string was last updated).
    """

    created: datetime
    last_updated: datetime
    cmp_id: int
    cmp_version: int
    consent_screen: int
    consent_language: str
    vendor_list_version: int
    tcf_policy_version: int
    is_service_specific: bool = True
    use_non_standard_texts: bool = False
    special_feature_optins: abc.Set[int] = _EMPTY
    purpose_consents: abc.Set[int] = _EMPTY
    purpose_legitimate_interests: abc.Set[int] = _EMPTY
    purpose_one_treatment: bool = False
    publisher_cc: str = "AA"
    vendor_consents: abc.Set[int] = _EMPTY
    vendor_legitimate_interests: abc.Set[int] = _EMPTY
    publisher_restrictions: tuple[PublisherRestriction, ...] = ()
    disclosed_vendors: abc.Set[int] | None = None
    publisher_tc: PublisherTC | None = None

    def __post_init__(self) -> None:
        _normalise_sets(self, _TC_STRING_SETS)
        if self.disclosed_vendors is not None and type(self.disclosed_vendors) is not IdSet:
            object.__setattr__(self, "disclosed_vendors", _id_set(self.disclosed_vendors, "disclosed_vendors"))
        restrictions = self.publisher_restrictions
        if len(restrictions) > 1:
            ordered = tuple(sorted(restrictions, key=lambda r: (r.purpose_id, r.restriction_type)))
            if ordered != restrictions:
                object.__setattr__(self, "publisher_restrictions", ordered)


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


class _Bits:
    """A segment as one integer of ``size`` bits, read left to right from ``pos``."""

    __slots__ = ("pos", "segment", "size", "value")

    def __init__(self, value: int, size: int, segment: str) -> None:
        self.value = value
        self.size = size
        self.pos = 0
        self.segment = segment

    def short(self, field: str, width: int, at: int | None = None) -> TCFError:
        at = self.pos if at is None else at
        left = max(self.size - at, 0)
        return TCFError(
            f"{self.segment}: field {field} needs {width} bits at bit offset {at} but the segment "
            f"has only {left} bits left (it is {self.size} bits long); the string is truncated"
        )

    def take(self, width: int, field: str) -> int:
        end = self.pos + width
        if end > self.size:
            raise self.short(field, width)
        self.pos = end
        return (self.value >> (self.size - end)) & ((1 << width) - 1)


def _segment_bits(segment: str, label: str) -> _Bits:
    """Base64url text to bits. The alphabet was checked for the whole string already."""
    if not segment:
        raise TCFError(f"{label} is empty: two '.' in a row, or a '.' at the start or end of the string")
    pad = -len(segment) % 4
    raw = binascii.a2b_base64((segment + "AAA"[:pad]).translate(_TO_STANDARD_B64))
    return _Bits(int.from_bytes(raw, "big") >> (6 * pad), 6 * len(segment), label)


def _ids(value: int, width: int) -> IdSet:
    """A bitfield of ``width`` bits, id 1 leftmost (most significant), as an IdSet."""
    if not value:
        return _EMPTY
    if width <= 12:
        return IdSet._of(_REVERSED12[value << (12 - width)] << 1)
    if width == 24:
        return IdSet._of(((_REVERSED12[value & 0xFFF] << 12) | _REVERSED12[value >> 12]) << 1)
    return IdSet._of(int(format(value, f"0{width}b")[::-1], 2) << 1)


def _letters(value: int, segment: str, field: str, offset: int) -> str:
    first, second = value >> 6, value & 0x3F
    if first > 25 or second > 25:
        bad, at = (first, offset) if first > 25 else (second, offset + 6)
        raise TCFError(
            f"{segment}: field {field} has letter value {bad} at bit offset {at}; letters are encoded as a=0 .. z=25"
        )
    return chr(65 + first) + chr(65 + second)


def _deciseconds_to_datetime(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value * 100_000)


def _read_ranges(bits: _Bits, count: int, section: str, max_id: int | None) -> IdSet:
    """NumEntries RangeEntry items (IsARange, StartOrOnlyVendorId, [EndVendorId]) to an IdSet.

    Each entry is read from one 33-bit window of the segment: one shift of the big integer.
    """
    value, size, pos = bits.value, bits.size, bits.pos
    limit = MAX_VENDOR_ID if max_id is None else max_id
    mask = 0
    last = 0
    for index in range(1, count + 1):
        gap = size - pos - 33
        window = ((value >> gap) if gap >= 0 else (value << -gap)) & 0x1FFFFFFFF
        start = (window >> 16) & 0xFFFF
        if window >> 32:
            end = window & 0xFFFF
            step = 33
        else:
            end = start
            step = 17
        if pos + step > size:
            what = "IsARange, StartOrOnlyVendorId" if pos + 17 > size else "EndVendorId"
            raise bits.short(f"{section} range entry {index} of {count} ({what})", step, pos)
        if start <= last or end < start or end > limit:
            _bad_range(bits, section, index, pos, start, end, last, max_id)
        mask |= ((1 << (end - start + 1)) - 1) << start
        last = end
        pos += step
    bits.pos = pos
    return IdSet._of(mask)


def _bad_range(
    bits: _Bits, section: str, index: int, at: int, start: int, end: int, last: int, max_id: int | None
) -> None:
    where = f"{bits.segment}: {section} range entry {index} at bit offset {at}"
    if start == 0:
        raise TCFError(f"{where} starts at vendor id 0; vendor ids start at 1")
    if start <= last:
        raise TCFError(
            f"{where} starts at vendor {start} but the previous entry ended at vendor {last}; range entries "
            "must be in ascending order without overlap"
        )
    if end < start:
        raise TCFError(f"{where} ends at vendor {end}, before its start vendor {start}")
    raise TCFError(f"{where} reaches vendor {end}, beyond MaxVendorId {max_id}")


def _read_vendor_section(bits: _Bits, section: str) -> IdSet:
    """MaxVendorId, IsRangeEncoding, then a bitfield or a range section."""
    max_id = bits.take(16, f"{section} MaxVendorId")
    if bits.take(1, f"{section} IsRangeEncoding"):
        count = bits.take(12, f"{section} NumEntries")
        return _read_ranges(bits, count, section, max_id)
    return _ids(bits.take(max_id, f"{section} BitField ({max_id} bits for MaxVendorId {max_id})"), max_id)


def _read_restrictions(bits: _Bits) -> tuple[PublisherRestriction, ...]:
    count = bits.take(12, "NumPubRestrictions")
    if not count:
        return ()
    entries: list[PublisherRestriction] = []
    seen_types: dict[tuple[int, int], int] = {}
    masks: dict[tuple[int, int], int] = {}  # (purpose, type) -> vendors
    per_purpose: dict[int, int] = {}  # purpose -> vendors with any type
    for index in range(1, count + 1):
        at = bits.pos
        label = f"publisher restriction {index} of {count}"
        purpose = bits.take(6, f"{label} PurposeId")
        kind = bits.take(2, f"{label} RestrictionType")
        if not 1 <= purpose <= MAX_PURPOSE_ID:
            raise TCFError(
                f"{bits.segment}: {label} at bit offset {at} has PurposeId {purpose}; purposes are 1-{MAX_PURPOSE_ID}"
            )
        if kind == 3:
            raise TCFError(
                f"{bits.segment}: {label} at bit offset {at + 6} has RestrictionType 3, which is undefined "
                "(0 not allowed, 1 require consent, 2 require legitimate interest)"
            )
        if (purpose, kind) in seen_types:
            raise TCFError(
                f"{bits.segment}: {label} at bit offset {at} repeats purpose {purpose} with restriction type "
                f"{kind} (already in entry {seen_types[purpose, kind]}); each pair may appear once"
            )
        seen_types[purpose, kind] = index
        num_entries = bits.take(12, f"{label} NumEntries")
        vendors = _read_ranges(bits, num_entries, label, None)
        clash = per_purpose.get(purpose, 0) & vendors.mask
        if clash:
            vendor = (clash & -clash).bit_length() - 1
            other = next(k for (p, k), m in masks.items() if p == purpose and (m >> vendor) & 1)
            raise TCFError(
                f"{bits.segment}: {label} at bit offset {at} gives vendor {vendor} restriction type {kind} "
                f"for purpose {purpose}, which already has type {other}; a vendor has at most one "
                "restriction type per purpose"
            )
        per_purpose[purpose] = per_purpose.get(purpose, 0) | vendors.mask
        masks[purpose, kind] = vendors.mask
        if vendors:  # an entry without vendors restricts nothing
            entries.append(PublisherRestriction(purpose, kind, vendors))
    entries.sort(key=lambda r: (r.purpose_id, r.restriction_type))
    return tuple(entries)


def _check_end(bits: _Bits, strict: bool) -> None:
    """Bits after the last field may only be zero padding (short padding when strict)."""
    left = bits.size - bits.pos
    if left <= 0:
        return
    if bits.value & ((1 << left) - 1):
        raise TCFError(
            f"{bits.segment}: unexpected data after the last field at bit offset {bits.pos}: the "
            f"{left} bits that follow must be zero padding"
        )
    if strict and left > MAX_PADDING_BITS:
        raise TCFError(
            f"{bits.segment}: {left} bits of zero padding after the last field at bit offset {bits.pos}; "
            f"at most {MAX_PADDING_BITS} are allowed (decode with strict=False for historical strings)"
        )


def _bad_character(s: str) -> TCFError:
    for index, char in enumerate(s):
        if char == "=":
            return TCFError(f"invalid character '=' at position {index}: TC strings are base64url without '=' padding")
        if not _STRING_RE.fullmatch(char):
            shown = repr(char) if char.isprintable() else f"U+{ord(char):04X}"
            return TCFError(
                f"invalid character {shown} at position {index}: TC strings use only the base64url "
                "alphabet A-Z a-z 0-9 - _ and '.' between segments"
            )
    return TCFError("invalid TC string")  # pragma: no cover - only called when the regex failed


def _decode_core(bits: _Bits, strict: bool) -> dict[str, Any]:
    if bits.size < 6:
        raise bits.short("Version", 6)
    version = bits.value >> (bits.size - 6)
    if version != 2:
        hint = " (TCF v1 strings are no longer supported)" if version == 1 else ""
        raise TCFError(f"core segment: field Version is {version} at bit offset 0, expected 2{hint}")
    if bits.size < _CORE_HEADER_BITS:
        for name, offset, width in _CORE_FIELDS:
            if offset + width > bits.size:
                raise bits.short(name, width, offset)
    size = bits.size
    head = bits.value >> (size - _CORE_HEADER_BITS)
    created = (head >> 171) & _MAX_DECISECONDS
    last_updated = (head >> 135) & _MAX_DECISECONDS
    policy = (head >> 75) & 0x3F
    service_specific = (head >> 74) & 1
    li_bits = (head >> 13) & 0xFFFFFF
    if strict and policy < MIN_POLICY_VERSION:
        raise TCFError(
            f"core segment: field TcfPolicyVersion is {policy} at bit offset 132; TCF v2.2 strings need "
            f"{MIN_POLICY_VERSION} or later (decode with strict=False to read historical records)"
        )
    if strict or policy >= MIN_POLICY_VERSION:
        if not service_specific:
            raise TCFError(
                "core segment: field IsServiceSpecific is 0 at bit offset 138; globally-scoped TC strings "
                "are invalid and TCF v2.2 requires 1"
            )
        if li_bits & _LI_FORBIDDEN_MASK:
            bad = sorted(p for p in LI_FORBIDDEN_PURPOSES if li_bits >> (MAX_PURPOSE_ID - p) & 1)
            raise TCFError(
                "core segment: field PurposesLITransparency (bit offset 176) sets legitimate interest for "
                f"purpose(s) {', '.join(map(str, bad))}; TCF v2.2 allows legitimate interest for neither "
                "purpose 1 nor purposes 3-6"
            )
    bits.pos = _CORE_HEADER_BITS
    fields: dict[str, Any] = {
        "created": _deciseconds_to_datetime(created),
        "last_updated": _deciseconds_to_datetime(last_updated),
        "cmp_id": (head >> 123) & 0xFFF,
        "cmp_version": (head >> 111) & 0xFFF,
        "consent_screen": (head >> 105) & 0x3F,
        "consent_language": _letters((head >> 93) & 0xFFF, bits.segment, "ConsentLanguage", 108),
        "vendor_list_version": (head >> 81) & 0xFFF,
        "tcf_policy_version": policy,
        "is_service_specific": bool(service_specific),
        "use_non_standard_texts": bool((head >> 73) & 1),
        "special_feature_optins": _ids((head >> 61) & 0xFFF, MAX_SPECIAL_FEATURE_ID),
        "purpose_consents": _ids((head >> 37) & 0xFFFFFF, MAX_PURPOSE_ID),
        "purpose_legitimate_interests": _ids(li_bits, MAX_PURPOSE_ID),
        "purpose_one_treatment": bool((head >> 12) & 1),
        "publisher_cc": _letters(head & 0xFFF, bits.segment, "PublisherCC", 201),
        "vendor_consents": _read_vendor_section(bits, "vendor consents"),
        "vendor_legitimate_interests": _read_vendor_section(bits, "vendor legitimate interests"),
        "publisher_restrictions": _read_restrictions(bits),
    }
    _check_end(bits, strict)
    return fields


def _decode_publisher_tc(bits: _Bits) -> PublisherTC:
    consents = _ids(bits.take(MAX_PURPOSE_ID, "PubPurposesConsent"), MAX_PURPOSE_ID)
    li = _ids(bits.take(MAX_PURPOSE_ID, "PubPurposesLITransparency"), MAX_PURPOSE_ID)
    count = bits.take(6, "NumCustomPurposes")
    custom_consents = _ids(bits.take(count, "CustomPurposesConsent"), count)
    custom_li = _ids(bits.take(count, "CustomPurposesLITransparency"), count)
    return PublisherTC(consents, li, count, custom_consents, custom_li)


def decode(s: str, *, strict: bool = True) -> TCString:
    """Decode and validate a TC string; raise :class:`TCFError` saying what is wrong and where.

    ``strict=False`` reads historical strings (policy versions before 4, longer zero padding);
    see the module documentation for exactly what it relaxes.
    """
    if not isinstance(s, str):
        raise TCFError(f"a TC string must be a str, not {type(s).__name__}")
    if not s:
        raise TCFError("the TC string is empty")
    if not _STRING_RE.fullmatch(s):
        raise _bad_character(s)
    parts = s.split(".")
    core = _decode_core(_segment_bits(parts[0], "core segment"), strict)
    seen: dict[int, int] = {}
    for number, part in enumerate(parts[1:], start=2):
        bits = _segment_bits(part, f"segment {number}")
        kind = bits.take(3, "SegmentType")
        name = _SEGMENT_NAMES.get(kind)
        if name is None:
            raise TCFError(
                f"segment {number}: field SegmentType is {kind} at bit offset 0, an unknown segment type "
                "(1 disclosed vendors, 2 allowed vendors, 3 publisher TC)"
            )
        if kind == SEGMENT_CORE:
            raise TCFError(
                f"segment {number}: field SegmentType is 0 (core) at bit offset 0; the core segment may only come first"
            )
        if kind in seen:
            raise TCFError(
                f"segment {number}: duplicate {name} segment (type {kind}); segment {seen[kind]} already is one"
            )
        seen[kind] = number
        bits.segment = f"segment {number} ({name})"
        if kind == SEGMENT_PUBLISHER_TC:
            core["publisher_tc"] = _decode_publisher_tc(bits)
        else:
            vendors = _read_vendor_section(bits, name)
            if kind == SEGMENT_DISCLOSED_VENDORS:
                core["disclosed_vendors"] = vendors
        _check_end(bits, strict)
    return TCString(**core)


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


class _Writer:
    __slots__ = ("size", "value")

    def __init__(self) -> None:
        self.value = 0
        self.size = 0

    def put(self, value: int, width: int) -> None:
        self.value = (self.value << width) | value
        self.size += width

    def text(self) -> str:
        pad = -self.size % 24
        raw = (self.value << pad).to_bytes((self.size + pad) // 8, "big")
        return base64.urlsafe_b64encode(raw).decode("ascii")


def _bits_of(ids: abc.Set[int], width: int) -> int:
    """The bitfield of ``width`` bits in which id 1 is the leftmost bit (ids are at most ``width``)."""
    mask = _id_set(ids, "ids").mask >> 1
    if not mask:
        return 0
    return int(format(mask, f"0{width}b")[::-1], 2)


def _runs(ids: Iterable[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for i in sorted(ids):
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def _put_ranges(w: _Writer, runs: list[tuple[int, int]]) -> None:
    w.put(len(runs), 12)
    for start, end in runs:
        if start == end:
            w.put(start, 17)  # IsARange=0, StartOrOnlyVendorId
        else:
            w.put((1 << 32) | (start << 16) | end, 33)


def _put_vendor_section(w: _Writer, ids: abc.Set[int]) -> None:
    """Bitfield or range encoding, whichever is shorter (a tie keeps the bitfield)."""
    max_id = _id_set(ids, "ids").max_id
    runs = _runs(ids)
    range_bits = 12 + sum(17 if start == end else 33 for start, end in runs)
    w.put(max_id, 16)
    if range_bits < max_id and len(runs) <= 0xFFF:
        w.put(1, 1)
        _put_ranges(w, runs)
    else:
        w.put(0, 1)
        w.put(_bits_of(ids, max_id), max_id)


def _check_ids(ids: object, name: str, high: int) -> None:
    if not isinstance(ids, IdSet):
        raise TCFError(f"cannot encode: {name} must be an IdSet, not {type(ids).__name__}")
    if ids.max_id > high:
        raise TCFError(f"cannot encode: {name} holds {ids.max_id}; ids here are integers 1-{high}")


def _check_int(value: object, name: str, bits: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < (1 << bits):
        raise TCFError(f"cannot encode: {name} is {value!r}; it must be an integer 0-{(1 << bits) - 1} ({bits} bits)")


def _deciseconds(value: object, name: str) -> int:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise TCFError(f"cannot encode: {name} must be a timezone-aware datetime, not {value!r}")
    ds = (value - _EPOCH) // timedelta(milliseconds=100)
    if not 0 <= ds <= _MAX_DECISECONDS:
        raise TCFError(f"cannot encode: {name} {value.isoformat()} is outside the 36-bit decisecond range")
    return ds


def _letter_bits(value: object, name: str) -> int:
    if not isinstance(value, str) or not _LETTERS_RE.fullmatch(value):
        raise TCFError(f"cannot encode: {name} is {value!r}; it must be two letters A-Z")
    upper = value.upper()
    return ((ord(upper[0]) - 65) << 6) | (ord(upper[1]) - 65)


def _check_restrictions(restrictions: tuple[PublisherRestriction, ...]) -> None:
    pairs: set[tuple[int, int]] = set()
    owner: dict[tuple[int, int], int] = {}
    for r in restrictions:
        if not isinstance(r, PublisherRestriction):
            raise TCFError(f"cannot encode: publisher_restrictions holds {r!r}, not a PublisherRestriction")
        if not isinstance(r.purpose_id, int) or not 1 <= r.purpose_id <= MAX_PURPOSE_ID:
            raise TCFError(f"cannot encode: a publisher restriction has purpose {r.purpose_id!r}; purposes are 1-24")
        if r.restriction_type not in (0, 1, 2):
            raise TCFError(
                f"cannot encode: the restriction for purpose {r.purpose_id} has type {r.restriction_type!r}; "
                "types are 0 (not allowed), 1 (require consent), 2 (require legitimate interest)"
            )
        if (r.purpose_id, r.restriction_type) in pairs:
            raise TCFError(
                f"cannot encode: purpose {r.purpose_id} has two restrictions of type {r.restriction_type}; "
                "merge their vendors"
            )
        pairs.add((r.purpose_id, r.restriction_type))
        _check_ids(r.vendors, f"the vendors restricted for purpose {r.purpose_id}", MAX_VENDOR_ID)
        if not r.vendors:
            raise TCFError(
                f"cannot encode: the type {r.restriction_type} restriction for purpose {r.purpose_id} has no vendors"
            )
        if len(_runs(r.vendors)) > 0xFFF:
            raise TCFError(f"cannot encode: the restriction for purpose {r.purpose_id} needs more than 4095 ranges")
        for vendor in r.vendors:
            other = owner.setdefault((r.purpose_id, vendor), r.restriction_type)
            if other != r.restriction_type:
                raise TCFError(
                    f"cannot encode: vendor {vendor} has restriction types {other} and {r.restriction_type} "
                    f"for purpose {r.purpose_id}; a vendor has at most one per purpose"
                )


def _check_for_encode(tc: TCString) -> None:
    if not isinstance(tc, TCString):
        raise TCFError(f"cannot encode {type(tc).__name__}: expected a TCString")
    for name, bits in (
        ("cmp_id", 12),
        ("cmp_version", 12),
        ("consent_screen", 6),
        ("vendor_list_version", 12),
        ("tcf_policy_version", 6),
    ):
        _check_int(getattr(tc, name), name, bits)
    _check_ids(tc.special_feature_optins, "special_feature_optins", MAX_SPECIAL_FEATURE_ID)
    _check_ids(tc.purpose_consents, "purpose_consents", MAX_PURPOSE_ID)
    _check_ids(tc.purpose_legitimate_interests, "purpose_legitimate_interests", MAX_PURPOSE_ID)
    _check_ids(tc.vendor_consents, "vendor_consents", MAX_VENDOR_ID)
    _check_ids(tc.vendor_legitimate_interests, "vendor_legitimate_interests", MAX_VENDOR_ID)
    if tc.disclosed_vendors is not None:
        _check_ids(tc.disclosed_vendors, "disclosed_vendors", MAX_VENDOR_ID)
    if tc.tcf_policy_version >= MIN_POLICY_VERSION:
        if not tc.is_service_specific:
            raise TCFError("cannot encode: is_service_specific must be True; global scope is invalid since TCF v2.2")
        bad = sorted(tc.purpose_legitimate_interests & LI_FORBIDDEN_PURPOSES)
        if bad:
            raise TCFError(
                f"cannot encode: purpose_legitimate_interests holds {', '.join(map(str, bad))}; TCF v2.2 allows "
                "legitimate interest for neither purpose 1 nor purposes 3-6"
            )
    _check_restrictions(tc.publisher_restrictions)
    pub = tc.publisher_tc
    if pub is not None:
        if not isinstance(pub, PublisherTC):
            raise TCFError(f"cannot encode: publisher_tc must be a PublisherTC or None, not {type(pub).__name__}")
        _check_ids(pub.purpose_consents, "publisher_tc.purpose_consents", MAX_PURPOSE_ID)
        _check_ids(pub.purpose_legitimate_interests, "publisher_tc.purpose_legitimate_interests", MAX_PURPOSE_ID)
        _check_int(pub.num_custom_purposes, "publisher_tc.num_custom_purposes", 6)
        high = pub.num_custom_purposes
        for name in ("custom_purpose_consents", "custom_purpose_legitimate_interests"):
            ids = getattr(pub, name)
            if high == 0:
                if ids:
                    raise TCFError(f"cannot encode: publisher_tc.{name} is not empty but num_custom_purposes is 0")
            else:
                _check_ids(ids, f"publisher_tc.{name}", high)


def encode(tc: TCString) -> str:
    """Encode ``tc`` in canonical form (see the module documentation); raise :class:`TCFError` if invalid."""
    _check_for_encode(tc)
    w = _Writer()
    w.put(2, 6)
    w.put(_deciseconds(tc.created, "created"), 36)
    w.put(_deciseconds(tc.last_updated, "last_updated"), 36)
    w.put(tc.cmp_id, 12)
    w.put(tc.cmp_version, 12)
    w.put(tc.consent_screen, 6)
    w.put(_letter_bits(tc.consent_language, "consent_language"), 12)
    w.put(tc.vendor_list_version, 12)
    w.put(tc.tcf_policy_version, 6)
    w.put(int(bool(tc.is_service_specific)), 1)
    w.put(int(bool(tc.use_non_standard_texts)), 1)
    w.put(_bits_of(tc.special_feature_optins, MAX_SPECIAL_FEATURE_ID), MAX_SPECIAL_FEATURE_ID)
    w.put(_bits_of(tc.purpose_consents, MAX_PURPOSE_ID), MAX_PURPOSE_ID)
    w.put(_bits_of(tc.purpose_legitimate_interests, MAX_PURPOSE_ID), MAX_PURPOSE_ID)
    w.put(int(bool(tc.purpose_one_treatment)), 1)
    w.put(_letter_bits(tc.publisher_cc, "publisher_cc"), 12)
    _put_vendor_section(w, tc.vendor_consents)
    _put_vendor_section(w, tc.vendor_legitimate_interests)
    w.put(len(tc.publisher_restrictions), 12)
    for r in sorted(tc.publisher_restrictions, key=lambda r: (r.purpose_id, r.restriction_type)):
        w.put(r.purpose_id, 6)
        w.put(r.restriction_type, 2)
        _put_ranges(w, _runs(r.vendors))
    segments = [w.text()]
    if tc.disclosed_vendors is not None:
        w = _Writer()
        w.put(SEGMENT_DISCLOSED_VENDORS, 3)
        _put_vendor_section(w, tc.disclosed_vendors)
        segments.append(w.text())
    pub = tc.publisher_tc
    if pub is not None:
        w = _Writer()
        w.put(SEGMENT_PUBLISHER_TC, 3)
        w.put(_bits_of(pub.purpose_consents, MAX_PURPOSE_ID), MAX_PURPOSE_ID)
        w.put(_bits_of(pub.purpose_legitimate_interests, MAX_PURPOSE_ID), MAX_PURPOSE_ID)
        w.put(pub.num_custom_purposes, 6)
        w.put(_bits_of(pub.custom_purpose_consents, pub.num_custom_purposes), pub.num_custom_purposes)
        w.put(_bits_of(pub.custom_purpose_legitimate_interests, pub.num_custom_purposes), pub.num_custom_purposes)
        segments.append(w.text())
    return ".".join(segments)


# --------------------------------------------------------------------------------------------
# CMP API v2 TCData JSON
# --------------------------------------------------------------------------------------------


def _all_ids(ids: abc.Set[int], high: int) -> dict[str, bool]:
    return {str(i): i in ids for i in range(1, high + 1)}


def _true_ids(ids: abc.Set[int]) -> dict[str, bool]:
    return {str(i): True for i in sorted(ids)}


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_tcdata(tc: TCString) -> dict[str, Any]:
    """The CMP API v2 ``TCData`` shape of ``tc`` (JSON-ready), plus the core fields the API omits.

    Conventions (the CMP API allows listing ids with ``true`` or ``false``; these are fixed):

    * purposes (``purpose.*``, ``publisher.consents``, ``publisher.legitimateInterests``) list every
      id 1-24 with its boolean and ``specialFeatureOptins`` every id 1-12; custom purposes list every
      id 1-``NumCustomPurposes``, so their count survives the round trip;
    * vendors (``vendor.consents``, ``vendor.legitimateInterests``, ``disclosedVendors``) list only
      the ids that are ``true``: a missing vendor id means false;
    * without a publisher TC segment the ``publisher`` consent maps are empty; without a
      disclosed-vendors segment ``disclosedVendors`` is ``None``;
    * ``publisher.restrictions`` is ``{"<purposeId>": {"<vendorId>": restrictionType}}``;
    * ``created``/``lastUpdated`` are ISO-8601 UTC strings with milliseconds, e.g.
      ``"2024-05-01T00:00:00.000Z"``; ``consentLanguage`` and ``publisherCC`` are upper case.

    ``tcString``, ``gdprApplies``, ``eventStatus``, ``cmpStatus`` and ``listenerId`` describe a
    CMP session, not the string, and are not produced.
    """
    pub = tc.publisher_tc
    restrictions: dict[str, dict[str, int]] = {}
    for r in tc.publisher_restrictions:
        per_purpose = restrictions.setdefault(str(r.purpose_id), {})
        for vendor in sorted(r.vendors):
            per_purpose[str(vendor)] = r.restriction_type
    for key, per_purpose in restrictions.items():
        restrictions[key] = dict(sorted(per_purpose.items(), key=lambda item: int(item[0])))
    return {
        "tcfPolicyVersion": tc.tcf_policy_version,
        "cmpId": tc.cmp_id,
        "cmpVersion": tc.cmp_version,
        "isServiceSpecific": tc.is_service_specific,
        "useNonStandardTexts": tc.use_non_standard_texts,
        "publisherCC": tc.publisher_cc,
        "purposeOneTreatment": tc.purpose_one_treatment,
        "purpose": {
            "consents": _all_ids(tc.purpose_consents, MAX_PURPOSE_ID),
            "legitimateInterests": _all_ids(tc.purpose_legitimate_interests, MAX_PURPOSE_ID),
        },
        "vendor": {
            "consents": _true_ids(tc.vendor_consents),
            "legitimateInterests": _true_ids(tc.vendor_legitimate_interests),
        },
        "specialFeatureOptins": _all_ids(tc.special_feature_optins, MAX_SPECIAL_FEATURE_ID),
        "publisher": {
            "consents": _all_ids(pub.purpose_consents, MAX_PURPOSE_ID) if pub else {},
            "legitimateInterests": _all_ids(pub.purpose_legitimate_interests, MAX_PURPOSE_ID) if pub else {},
            "customPurpose": {
                "consents": _all_ids(pub.custom_purpose_consents, pub.num_custom_purposes) if pub else {},
                "legitimateInterests": (
                    _all_ids(pub.custom_purpose_legitimate_interests, pub.num_custom_purposes) if pub else {}
                ),
            },
            "restrictions": restrictions,
        },
        "created": _iso(tc.created),
        "lastUpdated": _iso(tc.last_updated),
        "consentLanguage": tc.consent_language,
        "vendorListVersion": tc.vendor_list_version,
        "consentScreen": tc.consent_screen,
        "disclosedVendors": None if tc.disclosed_vendors is None else _true_ids(tc.disclosed_vendors),
    }


def _need(obj: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in obj:
        raise TCFError(f"tcdata: {path}{key} is missing")
    return obj[key]


def _as_map(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TCFError(f"tcdata: {path} must be an object, not {type(value).__name__}")
    return value


def _as_int(value: object, path: str, bits: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < (1 << bits):
        raise TCFError(f"tcdata: {path} must be an integer 0-{(1 << bits) - 1}, not {value!r}")
    return value


def _as_bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise TCFError(f"tcdata: {path} must be true or false, not {value!r}")
    return value


def _id_key(key: object, path: str, high: int) -> int:
    if not isinstance(key, str) or not key.isascii() or not key.isdigit() or not 1 <= int(key) <= high:
        raise TCFError(f"tcdata: {path} has key {key!r}; keys are ids 1-{high} written as strings")
    return int(key)


def _id_flags(value: object, path: str, high: int) -> tuple[IdSet, int]:
    """A ``{"<id>": bool}`` map: the ids set to true, and the highest id listed (0 if none)."""
    ids: set[int] = set()
    top = 0
    for key, flag in _as_map(value, path).items():
        i = _id_key(key, path, high)
        if _as_bool(flag, f"{path}[{key!r}]"):
            ids.add(i)
        top = max(top, i)
    return IdSet(ids), top


def _as_datetime(value: object, path: str) -> datetime:
    if not isinstance(value, str):
        raise TCFError(f"tcdata: {path} must be an ISO-8601 string, not {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise TCFError(f"tcdata: {path} is not an ISO-8601 timestamp: {value!r}") from None
    if parsed.tzinfo is None:
        raise TCFError(f"tcdata: {path} {value!r} has no timezone; use UTC, e.g. '2024-05-01T00:00:00Z'")
    return parsed.astimezone(UTC)


def _as_letters(value: object, path: str) -> str:
    if not isinstance(value, str) or not _LETTERS_RE.fullmatch(value):
        raise TCFError(f"tcdata: {path} must be two letters A-Z, not {value!r}")
    return value.upper()


def from_tcdata(data: Mapping[str, Any]) -> TCString:
    """Rebuild a :class:`TCString` from :func:`to_tcdata` output; unknown keys are ignored.

    ``encode(from_tcdata(to_tcdata(tc))) == encode(tc)``. Vendor maps may also list ``false``
    entries, as CMPs do; purpose maps may omit ids (omitted means false).
    """
    data = _as_map(data, "the TCData")
    purpose = _as_map(_need(data, "purpose", ""), "purpose")
    vendor = _as_map(_need(data, "vendor", ""), "vendor")
    publisher = _as_map(_need(data, "publisher", ""), "publisher")
    custom = _as_map(publisher.get("customPurpose", {}), "publisher.customPurpose")
    pub_consents, pub_top = _id_flags(publisher.get("consents", {}), "publisher.consents", MAX_PURPOSE_ID)
    pub_li, pub_li_top = _id_flags(
        publisher.get("legitimateInterests", {}), "publisher.legitimateInterests", MAX_PURPOSE_ID
    )
    custom_consents, custom_top = _id_flags(
        custom.get("consents", {}), "publisher.customPurpose.consents", MAX_CUSTOM_PURPOSES
    )
    custom_li, custom_li_top = _id_flags(
        custom.get("legitimateInterests", {}), "publisher.customPurpose.legitimateInterests", MAX_CUSTOM_PURPOSES
    )
    publisher_tc = None
    if pub_top or pub_li_top or custom_top or custom_li_top:
        publisher_tc = PublisherTC(pub_consents, pub_li, max(custom_top, custom_li_top), custom_consents, custom_li)
    grouped: dict[tuple[int, int], set[int]] = {}
    for purpose_key, per_vendor in _as_map(publisher.get("restrictions", {}), "publisher.restrictions").items():
        path = f"publisher.restrictions[{purpose_key!r}]"
        purpose_id = _id_key(purpose_key, "publisher.restrictions", MAX_PURPOSE_ID)
        for vendor_key, kind in _as_map(per_vendor, path).items():
            vendor_id = _id_key(vendor_key, path, MAX_VENDOR_ID)
            if kind not in (0, 1, 2) or isinstance(kind, bool):
                raise TCFError(f"tcdata: {path}[{vendor_key!r}] must be a restriction type 0, 1 or 2, not {kind!r}")
            grouped.setdefault((purpose_id, kind), set()).add(vendor_id)
    disclosed_raw = data.get("disclosedVendors")
    disclosed = None
    if disclosed_raw is not None:
        disclosed = _id_flags(disclosed_raw, "disclosedVendors", MAX_VENDOR_ID)[0]
    return TCString(
        created=_as_datetime(_need(data, "created", ""), "created"),
        last_updated=_as_datetime(_need(data, "lastUpdated", ""), "lastUpdated"),
        cmp_id=_as_int(_need(data, "cmpId", ""), "cmpId", 12),
        cmp_version=_as_int(_need(data, "cmpVersion", ""), "cmpVersion", 12),
        consent_screen=_as_int(_need(data, "consentScreen", ""), "consentScreen", 6),
        consent_language=_as_letters(_need(data, "consentLanguage", ""), "consentLanguage"),
        vendor_list_version=_as_int(_need(data, "vendorListVersion", ""), "vendorListVersion", 12),
        tcf_policy_version=_as_int(_need(data, "tcfPolicyVersion", ""), "tcfPolicyVersion", 6),
        is_service_specific=_as_bool(_need(data, "isServiceSpecific", ""), "isServiceSpecific"),
        use_non_standard_texts=_as_bool(_need(data, "useNonStandardTexts", ""), "useNonStandardTexts"),
        special_feature_optins=_id_flags(
            _need(data, "specialFeatureOptins", ""), "specialFeatureOptins", MAX_SPECIAL_FEATURE_ID
        )[0],
        purpose_consents=_id_flags(_need(purpose, "consents", "purpose."), "purpose.consents", MAX_PURPOSE_ID)[0],
        purpose_legitimate_interests=_id_flags(
            _need(purpose, "legitimateInterests", "purpose."), "purpose.legitimateInterests", MAX_PURPOSE_ID
        )[0],
        purpose_one_treatment=_as_bool(_need(data, "purposeOneTreatment", ""), "purposeOneTreatment"),
        publisher_cc=_as_letters(_need(data, "publisherCC", ""), "publisherCC"),
        vendor_consents=_id_flags(_need(vendor, "consents", "vendor."), "vendor.consents", MAX_VENDOR_ID)[0],
        vendor_legitimate_interests=_id_flags(
            _need(vendor, "legitimateInterests", "vendor."), "vendor.legitimateInterests", MAX_VENDOR_ID
        )[0],
        publisher_restrictions=tuple(
            PublisherRestriction(purpose_id, kind, IdSet(vendors))
            for (purpose_id, kind), vendors in sorted(grouped.items())
        ),
        disclosed_vendors=disclosed,
        publisher_tc=publisher_tc,
    )


# --------------------------------------------------------------------------------------------
# Candor purposes
# --------------------------------------------------------------------------------------------

# TCF v2.2 purpose -> Candor purpose. Purpose 1 ("store and/or access information on a device")
# is not in the map: it is a precondition of every other purpose (see purposes_allowed).
#   2 use limited data to select advertising        -> advertising
#   3 create profiles for personalised advertising  -> advertising
#   4 use profiles to select personalised ads       -> advertising
#   5 create profiles to personalise content        -> personalization
#   6 use profiles to select personalised content   -> personalization
#   7 measure advertising performance               -> analytics
#   8 measure content performance                   -> analytics
#   9 understand audiences (market research)        -> analytics
#   10 develop and improve services                 -> analytics
DEFAULT_PURPOSE_MAP: Mapping[int, str] = MappingProxyType(
    {
        2: "advertising",
        3: "advertising",
        4: "advertising",
        5: "personalization",
        6: "personalization",
        7: "analytics",
        8: "analytics",
        9: "analytics",
        10: "analytics",
    }
)
STORAGE_PURPOSES: frozenset[int] = frozenset({1})


def purposes_allowed(
    tc: TCString,
    mapping: Mapping[int, str] = DEFAULT_PURPOSE_MAP,
    *,
    preconditions: abc.Set[int] = STORAGE_PURPOSES,
    publisher: bool = False,
) -> dict[str, bool]:
    """Map TCF purpose consents to Candor purposes, failing closed.

    A Candor purpose is ``True`` only if every TCF purpose mapped to it has consent *and* every
    ``preconditions`` purpose (by default purpose 1, storage and access) has consent: without
    purpose 1 everything is ``False``, also when ``PurposeOneTreatment`` says purpose 1 was not
    disclosed. Legitimate-interest signals never grant a Candor purpose. Every Candor name in
    ``mapping`` appears in the result.

    With ``publisher=True`` the publisher TC segment (the publisher's own purposes) is read
    instead of the vendor-facing core purposes; without that segment everything is ``False``.
    """
    consents: abc.Set[int] = tc.purpose_consents
    if publisher:
        consents = tc.publisher_tc.purpose_consents if tc.publisher_tc is not None else _EMPTY
    gate = all(p in consents for p in preconditions)
    result: dict[str, bool] = {}
    for tcf_purpose, name in mapping.items():
        result[name] = result.get(name, True) and gate and tcf_purpose in consents
    return result
