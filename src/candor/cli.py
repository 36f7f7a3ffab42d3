"""The ``candor`` command line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from candor import __version__
from candor.config import ConfigError, Settings

app = typer.Typer(help="Candor: a customer data platform that customers can trust.", no_args_is_help=True)
sources_app = typer.Typer(help="Sources (where events come from) and their write keys.", no_args_is_help=True)
tokens_app = typer.Typer(help="Staff API tokens and their roles.", no_args_is_help=True)
users_app = typer.Typer(help="Staff who sign in with a password.", no_args_is_help=True)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
keys_app = typer.Typer(help="Master key and pseudonym key rotation.", no_args_is_help=True)
suppression_app = typer.Typer(help="Do-not-contact lists per channel.", no_args_is_help=True)
notices_app = typer.Typer(help="Versioned notice texts shown when consent is asked.", no_args_is_help=True)
consent_app = typer.Typer(help="Consent decisions and proof.", no_args_is_help=True)
tcf_app = typer.Typer(help="IAB TCF v2.2 consent strings.", no_args_is_help=True)
gpp_app = typer.Typer(help="IAB Global Privacy Platform strings.", no_args_is_help=True)
app.add_typer(sources_app, name="sources")
app.add_typer(tokens_app, name="tokens")
app.add_typer(users_app, name="users")
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
app.add_typer(suppression_app, name="suppression")
app.add_typer(notices_app, name="notices")
app.add_typer(consent_app, name="consent")
app.add_typer(tcf_app, name="tcf")
app.add_typer(gpp_app, name="gpp")

console = Console()
err = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (env CANDOR_DATA_DIR, default ./candor-data)"),
]
DbUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="SQLAlchemy URL (env CANDOR_DATABASE_URL, default SQLite in the data dir)"),
]


class _State:
    data_dir: Path | None = None
    database_url: str | None = None


state = _State()


def _print_version(value: bool) -> None:
    if value:
        console.print(f"candor {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit", callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    state.data_dir = data_dir
    state.database_url = database_url


def settings(**overrides: Any) -> Settings:
    try:
        return Settings.from_env(data_dir=state.data_dir, database_url=state.database_url, **overrides)
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


def runtime(**overrides: Any) -> Any:
    from candor.app import Runtime
    from candor.store.engine import StoreUnavailable
    from candor.vault import VaultError

    try:
        return Runtime(settings(**overrides))
    except (StoreUnavailable, VaultError, ConfigError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


@contextmanager
def opened(*errors: type[Exception], **overrides: Any) -> Iterator[Any]:
    """A Runtime for one command, closed afterwards; ``errors`` become a red message and exit 1."""
    rt = runtime(**overrides)
    try:
        yield rt
    except errors as exc:
        from rich.markup import escape

        err.print(f"[red]error:[/red] {escape(str(exc))}")  # messages may hold brackets ("candor[spark]")
        raise typer.Exit(1) from None
    finally:
        rt.close()


def _setup_logging(level: str) -> None:
    from candor import logs

    logs.configure(level)


# -- serve ---------------------------------------------------------------------------------------
@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (env CANDOR_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (env CANDOR_PORT)")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (env CANDOR_WORKERS)")] = None,
) -> None:
    """Serve the API and the web pages."""
    import uvicorn

    s = settings(host=host, port=port)
    workers = workers or s.workers
    if not 1 <= workers <= 64:
        err.print("[red]error:[/red] --workers must be between 1 and 64")
        raise typer.Exit(2)
    _setup_logging(s.log_level)
    os.environ["CANDOR_DATA_DIR"] = str(s.data_dir)
    if s.database_url:
        os.environ["CANDOR_DATABASE_URL"] = s.database_url
    os.environ.pop("CANDOR_WRITER_SOCKET", None)  # set below for this server's own workers only
    if workers == 1:
        rt = runtime(host=host, port=port)  # migrates and creates keys once, before serving
        rt.close()
    else:
        # the same, in a process of its own: the supervisor that stays running keeps no Runtime
        prepared = subprocess.run([sys.executable, "-m", "candor.writer", "--prepare"], check=False)
        if prepared.returncode != 0:
            raise typer.Exit(prepared.returncode)
    supervisor = None
    if workers > 1:
        # N HTTP workers validate and pseudonymise; one writer process commits for all (writer.py)
        from candor.writer import Supervisor

        supervisor = Supervisor(dict(os.environ))
        try:
            supervisor.start()
        except RuntimeError as exc:
            supervisor.stop()
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None
        os.environ["CANDOR_WRITER_SOCKET"] = supervisor.path
    err.print(f"Candor {__version__} on http://{s.host}:{s.port} (data: {s.data_dir}, workers: {workers})")
    try:
        uvicorn.run(
            "candor.app:create_app",
            factory=True,
            host=s.host,
            port=s.port,
            workers=workers,
            access_log=False,
            log_level=s.log_level.lower(),
            log_config=None,
            timeout_graceful_shutdown=10,
            # a worker loads the PII detectors while it starts: on a busy machine that holds the GIL
            # longer than uvicorn's 5 s health check, which would kill and respawn it in a loop
            timeout_worker_healthcheck=60,
        )
    finally:
        if supervisor is not None:
            supervisor.stop()  # last: the workers have answered their requests


# -- demo ----------------------------------------------------------------------------------------
def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@app.command()
def demo(
    customers: Annotated[int, typer.Option(min=1, max=1_000_000, help="Customers to generate")] = 500,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data)")] = 7,
    host: Annotated[str | None, typer.Option(help="Address to serve on")] = None,
    port: Annotated[int | None, typer.Option(help="Port to serve on")] = None,
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="Keep serving after seeding")] = True,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar")] = True,
) -> None:
    """Seed a demo retailer of books and music through the public API, then serve it."""
    import uvicorn

    from candor import demo as demo_mod
    from candor.app import create_app

    s = settings(host=host, port=port)
    _setup_logging("warning")
    if not _port_free(s.host, s.port):
        err.print(f"[red]error:[/red] port {s.port} on {s.host} is in use; pass --port or stop the other server")
        raise typer.Exit(2)
    rt = runtime(host=host, port=port)
    keys: dict[str, str] = {}
    existing = {src["name"] for src in rt.directory.list_sources()}
    for name in demo_mod.SOURCES:
        src_name = f"demo-{name}"
        keys[name] = (
            rt.directory.reset_write_key(src_name) if src_name in existing else rt.directory.create_source(src_name)
        )
    token = rt.directory.create_token("demo owner", "owner", ttl_days=30)

    server = uvicorn.Server(
        uvicorn.Config(create_app(runtime=rt), host=s.host, port=s.port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="candor-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            err.print("[red]error:[/red] the server did not start")
            raise typer.Exit(1)
        time.sleep(0.05)
    base = f"http://{s.host}:{s.port}"
    try:
        data = demo_mod.generate(customers, seed)
        report = demo_mod.send(data, base, keys, progress=progress)
        enrolled = demo_mod.enrol(data, base, token)
    except Exception as exc:  # noqa: BLE001 - stop the server, then explain
        server.should_exit = True
        thread.join(10)
        err.print(f"[red]demo failed:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"Seeded {customers} customers: {report.total_events} events in {report.requests} requests.")
    console.print(
        f"Loyalty programme: {enrolled['members']} members enrolled, {enrolled['offers_accepted']} answered an offer."
    )
    console.print(f"Admin API token (owner, 30 days): [bold]{token}[/bold]", soft_wrap=True)
    console.print(f"Write key of demo-web: [bold]{keys['web']}[/bold]", soft_wrap=True)
    console.print(f"Try: curl -H 'Authorization: Bearer {token}' {base}/v1/stats", soft_wrap=True)
    if not serve_after:
        server.should_exit = True
        thread.join(15)
        rt.close()
        return
    console.print(f"Serving on {base} (Ctrl-C to stop)")
    try:
        while thread.is_alive():
            thread.join(0.5)
    except KeyboardInterrupt:
        server.should_exit = True
        thread.join(15)
    rt.close()


# -- sources and tokens --------------------------------------------------------------------------
@sources_app.command("create")
def sources_create(
    name: str,
    strict: Annotated[bool, typer.Option(help="Answer 400 with every error instead of Segment's 200")] = False,
    personal: Annotated[str, typer.Option(help="Comma-separated property names to treat as personal")] = "",
) -> None:
    """Create a source and print its write key (shown once; stored hashed)."""
    with opened(ValueError) as rt:
        key = rt.directory.create_source(
            name, strict=strict, personal=[p.strip() for p in personal.split(",") if p.strip()]
        )
    print(key)


@sources_app.command("list")
def sources_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List sources (never their keys)."""
    with opened() as rt:
        rows = rt.directory.list_sources()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("id", "name", "strict", "personal properties")
    for r in rows:
        table.add_row(str(r["id"]), r["name"], "yes" if r["strict"] else "no", ", ".join(r["personal_properties"]))
    console.print(table)


@tokens_app.command("create")
def tokens_create(
    role: Annotated[str, typer.Option(help="owner, privacy_officer, marketer, analyst or support")],
    name: Annotated[str, typer.Option(help="Who or what the token is for")] = "cli",
    ttl_days: Annotated[float | None, typer.Option(help="Expire after this many days")] = None,
) -> None:
    """Create a staff API token and print it (shown once; stored hashed)."""
    with opened(ValueError) as rt:
        token = rt.directory.create_token(name, role, ttl_days)
    print(token)


@users_app.command("create")
def users_create(
    username: str,
    role: Annotated[str, typer.Option(help="owner, privacy_officer, marketer, analyst or support")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input")
    ] = False,
) -> None:
    """Create a staff user (the password is asked for, or read from standard input; stored as argon2id)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    with opened(ValueError) as rt:
        uid = rt.directory.create_user(username, role, password)
    console.print(f"user {username} created (id {uid}, role {role})")


@tokens_app.command("list")
def tokens_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List tokens (never the secrets)."""
    with opened() as rt:
        rows = rt.directory.list_tokens()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("id", "name", "role", "created", "expires", "revoked")
    fmt = lambda ms: time.strftime("%Y-%m-%d %H:%M", time.gmtime(ms / 1000)) if ms else "-"  # noqa: E731
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["name"],
            r["role"],
            fmt(r["created_ms"]),
            fmt(r["expires_ms"]),
            fmt(r["revoked_ms"]),
        )
    console.print(table)


@tokens_app.command("revoke")
def tokens_revoke(token_id: int) -> None:
    """Revoke a token by id; it stops working within seconds."""
    with opened() as rt:
        ok = rt.directory.revoke_token(token_id)
    if not ok:
        err.print(f"[red]error:[/red] no active token with id {token_id}")
        raise typer.Exit(1)
    console.print(f"token {token_id} revoked")


# -- stats and db --------------------------------------------------------------------------------
@app.command()
def stats(as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """Accepted, duplicate and rejected events per source and type."""
    from candor.stats import collect_stats

    with opened() as rt:
        data = collect_stats(rt.store)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    outcomes = ("accepted", "duplicate", "rejected", "no_consent")
    table = Table("source", "type", *(o.replace("_", " ") for o in outcomes))
    for src in data["sources"]:
        types = sorted(set().union(*(src[o] for o in outcomes)))
        for t in types:
            table.add_row(src["source"], t, *(str(src[o].get(t, 0)) for o in outcomes))
    console.print(table)
    tot = data["total"]
    console.print(
        f"total: {tot['accepted']} accepted, {tot['duplicate']} duplicate, {tot['rejected']} rejected, "
        f"{tot['no_consent']} not stored for lack of consent"
    )


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply schema migrations (also done automatically on start)."""
    from candor.store import Store
    from candor.store.engine import StoreUnavailable

    store = Store(settings())
    try:
        store.upgrade()
        console.print(f"schema at revision {store.current_revision()}")
    except StoreUnavailable as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    finally:
        store.dispose()


# -- audit ---------------------------------------------------------------------------------------
@audit_app.command("verify")
def audit_verify(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Check the hash chain and signed checkpoints; exit 1 naming the first bad entry."""
    from candor import audit

    with opened() as rt:
        result = audit.verify(rt.store, rt.checkpoints)
    if as_json:
        print(json.dumps(result.as_dict()))
    elif result.ok:
        console.print(
            f"audit log intact: {result.entries} entries, {result.checkpoints_checked} signed checkpoints match"
        )
    else:
        err.print(f"[red]audit log broken:[/red] {result.problem}")
    if not result.ok:
        raise typer.Exit(1)


@audit_app.command("checkpoint")
def audit_checkpoint() -> None:
    """Sign the current head of the chain into the checkpoint file."""
    with opened() as rt:
        cp = rt.checkpoints.write()
    console.print(f"checkpoint at entry {cp['seq']} written to {rt.checkpoints.path}")


@audit_app.command("list")
def audit_list(
    after: Annotated[int, typer.Option(help="Start after this sequence number")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 50,
) -> None:
    """Print audit entries as JSON lines."""
    from candor import audit

    with opened() as rt:
        for entry in audit.entries(rt.store, after=after, limit=limit):
            print(json.dumps(entry))


# -- keys ----------------------------------------------------------------------------------------
@keys_app.command("rotate")
def keys_rotate() -> None:
    """Re-wrap every data key under a new master key (no data is re-encrypted; resumable)."""
    from rich.progress import Progress

    from candor import keys

    with opened(RuntimeError) as rt, Progress(console=err, transient=True) as progress:
        task = progress.add_task("re-wrapping keys", total=None)
        report = keys.rotate_master(
            rt.settings,
            rt.store,
            rt.vault,
            on_start=lambda n: progress.update(task, total=n),
            on_progress=lambda n: progress.advance(task, n),
        )
    console.print(f"master key rotated to {report.new_kek_id}: {report.rewrapped} keys re-wrapped")
    if rt.settings.master_key:
        console.print("now remove CANDOR_PREVIOUS_MASTER_KEY from every process's environment")


@keys_app.command("rotate-hmac")
def keys_rotate_hmac() -> None:
    """Start a new pseudonym (HMAC) key version; old pseudonyms resolve until retired."""
    from candor import keys

    with opened() as rt:
        version = keys.rotate_hmac(rt.store, rt.vault)
    console.print(f"HMAC key version {version} is now current")


@keys_app.command("retire-hmac")
def keys_retire_hmac(version: int) -> None:
    """End the rotation window of an old HMAC key version (destroys it)."""
    from candor import keys

    with opened(ValueError) as rt:
        removed = keys.retire_hmac(rt.store, rt.vault, version)
    console.print(f"HMAC key version {version} retired; {removed} old pseudonyms deleted")


@keys_app.command("status")
def keys_status() -> None:
    """Key ids and versions in force (never the keys)."""
    from candor import keys

    with opened() as rt:
        print(json.dumps(keys.status(rt.store, rt.vault), indent=2))


# -- consent -------------------------------------------------------------------------------------
@suppression_app.command("import")
def suppression_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    channel: Annotated[str, typer.Option(help="email, sms, phone, post, push or all")],
    reason: Annotated[str, typer.Option(help="e.g. preference-service, do-not-call, imported")] = "imported",
    source: Annotated[str | None, typer.Option(help="Where the list comes from")] = None,
) -> None:
    """Import an external do-not-contact list (CSV of emails, phones or addresses)."""
    from candor.consent.suppression import SuppressionError

    with opened(SuppressionError) as rt:
        report = rt.suppressions.import_file(file, channel, reason, source=source or file.name)
    console.print(
        f"{report.rows} rows: {report.added} suppressed on {channel}, {report.already} already were; "
        f"{report.matched_profiles} known profiles matched"
    )
    for line in report.errors[:20]:
        err.print(f"[yellow]{line}[/yellow]")
    if len(report.errors) > 20:
        err.print(f"... and {len(report.errors) - 20} more rows with errors")


@suppression_app.command("add")
def suppression_add(
    channel: Annotated[str, typer.Option(help="email, sms, phone, post, push or all")],
    email: Annotated[str | None, typer.Option()] = None,
    phone: Annotated[str | None, typer.Option()] = None,
    reason: Annotated[str, typer.Option()] = "unsubscribe",
) -> None:
    """Suppress one email or phone number on a channel."""
    from candor.consent.suppression import SuppressionError

    if bool(email) == bool(phone):
        err.print("[red]error:[/red] give exactly one of --email or --phone")
        raise typer.Exit(2)
    with opened(SuppressionError) as rt:
        added = rt.suppressions.add(channel, "email" if email else "phone", email or phone, reason)
    console.print("suppressed" if added else "already suppressed")


@notices_app.command("add")
def notices_add(
    notice_id: str,
    version: Annotated[int, typer.Option(min=1)],
    file: Annotated[Path, typer.Option(exists=True, dir_okay=False, readable=True, help="The notice text")],
    language: Annotated[str, typer.Option()] = "en",
    reconsent: Annotated[bool, typer.Option("--reconsent", help="Older grants under this notice lapse")] = False,
) -> None:
    """Add a notice version (notices are never edited)."""
    from candor.consent.ledger import ConsentError

    with opened(ConsentError) as rt:
        n = rt.consent.add_notice(notice_id, version, language, file.read_text(), requires_reconsent=reconsent)
    console.print(f"notice {n.notice_id} v{n.version} ({n.language}) sha256 {n.sha256}")


@notices_app.command("list")
def notices_list() -> None:
    """List notice versions with the SHA-256 of their texts."""
    with opened() as rt:
        rows = rt.consent.list_notices()
    print(json.dumps(rows, indent=2))


@consent_app.command("explain")
def consent_explain(
    user_id: Annotated[str | None, typer.Option("--user-id")] = None,
    anonymous_id: Annotated[str | None, typer.Option("--anonymous-id")] = None,
    email: Annotated[str | None, typer.Option()] = None,
    purpose: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Why a person's data may or may not be used for each purpose."""
    given = [(t, v) for t, v in (("user_id", user_id), ("anonymous_id", anonymous_id), ("email", email)) if v]
    if len(given) != 1:
        err.print("[red]error:[/red] give exactly one of --user-id, --anonymous-id or --email")
        raise typer.Exit(2)
    with opened() as rt:
        sid = rt.consent.subject_for(*given[0])
        decisions = rt.consent.explain(sid, [purpose] if purpose else None)
    print(json.dumps({"found": sid is not None, "decisions": [d.as_dict() for d in decisions]}, indent=2))


@consent_app.command("audience")
def consent_audience() -> None:
    """Usable / not consented / suppressed / restricted people per purpose."""
    from candor.consent.audience import audience_counts

    with opened() as rt:
        counts = audience_counts(rt.consent, rt.analytics)
    table = Table("purpose", "usable", "not consented", "suppressed", "restricted")
    for p, c in counts.items():
        table.add_row(p, *(str(c[k]) for k in ("usable", "not_consented", "suppressed", "restricted")))
    console.print(table)


@tcf_app.command("decode")
def tcf_decode(
    tc_string: str,
    lenient: Annotated[bool, typer.Option(help="Accept policy versions before 4 (historical records)")] = False,
) -> None:
    """Decode a TC string into JSON shaped like the CMP API v2 TCData object."""
    from candor.consent import tcf

    try:
        decoded = tcf.decode(tc_string.strip(), strict=not lenient)
    except tcf.TCFError as exc:
        err.print(f"[red]invalid TC string:[/red] {exc}")
        raise typer.Exit(1) from None
    print(json.dumps(tcf.to_tcdata(decoded), indent=2))


@tcf_app.command("encode")
def tcf_encode(
    file: Annotated[Path | None, typer.Argument(help="TCData JSON file (default: standard input)")] = None,
) -> None:
    """Encode TCData JSON (as printed by decode) into a TC string."""
    from candor.consent import tcf

    text = file.read_text() if file else sys.stdin.read()
    try:
        print(tcf.encode(tcf.from_tcdata(json.loads(text))))
    except (tcf.TCFError, json.JSONDecodeError) as exc:
        err.print(f"[red]cannot encode:[/red] {exc}")
        raise typer.Exit(1) from None


@gpp_app.command("decode")
def gpp_decode(gpp_string: str) -> None:
    """Decode a GPP string (header, EU TCF and US national sections) into JSON."""
    from candor.consent import gpp

    try:
        decoded = gpp.decode(gpp_string.strip())
    except gpp.GPPError as exc:
        err.print(f"[red]invalid GPP string:[/red] {exc}")
        raise typer.Exit(1) from None
    print(json.dumps(gpp.to_json(decoded), indent=2))


def main() -> None:
    # files Candor creates (database, WAL, exports, key files) are readable by its own user only
    os.umask(0o077)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


# -- identity ------------------------------------------------------------------------------------
identity_app = typer.Typer(help="The identity graph: profiles, splits, reviews, matching.", no_args_is_help=True)
import_app = typer.Typer(help="Import offline records (POS, CRM, call center exports).", no_args_is_help=True)
profiles_app = typer.Typer(help="Unified profiles.", no_args_is_help=True)
app.add_typer(identity_app, name="identity")
app.add_typer(import_app, name="import")
app.add_typer(profiles_app, name="profiles")


@import_app.command("records")
def import_records(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="CSV file, UTF-8")],
    source: Annotated[str, typer.Option(help="Source name (created when new)")],
    id_column: Annotated[str, typer.Option(help="Column with the record's id in that source")],
    map_: Annotated[
        str,
        typer.Option(
            "--map",
            help="column=trait pairs: firstName, lastName, email, phone, birthday, address.street, address.city, "
            "address.postalCode, address.state, address.country, userId, timestamp, ext:NAME or a custom trait",
        ),
    ] = "",
    link: Annotated[bool, typer.Option(help="Link new records probabilistically against existing profiles")] = True,
    defer_profiles: Annotated[
        bool,
        typer.Option(
            help="Leave the profiles of this import to the next import without this flag (one replay settles "
            "all of them), `candor identity resolve` or `candor identity rebuild`: for loading several "
            "exports in a row. Until then its records stay apart from the profiles they stitch to; implies "
            "--no-link"
        ),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=16,
            help="Processes that validate, pseudonymise and screen the rows while the previous batch is "
            "written (default: 1 for a file of 1 MiB or more on Linux with two cores or more; 0: none)",
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Import rows as source records: traits encrypted, email/phone/ids stitched, errors per row."""
    from rich.progress import Progress

    from candor.identity.records import Importer, ImportError_, ImportReport, parse_mapping
    from candor.ingest import Work
    from candor.store import now_ms

    with opened(ImportError_) as rt, Progress(console=err, transient=True) as progress:
        mapping = parse_mapping(map_)
        info = next((s for s in rt.directory.list_sources() if s["name"] == source), None)
        if info is None:
            rt.directory.create_source(source)
            info = next(s for s in rt.directory.list_sources() if s["name"] == source)
        from candor.auth import SourceInfo

        src = SourceInfo(
            id=int(info["id"]),
            name=info["name"],
            strict=bool(info["strict"]),
            personal_properties=frozenset(info["personal_properties"]),
        )
        importer = Importer(rt.validator_for(src), rt.vault.pseudonym, source)
        report = ImportReport()
        # profiles an earlier import left pending (deferred, or killed): settled with this one's, in one replay
        earlier = not defer_profiles and rt.identity.profiles_pending()
        task = progress.add_task(f"importing {file.name}", total=None)
        pids: list[str] = []
        for batch in importer.messages(file, id_column, mapping, report, workers=workers):
            # profiles are recomputed once, after the last batch (settle_profiles), not per batch
            result = rt.ingestor.submit_sync(Work(src.id, batch, [], now_ms(), defer_profiles=True), timeout=600)
            report.imported += result.accepted
            report.unchanged += result.duplicates
            pids.extend(i[1] for m in batch for i in m.identifiers if i[0] == "record")
            progress.update(task, completed=report.rows)
        linked = None
        if not defer_profiles:
            progress.update(task, description="updating profiles")
            rt.ingestor.settle_profiles(full=earlier, actor="cli")
        if link and pids and not defer_profiles:
            from sqlalchemy import select

            from candor.store.schema import identifiers

            with rt.store.engine.connect() as conn:
                subjects: set[str] = set()
                for i in range(0, len(pids), 500):
                    subjects.update(
                        conn.execute(
                            select(identifiers.c.subject_id).where(
                                identifiers.c.id_type == "record", identifiers.c.pseudonym.in_(pids[i : i + 500])
                            )
                        ).scalars()
                    )
            linked = rt.resolver.link_new(sorted(subjects), actor="cli").as_dict()
    out = report.as_dict()
    out["profiles"] = "pending" if defer_profiles else "settled"
    if linked is not None:
        out["probabilistic"] = linked
    if json_out:
        print(json.dumps(out, indent=2))
    else:
        console.print(
            f"{report.rows} rows: {report.imported} imported, {report.unchanged} unchanged, {len(report.errors)} errors"
        )
        if defer_profiles:
            console.print(
                "profiles pending: the next import without --defer-profiles, `candor identity resolve` or "
                "`candor identity rebuild` settles them"
            )
        for e in report.errors[:50]:
            console.print(f"  row {e.row}: {e.error}")
        if len(report.errors) > 50:
            console.print(f"  … {len(report.errors) - 50} more (use --json for all)")
    if report.errors and not (report.imported or report.unchanged):
        raise typer.Exit(1)


@identity_app.command("resolve")
def identity_resolve(
    retrain: Annotated[bool, typer.Option(help="Estimate the model again instead of reusing the saved one")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
    engine: Annotated[str, typer.Option(help="duckdb (in memory, one machine) or spark (CANDOR_SPARK_MASTER)")] = (
        "duckdb"
    ),
) -> None:
    """Probabilistic matching (Splink, Fellegi-Sunter) of every active record; resumable."""
    from rich.progress import Progress

    from candor.engines import EngineError, SparkEngine, check_name
    from candor.identity.matching import MatchingError

    try:
        chosen = SparkEngine(settings()) if check_name(engine) == "spark" else None
        if chosen is not None:
            chosen.session()  # fail fast: a missing extra, no Java, an unreachable cluster
    except EngineError as exc:
        from rich.markup import escape

        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    with opened(MatchingError, EngineError) as rt, Progress(console=err, transient=True) as progress:
        tasks: dict[str, Any] = {}

        def step(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=total)
            progress.update(tasks[phase], completed=done, total=total)

        report = rt.resolver.resolve(actor="cli", retrain=retrain, progress=step, engine=chosen)
    out = {**report.as_dict(), "seconds": {k: round(v, 2) for k, v in report.timings.items()}}
    if json_out:
        print(json.dumps(out, indent=2))
    else:
        console.print(
            f"{report.records} records, {report.pairs_scored} scored pairs: {report.linked} linked, "
            f"{report.review} sent to review, {report.already_linked} already one profile"
        )


@identity_app.command("split")
def identity_split(
    edge: Annotated[int, typer.Option(help="Id of the edge to remove")],
    reason: Annotated[str, typer.Option(help="Why the link was wrong (audited)")] = "",
) -> None:
    """Remove a wrong link and recompute the profiles it touched (the edge stays in the log)."""
    from candor.identity.service import IdentityError

    with opened(IdentityError) as rt:
        out = rt.identity.split(edge, actor="cli", reason=reason)
    print(json.dumps(out, indent=2))


@identity_app.command("reviews")
def identity_reviews(state: Annotated[str, typer.Option(help="open, approved, rejected or all")] = "open") -> None:
    """The review queue: held conflicts and grey-zone matches."""
    with opened() as rt:
        print(json.dumps(rt.identity.reviews(state, 1000), indent=2))


@identity_app.command("approve")
def identity_approve(review: int) -> None:
    """Link the two sides of a review item with a manual edge."""
    from candor.identity.service import IdentityError

    with opened(IdentityError) as rt:
        print(json.dumps(rt.identity.decide_review(review, approve=True, actor="cli")))


@identity_app.command("reject")
def identity_reject(review: int) -> None:
    """Keep the two sides of a review item apart."""
    from candor.identity.service import IdentityError

    with opened(IdentityError) as rt:
        print(json.dumps(rt.identity.decide_review(review, approve=False, actor="cli")))


@identity_app.command("rebuild")
def identity_rebuild() -> None:
    """Replay the whole edge log: profiles, edge states and supernode flags from scratch."""
    with opened() as rt:
        print(json.dumps(rt.identity.rebuild(actor="cli"), indent=2))


@profiles_app.command("export")
def profiles_export(
    format_: Annotated[str, typer.Option("--format", help="Only jsonl for now")] = "jsonl",
    out: Annotated[Path | None, typer.Option(help="File to write (default: standard output)")] = None,
    token: Annotated[str, typer.Option(envvar="CANDOR_TOKEN", help="An owner's API token (env CANDOR_TOKEN)")] = "",
) -> None:
    """Every profile as one JSON line: records, identities and traits in plaintext (owner only, audited)."""
    if format_ != "jsonl":
        err.print("[red]error:[/red] --format must be jsonl")
        raise typer.Exit(2)
    from candor import audit

    with opened() as rt:
        staff = rt.directory.staff_for_token(token) if token else None
        if staff is None or not staff.can("profiles:export"):
            err.print("[red]error:[/red] exporting profiles needs an owner's token (--token or CANDOR_TOKEN)")
            raise typer.Exit(1)
        n = 0
        handle = out.open("w", encoding="utf-8") if out else None
        try:
            with rt.store.engine.connect() as conn:
                for row in rt.profiles.export(conn):
                    line = json.dumps(row, ensure_ascii=False, default=str)
                    if handle:
                        handle.write(line + "\n")
                    else:
                        print(line)
                    n += 1
        finally:
            if handle:
                handle.close()
        audit.append(rt.store, f"token:{staff.token_id}", "profiles.export", details={"profiles": n, "format": "jsonl"})
    if out:
        console.print(f"{n} profiles written to {out}")


# -- privacy requests ----------------------------------------------------------------------------
privacy_app = typer.Typer(
    help="Data-subject requests: access, erasure, rectification, objections.", no_args_is_help=True
)
privacy_request_app = typer.Typer(help="Open a request on behalf of a person.", no_args_is_help=True)
app.add_typer(privacy_app, name="privacy")
privacy_app.add_typer(privacy_request_app, name="request")


def _privacy_request(
    type_: str, email: str | None, phone: str | None, user_id: str | None, verified: str | None, process: bool
) -> None:
    from candor.rights.requests import RightsError

    given = [(t, v) for t, v in (("email", email), ("phone", phone), ("user_id", user_id)) if v]
    if len(given) != 1:
        err.print("[red]error:[/red] give exactly one of --email, --phone or --user-id")
        raise typer.Exit(2)
    with opened(RightsError) as rt:
        req, _ = rt.requests.create(type_, *given[0], channel="cli", actor="cli", send_code=not verified)
        if verified:
            req = rt.requests.verify_by_staff(req.id, actor="cli", reason=verified)
            if process:
                rt.rights.process(req.id, actor="cli")
                req = rt.requests.get(req.id)
        from candor.store import now_ms

        print(json.dumps(req.staff(now_ms()), indent=2))


def _request_command(type_: str) -> Any:
    def command(
        email: Annotated[str | None, typer.Option(help="The person's email address")] = None,
        phone: Annotated[str | None, typer.Option(help="The person's phone number")] = None,
        user_id: Annotated[str | None, typer.Option("--user-id", help="The person's userId")] = None,
        verified: Annotated[bool, typer.Option(help="The person was verified by other means (audited)")] = False,
        how: Annotated[str, typer.Option(help="How they were verified (kept in the audit log)")] = (
            "verified by the operator at the command line"
        ),
        process: Annotated[bool, typer.Option(help="Carry it out at once when verified")] = True,
    ) -> None:
        _privacy_request(type_, email, phone, user_id, how if verified else None, process)

    command.__doc__ = f"A {type_.replace('_', ' ')} request (without --verified, a code is emailed to the person)."
    return command


for _type in (
    "access",
    "portability",
    "erasure",
    "restriction",
    "objection_marketing",
    "objection_profiling",
    "opt_out_sale",
    "limit_sensitive",
):
    privacy_request_app.command(_type.replace("_", "-"))(_request_command(_type))


@privacy_app.command("list")
def privacy_list(
    overdue: Annotated[bool, typer.Option(help="Only overdue requests")] = False,
    due_soon: Annotated[bool, typer.Option(help="Only requests due within 7 days")] = False,
    state: Annotated[str | None, typer.Option(help="Only requests in this state")] = None,
) -> None:
    """Requests by due date, for the privacy officer."""
    with opened() as rt:
        print(json.dumps(rt.requests.listing(state=state, overdue=overdue, due_soon=due_soon), indent=2))


@privacy_app.command("process")
def privacy_process(request_id: str) -> None:
    """Carry out (or resume) a verified request."""
    from candor.rights.requests import RightsError

    with opened(RightsError) as rt:
        print(json.dumps(rt.rights.process(request_id, actor="cli"), indent=2))


@privacy_app.command("export")
def privacy_export(
    request_id: str,
    out: Annotated[Path, typer.Option(help="Where to write the zip")],
) -> None:
    """Write the access export of a verified access request to a file (for delivery by other means)."""
    from candor.rights.requests import RightsError

    with opened(RightsError) as rt:
        req = rt.requests.get(request_id)
        if req.type not in ("access", "portability") or req.verified_ms is None:
            err.print("[red]error:[/red] only a verified access or portability request can be exported")
            raise typer.Exit(1)
        people = rt.rights.people(request_id)
        data = rt.rights.export_bytes(people, request_id) if people else b""
        from candor import audit

        audit.append(rt.store, "cli", "rights.exported", target=f"request:{request_id}", details={"bytes": len(data)})
    if not data:
        console.print("no data found about this person")
        return
    out.write_bytes(data)
    os.chmod(out, 0o600)
    console.print(f"{len(data)} bytes written to {out}")


# -- preference center ---------------------------------------------------------------------------
preferences_app = typer.Typer(help="The customer's preference center.", no_args_is_help=True)
app.add_typer(preferences_app, name="preferences")


@preferences_app.command("link")
def preferences_link(
    email: Annotated[str | None, typer.Option(help="The person's email address")] = None,
    user_id: Annotated[str | None, typer.Option("--user-id", help="The person's userId")] = None,
    hours: Annotated[float, typer.Option(help="How long the link works")] = 72.0,
) -> None:
    """Print a signed, expiring link to a person's preference center (to send them)."""
    from candor.rights.requests import RightsError
    from candor.web.preferences import make_link

    given = [(t, v) for t, v in (("email", email), ("user_id", user_id)) if v]
    if len(given) != 1:
        err.print("[red]error:[/red] give exactly one of --email or --user-id")
        raise typer.Exit(2)
    if not 0 < hours <= 24 * 30:
        err.print("[red]error:[/red] --hours must be between 0 and 720")
        raise typer.Exit(2)
    with opened(RightsError) as rt:
        if rt.profiles.find(*given[0]) is None:
            err.print("[red]error:[/red] no person with that identifier")
            raise typer.Exit(1)
        print(make_link(rt, *given[0], ttl_ms=int(hours * 3600 * 1000)))


# -- campaigns (candor/campaigns/cli.py) ------------------------------------------------------
from candor.campaigns.cli import audiences_app, campaigns_app, destinations_app  # noqa: E402

app.add_typer(campaigns_app, name="campaigns")
app.add_typer(destinations_app, name="destinations")
app.add_typer(audiences_app, name="audiences")


# -- segments ------------------------------------------------------------------------------------
segments_app = typer.Typer(help="Segments of unified profiles (docs/segments.md).", no_args_is_help=True)
app.add_typer(segments_app, name="segments")


@segments_app.command("create")
def segments_create(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="JSON or YAML")],
    name: Annotated[str | None, typer.Option(help="Name (default: the definition's name)")] = None,
) -> None:
    """Create a segment from a JSON or YAML definition."""
    from candor.segments import SegmentError, load_text

    with opened(SegmentError) as rt:
        definition = load_text(file.read_text(encoding="utf-8"))
        seg_name = name or (definition.get("name") if isinstance(definition, dict) else None)
        if not isinstance(seg_name, str) or not seg_name:
            raise SegmentError("give the segment a name (--name, or a name in the definition)", "name")
        print(json.dumps(rt.segments.create(seg_name, definition, "cli"), default=str))


@segments_app.command("preview")
def segments_preview(name: str) -> None:
    """Size and the purpose breakdown (usable, without consent, suppressed, restricted)."""
    from candor.segments import SegmentError

    with opened(SegmentError) as rt:
        print(json.dumps(rt.segments.preview(name), indent=2))


@segments_app.command("list")
def segments_list() -> None:
    """Every segment and its last run."""
    with opened() as rt:
        print(json.dumps(rt.segments.list(), indent=2, default=str))


@segments_app.command("refresh")
def segments_refresh(
    name: str,
    engine: Annotated[str, typer.Option(help="duckdb (on the store) or spark (CANDOR_SPARK_MASTER)")] = "duckdb",
) -> None:
    """Evaluate now and record who entered and who left."""
    from candor.engines import EngineError, SparkEngine, check_name
    from candor.segments import SegmentError

    with opened(SegmentError, EngineError) as rt:
        if check_name(engine) == "spark":
            rt.segments.engine = SparkEngine(rt.settings)
        print(json.dumps(rt.segments.refresh(name, "cli"), indent=2, default=str))


# -- operations: backup, restore, retention, records of processing (their own module) -------------
from candor import ops_cli as _ops_cli  # noqa: E402,F401  (registers its commands on ``app``)

# the data dictionary and the privacy inbox (privacy_cli.py)
from candor.privacy_cli import dictionary_app, inbox_app  # noqa: E402 - mounted after the other groups

app.add_typer(dictionary_app, name="dictionary")
app.add_typer(inbox_app, name="inbox")


# -- analytics store (lake_cli.py) -----------------------------------------------------------------
from candor.lake_cli import app as _analytics_app  # noqa: E402 - mounted after `opened` exists

app.add_typer(_analytics_app, name="analytics")


# -- insights (insights_cli.py) ----------------------------------------------------------------------
from candor.insights_cli import app as _insights_app  # noqa: E402 - mounted after `opened` exists

app.add_typer(_insights_app, name="insights")

# -- loyalty (loyalty_cli.py) ------------------------------------------------------------------------
from candor.loyalty_cli import app as _loyalty_app  # noqa: E402 - mounted after `opened` exists

app.add_typer(_loyalty_app, name="loyalty")

# -- recommendations and next best action (recommend/cli.py) ----------------------------------------
from candor.recommend import cli as _recommend_cli  # noqa: E402 - mounted after `opened` exists

app.add_typer(_recommend_cli.app, name="recommend")
app.add_typer(_recommend_cli.decide_app, name="decide")
