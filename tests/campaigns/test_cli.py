"""The commands: destinations, dead letters, audiences and the campaign report table."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from candor.cli import app

runner = CliRunner()


def run(data_dir: Path, *args: str, code: int = 0) -> str:
    result = runner.invoke(app, ["--data-dir", str(data_dir), *args], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def test_destinations_audiences_and_the_report(tmp_path: Path) -> None:
    created = json.loads(
        run(
            tmp_path,
            "destinations",
            "create",
            "crm",
            "--kind",
            "webhook",
            "--url",
            "https://crm.example/hook",
            "--purpose",
            "marketing.push",
        )
    )
    assert created["secret"].startswith("whsec_") and created["contact"] == "email"
    assert "kind: one of" in run(tmp_path, "destinations", "create", "x", "--kind", "fax", "--url", "https://x", code=1)
    listed = json.loads(run(tmp_path, "destinations", "list"))
    assert [d["name"] for d in listed] == ["crm"] and "secret" not in listed[0]
    assert json.loads(run(tmp_path, "destinations", "dead-letters", "crm")) == []
    assert json.loads(run(tmp_path, "destinations", "replay", "crm"))["replayed"] == 0
    assert "no destination named" in run(tmp_path, "destinations", "dead-letters", "nowhere", code=1)
    segment = tmp_path / "seg.json"
    segment.write_text('{"name": "everyone", "conditions": [{"last_seen": {"within_days": 30}}]}')
    run(tmp_path, "segments", "create", str(segment))
    out = run(tmp_path, "audiences", "export", "everyone", "--out", str(tmp_path / "a.csv"), code=1)
    assert "at least 100" in out and not (tmp_path / "a.csv").exists()
    campaign = tmp_path / "c.json"
    campaign.write_text(
        json.dumps(
            {
                "name": "hello",
                "segment": "everyone",
                "subject": "Hi",
                "template": "Hi",
                "generic_template": "Hello",
                "sender": "news@shop.example",
                "postal_address": "1 Main Street",
                "cost_per_message": 0.1,
                "budget": 5,
            }
        )
    )
    run(tmp_path, "campaigns", "create", str(campaign))
    table = run(tmp_path, "campaigns", "report", "hello")
    assert "spend" in table and "0.00 of 5.00" in table and "ROI" in table and "n/a (no spend)" in table
    report = json.loads(run(tmp_path, "campaigns", "report", "hello", "--json"))
    assert report["budget"] == 5 and report["conversions"] == 0 and report["roi"] is None
