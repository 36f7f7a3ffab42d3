"""The consent commands: tcf and gpp decode/encode, notices, explain, audience."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from candor.cli import app as cli_app
from candor.consent import tcf

runner = CliRunner()


def sample_tc() -> str:
    tc = tcf.TCString(
        created=datetime(2026, 5, 1, tzinfo=UTC),
        last_updated=datetime(2026, 5, 2, tzinfo=UTC),
        cmp_id=7,
        cmp_version=2,
        consent_screen=1,
        consent_language="EN",
        vendor_list_version=120,
        tcf_policy_version=5,
        purpose_consents={1, 7, 8, 9, 10},
        vendor_consents={1, 2, 755},
    )
    return tcf.encode(tc)


def test_tcf_decode_encode_round_trip(tmp_path: Path) -> None:
    s = sample_tc()
    out = runner.invoke(cli_app, ["tcf", "decode", s])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["cmpId"] == 7 and data["tcfPolicyVersion"] == 5 and data["purpose"]["consents"]["7"] is True
    assert data["vendor"]["consents"] == {"1": True, "2": True, "755": True}
    f = tmp_path / "tc.json"
    f.write_text(out.output)
    back = runner.invoke(cli_app, ["tcf", "encode", str(f)])
    assert back.exit_code == 0 and back.output.strip() == s


def test_tcf_decode_rejects_bad_strings() -> None:
    for bad in ("", "!!!", "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA=", "a.b.c"):
        out = runner.invoke(cli_app, ["tcf", "decode", bad])
        assert out.exit_code == 1 and "invalid TC string" in out.output


def test_gpp_decode() -> None:
    # a US national section in which the person opted out of sale, sharing and targeted ads, with GPC
    out = runner.invoke(cli_app, ["gpp", "decode", "DBABLA~BVVVkkkklWA.YA"])
    assert out.exit_code == 0, out.output
    decoded = json.loads(out.output)
    assert decoded["sectionIds"] == [7] and decoded["sections"]["usnat"]["Gpc"] is True
    assert decoded["optOuts"] == ["advertising", "sale_sharing"]
    bad = runner.invoke(cli_app, ["gpp", "decode", "not a gpp string"])
    assert bad.exit_code == 1 and "invalid GPP string" in bad.output


def test_notices_and_explain(tmp_path: Path) -> None:
    text = tmp_path / "notice.txt"
    text.write_text("We use your data for analytics and offers.")
    base = ["--data-dir", str(tmp_path / "d")]
    out = runner.invoke(cli_app, [*base, "notices", "add", "privacy", "--version", "1", "--file", str(text)])
    assert out.exit_code == 0 and "sha256" in out.output
    dup = runner.invoke(cli_app, [*base, "notices", "add", "privacy", "--version", "1", "--file", str(text)])
    assert dup.exit_code == 1 and "already exists" in dup.output
    listed = json.loads(runner.invoke(cli_app, [*base, "notices", "list"]).output)
    assert listed[0]["notice_id"] == "privacy"
    explained = runner.invoke(cli_app, [*base, "consent", "explain", "--email", "nobody@example.com"])
    body = json.loads(explained.output)
    assert body["found"] is False and not any(d["allowed"] for d in body["decisions"])
    assert runner.invoke(cli_app, [*base, "consent", "explain"]).exit_code == 2
    audience = runner.invoke(cli_app, [*base, "consent", "audience"])
    assert audience.exit_code == 0 and "marketing.email" in audience.output
