"""Operations commands: ``candor backup``, ``candor restore``, ``candor retention ...``, ``candor ropa``.

Mounted on the ``candor`` command by one import at the end of cli.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress

from candor.cli import app, console, err, opened, settings


@contextmanager
def _progress() -> Iterator[Any]:
    with Progress(console=err, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def step(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        yield step


# -- backups ---------------------------------------------------------------------------------------
@app.command("backup")
def backup_command(
    out: Annotated[
        Path | None,
        typer.Option(help="Archive to write (default ./candor-backup-<UTC time>.tar.gz); never overwritten"),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Write an online, consistent backup of the store (SQLite or PostgreSQL) to one archive."""
    from candor.backup import BackupError, backup

    s = settings()
    path = out or Path(f"candor-backup-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.tar.gz")
    try:
        with _progress() as step:
            report = backup(s, path, progress=step)
    except BackupError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if json_out:
        print(json.dumps(report, indent=2))
    else:
        console.print(
            f"backup of {report['rows']} rows ({report['store']}, schema {report['schema_revision']}, installation "
            f"{report['installation_id']}) written to {report['archive']} ({report['bytes']} bytes)"
        )


@app.command("restore")
def restore_command(
    archive: Annotated[Path, typer.Argument(help="An archive made by candor backup")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Replace the store with a backup; everyone erased since is erased again before it goes live.

    Stop every Candor process first. The archive is checked completely before anything changes.
    """
    from candor.backup import BackupError, restore

    s = settings()
    if not yes and not typer.confirm(
        f"Replace the database at {_where(s)} with the backup {archive}? Everything written since the backup "
        "was taken is lost (erasures are kept)",
        default=False,
    ):
        err.print("restore cancelled; nothing was changed")
        raise typer.Exit(1)
    try:
        with _progress() as step:
            report = restore(s, archive, actor="cli", progress=step)
    except BackupError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if json_out:
        print(json.dumps(report, indent=2))
    else:
        console.print(
            f"restored {report['rows']} rows from {report['archive']} ({report['from_store']} → {report['to_store']}); "
            f"{report['erased_again']} people erased since the backup were erased again"
        )


def _where(s: Any) -> str:
    url = s.resolved_database_url
    return url.split("@")[-1] if "@" in url else url


# -- retention -------------------------------------------------------------------------------------
retention_app = typer.Typer(
    help="How long each kind of data is kept, and the job that enforces it.", no_args_is_help=True
)
app.add_typer(retention_app, name="retention")


@retention_app.command("run")
def retention_run(json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False) -> None:
    """Apply every retention rule now (resumes an interrupted run; the server also runs it on a schedule)."""
    from candor import retention
    from candor.config import ConfigError

    with opened(retention.Busy, ConfigError) as rt, _progress() as step:
        report = retention.run(rt, actor="cli", progress=step)
    if json_out:
        print(json.dumps(report, indent=2))
        return
    for target, result in report["results"].items():
        done = result.get("deleted", result.get("stripped", 0))
        verb = "IP addresses dropped" if "stripped" in result else "deleted"
        console.print(f"{target}: {done} {verb}")


@retention_app.command("status")
def retention_status() -> None:
    """The rules in force (with where each comes from) and the last run."""
    from candor import retention
    from candor.config import ConfigError

    with opened(ConfigError) as rt:
        print(json.dumps(retention.status(rt), indent=2))


# -- records of processing -------------------------------------------------------------------------
@app.command("ropa")
def ropa_command(
    fmt: Annotated[str, typer.Option("--format", help="json or html")] = "json",
    out: Annotated[Path | None, typer.Option(help="Write to this file instead of standard output")] = None,
) -> None:
    """The records of processing activities (GDPR Art. 30), generated from the configuration."""
    from candor import audit, ropa
    from candor.config import ConfigError

    if fmt not in ("json", "html"):
        err.print("[red]error:[/red] --format must be json or html")
        raise typer.Exit(2)
    with opened(ConfigError) as rt:
        doc = ropa.build(rt)
        audit.append(rt.store, "cli", "ropa.read", details={"format": fmt})
    text = json.dumps(doc, indent=2) if fmt == "json" else ropa.render_html(doc)
    if out is None:
        print(text)
    else:
        out.write_text(text, encoding="utf-8")
        console.print(f"records of processing written to {out}")
