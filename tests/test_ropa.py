"""The records of processing (GDPR Art. 30) follow the configuration, as JSON and as a page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from candor import audit, ropa
from candor.app import Runtime
from candor.config import Settings
from candor.consent.purposes import DEFAULT_PURPOSES
from tests.helpers import api, bearer

pytestmark = pytest.mark.anyio


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings.from_env(
        env={},
        data_dir=tmp_path / "data",
        controller="Books & Records <Ltd>",
        controller_contact="privacy@shop.example",
        dpo_contact="dpo@shop.example",
        smtp_url="smtp://mailuser:s3cret@mail.shop.example:587",
        retention="raw_events=13mo,ip_address=30d,rejected_records=30d,purpose:necessary=10y,purpose:analytics=6mo",
        **kw,
    )


def test_the_records_are_generated_from_the_configuration(tmp_path: Path) -> None:
    rt = Runtime(_settings(tmp_path))
    try:
        doc = ropa.build(rt)
    finally:
        rt.close()
    assert doc["controller"] == {
        "name": "Books & Records <Ltd>",
        "contact": "privacy@shop.example",
        "data_protection_officer": "dpo@shop.example",
    }
    by_purpose = {a["purpose"]: a for a in doc["activities"]}
    assert set(by_purpose) == set(DEFAULT_PURPOSES)
    for name, p in DEFAULT_PURPOSES.items():
        assert by_purpose[name]["lawful_basis"]["EU"] == p.basis_in("EU")
        assert by_purpose[name]["lawful_basis"]["US-CA"] == p.basis_in("US-CA")
    assert by_purpose["analytics"]["retention"]["days"] == 180  # its own rule
    assert by_purpose["personalization"]["retention"]["period"] == "while the person's profile exists"
    assert "'Order Completed' events" in by_purpose["necessary"]["events"]
    assert by_purpose["necessary"]["retention"]["period"] == "10 years"
    assert "contact_details" in by_purpose["marketing.email"]["data_categories"]
    assert "device_and_network" in by_purpose["analytics"]["data_categories"]
    assert {r["target"]: r["period"] for r in doc["retention"]}["ip_address"] == "30 days"
    mail = next(r for r in doc["recipients"] if r["name"].startswith("mail server"))
    assert mail["name"] == "mail server mail.shop.example" and "marketing.email" in mail["purposes"]
    text = json.dumps(doc)
    assert "s3cret" not in text and "mailuser" not in text  # credentials never appear
    assert any("AES-256-GCM" in m for m in doc["security_measures"])
    # a registered source (the data dictionary, a destination) adds to the records
    ropa.register_categories(lambda _rt: {"loyalty_points": {"description": "points earned and spent"}})
    ropa.register_recipients(lambda _rt: [{"name": "webhook crm.example", "kind": "processor", "purposes": ["x"]}])
    try:
        rt = Runtime(_settings(tmp_path))
        more = ropa.build(rt)
        rt.close()
    finally:
        ropa.CATEGORY_SOURCES.clear()
        ropa.RECIPIENT_SOURCES.clear()
    assert "loyalty_points" in more["data_categories"]
    assert any(r["name"] == "webhook crm.example" for r in more["recipients"])


def test_the_data_dictionary_appears_in_the_records(tmp_path: Path) -> None:
    rt = Runtime(_settings(tmp_path))
    try:
        rt.directory.create_source("shop")
        rt.dictionary.declare("shop", "traits", "allergies", "health", 400, actor="test")
        doc = ropa.build(rt)
        page = ropa.render_html(doc)
    finally:
        rt.close()
    health = next(c for c in doc["data_dictionary"] if c["category"] == "health")
    assert health["special"] and "traits.allergies" in health["fields"] and "shop" in health["sources"]
    assert health["retention_days"] == [400]
    email = next(c for c in doc["data_dictionary"] if c["category"] == "contact")
    assert "traits.email" in email["fields"]  # Segment's reserved traits come pre-declared
    assert "traits.allergies" in page and 'id="dictionary"' in page


async def test_privacy_officers_read_the_records_as_json_and_html(tmp_path: Path) -> None:
    async with api(_settings(tmp_path)) as a:
        officer = bearer(a.rt.directory.create_token("dana", "privacy_officer"))
        r = await a.client.get("/v1/ropa", headers=officer)
        assert r.status_code == 200 and r.json()["format"] == "candor-ropa/1"
        page = await a.client.get("/v1/ropa.html", headers=officer)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src" not in page.headers["content-security-policy"]
        assert "Books &amp; Records &lt;Ltd&gt;" in page.text  # escaped
        for p in DEFAULT_PURPOSES:
            assert f"<code>{p}</code>" in page.text
        marketer = bearer(a.rt.directory.create_token("m", "marketer"))
        assert (await a.client.get("/v1/ropa", headers=marketer)).status_code == 403
        reads = [e for e in audit.entries(a.rt.store, limit=1000) if e["action"] == "ropa.read"]
        assert [e["details"]["format"] for e in reads] == ["json", "html"]


def test_ropa_command_writes_json_and_html(tmp_path: Path) -> None:
    from candor.cli import app

    runner = CliRunner()
    env = {"CANDOR_DATA_DIR": str(tmp_path / "data"), "CANDOR_CONTROLLER": "Shop"}
    out = runner.invoke(app, ["ropa"], env=env)
    assert out.exit_code == 0 and json.loads(out.stdout)["controller"]["name"] == "Shop"
    page = tmp_path / "ropa.html"
    made = runner.invoke(app, ["ropa", "--format", "html", "--out", str(page)], env=env)
    assert made.exit_code == 0 and "<h1>Records of processing activities</h1>" in page.read_text()
    bad = runner.invoke(app, ["ropa", "--format", "pdf"], env=env)
    assert bad.exit_code == 2 and "json or html" in bad.output
