"""``aipm runs list|show|history``: browse runs in any backend."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

import click

from ._common import check_eval_sources, console, fmt_value, listing_from, state

_FORMATS = click.Choice(["table", "json", "csv"])
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


@click.group("runs")
def runs_group() -> None:
    """List runs, show one, or print its logged series."""


@runs_group.command("list")
@click.option("--from", "source", default="local", metavar="PREFIX",
              help="Where to list: local (default), mlflow:EXPERIMENT, wandb:ENTITY/PROJECT.")
@click.option("--filter", "filter_", default=None, metavar="EXPR",
              help='Filter, e.g. \'metrics.accuracy > 0.9 and model = "bot"\'.')
@click.option("--limit", type=int, default=None, help="At most this many runs.")
@click.option("--format", "fmt", type=_FORMATS, default="table", show_default=True)
@click.pass_context
def list_cmd(ctx: click.Context, source: str, filter_: str | None, limit: int | None,
             fmt: str) -> None:
    """List runs, newest first.

    \b
    Examples:
      aipm runs list
      aipm runs list --from mlflow:support-bot --filter "metrics.accuracy > 0.9" --format csv
    """
    from ..plugins import get_backend
    from ..refs import parse_target

    scheme, target = parse_target(source)
    backend = get_backend(scheme, state(ctx).backend_options())
    with listing_from():
        recs = list(backend.list_runs(target, filter=filter_, limit=limit))
    if fmt == "json":
        click.echo(json.dumps([r.to_dict() for r in recs], indent=2, allow_nan=False))
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

    table = Table(title=f"{len(rows)} run(s) in {source}", title_justify="left")
    for col in _LIST_COLUMNS:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    console().print(table)


@runs_group.command("show")
@click.argument("ref")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.pass_context
def show_cmd(ctx: click.Context, ref: str, fmt: str) -> None:
    """Show one run: model, dataset, metrics, guardrails hash.

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
    table = Table("metric", "value", "ci", "n")
    for name, mv in sorted(rec.metrics.items()):
        ci = f"[{fmt_value(mv.ci[0])}, {fmt_value(mv.ci[1])}]" if mv.ci else ""
        value = _count(mv.value) if name.split("[", 1)[0].startswith("n_") else mv.value
        table.add_row(Text(name), _cell(value), Text(ci), _cell(mv.n))
    con.print(table)


@runs_group.command("history")
@click.argument("ref")
@click.option("--keys", default=None, metavar="A,B", help="Only these series.")
@click.option("--format", "fmt", type=_FORMATS, default="csv", show_default=True)
@click.pass_context
def history_cmd(ctx: click.Context, ref: str, keys: str | None, fmt: str) -> None:
    """Print the series a Tracker logged (CSV: step,key,value).

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
    points = backend.read_history(r.locator, key_list)
    if fmt == "json":
        click.echo(json.dumps([{"step": p.step, "key": p.key, "value": _finite(p.value),
                                "timestamp": _finite(p.timestamp)} for p in points],
                              allow_nan=False))
        return
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(("step", "key", "value"))
        w.writerows((p.step, p.key, repr(float(p.value))) for p in points)
        click.echo(buf.getvalue(), nl=False)
        return
    from rich.table import Table

    table = Table("step", "key", "value")
    for p in points:
        table.add_row(_cell(p.step), _cell(p.key), _cell(p.value))
    console().print(table)
