"""``candor recommend`` (catalogue, model rebuilds, one person's recommendations) and ``candor decide``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from candor.cli import err, opened

app: typer.Typer = typer.Typer(help="Recommendations that use only what people allowed.", no_args_is_help=True)
decide_app: typer.Typer = typer.Typer(
    help="Next best action: the offer for one person at one placement.", no_args_is_help=True
)

UserId = Annotated[str | None, typer.Option("--user-id", help="the person's userId")]
AnonId = Annotated[str | None, typer.Option("--anonymous-id", help="the person's anonymousId")]


def _errors() -> tuple[type[Exception], ...]:
    from candor.engines import EngineError
    from candor.lake import LakeError
    from candor.recommend.catalog import CatalogError
    from candor.recommend.decide import DecideError
    from candor.recommend.service import RecommendError

    return (RecommendError, DecideError, CatalogError, LakeError, EngineError, RuntimeError)


@app.command("rebuild")
def rebuild(
    incremental: Annotated[
        bool, typer.Option(help="only the items with new interactions since the last build")
    ] = False,
    engine: Annotated[str, typer.Option(help="duckdb (default) or spark")] = "duckdb",
) -> None:
    """Build the item-to-item model from the analytics store, with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from candor.engines import check_name

    with opened(*_errors()) as rt:
        check_name(engine)
        labels = ["refreshing the analytics store", "checking consent", "reading interactions", "interactions",
                  "capped", "norms", "half", "pairs", "ranked", "neighbors", "popular", "saving the model"]  # fmt: skip
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
        ) as bar:
            task = bar.add_task("model", total=len(labels))

            def step(label: str) -> None:
                done = labels.index(label) if label in labels else 0
                bar.update(task, completed=done, description=label)

            result = rt.recommend.rebuild(full=not incremental, engine=engine, progress=step)
            bar.update(task, completed=len(labels), description="done")
        print(json.dumps(result))


@app.command("show")
def show(
    user_id: UserId = None,
    anonymous_id: AnonId = None,
    limit: Annotated[int, typer.Option(help="how many items")] = 10,
) -> None:
    """One person's recommendations and the reason for each (bestsellers without consent)."""
    from rich.table import Table

    with opened(*_errors()) as rt:
        answer = rt.recommend.for_identifiers(user_id, anonymous_id, limit)
        table = Table(title=f"personalized: {answer.personalized} ({answer.basis})")
        for col in ("product", "name", "score", "why"):
            table.add_column(col)
        for i in answer.items:
            table.add_row(i["product_id"], i["name"], f"{i['score']:.3f}", i["reason"]["text"])
        if not answer.items:
            err.print("no recommendations: the catalogue or the model is empty (candor recommend rebuild)")
        from rich.console import Console

        Console().print(table)


@app.command("catalog")
def catalog(
    file: Annotated[Path | None, typer.Option(help="a JSON list of products to add or change")] = None,
    demo: Annotated[bool, typer.Option(help="load the demo shop's catalogue")] = False,
    retire: Annotated[list[str] | None, typer.Option(help="a product id that left the catalogue")] = None,
) -> None:
    """Add or change products (--file, --demo), or take them out of the catalogue (--retire)."""
    with opened(*_errors(), json.JSONDecodeError, OSError) as rt:
        written = 0
        if demo:
            written += rt.recommend.catalog.seed_demo()
        if file is not None:
            written += rt.recommend.catalog.upsert(json.loads(file.read_text()))
        retired = rt.recommend.catalog.retire(list(retire)) if retire else 0
        print(json.dumps({"written": written, "retired": retired, "items": len(rt.recommend.catalog.items())}))


@decide_app.command("show")
def decide_show(
    placement: Annotated[str, typer.Option(help="the placement name")],
    user_id: UserId = None,
    anonymous_id: AnonId = None,
) -> None:
    """The offer one person gets at a placement, and which rule chose it."""
    with opened(*_errors()) as rt:
        print(json.dumps(rt.decider.decide(user_id, anonymous_id, placement), indent=2))


@decide_app.command("check")
def decide_check(file: Annotated[Path, typer.Argument(help="a rules file (JSON or YAML)")]) -> None:
    """Check a rules file: every error names its place (placements.X.rules[2].when...)."""
    from candor.recommend.decide import DecideError, load

    try:
        placements = load(str(file))
    except DecideError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    out: dict[str, Any] = {p.name: [r.name for r in p.rules] for p in placements.values()}
    print(json.dumps({"placements": out}))
