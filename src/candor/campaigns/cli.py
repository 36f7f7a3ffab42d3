"""``candor campaigns ...``: create, preview, send and report campaigns.

Mounted by candor/cli.py; the shared helpers (``opened``, ``err``) are imported inside each command,
so this module can be imported on its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

# -- campaigns -----------------------------------------------------------------------------------
campaigns_app = typer.Typer(help="Campaigns that only reach people who agreed.", no_args_is_help=True)


@campaigns_app.command("create")
def campaigns_create(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)]) -> None:
    """Create a campaign from a JSON definition (templates are checked against sample profiles)."""
    from candor.campaigns import CampaignError
    from candor.cli import err, opened

    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        err.print(f"[red]error:[/red] {file.name} is not JSON: {exc}")
        raise typer.Exit(1) from None
    with opened(CampaignError) as rt:
        print(json.dumps(rt.campaigns.create(raw, actor="cli")))


@campaigns_app.command("preview")
def campaigns_preview(name: str) -> None:
    """What sending now would do: recipients per outcome, and a sample of each variant."""
    from candor.campaigns import CampaignError
    from candor.cli import opened

    with opened(CampaignError) as rt:
        print(json.dumps(rt.campaigns.preview(name), indent=2))


@campaigns_app.command("send")
def campaigns_send(name: str) -> None:
    """Send (or resume) a campaign; every recipient is checked at this moment."""
    from candor.campaigns import CampaignError
    from candor.cli import opened

    with opened(CampaignError) as rt:
        print(json.dumps(rt.campaigns.send(name, actor="cli"), indent=2))


@campaigns_app.command("report")
def campaigns_report(name: str) -> None:
    """Sent, failed and skipped-by-reason counts, variants, spend."""
    from candor.campaigns import CampaignError
    from candor.cli import opened

    with opened(CampaignError) as rt:
        print(json.dumps(rt.campaigns.report(name), indent=2))
