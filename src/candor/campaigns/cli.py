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
def campaigns_report(
    name: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
) -> None:
    """Sent and skipped-by-reason counts, engagement, spend, conversions, revenue and ROI."""
    from rich.table import Table

    from candor.campaigns import CampaignError
    from candor.cli import console, opened

    with opened(CampaignError) as rt:
        report = rt.campaigns.report(name)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table(title=f"campaign {report['campaign']} ({report['channel']}, {report['purpose']}, {report['state']})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for outcome, n in sorted(report["outcomes"].items()):
        table.add_row(outcome, str(n))
    for k, n in report["engagement"].items():
        table.add_row(k, str(n))
    budget = report["budget"]
    table.add_row("spend", f"{report['spend']:.2f}" + (f" of {budget:.2f}" if budget is not None else ""))
    table.add_row("conversions", str(report["conversions"]))
    table.add_row("revenue", f"{report['revenue']:.2f}")
    table.add_row("ROI", "n/a (no spend)" if report["roi"] is None else f"{report['roi'] * 100:.1f} %")
    att = report["attribution"]
    table.caption = f"{att['model']}, {att['event']} within {att['window_days']} days (analytics consent only)"
    console.print(table)


# -- destinations ----------------------------------------------------------------------------------
destinations_app = typer.Typer(help="Webhook, SMS-provider and ad-audience destinations.", no_args_is_help=True)


@destinations_app.command("create")
def destinations_create(
    name: str,
    kind: Annotated[str, typer.Option(help="webhook, sms or ad_audience")],
    url: Annotated[str, typer.Option(help="Where deliveries are POSTed (signed)")],
    purpose: Annotated[str | None, typer.Option(help="What the data is used for there")] = None,
    contact: Annotated[str | None, typer.Option(help="What a webhook receives: email, phone or none")] = None,
) -> None:
    """Add a destination; prints its signing secret (shown this once)."""
    from candor.campaigns import CampaignError
    from candor.cli import opened

    with opened(CampaignError) as rt:
        print(
            json.dumps(rt.campaigns.destinations.create(name, kind, url, purpose=purpose, contact=contact, actor="cli"))
        )


@destinations_app.command("list")
def destinations_list() -> None:
    """Every destination with the size of its dead-letter queue (never a secret)."""
    from candor.cli import opened

    with opened() as rt:
        print(json.dumps(rt.campaigns.destinations.listing(), indent=2))


@destinations_app.command("dead-letters")
def destinations_dead_letters(name: str) -> None:
    """Deliveries that failed after every retry."""
    from candor.campaigns import CampaignError
    from candor.cli import opened

    with opened(CampaignError) as rt:
        print(json.dumps(rt.campaigns.destinations.dead_letters(name), indent=2))


@destinations_app.command("replay")
def destinations_replay(
    name: str,
    ids: Annotated[list[int] | None, typer.Option("--id", help="A dead-letter id (repeat; default: all)")] = None,
) -> None:
    """Try dead letters again; each message is decided and rendered again now."""
    from candor.campaigns import CampaignError
    from candor.cli import opened

    with opened(CampaignError) as rt:
        print(json.dumps(rt.campaigns.destinations.replay(name, ids or None, actor="cli"), indent=2))


# -- audiences -------------------------------------------------------------------------------------
audiences_app = typer.Typer(
    help="Advertising audiences (hashed contacts, advertising consent only).", no_args_is_help=True
)


@audiences_app.command("export")
def audiences_export(
    segment: str,
    destination: Annotated[str | None, typer.Option(help="An ad_audience destination to push to")] = None,
    out: Annotated[Path | None, typer.Option(help="Or a CSV file to write (mode 0600)")] = None,
) -> None:
    """SHA-256 of normalised email and phone of the members who agree to advertising (at least 100)."""
    from candor.campaigns import CampaignError
    from candor.cli import opened

    with opened(CampaignError) as rt:
        print(json.dumps(rt.campaigns.audiences.export(segment, destination=destination, out=out, actor="cli")))
