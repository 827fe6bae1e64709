"""Selective prediction: risk-coverage curve, AURC and a fallback-threshold recommendation.

A system *answers* a query when ``confidence >= threshold`` and falls back otherwise
(DESIGN §3: ``fallback = confidence < fallback_threshold``). Sorting examples by confidence,
descending, the first ``k`` are the answered ones at coverage ``k / N``; their error rate is
the selective risk.

**Ties.** Examples with the same confidence cannot be separated by any threshold, so they
form one *group* and the curve only has points at group ends. AURC is defined as the mean over
``k = 1..N`` of the risk of the top ``k``, where inside a tied group the ranking is taken in
expectation over all orders of the group (errors in the first ``j`` of a group of ``m`` with
``e`` errors count as ``j * e / m``). That makes AURC independent of row order and equal to the
usual definition ``mean_k(cumsum(err)[k] / k)`` when there are no ties. Per group it has the
closed form ``(A - B*r) * (H(B+m) - H(B)) + r*m`` (``B`` rows and ``A`` errors before the group,
``r = e/m``, ``H`` the harmonic numbers), so the computation is vectorised over groups.

Everything here works on *groups* (confidence, n, errors, cost): exact groups come from one
sort of the confidence column (:func:`groups_from_arrays`), approximate ones from a fine
confidence histogram (the accumulator's streaming path), where values in one histogram bin
count as tied.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

#: Points kept in ``details["risk_coverage"]``.
MAX_CURVE_POINTS = 201


@dataclass
class Groups:
    """Tie groups in descending confidence: ``threshold`` (the group's confidence, or the lower
    edge of its histogram bin), row count ``n``, error count ``err``, optional ``cost`` sum."""

    threshold: np.ndarray
    n: np.ndarray
    err: np.ndarray
    cost: np.ndarray | None = None

    @property
    def total(self) -> int:
        return int(self.n.sum())


def groups_from_arrays(correct: Any, confidence: Any, cost: Any = None) -> Groups:
    """Exact tie groups from per-example arrays (one sort of the confidence column)."""
    conf = np.asarray(confidence, dtype=np.float64)
    corr = np.asarray(correct, dtype=bool)
    if conf.shape != corr.shape:
        raise ValueError("correct and confidence must have the same length")
    if conf.size == 0:
        z = np.zeros(0)
        return Groups(z, z.astype(np.int64), z.astype(np.int64), None if cost is None else z)
    order = np.argsort(-conf, kind="stable")
    cs = conf[order]
    starts = np.concatenate(([0], np.flatnonzero(cs[1:] != cs[:-1]) + 1))
    n = np.diff(np.append(starts, cs.size)).astype(np.int64)
    err = np.add.reduceat((~corr[order]).astype(np.int64), starts)
    cst = None
    if cost is not None:
        cst = np.add.reduceat(np.asarray(cost, dtype=np.float64)[order], starts)
    return Groups(cs[starts], n, err, cst)


def _harmonic(x: np.ndarray) -> np.ndarray:
    from scipy.special import digamma

    return digamma(x + 1.0) + np.euler_gamma


def aurc_from_groups(g: Groups) -> float:
    """AURC from tie groups (see the module docstring for the tie rule). NaN when empty."""
    n_total = g.total
    if n_total == 0:
        return float("nan")
    m = g.n.astype(np.float64)
    e = g.err.astype(np.float64)
    before = np.concatenate(([0.0], np.cumsum(m)[:-1]))
    err_before = np.concatenate(([0.0], np.cumsum(e)[:-1]))
    r = e / m
    single = m == 1
    hdiff = np.empty_like(m)
    hdiff[single] = 1.0 / (before[single] + 1.0)  # exact for the common untied case
    multi = ~single
    if multi.any():
        hdiff[multi] = _harmonic(before[multi] + m[multi]) - _harmonic(before[multi])
    total = (err_before - before * r) * hdiff + r * m
    return float(total.sum() / n_total)


def aurc(correct: Any, confidence: Any) -> float:
    """Area under the risk-coverage curve, examples sorted by confidence descending; tied
    confidences form one group (expected risk over their orders), so row order never matters."""
    return aurc_from_groups(groups_from_arrays(correct, confidence))


@dataclass
class RiskCoverage:
    """Curve points at group ends: answering everything with ``confidence >= threshold``
    gives ``coverage`` and ``risk`` (error rate among answered)."""

    coverage: np.ndarray
    risk: np.ndarray
    threshold: np.ndarray

    def downsample(self, max_points: int = MAX_CURVE_POINTS) -> RiskCoverage:
        """At most ``max_points`` points, evenly spaced in coverage, last point kept."""
        k = self.coverage.size
        if k <= max_points:
            return self
        targets = np.linspace(self.coverage[0], self.coverage[-1], max_points)
        idx = np.unique(np.clip(np.searchsorted(self.coverage, targets), 0, k - 1))
        return RiskCoverage(self.coverage[idx], self.risk[idx], self.threshold[idx])

    def to_dict(self) -> dict[str, list[float]]:
        return {"coverage": [float(x) for x in self.coverage],
                "risk": [float(x) for x in self.risk],
                "threshold": [float(x) for x in self.threshold]}


def curve_from_groups(g: Groups) -> RiskCoverage:
    answered = np.cumsum(g.n)
    errs = np.cumsum(g.err)
    total = max(g.total, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        risk = errs / answered
    return RiskCoverage(answered / total, risk, g.threshold.astype(np.float64))


def risk_coverage(correct: Any, confidence: Any) -> RiskCoverage:
    """The full (not downsampled) risk-coverage curve from per-example arrays."""
    return curve_from_groups(groups_from_arrays(correct, confidence))


def wilson_upper(k: Any, n: Any, alpha: float = 0.05) -> np.ndarray:
    """One-sided upper Wilson bound at level ``1 - alpha`` on a proportion ``k / n``
    (vectorised; equals the upper end of the two-sided ``1 - 2*alpha`` Wilson interval)."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    z = NormalDist().inv_cdf(1.0 - alpha)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1.0 + z * z / n
        centre = p + z * z / (2.0 * n)
        half = z * np.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
        return np.minimum((centre + half) / denom, 1.0)


def clopper_pearson_upper(k: Any, n: Any, alpha: float = 0.05) -> np.ndarray:
    """One-sided ``1 - alpha`` Clopper-Pearson (exact binomial) upper bound on a proportion
    ``k / n``: ``beta.ppf(1 - alpha, k + 1, n - k)``, 1 when ``k == n``, NaN when ``n == 0``
    (vectorised). ``bound <= r`` exactly when ``P(Bin(n, r) <= k) <= alpha``."""
    from scipy.stats import beta

    k, n = np.broadcast_arrays(np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64))
    out = np.full(k.shape, np.nan)
    out[(n > 0) & (k >= n)] = 1.0
    ok = (n > 0) & (k < n)
    if ok.any():
        out[ok] = beta.ppf(1.0 - alpha, k[ok] + 1.0, n[ok] - k[ok])
    return out


def min_answered_to_pass(max_risk: float, alpha: float) -> int:
    """The fewest answered queries that can show ``risk <= max_risk`` at level ``1 - alpha``:
    the least ``m`` with ``P(Bin(m, max_risk) = 0) = (1 - max_risk)**m <= alpha``. Fewer
    answered queries fail the test even with no error."""
    from scipy.stats import binom

    m = max(1, int(np.ceil(np.log(alpha) / np.log1p(-max_risk))))
    while m > 1 and binom.cdf(0, m - 1, max_risk) <= alpha:  # guard the float rounding of
        m -= 1                                                # the logarithms, both ways
    while binom.cdf(0, m, max_risk) > alpha:
        m += 1
    return m


def _least_upper(errs: np.ndarray, answered: np.ndarray, alpha: float) -> tuple[int, float]:
    """Index and value of the smallest Clopper-Pearson upper bound over all thresholds; among
    bounds equal to it up to rounding (1e-12), the largest index (highest coverage) wins, so the
    choice never depends on floating-point noise (all-wrong data: every bound is 1, and the
    answer is to answer everything). Exact bounds only for a shortlist: the 64 smallest Wilson
    bounds give an upper bound ``hi`` on the minimum, and one vectorised binomial CDF finds
    every threshold whose exact bound is ``<= hi`` (``P(Bin(n, hi) <= k) <= alpha``)."""
    from scipy.stats import binom

    m = answered.size
    if m <= 4096:
        cand = np.arange(m)
    else:
        w = wilson_upper(errs, answered, alpha)
        short = np.argpartition(w, 63)[:64]
        hi = float(np.min(clopper_pearson_upper(errs[short], answered[short], alpha)))
        if hi >= 1.0:
            cand = np.arange(m)
        else:
            hi = min(1.0, hi + 1e-9)
            cand = np.flatnonzero((errs < answered)
                                  & (binom.cdf(errs, answered, hi) <= alpha * (1 + 1e-9)))
            cand = np.union1d(cand, short)
    upper = clopper_pearson_upper(errs[cand], answered[cand], alpha)
    best = float(np.nanmin(upper))
    i = int(cand[np.flatnonzero(upper <= best + 1e-12)[-1]])
    return i, float(clopper_pearson_upper(errs[i], answered[i], alpha))


@dataclass
class ThresholdRecommendation:
    """The confidence threshold with the lowest fallback rate that a Learn-then-Test
    multiple test (see :func:`recommend_from_groups`) certifies: with probability at
    least ``1 - alpha`` over the eval set, the true error rate among answered queries at the
    returned threshold is ``<= max_risk``. ``risk_upper`` is that threshold's one-sided
    ``1 - alpha`` Clopper-Pearson upper bound.

    ``found`` is False when the test certifies no threshold; the other fields then describe
    the threshold with the smallest upper bound (ties: the highest coverage), for information
    only, and ``reason`` says why.
    """

    found: bool
    threshold: float | None
    max_risk: float
    alpha: float
    n: int
    n_answered: int
    coverage: float
    fallback_rate: float
    selective_accuracy: float | None
    selective_risk: float | None
    risk_upper: float | None
    cost_per_query_usd: float | None = None
    method: str = "ltt-fallback-exact-binomial"
    exact: bool = True  # False when thresholds come from a confidence histogram grid
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        def f(x: float | None) -> float | None:
            return None if x is None or not np.isfinite(x) else float(x)

        return {"found": self.found, "threshold": f(self.threshold), "max_risk": self.max_risk,
                "alpha": self.alpha, "n": self.n, "n_answered": self.n_answered,
                "coverage": f(self.coverage), "fallback_rate": f(self.fallback_rate),
                "selective_accuracy": f(self.selective_accuracy),
                "selective_risk": f(self.selective_risk), "risk_upper": f(self.risk_upper),
                "cost_per_query_usd": f(self.cost_per_query_usd), "method": self.method,
                "exact": self.exact, "reason": self.reason}


def fallback_starts(n_total: int, max_risk: float, alpha: float) -> list[tuple[int, float]]:
    """``(answered, weight)`` of the fallback test's starting points (see
    :func:`recommend_from_groups`): ``m1, 2*m1, 4*m1, ...`` answered queries up to
    ``n_total``, ``m1`` the fewest that can pass at level ``alpha/4``; the first gets
    ``alpha/4``, the others share ``3*alpha/4`` equally. With fewer than ``2*m1`` examples,
    one start at the fewest that can pass at level ``alpha``, with weight ``alpha``."""
    m1 = min_answered_to_pass(max_risk, alpha / 4)
    if n_total < 2 * m1:
        return [(min_answered_to_pass(max_risk, alpha), alpha)]
    ranks = [m1]
    while 2 * ranks[-1] <= n_total:
        ranks.append(2 * ranks[-1])
    rest = (alpha - alpha / 4) / (len(ranks) - 1)
    return [(m1, alpha / 4)] + [(m, rest) for m in ranks[1:]]


def recommend_from_groups(g: Groups, max_risk: float, alpha: float = 0.05,
                          exact: bool = True) -> ThresholdRecommendation:
    """Learn then Test (Angelopoulos et al. 2021) with the fallback procedure (Wiens 2003), a
    weighted fixed-sequence test, over every candidate threshold (one per group: cumulative
    sums give the answered count, errors and cost at each); vectorised, with a Python loop
    over the ``log2(n)`` starting points only.

    Threshold ``t`` answers the ``A(t)`` queries with ``confidence >= t``, ``E(t)`` of them
    wrong; ``R(t)`` is its true error rate among answered queries. ``H(t): R(t) > max_risk``
    has the exact p-value ``p(t) = P(Bin(A(t), max_risk) <= E(t))``; ``p(t) <= alpha`` iff
    the one-sided ``1 - alpha`` Clopper-Pearson upper bound is ``<= max_risk``.

    The procedure: thresholds are walked in decreasing order (coverage growing). The level
    ``alpha`` is split over starting points (:func:`fallback_starts`): the first threshold
    answering at least ``m1`` queries (the fewest that can pass at ``alpha/4``) gets
    ``alpha/4``, the first ones answering ``2*m1, 4*m1, ...`` share the rest; every other
    threshold gets nothing of its own. Each threshold is tested at its own weight plus
    the level of the threshold before it when that one was rejected (a run of rejections
    carries its level on; a failure drops it, until the next starting point). The rejected
    threshold with the largest coverage is returned. A plain fixed sequence (all of ``alpha``
    on the first threshold that can pass at all) stops for good at the first failure, and its
    first tests, on the ~60 most confident queries, fail on a single error: with a true error
    rate of 2% against a 5% target it certified nothing in three of four 5,000-row eval sets.

    Why ``P(R(returned) > max_risk) <= alpha``. The fallback procedure controls the
    family-wise error (any rejected ``H(t)`` true) at ``alpha`` for a fixed order and fixed
    weights under any dependence: the first true null it rejects had its level carried only
    from thresholds since the previous true null, which was not rejected, so the error is
    within the union of "``p(t) <=`` the weight since the previous null" over the nulls, whose
    weights add to at most ``alpha``. Here:

    * One threshold: given ``A(t)``, the answered rows are i.i.d. draws from the rows with
      ``confidence >= t``, so ``E(t) ~ Bin(A(t), R(t))``: ``p(t)`` is valid, conditionally
      on ``A(t)``, whenever ``R(t) >= max_risk``.
    * The order (decreasing ``t``) is fixed before any data is seen, and ``A``, ``E`` only
      change at observed confidences, so testing the group ends tests every real ``t``: the
      first true null in the order is a fixed ``t1`` (where it lies is a property of the
      population), tested on the rows answered at ``t1``.
    * The starting points are data-dependent, but through the confidences alone (ranks),
      never the labels. Thresholds answering fewer than ``m1`` rows cannot pass at all
      (``(1 - max_risk)**A > alpha/4`` even with no error), so a walk from the very top
      would stop there at once. Take the usual shape, the risk not falling as the threshold
      is lowered: the nulls are then every threshold below a point. The weight that reaches
      ``t1`` is that of the starting points at or above it, a function of ``A(t1)`` only, so
      the test at ``t1`` errs with probability at most the expected weight above ``t1``. A
      starting point below ``t1`` (or the first one, when ``t1`` answers fewer than ``m1``
      rows) sits at the ``m``-th most confident row ``s``: the other rows above ``s`` are
      i.i.d. from ``confidence > s`` with error rate ``>= max_risk``, and the rows at ``s``
      have error rate ``pi(s) >= R(s) >= max_risk`` (adding rows at ``s`` can only raise the
      running rate if ``pi(s)`` is above it), so ``E >= Bin(A, max_risk)`` stochastically and
      it errs with probability at most its own weight. The two sums add to ``alpha``.
      For risk curves that dip and rise again, the rank-based starting points add a boundary
      effect that this argument does not bound; simulations with such curves (dips placed
      where the starting points fall) stayed within ``alpha``.

    A fixed grid of thresholds (the streamed 1/61,440 histogram, ``exact=False``) is the same
    procedure on fewer candidates and keeps the guarantee.
    """
    from scipy.stats import binom

    if not 0.0 < max_risk < 1.0:
        raise ValueError(f"max_risk must be in (0, 1), got {max_risk}")
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    n_total = g.total
    if n_total == 0:
        return ThresholdRecommendation(False, None, max_risk, alpha, 0, 0, 0.0, 1.0, None,
                                       None, None, exact=exact, reason="no examples")
    answered = np.cumsum(g.n)
    errs = np.cumsum(g.err)
    size = answered.size
    starts = fallback_starts(n_total, max_risk, alpha)
    # a starting point is the first group end answering at least that many rows; starting
    # points that tied rows put on one group pool their weights
    at = np.searchsorted(answered, [m for m, _ in starts])
    keep = at < size
    at_u, inv = np.unique(at[keep], return_inverse=True)
    weight = np.bincount(inv, weights=np.array([w for _, w in starts])[keep]) if at_u.size \
        else np.zeros(0)
    best = -1
    if at_u.size:
        first = int(at_u[0])
        pval = binom.cdf(errs[first:], answered[first:], max_risk)
        level, reach = 0.0, -1  # the running chain's level; its first failure (index)
        for j, w in zip(at_u.tolist(), weight.tolist(), strict=True):
            level = w + (level if reach >= j else 0.0)  # carried when j - 1 was rejected
            fails = np.flatnonzero(pval[j - first:] > level)
            reach = j + (int(fails[0]) if fails.size else size - j)
            if reach > j:
                best = max(best, reach - 1)
    found = best >= 0
    level_txt = f"{100 * (1 - alpha):g}%"
    reason = ""
    if found:
        i = best
        upper = float(clopper_pearson_upper(errs[i], answered[i], alpha))
    else:
        i, upper = _least_upper(errs, answered, alpha)
        if not at_u.size:
            m_min = starts[0][0]
            reason = (f"no threshold can meet the target: {n_total} examples are too few to "
                      f"show an error rate <= {max_risk:g} with {level_txt} confidence even "
                      f"with no errors (at least {m_min} answered queries are needed)")
        else:
            reason = (f"no threshold meets the target: none passed the test of the error rate "
                      f"of answered queries <= {max_risk:g} at {level_txt} confidence (from "
                      f"the {int(answered[at_u[0]])} most confident queries down); the "
                      f"smallest {level_txt} upper bound of any threshold is {upper:.4f} "
                      f"(answering {int(answered[i])} of {n_total} with confidence >= "
                      f"{float(g.threshold[i]):.4g})")
            if upper <= max_risk:
                reason += (", within the target on its own but not at the level left to it "
                           f"after testing {size} thresholds")
    n_ans = int(answered[i])
    cost = None
    if g.cost is not None:
        cost = float(np.cumsum(g.cost)[i] / n_ans)
    risk = float(errs[i] / n_ans)
    return ThresholdRecommendation(
        found=found, threshold=float(g.threshold[i]), max_risk=max_risk, alpha=alpha,
        n=n_total, n_answered=n_ans, coverage=n_ans / n_total,
        fallback_rate=1.0 - n_ans / n_total, selective_accuracy=1.0 - risk,
        selective_risk=risk, risk_upper=upper, cost_per_query_usd=cost,
        exact=exact, reason=reason)


def recommend_threshold(correct: Any, confidence: Any, max_risk: float, alpha: float = 0.05,
                        cost: Any = None) -> ThresholdRecommendation:
    """Lowest-fallback threshold certified by the test of :func:`recommend_from_groups`: with probability ``>= 1 - alpha``, the true error rate
    among answered queries (``confidence >= threshold``) is ``<= max_risk``. ``cost`` (per
    example, optional) gives the mean cost of answered queries."""
    return recommend_from_groups(groups_from_arrays(correct, confidence, cost), max_risk, alpha)
