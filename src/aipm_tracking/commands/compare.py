"""``aipm compare BASELINE CANDIDATE``: the verdict, for humans and CI (DESIGN §6)."""

from __future__ import annotations

import click

from ._common import map_option, state, write_output


@click.command("compare")
@click.argument("baseline")
@click.argument("candidate")
@click.option("--guardrails", "guardrails", default=None, type=click.Path(dir_okay=False),
              help="Guardrails file (success criteria). Without it every shared metric is "
                   "shown for information and nothing blocks.")
@click.option("--format", "fmt", default="table", show_default=True, metavar="NAME",
              help="Output format: table, markdown, json, junit, html (or a plugin's).")
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False),
              help="Write the report to FILE (atomically) instead of stdout.")
@click.option("--gate", type=click.Choice(["confirmed", "point", "strict"]), default="confirmed",
              show_default=True,
              help="confirmed: block only regressions the data confirm; point: point estimates "
                   "only; strict: block unless non-inferiority is shown.")
@click.option("--allow-missing", is_flag=True,
              help="A missing guardrailed metric is a warning, not exit 3.")
@map_option
@click.option("--traffic-mix", default=None, metavar="SLICE=W,...",
              help="Reweight to a production traffic mix, e.g. de=0.3,en=0.7.")
@click.option("--reference-sample", default=None, type=click.Path(dir_okay=False),
              help="A production sample (eval-file format) to measure drift against.")
@click.option("--queries-per-day", type=float, default=None, metavar="N",
              help="Project daily and monthly serving cost of each run at N queries per day.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for the bootstrap resamples.")
@click.option("--to", "to", default=None, metavar="TARGET",
              help="Also store the comparison in a backend (e.g. wandb:ENTITY/PROJECT).")
@click.pass_context
def compare_cmd(ctx: click.Context, baseline: str, candidate: str, guardrails: str | None,
                fmt: str, output: str | None, gate: str, allow_missing: bool,
                column_map: tuple[str, ...], traffic_mix: str | None,
                reference_sample: str | None, queries_per_day: float | None, seed: int,
                to: str | None) -> None:
    """Compare CANDIDATE against BASELINE and exit with the verdict.

    BASELINE and CANDIDATE are run references (local:ID, mlflow:ID, wandb:E/P/ID, wandb:DIR)
    or eval files (.csv/.parquet/.jsonl), evaluated on the fly.

    \b
    Example:
      aipm compare local:abc local:def --guardrails guardrails.yaml --format markdown
    Exit codes: 0 nothing blocks, 1 blocking regression or breach, 2 usage error,
    3 inconclusive (a guardrailed metric is missing; --allow-missing makes it a warning).
    """
    import os
    import sys

    from .. import plugins
    from ..api import compare, load_guardrails, parse_mapping, parse_traffic_mix
    from ..report.base import ReportOptions

    st = state(ctx)
    reporter = plugins.get_reporter(fmt)  # unknown format: usage error before any work
    g = load_guardrails(guardrails)
    cmp = compare(baseline, candidate, g, gate, allow_missing=allow_missing,
                  options=st.backend_options(dict(g.metric_map) if g is not None else None),
                  column_map=parse_mapping(column_map),
                  traffic_mix=parse_traffic_mix(traffic_mix),
                  reference_sample=reference_sample, queries_per_day=queries_per_day,
                  seed=seed)
    tty = sys.stdout.isatty() and not output
    width = os.get_terminal_size().columns if tty else 100
    write_output(reporter(cmp, ReportOptions(width=width, color=tty)), output)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        md = plugins.get_reporter("markdown")(cmp, ReportOptions(width=100, color=False))
        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(md if md.endswith("\n") else md + "\n")
    if to:
        from ..refs import parse_target

        scheme, target = parse_target(to)
        where = plugins.get_backend(scheme, st.backend_options()).write_comparison(cmp, target)
        if not st.quiet:
            click.echo(f"comparison stored: {where}", err=True)
    if output and not st.quiet:
        click.echo(f"{cmp.verdict}: report written to {output}", err=True)
    ctx.exit(cmp.exit_code)
