"""The comparator (DESIGN §6): verdicts, gates, Holm, margins, ties, warnings, details."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from aipm_tracking.comparator import (
    _Ctx,
    changed_examples,
    compare_runs,
    cost_projection,
    holm_levels,
    judge,
)
from aipm_tracking.errors import UsageError
from aipm_tracking.estimate import DeltaEstimate
from aipm_tracking.guardrails import Guardrail, Margin, parse_guardrails
from aipm_tracking.metrics import default_registry
from aipm_tracking.schema import DatasetInfo, MetricValue, ModelInfo, RunRecord

REG = default_registry()


def rec(metrics: dict[str, float], name: str = "r", *, examples: pd.DataFrame | None = None,
        guardrails_hash: str | None = None, dataset: DatasetInfo | None = None) -> RunRecord:
    return RunRecord(run_id=name, name=name, model=ModelInfo("m", name),
                     dataset=dataset or DatasetInfo("eval", "1"),
                     metrics={k: MetricValue(v) for k, v in metrics.items()},
                     guardrails_hash=guardrails_hash, ref=f"local:{name}", examples=examples,
                     details={"fallback_threshold": 0.5, "who": name})


def G(text: str):  # noqa: N802 - reads like a constructor
    return parse_guardrails("version: 1\n" + text, "g.yaml", REG)


def verdicts(cmp) -> dict[str, str]:
    return {r.metric: r.verdict for r in cmp.metrics}


def row(cmp, metric: str):
    return next(r for r in cmp.metrics if r.metric == metric)


# -- point estimates (summary-only runs) --------------------------------------------------------

def test_pass_improved_regression_breach_point_only() -> None:
    g = G("metrics:\n"
          "  accuracy: {min: 0.8, max_regression: 0.01}\n"
          "  latency_ms_p95: {max: 800, max_regression: '10%'}\n"
          "  ece: {max: 0.05}\n"
          "  fallback_rate: {max_regression: 0.02}\n")
    base = rec({"accuracy": 0.90, "latency_ms_p95": 500, "ece": 0.03, "fallback_rate": 0.10})
    cand = rec({"accuracy": 0.88, "latency_ms_p95": 540, "ece": 0.06, "fallback_rate": 0.05})
    cmp = compare_runs(base, cand, g)
    assert verdicts(cmp) == {"accuracy": "regression", "latency_ms_p95": "pass", "ece": "breach",
                             "fallback_rate": "improved"}
    acc = row(cmp, "accuracy")
    assert acc.delta == pytest.approx(-0.02) and acc.delta_rel == pytest.approx(-0.02 / 0.9)
    assert acc.test == "point" and acc.ci is None and acc.p_value is None
    assert "point estimates only" in acc.reason and "worse by 0.02" in acc.reason
    assert acc.threshold == "min 0.8 · max_regression 0.01"
    assert "above max 0.05" in row(cmp, "ece").reason
    assert cmp.exit_code == 1 and cmp.verdict == "fail"
    assert cmp.guardrails_hash == g.hash
    d = cmp.to_dict()
    assert d["verdict"] == "fail" and d["exit_code"] == 1
    assert set(d["metrics"][0]) >= {"metric", "direction", "baseline", "candidate", "delta",
                                    "delta_rel", "ci", "p_value", "test", "severity", "verdict",
                                    "reason"}
    assert cmp.details["baseline_details"]["who"] == "r"


def test_relative_margin_is_relative_to_abs_baseline() -> None:
    g = G("metrics:\n  latency_ms_p95: {max_regression: '10%'}\n")
    base = rec({"latency_ms_p95": 500})
    assert verdicts(compare_runs(base, rec({"latency_ms_p95": 550}), g, gate="point")) == {
        "latency_ms_p95": "pass"}  # exactly 10 %: a tie passes
    cmp = compare_runs(base, rec({"latency_ms_p95": 551}), g, gate="point")
    assert verdicts(cmp) == {"latency_ms_p95": "regression"}
    assert "allowed 50 = 10% of |500|" in cmp.metrics[0].reason
    # negative baseline for a higher-is-better metric: the margin uses |baseline|
    g2 = G("metrics:\n  csat: {max_regression: '10%'}\n")
    assert verdicts(compare_runs(rec({"csat": -2.0}), rec({"csat": -2.19}), g2)) == {"csat": "pass"}
    assert verdicts(compare_runs(rec({"csat": -2.0}), rec({"csat": -2.21}), g2)) == {
        "csat": "regression"}


def test_zero_baseline_with_relative_margin_allows_no_worsening() -> None:
    g = G("metrics:\n  override_rate: {max_regression: '50%'}\n")
    cmp = compare_runs(rec({"override_rate": 0.0}), rec({"override_rate": 0.001}), g)
    r = cmp.metrics[0]
    assert r.verdict == "regression" and r.delta_rel is None
    assert "baseline is 0: a relative margin allows no worsening" in r.reason
    same = compare_runs(rec({"override_rate": 0.0}), rec({"override_rate": 0.0}), g)
    assert same.metrics[0].verdict == "pass"


def test_ties_pass_with_epsilon() -> None:
    g = G("metrics:\n  accuracy: {min: 0.85, max_regression: 0.05}\n  ece: {max: 0.15}\n")
    cand = rec({"accuracy": 0.8 + 0.05, "ece": 0.1 + 0.05})  # 0.8500000000000001, 0.15000000000000002
    base = rec({"accuracy": 0.9, "ece": 0.1})
    assert 0.8 + 0.05 != 0.85
    cmp = compare_runs(base, cand, g)
    assert verdicts(cmp) == {"accuracy": "pass", "ece": "pass"}
    cmp = compare_runs(rec({"accuracy": 0.85 + 0.05, "ece": 0.1}),
                       rec({"accuracy": 0.85, "ece": 0.1}), g)
    assert verdicts(cmp)["accuracy"] == "pass"  # worsening exactly the margin
    cmp = compare_runs(base, rec({"accuracy": 0.8499, "ece": 0.1501}), g)
    assert verdicts(cmp) == {"accuracy": "breach", "ece": "breach"}


def test_severity_warn_never_blocks() -> None:
    g = G("metrics:\n  override_rate: {max: 0.05, severity: warn}\n"
          "  accuracy: {max_regression: 0, severity: warn}\n")
    cmp = compare_runs(rec({"override_rate": 0.01, "accuracy": 0.9}),
                       rec({"override_rate": 0.09, "accuracy": 0.8}), g)
    assert verdicts(cmp) == {"override_rate": "warn", "accuracy": "warn"}
    assert row(cmp, "override_rate").reason.startswith("severity warn: 0.09 is above max 0.05")
    assert cmp.exit_code == 0 and cmp.verdict == "pass"


def test_missing_metric_is_inconclusive_exit_3_and_allow_missing() -> None:
    g = G("metrics:\n  accuracy: {min: 0.8}\n  override_rate: {max: 0.1}\n  ece: {max: 0.1}\n")
    base = rec({"accuracy": 0.9, "override_rate": 0.02})
    cand = rec({"accuracy": 0.9, "ece": 0.02})
    cmp = compare_runs(base, cand, g)
    assert verdicts(cmp) == {"accuracy": "pass", "override_rate": "inconclusive",
                             "ece": "inconclusive"}
    assert row(cmp, "override_rate").reason == "metric missing on the candidate"
    assert row(cmp, "ece").reason == "metric missing on the baseline"
    assert cmp.exit_code == 3 and cmp.verdict == "inconclusive"
    allowed = compare_runs(base, cand, g, allow_missing=True)
    assert verdicts(allowed) == verdicts(cmp)  # the rows stay inconclusive
    assert allowed.exit_code == 0
    assert any("override_rate, ece" in w and "allow-missing" in w for w in allowed.warnings)
    # a blocking row still fails with --allow-missing
    worse = compare_runs(base, rec({"accuracy": 0.7}), g, allow_missing=True)
    assert worse.exit_code == 1


def test_nan_metric_counts_as_missing() -> None:
    g = G("metrics:\n  accuracy: {min: 0.8}\n")
    cmp = compare_runs(rec({"accuracy": 0.9}), rec({"accuracy": math.nan}), g)
    assert verdicts(cmp) == {"accuracy": "inconclusive"} and cmp.exit_code == 3
    assert cmp.to_dict()["metrics"][0]["candidate"] is None


def test_estimator_inconclusive_row() -> None:
    rail = Guardrail("accuracy", "higher", max_regression=Margin(0.01))
    est = DeltaEstimate(0.9, 0.8, -0.1, inconclusive=True, reason="only 12 examples matched")
    r = judge(rail, est, _Ctx("confirmed", None, None, False))
    assert r.verdict == "inconclusive" and "only 12 examples matched" in r.reason


def test_without_guardrails_rows_are_informative_and_missing_is_skipped() -> None:
    base = rec({"accuracy": 0.9, "latency_ms_p95": 500, "n_examples": 100, "only_here": 1.0,
                "ece": 0.05})
    cand = rec({"accuracy": 0.8, "latency_ms_p95": 400, "n_examples": 100, "ece": 0.05,
                "mystery": 3.0})
    cmp = compare_runs(base, cand, None, registry=REG)
    assert verdicts(cmp) == {"accuracy": "warn", "ece": "pass", "latency_ms_p95": "improved"}
    assert all(r.severity == "warn" for r in cmp.metrics)
    assert cmp.exit_code == 0 and cmp.guardrails_hash is None


def test_unknown_gate_and_bad_queries_per_day() -> None:
    with pytest.raises(UsageError, match="unknown gate"):
        compare_runs(rec({}), rec({}), None, gate="lenient", registry=REG)
    with pytest.raises(UsageError, match="queries-per-day"):
        compare_runs(rec({}), rec({}), None, registry=REG, queries_per_day=-5)


# -- gates with intervals ---------------------------------------------------------------------

def normal_estimate(b: float, c: float, se: float, n: int = 1000) -> DeltaEstimate:
    """A delta with a normal interval of standard error ``se`` (independent of our stats code)."""
    d = c - b
    p = float(2 * sps.norm.sf(abs(d) / se))

    def ci(level: float) -> tuple[float, float]:
        z = float(sps.norm.ppf(0.5 + level / 2))
        return d - z * se, d + z * se

    return DeltaEstimate(b, c, d, p_value=p, test="normal", n=n, ci_fn=ci)


RAIL = Guardrail("accuracy", "higher", max_regression=Margin(0.01))


@pytest.mark.parametrize("c, se, gate, expected", [
    # clearly worse than the margin, tight interval: every gate blocks
    (0.85, 0.005, "confirmed", "regression"),
    (0.85, 0.005, "point", "regression"),
    (0.85, 0.005, "strict", "regression"),
    # worse than the margin by point, but the interval reaches back inside it
    (0.885, 0.01, "confirmed", "warn"),
    (0.885, 0.01, "point", "regression"),
    (0.885, 0.01, "strict", "regression"),
    # within the margin by point, wide interval: only strict blocks (non-inferiority not shown)
    (0.895, 0.02, "confirmed", "pass"),
    (0.895, 0.02, "point", "pass"),
    (0.895, 0.02, "strict", "regression"),
    # within the margin, tight interval: non-inferiority shown
    (0.899, 0.001, "strict", "pass"),
    # better, interval wholly above zero: improved; better but unsure: pass (point: improved)
    (0.95, 0.01, "confirmed", "improved"),
    (0.905, 0.01, "confirmed", "pass"),
    (0.905, 0.01, "point", "improved"),
    (0.905, 0.01, "strict", "regression"),
    (0.905, 0.002, "strict", "improved"),
])
def test_gates(c: float, se: float, gate: str, expected: str) -> None:
    r = judge(RAIL, normal_estimate(0.9, c, se), _Ctx(gate, 0.95, None, False))
    assert r.verdict == expected, r.reason
    if gate != "point":
        assert r.ci is not None
    if expected == "warn":
        assert r.reason.startswith("not significant (p=")
    if gate == "strict" and expected == "regression" and c > 0.89:
        assert "non-inferiority not shown" in r.reason


def test_warn_reason_says_significant_but_not_beyond_the_margin() -> None:
    """Worse by 0.015 (margin 0.01), p = 0.0027: the difference is significant, but its 95%
    interval [0.005, 0.025] of the worsening reaches back within the margin. The reason used
    to read "not significant (p=0.0027)"."""
    r = judge(RAIL, normal_estimate(0.9, 0.885, 0.005), _Ctx("confirmed", 0.95, None, False))
    p = float(2 * sps.norm.sf(3.0))
    assert r.verdict == "warn" and r.p_value == pytest.approx(p)
    assert r.reason.startswith("not confirmed beyond the margin (p="), r.reason
    assert "does not lie wholly beyond the margin" in r.reason


def test_lower_is_better_direction_with_interval() -> None:
    rail = Guardrail("latency_ms_p95", "lower", max_regression=Margin(0.1, relative=True))
    est = normal_estimate(500.0, 600.0, 10.0)
    assert judge(rail, est, _Ctx("confirmed", 0.95, None, False)).verdict == "regression"
    est = normal_estimate(500.0, 560.0, 10.0)  # +60 > 50 allowed, but CI reaches 40.4
    assert judge(rail, est, _Ctx("confirmed", 0.95, None, False)).verdict == "warn"
    est = normal_estimate(500.0, 400.0, 10.0)
    assert judge(rail, est, _Ctx("confirmed", 0.95, None, False)).verdict == "improved"


def test_point_only_rows_use_points_under_every_gate() -> None:
    g = G("metrics:\n  accuracy: {max_regression: 0.01}\n")
    for gate in ("confirmed", "point", "strict"):
        cmp = compare_runs(rec({"accuracy": 0.9}), rec({"accuracy": 0.885}), g, gate=gate)
        assert verdicts(cmp) == {"accuracy": "regression"}
        assert "point estimates only" in cmp.metrics[0].reason  # §6: under every gate
        cmp = compare_runs(rec({"accuracy": 0.9}), rec({"accuracy": 0.895}), g, gate=gate)
        assert verdicts(cmp) == {"accuracy": "pass"}
        assert "point estimates only" in cmp.metrics[0].reason


def test_holm_levels_match_statsmodels() -> None:
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(3)
    p = [0.001, 0.004, 0.0105, 0.02, 0.03, 0.2, 0.5]
    rng.shuffle(p)
    adj, levels = holm_levels(p, 0.05)
    reject, p_holm, _, _ = multipletests(p, alpha=0.05, method="holm")
    assert adj == pytest.approx(list(p_holm))
    order = np.argsort(p)
    s = int(reject.sum())
    assert 0 < s < 7
    expected = [1 - 0.05 / (7 - k) if k < s else 1 - 0.05 / (7 - s) for k in range(7)]
    assert [levels[i] for i in order] == pytest.approx(expected)
    # at these levels the hypotheses Holm rejects are exactly those tested beyond 1 - level
    assert [p[i] <= 1 - levels[i] for i in range(7)] == list(reject)
    assert holm_levels([], 0.05) == ([], [])


def test_holm_level_reaches_the_interval() -> None:
    """A regression confirmed at 95 % may not be confirmed at the Holm-adjusted level."""
    est = normal_estimate(0.9, 0.87, 0.0095)  # worsening 0.03, margin 0.01: z = 2.1
    assert judge(RAIL, est, _Ctx("confirmed", 0.95, None, False)).verdict == "regression"
    r = judge(RAIL, est, _Ctx("confirmed", 1 - 0.05 / 3, 0.01, False))
    assert r.verdict == "warn" and "98.3% CI" in r.reason and "Holm-adjusted" in r.reason


# -- per-slice, metric map, psi, warnings --------------------------------------------------------

def test_per_slice_guardrails() -> None:
    g = G("metrics:\n  accuracy: {min: 0.8}\nslices:\n  \"slice=de\": {accuracy: {min: 0.85}}\n"
          "  \"slice=en\": {accuracy: {max_regression: 0.02}}\n")
    base = rec({"accuracy": 0.9, "accuracy[slice=de]": 0.88, "accuracy[slice=en]": 0.92})
    cand = rec({"accuracy": 0.9, "accuracy[slice=de]": 0.84, "accuracy[slice=en]": 0.93})
    cmp = compare_runs(base, cand, g)
    assert verdicts(cmp) == {"accuracy": "pass", "accuracy[slice=de]": "breach",
                             "accuracy[slice=en]": "improved"}
    de = row(cmp, "accuracy[slice=de]")
    assert de.slice == "slice=de" and de.direction == "higher" and de.threshold == "min 0.85"
    assert row(cmp, "accuracy").slice is None
    assert cmp.exit_code == 1


def test_metric_map_applies_to_foreign_runs() -> None:
    g = G('metric_map: {"val/acc": accuracy}\nmetrics:\n  accuracy: {max_regression: 0.01}\n')
    base = rec({"val/acc": 0.9, "val/acc[slice=de]": 0.8})
    cand = rec({"val/acc": 0.85})
    cmp = compare_runs(base, cand, g)
    assert verdicts(cmp) == {"accuracy": "regression"}
    assert "val/acc" in base.metrics  # the input runs are not modified


def test_psi_guardrail_without_per_example_data_is_inconclusive() -> None:
    g = G("metrics:\n  psi_confidence: {max: 0.2}\n")
    cmp = compare_runs(rec({"accuracy": 0.9}), rec({"accuracy": 0.9}), g)
    r = cmp.metrics[0]
    assert r.verdict == "inconclusive" and "per-example" in r.reason and cmp.exit_code == 3


def _examples(n: int, acc: float, seed: int, conf_shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, n)
    correct = rng.random(n) < acc
    pred = np.where(correct, label, (label + 1) % 3)
    conf = np.clip(rng.beta(5, 2, n) + conf_shift, 0, 1)
    return pd.DataFrame({"example_id": np.arange(n), "label": label, "prediction": pred,
                         "confidence": conf, "correct": correct, "fallback": conf < 0.5,
                         "slice": np.where(rng.random(n) < 0.5, "de", "en")})


def test_psi_guardrail_with_drift() -> None:
    g = G("metrics:\n  psi_confidence: {max: 0.2}\n")
    b_ex, same, shifted = _examples(4000, 0.8, 1), _examples(4000, 0.8, 2), \
        _examples(4000, 0.8, 3, conf_shift=-0.4)
    ok = compare_runs(rec({"accuracy": 0.8}, examples=b_ex), rec({"accuracy": 0.8}, examples=same), g)
    bad = compare_runs(rec({"accuracy": 0.8}, examples=b_ex),
                       rec({"accuracy": 0.8}, examples=shifted), g)
    assert verdicts(ok) == {"psi_confidence": "pass"}
    assert verdicts(bad) == {"psi_confidence": "breach"} and bad.exit_code == 1
    assert "drift" in bad.details and bad.metrics[0].candidate > 0.2


def test_criteria_moved_warning() -> None:
    g = G("metrics:\n  accuracy: {min: 0.8}\n")
    same = compare_runs(rec({"accuracy": 0.9}, guardrails_hash=g.hash),
                        rec({"accuracy": 0.9}, guardrails_hash=g.hash), g)
    assert not [w for w in same.warnings if "criteria moved" in w]
    moved = compare_runs(rec({"accuracy": 0.9}, guardrails_hash="aaaa"),
                         rec({"accuracy": 0.9}, guardrails_hash=g.hash), g)
    (w,) = [w for w in moved.warnings if "criteria moved after training" in w]
    assert "aaaa (baseline)" in w and f"{g.hash} (candidate)" in w
    # runs logged under the same hash, compared with a different file
    later = compare_runs(rec({"accuracy": 0.9}, guardrails_hash="bbbb"),
                         rec({"accuracy": 0.9}, guardrails_hash="bbbb"), g)
    assert any("criteria moved" in w and "(this comparison)" in w for w in later.warnings)


def test_dataset_version_warning() -> None:
    g = G("metrics:\n  accuracy: {min: 0.8}\n")
    cmp = compare_runs(rec({"accuracy": 0.9}, dataset=DatasetInfo("support", "2024-05")),
                       rec({"accuracy": 0.9}, dataset=DatasetInfo("support", "2024-06")), g)
    assert any("eval sets differ: dataset version '2024-05' (baseline) vs '2024-06'" in w
               for w in cmp.warnings)
    cmp = compare_runs(rec({"accuracy": 0.9}, dataset=DatasetInfo("s", "1", digest="a")),
                       rec({"accuracy": 0.9}, dataset=DatasetInfo("s", "1", digest="b")), g)
    assert any("digest" in w for w in cmp.warnings)
    cmp = compare_runs(rec({"accuracy": 0.9}), rec({"accuracy": 0.9}), g)
    assert cmp.warnings == []


def test_cost_projection() -> None:
    base = rec({"cost_per_query_usd": 0.002})
    cand = rec({"cost_per_query_usd": 0.0015})
    cmp = compare_runs(base, cand, None, registry=REG, queries_per_day=50_000)
    cp = cmp.details["cost_projection"]
    assert cp["baseline"]["daily_usd"] == pytest.approx(100.0)
    assert cp["baseline"]["monthly_usd"] == pytest.approx(3000.0)
    assert cp["candidate"]["daily_usd"] == pytest.approx(75.0)
    assert cp["delta"] == {"daily_usd": pytest.approx(-25.0), "monthly_usd": pytest.approx(-750.0)}
    out, warns = cost_projection(base, rec({}), 10)
    assert out["candidate"] is None and out["delta"] is None
    assert warns == ["cost projection: the candidate has no cost_per_query_usd"]
    assert "cost_projection" not in compare_runs(base, cand, None, registry=REG).details


def test_changed_examples() -> None:
    b = pd.DataFrame({"example_id": ["a", "b", "c", "d"], "label": [1, 2, 3, 4],
                      "prediction": [1, 2, 0, 0], "correct": [True, True, False, False],
                      "slice": ["de", "en", "de", "en"], "text": ["x" * 600, "y", "z", "w"]})
    c = pd.DataFrame({"example_id": ["d", "c", "b", "a"], "label": [4, 3, 2, 1],
                      "prediction": [4, 0, 9, 0], "correct": [True, False, False, False]})
    out = changed_examples(b, c)
    assert [r["example_id"] for r in out] == ["a", "b", "d"]
    a = out[0]
    assert a["label"] == 1 and a["baseline_prediction"] == 1 and a["candidate_prediction"] == 0
    assert a["baseline_correct"] is True and a["candidate_correct"] is False
    assert a["slice"] == "de" and len(a["text"]) == 501
    assert changed_examples(b, c, limit=1) == out[:1]
    cmp = compare_runs(rec({"accuracy": 0.5}, examples=b), rec({"accuracy": 0.25}, examples=c),
                       None, registry=REG)
    assert len(cmp.details["changed_examples"]) == 3
    assert "pairing" in cmp.details
    import json

    json.dumps(cmp.to_dict(), allow_nan=False)


# -- the figures: need the paired estimator (stats helper) -------------------------------

def _paired(n: int, b10: int, b01: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two aligned runs: ``b10`` examples only the baseline gets right, ``b01`` only the
    candidate; the rest right for both at 90 % accuracy."""
    rng = np.random.default_rng(seed)
    base_ok = rng.random(n) < 0.9
    cand_ok = base_ok.copy()
    right = np.flatnonzero(base_ok)
    wrong = np.flatnonzero(~base_ok)
    cand_ok[rng.choice(right, b10, replace=False)] = False
    cand_ok[rng.choice(wrong, b01, replace=False)] = True
    label = rng.integers(0, 5, n)
    conf = rng.uniform(0.6, 1.0, n)

    def table(ok: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({"example_id": np.arange(n), "label": label,
                             "prediction": np.where(ok, label, (label + 1) % 5),
                             "confidence": conf, "correct": ok, "fallback": conf < 0.5})

    return table(base_ok), table(cand_ok)


def _paired_runs(n: int, b10: int, b01: int) -> tuple[RunRecord, RunRecord]:
    b, c = _paired(n, b10, b01)
    return (rec({"accuracy": float(b.correct.mean()), "n_examples": n}, "base", examples=b),
            rec({"accuracy": float(c.correct.mean()), "n_examples": n}, "cand", examples=c))


GUARD_ACC = "metrics:\n  accuracy: {max_regression: 0.001}\n"


def test_half_point_drop_on_100k_paired_is_a_confirmed_regression() -> None:
    base, cand = _paired_runs(100_000, 2500, 2000)  # -0.5 points
    cmp = compare_runs(base, cand, G(GUARD_ACC), n_boot=200)
    r = cmp.metrics[0]
    assert r.delta == pytest.approx(-0.005)
    assert r.test != "point", "needs the paired estimator (estimate_deltas with per-example data)"
    assert r.verdict == "regression" and cmp.exit_code == 1
    assert r.p_value is not None and r.p_value < 1e-6
    assert r.ci is not None and r.ci[1] < -0.001
    assert cmp.details["pairing"]["matched"] == 100_000


def test_half_point_drop_on_200_paired_is_warn_not_significant() -> None:
    base, cand = _paired_runs(200, 5, 4)  # -1 example = -0.5 points
    cmp = compare_runs(base, cand, G(GUARD_ACC), n_boot=200)
    r = cmp.metrics[0]
    assert r.delta == pytest.approx(-0.005)
    assert r.test != "point", "needs the paired estimator (estimate_deltas with per-example data)"
    assert r.verdict == "warn" and r.reason.startswith("not significant (p=")
    assert cmp.exit_code == 0
    # the point gate (MLflow's behaviour) blocks the same data
    assert compare_runs(base, cand, G(GUARD_ACC), gate="point", n_boot=200).exit_code == 1


def test_example_guardrails_file_compares(tmp_path: Path) -> None:
    from aipm_tracking.guardrails import load_guardrails

    g = load_guardrails(Path(__file__).resolve().parents[1] / "examples" / "guardrails.yaml", REG)
    m: dict[str, Any] = {"accuracy": 0.93, "latency_ms_p95": 700, "cost_per_query_usd": 0.001,
                         "override_rate": 0.02, "ece": 0.03, "my_custom_score": 0.8,
                         "accuracy[slice=de]": 0.9}
    cmp = compare_runs(rec(m), rec({**m, "latency_ms_p95": 790}), g)
    assert verdicts(cmp)["latency_ms_p95"] == "regression"  # +90 ms > 10 % of 700
    assert cmp.exit_code == 1


# -- the `aipm compare` command ----------------------------------------------------------------

def _main(*args: str) -> int:
    from aipm_tracking.cli import main

    with pytest.raises(SystemExit) as ei:
        main(list(args))
    code = ei.value.code
    return 0 if code is None else int(code)


@pytest.fixture
def demo_files(tmp_path: Path) -> tuple[str, str, str]:
    """Two eval files of the demo (evaluated on the fly by the command) and its guardrails."""
    from aipm_tracking.demo_data import DEMO_GUARDRAILS, make_eval_set

    v1, v2, g = tmp_path / "v1.parquet", tmp_path / "v2.parquet", tmp_path / "g.yaml"
    make_eval_set(1, n=1500).to_parquet(v1)
    make_eval_set(2, n=1500).to_parquet(v2)
    g.write_text(DEMO_GUARDRAILS)
    return str(v1), str(v2), str(g)


def test_cli_compare_eval_files(demo_files: tuple[str, str, str],
                                capsys: pytest.CaptureFixture[str]) -> None:
    import json

    v1, v2, g = demo_files
    code = _main("compare", v1, v2, "--guardrails", g, "--format", "json")
    out = json.loads(capsys.readouterr().out)
    assert code == out["exit_code"] == 1
    by = {r["metric"]: r for r in out["metrics"]}
    assert by["accuracy[slice=de]"]["verdict"] in ("regression", "breach")
    assert by["accuracy[slice=de]"]["slice"] == "slice=de"
    assert by["accuracy"]["baseline"] == pytest.approx(
        float((pd.read_parquet(v1).eval("label == prediction")).mean()))


@pytest.fixture
def stored(tmp_path: Path) -> dict[str, str]:
    """Runs in the embedded store (summary metrics only) and guardrails files."""
    from aipm_tracking import plugins

    backend = plugins.get_backend("local")
    base = rec({"accuracy": 0.90, "latency_ms_p95": 500.0, "cost_per_query_usd": 0.002,
                "accuracy[slice=de]": 0.88}, "base")
    cand = rec({"accuracy": 0.86, "latency_ms_p95": 510.0, "cost_per_query_usd": 0.001,
                "accuracy[slice=de]": 0.80}, "cand")
    out = {"base": backend.write_run(base), "cand": backend.write_run(cand)}
    g = tmp_path / "g.yaml"
    g.write_text("version: 1\nmetrics:\n  accuracy: {min: 0.8, max_regression: 0.01}\n"
                 "  latency_ms_p95: {max_regression: '10%'}\n"
                 "slices:\n  \"slice=de\": {accuracy: {min: 0.85}}\n")
    m = tmp_path / "m.yaml"
    m.write_text("version: 1\nmetrics:\n  latency_ms_p95: {max: 800}\n  dau: {min: 10}\n")
    out.update(g=str(g), m=str(m))
    return out


def test_cli_compare_json_exit_code_and_event(stored: dict[str, str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from aipm_tracking import hookimpl, plugins

    seen: list[Any] = []

    class Listener:
        @hookimpl
        def aipm_comparison_done(self, comparison: Any) -> None:
            seen.append(comparison)

    plugins.get_plugin_manager().register(Listener(), name="test-listener")
    code = _main("compare", stored["base"], stored["cand"], "--guardrails", stored["g"],
                 "--format", "json", "--queries-per-day", "1000")
    out = json.loads(capsys.readouterr().out)
    assert out["schema"] == "aipm.comparison/1"
    assert code == out["exit_code"] == 1 and out["verdict"] == "fail"
    assert {r["metric"]: r["verdict"] for r in out["metrics"]} == {
        "accuracy": "regression", "latency_ms_p95": "pass", "accuracy[slice=de]": "breach"}
    assert out["baseline"]["ref"] == stored["base"]
    cp = out["details"]["cost_projection"]
    assert cp["delta"]["monthly_usd"] == pytest.approx(-30.0)
    assert len(seen) == 1 and seen[0].exit_code == 1


def test_cli_compare_output_file_and_step_summary(stored: dict[str, str], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    report = tmp_path / "out" / "report.json"
    report.parent.mkdir()
    code = _main("compare", stored["base"], stored["cand"], "--guardrails", stored["g"],
                 "--format", "json", "-o", str(report))
    assert code == 1
    assert capsys.readouterr().out == ""
    import json

    assert json.loads(report.read_text())["exit_code"] == 1
    s = summary.read_text()
    assert s.startswith("earlier step\n") and "accuracy" in s and len(s) > 40  # appended
    assert [p.name for p in report.parent.iterdir()] == ["report.json"]
    # the default format is the table
    assert _main("compare", stored["base"], stored["cand"], "--guardrails", stored["g"]) == 1
    assert "accuracy" in capsys.readouterr().out


def test_cli_compare_missing_metric_exit_3_and_allow_missing(
        stored: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    b, c, m = stored["base"], stored["cand"], stored["m"]
    assert _main("compare", b, c, "--guardrails", m) == 3
    assert _main("compare", b, c, "--guardrails", m, "--allow-missing") == 0
    assert _main("compare", b, c, "--guardrails", m, "--gate", "point") == 3
    capsys.readouterr()
    # without guardrails nothing blocks
    assert _main("compare", b, c, "--format", "json") == 0


def test_cli_compare_usage_errors(stored: dict[str, str], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    b, c = stored["base"], stored["cand"]
    assert _main("compare", b, c, "--format", "pdf") == 2
    assert "unknown format 'pdf'" in capsys.readouterr().err
    assert _main("compare", b, c, "--gate", "lenient") == 2
    assert _main("compare", b, "local:does-not-exist") == 2
    assert _main("compare", b, str(tmp_path / "nope.parquet")) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nmetrics:\n  latency_ms_p95: {max_regression: \"10 %\"}\n")
    assert _main("compare", b, c, "--guardrails", str(bad)) == 2
    assert f"{bad}:3: metrics.latency_ms_p95.max_regression" in capsys.readouterr().err


def test_cli_compare_to_a_backend(stored: dict[str, str],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """--to hands the comparison to the backend's write_comparison (a test plugin backend)."""
    from aipm_tracking import hookimpl, plugins
    from aipm_tracking.backends.base import BaseBackend

    written: list[tuple[Any, Any]] = []

    class MemBackend(BaseBackend):
        scheme = "memtest"

        def __init__(self, options: Any) -> None:
            self.options = options

        def write_comparison(self, comparison: Any, target: str | None = None) -> str:
            written.append((comparison, target))
            return f"memtest:{target}/cmp-1"

    class Plugin:
        @hookimpl
        def aipm_register_backends(self, register: Any) -> None:
            register("memtest", MemBackend)

    plugins.get_plugin_manager().register(Plugin(), name="test-memtest")
    code = _main("compare", stored["base"], stored["cand"], "--guardrails", stored["g"],
                 "--to", "memtest:team/proj", "--format", "json")
    assert code == 1
    assert len(written) == 1 and written[0][1] == "team/proj"
    assert written[0][0].exit_code == 1
    assert "memtest:team/proj/cmp-1" in capsys.readouterr().err


def test_reference_sample_drift_is_guardrailable() -> None:
    g = G("metrics:\n  psi_confidence_vs_reference: {direction: lower, max: 0.2}\n")
    b, c = _examples(3000, 0.8, 1), _examples(3000, 0.8, 2)
    prod = _examples(3000, 0.8, 4, conf_shift=-0.4)[["confidence", "slice"]]
    cmp = compare_runs(rec({"accuracy": 0.8}, examples=b), rec({"accuracy": 0.8}, examples=c), g,
                       reference_sample=prod)
    assert verdicts(cmp) == {"psi_confidence_vs_reference": "breach"}
    drift = cmp.details["drift"]
    assert drift["psi_confidence_vs_reference"] > 0.2 > drift["psi_confidence"]
    assert "psi_prediction_vs_reference" not in drift  # production has no prediction column
    # independent PSI of the candidate's confidence against production (baseline-quantile bins)
    edges = np.quantile(prod.confidence, np.linspace(0, 1, 11))
    pb = np.histogram(np.clip(prod.confidence, edges[0], edges[-1]), edges)[0] / len(prod)
    pc = np.histogram(np.clip(c.confidence, edges[0], edges[-1]), edges)[0] / len(c)
    pb, pc = np.maximum(pb, 1e-4), np.maximum(pc, 1e-4)
    assert drift["psi_confidence_vs_reference"] == pytest.approx(
        float(np.sum((pc - pb) * np.log(pc / pb))), rel=1e-6)
    no_cols = compare_runs(rec({"accuracy": 0.8}, examples=b), rec({"accuracy": 0.8}, examples=c),
                           None, registry=REG, reference_sample=pd.DataFrame({"x": [1, 2]}))
    assert any("--reference-sample" in w for w in no_cols.warnings)


def test_traffic_mix_rows_judge_what_users_would_see() -> None:
    g = G("traffic_mix: {de: 0.6, en: 0.4}\nmetrics:\n  accuracy: {min: 0.85}\n"
          "  ece: {max: 0.1}\nslices:\n  \"mix=traffic\": {fallback_rate: {max: 0.3}}\n")
    base = rec({"accuracy": 0.90, "accuracy[mix=traffic]": 0.88, "ece": 0.05,
                "fallback_rate[mix=traffic]": 0.1})
    cand = rec({"accuracy": 0.90, "accuracy[mix=traffic]": 0.84, "ece": 0.05,
                "fallback_rate[mix=traffic]": 0.2})
    cmp = compare_runs(base, cand, g)
    assert verdicts(cmp) == {"accuracy": "pass", "ece": "pass",
                             "fallback_rate[mix=traffic]": "pass",
                             "accuracy[mix=traffic]": "breach"}
    mix = row(cmp, "accuracy[mix=traffic]")
    assert mix.slice == "mix=traffic" and mix.threshold == "min 0.85"
    assert cmp.exit_code == 1


def test_cli_compare_traffic_mix(demo_files: tuple[str, str, str],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    import json

    v1, v2, g = demo_files
    _main("compare", v1, v2, "--guardrails", g, "--format", "json",
          "--traffic-mix", "de=0.8,en=0.1,fr=0.1")
    out = json.loads(capsys.readouterr().out)
    by = {r["metric"]: r for r in out["metrics"]}
    mixed = by["accuracy[mix=traffic]"]
    # independent: the mix-weighted mean of per-slice accuracies of each file
    for side, path in (("baseline", v1), ("candidate", v2)):
        df = pd.read_parquet(path)
        per = (df.label == df.prediction).groupby(df.slice).mean()
        assert mixed[side] == pytest.approx(0.8 * per["de"] + 0.1 * per["en"] + 0.1 * per["fr"])
    assert mixed["delta"] < by["accuracy"]["delta"]  # German users see the drop


# -- audit fixes (/tmp/audit-compare): gate vs exact test, full-run bounds, id types ------------

def _lost_won(n: int, lost: int, won: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Baseline right on every example but the last ``won``; the candidate loses the first
    ``lost`` and wins the last ``won``."""
    label = np.zeros(n, int)
    b = pd.DataFrame({"example_id": np.arange(n), "label": label, "prediction": label})
    b.loc[n - won:, "prediction"] = 1
    c = b.copy()
    c.loc[:lost - 1, "prediction"] = 1
    c.loc[n - won:, "prediction"] = 0
    return (b.assign(correct=b.label == b.prediction), c.assign(correct=c.label == c.prediction))


def _exact_p(lost: int, won: int) -> float:
    from statsmodels.stats.contingency_tables import mcnemar

    return float(mcnemar([[0, lost], [won, 0]], exact=True).pvalue)


def test_confirmed_gate_needs_the_exact_test_to_confirm() -> None:
    """n=1000, 4 lost, 0 won: Tango's interval excludes 0 but exact McNemar p = 0.125."""
    import aipm_tracking as aipm

    g = {"version": 1, "metrics": {"accuracy": {"max_regression": 0}}}
    b, c = _lost_won(1000, 4, 0)
    cmp = aipm.compare(b, c, guardrails=g)
    r = cmp.metrics[0]
    assert r.test == "mcnemar-exact" and r.p_value == pytest.approx(_exact_p(4, 0)) == 0.125
    assert r.ci is not None and r.ci[1] < 0  # the interval alone would block
    assert r.verdict == "warn" and cmp.exit_code == 0, r.reason
    assert "exact McNemar test does not confirm" in r.reason and "p=0.125" in r.reason
    # point and strict are unchanged: they block the same data
    assert aipm.compare(b, c, guardrails=g, gate="point").metrics[0].verdict == "regression"
    assert aipm.compare(b, c, guardrails=g, gate="strict").metrics[0].verdict == "regression"
    # a clearly significant loss still blocks under confirmed
    b, c = _lost_won(1000, 30, 2)
    cmp = aipm.compare(b, c, guardrails=g)
    r = cmp.metrics[0]
    assert r.p_value == pytest.approx(_exact_p(30, 2)) and r.p_value < 1e-5
    assert r.verdict == "regression" and cmp.exit_code == 1


@pytest.mark.parametrize("lost, won", [(5, 0), (6, 0), (7, 1), (9, 2), (11, 3), (22, 10),
                                       (25, 10), (8, 0)])
def test_confirmed_regression_iff_exact_mcnemar_rejects(lost: int, won: int) -> None:
    b, c = _lost_won(1000, lost, won)
    base = rec({"accuracy": float(b.correct.mean())}, "b", examples=b)
    cand = rec({"accuracy": float(c.correct.mean())}, "c", examples=c)
    r = compare_runs(base, cand, G("metrics:\n  accuracy: {max_regression: 0}\n")).metrics[0]
    p = _exact_p(lost, won)
    assert r.p_value == pytest.approx(p)
    assert r.verdict == ("regression" if p <= 0.05 else "warn"), (p, r.reason)


def test_holm_adjusted_p_must_confirm_too() -> None:
    """p below alpha but not after Holm: not a confirmed regression."""
    est = DeltaEstimate(0.9, 0.85, -0.05, p_value=0.03, test="mcnemar-exact", n=1000,
                        ci_fn=lambda level: (-0.08, -0.02))
    assert judge(RAIL, est, _Ctx("confirmed", 0.95, 0.03, False)).verdict == "regression"
    r = judge(RAIL, est, _Ctx("confirmed", 0.975, 0.06, False))
    assert r.verdict == "warn" and "Holm-adjusted 0.06" in r.reason
    assert judge(RAIL, est, _Ctx("confirmed", 0.975, 0.06, False, alpha=0.1)).verdict \
        == "regression"


def test_min_bound_judges_the_candidates_full_run() -> None:
    """The candidate adds 60 new examples, all wrong: 0.849 overall, 0.9 on the matched rows."""
    import aipm_tracking as aipm

    label = np.zeros(1000, int)
    b = pd.DataFrame({"example_id": range(1000), "label": label, "prediction": label})
    b.loc[:99, "prediction"] = 1  # baseline accuracy 0.900
    extra = pd.DataFrame({"example_id": range(1000, 1060), "label": 0, "prediction": 1})
    c = pd.concat([b, extra], ignore_index=True)
    full = aipm.evaluate(c).metrics["accuracy"]
    assert full == pytest.approx(900 / 1060)
    g = {"version": 1, "metrics": {"accuracy": {"min": 0.88, "max_regression": 0.01}}}
    for gate in ("confirmed", "point", "strict"):
        cmp = aipm.compare(b, c, guardrails=g, gate=gate)
        r = cmp.metrics[0]
        assert r.verdict == "breach" and cmp.exit_code == 1, (gate, r.reason)
        assert r.candidate == pytest.approx(full) and r.baseline == pytest.approx(0.9)
        assert r.delta == pytest.approx(0.0)  # the delta stays on the 1000 matched rows
        assert "full runs' values" in r.reason and "1000 matched examples" in r.reason
    d = aipm.compare(b, c, guardrails=g).to_dict()["metrics"][0]
    assert d["candidate"] == pytest.approx(full)


def test_full_rows_show_no_subset_note() -> None:
    b, c = _lost_won(1000, 30, 2)
    base = rec({"accuracy": float(b.correct.mean())}, "b", examples=b)
    cand = rec({"accuracy": float(c.correct.mean())}, "c", examples=c)
    r = compare_runs(base, cand, G("metrics:\n  accuracy: {min: 0.5}\n")).metrics[0]
    assert r.verdict == "pass" and "full runs" not in r.reason
    assert r.candidate == pytest.approx(cand.metric("accuracy"))


@pytest.mark.parametrize("ids", ["str", "float"])
def test_int_ids_against_other_id_types_pair(ids: str) -> None:
    n = 200
    lab = np.arange(n) % 3
    b = pd.DataFrame({"example_id": np.arange(n), "label": lab, "prediction": lab,
                      "correct": True})
    c = b.copy()
    c["example_id"] = [str(i) for i in range(n)] if ids == "str" else np.arange(n) * 1.0
    c.loc[:9, "prediction"] = 5
    c["correct"] = c["prediction"] == c["label"]
    c = c.iloc[::-1].reset_index(drop=True)  # another order: pairing must match on the ids
    out = changed_examples(b, c)
    assert sorted(str(r["example_id"]).removesuffix(".0") for r in out) == [
        str(i) for i in range(10)]
    base = rec({"accuracy": 1.0}, "b", examples=b)
    cand = rec({"accuracy": 0.95}, "c", examples=c)
    cmp = compare_runs(base, cand, G("metrics:\n  accuracy: {min: 0.5}\n"))
    assert cmp.details["pairing"]["matched"] == n and cmp.metrics[0].test == "mcnemar-exact"
    assert cmp.metrics[0].verdict == "pass" and len(cmp.details["changed_examples"]) == 10


def test_int_ids_against_unrelated_string_ids_are_inconclusive_not_a_crash() -> None:
    n = 200
    lab = np.arange(n) % 3
    b = pd.DataFrame({"example_id": np.arange(n), "label": lab, "prediction": lab,
                      "correct": True})
    c = b.assign(example_id=[f"q{i}" for i in range(n)])
    cmp = compare_runs(rec({"accuracy": 1.0}, examples=b), rec({"accuracy": 1.0}, examples=c),
                       G("metrics:\n  accuracy: {min: 0.5}\n"))
    assert verdicts(cmp) == {"accuracy": "inconclusive"} and cmp.exit_code == 3
    assert cmp.details["changed_examples"] == []


def test_without_guardrails_inconclusive_rows_do_not_exit_3() -> None:
    lab = np.arange(300) % 3
    b = pd.DataFrame({"example_id": range(300), "label": lab, "prediction": lab,
                      "correct": True})
    c = b.assign(example_id=range(5000, 5300))  # disjoint ids: not comparable
    base, cand = rec({"accuracy": 1.0}, examples=b), rec({"accuracy": 1.0}, examples=c)
    cmp = compare_runs(base, cand, None, registry=REG)
    assert verdicts(cmp)["accuracy"] == "inconclusive"
    assert cmp.exit_code == 0 and cmp.verdict == "pass"
    assert any("no guardrails" in w and "accuracy" in w for w in cmp.warnings)
    # the same runs under a guardrails file still fail closed
    assert compare_runs(base, cand, G("metrics:\n  accuracy: {min: 0.5}\n")).exit_code == 3


def test_missing_prediction_column_is_named_not_correct() -> None:
    import aipm_tracking as aipm

    n = 200
    lab = np.arange(n) % 3
    df = pd.DataFrame({"example_id": np.arange(n), "label": lab, "pred": lab,
                       "confidence": np.linspace(0.1, 0.99, n)})
    g = {"version": 1, "metrics": {"accuracy": {"min": 0.5}, "brier": {"max": 0.5}}}
    cmp = aipm.compare(df, df.copy(), guardrails=g)
    for r in cmp.metrics:
        assert r.verdict == "inconclusive"
        assert "column 'prediction' missing in the baseline's" in r.reason, r.reason
        assert "'correct' missing" not in r.reason and "'brier' missing" not in r.reason


def test_traffic_mix_applies_to_stored_runs(tmp_path: Path) -> None:
    """``--traffic-mix`` with stored runs used to be ignored without a word (only eval files
    went through the mix): their [mix=traffic] metrics now come from their tables."""
    import warnings

    import aipm_tracking as aipm
    from aipm_tracking.backends.base import BackendOptions
    from aipm_tracking.backends.local import LocalBackend
    from aipm_tracking.errors import AipmWarning

    rng = np.random.default_rng(5)
    files, refs = [], []
    for v, acc_de in ((1, 0.92), (2, 0.80)):
        n = 3000
        sl = rng.choice(["de", "en"], n, p=[0.2, 0.8])
        y = rng.integers(0, 3, n)
        ok = rng.random(n) < np.where(sl == "de", acc_de, 0.95)
        df = pd.DataFrame({"example_id": np.arange(n), "label": y,
                           "prediction": np.where(ok, y, (y + 1) % 3),
                           "confidence": rng.random(n), "slice": sl})
        path = tmp_path / f"e{v}.csv"
        df.to_csv(path, index=False)
        files.append(str(path))
        refs.append(aipm.log(str(path), model="m", model_version=str(v), store=str(tmp_path)))
    mix = {"de": 0.9, "en": 0.1}
    opts = BackendOptions(store=str(tmp_path))
    stored = aipm.compare(refs[0], refs[1], traffic_mix=mix, options=opts)
    direct = aipm.compare(files[0], files[1], traffic_mix=mix)
    got = {r.metric: (r.baseline, r.candidate) for r in stored.metrics if "mix=" in r.metric}
    want = {r.metric: (r.baseline, r.candidate) for r in direct.metrics if "mix=" in r.metric}
    assert got == want and "accuracy[mix=traffic]" in got
    for i, f in enumerate(files):  # independently: the slices' accuracies, re-weighted
        df = pd.read_csv(f)
        acc = (df["label"] == df["prediction"]).groupby(df["slice"]).mean()
        assert got["accuracy[mix=traffic]"][i] == pytest.approx(
            0.9 * acc["de"] + 0.1 * acc["en"])
    # a stored run without its table: the mix cannot be applied, and a warning says so
    be = LocalBackend(opts)
    bare = be.read_run(refs[0], with_examples=False)
    bare.run_id, bare.examples = "", None
    bare_ref = be.write_run(bare)
    with pytest.warns(AipmWarning, match="no per-example table: the traffic mix cannot"):
        cmp = aipm.compare(bare_ref, refs[1], traffic_mix=mix, options=opts)
    assert not [r for r in cmp.metrics if "mix=" in r.metric and r.baseline is not None]
    with warnings.catch_warnings():
        warnings.simplefilter("error", AipmWarning)
        aipm.compare(refs[0], refs[1], options=opts)  # no mix in effect: no warning


def test_holm_levels_near_one_are_not_printed_as_100_percent() -> None:
    import aipm_tracking as aipm

    rng = np.random.default_rng(8)
    n = 3000
    base = pd.DataFrame({"example_id": np.arange(n), "label": 1,
                         "prediction": (rng.random(n) < 0.8).astype(int),
                         "confidence": rng.random(n), "latency_ms": rng.lognormal(5, 1, n),
                         "slice": [f"s{i % 30:02d}" for i in range(n)]})
    cand = base.assign(prediction=(rng.random(n) < 0.78).astype(int))
    cmp = aipm.compare(base, cand, n_boot=200)
    texts = [r.reason for r in cmp.metrics if " CI [" in r.reason]
    assert len(cmp.metrics) > 200 and texts  # Holm over hundreds of rows: levels > 99.9%
    assert not any("100.0% CI" in t for t in texts)
    assert any("99.99" in t for t in texts)
