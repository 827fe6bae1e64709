"""Helpers shared by command modules (click only at import)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # pragma: no cover
    from ..context import CliState
    from ..schema import EvalResult


def state(ctx: click.Context) -> CliState:
    from ..context import CliState

    obj = ctx.find_root().obj
    return obj if isinstance(obj, CliState) else CliState()


def write_output(text: str, output: str | None) -> None:
    """Print ``text`` or write it atomically to ``output`` (temp file + rename)."""
    if not output or output == "-":
        click.echo(text, nl=not text.endswith("\n"))
        return
    from ..fsutil import atomic_write

    atomic_write(output, text)


def console(width: int | None = None) -> Any:
    """A rich Console on stdout (plain when not a terminal)."""
    from rich.console import Console

    return Console(width=width or (None if sys.stdout.isatty() else 100),
                   soft_wrap=False, highlight=False)


def fmt_value(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v == 0 or 1e-3 <= abs(v) < 1e6:
            return f"{v:.4g}"
        return f"{v:.3e}"
    return str(v)


map_option = click.option(
    "--map", "column_map", multiple=True, metavar="THEIRS=CANONICAL",
    help="Rename a column of the eval file to a canonical one (repeatable).")


def check_eval_sources(*sources: str | None) -> None:
    """Refuse an eval-file reference that names a directory, with one line saying so (left
    alone, it would read as "no such eval file")."""
    import os

    from ..errors import AipmError, DataError
    from ..refs import parse_ref

    for source in sources:
        if not source:
            continue
        try:
            ref = parse_ref(source)
        except AipmError:  # a malformed reference: reported where it is read
            continue
        if ref.scheme == "file" and os.path.isdir(ref.locator):
            raise DataError(f"{ref.locator}: is a directory, not an eval file "
                            f"(.csv/.parquet/.jsonl)")


def note_dropped_rows(source: str, res: EvalResult, quiet: bool = False) -> None:
    """The rows ``--drop-bad-rows`` dropped, as one note on stderr (never silently)."""
    if res.issues and not quiet:
        click.echo(f"aipm: {source}: dropped bad rows: "
                   + "; ".join(i.describe() for i in res.issues)
                   + f" ({res.n_examples} rows evaluated)", err=True)


@contextmanager
def listing_from(option: str = "--from") -> Iterator[None]:
    """Listing runs from ``option``: a backend's target error worded for writing ("W&B
    destination ... use --to wandb:ENTITY/PROJECT") names what the user gave instead."""
    from ..errors import InvalidReferenceError

    try:
        yield
    except InvalidReferenceError as e:
        msg = str(e)
        fixed = msg.replace(" destination", " source").replace("--to ", f"{option} ")
        if fixed == msg:
            raise
        raise InvalidReferenceError(fixed) from None
