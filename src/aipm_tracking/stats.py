"""Statistics for comparing two runs: intervals, exact tests, bootstrap, Holm.

Every function is vectorised numpy; distributions come from scipy (imported inside the
functions, so importing this module stays cheap). Conventions:

* a *delta* is ``candidate - baseline``; "level" is a confidence level such as 0.95,
  ``alpha = 1 - level``; every interval is two-sided and equal-tailed;
* rates: :func:`wilson_interval` for one proportion; :func:`mcnemar_exact` (exact binomial
  test on the discordant pairs) and :func:`tango_interval` (Tango's 1998 asymptotic score
  interval, the inversion of McNemar's score test, so it never collapses to zero width and
  excludes 0 exactly when the uncorrected McNemar chi-square test rejects) for paired rates;
  :func:`newcombe_interval` (Newcombe 1998 method 10, hybrid Wilson score) and
  :func:`two_proportion_pvalue` (pooled score z-test) for independent rates;
* means (Brier, latency mean, cost per query): :func:`mean_test` -- Student's t on the
  per-row differences (paired, :func:`paired_mean_test`) or Welch's t (independent samples,
  :func:`welch_mean_test`; also weighted sums of per-stratum means), the interval extended on
  the side the data are skewed toward by Hall's (1992) skewness-correcting transformation of
  the t statistic (:class:`MeanTest`); analytic, so any level and a p-value that agrees with
  the interval;
* anything else: bootstrap. :func:`paired_bootstrap` / :func:`unpaired_bootstrap` resample
  rows (exact, for small and medium tables and custom statistics); the fast cell-count
  bootstraps used on large tables live in :mod:`aipm_tracking.resample`. Both return a
  :class:`BootstrapResult` whose stored resample deltas give a percentile interval at any
  level (:func:`percentile_interval`) and a two-sided p-value (:func:`bootstrap_p_value`);
* :func:`quantile_ci`: distribution-free (order-statistic) interval for a percentile;
* :func:`holm`: Holm's step-down correction across the guardrails tested in one comparison.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ArrayLike = Any  # numpy array-likes (kept loose for mypy without numpy stubs gymnastics)


def _z(level: float) -> float:
    """The two-sided normal quantile of ``level`` (cached: ``norm.ppf`` costs about a
    millisecond a call, and a comparison with many slices asks for the same few levels)."""
    return _z_cached(float(level))


@functools.lru_cache(maxsize=4096)
def _z_cached(level: float) -> float:
    from scipy.stats import norm

    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level!r}")
    return float(norm.ppf(0.5 + level / 2.0))


def _out(*xs: np.ndarray) -> Any:
    """Return floats for 0-d results, arrays otherwise."""
    res = tuple(float(x) if np.ndim(x) == 0 else x for x in xs)
    return res if len(res) > 1 else res[0]


# -- one proportion ------------------------------------------------------------------------

def wilson_interval(k: ArrayLike, n: ArrayLike, alpha: float = 0.05) -> Any:
    """Wilson score interval for ``k`` successes in ``n`` trials (vectorised over arrays).

    Returns ``(lo, hi)`` (floats for scalar input, arrays otherwise); ``n == 0`` gives NaN.
    Matches ``statsmodels.stats.proportion.proportion_confint(k, n, alpha, method="wilson")``.
    """
    z = _z(1.0 - alpha)
    k_a = np.asarray(k, dtype=float)
    n_a = np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k_a / n_a
        z2n = z * z / n_a
        denom = 1.0 + z2n
        center = (p + z2n / 2.0) / denom
        half = z * np.sqrt(np.maximum(p * (1.0 - p) / n_a + z2n / (4.0 * n_a), 0.0)) / denom
        lo = np.clip(center - half, 0.0, 1.0)
        hi = np.clip(center + half, 0.0, 1.0)
    lo = np.where(n_a > 0, lo, np.nan)
    hi = np.where(n_a > 0, hi, np.nan)
    return _out(lo, hi)


# -- two independent proportions -------------------------------------------------------------

def newcombe_interval(k1: ArrayLike, n1: ArrayLike, k2: ArrayLike, n2: ArrayLike,
                      alpha: float = 0.05) -> Any:
    """Interval for ``k1/n1 - k2/n2`` (independent samples): Newcombe's hybrid score method
    (1998, method 10), built from the two Wilson intervals. Matches statsmodels'
    ``confint_proportions_2indep(..., compare="diff", method="newcomb")``."""
    l1, u1 = (np.asarray(v) for v in wilson_interval(k1, n1, alpha))
    l2, u2 = (np.asarray(v) for v in wilson_interval(k2, n2, alpha))
    p1 = np.asarray(k1, dtype=float) / np.asarray(n1, dtype=float)
    p2 = np.asarray(k2, dtype=float) / np.asarray(n2, dtype=float)
    d = p1 - p2
    lo = d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return _out(lo, hi)


def two_proportion_pvalue(k1: ArrayLike, n1: ArrayLike, k2: ArrayLike, n2: ArrayLike) -> Any:
    """Two-sided p-value of the pooled score z-test of ``p1 == p2`` (independent samples);
    1.0 when the pooled rate is 0 or 1 (no variation). Matches statsmodels'
    ``proportions_ztest([k1, k2], [n1, n2])``."""
    from scipy.stats import norm

    k1a, n1a = np.asarray(k1, float), np.asarray(n1, float)
    k2a, n2a = np.asarray(k2, float), np.asarray(n2, float)
    pooled = (k1a + k2a) / (n1a + n2a)
    se = np.sqrt(pooled * (1.0 - pooled) * (1.0 / n1a + 1.0 / n2a))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (k1a / n1a - k2a / n2a) / se
    p = np.where(se > 0, 2.0 * norm.sf(np.abs(z)), 1.0)
    return _out(p)


# -- paired proportions ----------------------------------------------------------------------

def mcnemar_exact(b: ArrayLike, c: ArrayLike) -> Any:
    """Two-sided exact McNemar p-value from the discordant counts ``b`` and ``c``.

    Under no difference, ``b ~ Binomial(b + c, 1/2)``; the p-value is
    ``min(1, 2 * P(X <= min(b, c)))`` (the symmetric two-sided binomial test, which is what
    ``scipy.stats.binomtest(b, b + c).pvalue`` and statsmodels' ``mcnemar(exact=True)``
    give). No discordant pairs: 1.0. Vectorised.
    """
    from scipy.stats import binom

    b_a = np.asarray(b, dtype=float)
    c_a = np.asarray(c, dtype=float)
    n = b_a + c_a
    p = np.minimum(1.0, 2.0 * binom.cdf(np.minimum(b_a, c_a), n, 0.5))
    return _out(np.where(n > 0, p, 1.0))


def _tango_stat(delta: np.ndarray, n10: float, n01: float, n: float) -> np.ndarray:
    """Tango's score statistic for ``H0: p_cand - p_base = delta`` (vectorised over delta)."""
    a = 2.0 * n
    bq = -n10 - n01 + (2.0 * n - n10 + n01) * delta
    cq = -n01 * delta * (1.0 - delta)
    sq = np.sqrt(np.maximum(bq * bq - 4.0 * a * cq, 0.0))
    # constrained MLE of P(baseline 1, candidate 0); the two forms avoid cancellation
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(bq > 0, -2.0 * cq / (bq + sq), (sq - bq) / (2.0 * a))
    q = np.nan_to_num(q, nan=0.0)
    var = n * (2.0 * q + delta * (1.0 - delta))
    num = n10 - n01 - n * delta
    with np.errstate(divide="ignore", invalid="ignore"):
        t = num / np.sqrt(np.maximum(var, 0.0))
    return np.where(var > 0, t, np.where(num > 0, np.inf, np.where(num < 0, -np.inf, 0.0)))


def tango_interval(n10: float, n01: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """Interval for a paired difference of proportions ``(n10 - n01) / n``.

    ``n10`` = pairs where the candidate has the outcome and the baseline not, ``n01`` the
    reverse, ``n`` all pairs. Tango's (1998) asymptotic score interval: the set of ``delta``
    whose score statistic is within ``+-z``; found by bisection on ``[-1, 1]`` (the statistic
    is infinite at the ends). No discordant pairs give ``+-z^2 / (n + z^2)`` around 0.
    """
    if n <= 0:
        return (float("nan"), float("nan"))
    z = _z(level)
    d_hat = (n10 - n01) / n
    # lower bound: T decreases in delta; find where T(delta) crosses +z on [-1, d_hat]
    lo_a, hi_a = np.array([-1.0, d_hat]), np.array([d_hat, 1.0])
    for _ in range(52):  # width 2 * 2**-52: float precision
        mid = (lo_a + hi_a) / 2.0
        t = _tango_stat(mid, n10, n01, n)
        go_up = np.array([t[0] > z, t[1] >= -z])
        lo_a = np.where(go_up, mid, lo_a)
        hi_a = np.where(go_up, hi_a, mid)
    lower = float(lo_a[0]) if _tango_stat(np.array([-1.0]), n10, n01, n)[0] > z else -1.0
    upper = float(hi_a[1]) if _tango_stat(np.array([1.0]), n10, n01, n)[0] < -z else 1.0
    return (min(lower, d_hat), max(upper, d_hat))


# -- bootstrap -------------------------------------------------------------------------------

#: Fewer resamples than this in a tail: the interval/p-value extend with a normal tail.
MIN_TAIL = 5
#: The smallest bootstrap p-value reported: double precision's epsilon (R's ``format.pval``
#: prints anything smaller as ``< 2.2e-16``). Below it a normal-tail p-value is numerical
#: noise (it underflows to 0, or comes from a resample sd that is only rounding error).
P_FLOOR = float(np.finfo(np.float64).eps)


def percentile_interval(deltas: np.ndarray, level: float) -> tuple[float, float]:
    """Equal-tailed percentile interval of stored bootstrap deltas at ``level``.

    With ``R`` resamples a tail rests on ``R * (1 - level) / 2`` values. When that is fewer
    than :data:`MIN_TAIL` (levels above 0.99 with the default 1,000, as Holm-adjusted levels
    across many guardrails are), the percentile bounds would stop at the most extreme
    resamples; the interval is then widened to at least ``mean +- z * sd`` of the resamples
    (a normal tail), so high levels never get narrower than the data support.
    """
    z = _z(level)  # validates the level
    d = np.asarray(deltas, dtype=float)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return (float("nan"), float("nan"))
    lo, hi = (float(v) for v in np.quantile(d, [(1.0 - level) / 2.0, (1.0 + level) / 2.0]))
    if d.size * (1.0 - level) / 2.0 < MIN_TAIL and d.size > 1:
        m, sd = float(d.mean()), float(d.std(ddof=1))
        lo, hi = min(lo, m - z * sd), max(hi, m + z * sd)
    return (lo, hi)


def bootstrap_p_value(deltas: np.ndarray) -> float:
    """Two-sided bootstrap p-value against no difference.

    ``min(1, 2 * (k + 1) / (R + 1))`` with ``k = min(#{d* <= 0}, #{d* >= 0})``: about the
    smallest ``alpha`` at which the percentile interval at ``1 - alpha`` excludes 0 (the +1
    keeps it from being 0 with finitely many resamples). When every resample lies on one side
    of 0 (``k = 0``), the p-value is the smaller of that and the normal tail
    ``2 * Phi(-|mean| / sd)`` of the resamples, matching :func:`percentile_interval`'s normal
    extension, so a clear difference is not stuck at ``2 / (R + 1)`` (which Holm across many
    guardrails could never reject). That tail is floored at :data:`P_FLOOR` (about 2.2e-16),
    so the p-value is never 0: it would otherwise underflow to 0 for a large effect, or when
    the resamples differ only by rounding error (a constant shift). Resamples that are all
    the same non-zero value (an exact constant shift: zero spread, so the percentile
    interval is that value at every level) give :data:`P_FLOOR` too. All resamples exactly 0
    give 1.0; no finite resamples give NaN.
    """
    d = np.asarray(deltas, dtype=float)
    d = d[np.isfinite(d)]
    r = d.size
    if r == 0:
        return float("nan")
    k = min(np.count_nonzero(d <= 0.0), np.count_nonzero(d >= 0.0))
    p = min(1.0, 2.0 * (k + 1) / (r + 1))
    if k == 0 and r > 1:
        from scipy.stats import norm

        sd = float(d.std(ddof=1))
        if sd > 0:
            p = min(p, max(P_FLOOR, float(2.0 * norm.sf(abs(float(d.mean())) / sd))))
        elif d[0] != 0.0:  # zero spread, every resample the same non-zero delta
            p = P_FLOOR
    return p


@dataclass
class BootstrapResult:
    """A bootstrap of ``candidate - baseline``: the point delta and the resample deltas."""

    point: Any  # float (an array for vector-valued statistics)
    deltas: np.ndarray
    n: int

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        return percentile_interval(self.deltas, level)

    @property
    def p_value(self) -> float:
        return bootstrap_p_value(self.deltas)

    @property
    def se(self) -> float:
        return float(np.std(self.deltas, ddof=1)) if self.deltas.size > 1 else float("nan")


# -- means -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class MeanTest:
    """Test and interval for ``estimate = sum_k a_k * mean(x_k)`` over independent samples.

    ``se`` is the usual standard error ``sqrt(sum_k a_k^2 s_k^2 / n_k)`` (``s_k`` the sample
    sd), ``df`` its Welch-Satterthwaite degrees of freedom (``n - 1`` for one sample), ``skew``
    the estimated standardised third cumulant of the estimate,
    ``sum_k a_k^3 m3_k / n_k^2 / se^3`` (``m3_k`` the third central sample moment; for one
    sample the sample skewness over ``sqrt(n)``).

    ``ci(level)`` is the union of two intervals at ``level``:

    * the Student / Welch t-interval ``estimate +- t_{df, 1-alpha/2} * se`` (exactly
      ``scipy.stats.ttest_rel`` / ``ttest_ind(equal_var=False)``'s ``confidence_interval``);
    * the same after Hall's (1992) monotone skewness-correcting transformation of the t
      statistic, ``g(T) = T + a T^2 + a^2 T^3 / 3 + a / 2`` with ``a = skew / 3``, which
      removes the first-order skew term of ``T``'s Edgeworth expansion. It reaches further
      on the side the data are skewed toward (right for costs and latencies).

    So the interval is never narrower than the t-interval, and is extended where one-sided
    skew makes the t-interval miss. By simulation (95% intervals, lognormal data with sigma
    0.5-2, n 30-5000, paired and unpaired) it covers like the t-interval where the two
    runs' skews largely cancel (paired differences of similar costs, both runs skewed
    alike): 0.91-0.98 at sigma 2, where the percentile bootstrap, bootstrap-t and BCa cover
    0.69-0.93 up to n=200. Where the skew does not cancel (a candidate that costs 20% more
    on every example) it covers well above the t-interval and the percentile bootstrap,
    about as well as bootstrap-t: 0.93-0.96 at sigma 1, 0.83-0.94 at sigma 2 (where no
    method reaches 0.95 below a few thousand rows). ``tests/test_mean_intervals.py`` checks
    coverage and the agreement with scipy's t-tests.

    ``p_value`` is the larger of the two tests' p-values (the transformed one counting 0 as
    excluded only on the side opposite the estimate), so ``ci(1 - p)`` just reaches 0: the
    interval excludes 0 at ``level`` exactly when ``p_value < 1 - level``. It is floored at
    :data:`P_FLOOR`. Zero spread (``se == 0``: every paired difference the same, a constant
    shift) gives the interval ``(estimate, estimate)`` at every level and p-value
    :data:`P_FLOOR` (1.0 when the estimate is 0).
    """

    estimate: float
    se: float
    df: float
    skew: float

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        from scipy.stats import t as student

        _z(level)  # validates the level
        est, se = self.estimate, self.se
        if not se > 0.0 or not math.isfinite(se):
            return (est, est) if se == 0.0 else (-math.inf, math.inf)
        q = float(student.isf((1.0 - level) / 2.0, self.df))
        t_lo, t_hi = _hall_inverse(-q, self.skew), _hall_inverse(q, self.skew)
        return (min(est - q * se, est - t_hi * se), max(est + q * se, est - t_lo * se))

    @property
    def p_value(self) -> float:
        from scipy.stats import t as student

        est, se = self.estimate, self.se
        if se == 0.0:
            return 1.0 if est == 0.0 else P_FLOOR
        if not math.isfinite(se) or math.isnan(est):
            return 1.0 if math.isinf(se) and math.isfinite(est) else float("nan")
        t0 = est / se
        a = self.skew / 3.0
        with np.errstate(over="ignore", invalid="ignore"):
            g0 = t0 + a * t0 * t0 + a * a * t0 ** 3 / 3.0 + a / 2.0
        # ci(level) excludes 0 when both intervals do, on est's side of 0: |t0| > q and
        # sign(t0) * g(t0) > q (the transformed interval need not contain est at low levels)
        stat = min(abs(t0), math.copysign(1.0, t0) * g0) if math.isfinite(g0) else abs(t0)
        p = float(2.0 * student.sf(stat, self.df))
        return min(1.0, max(P_FLOOR, p))


def _hall_inverse(y: float, skew: float) -> float:
    """``T`` with ``g(T) = y`` for Hall's transformation (see :class:`MeanTest`):
    ``g(T) = ((1 + a T)^3 - 1) / (3 a) + a / 2``, ``a = skew / 3``; increasing in ``T``."""
    a = skew / 3.0
    u = y - a / 2.0
    x = 3.0 * a * u
    if a == 0.0:
        return u
    if x > -1.0:  # cbrt(1 + x) - 1 without cancellation when a (so x) is small
        return math.expm1(math.log1p(x) / 3.0) / a
    return (float(np.cbrt(1.0 + x)) - 1.0) / a


def mean_test(parts: Sequence[tuple[float, ArrayLike]]) -> MeanTest:
    """:class:`MeanTest` of ``sum_k a_k * mean(x_k)`` for ``parts = [(a_k, x_k), ...]``,
    independent samples of at least 2 finite values each (one pass of numpy per sample)."""
    est = var = k3 = 0.0
    terms = []
    for a, x in parts:
        v = np.asarray(x, dtype=np.float64).reshape(-1)
        n = v.size
        if n < 2:
            raise ValueError("mean_test: every sample needs at least 2 values")
        m = float(v.mean())
        dev = v - m
        d2 = dev * dev
        s2 = float(d2.sum()) / (n - 1)
        vk = a * a * s2 / n
        est += a * m
        var += vk
        k3 += a ** 3 * float((d2 * dev).sum()) / n / (n * n)
        terms.append((vk, n - 1))
    if not var > 0.0:
        return MeanTest(est, 0.0 if var == 0.0 else math.nan, math.nan, 0.0)
    df = (float(terms[0][1]) if len(terms) == 1
          else var * var / sum(vk * vk / dfk for vk, dfk in terms))
    skew = k3 / var ** 1.5 if math.isfinite(k3) else 0.0
    return MeanTest(est, math.sqrt(var), df, skew)


def paired_mean_test(baseline: ArrayLike, candidate: ArrayLike) -> MeanTest:
    """Paired: :func:`mean_test` of the per-row differences ``candidate - baseline``."""
    b, c = np.asarray(baseline, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    if b.shape != c.shape:
        raise ValueError("paired_mean_test: the two arrays must have the same length")
    return mean_test([(1.0, c - b)])


def welch_mean_test(baseline: ArrayLike, candidate: ArrayLike) -> MeanTest:
    """Independent samples: :func:`mean_test` of ``mean(candidate) - mean(baseline)``."""
    return mean_test([(1.0, candidate), (-1.0, baseline)])


Stat = Callable[..., np.ndarray]


def _as_tuple(x: Any) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(a) for a in x) if isinstance(x, tuple) else (np.asarray(x),)


def _batches(n: int, n_boot: int, max_cells: int = 4_000_000) -> Iterator[int]:
    size = max(1, min(n_boot, max_cells // max(n, 1)))
    done = 0
    while done < n_boot:
        k = min(size, n_boot - done)
        yield k
        done += k


def _point(stat: Stat, b: tuple[np.ndarray, ...], c: tuple[np.ndarray, ...]) -> Any:
    d = (np.asarray(stat(*(a[None, :] for a in c)), float)[0]
         - np.asarray(stat(*(a[None, :] for a in b)), float)[0])
    return float(d) if np.ndim(d) == 0 else d


def paired_bootstrap(stat: Stat, baseline: Any, candidate: Any, *, n_boot: int = 1000,
                     seed: int = 0) -> BootstrapResult:
    """Paired bootstrap of ``stat(candidate) - stat(baseline)``: resample rows (the same
    rows on both sides) ``n_boot`` times with ``np.random.default_rng(seed)``.

    ``baseline`` / ``candidate``: an array or a tuple of arrays, all of the same length
    (row ``i`` of one side pairs with row ``i`` of the other). ``stat(*arrays)`` receives
    2-d arrays (one resample per row) and returns one value per row, e.g.
    ``lambda x: x.mean(axis=1)`` (or a row of ``J`` values: then ``point`` has shape ``(J,)``
    and ``deltas`` ``(n_boot, J)``). Memory is bounded by resampling in batches. Reproducible:
    the same seed gives the same deltas.
    """
    b, c = _as_tuple(baseline), _as_tuple(candidate)
    n = len(b[0])
    if any(len(a) != n for a in (*b, *c)):
        raise ValueError("paired_bootstrap: every array must have the same length")
    point = _point(stat, b, c)
    rng = np.random.default_rng(seed)
    out = []
    for k in _batches(n, n_boot):
        idx = rng.integers(0, n, size=(k, n))
        out.append(np.asarray(stat(*(a[idx] for a in c)), float)
                   - np.asarray(stat(*(a[idx] for a in b)), float))
    return BootstrapResult(point, np.concatenate(out) if out else np.empty(0), n)


def unpaired_bootstrap(stat: Stat, baseline: Any, candidate: Any, *, n_boot: int = 1000,
                       seed: int = 0) -> BootstrapResult:
    """Bootstrap of ``stat(candidate) - stat(baseline)`` for independent samples: each side
    is resampled on its own. Same conventions as :func:`paired_bootstrap`."""
    b, c = _as_tuple(baseline), _as_tuple(candidate)
    nb, nc = len(b[0]), len(c[0])
    point = _point(stat, b, c)
    rng = np.random.default_rng(seed)
    out = []
    for k in _batches(max(nb, nc), n_boot):
        ib = rng.integers(0, nb, size=(k, nb))
        ic = rng.integers(0, nc, size=(k, nc))
        out.append(np.asarray(stat(*(a[ic] for a in c)), float)
                   - np.asarray(stat(*(a[ib] for a in b)), float))
    return BootstrapResult(point, np.concatenate(out) if out else np.empty(0), nb + nc)


# -- percentiles -----------------------------------------------------------------------------

def quantile_ci(values: ArrayLike, q: float, alpha: float = 0.05) -> tuple[float, float]:
    """Distribution-free interval for the ``q``-quantile (order statistics, binomial).

    With sorted values ``x(1) <= ... <= x(n)`` and ``B ~ Binomial(n, q)``, returns
    ``(x(l), x(u))`` with ``l`` the largest rank with ``P(B <= l - 1) <= alpha/2`` and ``u``
    the smallest with ``P(B >= u) <= alpha/2``, so coverage is at least ``1 - alpha`` for
    any continuous distribution. When ``n`` is too small for that (e.g. p99 of 50 values),
    the missing side is ``-inf`` / ``inf``. NaNs are ignored; no values gives NaNs.
    """
    from scipy.stats import binom

    x = np.asarray(values, dtype=float)
    x = np.sort(x[~np.isnan(x)])
    n = x.size
    if n == 0:
        return (float("nan"), float("nan"))
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q!r}")
    # l = smallest k with P(B <= k) >= alpha/2  => P(B <= l-1) < alpha/2
    lo_rank = int(binom.ppf(alpha / 2.0, n, q))
    hi_rank = int(binom.ppf(1.0 - alpha / 2.0, n, q)) + 1
    # guard floating error in ppf: enforce the tail conditions exactly
    while lo_rank > 0 and binom.cdf(lo_rank - 1, n, q) > alpha / 2.0:
        lo_rank -= 1
    while hi_rank <= n and binom.sf(hi_rank - 1, n, q) > alpha / 2.0:
        hi_rank += 1
    lo = float(x[lo_rank - 1]) if lo_rank >= 1 else float("-inf")
    hi = float(x[hi_rank - 1]) if hi_rank <= n else float("inf")
    return (lo, hi)


# -- multiplicity ----------------------------------------------------------------------------

@dataclass
class HolmResult:
    """Holm's step-down procedure over ``m`` p-values (input order kept everywhere).

    * ``p_adjusted``: Holm-adjusted p-values (statsmodels ``multipletests(method="holm")``);
      iterating a ``HolmResult`` yields these, so ``list(holm(p))`` is the adjusted p-values;
    * ``reject``: ``p_adjusted <= alpha``;
    * ``adjusted_alpha``: the per-hypothesis level Holm tests each one at. Sorting the
      p-values ascending (rank ``r = 0 .. m-1``; ties keep input order), the procedure rejects
      while ``p(r) <= alpha / (m - r)``; with ``s`` rejections, hypothesis of rank ``r`` gets
      ``alpha / (m - r)`` when ``r < s`` and ``alpha / (m - s)`` (the level at which the
      procedure stopped) when ``r >= s``, so no hypothesis after the stop gets a more lenient
      level than the one that failed;
    * ``level = 1 - adjusted_alpha``: the confidence level at which to ask for each delta's
      interval (``DeltaEstimate.ci_at(level[i])``). At these levels an interval excludes 0
      about exactly when Holm rejects that hypothesis.

    NaN p-values (untested metrics) are left out of ``m``; they get NaN everywhere and
    ``reject = False``.
    """

    p_adjusted: np.ndarray
    reject: np.ndarray
    adjusted_alpha: np.ndarray
    alpha: float

    @property
    def level(self) -> np.ndarray:
        return 1.0 - self.adjusted_alpha

    def __iter__(self) -> Iterator[float]:
        return iter(float(x) for x in self.p_adjusted)

    def __len__(self) -> int:
        return int(self.p_adjusted.size)


def holm(p_values: Sequence[float] | np.ndarray, alpha: float = 0.05) -> HolmResult:
    """Holm's step-down correction; see :class:`HolmResult` for what each field means."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    p = np.asarray(p_values, dtype=float).reshape(-1)
    out_p = np.full(p.size, np.nan)
    out_a = np.full(p.size, np.nan)
    reject = np.zeros(p.size, dtype=bool)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m:
        order = ok[np.argsort(p[ok], kind="stable")]
        ranks = np.arange(m)
        thresholds = alpha / (m - ranks)
        sorted_p = p[order]
        adj = np.minimum(1.0, np.maximum.accumulate((m - ranks) * sorted_p))
        fails = np.flatnonzero(sorted_p > thresholds)
        s = int(fails[0]) if fails.size else m
        levels = np.where(ranks < s, thresholds, alpha / (m - min(s, m - 1)))
        out_p[order] = adj
        out_a[order] = levels
        reject[order] = ranks < s
    return HolmResult(p_adjusted=out_p, reject=reject, adjusted_alpha=out_a, alpha=alpha)
