"""The terminal table (``--format table``): verdict first, then one row per guardrail.

Rendered by rich into a string. At widths under 120 columns the reason column moves below
the table (one folded line per metric) so every number stays on one line at 80 columns;
metric names never wrap.
"""

from __future__ import annotations

from io import StringIO

from rich import box
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from ..schema import Comparison, MetricComparison
from .base import ReportOptions
from .common import (
    context_line,
    displayed_rows,
    fmt_ci,
    fmt_num,
    fmt_p,
    headline,
    hidden_rows_note,
    run_label,
)

#: rich style per verdict (only used when colour is on).
VERDICT_STYLE = {
    "pass": "green",
    "improved": "bold green",
    "regression": "bold red",
    "breach": "bold red",
    "warn": "yellow",
    "inconclusive": "magenta",
}
WIDE = 120


def _verdict_text(r: MetricComparison) -> Text:
    word = r.verdict.upper() if r.blocking else r.verdict
    style = VERDICT_STYLE.get(r.verdict, "")
    if r.verdict in ("regression", "breach") and not r.blocking:
        style = "yellow"
    return Text(word, style=style)


def _delta_cell(r: MetricComparison, stacked: bool) -> str:
    d = fmt_num(r.delta, signed=True)
    ci = fmt_ci(r.ci)
    if not ci:
        return d
    return f"{d}\n{ci}" if stacked else f"{d} {ci}"


def _natural_width(table: Table) -> int:
    """Width the table takes when nothing is squeezed (rendered on a very wide console)."""
    buf = StringIO()
    Console(file=buf, width=1000, color_system=None, soft_wrap=False).print(table)
    return max((len(line.rstrip()) for line in buf.getvalue().splitlines()), default=0)


def _print_stacked(console: Console, rows: list[MetricComparison]) -> None:
    """Metric name on its own line, numbers and reason indented below."""
    for r in rows:
        console.print(Text(r.metric, style="bold"), overflow="fold")
        nums = Text(f"base {fmt_num(r.baseline)} · cand {fmt_num(r.candidate)} · "
                    f"Δ {fmt_num(r.delta, signed=True)} {fmt_ci(r.ci)} · p {fmt_p(r.p_value)} · ")
        nums.append_text(_verdict_text(r))
        console.print(Padding(nums, (0, 0, 0, 2)))
        if r.reason:
            console.print(Padding(Text(r.reason, style="dim"), (0, 0, 0, 2)))


def render_table(cmp: Comparison, opts: ReportOptions) -> str:
    """Comparison -> terminal text (ANSI colours only when ``opts.color``)."""
    width = max(40, int(opts.width or 100))
    buf = StringIO()
    console = Console(file=buf, width=width, color_system="standard" if opts.color else None,
                      force_terminal=bool(opts.color), no_color=not opts.color,
                      highlight=False, emoji=False, soft_wrap=False)
    head_style = {"pass": "bold green", "fail": "bold red"}.get(cmp.verdict, "bold magenta")
    console.print(Text(headline(cmp), style=head_style))
    console.print(Text(f"baseline:  {run_label(cmp.baseline)}"))
    console.print(Text(f"candidate: {run_label(cmp.candidate)}"))
    console.print(Text(context_line(cmp), style="dim"))

    wide = width >= WIDE
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, expand=False,
                  padding=(0, 1, 0, 0), collapse_padding=True)
    table.add_column("metric", no_wrap=True, overflow="ignore")
    table.add_column("base", justify="right", no_wrap=True)
    table.add_column("cand", justify="right", no_wrap=True)
    table.add_column("delta [CI]", justify="right", no_wrap=True)
    table.add_column("p", justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    if wide:
        table.add_column("reason", overflow="fold", ratio=1)
    rows, hidden = displayed_rows(cmp)
    for r in rows:
        cells: list[Text | str] = [Text(r.metric), fmt_num(r.baseline), fmt_num(r.candidate),
                                   _delta_cell(r, stacked=not wide), fmt_p(r.p_value),
                                   _verdict_text(r)]
        if wide:
            cells.append(Text(r.reason or ""))
        table.add_row(*cells)
    fits = _natural_width(table) <= width
    if not cmp.metrics:
        console.print(Text("no guardrails were checked", style="dim"))
    elif not fits:  # very long metric names: one block per metric instead of a table
        _print_stacked(console, rows)
        wide = True  # reasons already printed
    else:
        console.print(table)
    if hidden:
        console.print(Text(hidden_rows_note(hidden), style="dim"), overflow="fold")

    if not wide and any(r.reason for r in rows):
        why = Table.grid(padding=(0, 2))
        why.add_column(no_wrap=True, overflow="ignore")
        why.add_column(overflow="fold")
        for r in rows:
            if r.reason:
                why.add_row(Text(r.metric), Text(r.reason))
        console.print(Text("why", style="bold"))
        console.print(why)
    if cmp.warnings:
        console.print(Text("warnings", style="bold yellow"))
        for w in cmp.warnings:
            console.print(Text(f"- {w}"), overflow="fold")
    return "".join(line.rstrip() + "\n" for line in buf.getvalue().splitlines())
