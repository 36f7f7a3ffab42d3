"""Detectors: one interface, built-ins registered first, offline, and robust to odd input (Hypothesis)."""

from __future__ import annotations

import socket
import string
from typing import Any

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from candor import detect
from candor.detect import (
    DEFAULT_PHONE_REGIONS,
    Detector,
    Scanner,
    Span,
    build_detectors,
    default_scanner,
    field_category,
    field_names,
    redact_text,
    scan_text,
)

SLOW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def entities(text: str) -> set[str]:
    return {s.entity for s in scan_text(text).spans}


def luhn_complete(body: str) -> str:
    """``body`` plus the Luhn check digit."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return body + str((10 - total % 10) % 10)


def test_builtins_are_registered_first_and_implement_the_interface() -> None:
    assert detect.registered()[0] == "builtin"
    found = build_detectors()
    assert found and all(isinstance(d, Detector) for d in found)
    names = {d.name for d in found}
    for entity in ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "NATIONAL_ID"):
        assert f"presidio:{entity}" in names


def test_a_registered_detector_is_used_like_a_builtin() -> None:
    class Loyalty:
        name = "test:loyalty"
        hint = r"LC-\d"
        categories = frozenset({"identifier"})

        def detect(self, text: str) -> list[Span]:
            i = text.find("LC-")
            return [Span(i, i + 11, "LOYALTY_CARD", "identifier", 1.0, self.name)] if i >= 0 else []

    detect.register("test-loyalty", lambda _settings: [Loyalty()])
    try:
        scanner = Scanner(build_detectors())
        assert [s.entity for s in scanner.scan("card LC-12345678").spans] == ["LOYALTY_CARD"]
    finally:
        detect.unregister("test-loyalty")
    assert "test-loyalty" not in detect.registered()


def test_configurable_patterns_run_as_presidio_recognizers(tmp_path: Any) -> None:
    from candor.config import Settings

    f = tmp_path / "patterns.json"
    f.write_text('[{"name": "member id", "regex": "MB-\\\\d{6}", "category": "identifier", "score": 0.9}]')
    s = Settings.from_env(env={"CANDOR_PII_PATTERNS": str(f)}, data_dir=tmp_path)
    scanner = Scanner(build_detectors(s))
    spans = scanner.scan("member MB-123456 joined").spans
    assert [(sp.entity, sp.category) for sp in spans] == [("CUSTOM_MEMBER_ID", "identifier")]


def test_bad_pattern_files_are_refused_with_the_reason(tmp_path: Any) -> None:
    from candor.config import ConfigError, Settings

    f = tmp_path / "p.json"
    f.write_text('[{"name": "x", "regex": "("}]')
    with pytest.raises(ConfigError, match="does not compile"):
        Settings.from_env(env={"CANDOR_PII_PATTERNS": str(f)}, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="unknown category"):
        Settings.from_env(env={"CANDOR_PII_FIELD_NAMES": "blood=gory"}, data_dir=tmp_path)


@pytest.mark.parametrize(
    ("text", "entity"),
    [
        ("write to ann.lee@example.co.uk please", "EMAIL_ADDRESS"),
        ("https://shop.example.com/account/ann@example.com/orders", "EMAIL_ADDRESS"),
        ("https://shop.example.com/?email=ann%40example.com&x=1", "EMAIL_ADDRESS"),
        ("4111 1111 1111 1111", "CREDIT_CARD"),
        ("5500-0000-0000-0004", "CREDIT_CARD"),
        ("378282246310005", "CREDIT_CARD"),
        ("DE89 3704 0044 0532 0130 00", "IBAN_CODE"),
        ("GB82WEST12345698765432", "IBAN_CODE"),
        ("from 192.0.2.44 today", "IP_ADDRESS"),
        ("2001:db8:85a3::8a2e:370:7334", "IP_ADDRESS"),
        ("AB123456C", "UK_NINO"),
        ("12345678Z", "ES_NIF"),
        ("+44 20 7946 0958", "PHONE_NUMBER"),
    ],
)
def test_each_builtin_entity_is_found(text: str, entity: str) -> None:
    assert entity in entities(text)


@pytest.mark.parametrize(
    "text", ["4111 1111 1111 1112", "sku-01234", "2024-05-01T10:00:00Z", "ord-1234567890", "hello world", "Jazz"]
)
def test_lookalikes_are_not_personal_data(text: str) -> None:
    assert not scan_text(text).found


def test_plain_values_never_reach_presidio() -> None:
    calls: list[str] = []

    class Spy:
        name = "spy"
        hint = r"@"
        categories = frozenset({"contact"})

        def detect(self, text: str) -> list[Span]:
            calls.append(text)
            return []

    scanner = Scanner([Spy()])
    for value in ("Books", "sku-00042", "Product Viewed", "12.99", "/p/00042"):
        assert not scanner.scan(value).found
    assert calls == []
    scanner.scan("a@b")
    assert calls == []  # shorter than any email address


def test_detection_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """tldextract (used by the email recognizer) would fetch the public suffix list; it must not."""

    def refuse(*_a: Any, **_k: Any) -> None:
        raise AssertionError("detection opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(detect, "_ENGINES", {})
    scanner = Scanner(build_detectors())
    assert {s.entity for s in scanner.scan("mail ann@example.org or ann@example.co.jp").spans} == {"EMAIL_ADDRESS"}
    extractor = detect._offline_tldextract()
    assert tuple(extractor.suffix_list_urls) == ()
    assert extractor._cache.enabled is False  # no cache directory written or read


def test_no_spacy_model_is_loaded() -> None:
    from presidio_analyzer.nlp_engine import NoOpNlpEngine

    engine = detect.presidio_engine()
    assert isinstance(engine.nlp_engine, NoOpNlpEngine)
    import spacy.util

    assert spacy.util.get_installed_models() == []  # nothing was downloaded to make this work


def test_redact_text_masks_each_kind() -> None:
    out = redact_text("Call +44 20 7946 0958 or ann@example.com; card 4111 1111 1111 1111. Thanks!")
    assert out.text == "Call <PHONE_NUMBER> or <EMAIL_ADDRESS>; card <CREDIT_CARD>. Thanks!"
    assert out.entities == ("PHONE_NUMBER", "EMAIL_ADDRESS", "CREDIT_CARD")
    assert not out.unscannable
    assert redact_text("Lovely shop, fast delivery").text == "Lovely shop, fast delivery"
    assert redact_text("x ann@example.com", replacement=lambda s: "***").text == "x ***"


def test_a_failing_detector_makes_the_text_unscannable_never_shown() -> None:
    class Broken:
        name = "broken"
        hint = r"\d"
        categories = frozenset({"contact"})

        def detect(self, text: str) -> list[Span]:
            raise RuntimeError("boom")

    out = redact_text("order 12345 for ann", scanner=Scanner([Broken()]))
    assert out.unscannable and out.text == "<UNSCANNABLE>"


def test_very_long_texts_are_scanned_around_their_hints() -> None:
    text = "lorem ipsum " * 2500 + " reach me at ann@example.com " + "dolor " * 1000
    found = scan_text(text).spans
    assert [s.entity for s in found] == ["EMAIL_ADDRESS"]
    assert text[found[0].start : found[0].end] == "ann@example.com"
    # a very long text full of candidates cannot be scanned whole: it counts as personal
    assert scan_text("1.2.3.4 " * 5000).failed


def test_field_names_suggest_categories() -> None:
    assert field_category("customer_email") == "contact"
    assert field_category("userPassword") == "credentials"
    assert field_category("cardNumber") == "credentials"
    assert field_category("HealthCondition") == "health"
    assert field_category("stackTrace") is None
    assert field_category("productName") is None
    names = field_names("loyaltyNo=identifier,age=")
    assert field_category("loyaltyNo", names) == "identifier"
    assert field_category("age", names) is None


# -- Hypothesis: generated variants of each pattern --------------------------------------------------
SEP = st.sampled_from(["", " ", "-"])


@st.composite
def card_numbers(draw: Any) -> str:
    prefix = draw(st.sampled_from(["4", "51", "52", "55", "37", "6011"]))
    length = 15 if prefix == "37" else 16
    body = prefix + "".join(draw(st.lists(st.sampled_from(string.digits), min_size=length - len(prefix) - 1,
                                          max_size=length - len(prefix) - 1)))  # fmt: skip
    digits = luhn_complete(body)
    sep = draw(SEP)
    groups = [digits[i : i + 4] for i in range(0, len(digits), 4)]
    return sep.join(groups)


@SLOW
@given(card=card_numbers(), before=st.sampled_from(["", "card: ", "paid with "]), after=st.sampled_from(["", " ok"]))
def test_cards_split_by_spaces_or_dashes_are_found(card: str, before: str, after: str) -> None:
    spans = scan_text(before + card + after).spans
    assert any(s.entity == "CREDIT_CARD" for s in spans)


@SLOW
@given(
    user=st.from_regex(r"[a-z][a-z0-9._]{0,15}[a-z0-9]", fullmatch=True),
    domain=st.sampled_from(["example.com", "mail.example.org", "example.co.uk", "example.de"]),
    shape=st.sampled_from(["{e}", "mailto:{e}", "https://x.example.net/p?u={e}", "https://x.example.net/p?u={q}"]),
)
def test_emails_plain_and_in_urls_are_found(user: str, domain: str, shape: str) -> None:
    email = f"{user}@{domain}"
    text = shape.format(e=email, q=email.replace("@", "%40"))
    assert "EMAIL_ADDRESS" in entities(text)


REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
PHONES = Scanner(d for d in build_detectors() if d.name == "presidio:PHONE_NUMBER")


@SLOW
@given(region=st.sampled_from(REGIONS), kind=st.sampled_from(["mobile", "fixed"]))
def test_phone_numbers_in_many_national_formats_are_found(region: str, kind: str) -> None:
    from phonenumbers import PhoneNumberFormat, PhoneNumberType

    example = phonenumbers.example_number_for_type(
        region, PhoneNumberType.MOBILE if kind == "mobile" else PhoneNumberType.FIXED_LINE
    )
    if example is None:
        return
    international = phonenumbers.format_number(example, PhoneNumberFormat.INTERNATIONAL)
    # the phone detector finds it (in the full scan an overlapping national id may win the span)
    assert "PHONE_NUMBER" in {s.entity for s in PHONES.scan(f"call {international}").spans}, international
    assert scan_text(f"call {international}").found
    if region in DEFAULT_PHONE_REGIONS:
        national = phonenumbers.format_number(example, PhoneNumberFormat.NATIONAL)
        assert "PHONE_NUMBER" in {s.entity for s in PHONES.scan(national).spans}, national


@SLOW
@given(st.text(max_size=400))
def test_any_text_is_scanned_without_error(text: str) -> None:
    result = scan_text(text)
    for s in result.spans:
        assert 0 <= s.start < s.end <= len(text)
    masked = redact_text(text)
    assert isinstance(masked.text, str)


@SLOW
@given(st.binary(max_size=300))
def test_binary_looking_strings_are_safely_handled(raw: bytes) -> None:
    text = raw.decode("latin-1") + raw.hex()
    scan_text(text)
    redact_text(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))


def test_default_scanner_is_shared() -> None:
    assert default_scanner() is default_scanner()
