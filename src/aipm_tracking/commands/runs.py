"""``aipm runs list|show|history``: browse runs in any backend."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

import click

from ._common import check_eval_sources, console, fmt_value, listing_from, state

if TYPE_CHECKING:  # pragma: no cover
    from ..report.common import SlicedMetrics

_FORMATS = click.Choice(["table", "json", "csv"])
#: Runs the ``runs list`` table shows unless --limit says otherwise (json/csv: every run).
TABLE_RUNS = 100
#: Points the ``runs history`` table shows from each end of the series.
HISTORY_ROWS = 10
#: Per-slice metrics ``runs show`` lists row by row; more: a slice × metric pivot.
SHOW_SLICE_ROWS = 60
_LIST_COLUMNS = ("ref", "name", "model", "version", "created_at", "status", "n_examples",
                 "accuracy")


def _finite(v: Any) -> Any:
    """``v`` with NaN/inf as None, so that ``json.dumps(allow_nan=False)`` gives strict JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _cell(v: Any) -> Any:
    """A rich table cell that shows ``v`` verbatim: user strings are never read as markup."""
    from rich.text import Text

    return Text(fmt_value(v))


def _count(v: Any) -> Any:
    """An integral count as an int (``400``, not ``400.0``); anything else unchanged."""
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    return v


def _echo_json_array(items: Iterable[Any]) -> None:
    """Print ``json.dumps(list(items), indent=2, allow_nan=False)`` item by item (the same
    text, without holding it all): a JSON string never holds a raw newline, so indenting
    each item's lines by two is what ``indent=2`` does to a list's items."""
    sep = "[\n  "
    for item in items:
        text = json.dumps(item, indent=2, allow_nan=False).replace("\n", "\n  ")
        click.echo(sep + text, nl=False)
        sep = ",\n  "
    click.echo("[]" if sep == "[\n  " else "\n]")


@click.group("runs")
def runs_group() -> None:
    """List runs, show one, or print its logged series."""


@runs_group.command("list")
@click.option("--from", "source", default="local", metavar="PREFIX",
              help="Where to list: local (default), mlflow:EXPERIMENT, wandb:ENTITY/PROJECT.")
@click.option("--filter", "filter_", default=None, metavar="EXPR",
              help='Filter, e.g. \'metrics.accuracy > 0.9 and model = "bot"\'.')
@click.option("--limit", type=click.IntRange(min=0), default=None,
              help=f"At most this many runs; 0: all of them. Default: all, except that the "
                   f"table shows the newest {TABLE_RUNS} (json and csv list every run).")
@click.option("--format", "fmt", type=_FORMATS, default="table", show_default=True)
@click.pass_context
def list_cmd(ctx: click.Context, source: str, filter_: str | None, limit: int | None,
             fmt: str) -> None:
    """List runs, newest first.

    \b
    Examples:
      aipm runs list
      aipm runs list --limit 0          # the table of every run
      aipm runs list --from mlflow:support-bot --filter "metrics.accuracy > 0.9" --format csv
    """
    from ..plugins import get_backend
    from ..refs import parse_target

    scheme, target = parse_target(source)
    backend = get_backend(scheme, state(ctx).backend_options())
    capped = fmt == "table" and limit is None  # a terminal view: the newest TABLE_RUNS
    want = TABLE_RUNS + 1 if capped else (limit or None)  # one more: are there more?
    with listing_from():
        recs = list(backend.list_runs(target, filter=filter_, limit=want))
    more = capped and len(recs) > TABLE_RUNS
    if more:
        recs = recs[:TABLE_RUNS]
    if fmt == "json":
        _echo_json_array(r.to_dict() for r in recs)
        return
    rows = [(r.ref or r.run_id, r.name, r.model.name, r.model.version, r.created_at[:19],
             r.status, _count(r.metric("n_examples")), r.metric("accuracy")) for r in recs]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(_LIST_COLUMNS)
        for row in rows:
            w.writerow(["" if v is None else v for v in row])
        click.echo(buf.getvalue(), nl=False)
        return
    from rich.table import Table
    from rich.text import Text

    title = (f"the newest {len(rows)} runs in {source}" if more
             else f"{len(rows)} run(s) in {source}")
    table = Table(title=title, title_justify="left")
    for col in _LIST_COLUMNS:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    con = console()
    con.print(table)
    if more:
        con.print(Text(f"… more runs not shown: the table lists the newest {TABLE_RUNS}; "
                       f"--limit 0 lists all, --limit N the newest N, --filter narrows them "
                       f"(--format json|csv list every run)"))


@runs_group.command("show")
@click.argument("ref")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.pass_context
def show_cmd(ctx: click.Context, ref: str, fmt: str) -> None:
    """Show one run: model, dataset, metrics, guardrails hash.

    The table lists whole-set metrics first, then per-slice ones; a run with many slices
    gets a slice × metric table of the first slices by name (json: every metric).

    \b
    Example:
      aipm runs show local:20240601-1a2b3c4d5e6f --format json
    """
    from ..api import load_run

    check_eval_sources(ref)
    rec = load_run(ref, options=state(ctx).backend_options(), with_examples=False)
    if fmt == "json":
        click.echo(rec.to_json(indent=2))
        return
    from rich.table import Table
    from rich.text import Text

    con = console()
    con.print(Text.assemble((rec.name, "bold"), f"  {rec.ref or rec.run_id}"))
    con.print(Text(f"model {rec.model.name} {rec.model.version}  ·  dataset "
                   f"{rec.dataset.name or '-'}@{rec.dataset.version or '-'} "
                   f"(n={rec.dataset.size if rec.dataset.size is not None else '-'})  ·  "
                   f"status {rec.status}  ·  created {rec.created_at[:19]}"))
    con.print(Text(f"guardrails hash {rec.guardrails_hash or '-'}"))
    from ..metrics import slice_metric_name
    from ..report.common import SlicedMetrics, is_count

    # whole-set metrics first, then per-slice ones grouped by slice: every metric with its
    # interval while they are few, else a slice × metric pivot of the first slices by name
    sm = SlicedMetrics.of(dict(sorted(rec.metrics.items())), limit=None)
    long = sm.n_slice_metrics <= SHOW_SLICE_ROWS
    table = Table("metric", "value", "ci", "n")
    rows = list(sm.top.items())
    if long:
        rows += [(slice_metric_name(base, key), mv) for key, ms in sm.slices.items()
                 for base, mv in ms.items()]
    for name, mv in rows:
        ci = f"[{fmt_value(mv.ci[0])}, {fmt_value(mv.ci[1])}]" if mv.ci else ""
        value = _count(mv.value) if is_count(name) else mv.value
        table.add_row(Text(name), _cell(value), Text(ci), _cell(mv.n))
    if rows or not sm.total_slices:
        con.print(table)
    if not long:
        _print_slices(con, SlicedMetrics.of(dict(sorted(rec.metrics.items()))),
                      rec.ref or rec.run_id)


def _print_slices(con: Any, sm: SlicedMetrics[Any], ref: str) -> None:
    """Per-slice metrics as a slice × metric pivot (values only), split into blocks of
    columns that fit the console, then a line saying how many slices were left out."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from ..report.common import is_count, more_slices_note

    con.print(Text(f"per-slice metrics: {sm.total_slices:,} slices × {len(sm.columns)} "
                   f"metrics" + (f" (the first {len(sm.slices)} by name)" if sm.hidden
                                 else ""), style="bold"))
    cells = {c: [fmt_value(_count(m[c].value) if is_count(c) else m[c].value)
                 if c in m else "-" for m in sm.slices.values()] for c in sm.columns}
    label_w = max([len("slice"), *(len(k) for k in sm.slices)])
    widths = {c: max([len(c), *(len(v) for v in cells[c])]) for c in sm.columns}
    blocks: list[list[str]] = []
    used = 0
    for c in sm.columns:  # greedy: as many columns per block as the width allows
        w = widths[c] + 3
        if not blocks or used + w > max(40, con.width) - label_w - 4:
            blocks.append([])
            used = 0
        blocks[-1].append(c)
        used += w
    for cols in blocks:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        table.add_column("slice", overflow="fold")
        for c in cols:
            table.add_column(c, justify="right", no_wrap=True)
        for i, key in enumerate(sm.slices):
            table.add_row(Text(key), *(Text(cells[c][i]) for c in cols))
        con.print(table)
    if sm.hidden:
        con.print(Text(more_slices_note(sm.hidden, len(sm.slices), ref)))


@runs_group.command("history")
@click.argument("ref")
@click.option("--keys", default=None, metavar="A,B", help="Only these series.")
@click.option("--format", "fmt", type=_FORMATS, default="csv", show_default=True)
@click.pass_context
def history_cmd(ctx: click.Context, ref: str, keys: str | None, fmt: str) -> None:
    """Print the series a Tracker logged (CSV: step,key,value).

    csv and json print every point, streamed; the table shows the first and last points
    and says how many it left out.

    \b
    Example:
      aipm runs history local:20240601-1a2b3c4d5e6f --keys loss,lr
    """
    from ..errors import UsageError
    from ..plugins import get_backend
    from ..refs import parse_ref

    r = parse_ref(ref)
    if r.scheme == "file":  # an eval file has no logged series
        raise UsageError(f"runs history needs a run reference (local:RUN_ID, mlflow:RUN_ID, "
                         f"wandb:ENTITY/PROJECT/RUN_ID), not an eval file: {r.locator}")
    backend = get_backend(r.scheme, state(ctx).backend_options())
    key_list = [k.strip() for k in keys.split(",") if k.strip()] if keys else None
    chunks = _history_chunks(backend, r.locator, key_list)
    encoded: dict[str, str] = {}  # key -> its json/csv text
    if fmt == "json":  # streamed: the same text as json.dumps of the whole list, one line
        sep = "["
        for chunk in chunks:
            if chunk:
                click.echo(sep + _json_points(chunk, encoded), nl=False)
                sep = ", "
        click.echo("[]" if sep == "[" else "]")
        return
    if fmt == "csv":  # streamed, one chunk of rows at a time
        click.echo("step,key,value", nl=True)
        for chunk in chunks:
            click.echo(_csv_points(chunk, encoded), nl=False)
        return
    _print_history_table(chunks)


#: (key, value, step, timestamp) types the fast formatters below write as the json and csv
#: modules would (the embedded store's points always have them)
_PLAIN_POINT = (str, float, int, float)


def _plain(chunk: Sequence[tuple[Any, ...]]) -> bool:
    return {(type(k), type(v), type(s), type(t)) for k, v, s, t in chunk} == {_PLAIN_POINT}


def _json_points(chunk: Sequence[tuple[Any, ...]], keys: dict[str, str]) -> str:
    """``json.dumps`` of the chunk's points as ``{"step", "key", "value", "timestamp"}``
    objects (NaN/inf as null), without the enclosing brackets. Plain points are formatted
    directly (3M points: 2 s instead of 11 s): the json module writes a float as its repr
    and an int as its str, and a key as ``json.dumps(key)`` (``keys``: a cache of those)."""
    if not _plain(chunk):
        return json.dumps([{"step": s, "key": k, "value": _finite(v), "timestamp": _finite(t)}
                           for k, v, s, t in chunk], allow_nan=False)[1:-1]
    for k in {p[0] for p in chunk}.difference(keys):
        keys[k] = json.dumps(k)
    fin = math.isfinite
    return ", ".join([f'{{"step": {s}, "key": {keys[k]}, "value": '
                      f'{repr(v) if fin(v) else "null"}, "timestamp": '
                      f'{repr(t) if fin(t) else "null"}}}' for k, v, s, t in chunk])


def _csv_points(chunk: Sequence[tuple[Any, ...]], keys: dict[str, str]) -> str:
    """The chunk's ``step,key,value`` CSV lines (value as ``repr(float(value))``). Plain
    points are formatted directly, each key quoted once by the csv module itself (``keys``:
    a cache of those)."""
    if not _plain(chunk):
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(
            (s, k, repr(float(v))) for k, v, s, _t in chunk)
        return buf.getvalue()
    for k in {p[0] for p in chunk}.difference(keys):
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(("", k))  # ",<field>\n"
        keys[k] = buf.getvalue()[1:-1]
    return "".join([f"{s},{keys[k]},{v!r}\n" for k, v, s, _t in chunk])


def _history_chunks(backend: Any, locator: str,
                    keys: list[str] | None) -> Iterator[Sequence[tuple[Any, ...]]]:
    """A run's points as chunks of ``(key, value, step, timestamp)``: streamed where the
    backend can (``iter_history``), else its ``read_history`` list in slices."""
    stream = getattr(backend, "iter_history", None)
    if callable(stream):
        return cast("Iterator[Sequence[tuple[Any, ...]]]", stream(locator, keys))
    points = backend.read_history(locator, keys)
    return (points[i:i + 10_000] for i in range(0, len(points), 10_000))


def _print_history_table(chunks: Iterator[Sequence[tuple[Any, ...]]]) -> None:
    """The first and last HISTORY_ROWS points, and a line saying how many were left out:
    a terminal view stays short however long the run (csv and json print every point)."""
    from collections import deque
    from operator import itemgetter

    from rich.table import Table
    from rich.text import Text

    head: list[tuple[Any, ...]] = []
    tail: deque[tuple[Any, ...]] = deque(maxlen=HISTORY_ROWS)
    keys: set[str] = set()
    total = 0
    first_step = last_step = None
    for chunk in chunks:
        if not chunk:
            continue
        if first_step is None:
            first_step = chunk[0][2]
        last_step = chunk[-1][2]
        total += len(chunk)
        keys.update(map(itemgetter(0), chunk))
        room = 2 * HISTORY_ROWS - len(head)
        if room > 0:
            head.extend(chunk[:room])
        tail.extend(chunk[-HISTORY_ROWS:])
    hidden = total - 2 * HISTORY_ROWS
    shown = head if hidden <= 0 else head[:HISTORY_ROWS]
    table = Table("step", "key", "value")
    for k, v, step, _t in shown:
        table.add_row(_cell(step), _cell(k), _cell(v))
    if hidden > 0:
        table.add_row(Text("…"), Text(f"{hidden:,} points not shown"), Text("…"))
        for k, v, step, _t in tail:
            table.add_row(_cell(step), _cell(k), _cell(v))
    con = console()
    con.print(table)
    if hidden > 0:
        con.print(Text(f"{total:,} points ({len(keys):,} key{'s' if len(keys) != 1 else ''}, "
                       f"steps {first_step}–{last_step}), {hidden:,} not shown: "
                       f"--format csv or json prints them all"))
