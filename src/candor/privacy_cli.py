"""``candor dictionary`` and ``candor inbox``: the data dictionary and the privacy inbox from the shell."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

dictionary_app = typer.Typer(
    help="The data dictionary: data categories and retention per source field.", no_args_is_help=True
)
inbox_app = typer.Typer(help="The privacy inbox: undeclared personal data found at collection.", no_args_is_help=True)


def _opened():  # type: ignore[no-untyped-def]
    from candor.cli import opened
    from candor.dictionary import DictionaryError

    return opened(DictionaryError, ValueError)


@dictionary_app.command("categories")
def categories() -> None:
    """Every data category: encrypted, special (opt-in), never stored, default retention."""
    from candor.cli import console
    from candor.dictionary import CATEGORIES

    table = Table("category", "title", "sealed", "special", "retention (days)", "law")
    for c in CATEGORIES.values():
        days = "never stored" if c.never_stored else ("profile" if c.retention_days is None else str(c.retention_days))
        table.add_row(c.name, c.title, "yes" if c.sealed else "no", "yes" if c.special else "", days, c.law)
    console.print(table)


@dictionary_app.command("show")
def show(source: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """A source's declared fields (its own and the built-in Segment ones)."""
    from candor.cli import console

    with _opened() as rt:
        rows = rt.dictionary.list(source)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("field", "category", "retention (days)", "special", "built in")
    for r in rows:
        days = "profile" if r["retention_days"] is None else str(r["retention_days"])
        table.add_row(
            f"{r['scope']}.{r['path']}",
            r["category"],
            days,
            "yes" if r["special"] else "",
            "yes" if r["builtin"] else "",
        )
    console.print(table)


@dictionary_app.command("declare")
def declare(
    source: str,
    field: Annotated[
        str, typer.Argument(help="scope.path: traits.healthInterest, properties.customer.phone, context.x")
    ],
    category: Annotated[str, typer.Option("--category", "-c", help="a data category (candor dictionary categories)")],
    retention_days: Annotated[int | None, typer.Option("--retention-days", help="default: the category's")] = None,
    note: Annotated[str, typer.Option(help="why, for the records of processing")] = "",
) -> None:
    """Declare what a field of a source holds, and for how long it is kept."""
    from candor.dictionary import DictionaryError

    scope, _, path = field.partition(".")
    with _opened() as rt:
        if not path:
            raise DictionaryError("give the field as scope.path, e.g. traits.healthInterest")
        out = rt.dictionary.declare(source, scope, path, category, -1 if retention_days is None else retention_days,
                                    note=note, actor="cli")  # fmt: skip
    print(json.dumps(out))


@dictionary_app.command("forget")
def forget(source: str, field: Annotated[str, typer.Argument(help="scope.path")]) -> None:
    """Remove a source's own declaration of a field."""
    scope, _, path = field.partition(".")
    with _opened() as rt:
        ok = rt.dictionary.forget(source, scope, path, actor="cli")
    if not ok:
        from candor.cli import err

        err.print(f"[red]error:[/red] {source!r} has no declaration of {field}")
        raise typer.Exit(1)


@dictionary_app.command("policy")
def policy(source: str, value: Annotated[str, typer.Argument(help="encrypt, redact or drop")]) -> None:
    """What the source does with undeclared personal data in properties (default encrypt)."""
    with _opened() as rt:
        print(json.dumps(rt.inbox.set_policy(source, value, actor="cli")))


@dictionary_app.command("records")
def records() -> None:
    """Per category: sources, fields, retention and purposes (for the records of processing), as JSON."""
    from candor.dictionary import processing_records

    with _opened() as rt, rt.store.engine.connect() as conn:
        print(json.dumps(processing_records(conn, rt.taxonomy.names()), indent=2))


@inbox_app.command("list")
def inbox_list(
    state: Annotated[str, typer.Option(help="open, declared or dismissed")] = "open",
    source: Annotated[str | None, typer.Option(help="one source only")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Undeclared personal data found at collection: field, source, category, count (never a value)."""
    from candor.cli import console

    with _opened() as rt:
        items = rt.inbox.list(state=state, source=source)
    if as_json:
        print(json.dumps(items, indent=2))
        return
    table = Table("id", "field", "source", "category", "detector", "done", "count")
    for i in items:
        table.add_row(str(i["id"]), i["field"], i["source"], i["category"], i["detector"], i["action"], str(i["count"]))
    console.print(table)


@inbox_app.command("declare")
def inbox_declare(
    item: int,
    category: Annotated[str | None, typer.Option("--category", "-c", help="default: the category guessed")] = None,
) -> None:
    """Declare the item's field in its source's dictionary."""
    with _opened() as rt:
        print(json.dumps(rt.inbox.declare(item, category=category, actor="cli")))


@inbox_app.command("dismiss")
def inbox_dismiss(item: int) -> None:
    """Close the item without declaring the field."""
    with _opened() as rt:
        print(json.dumps(rt.inbox.dismiss(item, actor="cli")))
