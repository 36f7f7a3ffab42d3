"""Charts as inline SVG, drawn on the server: real charts that need no script and pass a strict CSP.

Each chart is an ``<svg role="img">`` with a title and a description that states the numbers, so
screen readers get them too. Values are escaped; nothing from the data becomes markup.
"""

from __future__ import annotations

from html import escape

from markupsafe import Markup

PALETTE = ("#1d4ed8", "#b91c1c", "#15803d", "#a16207", "#7c3aed", "#0e7490")


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 10 or float(v).is_integer() else f"{v:.2f}"


def bar_chart(title: str, items: list[tuple[str, float]], *, width: int = 640, unit: str = "") -> Markup:
    """Horizontal bars, one per label."""
    bar_h, gap, left, right = 22, 8, 170, 70
    height = max(1, len(items)) * (bar_h + gap) + 40
    top = max((v for _, v in items), default=0) or 1
    span = width - left - right
    desc = "; ".join(f"{label}: {_fmt(v)}{unit}" for label, v in items) or "no data"
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'aria-labelledby="t-{id(items)} d-{id(items)}" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="t-{id(items)}">{escape(title)}</title><desc id="d-{id(items)}">{escape(desc)}</desc>',
        f'<text x="0" y="16" font-size="14" font-weight="600" fill="#1b1b1f">{escape(title)}</text>',
    ]
    for i, (label, v) in enumerate(items):
        y = 30 + i * (bar_h + gap)
        w = max(1.0, span * (v / top)) if v else 0
        parts.append(
            f'<text x="{left - 8}" y="{y + 15}" font-size="12" text-anchor="end" fill="#1b1b1f">{escape(label)}</text>'
            f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{PALETTE[0]}"/>'
            f'<text x="{left + w + 6:.1f}" y="{y + 15}" font-size="12" fill="#1b1b1f">{escape(_fmt(v))}{unit}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every value above went through escape()


def line_chart(title: str, days: list[str], series: dict[str, list[float]], *, width: int = 640) -> Markup:
    """One line per series over ``days`` (x axis), with a legend."""
    height, left, bottom, top_pad = 240, 50, 40, 40
    plot_w, plot_h = width - left - 20, height - bottom - top_pad
    top = max((v for vs in series.values() for v in vs), default=0) or 1
    n = max(1, len(days) - 1)
    desc = "; ".join(f"{name}: {', '.join(_fmt(v) for v in vs)}" for name, vs in series.items()) or "no data"
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'aria-labelledby="t-{id(series)} d-{id(series)}" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="t-{id(series)}">{escape(title)}</title><desc id="d-{id(series)}">{escape(desc)}</desc>',
        f'<text x="0" y="16" font-size="14" font-weight="600" fill="#1b1b1f">{escape(title)}</text>',
        f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{left + plot_w}" y2="{top_pad + plot_h}" stroke="#999"/>',
        f'<line x1="{left}" y1="{top_pad}" x2="{left}" y2="{top_pad + plot_h}" stroke="#999"/>',
        f'<text x="{left - 6}" y="{top_pad + 4}" font-size="11" text-anchor="end" fill="#555">{_fmt(top)}</text>',
        f'<text x="{left - 6}" y="{top_pad + plot_h}" font-size="11" text-anchor="end" fill="#555">0</text>',
    ]
    if days:
        parts.append(
            f'<text x="{left}" y="{height - 18}" font-size="11" fill="#555">{escape(days[0])}</text>'
            f'<text x="{left + plot_w}" y="{height - 18}" font-size="11" text-anchor="end" fill="#555">'
            f"{escape(days[-1])}</text>"
        )
    for k, (name, values) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        points = " ".join(
            f"{left + plot_w * i / n:.1f},{top_pad + plot_h - plot_h * (v / top):.1f}" for i, v in enumerate(values)
        )
        if points:
            parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.append(
            f'<rect x="{left + 10 + k * 150}" y="{height - 12}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{left + 24 + k * 150}" y="{height - 3}" font-size="12" fill="#1b1b1f">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every value above went through escape()
