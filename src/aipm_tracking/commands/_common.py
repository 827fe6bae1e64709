"""Helpers shared by command modules (click only at import)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # pragma: no cover
    from ..context import CliState


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
