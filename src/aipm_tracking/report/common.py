"""Shared wording and number formatting for every renderer (table, markdown, junit, html).

One headline function so the terminal, the PR comment, the JUnit file and the HTML page all
say the same thing; one number formatter so they all show the same digits.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..metrics import split_slice
from ..schema import Comparison, MetricComparison, RunSummary

T = TypeVar("T")

#: Slices a run's views (``runs show``, the run report) list before "… N more slices".
MAX_SLICES = 50

#: Verdicts shown first (worst first), then the rest in guardrail order.
VERDICT_ORDER = ("breach", "regression", "inconclusive", "warn", "improved", "pass")


def fmt_num(x: float | None, signed: bool = False, digits: int = 4) -> str:
    """A metric value, ``digits`` significant digits, no exponent for ordinary magnitudes.

    None / NaN -> '—'.
    """
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(float(x)):
        return "—"
    x = float(x)
    sign = "+" if signed and x > 0 else ""
    ax = abs(x)
    if ax == 0:
        return "0" if not signed else "±0"
    if ax >= 1e6:
        s = f"{x:.4g}"
    elif ax >= 1000:
        s = f"{x:,.0f}"
    elif ax >= 100:
        s = f"{x:.1f}"
    elif ax >= 1e-4:
        s = f"{x:.{digits}g}"
    else:
        s = f"{x:.2e}"
    return sign + s


def fmt_rel(x: float | None, limit: float = 9.99) -> str:
    """A relative change as a signed percentage, ``+12.5%``; beyond ±999% ``>+999%``/``<-999%``.

    '' when there is none (no baseline, NaN ...).
    """
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(float(x)):
        return ""
    if x > limit:
        return f">+{limit:.0%}"
    if x < -limit:
        return f"<-{limit:.0%}"
    return f"{x:+.1%}"


def fmt_count(x: float | None) -> str:
    """A count: ``400`` (not ``400.0``); a non-integral value as :func:`fmt_num`."""
    if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x)) \
            and float(x).is_integer() and abs(x) < 1e15:
        return f"{int(x)}"
    return fmt_num(x)


def abbreviate(items: list[str], head: int = 3, tail: int = 3, sep: str = " → ") -> str:
    """``a → b → c → … → x → y → z (200 versions)`` for a long list, all of a short one."""
    if len(items) <= head + tail + 1:
        return sep.join(items)
    return (sep.join(items[:head]) + sep + "…" + sep + sep.join(items[-tail:])
            + f" ({len(items)} versions)")


def fmt_ci(ci: tuple[float, float] | None) -> str:
    """``[lo, hi]`` of a delta, or '' when there is no interval."""
    if not ci:
        return ""
    return f"[{fmt_num(ci[0], signed=True, digits=3)}, {fmt_num(ci[1], signed=True, digits=3)}]"


def fmt_p(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return "—"
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}"


def version_label(version: object) -> str:
    """``v2`` for version ``2``; a version that already reads ``v1.0`` / ``V3`` is kept as is."""
    v = str(version)
    if len(v) > 1 and v[0] in "vV" and v[1].isdigit():
        return v
    return f"v{v}"


def is_count(metric: str) -> bool:
    """A metric that counts rows (``n_examples``, ``n_examples[slice=de]``)."""
    return metric.split("[", 1)[0].startswith("n_")


def fmt_metric(metric: str, x: float | None) -> str:
    """A metric value as the tables show it: counts as integers, the rest as :func:`fmt_num`."""
    return fmt_count(x) if is_count(metric) else fmt_num(x)


def run_label(s: RunSummary) -> str:
    """``name (model version)`` for a run side; plain text (escape before HTML/markdown)."""
    model = s.model.name
    if s.model.version:
        ver = version_label(s.model.version)
        model = f"{model} {ver}" if model else ver
    if model and model != s.name:
        return f"{s.name} ({model})"
    return s.name or (s.ref or "?")


def is_warning(r: MetricComparison) -> bool:
    """A non-blocking concern: verdict warn, or a regression/breach of a warn-severity guardrail."""
    return r.verdict == "warn" or (r.verdict in ("regression", "breach") and not r.blocking)


@dataclass
class Tally:
    """Rows grouped by what they mean for the gate."""

    regressions: list[MetricComparison] = field(default_factory=list)  # blocking regressions
    breaches: list[MetricComparison] = field(default_factory=list)  # blocking breaches
    warnings: list[MetricComparison] = field(default_factory=list)
    inconclusive: list[MetricComparison] = field(default_factory=list)
    improved: list[MetricComparison] = field(default_factory=list)
    passed: list[MetricComparison] = field(default_factory=list)

    @classmethod
    def of(cls, cmp: Comparison) -> Tally:
        t = cls()
        for r in cmp.metrics:
            if r.blocking and r.verdict == "regression":
                t.regressions.append(r)
            elif r.blocking:
                t.breaches.append(r)
            elif is_warning(r):
                t.warnings.append(r)
            elif r.verdict == "inconclusive":
                t.inconclusive.append(r)
            elif r.verdict == "improved":
                t.improved.append(r)
            else:
                t.passed.append(r)
        return t


def _names(rows: list[MetricComparison], limit: int = 3) -> str:
    names = [r.metric for r in rows[:limit]]
    if len(rows) > limit:
        names.append(f"+{len(rows) - limit} more")
    return ", ".join(names)


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def headline(cmp: Comparison) -> str:
    """E.g. ``FAIL: 1 blocking regression (accuracy), 1 warning (latency_ms_p95)``."""
    t = Tally.of(cmp)
    parts: list[str] = []
    if t.regressions:
        parts.append(f"{_plural(len(t.regressions), 'blocking regression')} "
                     f"({_names(t.regressions)})")
    if t.breaches:
        parts.append(f"{_plural(len(t.breaches), 'blocking breach', 'blocking breaches')} "
                     f"({_names(t.breaches)})")
    if t.inconclusive:
        extra = ", allowed" if cmp.allow_missing else ""
        parts.append(f"{len(t.inconclusive)} inconclusive ({_names(t.inconclusive)}{extra})")
    if t.warnings:
        parts.append(f"{_plural(len(t.warnings), 'warning')} ({_names(t.warnings)})")
    if t.improved:
        parts.append(f"{len(t.improved)} improved")
    if not parts or (not t.regressions and not t.breaches and not t.inconclusive
                     and not t.warnings):
        n = len(cmp.metrics)
        if n == 0:
            parts = ["no guardrails to check"]
        else:
            ok = len(t.passed) + len(t.improved)
            parts = [f"{ok} of {_plural(n, 'guardrail')} pass"
                     + (f", {len(t.improved)} improved" if t.improved else "")]
    return f"{cmp.verdict.upper()}: " + ", ".join(parts)


def sorted_rows(cmp: Comparison) -> list[MetricComparison]:
    """Blocking rows first, then warnings/inconclusive, then the rest (stable within groups)."""
    def key(r: MetricComparison) -> int:
        if r.blocking:
            return 0
        if r.verdict == "inconclusive":
            return 1
        if is_warning(r):
            return 2
        return 3

    return sorted(cmp.metrics, key=key)


def context_line(cmp: Comparison) -> str:
    """``gate confirmed · alpha 0.05 · guardrails NAME`` (plain text)."""
    bits = [f"gate {cmp.gate}", f"alpha {cmp.alpha:g}"]
    if cmp.guardrails_name:
        bits.append(f"guardrails {cmp.guardrails_name}")
    pairing = cmp.details.get("pairing") if isinstance(cmp.details, dict) else None
    if isinstance(pairing, dict):
        if pairing.get("paired"):
            bits.append(f"paired on {pairing.get('matched', 0)} examples")
        else:
            bits.append("unpaired")
    return " · ".join(bits)


def natural_key(text: str) -> tuple[tuple[int, str], ...]:
    """Sort key that orders the numbers inside text as numbers (``seg2`` before ``seg10``)."""
    return tuple((0, f"{int(p):020d}") if p.isdigit() else (1, p)
                 for p in re.split(r"(\d+)", text) if p)


@dataclass
class SlicedMetrics(Generic[T]):
    """A run's metrics split for display: whole-set metrics first, then per-slice metrics
    grouped by slice (``slice=de``), slices in natural order of their name.

    ``slices`` holds at most ``limit`` slices (the first by name); ``hidden`` says how many
    more the run has. ``columns`` are the per-slice metrics' base names (``accuracy``), in
    the order they first appear, so a view can pivot slice × metric.
    """

    top: dict[str, T]
    slices: dict[str, dict[str, T]]
    columns: list[str]
    total_slices: int

    @property
    def hidden(self) -> int:
        return self.total_slices - len(self.slices)

    @property
    def n_slice_metrics(self) -> int:
        """Per-slice metrics among the slices kept."""
        return sum(len(m) for m in self.slices.values())

    @classmethod
    def of(cls, metrics: Mapping[str, T], limit: int | None = MAX_SLICES) -> SlicedMetrics[T]:
        top: dict[str, T] = {}
        by_slice: dict[str, dict[str, T]] = {}
        for name, value in metrics.items():
            base, key = split_slice(name)
            if key is None or key.startswith("mix="):  # [mix=traffic]: the whole set again
                top[name] = value
            else:
                by_slice.setdefault(key, {})[base] = value
        names = sorted(by_slice, key=natural_key)
        kept = {k: by_slice[k] for k in (names if limit is None else names[:max(0, limit)])}
        columns = list(dict.fromkeys(base for m in kept.values() for base in m))
        return cls(top, kept, columns, len(names))


def more_slices_note(hidden: int, shown: int, ref: str | None = None) -> str:
    """``… 950 more slices not shown (the first 50 by name are); 'aipm runs show REF
    --format json' lists every metric`` (plain text)."""
    return (f"… {hidden:,} more slice{'s' if hidden != 1 else ''} not shown (the first "
            f"{shown:,} by name are); 'aipm runs show {ref or 'REF'} --format json' lists "
            f"every metric")


#: Per-slice rows of an informative comparison (no guardrails file) shown row by row; more
#: than this: the ``MAX_SLICES`` most notable, and a line saying how many were left out.
SHOW_SLICE_ROWS = 60


def displayed_rows(cmp: Comparison) -> tuple[list[MetricComparison], int]:
    """The comparison rows a terminal or markdown view lists, and how many it leaves out.

    Every row of a guardrails file is listed (someone wrote each one). Without a file every
    shared metric is an informative row, per slice too, so a table with 200 slices ran to
    2,600 rows: whole-set rows are all listed, and beyond ``SHOW_SLICE_ROWS`` per-slice rows
    the ``MAX_SLICES`` most notable (worst verdict first, then the smallest p-value), in
    their original order. ``--format json`` keeps every row."""
    rows = list(cmp.metrics)
    # traffic-mix rows (``accuracy[mix=traffic]``) are the whole eval set again
    sliced = [i for i, r in enumerate(rows) if r.slice is not None
              and not r.slice.startswith("mix=")]
    if cmp.guardrails_hash is not None or len(sliced) <= SHOW_SLICE_ROWS:
        return rows, 0
    rank = {v: k for k, v in enumerate(VERDICT_ORDER)}

    def notable(i: int) -> tuple[int, float]:
        r = rows[i]
        p = r.p_value if r.p_value is not None and math.isfinite(r.p_value) else 2.0
        return (rank.get(r.verdict, len(rank)), p)

    keep = set(sorted(sliced, key=notable)[:MAX_SLICES])
    per_slice = set(sliced)
    shown = [r for i, r in enumerate(rows) if i not in per_slice or i in keep]
    return shown, len(rows) - len(shown)


def hidden_rows_note(hidden: int) -> str:
    """``… 2,550 more per-slice rows not shown (...); --format json lists every row``."""
    return (f"… {hidden:,} more per-slice row{'s' if hidden != 1 else ''} not shown (no "
            f"guardrails file: the {MAX_SLICES} most notable slice rows are); --format json "
            f"lists every row")
