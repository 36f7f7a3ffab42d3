"""Normalisation of identifiers before they are pseudonymised or compared.

Two spellings of one email or phone number must give one pseudonym, so every identifier passes
through here first. Emails use email-validator's syntax rules, phones are formatted to E.164 with
phonenumbers. A value that is not a usable identifier returns ``None``.
"""

from __future__ import annotations

import re
import unicodedata

import phonenumbers
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

# Values that client code sends when it has no real identifier; they must never link two people.
JUNK_IDENTIFIERS = frozenset(
    {
        "",
        "null",
        "none",
        "nil",
        "undefined",
        "nan",
        "0",
        "-1",
        "anonymous",
        "unknown",
        "n/a",
        "na",
        "test",
        "[object object]",
        "guest",
    }
)
_ALL_ZEROS = re.compile(r"^[0\-_.:]+$")


def is_junk(value: str) -> bool:
    """True for placeholder values (``null``, ``0``, all zeros, ...) that identify nobody."""
    v = value.strip().lower()
    return v in JUNK_IDENTIFIERS or bool(_ALL_ZEROS.match(v))


def text_id(value: object) -> str | None:
    """A generic identifier (userId, anonymousId, external id): NFC, trimmed; numbers as text."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        value = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if not isinstance(value, str):
        return None
    v = unicodedata.normalize("NFC", value).strip()
    if not v or is_junk(v):
        return None
    return v


# Plain ASCII addresses that email-validator accepts as they are: checked here in one regular
# expression, the rest (internationalised, quoted, unusual) goes through email-validator.
_SIMPLE_EMAIL = re.compile(
    r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?P<tld>[a-z]{2,63})"
)
_SPECIAL_DOMAINS = frozenset(SPECIAL_USE_DOMAIN_NAMES)


def _special(domain: str) -> bool:
    """Special-use domains (RFC 6761: localhost, test, invalid, ...) that email-validator refuses."""
    # every special-use name is a single label, so only the last label (or the whole domain) can be one
    return domain.rpartition(".")[2] in _SPECIAL_DOMAINS or domain in _SPECIAL_DOMAINS


def email(value: object) -> str | None:
    """Normalised, lower-cased email address, or None when the syntax is not an email."""
    if not isinstance(value, str) or not value.strip() or len(value) > 320:
        return None
    simple = value.strip().lower()
    if len(simple) <= 254 and simple.find("@") <= 64:
        match = _SIMPLE_EMAIL.fullmatch(simple)
        domain = simple.rpartition("@")[2]
        if match is not None and "--" not in domain and not _special(domain):
            return simple
    try:
        info = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError:
        return None
    return str(info.normalized).lower()


def phone(value: object, default_region: str = "US") -> str | None:
    """E.164 phone number (``+14155550100``), or None when it is not a valid number."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        return None
    try:
        parsed = phonenumbers.parse(value, default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


_SPACES = re.compile(r"\s+")
_PUNCT = re.compile(r"[.,#;:'\"]")


def postal_address(value: object) -> str | None:
    """A postal address reduced to a comparable form: case-folded, accents kept, punctuation and
    repeated spaces removed. Accepts a string or a Segment address object."""
    if isinstance(value, dict):
        parts = [
            value.get(k) for k in ("street", "city", "postalCode", "state", "country") if isinstance(value.get(k), str)
        ]
        value = " ".join(str(p) for p in parts)
    if not isinstance(value, str):
        return None
    v = unicodedata.normalize("NFKC", value).casefold()
    v = _SPACES.sub(" ", _PUNCT.sub(" ", v)).strip()
    return v or None
