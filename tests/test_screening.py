"""The screen on its own (no store): declared fields, odd values, the fast look and the full walk agree."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from candor.detect import Scanner, Span, build_detectors, field_names
from candor.dictionary import BUILTIN, Declaration, SourceDictionary
from candor.screening import Screen

SCANNER = Scanner(build_detectors())


def screen(*extra: Declaration, scanner: Scanner | None = SCANNER, policy: str = "encrypt") -> Screen:
    return Screen(SourceDictionary((*BUILTIN, *extra)), scanner=scanner, names=field_names(""), policy=policy)


def test_a_declared_field_is_not_flagged_by_its_name() -> None:
    s = screen(Declaration("properties", "loyalty_secret", "identifier", None, 1))
    out = s.apply({"loyalty_secret": "s3cr3t", "client_secret": "x"}, {}, {})
    assert out.properties == {"loyalty_secret": "s3cr3t"}
    assert [f[1] for f in out.findings] == ["client_secret"]


def test_card_numbers_as_json_numbers_are_removed_anywhere() -> None:
    out = screen().apply(
        {"n": 4111111111111111, "ts": 1718000000000}, {"phone": 5500000000000004}, {"x": 4111111111111111}
    )
    assert out.properties == {"ts": 1718000000000}  # an epoch in milliseconds is no card
    assert "phone" not in out.traits and "x" not in out.context


def test_an_unscannable_value_is_sealed_not_withheld() -> None:
    class Broken:
        name = "broken"
        hint = r"\d"
        categories = frozenset({"contact"})
        gate = None

        def detect(self, text: str) -> list[Span]:
            raise RuntimeError("boom")

    out = screen(scanner=Scanner([Broken()])).apply({"comment": "order 12345"}, {}, {})
    assert out.properties == {} and out.sealed_properties == {"comment": "order 12345"} and not out.held
    assert out.findings == [("properties", "comment", "communications", "unscannable", "encrypted")]


def test_special_and_never_stored_declarations() -> None:
    s = screen(
        Declaration("traits", "religion", "religion", None, 1), Declaration("properties", "pin", "credentials", 0, 1)
    )
    out = s.apply({"pin": "1234", "sku": "a"}, {"religion": "x", "email": "a@example.com"}, {})
    assert out.properties == {"sku": "a"} and out.traits == {"email": "a@example.com"}
    assert [(h.category, h.path) for h in out.held] == [("religion", "religion")]


# values that matter to the screen: card numbers (plain, spaced, percent-encoded, as JSON numbers),
# emails, phones, national ids, coordinates; and field names it knows (declared, personal by name)
TRICKY = st.sampled_from(
    [
        "4111111111111111",
        "4111 1111 1111 1111",
        "card 4111%201111%201111%201111",
        "ann@example.com",
        "ann%40example.com",
        "(312) 555-0123",
        "078-05-1120",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0.0.0 Safari/537.36",
        "192.168.10.20",
    ]
)
KEYS = st.sampled_from(["email", "phone", "address", "name", "password", "lat", "religion", "sku", "note", "ip"])
JSONISH = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.just(4111111111111111),
        st.floats(allow_nan=False),
        st.text(max_size=40),
        TRICKY,
    ),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10) | KEYS, c, max_size=4),
    max_leaves=15,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(props=st.dictionaries(st.text(max_size=12) | KEYS, JSONISH, max_size=5))
def test_the_fast_look_never_skips_what_the_walk_would_change(props: dict[str, Any]) -> None:
    from candor.screening import Screened

    s = screen(Declaration("traits", "religion", "religion", None, 1))
    for scope in ("properties", "traits", "context"):
        if s._needs_walk(props, scope):
            continue
        out = Screened({}, {}, {})
        walked = s._walk(props, scope, "", False, out, True)
        assert walked == props  # nothing to change, as the fast look said
        assert not out.findings and not out.held and not out.sealed_properties


def test_declared_fields_skip_the_walk_unless_they_carry_a_card_number() -> None:
    s = screen()
    traits = {"email": "ann@example.com", "phone": "(312) 555-0123", "address": {"street": "12 Main St"}}
    assert not s._needs_walk(traits, "traits")  # declared: only a card number could change them
    assert s._needs_walk({**traits, "address": {"street": "4111 1111 1111 1111"}}, "traits")
    out = s.apply({}, {**traits, "address": {"street": "4111 1111 1111 1111"}}, {})
    assert out.traits["address"] == {} and out.traits["email"] == "ann@example.com"
    assert s._needs_walk({"note": "ann@example.com"}, "traits")  # undeclared: scanned


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.text(max_size=30) | TRICKY, min_size=1, max_size=20))
def test_remembered_pre_filter_verdicts_equal_fresh_ones(texts: list[str]) -> None:
    scanner = Scanner(build_detectors())
    first = [scanner.plausible(t) for t in texts]
    assert first == [scanner._plausible(t) if len(t) >= 5 else False for t in texts]
    assert [scanner.plausible(t) for t in texts] == first  # the second time from the cache


def test_the_verdict_cache_is_bounded_and_keeps_no_plaintext(monkeypatch: Any) -> None:
    from candor import detect

    monkeypatch.setattr(detect, "VERDICTS_SIZE", 10)
    scanner = Scanner(build_detectors())
    for i in range(35):
        scanner.plausible(f"value number {i:05d} ann@example.com")
    assert 0 < len(scanner._verdicts) <= 10
    assert all(type(k) is int for k in scanner._verdicts)


def test_the_server_builds_the_detectors_before_serving(tmp_path: Any, monkeypatch: Any) -> None:
    from candor import detect
    from candor.app import Runtime
    from candor.config import Settings

    monkeypatch.setattr(detect, "_ENGINES", {})
    rt = Runtime(Settings.from_env(env={}, data_dir=tmp_path))
    try:
        assert detect._ENGINES == {}  # a CLI command never pays for it
        rt.screens.warm()  # what the app's startup runs
        assert len(detect._ENGINES) == 1
    finally:
        rt.close()
