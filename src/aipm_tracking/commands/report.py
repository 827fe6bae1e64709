"""``aipm report``: a single run's HTML report, or a model's trend across versions."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ._common import check_eval_sources, listing_from, state, write_output

if TYPE_CHECKING:  # pragma: no cover
    from ..context import CliState


@click.command("report")
@click.argument("ref", required=False)
@click.option("--model", "model", default=None, metavar="NAME",
              help="Trend report: every version of model NAME (instead of REF).")
@click.option("--guardrails", default=None, type=click.Path(dir_okay=False),
              help="Trend: the metrics and bounds to draw (default: every registry metric).")
@click.option("--from", "source", default="local", show_default=True, metavar="SCHEME[:TARGET]",
              help="Trend: where to list the model's runs (local, mlflow:EXPERIMENT, "
                   "wandb:ENTITY/PROJECT).")
@click.option("--format", "fmt", type=click.Choice(["html", "markdown"]), default="html",
              show_default=True, help="Output format.")
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False),
              help="Write to FILE (atomically) instead of stdout.")
@click.pass_context
def report_cmd(ctx: click.Context, ref: str | None, model: str | None,
               guardrails: str | None, source: str, fmt: str, output: str | None) -> None:
    """Render one run (REF) or a model's trend (--model NAME) as HTML or markdown.

    \b
    Examples:
      aipm report local:abc123 -o run.html
      aipm report --model support-bot --guardrails g.yaml -o trend.html
      aipm report --model support-bot --format markdown
    """
    from ..errors import UsageError

    st = state(ctx)
    if ref is None and model is None:
        raise UsageError("give either a run REF or --model NAME; neither was given (e.g. "
                         "aipm report local:RUN_ID, aipm report --model NAME)")
    if ref is not None and model is not None:
        raise UsageError("give either a run REF or --model NAME, not both")
    if model is None:
        assert ref is not None
        from ..api import load_run

        check_eval_sources(ref)
        # the run report shows metrics and details, never the per-example table: reading
        # it (millions of rows) would only cost memory
        rec = load_run(ref, options=st.backend_options(), with_examples=False)
        if fmt == "html":
            from ..report.html import render_run_html

            text = render_run_html(rec)
        else:
            from ..report.markdown import render_run_markdown

            text = render_run_markdown(rec)
    else:
        text = _trend(st, model, guardrails, source, fmt)
    write_output(text, output)
    if output and not st.quiet:
        click.echo(f"report written to {output}", err=True)


def _trend(st: CliState, model: str, guardrails: str | None, source: str, fmt: str) -> str:
    from .. import plugins
    from ..api import load_guardrails
    from ..errors import BackendError, RunNotFoundError, UsageError
    from ..progress import progress
    from ..refs import parse_target
    from ..report.trend import build_trend, render_trend_html, render_trend_markdown
    from ..schema import RunRecord

    if not model.strip():
        raise UsageError("--model needs a model name")
    g = load_guardrails(guardrails)
    scheme, target = parse_target(source)
    opts = st.backend_options(dict(g.metric_map) if g is not None else None)
    backend = plugins.get_backend(scheme, opts)
    quoted = '"' + model.replace("\\", "\\\\").replace('"', '\\"') + '"'
    quiet = st.quiet

    def read(flt: str | None) -> list[RunRecord]:
        listed = backend.list_runs(target, filter=flt)  # may be lazy: errors come while reading
        return [r for r in progress(listed, "reading runs", quiet) if r.model.name == model]

    with listing_from():
        try:
            runs = read(f"model = {quoted}")
        except (UsageError, BackendError):
            runs = read(None)  # a backend with its own filter syntax: filter here instead
    if not runs:
        raise RunNotFoundError(f"no runs of model {model!r} in {source}")
    if g is not None and g.metric_map:
        for r in runs:
            for foreign, canonical in g.metric_map.items():
                if foreign in r.metrics and canonical not in r.metrics:
                    r.metrics[canonical] = r.metrics.pop(foreign)
    trend = build_trend(model, runs, g, plugins.metric_registry())
    return render_trend_html(trend) if fmt == "html" else render_trend_markdown(trend)
