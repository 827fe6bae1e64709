"""HTML building blocks shared by the comparison, single-run and trend reports.

Each block takes plain data (a run's ``details`` dict, metric rows ...) and returns an HTML
fragment; every value from data is escaped with :func:`esc`. A block whose data is missing
returns a short "not available" note instead of failing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .common import abbreviate, fmt_metric, fmt_num
from .svg import (
    PALETTE,
    Marker,
    Plot,
    Point,
    Series,
    bar_chart,
    esc,
    render_plot,
    value_label,
)

SUMMARY_ONLY = "not available (summary-only runs)"


@dataclass
class Side:
    """One run as drawn in plots: its display name, its details, its line style."""

    name: str
    details: dict[str, Any]
    color: str = PALETTE[1]
    dash: str = ""


def _f(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _get(d: Any, key: str) -> Any:
    return d.get(key) if isinstance(d, dict) else None


def na(what: str, why: str = SUMMARY_ONLY) -> str:
    """A 'not available' figure placeholder."""
    return (f'<div class="na"><strong>{esc(what)}</strong>: {esc(why)}</div>')


def figure(svg: str, caption: str = "") -> str:
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure class="fig">{svg}{cap}</figure>'


# -- plots -----------------------------------------------------------------------------------
def reliability_plot(sides: Sequence[Side]) -> str:
    """Reliability diagram: per-bin accuracy against mean confidence, with the diagonal."""
    series = []
    for s in sides:
        rel = _get(s.details, "reliability")
        acc, conf = _get(rel, "accuracy"), _get(rel, "confidence")
        if not isinstance(acc, list) or not isinstance(conf, list):
            continue
        n_bins = len(acc)
        # bins with no examples have None; use the bin centre for x when confidence is missing
        xs = [_f(c) if _f(c) is not None else (i + 0.5) / max(n_bins, 1)
              for i, c in enumerate(conf)]
        ys = [_f(a) for a in acc]
        series.append(Series(s.name, xs, ys, s.color, s.dash, markers=True))
    if not series:
        return na("Reliability diagram")
    plot = Plot("Reliability diagram", "confidence", "accuracy", series,
                x_range=(0.0, 1.0), y_range=(0.0, 1.0), diagonal=True, plot_id="plot-reliability")
    return figure(render_plot(plot), "Per-bin accuracy vs confidence (15 bins); on the "
                  "diagonal = calibrated, below = over-confident.")


def _threshold_of(details: dict[str, Any]) -> tuple[float | None, str]:
    rec = _get(details, "threshold_recommendation")
    if isinstance(rec, dict) and _f(rec.get("threshold")) is not None:
        if rec.get("found") is False:  # none meets the risk target: the closest, not a pick
            return _f(rec.get("threshold")), "closest threshold (none meets the risk target)"
        return _f(rec.get("threshold")), "recommended threshold"
    if _f(rec) is not None:
        return _f(rec), "recommended threshold"
    thr = _f(_get(details, "fallback_threshold"))
    return thr, "fallback threshold"


def _coverage_at(rc: dict[str, Any], thr: float) -> tuple[float | None, float | None]:
    """Coverage and risk where confidence >= ``thr`` on a risk–coverage curve."""
    cov, risk, th = rc.get("coverage"), rc.get("risk"), rc.get("threshold")
    if not (isinstance(cov, list) and isinstance(risk, list) and isinstance(th, list)):
        return None, None
    best: tuple[float | None, float | None] = (0.0, None)
    for c, r, t in zip(cov, risk, th, strict=False):
        if _f(t) is not None and float(t) >= thr and _f(c) is not None:
            if best[0] is None or float(c) >= float(best[0]):
                best = (float(c), _f(r))
    return best


def risk_coverage_plot(sides: Sequence[Side]) -> str:
    """Risk (error rate among answered) against coverage, the chosen threshold marked."""
    series, points, labels = [], [], []
    for k, s in enumerate(sides):
        rc = _get(s.details, "risk_coverage")
        if not isinstance(rc, dict) or not isinstance(rc.get("coverage"), list):
            continue
        series.append(Series(s.name, rc["coverage"], rc.get("risk") or [], s.color, s.dash))
        thr, what = _threshold_of(s.details)
        if thr is not None:
            c, r = _coverage_at(rc, thr)
            if c is not None and r is not None:
                points.append(Point(c, r, f"t={thr:.2f}", s.color,
                                    left=k == 0 and len(sides) > 1))
                labels.append(f"{s.name}: {what} {thr:.3g} → coverage {c:.1%}, risk {r:.1%}")
    if not series:
        return na("Risk–coverage curve")
    plot = Plot("Risk–coverage", "coverage (share answered)", "risk (error rate)", series,
                points=points, x_range=(0.0, 1.0), plot_id="plot-risk-coverage")
    caption = "; ".join(labels) or "Examples sorted by confidence, most confident first."
    return figure(render_plot(plot), caption)


def _nearest(q: list[Any], want: float) -> int:
    """Index of the entry of ``q`` closest to ``want``."""
    best, best_d = 0, math.inf
    for j, x in enumerate(q):
        fx = _f(x)
        if fx is not None and abs(fx - want) < best_d:
            best, best_d = j, abs(fx - want)
    return best


def latency_plot(sides: Sequence[Side]) -> str:
    """Latency CDF from the stored quantiles, p50/p95/p99 marked per run."""
    series, points, labels = [], [], []
    for k, s in enumerate(sides):
        lq = _get(s.details, "latency_quantiles")
        q, v = _get(lq, "q"), _get(lq, "value")
        if not isinstance(q, list) or not isinstance(v, list) or not v:
            continue
        series.append(Series(s.name, v, q, s.color, s.dash))
        marks = []
        for want in (0.5, 0.95, 0.99):
            i = _nearest(q, want)
            val = _f(v[i]) if i < len(v) else None
            if val is not None:
                points.append(Point(val, want, f"p{round(want * 100)}", s.color,
                                    left=k == 0 and len(sides) > 1))
                marks.append(f"p{round(want * 100)} {fmt_num(val)}")
        labels.append(f"{s.name}: {', '.join(marks)} ms")
    if not series:
        return na("Latency distribution", "not available (no latency_ms column or "
                  "summary-only runs)")
    plot = Plot("Latency CDF", "latency (ms)", "share of queries ≤ x", series, points=points,
                y_range=(0.0, 1.0), plot_id="plot-latency")
    return figure(render_plot(plot), "; ".join(labels))


def cost_plot(bars: Sequence[tuple[str, float | None]], why: str | None = None) -> str:
    """Cost per query, one bar per run."""
    if not bars or all(_f(v) is None for _, v in bars):
        return na("Cost per query", why or "not available (no cost_usd column)")
    colored = [(name, _f(v), PALETTE[i % len(PALETTE)] if len(bars) > 2 else PALETTE[i])
               for i, (name, v) in enumerate(bars)]
    return figure(bar_chart("Cost per query (USD)", "USD per query", colored,
                            plot_id="plot-cost", value_fmt="${:.4g}"))


def trend_plot(metric: str, versions: Sequence[str], values: Sequence[float | None],
               bounds: Sequence[tuple[str, float]], plot_id: str) -> str:
    """One metric across model versions (x = version index), guardrail bounds drawn.

    With many versions the axis labels only some of them (first and last always), and the
    caption names the first and last few.
    """
    xs = list(range(len(versions)))
    markers = [Marker(v, f"{k} {value_label(v)}", axis="y", color="#dc2626") for k, v in bounds]
    plot = Plot(metric, "model version (oldest → newest)", metric,
                [Series(metric, xs, list(values), PALETTE[1], markers=True)], markers=markers,
                x_range=(-0.3, max(len(versions) - 0.7, 0.7)), plot_id=plot_id,
                x_ticks=[(float(i), str(v)) for i, v in enumerate(versions)])
    return figure(render_plot(plot), "versions: " + abbreviate([str(v) for v in versions]))


# -- tables ----------------------------------------------------------------------------------
def _aligned(conf: dict[str, Any], labels: list[str]) -> list[list[int]] | None:
    lab, mat = conf.get("labels"), conf.get("matrix")
    if not isinstance(lab, list) or not isinstance(mat, list):
        return None
    idx = {str(x): i for i, x in enumerate(lab)}
    out = [[0] * len(labels) for _ in labels]
    for i, a in enumerate(labels):
        for j, b in enumerate(labels):
            if a in idx and b in idx:
                try:
                    out[i][j] = int(mat[idx[a]][idx[b]])
                except (IndexError, TypeError, ValueError):
                    return None
    return out


def confusion_table(base: dict[str, Any] | None, cand: dict[str, Any] | None,
                    max_labels: int = 30) -> str:
    """Candidate minus baseline counts (rows = label, columns = prediction), labels aligned.

    With only one side, that side's counts are shown.
    """
    cb, cc = _get(base, "confusion"), _get(cand, "confusion")
    sides = [c for c in (cb, cc) if isinstance(c, dict) and isinstance(c.get("labels"), list)]
    if not sides:
        return na("Confusion matrix")
    labels: list[str] = []
    for c in sides:
        for x in c["labels"]:
            if str(x) not in labels:
                labels.append(str(x))
    if len(labels) > max_labels:
        return na("Confusion matrix", f"{len(labels)} labels: too many to draw "
                  f"(limit {max_labels})")
    diff_mode = len(sides) == 2
    mb = _aligned(sides[0], labels)
    mc = _aligned(sides[-1], labels)
    if mb is None or mc is None:
        return na("Confusion matrix", "malformed confusion data")
    mat = ([[mc[i][j] - mb[i][j] for j in range(len(labels))] for i in range(len(labels))]
           if diff_mode else mc)
    peak = max((abs(v) for row in mat for v in row), default=0) or 1
    head = "".join(f"<th>{esc(b)}</th>" for b in labels)
    rows = []
    for i, a in enumerate(labels):
        cells = []
        for j in range(len(labels)):
            v = mat[i][j]
            good = (v > 0) == (i == j)  # more on the diagonal / fewer off it = better
            alpha = 0.08 + 0.6 * abs(v) / peak if v else 0
            color = f"rgba(22,163,74,{alpha:.2f})" if good else f"rgba(220,38,38,{alpha:.2f})"
            txt = f"{v:+d}" if diff_mode and v else str(v)
            style = f' style="background:{color}"' if diff_mode and v else ""
            cells.append(f"<td{style}>{esc(txt)}</td>")
        rows.append(f"<tr><th>{esc(a)}</th>{''.join(cells)}</tr>")
    title = ("Candidate − baseline counts (rows: label, columns: prediction). Green = better "
             "(more correct, fewer confusions), red = worse." if diff_mode
             else "Counts (rows: label, columns: prediction).")
    return (f'<p class="note">{esc(title)}</p><div class="scroll"><table class="confusion">'
            f'<thead><tr><th>label \\ prediction</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def metrics_table(metrics: Mapping[str, float | None]) -> str:
    """Name / value table of one run's metrics."""
    if not metrics:
        return na("Metrics", "the run has no metrics")
    rows = "".join(f"<tr><td class=\"metric\">{esc(k)}</td><td class=\"num\">"
                   f"{esc(fmt_metric(k, v))}</td></tr>" for k, v in metrics.items())
    return (f'<table class="grid"><thead><tr><th>metric</th><th>value</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>")
