"""``aipm compare BASELINE CANDIDATE``: the verdict, for humans and CI (DESIGN §6)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from ._common import check_eval_sources, map_option, note_dropped_rows, state, write_output

if TYPE_CHECKING:  # pragma: no cover
    from ..backends.base import Backend
    from ..context import CliState
    from ..guardrails import Guardrails


def _comparison_store(to: str, st: CliState) -> tuple[Backend, str | None]:
    """The backend and target ``--to`` names, checked before any work: a readable target, an
    installed scheme, and a backend that implements ``write_comparison``."""
    from .. import plugins
    from ..backends.base import BaseBackend
    from ..errors import UsageError
    from ..refs import parse_target

    scheme, target = parse_target(to)
    backend = plugins.get_backend(scheme, st.backend_options())
    impl = getattr(type(backend), "write_comparison", None)
    if impl is None:
        impl = getattr(backend, "write_comparison", None)
    if not callable(impl) or impl is BaseBackend.write_comparison:
        raise UsageError(f"--to {to}: backend '{scheme}' cannot store comparisons; use a "
                         f"backend that can (e.g. mlflow:EXPERIMENT, wandb:ENTITY/PROJECT), "
                         f"or -o FILE to keep the report")
    return backend, target


def _dropping_bad_rows(source: str | None, g: Guardrails | None, column_map: dict[str, str],
                       traffic_mix: dict[str, float] | None, quiet: bool) -> Any:
    """``--drop-bad-rows``: an eval file evaluated as ``api.compare`` would, but with its bad
    rows dropped (noted on stderr) -> RunRecord. Stored runs and anything else: unchanged."""
    from pathlib import Path

    from ..api import _eval_kwargs, evaluate, record_from_eval
    from ..refs import parse_ref

    if source is None or parse_ref(source).scheme != "file":
        return source
    path = Path(parse_ref(source).locator)
    if not path.is_file():
        return source  # api.compare reports it
    res = evaluate(str(path), drop_bad_rows=True,
                   **_eval_kwargs(g, None, column_map, traffic_mix))
    note_dropped_rows(str(path), res, quiet)
    rec = record_from_eval(res, model=path.stem, run_name=path.name, guardrails=g)
    rec.ref = str(path)
    rec.run_id = path.stem
    return rec


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
              help="Reweight to a production traffic mix, e.g. de=0.3,en=0.7 (weights sum "
                   "to 1; a guardrails file's traffic_mix is normalized instead).")
@click.option("--reference-sample", default=None, type=click.Path(dir_okay=False),
              help="A production sample (eval-file format) to measure drift against.")
@click.option("--queries-per-day", type=float, default=None, metavar="N",
              help="Project daily and monthly serving cost of each run at N queries per day.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed for the bootstrap resamples.")
@click.option("--to", "to", default=None, metavar="TARGET",
              help="Also store the comparison in a backend (e.g. wandb:ENTITY/PROJECT).")
@click.option("--drop-bad-rows", is_flag=True,
              help="Eval files: drop invalid rows (reported on stderr) instead of failing.")
@click.pass_context
def compare_cmd(ctx: click.Context, baseline: str, candidate: str, guardrails: str | None,
                fmt: str, output: str | None, gate: str, allow_missing: bool,
                column_map: tuple[str, ...], traffic_mix: str | None,
                reference_sample: str | None, queries_per_day: float | None, seed: int,
                to: str | None, drop_bad_rows: bool) -> None:
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
    # bad input is refused before any work, and nothing is written until it is known good
    reporter = plugins.get_reporter(fmt)
    check_eval_sources(baseline, candidate, reference_sample)
    store = _comparison_store(to, st) if to else None
    g = load_guardrails(guardrails)
    mapping, mix = parse_mapping(column_map), parse_traffic_mix(traffic_mix)
    sources: list[Any] = [baseline, candidate, reference_sample]
    if drop_bad_rows:
        sources = [_dropping_bad_rows(s, g, mapping, mix, st.quiet) for s in sources]
    cmp = compare(sources[0], sources[1], g, gate, allow_missing=allow_missing,
                  options=st.backend_options(dict(g.metric_map) if g is not None else None),
                  column_map=mapping, traffic_mix=mix,
                  reference_sample=sources[2], queries_per_day=queries_per_day,
                  seed=seed)
    tty = sys.stdout.isatty() and not output
    width = os.get_terminal_size().columns if tty else 100
    text = reporter(cmp, ReportOptions(width=width, color=tty))
    if store is not None:
        from ..errors import ConfigError, InvalidReferenceError, UsageError

        backend, target = store
        try:
            where = backend.write_comparison(cmp, target)
        except (UsageError, InvalidReferenceError, ConfigError):
            raise  # a target only the backend can judge: bad input, so nothing is written
        except Exception:
            write_output(text, output)  # the backend failed: the report still gets out
            raise
        if not st.quiet:
            click.echo(f"comparison stored: {where}", err=True)
    write_output(text, output)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        md = plugins.get_reporter("markdown")(cmp, ReportOptions(width=100, color=False))
        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(md if md.endswith("\n") else md + "\n")
    if output and not st.quiet:
        click.echo(f"{cmp.verdict}: report written to {output}", err=True)
    ctx.exit(cmp.exit_code)
