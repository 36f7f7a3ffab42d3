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


_ = opened  # used by the retention and ropa commands below
