"""Next best action: rules parsed strictly (Hypothesis), decided per request with consent read afresh."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from candor.config import Settings
from candor.recommend.decide import DecideError, parse
from tests.helpers import api, basic, bearer
from tests.recommend.test_recommend import grant, order, shop

RULES: dict[str, Any] = {
    "placements": {
        "hero": {
            "rules": [
                {
                    "name": "jazz-fans",
                    "when": {"all": [{"trait": "interests", "contains": "jazz"}, {"not": {"segment": "lapsed"}}]},
                    "offer": {"id": "jazz-week", "title": "Jazz week", "content": {"url": "/music/jazz"}},
                },
                {"name": "email-ok", "when": {"consent": "marketing.email"},
                 "offer": {"id": "newsletter", "title": "Join"}},
                {"name": "for-you", "when": {"consent": "personalization"},
                 "offer": {"id": "for-you", "title": "Picked for you", "recommendations": 3}},
            ],
            "default": {"id": "bestsellers", "title": "Bestsellers", "recommendations": 3},
        }
    }
}  # fmt: skip


@pytest.fixture
def dec_settings(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(RULES))
    return make_settings(recommend_refresh_seconds=0, analytics_refresh_seconds=0, decide_rules_file=str(path))


@pytest.mark.anyio
async def test_rules_pick_the_offer_personal_only_with_consent(dec_settings: Settings) -> None:
    async with api(dec_settings) as a:
        await shop(a)
        sid = a.rt.consent.subject_for("user_id", "alice")
        assert sid
        a.rt.rights.add_traits(sid, {"interests": ["jazz"]}, source="preference-center", message_id="p:2")
        a.rt.recommend.rebuild(full=True)
        r = await a.client.get("/v1/decide?userId=alice&placement=hero", headers=bearer(a.owner))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["rule"] == "jazz-fans" and body["personalized"] is True
        assert body["offer"]["id"] == "jazz-week" and body["offer"]["content"] == {"url": "/music/jazz"}
        grant(a, "alice", False)  # the trait rule is skipped at once: personal conditions need consent
        body = (await a.client.get("/v1/decide?userId=alice&placement=hero", headers=bearer(a.owner))).json()
        assert body["rule"] != "jazz-fans" and body["personalized"] is False
        assert all(i["reason"]["kind"] == "bestseller" for i in body["offer"].get("items", []))
        # unknown person: the generic default, never an error that tells whether they exist
        body = (await a.client.get("/v1/decide?userId=ghost&placement=hero", headers=bearer(a.owner))).json()
        assert body["rule"] is None and body["offer"]["id"] == "bestsellers" and body["personalized"] is False
        r = await a.client.get("/v1/decide?userId=alice&placement=nope", headers=bearer(a.owner))
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_placement"
        r = await a.client.get("/v1/decide?userId=alice", headers=bearer(a.owner))
        assert r.status_code == 400


@pytest.mark.anyio
async def test_client_side_decide_takes_a_write_key_and_an_anonymous_id_only(dec_settings: Settings) -> None:
    async with api(dec_settings) as a:
        await shop(a)
        r = await a.client.get("/v1/decide/client?anonymousId=anon-1&placement=hero", headers=basic(a.write_key))
        assert r.status_code == 200 and r.json()["offer"]["id"] == "bestsellers"
        r = await a.client.get("/v1/decide/client?userId=alice&placement=hero", headers=basic(a.write_key))
        assert r.status_code == 400
        r = await a.client.get("/v1/decide/client?anonymousId=a&placement=hero", headers=bearer(a.owner))
        assert r.status_code == 401


@pytest.mark.anyio
async def test_campaign_template_helper_is_personal_only_with_consent(dec_settings: Settings) -> None:
    from candor.campaigns import templates

    async with api(dec_settings) as a:
        await shop(a)
        await order(a, "bob", "B-1")
        a.rt.recommend.rebuild(full=True)
        sid = a.rt.consent.subject_for("user_id", "bob")
        text = "{% for r in recommendations(2) %}{{ r.name }}: {{ r.why }}\n{% endfor %}"
        personal = templates.render_body(text, {}, True, recommendations=a.rt.recommend.template_helper(sid))
        assert "Blue Hour Sessions: because you bought Salt and Paper" in personal
        generic = templates.render_body(text, {}, False, recommendations=a.rt.recommend.template_helper(None))
        assert "because you" not in generic and generic.count("\n") == 2
        grant(a, "bob", False)
        after = templates.render_body(text, {}, True, recommendations=a.rt.recommend.template_helper(sid))
        assert "because you" not in after
        templates.check("template", text, personal=False)  # checking uses a fixed sample, nobody's data


def test_malformed_rules_name_their_place() -> None:
    bad = [
        ({"placements": {"p": {"rules": [{"offer": {"id": "x"}, "when": {"segmnt": "a"}}]}}},
         "placements.p.rules[0].when: unknown condition 'segmnt'"),
        ({"placements": {"p": {"rules": [{"offer": {"id": "x", "recommendations": 99}}]}}},
         "placements.p.rules[0].offer.recommendations"),
        ({"placements": {"p": {"rules": [{"offer": {"id": "x"}, "when": {"trait": "t"}}]}}},
         "placements.p.rules[0].when: a trait condition needs exactly one of"),
        ({"placements": {"p": {"rules": [{"name": "a", "offer": {"id": "x"}}, {"name": "a", "offer": {"id": "y"}}]}}},
         "placements.p.rules[1].name"),
        ({"placements": {"p": {"default": {"title": "no id"}}}}, "placements.p.default.id"),
        ({"rules": []}, "rules: a document with one key"),
    ]  # fmt: skip
    for doc, where in bad:
        with pytest.raises(DecideError) as e:
            parse(doc)
        assert where in str(e.value), str(e.value)


def test_cli_check_reports_the_place(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from candor.cli import app

    f = tmp_path / "rules.yaml"
    f.write_text("placements:\n  p:\n    rules:\n      - offer: {id: x}\n        when: {consent: 3}\n")
    r = CliRunner().invoke(app, ["decide", "check", str(f)])
    assert r.exit_code == 1 and "placements.p.rules[0].when.consent" in r.output
    f.write_text(json.dumps(RULES))
    r = CliRunner().invoke(app, ["decide", "check", str(f)])
    assert r.exit_code == 0 and "jazz-fans" in r.output


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=15,
)
names = st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=10)
conds = st.recursive(
    st.one_of(
        names.map(lambda n: {"consent": n}),
        names.map(lambda n: {"segment": n}),
        st.tuples(names, st.sampled_from(["equals", "contains"]), names).map(lambda t: {"trait": t[0], t[1]: t[2]}),
    ),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda xs: {"all": xs}),
        st.lists(inner, min_size=1, max_size=3).map(lambda xs: {"any": xs}),
        inner.map(lambda x: {"not": x}),
    ),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_any_document_parses_or_fails_with_a_decide_error(doc: Any) -> None:
    for candidate in (doc, {"placements": doc}, {"placements": {"p": doc}}, {"placements": {"p": {"rules": doc}}}):
        with contextlib.suppress(DecideError):
            parse(candidate)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(conds, names), min_size=1, max_size=5, unique_by=lambda t: t[1]))
def test_valid_rules_parse_and_keep_their_order(rules: list[tuple[Any, str]]) -> None:
    doc = {"placements": {"p": {"rules": [{"name": n, "when": c, "offer": {"id": n}} for c, n in rules]}}}
    parsed = parse(doc)["p"]
    assert [r.name for r in parsed.rules] == [n for _, n in rules]
    for rule, (cond, _) in zip(parsed.rules, rules, strict=True):
        assert rule.personal == ('"segment"' in json.dumps(cond) or '"trait"' in json.dumps(cond))


def test_a_malformed_rules_file_stops_the_start_naming_the_place(tmp_path: Path) -> None:
    from candor.app import Runtime
    from candor.config import ConfigError

    f = tmp_path / "rules.json"
    f.write_text(json.dumps({"placements": {"p": {"rules": [{"offer": {"id": "x"}, "when": {"age": 3}}]}}}))
    with pytest.raises(ConfigError, match=r"placements\.p\.rules\[0\]\.when: unknown condition 'age'"):
        Runtime(Settings.from_env(env={}, data_dir=tmp_path / "d", decide_rules_file=str(f)))
