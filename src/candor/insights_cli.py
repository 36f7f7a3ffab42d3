"""``candor insights``: one insight as JSON, or every insight as a standalone HTML report."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from candor.cli import err, opened

app = typer.Typer(help="Customer-experience insights that protect small groups.", no_args_is_help=True)

Since = Annotated[str | None, typer.Option(help="start of the period (YYYY-MM-DD; default: 90 days ago)")]
Until = Annotated[str | None, typer.Option(help="end of the period, exclusive (YYYY-MM-DD; default: now)")]
Engine = Annotated[str, typer.Option(help="duckdb (this process) or spark (CANDOR_SPARK_MASTER)")]
K = Annotated[
    int | None, typer.Option("--k", help="minimum profiles per released cell (default CANDOR_INSIGHTS_MIN_PROFILES)")
]


def _common(since: str | None, until: str | None, k: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if since:
        out["since"] = since
    if until:
        out["until"] = until
    if k is not None:
        out["k"] = k
    return out


def _engine(rt: Any, name: str) -> None:
    """``--engine spark``: the insights' SQL (and that of the segments they name) runs on Spark; suppression
    and the DP ledger stay in this process."""
    from candor.engines import SparkEngine, check_name

    if check_name(name) == "spark":
        rt.insights.engine = SparkEngine(rt.settings)
        rt.segments.engine = rt.insights.engine  # the segments a request names are evaluated there too


@app.command("run")
def run(
    insight: Annotated[str, typer.Argument(help="journeys, funnel, attribution, experience, rfm, cohorts or clv")],
    params: Annotated[
        str, typer.Option(help='the insight\'s parameters as JSON, e.g. \'{"goal": "Signed Up"}\'')
    ] = "{}",
    since: Since = None,
    until: Until = None,
    k: K = None,
    engine: Engine = "duckdb",
) -> None:
    """One insight as JSON (the same answer as POST /v1/insights/INSIGHT)."""
    from candor.insights.reports import InsightError

    try:
        body = json.loads(params)
    except json.JSONDecodeError as exc:
        err.print(f"[red]error:[/red] --params is not JSON: {exc.msg}")
        raise typer.Exit(2) from None
    if not isinstance(body, dict):
        err.print("[red]error:[/red] --params must be a JSON object")
        raise typer.Exit(2)
    from candor.engines import EngineError

    with opened(InsightError, EngineError) as rt:
        _engine(rt, engine)
        print(json.dumps(rt.insights.run(insight, {**body, **_common(since, until, k)}, actor="cli"), indent=2))


@app.command("report")
def report(
    out: Annotated[Path, typer.Option("--out", help="the HTML file to write")],
    since: Since = None,
    until: Until = None,
    k: K = None,
    goal: Annotated[str, typer.Option(help="the goal event of journeys")] = "Order Completed",
    steps: Annotated[
        str, typer.Option(help="funnel steps, comma-separated")
    ] = "Product Viewed,Product Added,Order Completed",
    conversion: Annotated[
        str, typer.Option(help="the conversion event of attribution, RFM and CLV")
    ] = "Order Completed",
    survey: Annotated[str, typer.Option(help="the survey event of NPS and CSAT")] = "Survey Answered",
    title: Annotated[str, typer.Option(help="the report's title")] = "Customer experience",
    engine: Engine = "duckdb",
) -> None:
    """Every insight in one standalone HTML file with charts (a marketer can email it)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from candor.insights.render import report_html
    from candor.insights.reports import InsightError

    common = _common(since, until, k)
    plan: list[tuple[str, dict[str, Any]]] = [
        ("journeys", {"goal": goal}),
        ("funnel", {"steps": [s.strip() for s in steps.split(",") if s.strip()]}),
        ("attribution", {"conversion": conversion}),
        ("experience", {"event": survey}),
        ("rfm", {"event": conversion}),
        ("cohorts", {}),
        ("clv", {"event": conversion}),
    ]
    from candor.engines import EngineError

    with opened(InsightError, EngineError) as rt:
        _engine(rt, engine)
        # the period and k are checked once, up front: a bad one stops the report with a clear message
        first = rt.insights.request("cohorts", common)
        reports: list[dict[str, Any]] = []
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err,
                      transient=True) as bar:  # fmt: skip
            task = bar.add_task("computing insights", total=len(plan))
            for name, params in plan:
                bar.update(task, description=f"computing {name}")
                try:
                    reports.append(rt.insights.run(name, {**params, **common}, actor="cli"))
                except InsightError as exc:  # e.g. no survey answers yet: the section says so
                    reports.append({"insight": name, "error": str(exc)})
                bar.advance(task)
        fmt = "%Y-%m-%d"
        period = (
            f"From {datetime.fromtimestamp(first.since / 1000, tz=UTC).strftime(fmt)} "
            f"to {datetime.fromtimestamp(first.until / 1000, tz=UTC).strftime(fmt)} (UTC)"
        )
        html = report_html(reports, title=title, period=period, k=first.k,
                           generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))  # fmt: skip
    out.write_text(html, encoding="utf-8")
    done = sum(1 for r in reports if "error" not in r)
    err.print(f"wrote {out} ({done} of {len(plan)} insights)")
