"""Small inline-SVG plots generated in Python (no matplotlib, no JavaScript library).

Every plot is an ``<svg class="plot">`` element meant to be inlined into an HTML page (no
``xmlns`` needed there, so the page holds no URL at all). Every text that can come from data
(series names, labels, titles) goes through :func:`esc`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

#: Series colours: baseline (grey-blue), candidate (blue), then extras for trends.
PALETTE = ("#64748b", "#2563eb", "#d97706", "#059669", "#7c3aed", "#db2777")
W, H = 520, 320
ML, MR, MT, MB = 64, 18, 46, 48  # margins: left, right, top, bottom


def esc(x: object) -> str:
    """HTML/SVG-escape any value (quotes too)."""
    return html.escape(str(x), quote=True)


def _id(plot_id: str) -> str:
    return f' id="{esc(plot_id)}"' if plot_id else ""


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def _vals(seq: Sequence[float | None]) -> list[float]:
    return [float(v) for v in seq if v is not None and _finite(v)]


@dataclass
class Series:
    """One line (or set of points) of a plot."""

    name: str
    x: Sequence[float | None]
    y: Sequence[float | None]
    color: str = PALETTE[0]
    dash: str = ""  # e.g. "6 4"
    markers: bool = False
    line: bool = True


@dataclass
class Marker:
    """A vertical (``axis='x'``) or horizontal (``axis='y'``) reference line with a label."""

    value: float
    label: str
    axis: str = "x"
    color: str = "#111827"
    dash: str = "4 3"


@dataclass
class Point:
    """A labelled point (e.g. p95 on a CDF)."""

    x: float
    y: float
    label: str
    color: str = "#111827"
    left: bool = False  # put the label left of the point (to avoid overlapping labels)


@dataclass
class Plot:
    """A line plot: series, optional reference lines and points, axis labels."""

    title: str
    x_label: str
    y_label: str
    series: list[Series] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    x_range: tuple[float, float] | None = None
    y_range: tuple[float, float] | None = None
    diagonal: bool = False
    plot_id: str = ""
    #: categorical x axis: (position, label) pairs replace the numeric ticks
    x_ticks: list[tuple[float, str]] | None = None


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    ticks: list[float] = []
    t = start
    while t <= hi + step * 1e-9 and len(ticks) < 50:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _compact(v: float, digits: int) -> str:
    """``v`` with ``digits`` significant digits, exponent without '+' and leading zeros."""
    s = f"{v:.{digits}g}"
    if "e" in s:
        mant, exp = s.split("e")
        s = f"{mant}e{int(exp)}"
    return s


def _tick_label(v: float, digits: int = 3) -> str:
    """A short axis label: ``0.25``, ``450``, ``12,500``, ``4.9e11``, ``1e-6``.

    Like the tables (:func:`..common.fmt_num`), magnitudes of 1e6 and above
    (and below 1e-4)
    use an exponent, so a label always fits the left margin of a plot.
    """
    av = abs(v)
    if av == 0:
        return "0"
    if av >= 1e6 or av < 1e-4:
        return _compact(v, digits)
    if av >= 1000:
        return f"{v:,.0f}"
    if av >= 1:
        return f"{v:.{max(digits, 4)}g}"
    return f"{v:.{digits}g}"


def tick_labels(ticks: Sequence[float]) -> list[str]:
    """Labels for ``ticks``: as short as possible while still telling the ticks apart."""
    labels = [_tick_label(t) for t in ticks]
    for digits in range(4, 10):
        if len(set(labels)) == len(labels):
            break
        labels = [_tick_label(t, digits) for t in ticks]
    return labels


def value_label(v: float) -> str:
    """A reference value in a label (``max 800``, ``min 0.9``, ``max 1e-6``)."""
    return _compact(v, 6) if abs(v) >= 1e6 or 0 < abs(v) < 1e-4 else f"{v:.6g}"


#: At most this many labels on a categorical x axis (model versions ...).
MAX_X_LABELS = 12
_CHAR_W = 6.2  # about the width of one 11px tick character


def thin_ticks(ticks: Sequence[tuple[float, str]], width: float,
               max_labels: int = MAX_X_LABELS) -> list[tuple[float, str]]:
    """A subset of categorical ticks that fits ``width`` px: evenly spaced, first and last kept.

    At most ``max_labels``, fewer when the labels are long (up to 14 characters are drawn).
    """
    ticks = list(ticks)
    if len(ticks) <= 2:
        return ticks
    longest = max(min(len(tl), 14) for _, tl in ticks)
    fit = int(width // (longest * _CHAR_W + 8))
    k = max(2, min(max_labels, fit))
    if len(ticks) <= k:
        return ticks
    idx = sorted({round(i * (len(ticks) - 1) / (k - 1)) for i in range(k)})
    return [ticks[i] for i in idx]


def _extent(values: list[float]) -> tuple[float, float]:
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        return lo - pad, hi + pad
    return lo, hi


def render_plot(p: Plot) -> str:
    """A :class:`Plot` -> an ``<svg class="plot">`` string."""
    xs = [v for s in p.series for v in _vals(s.x)]
    ys = [v for s in p.series for v in _vals(s.y)]
    xs += [m.value for m in p.markers if m.axis == "x" and _finite(m.value)]
    ys += [m.value for m in p.markers if m.axis == "y" and _finite(m.value)]
    x0, x1 = p.x_range or _extent(xs)
    y0, y1 = p.y_range or _extent(ys)
    if p.y_range is None and y0 > 0 and y0 < 0.25 * y1:
        y0 = 0.0  # start at zero when it costs little
    pw, ph = W - ML - MR, H - MT - MB

    def sx(v: float) -> float:
        return ML + (v - x0) / (x1 - x0 or 1.0) * pw

    def sy(v: float) -> float:
        return MT + ph - (v - y0) / (y1 - y0 or 1.0) * ph

    out: list[str] = [
        f'<svg class="plot"{_id(p.plot_id)} viewBox="0 0 {W} {H}" width="{W}" '
        f'height="{H}" role="img" aria-label="{esc(p.title)}">',
        f'<title>{esc(p.title)}</title>',
        f'<text x="{ML}" y="18" class="ptitle">{esc(p.title)}</text>',
        f'<rect x="{ML}" y="{MT}" width="{pw}" height="{ph}" class="frame"/>',
    ]
    if p.x_ticks is not None:
        xticks = thin_ticks([(t, tl) for t, tl in p.x_ticks
                             if x0 - 1e-12 <= t <= x1 + 1e-12], pw)
    else:
        xt = nice_ticks(x0, x1)
        xticks = list(zip(xt, tick_labels(xt), strict=True))
    for t, tl in xticks:
        if x0 - 1e-12 <= t <= x1 + 1e-12:
            X = sx(t)
            tl = tl if len(tl) <= 14 else tl[:13] + "…"
            out.append(f'<line x1="{X:.1f}" y1="{MT}" x2="{X:.1f}" y2="{MT + ph}" class="grid"/>')
            out.append(f'<text x="{X:.1f}" y="{MT + ph + 16}" class="tick" '
                       f'text-anchor="middle">{esc(tl)}</text>')
    yt = [t for t in nice_ticks(y0, y1) if y0 - 1e-12 <= t <= y1 + 1e-12]
    for t, tl in zip(yt, tick_labels(yt), strict=True):
        Y = sy(t)
        out.append(f'<line x1="{ML}" y1="{Y:.1f}" x2="{ML + pw}" y2="{Y:.1f}" class="grid"/>')
        out.append(f'<text x="{ML - 6}" y="{Y + 4:.1f}" class="tick" '
                   f'text-anchor="end">{esc(tl)}</text>')
    out.append(f'<text x="{ML + pw / 2:.1f}" y="{H - 8}" class="axis" '
               f'text-anchor="middle">{esc(p.x_label)}</text>')
    out.append(f'<text x="14" y="{MT + ph / 2:.1f}" class="axis" text-anchor="middle" '
               f'transform="rotate(-90 14 {MT + ph / 2:.1f})">{esc(p.y_label)}</text>')
    if p.diagonal:
        lo, hi = max(x0, y0), min(x1, y1)
        out.append(f'<line x1="{sx(lo):.1f}" y1="{sy(lo):.1f}" x2="{sx(hi):.1f}" '
                   f'y2="{sy(hi):.1f}" class="diag"/>')
    for s in p.series:
        pts = [(sx(float(a)), sy(float(b))) for a, b in zip(s.x, s.y, strict=False)
               if a is not None and b is not None and _finite(a) and _finite(b)]
        if not pts:
            continue
        dash = f' stroke-dasharray="{esc(s.dash)}"' if s.dash else ""
        if s.line and len(pts) > 1:
            d = " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)
            out.append(f'<polyline class="series" data-series="{esc(s.name)}" points="{d}" '
                       f'fill="none" stroke="{esc(s.color)}" stroke-width="2"{dash}/>')
        if s.markers or len(pts) == 1:
            for a, b in pts:
                out.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{esc(s.color)}"/>')
    for m in p.markers:
        if not _finite(m.value):
            continue
        if m.axis == "x":
            X = sx(m.value)
            out.append(f'<line x1="{X:.1f}" y1="{MT}" x2="{X:.1f}" y2="{MT + ph}" '
                       f'stroke="{esc(m.color)}" stroke-dasharray="{esc(m.dash)}" class="marker"/>')
            out.append(f'<text x="{X + 3:.1f}" y="{MT + 12}" class="mlabel" '
                       f'fill="{esc(m.color)}">{esc(m.label)}</text>')
        else:
            Y = sy(m.value)
            out.append(f'<line x1="{ML}" y1="{Y:.1f}" x2="{ML + pw}" y2="{Y:.1f}" '
                       f'stroke="{esc(m.color)}" stroke-dasharray="{esc(m.dash)}" class="marker"/>')
            out.append(f'<text x="{ML + pw - 4}" y="{Y - 4:.1f}" class="mlabel" '
                       f'text-anchor="end" fill="{esc(m.color)}">{esc(m.label)}</text>')
    for pt in p.points:
        if _finite(pt.x) and _finite(pt.y):
            X, Y = sx(pt.x), sy(pt.y)
            out.append(f'<circle cx="{X:.1f}" cy="{Y:.1f}" r="4" fill="none" '
                       f'stroke="{esc(pt.color)}" stroke-width="1.5"/>')
            tx, anchor = (X - 6, "end") if pt.left else (X + 6, "start")
            out.append(f'<text x="{tx:.1f}" y="{Y + (-6 if pt.left else 12):.1f}" '
                       f'class="mlabel" text-anchor="{anchor}" '
                       f'fill="{esc(pt.color)}">{esc(pt.label)}</text>')
    if len(p.series) > 1:
        out.append(_legend([(s.name, s.color, s.dash) for s in p.series]))
    out.append("</svg>")
    return "\n".join(out)


def _legend(items: list[tuple[str, str, str]]) -> str:
    """One row under the title, left-aligned with the plot frame."""
    parts = []
    x = float(ML)
    room = (W - ML - MR) / max(len(items), 1) - 30
    for name, color, dash in items:
        chars = max(int(room / 6.2), 6)
        label = name if len(name) <= chars else name[:chars - 1] + "…"
        d = f' stroke-dasharray="{esc(dash)}"' if dash else ""
        parts.append(f'<line x1="{x:.1f}" y1="30" x2="{x + 16:.1f}" y2="30" stroke="{esc(color)}" '
                     f'stroke-width="2"{d}/>'
                     f'<text x="{x + 20:.1f}" y="34" class="legend">{esc(label)}</text>')
        x += 30 + 6.2 * len(label)
    return '<g class="legend">' + "".join(parts) + "</g>"


def bar_chart(title: str, y_label: str, bars: list[tuple[str, float | None, str]],
              plot_id: str = "", value_fmt: str = "{:.4g}") -> str:
    """Vertical bars ``(label, value, colour)``; missing values are drawn as 'n/a'."""
    pw, ph = W - ML - MR, H - MT - MB
    vals = _vals([v for _, v, _ in bars])
    hi = max(vals + [0.0]) * 1.15 or 1.0
    lo = min(vals + [0.0])
    out = [f'<svg class="plot"{_id(plot_id)} viewBox="0 0 {W} {H}" width="{W}" '
           f'height="{H}" role="img" aria-label="{esc(title)}">',
           f'<title>{esc(title)}</title>',
           f'<text x="{ML}" y="18" class="ptitle">{esc(title)}</text>',
           f'<rect x="{ML}" y="{MT}" width="{pw}" height="{ph}" class="frame"/>']

    def sy(v: float) -> float:
        return MT + ph - (v - lo) / (hi - lo or 1.0) * ph

    yt = nice_ticks(lo, hi)
    for t, tl in zip(yt, tick_labels(yt), strict=True):
        Y = sy(t)
        out.append(f'<line x1="{ML}" y1="{Y:.1f}" x2="{ML + pw}" y2="{Y:.1f}" class="grid"/>')
        out.append(f'<text x="{ML - 6}" y="{Y + 4:.1f}" class="tick" '
                   f'text-anchor="end">{esc(tl)}</text>')
    n = max(len(bars), 1)
    slot = pw / n
    bw = min(90.0, slot * 0.6)
    for i, (label, v, color) in enumerate(bars):
        cx = ML + slot * (i + 0.5)
        out.append(f'<text x="{cx:.1f}" y="{MT + ph + 16}" class="tick" '
                   f'text-anchor="middle">{esc(label)}</text>')
        if v is not None and _finite(v):
            fv = float(v)
            top, base = sy(max(fv, 0.0)), sy(min(fv, 0.0))
            out.append(f'<rect class="bar" x="{cx - bw / 2:.1f}" y="{top:.1f}" width="{bw:.1f}" '
                       f'height="{max(base - top, 0.5):.1f}" fill="{esc(color)}"/>')
            out.append(f'<text x="{cx:.1f}" y="{top - 5:.1f}" class="mlabel" '
                       f'text-anchor="middle">{esc(value_fmt.format(fv))}</text>')
        else:
            out.append(f'<text x="{cx:.1f}" y="{MT + ph / 2:.1f}" class="mlabel" '
                       f'text-anchor="middle">n/a</text>')
    out.append(f'<text x="14" y="{MT + ph / 2:.1f}" class="axis" text-anchor="middle" '
               f'transform="rotate(-90 14 {MT + ph / 2:.1f})">{esc(y_label)}</text>')
    out.append("</svg>")
    return "\n".join(out)
