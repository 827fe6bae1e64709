"""``aipm push`` / ``aipm pull``: copy a run (record, per-example table, logged series)
between backends; copying the same run to the same place again returns the copy there."""

from __future__ import annotations

import click

from ._common import check_eval_sources, state


@click.command("push")
@click.argument("ref")
@click.option("--to", "to", required=True, metavar="PREFIX",
              help="Destination: local, mlflow:EXPERIMENT or wandb:ENTITY/PROJECT.")
@click.pass_context
def push_cmd(ctx: click.Context, ref: str, to: str) -> None:
    """Copy run REF (record, per-example table, logged series) to another backend; print the
    copy's reference (a repeated push returns the copy already there).

    \b
    Example:
      aipm push local:20240601-1a2b3c4d5e6f --to mlflow:support-bot
    """
    from ..api import push

    check_eval_sources(ref)
    click.echo(push(ref, to, options=state(ctx).backend_options()))


@click.command("pull")
@click.argument("ref")
@click.pass_context
def pull_cmd(ctx: click.Context, ref: str) -> None:
    """Copy run REF (mlflow:…, wandb:…) into the embedded store, with its per-example table
    and logged series; print its local reference (a repeated pull returns that copy).

    \b
    Example:
      aipm pull mlflow:0f1e2d3c4b5a69788796a5b4c3d2e1f0
    """
    from ..api import pull

    check_eval_sources(ref)
    click.echo(pull(ref, options=state(ctx).backend_options()))
