"""Insight reports as HTML: server-side SVG charts (web/charts.py) and tables of the released cells.

``report_html`` makes the standalone file of ``candor insights report`` (one file, inline styles, no
script, nothing loaded from anywhere: a marketer can email it); ``sections`` gives the console page
the same charts. Only released numbers are drawn; a suppressed cell is shown as "hidden".
"""

from __future__ import annotations

from html import escape
from typing import Any

from jinja2 import Environment, select_autoescape
from markupsafe import Markup

from candor.web.charts import PALETTE, _fmt, bar_chart, line_chart

TITLES = {
    "journeys": "Journeys: the touchpoints before the goal",
    "funnel": "Funnel: who gets through each step",
    "attribution": "Attribution: what gets the credit for conversions",
    "experience": "Experience: NPS and CSAT",
    "rfm": "RFM segments",
    "cohorts": "Cohort retention",
    "clv": "Customer lifetime value",
}


def signed_bar_chart(title: str, items: list[tuple[str, float]], *, width: int = 640) -> Markup:
    """Horizontal bars around a zero line (NPS runs from -100 to 100)."""
    bar_h, gap, left, right = 22, 8, 170, 60
    height = max(1, len(items)) * (bar_h + gap) + 40
    span = max((abs(v) for _, v in items), default=0) or 1
    half = (width - left - right) / 2
    zero = left + half
    desc = "; ".join(f"{label}: {_fmt(v)}" for label, v in items) or "no data"
    ident = f"s{id(items)}"
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'aria-labelledby="t-{ident} d-{ident}" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="t-{ident}">{escape(title)}</title><desc id="d-{ident}">{escape(desc)}</desc>',
        f'<text x="0" y="16" font-size="14" font-weight="600" fill="#1b1b1f">{escape(title)}</text>',
        f'<line x1="{zero:.1f}" y1="26" x2="{zero:.1f}" y2="{height - 6}" stroke="#999"/>',
    ]
    for i, (label, v) in enumerate(items):
        y = 30 + i * (bar_h + gap)
        w = half * abs(v) / span
        x = zero if v >= 0 else zero - w
        colour = PALETTE[2] if v >= 0 else PALETTE[1]
        parts.append(
            f'<text x="{left - 8}" y="{y + 15}" font-size="12" text-anchor="end" fill="#1b1b1f">{escape(label)}</text>'
            f'<rect x="{x:.1f}" y="{y}" width="{max(w, 1):.1f}" height="{bar_h}" fill="{colour}"/>'
            f'<text x="{(zero + w + 6) if v >= 0 else (zero + 6):.1f}" y="{y + 15}" font-size="12" '
            f'fill="#1b1b1f">{escape(_fmt(v))}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every value above went through escape()


def _rows(table: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in table["rows"] if not r.get("suppressed")]


def charts(report: dict[str, Any]) -> list[Markup]:
    """The charts of one released report."""
    kind = report["insight"]
    out: list[Markup] = []
    for t in report["tables"]:
        rows = _rows(t)
        if kind == "journeys":
            paths = [(r["path"], float(r["profiles"])) for r in rows
                     if r["outcome"] == "converted" and r["path"] != "(all)"]  # fmt: skip
            out.append(bar_chart(f"Converted, by path ({report['params'].get('goal')})", paths[:15]))
        elif kind == "funnel":
            dim = t["columns"][0]
            done = [
                (str(r[dim]), float(r["profiles"])) for r in rows if r["stage"] == "completed" and r[dim] != "(all)"
            ]
            entered = [
                (str(r[dim]), float(r["profiles"])) for r in rows if r["stage"] == "entered" and r[dim] != "(all)"
            ]
            out.append(bar_chart(f"Entered the funnel, by {dim}", entered))
            out.append(bar_chart(f"Completed the funnel, by {dim}", done))
        elif kind == "attribution":
            dim = t["columns"][0]
            for model in ("last_touch", "linear", "time_decay"):
                items = [(str(r[dim]), float(r[model] or 0)) for r in rows if r[dim] != "(all)"]
                out.append(bar_chart(f"Conversions credited by {dim}: {model.replace('_', ' ')}", items))
        elif kind == "experience":
            dim = t["columns"][0]
            score = "nps" if t["name"] == "nps" else "csat_pct"
            items = [(str(r[dim]), float(r[score])) for r in rows if r.get(score) is not None]
            if t["name"] == "nps":
                out.append(signed_bar_chart(f"NPS by {dim}", items))
            else:
                out.append(bar_chart(f"CSAT (% satisfied) by {dim}", items, unit="%"))
        elif kind == "rfm":
            out.append(bar_chart("Profiles per RFM segment", [(r["rfm_segment"], float(r["profiles"])) for r in rows
                                                              if r["rfm_segment"] != "(all)"]))  # fmt: skip
        elif kind == "cohorts":
            series: dict[str, list[float]] = {}
            months = sorted({int(r["month"]) for r in t["rows"]})
            for r in rows:
                if r.get("inactive") or r.get("retention_pct") is None:
                    continue
                series.setdefault(str(r["cohort"]), [0.0] * len(months))[months.index(int(r["month"]))] = float(
                    r["retention_pct"]
                )
            out.append(line_chart("Retention (%) by months since arrival", [f"month {m}" for m in months],
                                  dict(list(series.items())[-6:])))  # fmt: skip
        elif kind == "clv":
            out.append(bar_chart("Profiles per CLV band", [(r["clv_band"], float(r["profiles"])) for r in rows
                                                           if r["clv_band"] != "(all)"]))  # fmt: skip
    return out


def _cell(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        return f"{v:,.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def sections(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for rep in reports:
        if "error" in rep:
            out.append({"title": TITLES.get(rep["insight"], rep["insight"]), "error": rep["error"]})
            continue
        tables = []
        for t in rep["tables"]:
            cols = list(t["columns"])
            body = [
                ["hidden" if r.get("suppressed") and r.get(c) is None else _cell(r.get(c)) for c in cols]
                for r in t["rows"]
            ]
            tables.append({"title": t["title"], "columns": cols, "rows": body})
        out.append({
            "title": TITLES.get(rep["insight"], rep["insight"]),
            "charts": charts(rep),
            "tables": tables,
            "suppressed": rep["suppressed_cells"]["total"],
            "k": rep["k"],
            "dp": rep.get("dp"),
        })  # fmt: skip
    return out


_ENV = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
REPORT = _ENV.from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.5 system-ui,sans-serif;color:#1b1b1f;max-width:980px;margin:2rem auto;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2.5rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:1rem 0;font-size:13px}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f3f4f6}.note{color:#555}.error{color:#b91c1c}svg.chart{display:block;margin:1rem 0;max-width:100%}
</style></head><body>
<h1>{{ title }}</h1>
<p class="note">{{ period }}. Only people who agreed to analytics are counted. Every number stands for at least
{{ k }} people; smaller groups are hidden, and so are the cells from which a hidden one could be worked out
({{ suppressed }} cells hidden in this report).{% if dp %} Numbers carry differential-privacy noise.{% endif %}
Generated {{ generated }}.</p>
{% for s in sections %}
<section><h2>{{ s.title }}</h2>
{% if s.error %}<p class="error">Not computed: {{ s.error }}</p>{% else %}
{% for c in s.charts %}{{ c }}{% endfor %}
<p class="note">{{ s.suppressed }} cells hidden (fewer than {{ s.k }} people, or derivable from other numbers).
{% if s.dp %}Differential privacy: epsilon {{ s.dp.epsilon }}.{% endif %}</p>
{% for t in s.tables %}<table><caption>{{ t.title }}</caption><thead><tr>{% for c in t.columns %}<th>{{ c }}</th>
{% endfor %}</tr></thead><tbody>{% for r in t.rows %}<tr>{% for v in r %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}
</tbody></table>{% endfor %}{% endif %}</section>
{% endfor %}
</body></html>
"""
)


def report_html(reports: list[dict[str, Any]], *, title: str, period: str, k: int, generated: str) -> str:
    secs = sections(reports)
    return REPORT.render(
        title=title,
        period=period,
        k=k,
        suppressed=sum(s.get("suppressed", 0) for s in secs),
        dp=any(s.get("dp") for s in secs),
        sections=secs,
        generated=generated,
    )
