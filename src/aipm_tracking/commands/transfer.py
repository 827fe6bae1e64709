"""``aipm push`` / ``aipm pull``: copy a run, with its per-example table, between backends."""

from __future__ import annotations

import click

from ._common import check_eval_sources, state


@click.command("push")
@click.argument("ref")
@click.option("--to", "to", required=True, metavar="PREFIX",
              help="Destination: local, mlflow:EXPERIMENT or wandb:ENTITY/PROJECT.")
@click.pass_context
def push_cmd(ctx: click.Context, ref: str, to: str) -> None:
    """Copy run REF to another backend; print the new reference.

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
    """Copy run REF (mlflow:…, wandb:…) into the embedded store; print its local reference.

    \b
    Example:
      aipm pull mlflow:0f1e2d3c4b5a69788796a5b4c3d2e1f0
    """
    from ..api import pull

    check_eval_sources(ref)
    click.echo(pull(ref, options=state(ctx).backend_options()))
