"""Property tests (hypothesis) of the comparator's verdicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aipm_tracking.comparator import compare_runs
from aipm_tracking.guardrails import load_guardrails
from aipm_tracking.metrics import default_registry
from aipm_tracking.schema import DatasetInfo, MetricValue, ModelInfo, RunRecord

REG = default_registry()
METRICS = [d.name for d in REG if d.direction in ("higher", "lower")]

values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
small = st.floats(min_value=0.0, max_value=1e3, allow_nan=False, allow_infinity=False)
gates = st.sampled_from(["confirmed", "point", "strict"])


def rec(metrics: dict[str, float], name: str = "r", examples: pd.DataFrame | None = None,
        ) -> RunRecord:
    return RunRecord(run_id=name, name=name, model=ModelInfo("m", name),
                     dataset=DatasetInfo("eval", "1"),
                     metrics={k: MetricValue(v) for k, v in metrics.items()}, examples=examples)


@st.composite
def rail_specs(draw: st.DrawFn) -> dict:
    spec: dict = {}
    if draw(st.booleans()):
        spec["min"] = draw(values)
    if draw(st.booleans()):
        spec["max"] = draw(values)
    if "min" in spec and "max" in spec and spec["min"] > spec["max"]:
        spec["min"], spec["max"] = spec["max"], spec["min"]
    if draw(st.booleans()):
        spec["max_regression"] = (draw(small) if draw(st.booleans())
                                  else f"{draw(st.integers(0, 200))}%")
    spec["severity"] = draw(st.sampled_from(["block", "warn"]))
    return spec


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict, dict, dict]:
    names = draw(st.lists(st.sampled_from(METRICS), min_size=1, max_size=6, unique=True))
    rails = {n: draw(rail_specs()) for n in names}
    base = {n: draw(values) for n in names}
    cand = {n: draw(values) for n in names}
    return rails, base, cand


@settings(max_examples=150, deadline=None)
@given(scenarios(), gates)
def test_a_run_compared_with_itself_never_regresses(sc: tuple[dict, dict, dict], gate: str) -> None:
    rails, base, _ = sc
    g = load_guardrails({"version": 1, "metrics": rails}, REG)
    r = rec(base)
    cmp = compare_runs(r, r, g, gate=gate, registry=REG)
    assert all(row.verdict not in ("regression", "improved") for row in cmp.metrics)
    # only absolute bounds can fail a run against itself
    for row in cmp.metrics:
        if row.verdict in ("breach", "warn"):
            assert "min" in row.reason or "max" in row.reason


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=30, max_value=300), st.integers(0, 10_000), gates)
def test_a_run_with_examples_compared_with_itself_never_regresses_on_its_estimate(n: int, seed: int,
                                                                   gate: str) -> None:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, n)
    pred = np.where(rng.random(n) < 0.8, label, (label + 1) % 3)
    conf = rng.uniform(0, 1, n)
    ex = pd.DataFrame({"example_id": np.arange(n), "label": label, "prediction": pred,
                       "confidence": conf, "correct": pred == label, "fallback": conf < 0.5,
                       "latency_ms": rng.gamma(2.0, 100.0, n)})
    metrics = {"accuracy": float((pred == label).mean()), "fallback_rate": float((conf < .5).mean()),
               "latency_ms_p95": float(np.percentile(ex.latency_ms, 95))}
    g = load_guardrails({"version": 1, "metrics": {
        "accuracy": {"max_regression": 0}, "fallback_rate": {"max_regression": "0%"},
        "latency_ms_p95": {"max_regression": 0}}}, REG)
    r = rec(metrics, examples=ex)
    cmp = compare_runs(r, r, g, gate=gate, registry=REG, n_boot=100)
    for row in cmp.metrics:
        assert row.delta == 0 and row.test != "point"
        if gate == "strict" and row.verdict == "regression":
            # strict blocks unless non-inferiority is *shown*; with a zero margin and a finite
            # sample the interval of a zero delta still has width, so it cannot be shown.
            assert row.reason.startswith("non-inferiority not shown")
            assert row.ci is not None and row.ci[0] < 0 < row.ci[1]
        else:
            assert row.verdict == "pass", row.reason


@st.composite
def regressions(draw: st.DrawFn) -> tuple[str, float, float, float]:
    """A metric, a margin, a baseline and a candidate worse than the margin allows."""
    name = draw(st.sampled_from(METRICS))
    d = REG.get(name)
    assert d is not None
    margin = draw(st.floats(min_value=0, max_value=100))
    b = draw(st.floats(min_value=-1e4, max_value=1e4))
    excess = draw(st.floats(min_value=1e-3, max_value=1e4))
    worse = margin + excess
    c = b - worse if d.direction == "higher" else b + worse
    return name, margin, b, c


@settings(max_examples=200, deadline=None)
@given(regressions())
def test_swapping_turns_a_regression_into_an_improvement(case: tuple[str, float, float, float],
                                                         ) -> None:
    name, margin, b, c = case
    g = load_guardrails({"version": 1, "metrics": {name: {"max_regression": margin}}}, REG)
    fwd = compare_runs(rec({name: b}), rec({name: c}), g, gate="point", registry=REG)
    back = compare_runs(rec({name: c}), rec({name: b}), g, gate="point", registry=REG)
    assert fwd.metrics[0].verdict == "regression" and fwd.exit_code == 1
    assert back.metrics[0].verdict == "improved" and back.exit_code == 0


@settings(max_examples=100, deadline=None)
@given(scenarios(), gates, st.randoms(use_true_random=False))
def test_verdicts_do_not_depend_on_metric_order(sc: tuple[dict, dict, dict], gate: str,
                                                rnd) -> None:
    rails, base, cand = sc
    # drop a metric from the candidate sometimes, so inconclusive rows take part too
    if len(cand) > 1 and rnd.random() < 0.3:
        cand.pop(next(iter(cand)))

    def shuffled(d: dict) -> dict:
        items = list(d.items())
        rnd.shuffle(items)
        return dict(items)

    g1 = load_guardrails({"version": 1, "metrics": rails}, REG)
    g2 = load_guardrails({"metrics": shuffled(rails), "version": 1}, REG)
    assert g1.hash == g2.hash
    c1 = compare_runs(rec(base), rec(cand), g1, gate=gate, registry=REG)
    c2 = compare_runs(rec(shuffled(base)), rec(shuffled(cand)), g2, gate=gate, registry=REG)
    v1 = {r.metric: (r.verdict, r.reason) for r in c1.metrics}
    v2 = {r.metric: (r.verdict, r.reason) for r in c2.metrics}
    assert v1 == v2 and c1.exit_code == c2.exit_code
