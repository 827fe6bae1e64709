"""``aipm demo``: two model versions, logged and compared, a regression caught."""

from __future__ import annotations

import os
import tempfile

import click

from ._common import state

#: Largest ``--n``: two eval sets of a million rows take ~15 s and ~1 GB; more is no demo.
MAX_N = 1_000_000


@click.command("demo")
@click.option("--dir", "directory", default=None, type=click.Path(file_okay=False),
              help="Where to write the demo eval files and guardrails (default: a temp dir).")
@click.option("--n", "n", type=click.IntRange(1, MAX_N), default=6000, show_default=True,
              help=f"Examples per eval set (1 to {MAX_N:,}).")
@click.option("--seed", type=click.IntRange(min=0), default=7, show_default=True,
              help="Random seed.")
@click.option("--format", "fmt", default="table", show_default=True,
              help="Comparison output format (table, markdown, json ...).")
@click.option("--exit-code", is_flag=True,
              help="Exit with the comparison's exit code (1 here), as CI would.")
@click.pass_context
def demo_cmd(ctx: click.Context, directory: str | None, n: int, seed: int, fmt: str,
             exit_code: bool) -> None:
    """Generate two versions' eval sets, log both to the embedded store and compare them.

    Version 2 is better overall, but worse for German users and slower in the tail: the
    guardrails fixed before training catch it.
    """
    from ..api import compare, log
    from ..demo_data import DEMO_GUARDRAILS, make_eval_set
    from ..plugins import get_reporter
    from ..report.base import ReportOptions

    st = state(ctx)
    reporter = get_reporter(fmt)  # unknown format: usage error before anything is written
    directory = directory or tempfile.mkdtemp(prefix="aipm-demo-")
    os.makedirs(directory, exist_ok=True)
    gpath = os.path.join(directory, "guardrails.yaml")
    with open(gpath, "w", encoding="utf-8") as f:
        f.write(DEMO_GUARDRAILS)
    refs = []
    for version in (1, 2):
        path = os.path.join(directory, f"support-bot-v{version}.parquet")
        make_eval_set(version, n=n, seed=seed).to_parquet(path, index=False)
        ref = log(path, model="support-bot", model_version=str(version),
                  dataset="support-eval@2024-06", guardrails=gpath,
                  options=st.backend_options())
        click.echo(f"$ aipm log {path} --model support-bot --model-version {version} "
                   f"--guardrails {gpath}\n{ref}")
        refs.append(ref)
    click.echo(f"\n$ aipm compare {refs[0]} {refs[1]} --guardrails {gpath}\n")
    cmp = compare(refs[0], refs[1], guardrails=gpath, options=st.backend_options())
    width = None if not os.isatty(1) else os.get_terminal_size().columns
    click.echo(reporter(cmp, ReportOptions(width=width or 100)))
    click.echo(f"\nexit code {cmp.exit_code} (0 pass, 1 blocking regression, 3 inconclusive); "
               f"files in {directory}")
    if exit_code:
        ctx.exit(cmp.exit_code)
