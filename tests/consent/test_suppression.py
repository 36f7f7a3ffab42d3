"""Do-not-contact lists: normalised keyed hashes, channels, imports, audience counts, no plaintext."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from candor.cli import app as cli_app
from candor.config import Settings
from candor.consent.suppression import SuppressionError, normalise
from tests.helpers import api, bearer

pytestmark = pytest.mark.anyio


async def test_add_check_and_channels(settings: Settings) -> None:
    async with api(settings) as a:
        owner = bearer(a.owner)
        r = await a.client.post(
            "/v1/suppressions", json={"channel": "email", "email": "Ann@Example.com"}, headers=owner
        )
        assert r.json() == {"added": True}
        r = await a.client.post(
            "/v1/suppressions", json={"channel": "email", "email": "ann@example.com"}, headers=owner
        )
        assert r.json() == {"added": False}  # the same address, normalised
        check = await a.client.post(
            "/v1/suppressions/check", json={"channel": "email", "email": " ANN@example.COM"}, headers=owner
        )
        body = check.json()
        assert body["suppressed"] is True and body["entries"][0]["reason"] == "unsubscribe"
        other = await a.client.post(
            "/v1/suppressions/check", json={"channel": "sms", "email": "ann@example.com"}, headers=owner
        )
        assert other.json()["suppressed"] is False
        await a.client.post(
            "/v1/suppressions", json={"channel": "all", "phone": "(415) 555-0134", "reason": "complaint"}, headers=owner
        )
        for channel in ("sms", "phone", "post"):
            r = await a.client.post(
                "/v1/suppressions/check", json={"channel": channel, "phone": "+1 415 555 0134"}, headers=owner
            )
            assert r.json()["suppressed"] is True
        bad = await a.client.post("/v1/suppressions", json={"channel": "email", "email": "not-an-email"}, headers=owner)
        assert bad.status_code == 400 and "not a valid email" in bad.json()["error"]["message"]
        both = await a.client.post(
            "/v1/suppressions",
            json={"channel": "email", "email": "a@example.com", "phone": "+14155550100"},
            headers=owner,
        )
        assert both.status_code == 400
        marketer = a.rt.directory.create_token("m", "marketer")
        denied = await a.client.post(
            "/v1/suppressions", json={"channel": "email", "email": "b@example.com"}, headers=bearer(marketer)
        )
        assert denied.status_code == 403


async def test_audience_counts_by_purpose(make_settings: Callable[..., Settings]) -> None:
    async with api(make_settings(default_jurisdiction="EU")) as a:
        for i in range(4):
            await a.post("/v1/identify", {"userId": f"u{i}", "traits": {"email": f"p{i}@example.com"}})
        await a.post("/v1/consent", {"userId": "u0", "granted": ["marketing.email"]})
        await a.post("/v1/consent", {"userId": "u1", "granted": ["marketing.email"]})
        await a.post("/v1/consent", {"userId": "u2", "denied": ["marketing.email"]})
        a.rt.suppressions.add("email", "email", "p1@example.com", "bounce")
        r = await a.client.get("/v1/consent/audience", headers=bearer(a.owner))
        counts = r.json()
        assert counts["marketing.email"] == {"usable": 1, "not_consented": 2, "suppressed": 1, "restricted": 0}
        assert counts["necessary"]["usable"] == 4
        analyst = a.rt.directory.create_token("x", "analyst")
        assert (await a.client.get("/v1/consent/audience", headers=bearer(analyst))).status_code == 403


def test_import_cli_reports_matches_and_errors(tmp_path: Path) -> None:
    from candor.app import Runtime
    from candor.ingest import Work
    from candor.store import now_ms

    data = tmp_path / "data"
    rt = Runtime(Settings.from_env(env={}, data_dir=data, default_jurisdiction="US"))
    key = rt.directory.create_source("crm")
    source = rt.directory.source_for_key(key)
    assert source is not None
    v = rt.validator_for(source)
    msgs = [
        v.validate(
            {"userId": f"u{i}", "traits": {"email": f"known{i}@example.com"}},
            type_="identify",
            received_ms=now_ms(),
            sent_at_ms=None,
            client_ip=None,
        )
        for i in range(3)
    ]
    rt.ingestor.submit_sync(Work(source.id, msgs, [], now_ms()))  # type: ignore[arg-type]
    rt.close()
    csv_file = tmp_path / "mps.csv"
    csv_file.write_text(
        "email,phone\nknown0@example.com,\nKNOWN1@example.com,\nstranger@example.com,\n"
        ",+1 (415) 555-0123\nnot-an-email,\n"
    )
    runner = CliRunner()
    result = runner.invoke(
        cli_app,
        [
            "--data-dir",
            str(data),
            "suppression",
            "import",
            str(csv_file),
            "--channel",
            "post",
            "--reason",
            "preference-service",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "5 rows: 4 suppressed on post, 0 already were; 2 known profiles matched" in result.output
    assert "line 6" in result.output
    again = runner.invoke(
        cli_app,
        [
            "--data-dir",
            str(data),
            "suppression",
            "import",
            str(csv_file),
            "--channel",
            "post",
            "--reason",
            "preference-service",
        ],
    )
    assert "0 suppressed on post, 4 already were" in again.output
    bad = runner.invoke(
        cli_app, ["--data-dir", str(data), "suppression", "import", str(csv_file), "--channel", "pigeon"]
    )
    assert bad.exit_code == 1 and "unknown channel" in bad.output
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    broken = runner.invoke(
        cli_app, ["--data-dir", str(data), "suppression", "import", str(binary), "--channel", "post"]
    )
    assert broken.exit_code == 1 and "not UTF-8" in broken.output
    # nothing in the data directory is the plaintext of the list
    blob = b"".join(p.read_bytes() for p in data.rglob("*") if p.is_file())
    assert b"stranger@example.com" not in blob and b"known0@example.com" not in blob


@settings(max_examples=100, derandomize=True)
@given(st.sampled_from(["email", "phone", "address"]), st.text(max_size=40))
def test_normalise_never_crashes(id_type: str, value: str) -> None:
    out = normalise(id_type, value)
    assert out is None or isinstance(out, str)


def test_unknown_identifier_type() -> None:
    with pytest.raises(SuppressionError):
        normalise("fax", "123")
