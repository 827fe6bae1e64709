"""Trend report: each guardrailed metric across a model's versions (``aipm report --model``).

One point per model version (the newest run of that version), oldest to newest, with the
guardrail's absolute bounds drawn, and the step-to-step change, so a PM sees whether
improvement is flattening. HTML (inline SVG, same page shell as the other reports) and
markdown.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..schema import RunRecord
from .blocks import trend_plot
from .common import abbreviate, fmt_metric, fmt_num, version_label
from .markdown import md_escape
from .svg import esc

#: Version columns of the markdown trend table (the newest ones).
MD_VERSIONS = 10


@dataclass
class TrendMetric:
    """One metric's values across versions, with its guardrail (if any)."""

    metric: str
    direction: str
    values: list[float | None]
    bounds: list[tuple[str, float]] = field(default_factory=list)  # ("min", 0.9) ...
    guardrail: str = ""

    def steps(self) -> list[float | None]:
        """Change from each version to the next (None where a value is missing)."""
        v = self.values
        return [None if a is None or b is None else b - a for a, b in zip(v, v[1:], strict=False)]

    def note(self) -> str:
        """A one-line reading of the trend (improving / flattening / worsening)."""
        steps = [s for s in self.steps() if s is not None]
        if not steps:
            return "one version only" if len(self.values) < 2 else "not enough data"
        sign = -1.0 if self.direction == "lower" else 1.0
        gains = [sign * s for s in steps]
        last = gains[-1]
        if self.direction == "info":
            reading = f"last change {fmt_num(steps[-1], signed=True)}"
        else:
            reading = self._reading(steps, gains, last)
        if self.values[-1] is None:
            return f"no value in the newest version; before that: {reading}"
        return reading

    def _reading(self, steps: list[float], gains: list[float], last: float) -> str:
        sign = -1.0 if self.direction == "lower" else 1.0
        scale = max((abs(v) for v in self.values if v is not None), default=0.0)
        if abs(last) <= 1e-12 * scale:  # equal up to float rounding
            return "unchanged in the last version"
        if last < 0:
            return f"worse in the last version ({fmt_num(steps[-1], signed=True)})"
        earlier = [g for g in gains[:-1] if g > 0]
        if earlier and last < 0.25 * (sum(earlier) / len(earlier)):
            return (f"improvement flattening: last step {fmt_num(steps[-1], signed=True)} vs "
                    f"mean earlier gain {fmt_num(sign * sum(earlier) / len(earlier), signed=True)}")
        return f"improving (last step {fmt_num(steps[-1], signed=True)})"


@dataclass
class Trend:
    """A model's versions and its metrics across them."""

    model: str
    versions: list[str]
    runs: list[str]  # run refs/names, one per version
    metrics: list[TrendMetric]
    guardrails_name: str | None = None


def _finite(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


#: A version that orders as numbers: ``3``, ``v2``, ``1.10.2`` (``1.10`` after ``1.9``).
_NUMERIC_VERSION = re.compile(r"^[vV]?(\d+(?:\.\d+)*)$")


def _numeric_version(v: str) -> tuple[int, ...] | None:
    m = _NUMERIC_VERSION.match(v.strip())
    return tuple(int(x) for x in m.group(1).split(".")) if m else None


def latest_per_version(runs: Iterable[RunRecord]) -> list[RunRecord]:
    """The newest run of each model version, oldest version first.

    Versions that all read as numbers (``1``, ``v2``, ``1.10.2``) are ordered as numbers, so
    re-evaluating an old version (a baseline refresh) does not move it to the end. Otherwise
    (git hashes, names) a version's place is when it was first logged."""
    best: dict[str, RunRecord] = {}
    first: dict[str, str] = {}
    for r in runs:
        key = r.model.version or r.name
        created = r.created_at or ""
        if key not in best or created > (best[key].created_at or ""):
            best[key] = r
        if key not in first or created < first[key]:
            first[key] = created
    nums = {k: _numeric_version(k) if k else None for k in best}
    if all(n is not None for n in nums.values()):
        return [best[k] for k in sorted(best, key=lambda k: (nums[k], first[k]))]
    return [best[k] for k in sorted(best, key=lambda k: first[k])]


def build_trend(model: str, runs: Sequence[RunRecord], guardrails: Any = None,
                registry: Any = None) -> Trend:
    """Trend of ``model``: guardrailed metrics (or every registry metric the runs have)."""
    picked = latest_per_version(runs)
    versions = [version_label(r.model.version) if r.model.version else r.name for r in picked]
    metrics: list[TrendMetric] = []
    if guardrails is not None:
        for g in guardrails.guardrails:
            bounds = [(k, float(v)) for k, v in (("min", g.min), ("max", g.max))
                      if v is not None]
            metrics.append(TrendMetric(g.metric, g.direction,
                                       [_finite(r.metric(g.metric)) for r in picked],
                                       bounds, g.describe()))
    else:
        if registry is None:
            from ..metrics import default_registry

            registry = default_registry()
        names: list[str] = []
        for r in picked:
            for k in r.metrics:
                if k not in names and "[" not in k:  # per-slice metrics: only when guardrailed
                    names.append(k)
        for name in names:
            d = registry.get(name)
            if d is None or d.direction == "info":  # unknown direction: nothing to read
                continue
            direction = d.direction
            metrics.append(TrendMetric(name, direction,
                                       [_finite(r.metric(name)) for r in picked]))
    return Trend(model, versions, [r.ref or r.name for r in picked], metrics,
                 getattr(guardrails, "name", None))


def render_trend_html(t: Trend) -> str:
    """Trend -> a self-contained HTML page."""
    from .html import page

    parts = [f'<div class="banner info" id="verdict"><h1>{esc(t.model)}: '
             f"{len(t.versions)} version{'s' if len(t.versions) != 1 else ''}</h1>"
             f'<div class="sub">{esc(abbreviate(t.versions))}'
             + (f" · guardrails {esc(t.guardrails_name)}" if t.guardrails_name else "")
             + "</div></div>"]
    if not t.versions:
        parts.append('<p class="muted">No runs of this model in the store.</p>')
        return page(f"aipm trend: {t.model}", "\n".join(parts))
    head = "".join(f"<th>{esc(v)}</th>" for v in t.versions)
    rows = []
    for m in t.metrics:
        cells = "".join(f'<td class="num">{esc(fmt_metric(m.metric, v))}</td>'
                        for v in m.values)
        rows.append(f'<tr><td class="metric">{esc(m.metric)}</td><td>{esc(m.guardrail)}</td>'
                    f"{cells}<td>{esc(m.note())}</td></tr>")
    parts += ["<h2>Metrics by version</h2>",
              f'<div class="scroll"><table class="grid" id="trend"><thead><tr><th>metric</th>'
              f"<th>guardrail</th>{head}<th>trend</th></tr></thead>"
              f"<tbody>{''.join(rows)}</tbody></table></div>"]
    figs = [trend_plot(m.metric, t.versions, m.values, m.bounds, f"plot-trend-{i}")
            for i, m in enumerate(t.metrics)]
    parts += ["<h2>Plots</h2>", '<div class="plots">' + "".join(figs) + "</div>"]
    return page(f"aipm trend: {t.model}", "\n".join(parts))


def render_trend_markdown(t: Trend) -> str:
    """Trend -> markdown (a table metric × version and a one-line reading per metric)."""
    n = len(t.versions)
    lines = [f"### aipm trend: {md_escape(t.model)} ({n} version{'s' if n != 1 else ''})", ""]
    if not t.versions:
        return "\n".join(lines + ["_No runs of this model in the store._", ""])
    # one column per version: the newest MD_VERSIONS only, so a model with hundreds of
    # versions still gives a readable table (the trend reading uses every version)
    first = max(0, n - MD_VERSIONS)
    head = " | ".join(md_escape(v) for v in t.versions[first:])
    lines.append(f"| metric | guardrail | {head} | trend |")
    lines.append("|---|---|" + "---:|" * (n - first) + "---|")
    for m in t.metrics:
        vals = " | ".join(fmt_metric(m.metric, v) for v in m.values[first:])
        lines.append(f"| {md_escape(m.metric)} | {md_escape(m.guardrail)} | {vals} "
                     f"| {md_escape(m.note())} |")
    lines.append("")
    if first:
        lines += [f"_The newest {n - first} of {n} versions are shown (from "
                  f"{md_escape(t.versions[first])}); the HTML report (`aipm report "
                  f"--model`) has every version._", ""]
    return "\n".join(lines)
