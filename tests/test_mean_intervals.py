"""Intervals and p-values of mean deltas (brier, latency_ms_mean, cost_per_query_usd).

Coverage is checked by simulation through the public path (``aipm.compare`` on two
DataFrames, and ``estimate_deltas`` on runs loaded from DataFrames for other levels): the
share of simulated datasets whose 95% interval contains the true delta must lie in
[0.92, 0.985]. The datasets are skewed costs / latencies (lognormal, sigma 1.75-2), where a
percentile bootstrap of the mean covered only 0.85-0.91. The analytic interval
(:func:`aipm_tracking.stats.mean_test`) is also checked against scipy's t-tests, and a
constant shift must get a p-value that survives Holm's correction across many guardrails.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

import aipm_tracking as aipm
from aipm_tracking.estimate import DeltaEstimate, estimate_deltas
from aipm_tracking.schema import MetricComparison
from aipm_tracking.stats import P_FLOOR, bootstrap_p_value

REPS_SMALL = 400  # datasets per coverage check at n=50 (~7 ms each through aipm.compare)
REPS_LARGE = 1000  # ... at n=1000, where the new interval's coverage (~0.94) is nearer 0.92
Gen = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]


def frames(b: np.ndarray, c: np.ndarray, col: str, paired: bool
           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-example tables with one value column; ``example_id`` only when paired."""
    fb, fc = pd.DataFrame({col: b}), pd.DataFrame({col: c})
    if paired:
        fb.insert(0, "example_id", np.arange(b.size))
        fc.insert(0, "example_id", np.arange(c.size))
    return fb, fc


def compare_row(b: np.ndarray, c: np.ndarray, col: str, metric: str, paired: bool
                ) -> MetricComparison:
    """``aipm.compare`` with one guardrail (so its interval is at 95%, no Holm widening)."""
    fb, fc = frames(b, c, col, paired)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tables without label / prediction columns
        cmp = aipm.compare(fb, fc, guardrails={"version": 1, "metrics": {
            metric: {"max_regression": "1000%"}}})
    (row,) = cmp.metrics
    return row


def estimate(b: np.ndarray, c: np.ndarray, col: str, metric: str, paired: bool
             ) -> DeltaEstimate:
    """The estimate the comparator works from (``estimate_deltas`` on the loaded runs)."""
    fb, fc = frames(b, c, col, paired)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rb, rc = aipm.load_run(fb), aipm.load_run(fc)
    return estimate_deltas(rb, rc, [metric])[0][metric]


# -- the simulated datasets (true delta known) --------------------------------------------------

S2 = 2.0  # lognormal sigma of the small-sample scenarios
S175 = 1.75  # ... of the n=1000 ones


def paired_correlated(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Paired costs, lognormal with sigma 2 in both runs, log-costs correlated 0.5 across
    the runs (the same example is dear in both); the candidate's log-costs 0.2 higher."""
    z1, z2 = rng.standard_normal((2, n))
    b = np.exp(S2 * z1) / 1000
    c = np.exp(S2 * (0.5 * z1 + np.sqrt(0.75) * z2) + 0.2) / 1000
    return b, c


def unpaired_scaled(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent latencies, lognormal sigma 2; the candidate 20% slower."""
    return 100 * rng.lognormal(0.0, S2, n), 120 * rng.lognormal(0.0, S2, n)


def paired_multiplied(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Paired costs (lognormal, sigma 1.75); the candidate costs 20% more on every example
    (a little noise): the per-example differences are as skewed as the costs."""
    b = rng.lognormal(0.0, S175, n) / 1000
    c = b * 1.2 * np.exp(rng.normal(0.0, 0.1, n) - 0.005)
    return b, c


def unpaired_one_skewed(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent latencies with the same mean: a steady baseline, a heavy-tailed candidate
    (lognormal, sigma 1.75). True delta 0."""
    m = np.exp(S175 ** 2 / 2)
    return (100 * rng.lognormal(np.log(m) - 0.005, 0.1, n),
            100 * rng.lognormal(0.0, S175, n))


TRUTH = {
    "paired_correlated": (np.exp(0.2) - 1.0) * np.exp(S2 ** 2 / 2) / 1000,
    "unpaired_scaled": 20 * np.exp(S2 ** 2 / 2),
    "paired_multiplied": 0.2 * np.exp(S175 ** 2 / 2) / 1000,
    "unpaired_one_skewed": 0.0,
}


def _covered(ci: tuple[float, float] | None, truth: float) -> bool:
    assert ci is not None
    return ci[0] <= truth <= ci[1]


# -- coverage ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("gen", "paired", "col", "metric", "test"), [
    (paired_correlated, True, "cost_usd", "cost_per_query_usd", "t-paired"),
    (unpaired_scaled, False, "latency_ms", "latency_ms_mean", "welch-unpaired"),
])
def test_coverage_small_skewed_samples(gen: Gen, paired: bool, col: str, metric: str,
                                       test: str) -> None:
    """n=50, lognormal sigma 2. Coverage over 3,000 datasets: 0.95 (paired) and 0.95
    (unpaired); the percentile bootstrap covered 0.88 and 0.89."""
    rng = np.random.default_rng(2024)
    truth = TRUTH[gen.__name__]
    hits = 0
    tests = set()
    for _ in range(REPS_SMALL):
        row = compare_row(*gen(rng, 50), col, metric, paired)
        tests.add(row.test)
        hits += _covered(row.ci, truth)
    assert 0.92 <= hits / REPS_SMALL <= 0.985, hits / REPS_SMALL
    assert tests == {test}


@pytest.mark.parametrize(("gen", "paired", "col", "metric"), [
    (paired_multiplied, True, "cost_usd", "cost_per_query_usd"),
    (unpaired_one_skewed, False, "latency_ms", "latency_ms_mean"),
])
def test_coverage_n1000_one_sided_skew(gen: Gen, paired: bool, col: str, metric: str) -> None:
    """n=1000, skew that does not cancel between the runs (lognormal sigma 1.75). Coverage
    over 3,000 datasets: 0.94 at 95% and 0.987 at 99.5% (a Holm level: 10 guardrails); the
    percentile bootstrap covered 0.89 and 0.964."""
    rng = np.random.default_rng(2024)
    truth = TRUTH[gen.__name__]
    hits = np.zeros(2)
    for _ in range(REPS_LARGE):
        e = estimate(*gen(rng, 1000), col, metric, paired)
        hits += [_covered(e.ci_at(0.95), truth), _covered(e.ci_at(0.995), truth)]
    cov95, cov995 = hits / REPS_LARGE
    assert 0.92 <= cov95 <= 0.985, cov95
    assert cov995 >= 0.975, cov995


# -- the interval against scipy's t-tests ------------------------------------------------------

def _symmetric(rng: np.random.Generator, n: int) -> np.ndarray:
    """A sample in [-1, 1] with zero skewness (values mirrored around 0)."""
    x = rng.uniform(0.0, 1.0, n // 2)
    return np.concatenate([x, -x])


def test_paired_interval_and_p_value_match_scipy_ttest_rel() -> None:
    rng = np.random.default_rng(3)
    b = rng.lognormal(3.0, 1.0, 60)
    c = b + 0.1 + _symmetric(rng, 60)  # symmetric differences: the plain paired t
    e = estimate(b, c, "latency_ms", "latency_ms_mean", paired=True)
    ref = sps.ttest_rel(c, b)
    for level in (0.9, 0.95, 0.995):
        assert e.ci_at(level) == pytest.approx(tuple(ref.confidence_interval(level)), rel=1e-6)
    assert e.p_value == pytest.approx(ref.pvalue, rel=1e-6)
    assert e.test == "t-paired"
    # skewed differences (the candidate 30% dearer): the t-interval, extended to the right
    c = b * 1.3 * np.exp(rng.normal(0.0, 0.1, 60))
    e = estimate(b, c, "cost_usd", "cost_per_query_usd", paired=True)
    ref = sps.ttest_rel(c, b)
    lo, hi = e.ci_at(0.95)
    t_lo, t_hi = ref.confidence_interval(0.95)
    assert lo == pytest.approx(t_lo, rel=1e-9) and hi > t_hi
    assert e.p_value >= ref.pvalue * (1 - 1e-9)


def test_unpaired_interval_and_p_value_match_scipy_welch() -> None:
    rng = np.random.default_rng(4)
    b = 200.0 + 30.0 * _symmetric(rng, 80)
    c = 215.0 + 60.0 * _symmetric(rng, 50)
    e = estimate(b, c, "latency_ms", "latency_ms_mean", paired=False)
    ref = sps.ttest_ind(c, b, equal_var=False)
    for level in (0.9, 0.95, 0.995):
        assert e.ci_at(level) == pytest.approx(tuple(ref.confidence_interval(level)), rel=1e-6)
    assert e.p_value == pytest.approx(ref.pvalue, rel=1e-6)
    assert e.test == "welch-unpaired"
    # a right-skewed candidate: Welch's interval, extended on the right
    c = rng.lognormal(5.3, 1.0, 50)
    e = estimate(b, c, "latency_ms", "latency_ms_mean", paired=False)
    ref = sps.ttest_ind(c, b, equal_var=False)
    lo, hi = e.ci_at(0.95)
    t_lo, t_hi = ref.confidence_interval(0.95)
    assert lo == pytest.approx(t_lo, rel=1e-9) and hi > t_hi
    assert e.p_value >= ref.pvalue * (1 - 1e-9)


@pytest.mark.parametrize("paired", [True, False])
def test_interval_at_one_minus_p_just_reaches_zero(paired: bool) -> None:
    """The comparator's confirmed gate needs the interval and the p-value to agree: the
    interval at level ``1 - p`` has an end at 0, narrower levels exclude 0, wider include."""
    rng = np.random.default_rng(5)
    for _ in range(20):
        b, c = paired_multiplied(rng, 40) if paired else unpaired_scaled(rng, 40)
        e = estimate(b, c, "cost_usd", "cost_per_query_usd", paired)
        p = e.p_value
        assert p is not None and 0 < p <= 1
        if p < 1e-6 or p > 0.999:
            continue
        lo, hi = e.ci_at(1 - p)
        width = hi - lo
        assert min(abs(lo), abs(hi)) <= 1e-7 * width
        lo, hi = e.ci_at(1 - p * 1.01)
        assert not lo <= 0 <= hi
        lo, hi = e.ci_at(1 - p / 1.01)
        assert lo <= 0 <= hi


def test_traffic_mix_mean_is_a_stratified_t_interval() -> None:
    """A mix-weighted mean delta: the weighted per-slice deltas, se from the per-slice
    variances, Welch-Satterthwaite degrees of freedom (symmetric data: no skew extension)."""
    rng = np.random.default_rng(6)
    n = {"de": 40, "en": 120}
    mix = {"de": 0.5, "en": 0.5}
    sl = np.repeat(list(n), list(n.values()))
    b = rng.lognormal(4.0, 0.5, sl.size)
    d = np.concatenate([1.0 + 3.0 * _symmetric(rng, n["de"]), 0.2 + _symmetric(rng, n["en"])])
    fb = pd.DataFrame({"example_id": np.arange(sl.size), "slice": sl, "latency_ms": b})
    fc = fb.assign(latency_ms=b + d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rb, rc = aipm.load_run(fb, traffic_mix=mix), aipm.load_run(fc, traffic_mix=mix)
    e = estimate_deltas(rb, rc, ["latency_ms_mean[mix=traffic]"], traffic_mix=mix)[0][
        "latency_ms_mean[mix=traffic]"]
    dd = rc.examples["latency_ms"].to_numpy() - rb.examples["latency_ms"].to_numpy()
    v = {s: mix[s] ** 2 * dd[sl == s].var(ddof=1) / n[s] for s in n}
    se = np.sqrt(sum(v.values()))
    df = se ** 4 / sum(v[s] ** 2 / (n[s] - 1) for s in n)
    est = sum(mix[s] * dd[sl == s].mean() for s in n)
    q = sps.t.ppf(0.975, df)
    assert e.delta == pytest.approx(est, rel=1e-9)
    assert e.ci_at(0.95) == pytest.approx((est - q * se, est + q * se), rel=1e-6)
    assert e.p_value == pytest.approx(2 * sps.t.sf(abs(est) / se, df), rel=1e-6)
    assert e.test == "t-paired"


# -- constant shifts ---------------------------------------------------------------------------

def test_constant_shift_is_certain_and_survives_holm() -> None:
    """Every latency exactly +10 ms (paired): the delta has zero spread, so its p-value is the
    floor (not 2/(R+1) = 0.002, which Holm across 30 guardrails cannot confirm: 30 * 0.002 >
    0.05) and its interval is [10, 10] at every level."""
    rng = np.random.default_rng(8)
    n_slices, per = 30, 40
    slices = np.repeat([f"s{k:02d}" for k in range(n_slices)], per)
    lat = rng.integers(100, 500, slices.size).astype(float)
    base = pd.DataFrame({"example_id": np.arange(slices.size), "slice": slices,
                         "latency_ms": lat})
    cand = base.assign(latency_ms=lat + 10.0)
    e = estimate(lat, lat + 10.0, "latency_ms", "latency_ms_mean", paired=True)
    assert e.p_value == P_FLOOR
    assert e.ci_at(0.95) == (10.0, 10.0) and e.ci_at(1 - 1e-9) == (10.0, 10.0)
    guards = {f"slice={s}": {"latency_ms_mean": {"max_regression": "1%"}}
              for s in np.unique(slices)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cmp = aipm.compare(base, cand, guardrails={"version": 1, "metrics": {},
                                                   "slices": guards})
    assert len(cmp.metrics) == n_slices
    for row in cmp.metrics:
        assert row.p_value == P_FLOOR, row
        assert row.verdict == "regression", row.reason
    assert cmp.exit_code == 1


def test_bootstrap_p_value_of_zero_spread() -> None:
    """Bootstrapped kinds (percentiles, ECE, ...) with resamples all equal: the percentile
    interval is that value at every level, so the p-value is the floor (not 2/(R+1))."""
    assert bootstrap_p_value(np.full(1000, 10.0)) == P_FLOOR
    assert bootstrap_p_value(np.full(1000, -0.5)) == P_FLOOR
    assert bootstrap_p_value(np.zeros(1000)) == 1.0
    # genuinely noisy deltas keep the normal tail / the count
    assert bootstrap_p_value(np.array([1.0, 2.0, 3.0])) == pytest.approx(2 * sps.norm.sf(2.0))
    assert bootstrap_p_value(np.array([-1.0, 1.0, 2.0, 3.0])) == pytest.approx(2 * 2 / 5)


def test_fewer_than_two_rows_give_no_interval() -> None:
    """One row on a side (unpaired; pairing needs 30 matched examples): no variance to
    estimate, so a point estimate with its reason, not a zero-width "certain" interval."""
    e = estimate(np.array([1.0]), np.array([2.0, 3.0, 4.0]), "latency_ms", "latency_ms_mean",
                 paired=False)
    assert e.test == "point" and e.ci_at(0.95) is None and e.delta == 2.0
    assert "fewer than 2 rows" in e.reason
