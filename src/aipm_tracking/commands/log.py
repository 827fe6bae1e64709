"""``aipm log EVAL_FILE``: evaluate a per-example file and store the run."""

from __future__ import annotations

from typing import Any

import click

from ._common import map_option, note_dropped_rows, state


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
              help="Drop invalid rows (recorded in the run, noted on stderr) instead of failing.")
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
    from ..api import _eval_kwargs, evaluate, load_guardrails, log, parse_mapping

    st = state(ctx)
    g = load_guardrails(guardrails)
    cmap, tag_map = parse_mapping(column_map), parse_mapping(tags, "--tag")
    source: Any = eval_file
    if drop_bad_rows:  # evaluated here, as api.log would, to say what was dropped
        source = evaluate(eval_file, drop_bad_rows=True,
                          **_eval_kwargs(g, fallback_threshold, cmap, None))
        note_dropped_rows(eval_file, source, st.quiet)
    ref = log(source, model=model, model_version=model_version, run_name=run_name,
              dataset=dataset, to=to, guardrails=g, column_map=cmap,
              fallback_threshold=fallback_threshold, tags=tag_map,
              drop_bad_rows=drop_bad_rows, options=st.backend_options())
    if not st.quiet:
        click.echo(f"logged {eval_file} as {model} {model_version}".rstrip(), err=True)
    click.echo(ref)
