"""``candor analytics``: the analytics store (Parquet copy of the events) — status, refresh, rebuild."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from candor.cli import err, opened

app = typer.Typer(help="The analytics store: a Parquet copy of the events for fast scans.", no_args_is_help=True)


def _lake(rt: Any) -> Any:
    lake = rt.analytics.lake
    if lake is None:  # pragma: no cover - every Runtime has one
        err.print("[red]error:[/red] this installation has no analytics store")
        raise typer.Exit(2)
    return lake


@app.command("status")
def status() -> None:
    """Where the files are, how many rows and files, the watermark and the last refresh."""
    from candor.lake import LakeError

    with opened(LakeError) as rt:
        print(json.dumps(_lake(rt).status(), indent=2))


@app.command("refresh")
def refresh() -> None:
    """Copy the events that arrived since the last refresh (builds the store the first time)."""
    from candor.lake import LakeError

    with opened(LakeError) as rt:
        r = _lake(rt).refresh()
        print(
            json.dumps(
                {
                    "copied": r.copied,
                    "rebuilt": r.rebuilt,
                    "reconciled": r.reconciled,
                    "purged": r.purged,
                    "seconds": round(r.seconds, 3),
                }
            )
        )


@app.command("rebuild")
def rebuild() -> None:
    """Build a new copy from every event, with a progress bar; the old copy serves until it is done.

    Interrupted (Ctrl-C), it resumes where it stopped the next time it runs."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from candor.lake import LakeError

    with (
        opened(LakeError) as rt,
        Progress(
            TextColumn("rebuilding the analytics store"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        ) as bar,
    ):
        task = bar.add_task("rebuild", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=max(total, 1))

        try:
            r = _lake(rt).rebuild(progress=progress)
        except KeyboardInterrupt:
            err.print("interrupted: run `candor analytics rebuild` again to resume")
            raise typer.Exit(130) from None
        print(json.dumps({"copied": r.copied, "seconds": round(r.seconds, 3), **_lake(rt).status()}))


@app.command("purge")
def purge(
    engine: Annotated[str, typer.Option(help="duckdb (this process) or spark (CANDOR_SPARK_MASTER)")] = "duckdb",
) -> None:
    """Rewrite every analytics file without anyone in the erasure journal (after restoring analytics files
    from elsewhere, or to prove none is left); erasures purge the files themselves as they happen."""
    from candor.engines import EngineError, SparkEngine, check_name
    from candor.lake import LakeError

    with opened(LakeError, EngineError) as rt:
        lake = _lake(rt)
        if check_name(engine) == "spark":
            lake.engine = SparkEngine(rt.settings)
        elif engine == "duckdb":
            lake.engine = None
        subjects, removed = lake.purge_journal()
        print(json.dumps({"engine": engine, "subjects": subjects, "rows_removed": removed}))
