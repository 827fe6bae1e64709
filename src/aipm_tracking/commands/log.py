"""``aipm log EVAL_FILE``: evaluate a per-example file and store the run."""

from __future__ import annotations

import click

from ._common import map_option, state


@click.command("log")
@click.argument("eval_file", type=click.Path(dir_okay=False))
@click.option("--model", required=True, help="Model name.")
@click.option("--model-version", default="", help="Model version (e.g. 2, 2024-06-01, a git sha).")
@click.option("--run-name", default=None, help="Run name (default MODEL-VERSION).")
@click.option("--dataset", default=None, metavar="NAME@VERSION", help="Eval set name and version.")
@click.option("--guardrails", "guardrails", default=None, type=click.Path(dir_okay=False),
              help="Guardrails file: its threshold/column map apply and its hash is stored.")
@map_option
@click.option("--fallback-threshold", type=float, default=None,
              help="Confidence below this falls back (default: guardrails file, else 0.5).")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Tag the run (repeatable).")
@click.option("--to", "to", default="local", metavar="REF_PREFIX",
              help="Where to store: local (default), mlflow:EXPERIMENT, wandb:ENTITY/PROJECT.")
@click.option("--drop-bad-rows", is_flag=True,
              help="Drop invalid rows (recorded in the run) instead of failing.")
@click.pass_context
def log_cmd(ctx: click.Context, eval_file: str, model: str, model_version: str,
            run_name: str | None, dataset: str | None, guardrails: str | None,
            column_map: tuple[str, ...], fallback_threshold: float | None,
            tags: tuple[str, ...], to: str, drop_bad_rows: bool) -> None:
    """Evaluate EVAL_FILE (.csv/.parquet/.jsonl) and store the run; print its reference.

    \b
    Example:
      aipm log eval_v2.parquet --model support-bot --model-version 2 \\
          --dataset support-eval@2024-06 --guardrails guardrails.yaml
    The last line of stdout is the new run's reference (e.g. local:20240601-1a2b3c4d5e6f).
    """
    from ..api import log, parse_mapping

    st = state(ctx)
    ref = log(eval_file, model=model, model_version=model_version, run_name=run_name,
              dataset=dataset, to=to, guardrails=guardrails,
              column_map=parse_mapping(column_map), fallback_threshold=fallback_threshold,
              tags=parse_mapping(tags, "--tag"), drop_bad_rows=drop_bad_rows,
              options=st.backend_options())
    if not st.quiet:
        click.echo(f"logged {eval_file} as {model} {model_version}".rstrip(), err=True)
    click.echo(ref)
