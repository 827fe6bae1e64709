"""stats.py and resample.py against independent implementations (statsmodels, scipy, a
row-level bootstrap written here) on random data, plus coverage by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
)

from aipm_tracking import resample
from aipm_tracking.evaluation import ece_mce
from aipm_tracking.resample import (
    AurcKernel,
    CalibrationKernel,
    QuantileKernel,
    RatioKernel,
    kernel_deltas,
    mean_deltas,
)
from aipm_tracking.selective import aurc
from aipm_tracking.stats import (
    P_FLOOR,
    bootstrap_p_value,
    holm,
    mcnemar_exact,
    newcombe_interval,
    paired_bootstrap,
    percentile_interval,
    quantile_ci,
    tango_interval,
    two_proportion_pvalue,
    unpaired_bootstrap,
    wilson_interval,
)

# -- proportions -----------------------------------------------------------------------------

def test_wilson_matches_statsmodels_vectorised() -> None:
    rng = np.random.default_rng(0)
    n = rng.integers(1, 500, 300)
    k = rng.integers(0, n + 1)
    k[:5], n[:5] = 0, 7  # no successes
    k[5:10] = n[5:10]  # all successes
    for alpha in (0.05, 0.01, 0.2):
        lo, hi = wilson_interval(k, n, alpha)
        slo, shi = proportion_confint(k, n, alpha=alpha, method="wilson")
        np.testing.assert_allclose(lo, slo, atol=1e-12)
        np.testing.assert_allclose(hi, shi, atol=1e-12)
    lo, hi = wilson_interval(3, 10)
    assert isinstance(lo, float) and 0 < lo < 0.3 < hi < 1
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_mcnemar_exact_matches_statsmodels() -> None:
    rng = np.random.default_rng(1)
    b = rng.integers(0, 60, 200)
    c = rng.integers(0, 60, 200)
    ours = mcnemar_exact(b, c)
    for i in range(200):
        ref = mcnemar([[10, b[i]], [c[i], 10]], exact=True).pvalue
        assert ours[i] == pytest.approx(ref, abs=1e-12)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 12) == pytest.approx(2 * 0.5 ** 12)


def test_newcombe_and_ztest_match_statsmodels() -> None:
    rng = np.random.default_rng(2)
    for _ in range(100):
        n1, n2 = rng.integers(5, 400, 2)
        k1, k2 = rng.integers(0, n1 + 1), rng.integers(0, n2 + 1)
        lo, hi = newcombe_interval(k1, n1, k2, n2, 0.05)
        slo, shi = confint_proportions_2indep(k1, n1, k2, n2, method="newcomb", compare="diff",
                                              alpha=0.05)
        assert lo == pytest.approx(slo, abs=1e-10) and hi == pytest.approx(shi, abs=1e-10)
        p = two_proportion_pvalue(k1, n1, k2, n2)
        if 0 < k1 + k2 < n1 + n2:
            assert p == pytest.approx(proportions_ztest([k1, k2], [n1, n2])[1], abs=1e-10)
        else:
            assert p == 1.0


def _tango_mle_numeric(n10: int, n01: int, n: int, delta: float) -> float:
    """Constrained MLE of P(baseline 1, candidate 0) under p_cand - p_base = delta, by
    maximising the trinomial likelihood numerically (independent of the closed form)."""
    def nll(q: float) -> float:
        p10, rest = q + delta, 1 - 2 * q - delta
        return -(n10 * math.log(p10) + n01 * math.log(q) + (n - n10 - n01) * math.log(rest))
    lo = max(0.0, -delta) + 1e-12
    hi = (1 - delta) / 2 - 1e-12
    return float(optimize.minimize_scalar(nll, bounds=(lo, hi), method="bounded",
                                          options={"xatol": 1e-12}).x)


def test_tango_score_statistic_uses_the_constrained_mle() -> None:
    from aipm_tracking.stats import _tango_stat

    rng = np.random.default_rng(3)
    for _ in range(30):
        n = int(rng.integers(50, 500))
        n10, n01 = (int(x) for x in rng.integers(1, n // 3, 2))
        delta = float(rng.uniform(-0.3, 0.3))
        q = _tango_mle_numeric(n10, n01, n, delta)
        expect = (n10 - n01 - n * delta) / math.sqrt(n * (2 * q + delta * (1 - delta)))
        assert _tango_stat(np.array([delta]), n10, n01, n)[0] == pytest.approx(expect, rel=1e-5)


def test_tango_interval_properties() -> None:
    z = sps.norm.ppf(0.975)
    # no discordant pairs: closed form +-z^2/(n+z^2)
    lo, hi = tango_interval(0, 0, 200, 0.95)
    assert hi == pytest.approx(z * z / (200 + z * z), rel=1e-9)
    assert lo == pytest.approx(-hi, rel=1e-9)
    # it is the inversion of McNemar's (uncorrected) score test
    rng = np.random.default_rng(4)
    for _ in range(120):
        n = int(rng.integers(20, 400))
        n10, n01 = (int(x) for x in rng.integers(0, n // 4 + 1, 2))
        lo, hi = tango_interval(n10, n01, n, 0.95)
        assert -1 <= lo <= (n10 - n01) / n <= hi <= 1
        if n10 + n01 == 0:
            continue
        p = mcnemar([[1, n10], [n01, 1]], exact=False, correction=False).pvalue
        if abs(p - 0.05) > 1e-6:
            assert (lo > 0 or hi < 0) == (p < 0.05)
        # mirror symmetry: swapping the runs negates the interval
        mlo, mhi = tango_interval(n01, n10, n, 0.95)
        assert mlo == pytest.approx(-hi, abs=1e-9) and mhi == pytest.approx(-lo, abs=1e-9)
    # extremes
    assert tango_interval(50, 0, 50, 0.95)[1] == 1.0
    assert tango_interval(0, 50, 50, 0.95)[0] == -1.0


def test_tango_coverage_by_simulation() -> None:
    rng = np.random.default_rng(5)
    probs = np.array([0.55, 0.12, 0.08, 0.25])  # (both 1, cand only, base only, neither)
    true = probs[1] - probs[2]
    hits = 0
    reps = 400
    for _ in range(reps):
        c = rng.multinomial(120, probs)
        lo, hi = tango_interval(int(c[1]), int(c[2]), 120, 0.95)
        hits += lo <= true <= hi
    assert 0.92 <= hits / reps <= 0.98


# -- percentiles -----------------------------------------------------------------------------

def test_quantile_ci_known_ranks_and_open_ends() -> None:
    x = np.arange(1.0, 11.0)  # x(k) = k
    assert quantile_ci(x, 0.5, 0.05) == (2.0, 9.0)  # the textbook median interval for n=10
    lo, hi = quantile_ci(np.arange(50.0), 0.99, 0.05)
    assert hi == math.inf and lo < 49
    assert all(math.isnan(v) for v in quantile_ci([], 0.5))
    assert quantile_ci([3.0, np.nan, 1.0, 2.0], 0.5, 0.5)[0] >= 1.0


@pytest.mark.parametrize(("n", "q"), [(40, 0.5), (200, 0.9), (400, 0.95)])
def test_quantile_ci_coverage_by_simulation(n: int, q: float) -> None:
    rng = np.random.default_rng(6)
    true = sps.expon.ppf(q)
    reps = 400
    hits = 0
    for _ in range(reps):
        lo, hi = quantile_ci(rng.exponential(size=n), q, 0.05)
        hits += lo <= true <= hi
    # guaranteed >= 95% (conservative for discrete ranks); 3 SE of slack for simulation noise
    assert hits / reps >= 0.95 - 3 * math.sqrt(0.95 * 0.05 / reps)
    assert hits / reps <= 0.995


# -- Holm ------------------------------------------------------------------------------------

def test_holm_matches_statsmodels() -> None:
    rng = np.random.default_rng(7)
    for _ in range(25):
        m = int(rng.integers(1, 15))
        p = rng.uniform(0, 0.1, m) ** rng.uniform(0.5, 3)
        res = holm(p, 0.05)
        rej, padj, _, _ = multipletests(p, alpha=0.05, method="holm")
        np.testing.assert_array_equal(res.reject, rej)
        np.testing.assert_allclose(res.p_adjusted, padj, atol=1e-12)
        assert list(res) == pytest.approx(list(padj))
        # the adjusted alpha: rejected hypotheses pass their own Holm threshold ...
        assert np.all(p[res.reject] <= res.adjusted_alpha[res.reject])
        # ... and none of the others would pass at theirs
        assert not np.any(p[~res.reject] <= res.adjusted_alpha[~res.reject])
        np.testing.assert_allclose(res.level, 1 - res.adjusted_alpha)


def test_holm_levels_worked_example_and_nan() -> None:
    res = holm([0.01, 0.04, 0.03, 0.005], alpha=0.05)
    # sorted: 0.005 (a/4) rejected, 0.01 (a/3) rejected, 0.03 > a/2 stops
    assert list(res.reject) == [True, False, False, True]
    assert res.adjusted_alpha == pytest.approx([0.05 / 3, 0.025, 0.025, 0.0125])
    res = holm([0.01, float("nan"), 0.02], alpha=0.05)
    assert math.isnan(res.adjusted_alpha[1]) and not res.reject[1]
    assert res.adjusted_alpha[0] == pytest.approx(0.025)  # m = 2, NaN left out
    assert len(holm([], 0.05)) == 0


# -- bootstrap -------------------------------------------------------------------------------

def test_paired_bootstrap_mean_matches_scipy() -> None:
    rng = np.random.default_rng(8)
    b = rng.gamma(2.0, 1.0, 400)
    c = b + rng.normal(0.3, 1.0, 400)
    ours = paired_bootstrap(lambda x: x.mean(axis=1), b, c, n_boot=4000, seed=1)
    ref = sps.bootstrap((b, c), lambda x, y, axis=-1: y.mean(axis=axis) - x.mean(axis=axis),
                        paired=True, n_resamples=4000, method="percentile",
                        random_state=np.random.default_rng(2))
    lo, hi = ours.ci(0.95)
    width = hi - lo
    assert ours.point == pytest.approx(c.mean() - b.mean())
    assert lo == pytest.approx(ref.confidence_interval.low, abs=0.1 * width)
    assert hi == pytest.approx(ref.confidence_interval.high, abs=0.1 * width)
    assert ours.se == pytest.approx(ref.standard_error, rel=0.1)
    again = paired_bootstrap(lambda x: x.mean(axis=1), b, c, n_boot=4000, seed=1)
    np.testing.assert_array_equal(ours.deltas, again.deltas)  # seeded, reproducible


def test_unpaired_bootstrap_and_p_value() -> None:
    rng = np.random.default_rng(9)
    b, c = rng.normal(0, 1, 300), rng.normal(0.5, 1, 200)
    res = unpaired_bootstrap(lambda x: x.mean(axis=1), b, c, n_boot=2000, seed=0)
    se = math.sqrt(b.var() / 300 + c.var() / 200)
    assert res.se == pytest.approx(se, rel=0.1)
    assert res.p_value < 0.01
    same = paired_bootstrap(lambda x: x.mean(axis=1), b, b, n_boot=200, seed=0)
    assert same.p_value == 1.0 and same.ci(0.95) == (0.0, 0.0)
    assert bootstrap_p_value(np.array([-1.0, 1.0, 2.0, 3.0])) == pytest.approx(2 * 2 / 5)
    # every resample on one side: the normal tail, not the 2/(R+1) floor
    assert bootstrap_p_value(np.array([1.0, 2.0, 3.0])) == pytest.approx(2 * sps.norm.sf(2.0))
    # levels beyond the resolution of R resamples get a normal tail, never narrower
    d = np.random.default_rng(0).normal(0.0, 1.0, 1000)
    lo, hi = percentile_interval(d, 0.9995)
    z = sps.norm.ppf(0.99975)
    assert hi >= d.mean() + z * d.std(ddof=1) - 1e-12 and lo <= d.mean() - z * d.std(ddof=1)
    assert percentile_interval(d, 0.95) == pytest.approx(tuple(np.quantile(d, [0.025, 0.975])))
    with pytest.raises(ValueError):
        percentile_interval(np.zeros(3), 1.5)


def test_bootstrap_p_value_is_never_zero() -> None:
    """A large effect underflows the normal tail, and a constant shift leaves an sd of pure
    rounding error: both used to give exactly 0.0; the docstring promises a positive p."""
    assert P_FLOOR == np.finfo(float).eps
    big = np.random.default_rng(1).normal(50.0, 1.0, 1000)  # z = 50: norm.sf underflows to 0
    assert float(2 * sps.norm.sf(abs(big.mean()) / big.std(ddof=1))) == 0.0
    assert bootstrap_p_value(big) == P_FLOOR
    shift = 110.01 - np.full(1000, 100.0) + np.random.default_rng(2).normal(0, 1e-13, 1000)
    assert 0 < shift.std(ddof=1) < 1e-12
    assert bootstrap_p_value(shift) == P_FLOOR
    assert bootstrap_p_value(-shift) == P_FLOOR
    # above the floor the normal tail is untouched
    assert bootstrap_p_value(np.array([1.0, 2.0, 3.0])) == pytest.approx(2 * sps.norm.sf(2.0))


def test_compare_constant_latency_shift_has_positive_p_value() -> None:
    import pandas as pd

    import aipm_tracking as aipm

    n = 500
    base = pd.DataFrame({"example_id": np.arange(n), "latency_ms": np.full(n, 100.0)})
    cand = base.assign(latency_ms=110.01)
    cmp = aipm.compare(base, cand, guardrails={"version": 1, "metrics": {
        "latency_ms_mean": {"max_regression": "10%"}}})
    r = cmp.metrics[0]
    assert r.test == "t-paired" and r.p_value is not None
    assert r.p_value > 0 and r.verdict == "regression"


# -- cell-count bootstrap (resample.py) vs a row-level bootstrap -------------------------------

def _paired_data(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    conf_b = rng.beta(5, 2, n)
    conf_c = np.clip(conf_b + rng.normal(0, 0.05, n), 0, 1)
    cor_b = rng.random(n) < conf_b * 0.95
    cor_c = np.where(rng.random(n) < 0.85, cor_b, rng.random(n) < conf_c)
    lat_b = rng.lognormal(5, 0.6, n)
    lat_c = lat_b * np.exp(rng.normal(0.05, 0.3, n))
    return {"conf_b": conf_b, "conf_c": conf_c, "cor_b": cor_b, "cor_c": cor_c,
            "lat_b": lat_b, "lat_c": lat_c}


def _loop(fn):  # type: ignore[no-untyped-def]
    return lambda *cols: np.array([fn(*(c[i] for c in cols)) for i in range(cols[0].shape[0])])


@pytest.mark.parametrize("poisson", [False, True])
def test_cell_bootstrap_spread_matches_row_bootstrap(poisson: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    if poisson:  # the Poisson path normally starts at 100k rows; force it here
        monkeypatch.setattr(resample, "POISSON_MIN_ROWS", 0)
    d = _paired_data(8000, 10)
    rng = np.random.default_rng(0)
    checks = [
        (QuantileKernel((0.5, 0.95, 0.99)), (d["lat_b"],), (d["lat_c"],),
         lambda x: np.quantile(x, [0.5, 0.95, 0.99], axis=1).T),
        (CalibrationKernel(), (d["cor_b"], d["conf_b"]), (d["cor_c"], d["conf_c"]),
         _loop(lambda a, b: ece_mce(a, b))),
        (AurcKernel(), (d["cor_b"], d["conf_b"]), (d["cor_c"], d["conf_c"]),
         _loop(lambda a, b: [aurc(a, b)])),
    ]
    for kernel, bcols, ccols, naive in checks:
        eb, ec, deltas = kernel_deltas(kernel, bcols, ccols, paired=True, n_boot=2000, rng=rng)
        ref_point = naive(*(c[None] for c in ccols))[0] - naive(*(c[None] for c in bcols))[0]
        np.testing.assert_allclose(ec - eb, ref_point, rtol=1e-9, atol=1e-12)
        ref = paired_bootstrap(naive, bcols, ccols, n_boot=400, seed=1)
        sd_ref = np.std(ref.deltas.reshape(400, -1), axis=0, ddof=1)
        sd = np.std(deltas, axis=0, ddof=1)
        for j, name in enumerate(kernel.names):
            if name == "mce":  # a max over sparse bins: heavy-tailed, check loosely
                assert 0.6 < sd[j] / sd_ref[j] < 1.6, name
            else:
                assert 0.85 < sd[j] / sd_ref[j] < 1.18, (name, sd[j], sd_ref[j])
            assert np.median(deltas[:, j]) == pytest.approx(ref_point[j], abs=sd_ref[j])
    # means (grouped, with the within-group normal term) vs the row bootstrap
    for paired in (True, False):
        deltas = mean_deltas(d["lat_b"], d["lat_c"], paired=paired, n_boot=2000, rng=rng)
        boot = paired_bootstrap if paired else unpaired_bootstrap
        ref = boot(lambda x: x.mean(axis=1), d["lat_b"], d["lat_c"], n_boot=600, seed=2)
        assert np.std(deltas, ddof=1) == pytest.approx(ref.se, rel=0.12)
        assert np.mean(deltas) == pytest.approx(ref.point, abs=0.2 * ref.se)


@pytest.mark.parametrize("n", [800, 1500])
def test_cell_bootstrap_spread_on_slice_sized_tables(n: int) -> None:
    """Slice-sized tables take the binned AURC path (64 bins from 301 to 2,000 rows) and
    the row-draw path of ``_draw`` (cells of a few rows): still the row bootstrap's spread."""
    d = _paired_data(n, 12)
    rng = np.random.default_rng(3)
    checks = [
        (QuantileKernel((0.5, 0.95, 0.99)), (d["lat_b"],), (d["lat_c"],),
         lambda x: np.quantile(x, [0.5, 0.95, 0.99], axis=1).T),
        (CalibrationKernel(), (d["cor_b"], d["conf_b"]), (d["cor_c"], d["conf_c"]),
         _loop(lambda a, b: ece_mce(a, b)[:1])),
        (AurcKernel(), (d["cor_b"], d["conf_b"]), (d["cor_c"], d["conf_c"]),
         _loop(lambda a, b: [aurc(a, b)])),
    ]
    for kernel, bcols, ccols, naive in checks:
        eb, ec, deltas = kernel_deltas(kernel, bcols, ccols, paired=True, n_boot=3000, rng=rng)
        ref = paired_bootstrap(naive, bcols, ccols, n_boot=1500, seed=4)
        sd_ref = np.std(ref.deltas.reshape(1500, -1), axis=0, ddof=1)
        sd = np.std(deltas, axis=0, ddof=1)
        for j in range(sd_ref.size):
            assert 0.9 < sd[j] / sd_ref[j] < 1.1, (kernel.names[j], sd[j], sd_ref[j])


def test_row_draw_is_the_multinomial() -> None:
    counts = np.array([1, 2, 1, 1, 3, 1, 2, 1])  # cells of a few rows: the row-draw path
    n, k = int(counts.sum()), counts.size
    m = resample._draw(np.random.default_rng(0), counts, 40_000)
    assert m.shape == (40_000, k) and (m.sum(axis=1) == n).all()
    p = counts / n
    np.testing.assert_allclose(m.mean(axis=0), n * p, rtol=0.03)
    np.testing.assert_allclose(np.cov(m.T), n * (np.diag(p) - np.outer(p, p)), atol=0.03)


def test_cell_bootstrap_exact_values_and_small_tables() -> None:
    d = _paired_data(300, 11)
    rng = np.random.default_rng(0)
    # ratio kernel: exact point, bounded replicates
    eb, ec, deltas = kernel_deltas(RatioKernel(), (d["cor_b"].astype(float), d["conf_b"] > 0.5),
                                   (d["cor_c"].astype(float), d["conf_c"] > 0.5), paired=True,
                                   n_boot=500, rng=rng)
    assert eb[0] == pytest.approx(d["cor_b"][d["conf_b"] > 0.5].mean())
    assert np.all(np.abs(deltas) <= 1)
    # small tables: every row its own quantile bin, so the cell bootstrap is the row bootstrap
    k = QuantileKernel((0.5, 0.9))
    prep = k.prepare(d["lat_b"])
    np.testing.assert_allclose(prep.exact, np.quantile(d["lat_b"], [0.5, 0.9]), rtol=1e-12)
    cnt = np.bincount(prep.states, minlength=prep.n_states)
    occ = np.flatnonzero(cnt)
    np.testing.assert_allclose(k.stat(cnt[occ][None], occ, None, prep)[0], prep.exact)
    # tied confidences: AURC bins are the tie groups (exact)
    conf = np.round(d["conf_b"], 1)
    p = AurcKernel().prepare(d["cor_b"], conf)
    assert p.exact[0] == pytest.approx(aurc(d["cor_b"], conf), rel=1e-12)
    # constant confidence: ECE/AURC defined, zero spread in the confidence part
    const = np.full(300, 0.7)
    eb, ec, deltas = kernel_deltas(CalibrationKernel(), (d["cor_b"], const), (d["cor_c"], const),
                                   paired=True, n_boot=300, rng=rng)
    assert eb[0] == pytest.approx(abs(d["cor_b"].mean() - 0.7))
    assert np.isfinite(deltas).all()
    eb, ec, deltas = kernel_deltas(AurcKernel(), (d["cor_b"], const), (d["cor_c"], const),
                                   paired=True, n_boot=300, rng=rng)
    assert eb[0] == pytest.approx(1 - d["cor_b"].mean())


def test_fast_percentile_bootstrap_coverage_by_simulation() -> None:
    """Paired p95 latency delta on 3,000 rows (binned windows): the 95% percentile interval
    covers the true delta of the generating distributions about 95% of the time."""
    rng = np.random.default_rng(12)
    z = sps.norm.ppf(0.95)
    true = math.exp(5.1 + math.sqrt(0.25 + 0.04) * z) - math.exp(5.0 + 0.5 * z)
    reps, hits = 150, 0
    kernel = QuantileKernel((0.95,))
    for _ in range(reps):
        b = rng.lognormal(5.0, 0.5, 3000)
        c = b * np.exp(rng.normal(0.1, 0.2, 3000))
        _, _, deltas = kernel_deltas(kernel, (b,), (c,), paired=True, n_boot=400, rng=rng)
        lo, hi = percentile_interval(deltas[:, 0], 0.95)
        hits += lo <= true <= hi
    assert 0.88 <= hits / reps <= 0.995


def test_harmonic_differences_match_digamma_for_small_and_large_counts() -> None:
    from scipy.special import digamma

    rng = np.random.default_rng(5)
    for top in (50, 5_000, 3_000_000):  # the table, and digamma when a table would be big
        hi = rng.integers(0, top, size=(40, 8)).astype(float)
        lo = np.floor(hi * rng.random(hi.shape))
        want = digamma(hi + 1.0) - digamma(lo + 1.0)
        np.testing.assert_allclose(resample._harmonic_diff(lo, hi), want, rtol=1e-10,
                                   atol=1e-12)


def test_interval_levels_may_be_numpy_scalars_or_0d_arrays() -> None:
    d = np.random.default_rng(0).normal(size=500)
    want = percentile_interval(d, 0.9)
    assert percentile_interval(d, np.float64(0.9)) == want
    assert percentile_interval(d, np.array(0.9)) == want
