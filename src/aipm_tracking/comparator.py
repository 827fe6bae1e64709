"""(baseline, candidate, guardrails) -> :class:`~aipm_tracking.schema.Comparison` (DESIGN §6).

The numbers (deltas, intervals, p-values) come from :func:`aipm_tracking.estimate.estimate_deltas`;
this module owns the decisions: absolute bounds, allowed regressions, the three gates, Holm's
correction across the tested guardrails, severities, and fail-closed handling of missing
metrics. It imports no backend and no renderer (the API layer fires the
``aipm_comparison_done`` event).

Verdict rules, per guardrail (``worsening`` = how much worse the candidate is, in the metric's
units; positive is worse):

* ``inconclusive``: the metric is missing on either run, or the estimator says the runs are not
  comparable on it (too few matched examples, different eval sets).
* ``breach``: the candidate's value is below ``min`` or above ``max`` (point value; ties pass).
  That is the candidate run's own (full-run) value: when the runs are paired on a matched
  subset of their examples, the delta and its interval are computed on the matched rows, but
  the bounds judge the whole candidate, and the row shows each run's own value (the reason
  then gives the matched-row values behind the delta).
* ``regression``: the worsening exceeds ``max_regression`` (absolute, or relative to
  |baseline|; with a zero baseline a relative margin allows no worsening at all). Under the
  ``confirmed`` gate the interval of the delta at the Holm-adjusted level must also lie
  wholly beyond the margin and, where the row has a p-value, the Holm-adjusted p-value must
  be at or below alpha (the interval and the test can disagree: Tango's interval inverts the
  uncorrected score test, the p-value is exact McNemar); otherwise the row is ``warn``
  ("not significant (p=…)", or "not confirmed beyond the margin (p=…)" when the
  difference is significant but the interval reaches back within the margin); under
  ``strict`` any row whose interval reaches beyond the margin is a regression
  (non-inferiority not shown); under ``point`` point estimates decide. Rows with point
  estimates only (summary-only runs) are decided on points under every gate.
* ``warn``: a ``breach``/``regression`` of a guardrail with ``severity: warn``, or an
  unconfirmed regression.
* ``improved``: better than the baseline by more than the tie tolerance and, when an
  interval exists (and the gate is not ``point``), the interval lies wholly on the better side
  of zero. Otherwise ``pass``.

Ties pass: every comparison allows ``1e-9 + 1e-9·max(|values|)`` of slack, so
``0.85`` against ``0.8 + 0.05`` passes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .estimate import DeltaEstimate, PairingInfo, comparable_ids, estimate_deltas
from .guardrails import Guardrail, Guardrails, Margin, load_guardrails
from .metrics import slice_metric_name, split_slice
from .schema import Comparison, MetricComparison, RunRecord, RunSummary

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .metrics import MetricRegistry

GATES = ("confirmed", "point", "strict")
#: Metrics reweighted to the production traffic mix are published as ``accuracy[mix=traffic]``.
MIX_SLICE = "mix=traffic"
EPS = 1e-9
DAYS_PER_MONTH = 30
MAX_CHANGED_EXAMPLES = 200
TEXT_COLUMNS = ("text", "input", "question", "prompt", "query", "output", "response")
_TEXT_LIMIT = 500


def _finite(x: float | None) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def _tol(*xs: float | None) -> float:
    """Tie tolerance: 1e-9 absolute plus 1e-9 relative to the largest magnitude involved."""
    return EPS + EPS * max((abs(x) for x in xs if _finite(x)), default=0.0)  # type: ignore[arg-type]


def _g(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _level_text(level: float) -> str:
    """``98.3%``; Holm levels close to 1 get the digits that keep them below 100%
    (``99.992%``, not ``100.0%``)."""
    pct = 100.0 * level
    for digits in range(1, 9):
        text = f"{pct:.{digits}f}"
        if float(text) < 100.0 or pct >= 100.0:
            return f"{text}%"
    return f"{math.floor(pct * 1e8) / 1e8:.8f}%"


def _ci_text(ci: tuple[float, float], level: float) -> str:
    return f"{_level_text(level)} CI [{_g(ci[0])}, {_g(ci[1])}]"


# -- Holm ------------------------------------------------------------------------------------

def holm_levels(p_values: Sequence[float], alpha: float) -> tuple[list[float], list[float]]:
    """Holm's step-down procedure (:func:`aipm_tracking.stats.holm`): per hypothesis (input
    order) the Holm-adjusted p-value and the confidence level at which to ask for its interval
    (``1 - alpha/(m - rank)`` while Holm rejects, the stopping level after)."""
    if len(p_values) == 0:
        return [], []
    from .stats import holm

    res = holm(list(p_values), alpha)
    return [float(x) for x in res.p_adjusted], [float(x) for x in res.level]


# -- one guardrail ---------------------------------------------------------------------------

@dataclass
class _Ctx:
    gate: str
    level: float | None  # confidence level for this row's interval (None: not tested)
    p_adj: float | None  # Holm-adjusted p-value (None: not adjusted; the row's own p decides)
    auto: bool  # no guardrails file: informative rows only
    alpha: float = 0.05
    #: The runs' own (full-run) values of the metric, when known: ``min``/``max`` are bounds
    #: on the candidate as a whole, and the row shows these values. The estimate's values
    #: may cover only the matched rows, on which the delta and its interval are computed.
    full_baseline: float | None = None
    full_candidate: float | None = None


def _missing(rail: Guardrail, est: DeltaEstimate | None, threshold: str) -> MetricComparison | None:
    if est is None:
        return _row(rail, None, None, None, "inconclusive", "metric missing on both runs",
                    threshold)
    b_ok, c_ok = _finite(est.baseline), _finite(est.candidate)
    if est.inconclusive:
        why = est.reason or "the runs are not comparable on this metric"
        return _row(rail, est, None, None, "inconclusive", f"not comparable: {why}", threshold)
    if not (b_ok and c_ok):
        side = ("both runs" if not (b_ok or c_ok) else "the baseline" if not b_ok
                else "the candidate")
        return _row(rail, est, None, None, "inconclusive", f"metric missing on {side}", threshold)
    return None


def _row(rail: Guardrail, est: DeltaEstimate | None, ci: tuple[float, float] | None,
         p: float | None, verdict: str, reason: str, threshold: str,
         shown: tuple[float, float] | None = None) -> MetricComparison:
    """The row; ``shown``: the (baseline, candidate) values to display when they are not the
    estimate's (the full runs' values, while ``delta`` stays on the matched rows)."""
    b = est.baseline if est is not None and _finite(est.baseline) else None
    c = est.candidate if est is not None and _finite(est.candidate) else None
    delta = None
    if est is not None and _finite(est.delta):
        delta = est.delta
    elif b is not None and c is not None:
        delta = c - b
    delta_rel = delta / abs(b) if delta is not None and b not in (None, 0) else None  # type: ignore[arg-type]
    if shown is not None:
        b, c = shown
    return MetricComparison(
        metric=rail.metric, direction=rail.direction, baseline=b, candidate=c, delta=delta,
        delta_rel=delta_rel, ci=ci, p_value=p, test=None if est is None else est.test,
        severity=rail.severity, verdict=verdict, reason=reason, threshold=threshold,
        slice=rail.slice, n=None if est is None else est.n)


def judge(rail: Guardrail, est: DeltaEstimate | None, ctx: _Ctx) -> MetricComparison:
    """The verdict of one guardrail given its delta estimate (see the module doc)."""
    threshold = "no guardrail (informative)" if ctx.auto else rail.describe()
    missing = _missing(rail, est, threshold)
    if missing is not None:
        return missing
    assert est is not None and est.baseline is not None and est.candidate is not None
    b, c = float(est.baseline), float(est.candidate)  # on the rows the delta compares
    # the runs' own values: what the row shows and what the absolute bounds judge
    fb = float(ctx.full_baseline) if _finite(ctx.full_baseline) else b  # type: ignore[arg-type]
    fc = float(ctx.full_candidate) if _finite(ctx.full_candidate) else c  # type: ignore[arg-type]
    subset = abs(fb - b) > _tol(fb, b) or abs(fc - c) > _tol(fc, c)
    delta = float(est.delta) if est.delta is not None and _finite(est.delta) else c - b
    sign = 1.0 if rail.direction == "higher" else -1.0
    worse = -sign * delta
    ci = est.ci_at(ctx.level) if ctx.level is not None else None
    p = est.p_value if _finite(est.p_value) else None
    use_ci = ci is not None and ctx.gate != "point"
    notes: list[str] = []
    if ci is None and (ctx.gate != "point" or est.test == "point"):  # §6: say so, any gate
        notes.append("point estimates only" + (f": {est.reason}" if est.reason else ""))
    p_txt = "" if p is None else f"p={p:.3g}" + ("" if ctx.p_adj is None or ctx.p_adj == p
                                                 else f", Holm-adjusted {ctx.p_adj:.3g}")
    # the test behind p, Holm-adjusted when it took part in Holm's correction
    p_test = None if p is None else (ctx.p_adj if _finite(ctx.p_adj) else p)
    p_test_txt = "" if p_test is None else (
        f"{'Holm-adjusted ' if p_test != p else ''}p={p_test:.3g} > alpha {ctx.alpha:g}")
    verdict, reason = "pass", ""

    # 1. absolute bounds on the candidate (the whole run, not only the matched rows)
    bound = rail.breached_bound(fc)
    if bound is not None:
        verdict, reason = "breach", f"{_g(fc)} is {bound}"
        if subset:
            reason += " (the candidate's full-run value)"

    # 2. allowed regression against the baseline
    margin = rail.max_regression
    if verdict == "pass" and margin is not None:
        verdict, reason = _regression(margin, b, c, worse, sign, ci if use_ci else None,
                                      ctx, p_txt, notes, p_test, p_test_txt,
                                      _test_name(est.test))

    # 3. improvement
    if verdict == "pass":
        better = -worse > _tol(b, c)
        ci_better = (not use_ci or ci is None
                     or min(sign * ci[0], sign * ci[1]) > _tol(ci[0], ci[1]))
        if better and ci_better:
            verdict, reason = "improved", f"better by {_g(abs(delta))}"
            if use_ci and ci is not None and ctx.level is not None:
                reason += f" ({_ci_text(ci, ctx.level)}{', ' + p_txt if p_txt else ''})"
        elif better:
            reason = (f"better by {_g(abs(delta))}, not significant"
                      f"{' (' + p_txt + ')' if p_txt else ''}")
        elif not reason:
            reason = "within guardrails" if not ctx.auto else "no worse than baseline"
            if worse > _tol(b, c):
                reason = f"worse by {_g(worse)}, within the allowed margin"

    if verdict in ("breach", "regression") and rail.severity == "warn":
        verdict, reason = "warn", f"severity warn: {reason}"
    if subset:
        rows = (f"the {est.n} matched examples" if est.n and est.test in _PAIRED_TESTS
                else "the rows compared")
        notes.append(f"baseline/candidate are the full runs' values; the delta is on {rows} "
                     f"(baseline {_g(b)}, candidate {_g(c)} there)")
    if notes:
        reason = f"{reason}; {'; '.join(notes)}" if reason else "; ".join(notes)
    return _row(rail, est, ci, p, verdict, reason, threshold, (fb, fc) if subset else None)


_PAIRED_TESTS = ("mcnemar-exact", "bootstrap-paired", "t-paired")


def _test_name(test: str) -> str:
    return {"mcnemar-exact": "the exact McNemar test",
            "bootstrap-paired": "the paired bootstrap test",
            "bootstrap-unpaired": "the bootstrap test",
            "t-paired": "the paired t-test",
            "welch-unpaired": "Welch's t-test",
            "wilson-unpaired": "the two-proportion z-test"}.get(test, "the test")


def _regression(margin: Margin, b: float, c: float, worse: float, sign: float,
                ci: tuple[float, float] | None, ctx: _Ctx, p_txt: str,
                notes: list[str], p_test: float | None = None, p_test_txt: str = "",
                test_name: str = "the test") -> tuple[str, str]:
    allowed = margin.allowed(b)
    tol = _tol(b, c, allowed)
    if margin.relative and b == 0:
        notes.append("baseline is 0: a relative margin allows no worsening")
    over = worse > allowed + tol
    what = f"worse by {_g(worse)} (allowed {_g(allowed)}"
    what += f" = {margin} of |{_g(b)}|)" if margin.relative else ")"
    if ci is None or ctx.level is None:
        return ("regression", what) if over else ("pass", "")
    w_lo, w_hi = sorted((-sign * ci[0], -sign * ci[1]))
    ci_txt = _ci_text(ci, ctx.level)
    if ctx.gate == "strict":
        if w_hi > allowed + tol:
            return "regression", (f"non-inferiority not shown: the {ci_txt} of the delta allows "
                                  f"a worsening up to {_g(w_hi)} > {_g(allowed)}")
        return "pass", ""
    if not over:
        return "pass", ""
    if w_lo > allowed + tol:
        # confirmed: the interval and the test behind p_value must agree. They can differ
        # (Tango's interval inverts the uncorrected score test, p is the exact McNemar
        # test), and with few discordant pairs the interval alone would block on data
        # that the reported p-value calls not significant.
        if p_test is not None and p_test > ctx.alpha:
            return "warn", (f"not significant ({p_txt}): {what}; the {ci_txt} lies beyond "
                            f"the margin, but {test_name} does not confirm it "
                            f"({p_test_txt})")
        return "regression", f"{what}; {ci_txt} lies beyond the margin" + (
            f" ({p_txt})" if p_txt else "")
    # a significant difference can still be within reach of the margin: say which it is
    lead = ("not confirmed beyond the margin" if p_test is not None and p_test <= ctx.alpha
            else "not significant")
    return "warn", (f"{lead} ({p_txt or 'no p-value'}): {what}, but the {ci_txt} "
                    f"does not lie wholly beyond the margin")


# -- the comparison ----------------------------------------------------------------------------

def _mapped(rec: RunRecord, metric_map: Mapping[str, str]) -> RunRecord:
    """A shallow copy of ``rec`` with foreign metric names renamed (per-slice names too)."""
    if not metric_map:
        return rec
    metrics = dict(rec.metrics)
    for name in list(metrics):
        base, sl = split_slice(name)
        canon = metric_map.get(name) or (metric_map.get(base) if sl is not None else None)
        if canon is None:
            continue
        target = canon if sl is None or name in metric_map else f"{canon}[{sl}]"
        if target not in metrics:
            metrics[target] = metrics.pop(name)
    return replace(rec, metrics=metrics, examples=rec.examples)


def _auto_rails(base: RunRecord, cand: RunRecord, registry: MetricRegistry) -> list[Guardrail]:
    """Without a guardrails file: every shared metric with a known direction, informative."""
    order = {d.name: i for i, d in enumerate(registry)}
    out = []
    for name in base.metrics:
        if name not in cand.metrics:
            continue
        d = registry.get(name)
        if d is None or d.direction not in ("higher", "lower"):
            continue
        out.append(Guardrail(metric=name, direction=d.direction, max_regression=Margin(0.0),
                             severity="warn", slice=split_slice(name)[1]))
    out.sort(key=lambda g: (order.get(g.base_metric, len(order)), g.slice is not None, g.metric))
    return out


def _mix_rails(g: Guardrails, base: RunRecord, cand: RunRecord) -> list[Guardrail]:
    """Traffic mix: each whole-eval-set guardrail also judges ``metric[mix=traffic]`` (what
    production users would see) when both runs carry it and the file does not guard it."""
    explicit = {r.metric for r in g.guardrails}
    out = []
    for r in g.guardrails:
        name = slice_metric_name(r.metric, MIX_SLICE)
        if (r.slice is None and name not in explicit and name in base.metrics
                and name in cand.metrics):
            out.append(replace(r, metric=name, slice=MIX_SLICE, line=None))
    return out


def _warnings(base: RunRecord, cand: RunRecord, g: Guardrails | None) -> list[str]:
    out = []
    hashes = [("baseline", base.guardrails_hash), ("candidate", cand.guardrails_hash),
              ("this comparison", g.hash if g is not None else None)]
    known = [(who, h) for who, h in hashes if h]
    if len({h for _w, h in known}) > 1:
        out.append("criteria moved after training: guardrails hash "
                   + ", ".join(f"{h} ({who})" for who, h in known))
    for field_ in ("name", "version", "digest"):
        bv, cv = getattr(base.dataset, field_), getattr(cand.dataset, field_)
        if bv and cv and bv != cv:
            out.append(f"eval sets differ: dataset {field_} {bv!r} (baseline) vs {cv!r} "
                       f"(candidate); deltas may reflect the data, not the model")
            break
    return out


def _finite_metrics(rec: RunRecord) -> dict[str, float | None]:
    """A run's summary metrics as JSON-able floats (NaN/inf -> None), for reports."""
    return {k: (mv.value if math.isfinite(mv.value) else None) for k, mv in rec.metrics.items()}


def compare_runs(baseline: RunRecord, candidate: RunRecord,
                 guardrails: Guardrails | str | Mapping[str, Any] | None = None, *,
                 gate: str = "confirmed", allow_missing: bool = False,
                 registry: MetricRegistry | None = None, seed: int = 0, n_boot: int = 1000,
                 queries_per_day: float | None = None,
                 reference_sample: pd.DataFrame | None = None) -> Comparison:
    """Hold ``candidate`` against ``baseline`` under ``guardrails`` -> :class:`Comparison`."""
    if gate not in GATES:
        raise UsageError(f"unknown gate {gate!r} (expected one of: {', '.join(GATES)})")
    if queries_per_day is not None and not (_finite(queries_per_day) and queries_per_day >= 0):
        raise UsageError(f"--queries-per-day must be a number >= 0, got {queries_per_day!r}")
    g = None if guardrails is None else load_guardrails(guardrails, registry)  # type: ignore[arg-type]
    metric_map = dict(g.metric_map) if g is not None else {}
    base, cand = _mapped(baseline, metric_map), _mapped(candidate, metric_map)
    if g is not None:
        rails = list(g.guardrails) + _mix_rails(g, base, cand)
    else:
        if registry is None:
            from .plugins import metric_registry

            registry = metric_registry()
        rails = _auto_rails(base, cand, registry)
    alpha = g.alpha if g is not None else 0.05
    warnings = _warnings(base, cand, g)
    details: dict[str, Any] = {"baseline_details": base.details,
                               "candidate_details": cand.details,
                               "baseline_metrics": _finite_metrics(base),
                               "candidate_metrics": _finite_metrics(cand)}

    drift_metrics: dict[str, float] = {}
    if base.examples is not None and cand.examples is not None:
        details["changed_examples"] = changed_examples(base.examples, cand.examples,
                                                       MAX_CHANGED_EXAMPLES)
        drift_dict, drift_metrics, drift_warning = drift(base.examples, cand.examples,
                                                         reference_sample)
        if drift_dict is not None:
            details["drift"] = drift_dict
        if drift_warning:
            warnings.append(drift_warning)
    if queries_per_day is not None:
        details["cost_projection"], cost_warn = cost_projection(base, cand, queries_per_day,
                                                                DAYS_PER_MONTH)
        warnings.extend(cost_warn)

    est_names = [r.metric for r in rails if r.metric not in drift_metrics]
    ests: dict[str, DeltaEstimate] = {}
    pairing = PairingInfo(paired=False, reason="no metrics to estimate")
    if est_names:
        ests, pairing = estimate_deltas(
            base, cand, est_names,
            fallback_threshold=g.fallback_threshold if g is not None else _threshold(base),
            seed=seed, n_boot=n_boot)
    for r in rails:
        e = ests.get(r.metric)
        if r.metric in drift_metrics:
            ests[r.metric] = _drift_estimate(r.metric, drift_metrics)
        elif r.base_metric.startswith("psi_") and (
                e is None or not (_finite(e.baseline) and _finite(e.candidate))):
            ests[r.metric] = _drift_estimate(r.metric, {})
    details["pairing"] = pairing.to_dict()

    tested = [r.metric for r in rails if (e := ests.get(r.metric)) is not None
              and not e.inconclusive and e.ci_fn is not None and _finite(e.p_value)
              and _finite(e.baseline) and _finite(e.candidate)]
    p_adj, levels = holm_levels([float(ests[m].p_value) for m in tested], alpha)  # type: ignore[arg-type]
    by_metric = {m: (lv, pa) for m, lv, pa in zip(tested, levels, p_adj, strict=True)}
    rows = []
    for r in rails:
        e = ests.get(r.metric)
        untested = (None, None) if e is None or e.ci_fn is None else (1.0 - alpha, None)
        level, pa = by_metric.get(r.metric, untested)  # an interval without a p-value: 1-alpha
        full = ((None, None) if e is None or e.test == "psi"
                else (base.metric(r.metric), cand.metric(r.metric)))
        rows.append(judge(r, e, _Ctx(gate, level, pa, g is None, alpha, *full)))
    missing = [row.metric for row in rows if row.verdict == "inconclusive"]
    if missing and g is None:
        # No guardrails file: every row is informative, nothing is guardrailed, so rows the
        # runs cannot be compared on do not fail the comparison (exit 3 is for a guardrailed
        # metric, DESIGN §6); Comparison reads allow_missing for that.
        allow_missing = True
        warnings.append("no guardrails: not comparable, shown for information: "
                        + ", ".join(missing))
    elif missing and allow_missing:
        warnings.append("--allow-missing: not judged (inconclusive): " + ", ".join(missing))
    return Comparison(
        baseline=RunSummary.of(baseline), candidate=RunSummary.of(candidate), metrics=rows,
        warnings=warnings, gate=gate, alpha=alpha, allow_missing=allow_missing,
        guardrails_name=g.name if g is not None else None,
        guardrails_hash=g.hash if g is not None else None, details=details)


def _threshold(rec: RunRecord) -> float:
    thr = rec.details.get("fallback_threshold", rec.config.get("fallback_threshold", 0.5))
    try:
        return float(thr)
    except (TypeError, ValueError):
        return 0.5


def _drift_estimate(metric: str, drift_metrics: Mapping[str, float]) -> DeltaEstimate:
    """Drift metrics (``psi_*``) describe the candidate's eval set against the baseline's:
    a single value, judged on its bounds only."""
    v = drift_metrics.get(metric)
    if v is None:
        return DeltaEstimate(None, None, None, inconclusive=True,
                             reason="no drift value (needs per-example tables on both runs)")
    return DeltaEstimate(0.0, float(v), float(v), test="psi", reason="drift index")


# -- extras: changed examples, drift, cost projection -----------------------------------------

def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    item = getattr(v, "item", None)
    if callable(item):
        try:
            return _jsonable(item())
        except (ValueError, TypeError):
            pass
    return str(v)


def changed_examples(base: pd.DataFrame, cand: pd.DataFrame,
                     limit: int = MAX_CHANGED_EXAMPLES) -> list[dict[str, Any]]:
    """The first ``limit`` examples (baseline order) whose correctness differs between runs."""
    need = {"example_id", "correct"}
    if not need <= set(base.columns) or not need <= set(cand.columns):
        return []
    cols_b = [c for c in ("example_id", "label", "prediction", "correct", "slice",
                          *TEXT_COLUMNS) if c in base.columns]
    cols_c = [c for c in ("example_id", "prediction", "correct") if c in cand.columns]
    b = base[cols_b].drop_duplicates("example_id")
    c = cand[cols_c].drop_duplicates("example_id")
    ids_b, ids_c = comparable_ids(b["example_id"], c["example_id"])  # 7 against "7"
    if ids_b is not b["example_id"]:
        b = b.assign(example_id=ids_b)
        c = c.assign(example_id=ids_c)
    m = b.merge(c, on="example_id", how="inner", suffixes=("_b", "_c"), sort=False)
    changed = m[m["correct_b"].astype(bool) != m["correct_c"].astype(bool)].head(limit)
    out = []
    for rec in changed.to_dict(orient="records"):
        row = {"example_id": _jsonable(rec["example_id"]),
               "label": _jsonable(rec.get("label")),
               "baseline_prediction": _jsonable(rec.get("prediction_b")),
               "candidate_prediction": _jsonable(rec.get("prediction_c")),
               "baseline_correct": bool(rec["correct_b"]),
               "candidate_correct": bool(rec["correct_c"]),
               "slice": _jsonable(rec.get("slice"))}
        for t in TEXT_COLUMNS:
            if t in rec and rec[t] is not None:
                text = str(rec[t])
                row[t] = text if len(text) <= _TEXT_LIMIT else text[:_TEXT_LIMIT] + "…"
        out.append(row)
    return out


def drift(base: pd.DataFrame, cand: pd.DataFrame, reference: pd.DataFrame | None,
          ) -> tuple[dict[str, Any] | None, dict[str, float], str | None]:
    """PSI of the two eval sets (and of the candidate against a production ``reference``):
    (details, ``psi_*`` metrics the guardrails can bound, warning)."""
    from .drift import drift_report

    rep = drift_report(base, cand, reference)
    psi = {str(k): float(v) for k, v in rep.items() if str(k).startswith("psi_") and _finite(v)}
    warning = None
    if reference is not None and not any(k.endswith("_vs_reference") for k in psi):
        warning = ("--reference-sample: no column in common with the eval sets "
                   "(confidence, prediction, slice); no drift against it")
    return dict(rep), psi, warning


def cost_projection(base: RunRecord, cand: RunRecord, queries_per_day: float,
                    days: int = DAYS_PER_MONTH) -> tuple[dict[str, Any], list[str]]:
    """Daily and monthly serving cost of each run at ``queries_per_day``, and the delta."""
    out: dict[str, Any] = {"queries_per_day": queries_per_day, "days_per_month": days}
    warns = []
    for side, rec in (("baseline", base), ("candidate", cand)):
        cpq = rec.metric("cost_per_query_usd")
        if not _finite(cpq):
            out[side] = None
            warns.append(f"cost projection: the {side} has no cost_per_query_usd")
            continue
        assert cpq is not None
        daily = cpq * queries_per_day
        out[side] = {"cost_per_query_usd": cpq, "daily_usd": daily, "monthly_usd": daily * days}
    if out["baseline"] and out["candidate"]:
        dd = out["candidate"]["daily_usd"] - out["baseline"]["daily_usd"]
        out["delta"] = {"daily_usd": dd, "monthly_usd": dd * days}
    else:
        out["delta"] = None
    return out, warns
