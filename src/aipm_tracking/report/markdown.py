"""``--format markdown``: a compact PR comment / job summary.

Verdict first, then the blocking and warning rows as a short list, then the full table in a
collapsed ``<details>``. Every value from data is escaped (:func:`md_escape`): no markdown
or HTML from a run name, a metric name or a reason can render as markup.
"""

from __future__ import annotations

from ..schema import Comparison, MetricComparison, RunRecord
from .base import ReportOptions
from .common import (
    SlicedMetrics,
    Tally,
    context_line,
    displayed_rows,
    fmt_ci,
    fmt_metric,
    fmt_num,
    fmt_p,
    headline,
    hidden_rows_note,
    is_warning,
    more_slices_note,
    run_label,
    version_label,
)

VERDICT_ICON = {
    "pass": "✅",
    "improved": "🟢",
    "regression": "❌",
    "breach": "❌",
    "warn": "⚠️",
    "inconclusive": "❔",
}
HEAD_ICON = {"pass": "✅", "fail": "❌", "inconclusive": "❔"}

_MD_ESCAPES = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    "|": "\\|",
    "`": "&#96;",
    "\\": "\\\\",
    "[": "\\[",
    "]": "\\]",
    "*": "\\*",
    "_": "\\_",
    "~": "\\~",  # ~~strikethrough~~ (GFM)
    "@": "@&#8203;",  # a zero-width space after '@': no @mention in a PR comment
    "\r": " ",
    "\n": " ",
}


#: Bullets the markdown lists under the headline (regressions, breaches, warnings ...).
MAX_BULLETS = 25

def md_escape(text: object) -> str:
    """Escape text from data for a markdown table cell or inline text (GitHub flavour)."""
    return "".join(_MD_ESCAPES.get(c, c) for c in str(text))


def md_unescape(text: str) -> str:
    """Inverse of :func:`md_escape` (for tests and tools that read our comments back)."""
    out = text.replace("@&#8203;", "@").replace("&#96;", "`").replace("&lt;", "<").replace("&gt;", ">")
    out = out.replace("&amp;", "&")
    res: list[str] = []
    i = 0
    while i < len(out):
        if out[i] == "\\" and i + 1 < len(out):
            res.append(out[i + 1])
            i += 2
        else:
            res.append(out[i])
            i += 1
    return "".join(res)


def _icon(r: MetricComparison) -> str:
    if is_warning(r):
        return VERDICT_ICON["warn"]
    return VERDICT_ICON.get(r.verdict, "")


def _delta(r: MetricComparison) -> str:
    d = fmt_num(r.delta, signed=True)
    ci = fmt_ci(r.ci)
    return f"{d} {ci}" if ci else d


def _bullet(r: MetricComparison) -> str:
    bits = [f"{fmt_num(r.baseline)} → {fmt_num(r.candidate)}", f"Δ {_delta(r)}"]
    if r.p_value is not None:
        bits.append(f"p {fmt_p(r.p_value)}")
    reason = f": {md_escape(r.reason)}" if r.reason else ""
    sev = "" if r.blocking or r.verdict == "inconclusive" else " (non-blocking)"
    return (f"- {_icon(r)} **{md_escape(r.metric)}** {md_escape(r.verdict)}{sev} "
            f"({', '.join(bits)}){reason}")


def render_markdown(cmp: Comparison, opts: ReportOptions) -> str:
    """Comparison -> GitHub-flavoured markdown (PR comment, ``$GITHUB_STEP_SUMMARY``)."""
    t = Tally.of(cmp)
    lines: list[str] = []
    lines.append(f"### {HEAD_ICON.get(cmp.verdict, '')} aipm: {md_escape(headline(cmp))}")
    lines.append("")
    lines.append(f"**candidate** {md_escape(run_label(cmp.candidate))} vs "
                 f"**baseline** {md_escape(run_label(cmp.baseline))}  ")
    lines.append(md_escape(context_line(cmp)))
    lines.append("")
    rows, hidden = displayed_rows(cmp)
    attention = t.regressions + t.breaches + t.inconclusive + t.warnings
    if attention:
        lines.extend(_bullet(r) for r in attention[:MAX_BULLETS])
        if len(attention) > MAX_BULLETS:
            where = "--format json lists every row" if hidden else "see the table"
            lines.append(f"- … and {len(attention) - MAX_BULLETS:,} more ({where})")
        lines.append("")
    if cmp.warnings:
        lines.append("**Warnings**")
        lines.append("")
        lines.extend(f"- {md_escape(w)}" for w in cmp.warnings)
        lines.append("")
    n = len(cmp.metrics)
    lines.append(f"<details><summary>All {n} guardrail{'s' if n != 1 else ''}</summary>")
    lines.append("")
    if cmp.metrics:
        lines.append("| metric | baseline | candidate | Δ [CI] | p | test | verdict | reason |")
        lines.append("|---|---:|---:|---:|---:|---|---|---|")
        for r in rows:
            lines.append(
                f"| {md_escape(r.metric)} | {fmt_num(r.baseline)} | {fmt_num(r.candidate)} "
                f"| {_delta(r)} | {fmt_p(r.p_value)} | {md_escape(r.test or '')} "
                f"| {_icon(r)} {md_escape(r.verdict)} | {md_escape(r.reason or '')} |")
        if hidden:
            lines.append("")
            lines.append(md_escape(hidden_rows_note(hidden)))
    else:
        lines.append("_no guardrails were checked_")
    lines.append("")
    lines.append("</details>")
    # A blank line closes the HTML block: whatever is appended to $GITHUB_STEP_SUMMARY after
    # this report (a second report, an ``echo "## ..."``) is then markdown again, not HTML.
    lines.append("")
    lines.append("")
    return "\n".join(lines)


def render_run_markdown(rec: RunRecord) -> str:
    """One run -> markdown: identity line and a metric table."""
    model = rec.model.name
    if rec.model.version:
        model = f"{model} {version_label(rec.model.version)}"
    lines = [f"### aipm run: {md_escape(rec.name)} ({md_escape(model)})", ""]
    if rec.ref:
        lines += [f"ref {md_escape(rec.ref)}", ""]
    sm = SlicedMetrics.of({k: mv.value for k, mv in rec.metrics.items()})
    if sm.top or not sm.total_slices:
        lines += ["| metric | value |", "|---|---:|"]
        lines += [f"| {md_escape(k)} | {fmt_metric(k, v)} |" for k, v in sm.top.items()]
        lines.append("")
    if sm.total_slices:  # a slice × metric table, the first slices by name
        n = sm.total_slices
        lines += [f"**Per-slice metrics** ({n:,} slice{'s' if n != 1 else ''})", "",
                  "| slice | " + " | ".join(md_escape(c) for c in sm.columns) + " |",
                  "|---|" + "---:|" * len(sm.columns)]
        lines += ["| " + md_escape(key) + " | "
                  + " | ".join(fmt_metric(c, ms.get(c)) for c in sm.columns) + " |"
                  for key, ms in sm.slices.items()]
        lines.append("")
        if sm.hidden:
            lines += [md_escape(more_slices_note(sm.hidden, len(sm.slices),
                                                 rec.ref or rec.run_id)), ""]
    return "\n".join(lines)
