"""`aipm thresholds` / ``recommend_threshold``: the statistical guarantee.

The promise: with probability at least ``1 - alpha`` over the eval set, the true error rate
among answered queries at the recommended threshold is ``<= max_risk``. The simulations draw
many eval sets from risk curves where we know the true selective risk ``R(t)`` of every
threshold, and count how often the recommendation has ``R >= max_risk`` (a shade stricter
than the promise); with ``reps`` eval sets that rate must stay within ``alpha + 3`` standard
errors. (The former per-threshold Wilson bound, maximised over thresholds, broke the promise
in 9-19% of eval sets.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import beta

from aipm_tracking.evaluation import evaluate
from aipm_tracking.selective import recommend_threshold

MAX_RISK, ALPHA = 0.05, 0.05


def _dip(n: int) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[float], float]]:
    """A curve that is not monotone, shaped against the test's first starting point (the
    86th most confident row, the fewest that can pass at alpha/4): errors above it, none
    around it (where that row falls), then a rate just above the target. Every threshold's
    risk is above the target."""
    m1 = next(m for m in range(1, 10**5) if (1 - MAX_RISK) ** m <= ALPHA / 4)
    w = m1 / n
    a, b, eps = 0.85 * w, 1.05 * w, 0.002
    h = MAX_RISK * b / a * (1 + eps)
    low = MAX_RISK * (1 + eps)

    def pi(conf: np.ndarray) -> np.ndarray:
        u = 1.0 - conf
        return np.where(u < a, h, np.where(u < b, 0.0, low))

    def risk(t: float) -> float:
        u = 1.0 - t
        mass = h * min(u, a) + low * max(0.0, u - b)
        return mass / u

    return pi, risk


#: name -> (n, reps, error probability as a function of confidence, true R(t))
SHAPES: dict[str, tuple[int, int, Callable[[np.ndarray], np.ndarray], Callable[[float], float]]]
SHAPES = {
    # every threshold's risk is 0.055: a valid procedure finds one in <= 5% of eval sets
    "flat-just-above": (1000, 1200, lambda c: np.full_like(c, 0.055), lambda t: 0.055),
    "flat-just-above-large-n": (10000, 300, lambda c: np.full_like(c, 0.055), lambda t: 0.055),
    # risk rises as the threshold is lowered, 0.051 at the top
    "rising": (1000, 1200, lambda c: 0.051 + 0.1 * (1 - c), lambda t: 0.051 + 0.05 * (1 - t)),
    # exactly at the target: the test's p-values are valid for R >= max_risk, so it may
    # certify a threshold in at most an alpha share of eval sets
    "flat-at-target": (1000, 1200, lambda c: np.full_like(c, 0.05), lambda t: 0.05),
    # crosses the target slowly: R(t) = 0.045 + 0.01 * (1 - t) <= 0.05 exactly for t >= 0.5
    "crossing": (2000, 1200, lambda c: 0.045 + 0.02 * (1 - c),
                 lambda t: 0.045 + 0.01 * (1 - t)),
    "dip-at-first-start": (1000, 1200, *_dip(1000)),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_guarantee_holds_by_simulation(shape: str) -> None:
    n, reps, pi, risk = SHAPES[shape]
    rng = np.random.default_rng(20240611 + list(SHAPES).index(shape))
    broken = 0
    for _ in range(reps):
        conf = rng.random(n)
        correct = rng.random(n) >= pi(conf)
        rec = recommend_threshold(correct, conf, MAX_RISK, ALPHA)
        if rec.found:
            assert rec.threshold is not None
            broken += risk(rec.threshold) >= MAX_RISK
    rate = broken / reps
    se = np.sqrt(ALPHA * (1 - ALPHA) / reps)
    assert rate <= ALPHA + 3 * se, f"{shape}: promise broken in {rate:.3f} of {reps} eval sets"


def _step_risk(t: float) -> float:
    """True R(t) for uniform confidence, error rate 0.02 at confidence >= 0.1, 0.5 below."""
    return 0.02 if t >= 0.1 else (0.02 * 0.9 + 0.5 * (0.1 - t)) / (1 - t)


@pytest.mark.parametrize("seed", range(4))
def test_power_when_risk_is_well_below_target(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 5000
    conf = rng.random(n)
    correct = rng.random(n) >= 0.02
    flat = recommend_threshold(correct, conf, MAX_RISK, ALPHA)
    assert flat.found and flat.coverage >= 0.9, flat.reason
    # the certificate is the exact (Clopper-Pearson) bound of the rows it answers
    assert flat.threshold is not None
    ans = conf >= flat.threshold
    k = int((~correct[ans]).sum())
    assert flat.risk_upper == pytest.approx(beta.ppf(1 - ALPHA, k + 1, ans.sum() - k),
                                            rel=1e-12)
    assert flat.risk_upper <= MAX_RISK
    # the rate is 0.02 down to confidence 0.1 and 0.5 below: the true risk crosses 0.05 at
    # t = 0.04 (coverage 0.96); a high-coverage threshold is certified
    correct = rng.random(n) >= np.where(conf >= 0.1, 0.02, 0.5)
    step = recommend_threshold(correct, conf, MAX_RISK, ALPHA)
    assert step.found and step.coverage >= 0.85, step.reason
    assert step.threshold is not None and _step_risk(step.threshold) <= 0.055
    ans = conf >= step.threshold
    k = int((~correct[ans]).sum())
    assert step.risk_upper == pytest.approx(beta.ppf(1 - ALPHA, k + 1, ans.sum() - k),
                                            rel=1e-12)


@pytest.mark.parametrize("max_risk,alpha", [(0.1, 0.05), (0.05, 0.1), (0.2, 0.01)])
def test_reported_bound_is_clopper_pearson(max_risk: float, alpha: float) -> None:
    rng = np.random.default_rng(7)
    n = 3000
    conf = np.round(rng.beta(4, 1.5, n), 3)  # ties
    good = rng.random(n) >= 0.15 * (1 - conf)
    bad = rng.random(n) >= 0.5
    for c, found in ((good, True), (bad, False)):  # found; not (then the closest threshold)
        rec = recommend_threshold(c, conf, max_risk, alpha)
        assert rec.found is found and rec.threshold is not None
        ans = conf >= rec.threshold
        k, m = int((~c[ans]).sum()), int(ans.sum())
        assert (m, rec.n, rec.alpha) == (rec.n_answered, n, alpha)
        assert rec.risk_upper == pytest.approx(beta.ppf(1 - alpha, k + 1, m - k), rel=1e-12)
        assert rec.selective_risk == pytest.approx(k / m)
        if found:
            assert rec.risk_upper <= max_risk
        else:
            assert "no threshold" in rec.reason

def test_closest_threshold_is_deterministic_when_nothing_passes() -> None:
    """All wrong: every bound is 1 (not 1 minus rounding noise); the report is the lowest
    threshold (answer everything), whatever the row order."""
    rng = np.random.default_rng(3)
    conf = rng.random(400)
    wrong = np.zeros(400, bool)
    first = recommend_threshold(wrong, conf, MAX_RISK, ALPHA)
    assert not first.found and first.risk_upper == 1.0
    assert first.threshold == conf.min() and first.coverage == 1.0
    for _ in range(3):
        perm = rng.permutation(400)
        again = recommend_threshold(wrong[perm], conf[perm], MAX_RISK, ALPHA)
        assert again.to_dict() == first.to_dict()


def _eval_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    conf = rng.integers(0, 1001, n) / 1000  # on a 1/1000 grid: one value per histogram bin
    wrong = rng.random(n) < 0.3 * (1 - conf)
    return pd.DataFrame({"example_id": np.arange(n), "label": y,
                         "prediction": np.where(wrong, (y + 1) % 4, y), "confidence": conf,
                         "cost_usd": rng.random(n) * 1e-3})


def test_in_memory_and_streamed_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aipm_tracking import evaluation as ev

    df = _eval_frame(6000, 11)
    path = tmp_path / "eval.csv"
    df.to_csv(path, index=False)
    mem = evaluate(df, max_risk=MAX_RISK, risk_alpha=ALPHA).details["threshold_recommendation"]
    streamed = evaluate(path, chunk_rows=700, max_risk=MAX_RISK,
                        risk_alpha=ALPHA).details["threshold_recommendation"]
    assert mem["found"] and streamed == mem
    conf = df["confidence"].to_numpy()
    wrong = (df["label"] != df["prediction"]).to_numpy()
    ans = conf >= mem["threshold"]
    k, m = int(wrong[ans].sum()), int(ans.sum())
    assert m == mem["n_answered"]
    assert mem["risk_upper"] == pytest.approx(beta.ppf(1 - ALPHA, k + 1, m - k), rel=1e-12)
    assert mem["cost_per_query_usd"] == pytest.approx(df["cost_usd"][ans].mean())
    # past the exact-row limit the stream keeps a 1/61,440 confidence histogram; with one
    # confidence per bin its groups are the exact ones, so the test takes the same decisions
    monkeypatch.setattr(ev, "STREAM_EXACT_ROWS", 500)
    grid = evaluate(path, chunk_rows=700, max_risk=MAX_RISK,
                    risk_alpha=ALPHA).details["threshold_recommendation"]
    assert grid["exact"] is False
    for key in ("found", "n", "n_answered", "method"):
        assert grid[key] == mem[key], key
    for key in ("coverage", "risk_upper", "selective_risk", "cost_per_query_usd"):
        assert grid[key] == pytest.approx(mem[key], rel=1e-9), key
    assert mem["threshold"] - 1 / 61440 < grid["threshold"] <= mem["threshold"]
