"""Line charts, and a scatter of named points with interval whiskers, for report.html as inline SVG (no
JavaScript, no images to fetch).

Axes are laid out the way a plotting library's "nice" locator does it: each axis 5% wider than its data, ticks
inside it at multiples of 1, 2, 2.5 or 5 × 10^k (whole numbers on an iteration or step axis), every label printed
with the decimals its step needs, so no two labels read the same. A series with one point is drawn as a marker,
not a line, and the legend sits above the plot, never on the lines.
"""

from __future__ import annotations

import html
import math
from typing import Any

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"]
MULTIPLES = (1.0, 2.0, 2.5, 5.0, 10.0)
CHAR_WIDTH = 6.2  # px per character of a 10px label, to size margins and lay out the legend


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _decimals(step: float) -> int:
    """Decimals that print every multiple of ``step`` exactly (0.25 → 2, 0.2 → 1, 5 → 0)."""
    for digits in range(0, 12):
        if abs(round(step, digits) - step) < step * 1e-9:
            return digits
    return 12


def axis_range(lo: float, hi: float, integer: bool = False) -> tuple[float, float]:
    """The span an axis shows: the data's, 5% wider on each side; a single value is widened around it (by 10%, or
    by 1 for zero and on integer axes)."""
    lo, hi = min(lo, hi), max(lo, hi)
    if hi == lo:
        pad = 1.0 if integer or lo == 0 else abs(lo) * 0.1
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def nice_ticks(lo: float, hi: float, max_ticks: int = 7, integer: bool = False) -> tuple[list[float], float]:
    """Round tick values within [lo, hi] and their step: the multiples of the smallest step of 1, 2, 2.5 or 5 × 10^k
    that gives at most ``max_ticks`` of them (with ``integer`` a whole-number step, so an iteration axis never shows
    30.5; a range too narrow for two whole numbers falls back to fractions)."""
    magnitude = 10.0 ** math.floor(math.log10((hi - lo) / max_ticks))
    for scale in (magnitude, magnitude * 10, magnitude * 100):
        for multiple in MULTIPLES:
            step = multiple * scale
            if integer and (step < 1 or step != int(step)):
                continue
            first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
            if last - first + 1 <= max_ticks:
                if integer and last - first < 1:  # fewer than two whole numbers in range: use fractions
                    return nice_ticks(lo, hi, max_ticks)
                digits = _decimals(step)
                return [round(i * step, digits) for i in range(first, last + 1)], round(step, digits)
    raise AssertionError("unreachable: a step of 100 x (hi - lo) / max_ticks always fits")  # pragma: no cover


def tick_label(value: float, step: float) -> str:
    """``value`` with the decimals ``step`` needs and a true minus sign (−0.5, 30, 0.045)."""
    text = f"{value:.{_decimals(step)}f}"
    if text.startswith("-"):
        return text[1:] if float(text) == 0 else "−" + text[1:]
    return text


def series_style(index: int, style: dict | None = None) -> dict:
    """How a series is drawn: ``color`` (default: the palette's, by position), ``dash`` (an SVG dash array, "" =
    solid), ``width``, ``opacity``, ``markers`` (a dot at each point), ``legend`` (False: no legend entry, for a
    series that only backs another up); ``style`` overrides any of them."""
    return {"color": COLORS[index % len(COLORS)], "dash": "", "width": 1.8, "opacity": 1.0, "markers": False,
            "legend": True, **(style or {})}


def _legend(names: list[str], x: float, y: float, width: float,
            styles: list[dict] | None = None) -> tuple[list[str], int]:
    """Legend entries in rows from (x, y), wrapped at ``width``, each drawn as its series is; the SVG parts and the
    number of rows."""
    parts, row, cursor = [], 0, x
    for i, name in enumerate(names):
        entry = 22 + CHAR_WIDTH * len(name) + 14
        if cursor > x and cursor + entry > x + width:
            row, cursor = row + 1, x
        top = y + 14 * row
        look = styles[i] if styles else series_style(i)
        dash = f" stroke-dasharray='{look['dash']}'" if look["dash"] else ""
        parts.append(f"<line x1='{cursor:.0f}' y1='{top - 4}' x2='{cursor + 16:.0f}' y2='{top - 4}' "
                     f"stroke='{look['color']}' stroke-width='{look['width']}' stroke-opacity='{look['opacity']}'"
                     f"{dash}/>"
                     + (f"<circle cx='{cursor + 8:.0f}' cy='{top - 4}' r='2.5' fill='{look['color']}'/>"
                        if look["markers"] else "")
                     + f"<text x='{cursor + 20:.0f}' y='{top}' font-size='10'>{esc(name)}</text>")
        cursor += entry
    return parts, row + 1


def _frame(title: str, xlabel: str, legend: list[str], size: tuple[int, int], margins: tuple[float, ...], sx, sy,
           xticks: tuple[list[float], float], yticks: tuple[list[float], list[str]]) -> list[str]:
    """The SVG a chart draws its data into: the title, the legend, the y grid with its labels, the x ticks with
    theirs, both axes and the x label (``margins``: left, right, top, bottom; ``sx``/``sy`` map data to pixels)."""
    (width, height), (left, right, top, bottom) = size, margins
    parts = [f"<svg class='chart' xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
             f"role='img' aria-label='{esc(title)}'>",
             f"<text x='{width / 2}' y='17' text-anchor='middle' font-size='13' font-weight='bold'>{esc(title)}</text>",
             *legend]
    for value, label in zip(*yticks):
        parts.append(f"<line x1='{left}' y1='{sy(value):.1f}' x2='{width - right}' y2='{sy(value):.1f}' "
                     "stroke='#eee'/>")
        parts.append(f"<text x='{left - 4}' y='{sy(value) + 4:.1f}' text-anchor='end' font-size='10'>{label}</text>")
    values, step = xticks
    for value in values:
        parts.append(f"<line x1='{sx(value):.1f}' y1='{height - bottom}' x2='{sx(value):.1f}' "
                     f"y2='{height - bottom + 4}' stroke='#888'/>")
        parts.append(f"<text x='{sx(value):.1f}' y='{height - bottom + 15}' text-anchor='middle' "
                     f"font-size='10'>{tick_label(value, step)}</text>")
    return parts + [f"<line x1='{left}' y1='{height - bottom}' x2='{width - right}' y2='{height - bottom}' stroke='#888'/>",
              f"<line x1='{left}' y1='{top}' x2='{left}' y2='{height - bottom}' stroke='#888'/>",
              f"<text x='{(left + width - right) / 2}' y='{height - 8}' text-anchor='middle' "
              f"font-size='11'>{esc(xlabel)}</text>"]


def svg_chart(series: dict[str, list[tuple[float, float]]], title: str, xlabel: str, width: int = 520,
              height: int = 280, markers: bool = False, vlines: list[float] | None = None,
              integer_x: bool = False, styles: dict[str, dict] | None = None) -> str:
    """A line chart as inline SVG: round ticks, one polyline per series (a marker alone for a single point), the
    legend above the plot, optional vertical marks. ``integer_x`` for iteration and step axes; ``markers`` a dot at
    every point of every series; ``styles`` per series name, as :func:`series_style` reads them (a colour shared by
    the series of one method, dashes, a lighter fitted curve)."""
    clean = {name: [(x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y)] for name, pts in series.items()}
    points = [p for pts in clean.values() for p in pts]
    if not points:
        return ""
    x0, x1 = axis_range(min(p[0] for p in points), max(p[0] for p in points), integer=integer_x)
    y0, y1 = axis_range(min(p[1] for p in points), max(p[1] for p in points))
    (xticks, xstep), (yticks, ystep) = nice_ticks(x0, x1, integer=integer_x), nice_ticks(y0, y1)
    ylabels = [tick_label(v, ystep) for v in yticks]
    left, right, bottom = 14 + CHAR_WIDTH * max(len(t) for t in ylabels), 20, 42
    looks = [series_style(i, {"markers": markers, **(styles or {}).get(name, {})}) for i, name in enumerate(clean)]
    shown = [(name, look) for name, look in zip(clean, looks) if look["legend"]]
    legend, rows = (_legend([n for n, _ in shown], left, 36, width - left - right, [look for _, look in shown])
                    if len(clean) > 1 and shown else ([], 0))
    top = 30 + 14 * rows
    sx = lambda x: left + (x - x0) / (x1 - x0) * (width - left - right)  # noqa: E731
    sy = lambda y: height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)  # noqa: E731
    parts = _frame(title, xlabel, legend, (width, height), (left, right, top, bottom), sx, sy,
                   (xticks, xstep), (yticks, ylabels))
    for value in vlines or []:
        parts.append(f"<line x1='{sx(value):.1f}' y1='{top}' x2='{sx(value):.1f}' y2='{height - bottom}' "
                     "stroke='#d62728' stroke-dasharray='4 3'/>")
    for look, pts in zip(looks, clean.values()):
        color = look["color"]
        if len(pts) > 1:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
            dash = f" stroke-dasharray='{look['dash']}'" if look["dash"] else ""
            parts.append(f"<polyline fill='none' stroke='{color}' stroke-width='{look['width']}' "
                         f"stroke-opacity='{look['opacity']}'{dash} points='{path}'/>")
        if look["markers"] or len(pts) == 1:
            fade = f" fill-opacity='{look['opacity']}'" if look["opacity"] < 1 else ""
            parts += [f"<circle cx='{sx(x):.1f}' cy='{sy(y):.1f}' r='3' fill='{color}'{fade}/>" for x, y in pts]
    parts.append("</svg>")
    return "".join(parts)



def svg_scatter(points: dict[str, dict[str, float]], title: str, xlabel: str, ylabel: str, width: int = 520,
                height: int = 320) -> str:
    """One marker per named point with interval whiskers, as inline SVG: ``points`` maps a name to ``x``, ``y`` and
    optionally ``x_low`` / ``x_high`` (a horizontal whisker) and ``y_low`` / ``y_high`` (a vertical one). Each point
    is a ``<g class='point'>`` carrying its name and values (``data-model``, ``data-x``, ``data-y``) and a tooltip;
    the axes span the points and their whiskers, laid out as :func:`svg_chart`'s; the legend sits above the plot.
    Empty when no point is finite."""
    clean = {name: p for name, p in points.items() if math.isfinite(p["x"]) and math.isfinite(p["y"])}
    if not clean:
        return ""
    xs = [v for p in clean.values() for k, v in p.items() if k[0] == "x" and math.isfinite(v)]
    ys = [v for p in clean.values() for k, v in p.items() if k[0] == "y" and math.isfinite(v)]
    x0, x1 = axis_range(min(xs), max(xs))
    y0, y1 = axis_range(min(ys), max(ys))
    (xticks, xstep), (yticks, ystep) = nice_ticks(x0, x1), nice_ticks(y0, y1)
    ylabels = [tick_label(v, ystep) for v in yticks]
    left, right, bottom = 30 + CHAR_WIDTH * max(len(t) for t in ylabels), 20, 42
    looks = [series_style(i, {"markers": True}) for i in range(len(clean))]
    legend, rows = _legend(list(clean), left, 36, width - left - right, looks)
    top = 30 + 14 * rows
    sx = lambda x: left + (x - x0) / (x1 - x0) * (width - left - right)  # noqa: E731
    sy = lambda y: height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)  # noqa: E731
    parts = _frame(title, xlabel, legend, (width, height), (left, right, top, bottom), sx, sy,
                   (xticks, xstep), (yticks, ylabels))
    middle = (top + height - bottom) / 2
    parts += [f"<text x='12' y='{middle:.1f}' text-anchor='middle' font-size='11' "
              f"transform='rotate(-90 12 {middle:.1f})'>{esc(ylabel)}</text>"]
    for look, (name, p) in zip(looks, clean.items()):
        color, cx, cy = look["color"], sx(p["x"]), sy(p["y"])
        tip = f"{name}: {xlabel} {p['x']:.3f}, {ylabel} {p['y']:.3f}"
        group = [f"<g class='point' data-model='{esc(name)}' data-x='{p['x']!r}' data-y='{p['y']!r}'>"
                 f"<title>{esc(tip)}</title>"]
        if "x_low" in p and "x_high" in p:
            group.append(f"<line class='whisker-x' x1='{sx(p['x_low']):.1f}' y1='{cy:.1f}' x2='{sx(p['x_high']):.1f}' "
                         f"y2='{cy:.1f}' stroke='{color}' stroke-width='1.5'/>")
        if "y_low" in p and "y_high" in p:
            group.append(f"<line class='whisker-y' x1='{cx:.1f}' y1='{sy(p['y_low']):.1f}' x2='{cx:.1f}' "
                         f"y2='{sy(p['y_high']):.1f}' stroke='{color}' stroke-width='1.5'/>")
        group.append(f"<circle cx='{cx:.1f}' cy='{cy:.1f}' r='4' fill='{color}'/></g>")
        parts.append("".join(group))
    parts.append("</svg>")
    return "".join(parts)
