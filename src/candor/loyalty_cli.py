"""``candor loyalty``: the loyalty programme from the shell (docs/loyalty.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.table import Table

app = typer.Typer(help="The loyalty programme: members, points, offers, value statements.", no_args_is_help=True)
offers_app = typer.Typer(help="Value-exchange offers: points for telling us something.", no_args_is_help=True)
app.add_typer(offers_app, name="offers")

UserId = Annotated[str | None, typer.Option("--user-id", help="the person's userId")]
Email = Annotated[str | None, typer.Option("--email", help="the person's email address")]


def _opened():  # type: ignore[no-untyped-def]
    from candor.cli import opened
    from candor.loyalty import LoyaltyError

    return opened(LoyaltyError, ValueError)


def _subject(rt: Any, user_id: str | None, email: str | None) -> str:
    from candor.loyalty_api import subject_of

    return subject_of(rt, {"userId": user_id, "email": email})


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


@app.command("notice")
def notice(
    publish: Annotated[bool, typer.Option("--publish", help="publish a new version if changed")] = False,
) -> None:
    """Show the notice of financial incentive (``--publish``: a new version when the settings changed it)."""
    with _opened() as rt:
        n = rt.loyalty.publish_notice(actor="cli") if publish else rt.loyalty.notice(actor="cli")
        print(f"{n.notice_id} version {n.version} (sha256 {n.sha256})\n\n{n.text}")


@app.command("join")
def join(user_id: UserId = None, email: Email = None) -> None:
    """Enrol a person who opted in (at a till, on the phone) against the current notice."""
    with _opened() as rt:
        _print(rt.loyalty.join(_subject(rt, user_id, email), source="api", actor="cli"))


@app.command("leave")
def leave(user_id: UserId = None, email: Email = None) -> None:
    """End a membership; earned points stay redeemable until they expire."""
    with _opened() as rt:
        _print(rt.loyalty.leave(_subject(rt, user_id, email), source="api", actor="cli"))


@app.command("status")
def status(user_id: UserId = None, email: Email = None) -> None:
    """Membership, balance, tier and member discount of a person."""
    with _opened() as rt:
        _print(rt.loyalty.status(_subject(rt, user_id, email)))


@app.command("redeem")
def redeem(
    points: Annotated[int, typer.Argument(help="points to spend")],
    user_id: UserId = None,
    email: Email = None,
    ref: Annotated[str | None, typer.Option(help="idempotency key, e.g. the order id")] = None,
) -> None:
    """Spend points (never more than the balance)."""
    with _opened() as rt:
        _print(rt.loyalty.redeem(_subject(rt, user_id, email), points, ref=ref, actor="cli"))


@app.command("earn")
def earn() -> None:
    """Credit the purchases received since the last run."""
    with _opened() as rt:
        _print(rt.loyalty.earn_purchases())


@app.command("expire")
def expire() -> None:
    """Expire points past their date."""
    with _opened() as rt:
        _print(rt.loyalty.expire())


@app.command("statement")
def statement(
    user_id: UserId = None, email: Email = None, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """The value statement of a person: what they shared and what they got for it."""
    from candor import audit
    from candor.cli import console

    with _opened() as rt:
        sid = _subject(rt, user_id, email)
        st = rt.loyalty.statement(sid)
        with rt.store.write() as conn:
            audit.record(conn, "cli", "loyalty.statement.read", subject_id=sid)
    if as_json:
        _print(st)
        return
    m, r = st["membership"], st["received"]
    console.print(f"membership: {m['state']}, balance {m['balance']}, tier {m.get('tier') or '-'}")
    console.print("shared: " + (", ".join(p["purpose"] for p in st["shared"]["purposes"]) or "nothing optional"))
    table = Table("received", "value")
    for k in ("points_earned", "points_redeemed", "points_expired", "offers_accepted", "personalised_offers_used"):
        table.add_row(k.replace("_", " "), str(r[k]))
    table.add_row("discounts", f"{r['discounts']['count']} ({r['discounts']['amount']} {r['currency']})")
    console.print(table)


@offers_app.command("create")
def create_offer(
    name: str,
    title: Annotated[str, typer.Option(help="shown to members")],
    ask: Annotated[str, typer.Option(help="what we ask, in plain words")],
    fields: Annotated[str, typer.Option(help="comma-separated trait names the answer fills")],
    points: Annotated[int, typer.Option(help="points for accepting")],
    category: Annotated[str, typer.Option(help="data category of the answers (candor dictionary categories)")] = (
        "behavioural"
    ),
    purposes: Annotated[str, typer.Option(help="comma-separated purposes granted on acceptance")] = "",
    days: Annotated[int, typer.Option(help="open for this many days from now")] = 30,
) -> None:
    """A value-exchange offer, e.g. +200 points for telling us your favourite genres."""
    now = datetime.now(UTC)
    with _opened() as rt:
        _print(
            rt.loyalty.create_offer(
                name,
                title=title,
                ask=ask,
                fields=[f.strip() for f in fields.split(",") if f.strip()],
                category=category,
                purposes=[p.strip() for p in purposes.split(",") if p.strip()],
                points=points,
                starts_ms=int(now.timestamp() * 1000),
                ends_ms=int((now + timedelta(days=days)).timestamp() * 1000),
                actor="cli",
            )
        )


@offers_app.command("list")
def list_offers(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every offer with its state (upcoming, open, expired)."""
    from candor.cli import console

    with _opened() as rt:
        rows = rt.loyalty.offers()
    if as_json:
        _print(rows)
        return
    table = Table("name", "title", "points", "fields", "state", "ends")
    for o in rows:
        table.add_row(o["name"], o["title"], str(o["points"]), ", ".join(o["fields"]), o["state"], o["ends"])
    console.print(table)
