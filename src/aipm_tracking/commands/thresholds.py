"""``aipm thresholds EVAL_OR_REF --max-risk R``: the fallback threshold to ship."""

from __future__ import annotations

import json
from typing import Any

import click

from ._common import check_eval_sources, map_option, note_dropped_rows, state


def _recommend_for_run(source: str, max_risk: float, alpha: float,
                       column_map: dict[str, str], st: Any,
                       drop_bad_rows: bool = False) -> tuple[dict[str, Any], str]:
    from ..errors import DataError
    from ..refs import parse_ref

    ref = parse_ref(source)
    if ref.scheme == "file":
        from ..evaluation import evaluate

        res = evaluate(ref.locator, column_map=column_map or None, max_risk=max_risk,
                       risk_alpha=alpha, keep_examples=False, drop_bad_rows=drop_bad_rows)
        note_dropped_rows(ref.locator, res)  # dropped, never silently
        rec = res.details.get("threshold_recommendation")
        if rec is None:
            raise DataError(f"{ref.locator}: thresholds need label, prediction and confidence "
                            f"columns")
        return rec, ref.locator
    from ..api import load_run
    from ..selective import recommend_threshold

    run = load_run(source, options=st.backend_options(), column_map=column_map or None)
    ex = run.examples
    if ex is None:
        raise DataError(f"{source}: the run has no per-example data; thresholds need it")
    if "correct" not in ex.columns and {"label", "prediction"} <= set(ex.columns):
        ex = ex.assign(correct=ex["label"].to_numpy() == ex["prediction"].to_numpy())
    if "correct" not in ex.columns or "confidence" not in ex.columns:
        raise DataError(f"{source}: the run's per-example data lacks correct/confidence columns")
    cost = ex["cost_usd"].to_numpy(dtype=float) if "cost_usd" in ex.columns else None
    r = recommend_threshold(ex["correct"].to_numpy(dtype=bool),
                            ex["confidence"].to_numpy(dtype=float), max_risk, alpha, cost)
    return r.to_dict(), run.ref or source


def _fmt(x: Any, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}g}" if isinstance(x, float) else str(x)


@click.command("thresholds")
@click.argument("source", metavar="EVAL_OR_REF")
@click.option("--max-risk", type=float, required=True,
              help="Highest acceptable error rate among answered (non-fallback) queries.")
@click.option("--alpha", type=float, default=0.05, show_default=True,
              help="With probability at least 1 - alpha, the recommended threshold's true "
                   "error rate among answered queries is within --max-risk (exact binomial "
                   "tests, corrected for testing every threshold).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@map_option
@click.option("--drop-bad-rows", is_flag=True,
              help="Eval file: drop invalid rows (reported on stderr) instead of failing.")
@click.pass_context
def thresholds_cmd(ctx: click.Context, source: str, max_risk: float, alpha: float, fmt: str,
                   column_map: tuple[str, ...], drop_bad_rows: bool) -> None:
    """Recommend the confidence threshold with the lowest fallback rate that a multiple test
    over all thresholds certifies: with probability at least 1 - alpha its true error rate
    among answered queries is within --max-risk (the upper bound shown is its one-sided
    Clopper-Pearson bound).

    EVAL_OR_REF is an eval file (.csv/.parquet/.jsonl) or a run reference with per-example
    data. Queries with confidence >= threshold are answered; the rest fall back.

    \b
    Example:
      aipm thresholds eval.parquet --max-risk 0.05
    Exit 0 when a threshold meets the target, 1 when none does (the reason is printed).
    """
    from ..api import parse_mapping
    from ..errors import UsageError

    if not 0 < max_risk < 1:
        raise UsageError(f"--max-risk must be between 0 and 1, got {max_risk}")
    if not 0 < alpha < 0.5:
        raise UsageError(f"--alpha must be between 0 and 0.5, got {alpha}")
    check_eval_sources(source)
    rec, name = _recommend_for_run(source, max_risk, alpha, parse_mapping(column_map),
                                   state(ctx), drop_bad_rows)
    if fmt == "json":
        click.echo(json.dumps({"source": name, **rec}, indent=2, allow_nan=False))
    else:
        level = f"{100 * (1 - alpha):g}%"
        head = "recommended threshold" if rec["found"] else "no threshold meets the target"
        click.echo(f"{head} for {name} (max risk {max_risk:g} with {level} confidence, "
                   f"Learn-then-Test over all thresholds)")
        rows = [("threshold", _fmt(rec["threshold"]) + "  (answer when confidence >= it)"),
                ("fallback rate", _fmt(rec["fallback_rate"])),
                ("coverage", _fmt(rec["coverage"])),
                ("selective accuracy", _fmt(rec["selective_accuracy"])),
                ("error rate (answered)", _fmt(rec["selective_risk"])),
                ("error upper bound", _fmt(rec["risk_upper"])),
                ("answered", f"{rec['n_answered']} of {rec['n']}")]
        if rec.get("cost_per_query_usd") is not None:
            rows.append(("cost per answered query", _fmt(rec["cost_per_query_usd"]) + " USD"))
        if not rec.get("exact", True):
            rows.append(("note", "thresholds on a 1/61440 confidence grid (streamed file)"))
        for k, v in rows:
            click.echo(f"  {k:<24}{v}")
    if not rec["found"]:
        click.echo(f"aipm: {rec['reason']}", err=True)
        ctx.exit(1)
