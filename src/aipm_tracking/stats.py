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
* anything else: bootstrap. :func:`paired_bootstrap` / :func:`unpaired_bootstrap` resample
  rows (exact, for small and medium tables and custom statistics); the fast cell-count
  bootstraps used on large tables live in :mod:`aipm_tracking.resample`. Both return a
  :class:`BootstrapResult` whose stored resample deltas give a percentile interval at any
  level (:func:`percentile_interval`) and a two-sided p-value (:func:`bootstrap_p_value`);
* :func:`quantile_ci`: distribution-free (order-statistic) interval for a percentile;
* :func:`holm`: Holm's step-down correction across the guardrails tested in one comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ArrayLike = Any  # numpy array-likes (kept loose for mypy without numpy stubs gymnastics)


def _z(level: float) -> float:
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
    the resamples differ only by rounding error (a constant shift). All resamples exactly 0
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
