"""Detection of personal data in values: one small interface, registered detectors, offline.

A :class:`Detector` finds spans of personal data in a text. Each one carries a **hint**: a cheap
regular expression that every value it could find matches (an ``@`` for an email address, a run of
13 to 19 digits for a card number). A :class:`Scanner` combines the hints of its detectors into
one pre-filter, so that a value no detector could match costs one regular-expression search, and
only plausible values reach the (much slower) detectors themselves.

The built-in detectors are registered first, like any other (:func:`register`):

- Microsoft Presidio's pattern recognizers, on its no-model NLP engine (``NoOpNlpEngine``: no spaCy
  model is loaded or needed): email addresses, phone numbers in many national formats
  (``phonenumbers``), payment cards (with the Luhn checksum), IBANs (with their checksum), IPv4 and
  IPv6 addresses, and national identifiers (US SSN, UK NINO and NHS number, Spanish NIF/NIE, Italian
  fiscal code, Polish PESEL, Finnish, Swedish, Indian, Singaporean, Australian, Canadian, German,
  Korean and Turkish ids). Presidio's email recognizer calls tldextract, which would download the
  public suffix list on first use; here it runs on tldextract's bundled snapshot with no cache
  directory and no URLs, so nothing touches the network.
- configurable patterns (``CANDOR_PII_PATTERNS``, a JSON file: ``[{"name": "loyalty card", "regex":
  "LC-\\\\d{8}", "category": "identifier", "score": 0.9}]``), as Presidio pattern recognizers.

Field names are matched separately (:func:`field_category`, ``CANDOR_PII_FIELD_NAMES``).

For free text (survey comments, reviews), :func:`redact_text` finds and masks personal data in one
call; :func:`scan_text` returns the spans. Both never log or raise on odd input: a detector that fails
on a value makes the value count as *unscannable* (``Scan.failed``), which callers treat as personal.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote_plus

WINDOW = 2048  # texts up to this length are analysed whole; longer ones around their hints
CONTEXT = 64  # characters around each hint in a long text
MAX_WINDOWS = 24  # beyond this many windows a long text is unscannable (treated as personal)
CACHE_MAX_CHARS = 256  # verdicts on values up to this length are cached, keyed by a hash (no plaintext)
CACHE_SIZE = 50_000
VERDICTS_SIZE = 100_000  # pre-filter verdicts remembered (an int and a bool each: a few MB at most)
DEFAULT_PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "IN", "BR")
_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}")


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int
    entity: str  # e.g. EMAIL_ADDRESS, CREDIT_CARD
    category: str  # a data category of dictionary.CATEGORIES
    score: float
    detector: str


@runtime_checkable
class Detector(Protocol):
    """What a detector is: a name, a cheap hint and a ``detect`` that returns spans."""

    name: str
    hint: str  # a regular expression every value this detector can find matches (the pre-filter)
    categories: frozenset[str]  # the data categories it can report

    def detect(self, text: str) -> list[Span]: ...


_REGISTRY: dict[str, Callable[[Any], list[Detector]]] = {}


def register(name: str, factory: Callable[[Any], list[Detector]]) -> None:
    """Register detectors: ``factory(settings)`` returns them (settings may be None: the defaults).
    A later registration under the same name replaces the earlier one."""
    _REGISTRY[name] = factory


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def registered() -> list[str]:
    return list(_REGISTRY)


def build_detectors(settings: Any = None) -> list[Detector]:
    out: list[Detector] = []
    for factory in _REGISTRY.values():
        out.extend(factory(settings))
    return out


# -- Presidio, offline -------------------------------------------------------------------------------
_ENGINE_LOCK = threading.Lock()
_ENGINES: dict[tuple[Any, ...], Any] = {}

# (Presidio entity, recognizer class name, data category, hint); GATES: the fewest digits a value must hold,
# or a character it must hold, to possibly match (checked in C before the hint's regular expression runs)
# ISO dates and times (2024-05-01, 2024-05-01T10:00:00Z) are never phone numbers or national ids
_NOT_DATE = r"(?!(?:1[89]|2\d)\d\d-[01]\d-[0-3]\d)"
PRESIDIO_ENTITIES: tuple[tuple[str, str, str, str], ...] = (
    ("EMAIL_ADDRESS", "EmailRecognizer", "contact", r"\w@\w"),
    ("PHONE_NUMBER", "PhoneRecognizer", "contact", _NOT_DATE + r"(?<![\w\-])\+?\(?\d[\d \-.()]{5,22}\d(?![\w])"),
    ("CREDIT_CARD", "CreditCardRecognizer", "credentials", r"(?<!\d)(?:\d[ \-]?){12,18}\d(?!\d)"),
    ("IBAN_CODE", "IbanRecognizer", "financial", r"\b[A-Za-z]{2}\d{2}[ ]?[A-Za-z0-9]{4}"),
    (
        "IP_ADDRESS",
        "IpRecognizer",
        "identifier",
        r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b|[0-9A-Fa-f]{1,4}::|::[0-9A-Fa-f]{1,4}|(?:[0-9A-Fa-f]{1,4}:){3,7}[0-9A-Fa-f]{1,4}",
    ),
)
GATES: dict[str, tuple[int, str]] = {
    "EMAIL_ADDRESS": (10**9, "@"),
    "PHONE_NUMBER": (7, ""),
    "CREDIT_CARD": (13, ""),
    "IBAN_CODE": (6, ""),
    "IP_ADDRESS": (4, ":"),
    "NATIONAL_ID": (6, ""),
}
_DIGITS = "0123456789"
NATIONAL_IDS: tuple[str, ...] = (
    "UsSsnRecognizer",
    "UkNinoRecognizer",
    "NhsRecognizer",
    "EsNifRecognizer",
    "EsNieRecognizer",
    "ItFiscalCodeRecognizer",
    "PlPeselRecognizer",
    "FiPersonalIdentityCodeRecognizer",
    "SePersonnummerRecognizer",
    "InAadhaarRecognizer",
    "InPanRecognizer",
    "SgFinRecognizer",
    "AuTfnRecognizer",
    "CaSinRecognizer",
    "DeTaxIdRecognizer",
    "KrRrnRecognizer",
    "TrNationalIdRecognizer",
)
# national ids: mostly digits (with separators), or letters and digits mixed (NINO, NIE, PAN, fiscal code)
NATIONAL_HINT = (
    _NOT_DATE + r"(?<![\w\-])\d{3}[ \-./]?\d{2}[ \-./]?\d{3,}|\b[A-Za-z]{1,6}[ ]?\d{2}[ ]?\d{2}|\d{6,}[A-Za-z]\b"
    r"|\b[A-Za-z]\d{7}"
)


def _offline_tldextract() -> Any:
    import tldextract

    # no URLs, no cache directory: the suffix list bundled with tldextract, never a download
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)


def presidio_engine(
    phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS, patterns: Sequence[dict[str, Any]] = ()
) -> Any:
    """A Presidio AnalyzerEngine on the no-op NLP engine with pattern recognizers only (built once)."""
    key = (tuple(phone_regions), json.dumps(list(patterns), sort_keys=True))
    with _ENGINE_LOCK:
        engine = _ENGINES.get(key)
        if engine is not None:
            return engine
        import logging

        # Presidio logs every recognizer it loads and every text it cannot enhance: noise, never values
        logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)
        from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer, RecognizerRegistry
        from presidio_analyzer import predefined_recognizers as pr
        from presidio_analyzer.nlp_engine import NoOpNlpEngine

        extract = _offline_tldextract()

        class OfflineEmailRecognizer(pr.EmailRecognizer):
            def validate_result(self, pattern_text: str) -> bool:
                # the domain alone: the whole match may carry URL parts before the local part
                # (``?email=ann@example.com``), which make tldextract read it as a path
                return bool(extract(pattern_text.rpartition("@")[2]).fqdn)

        registry = RecognizerRegistry(supported_languages=["en"])
        registry.add_recognizer(OfflineEmailRecognizer())
        registry.add_recognizer(pr.PhoneRecognizer(supported_regions=tuple(phone_regions)))
        registry.add_recognizer(pr.CreditCardRecognizer())
        registry.add_recognizer(pr.IbanRecognizer())
        registry.add_recognizer(pr.IpRecognizer())
        for name in NATIONAL_IDS:
            registry.add_recognizer(getattr(pr, name)(supported_language="en"))
        for p in patterns:
            registry.add_recognizer(
                PatternRecognizer(
                    supported_entity=_custom_entity(p["name"]),
                    patterns=[Pattern(p["name"], p["regex"], float(p.get("score", 0.8)))],
                    supported_language="en",
                )
            )
        nlp = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
        nlp.load()
        engine = AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=["en"])
        _ENGINES[key] = engine
        return engine


def _custom_entity(name: str) -> str:
    return "CUSTOM_" + re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_")


def national_entities() -> dict[str, str]:
    """Presidio entity → recognizer class, for the national id recognizers."""
    from presidio_analyzer import predefined_recognizers as pr

    out = {}
    for name in NATIONAL_IDS:
        cls = getattr(pr, name)
        rec = cls(supported_language="en")
        for e in rec.supported_entities:
            out[e] = name
    return out


@dataclass
class PresidioDetector:
    """One group of Presidio entities, with the hint that pre-filters values for it."""

    name: str
    hint: str
    entities: tuple[str, ...]
    category_of: dict[str, str]
    min_score: float
    engine: Callable[[], Any]
    gate: tuple[int, str] | None = None  # (fewest digits, or any of these characters) a match needs
    categories: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.categories = frozenset(self.category_of.values())

    def detect(self, text: str) -> list[Span]:
        results = self.engine().analyze(text, language="en", entities=list(self.entities))
        return [
            Span(r.start, r.end, r.entity_type, self.category_of.get(r.entity_type, "identifier"), r.score, self.name)
            for r in results
            if r.score >= self.min_score
        ]


def load_patterns(path: str | Path | None) -> list[dict[str, Any]]:
    """Configurable patterns from a JSON file (a list of {name, regex, category, score?})."""
    from candor.dictionary import CATEGORIES

    if not path:
        return []
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the PII patterns ({type(exc).__name__}); expected a JSON list") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of {{name, regex, category}} objects")
    out = []
    for i, p in enumerate(data):
        if not isinstance(p, dict) or not isinstance(p.get("name"), str) or not isinstance(p.get("regex"), str):
            raise ValueError(f"{path}: item {i} needs a name and a regex (strings)")
        if p.get("category", "identifier") not in CATEGORIES:
            raise ValueError(f"{path}: item {i}: unknown category {p.get('category')!r}")
        try:
            re.compile(p["regex"])
        except re.error as exc:
            raise ValueError(f"{path}: item {i}: the regex does not compile: {exc}") from None
        out.append({"name": p["name"][:60], "regex": p["regex"], "category": p.get("category", "identifier"),
                    "score": float(p.get("score", 0.8))})  # fmt: skip
    return out


def _builtin(settings: Any) -> list[Detector]:
    regions = DEFAULT_PHONE_REGIONS
    patterns: list[dict[str, Any]] = []
    if settings is not None:
        regions = tuple(r.strip().upper() for r in settings.pii_phone_regions.split(",") if r.strip()) or regions
        patterns = load_patterns(settings.pii_patterns_file or None)

    def engine() -> Any:
        return presidio_engine(regions, patterns)

    out: list[Detector] = [
        PresidioDetector(f"presidio:{entity}", hint, (entity,), {entity: category}, 0.3, engine, GATES[entity])
        for entity, _cls, category, hint in PRESIDIO_ENTITIES
    ]
    national = national_entities()
    out.append(
        PresidioDetector(
            "presidio:NATIONAL_ID",
            NATIONAL_HINT,
            tuple(national),
            dict.fromkeys(national, "government_id"),
            0.5,
            engine,
            GATES["NATIONAL_ID"],
        )
    )
    for p in patterns:
        entity = _custom_entity(p["name"])
        out.append(
            PresidioDetector(f"pattern:{p['name']}", p["regex"], (entity,), {entity: p["category"]}, 0.0, engine)
        )
    return out


register("builtin", _builtin)


# -- scanning ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Scan:
    spans: tuple[Span, ...] = ()
    failed: bool = False  # a detector failed or the text was too long to scan: treat it as personal

    @property
    def found(self) -> bool:
        return bool(self.spans) or self.failed


NOTHING = Scan()


class Scanner:
    """Detectors behind one combined pre-filter, with a bounded cache of verdicts (keyed by hash)."""

    def __init__(self, detectors: Iterable[Detector]) -> None:
        self.detectors = list(detectors)
        self._hints = [(d, re.compile(d.hint)) for d in self.detectors]
        self.prefilter = re.compile("|".join(f"(?:{d.hint})" for d in self.detectors)) if self.detectors else None
        # cheap gates before the regular expressions, when every detector declares one: a hint runs only
        # on values with enough digits (counted in C) or one of its characters
        gates = [getattr(d, "gate", None) for d in self.detectors]
        self._gated: list[tuple[int, re.Pattern[str] | None, re.Pattern[str]]] | None = None
        if gates and all(g is not None for g in gates):
            self._gated = [
                (g[0], re.compile("[" + re.escape(g[1]) + "]") if g[1] else None, h)  # type: ignore[index]
                for g, (_d, h) in zip(gates, self._hints, strict=True)
            ]
        self._cache: dict[bytes, Scan] = {}
        self._verdicts: dict[int, bool] = {}  # plausible(): hash of a value → verdict
        self._lock = threading.Lock()

    def only(self, categories: Iterable[str]) -> Scanner:
        """A scanner with the detectors that can report one of ``categories``."""
        want = set(categories)
        return Scanner(d for d in self.detectors if d.categories & want)

    def plausible_or_encoded(self, text: str) -> bool:
        """:meth:`plausible`, or percent-encoded (which :meth:`scan` also looks at decoded)."""
        return self.plausible(text) or ("%" in text and _ENCODED.search(text) is not None)

    def plausible(self, text: str) -> bool:
        """The cheap pre-filter: could any detector find something in ``text``?

        Verdicts on values up to ``CACHE_MAX_CHARS`` are remembered (keyed by the string's hash, an
        integer: no plaintext is kept), because most values of a site's events repeat (user agents,
        page titles, URLs, locales) and a user agent, rich in digits, passes several digit gates."""
        if self.prefilter is None or len(text) < 5:
            return False
        if len(text) <= CACHE_MAX_CHARS:
            key = hash(text)
            hit = self._verdicts.get(key)
            if hit is None:
                hit = self._plausible(text)
                if len(self._verdicts) >= VERDICTS_SIZE:
                    self._verdicts.clear()
                self._verdicts[key] = hit
            return hit
        return self._plausible(text)

    def _plausible(self, text: str) -> bool:
        gated = self._gated
        if gated is None:
            return self.prefilter is not None and self.prefilter.search(text) is not None
        raw = text.encode("utf-8", "surrogatepass")
        digits = len(raw) - len(raw.translate(None, b"0123456789"))
        for need, chars, hint in gated:
            if digits < need and (chars is None or chars.search(text) is None):
                continue  # this detector's hint cannot match: too few digits and none of its characters
            if hint.search(text) is not None:
                return True
        return False

    def scan(self, text: str) -> Scan:
        """Spans of personal data in ``text``. Never raises; never logs the text.

        A percent-encoded text (``?email=ann%40example.com``) is also scanned decoded; what is found
        there flags the whole value (its positions do not map back onto the encoded text)."""
        if "%" in text and _ENCODED.search(text):
            decoded = unquote_plus(text)
            if decoded != text:
                inner = self.scan(decoded)
                if inner.found:
                    first = inner.spans[0] if inner.spans else None
                    whole = (
                        Span(0, len(text), first.entity, first.category, first.score, first.detector) if first else None
                    )
                    return Scan((whole,) if whole else (), inner.failed)
        if not self.plausible(text):
            return NOTHING
        key = None
        if len(text) <= CACHE_MAX_CHARS:
            key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
            hit = self._cache.get(key)
            if hit is not None:
                return hit
        result = self._scan(text)
        if key is not None:
            with self._lock:
                if len(self._cache) >= CACHE_SIZE:
                    self._cache.clear()
                self._cache[key] = result
        return result

    def _scan(self, text: str) -> Scan:
        spans: list[Span] = []
        failed = False
        for detector, hint in self._hints:
            if len(text) <= WINDOW:
                if hint.search(text) is None:
                    continue
                windows = [(0, len(text))]
            else:
                found_windows = _windows(text, hint)
                if found_windows is None:
                    failed = True
                    continue
                windows = found_windows
                if not windows:
                    continue
            for start, end in windows:
                try:
                    found = detector.detect(text[start:end])
                except Exception:  # noqa: BLE001 - an odd value must never fail collection; it counts as personal
                    failed = True
                    continue
                spans.extend(
                    Span(s.start + start, s.end + start, s.entity, s.category, s.score, s.detector) for s in found
                )
        return Scan(_merge(spans), failed)


def _windows(text: str, hint: re.Pattern[str]) -> list[tuple[int, int]] | None:
    """Windows of ``text`` around the places its hint matches, merged; None when there are too many."""
    out: list[tuple[int, int]] = []
    for m in hint.finditer(text):
        start, end = max(0, m.start() - CONTEXT), min(len(text), m.end() + CONTEXT)
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
        if len(out) > MAX_WINDOWS or (out[-1][1] - out[-1][0]) > WINDOW * 4:
            return None
    return out


def _merge(spans: list[Span]) -> tuple[Span, ...]:
    """Overlapping spans merged: the never-stored category wins, then the higher score."""
    if not spans:
        return ()
    rank = {"credentials": 2}
    spans.sort(key=lambda s: (s.start, -s.end))
    out: list[Span] = []
    for s in spans:
        if out and s.start < out[-1].end:
            last = out[-1]
            keep = max((last, s), key=lambda x: (rank.get(x.category, 0), x.score))
            out[-1] = Span(min(last.start, s.start), max(last.end, s.end), keep.entity, keep.category, keep.score,
                           keep.detector)  # fmt: skip
        else:
            out.append(s)
    return tuple(out)


def mask(text: str, spans: Sequence[Span], replacement: Callable[[Span], str] | None = None) -> str:
    """``text`` with every span replaced (by ``<ENTITY>`` unless ``replacement`` says otherwise)."""
    rep = replacement or (lambda s: f"<{s.entity}>")
    parts: list[str] = []
    at = 0
    for s in sorted(spans, key=lambda x: x.start):
        if s.start < at:
            continue
        parts.append(text[at : s.start])
        parts.append(rep(s))
        at = s.end
    parts.append(text[at:])
    return "".join(parts)


_DEFAULT_SCANNER: Scanner | None = None


def default_scanner() -> Scanner:
    global _DEFAULT_SCANNER
    if _DEFAULT_SCANNER is None:
        _DEFAULT_SCANNER = Scanner(build_detectors(None))
    return _DEFAULT_SCANNER


def scan_text(text: str, scanner: Scanner | None = None) -> Scan:
    """Spans of personal data in a free text (email, phone, card, IBAN, IP address, national ids)."""
    return (scanner or default_scanner()).scan(text)


@dataclass(frozen=True)
class Redacted:
    text: str  # the text with personal data masked
    entities: tuple[str, ...]  # what was masked, in order (e.g. EMAIL_ADDRESS, PHONE_NUMBER)
    unscannable: bool  # the text could not be scanned whole: ``text`` is fully masked


def redact_text(
    text: str, *, scanner: Scanner | None = None, replacement: Callable[[Span], str] | None = None
) -> Redacted:
    """Scan a free text (a survey comment, a review) and mask the personal data in it.

    Every email address, phone number, payment card, IBAN, IP address and national id becomes
    ``<ENTITY>`` (``"call me on <PHONE_NUMBER>"``), or what ``replacement(span)`` returns. A text that
    cannot be scanned whole (a detector failed, or a very long text with a great many candidates)
    comes back fully masked as ``<UNSCANNABLE>`` with ``unscannable=True``: never shown unmasked.
    Works offline and never raises on odd input (binary-looking strings, very long texts).
    """
    if not isinstance(text, str):
        raise TypeError("redact_text takes a str")
    result = scan_text(text, scanner)
    if result.failed:
        return Redacted("<UNSCANNABLE>", (), True)
    return Redacted(mask(text, result.spans, replacement), tuple(s.entity for s in result.spans), False)


# -- field names -------------------------------------------------------------------------------------
# Normalised field name (lower case, without _ - . and spaces) → data category. Extended (or overridden)
# by CANDOR_PII_FIELD_NAMES: "name=category,..." pairs.
DEFAULT_FIELD_NAMES: dict[str, str] = {
    **dict.fromkeys(("password", "passwd", "pwd", "passphrase", "pin", "pincode", "cvv", "cvc", "cvv2", "cvc2",
                     "securitycode", "cardsecuritycode", "cardnumber", "creditcard", "creditcardnumber", "ccnumber",
                     "ccnum", "pan", "cardno", "secret", "apikey", "accesstoken", "otp"), "credentials"),
    **dict.fromkeys(("email", "emailaddress", "mail", "phone", "phonenumber", "mobile", "mobilephone", "cell",
                     "cellphone", "telephone", "tel", "fax", "address", "street", "streetaddress", "postcode",
                     "postalcode", "zip", "zipcode"), "contact"),
    **dict.fromkeys(("firstname", "lastname", "surname", "fullname", "givenname", "familyname", "username",
                     "userid", "deviceid", "idfa", "gaid", "ip", "ipaddress"), "identifier"),
    **dict.fromkeys(("dob", "dateofbirth", "birthdate", "birthday", "age", "gender", "sex"), "demographic"),
    **dict.fromkeys(("iban", "bic", "accountnumber", "bankaccount", "routingnumber", "sortcode", "salary",
                     "income"), "financial"),
    **dict.fromkeys(("ssn", "socialsecurity", "socialsecuritynumber", "nino", "nationalid", "nationalidnumber",
                     "passport", "passportnumber", "driverslicense", "driverlicense", "drivinglicence", "taxid",
                     "tin", "nif", "nie", "personnummer", "aadhaar"), "government_id"),
    **dict.fromkeys(("latitude", "longitude", "lat", "lng", "lon", "geo", "gps", "coordinates"),
                    "precise_location"),
    **dict.fromkeys(("health", "diagnosis", "condition", "medication", "medicalcondition", "allergy", "allergies",
                     "disability", "pregnant", "pregnancy", "bloodtype"), "health"),
    **dict.fromkeys(("religion", "faith", "belief"), "religion"),
    **dict.fromkeys(("ethnicity", "race", "ethnicorigin"), "ethnicity"),
    **dict.fromkeys(("sexualorientation", "orientation"), "sexual_orientation"),
    **dict.fromkeys(("politicalparty", "politics", "politicalopinion", "politicalview"), "political_opinion"),
    **dict.fromkeys(("tradeunion", "unionmember", "unionmembership"), "trade_union"),
    **dict.fromkeys(("fingerprint", "faceid", "faceprint", "voiceprint", "biometric"), "biometric"),
    **dict.fromkeys(("dna", "genome", "genotype", "genetic"), "genetic"),
}  # fmt: skip

_NORM = re.compile(r"[_\-.\s]+")


def normalise_name(name: str) -> str:
    return _NORM.sub("", name.lower())


def field_names(spec: str = "") -> dict[str, str]:
    """The field-name map: the defaults with ``CANDOR_PII_FIELD_NAMES`` (``name=category,...``) applied.
    ``name=`` with no category removes a default."""
    from candor.dictionary import CATEGORIES

    out = dict(DEFAULT_FIELD_NAMES)
    for part in spec.split(","):
        if not part.strip():
            continue
        name, sep, cat = part.partition("=")
        key = normalise_name(name.strip())
        if not sep or not key:
            raise ValueError(f"CANDOR_PII_FIELD_NAMES: {part.strip()!r} is not name=category")
        cat = cat.strip()
        if not cat:
            out.pop(key, None)
        elif cat not in CATEGORIES:
            raise ValueError(f"CANDOR_PII_FIELD_NAMES: unknown category {cat!r} for {name.strip()!r}")
        else:
            out[key] = cat
    return out


_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def field_category(name: str, names: dict[str, str] | None = None) -> str | None:
    """The data category a field name suggests (``customer_email`` → contact), or None.

    The whole name is tried first, then its last words (``billingPhone`` → ``phone``, ``user_password``
    → ``password``), so ``stackTrace`` does not read as ``race``."""
    table = DEFAULT_FIELD_NAMES if names is None else names
    hit = table.get(normalise_name(name))
    if hit is not None:
        return hit
    words = [w.lower() for w in _WORDS.findall(name)]
    for n in range(min(3, len(words) - 1), 0, -1):
        hit = table.get("".join(words[-n:]))
        if hit is not None:
            return hit
    return None
