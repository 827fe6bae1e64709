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


@dataclass
class ThresholdRecommendation:
    """The confidence threshold with the lowest fallback rate whose one-sided upper Wilson
    bound on the error rate among answered queries is ``<= max_risk``.

    ``found`` is False when no threshold meets the target; the other fields then describe
    the threshold with the smallest upper bound (the closest one gets) and ``reason`` says why.
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
    method: str = "wilson-upper-one-sided"
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


def recommend_from_groups(g: Groups, max_risk: float, alpha: float = 0.05,
                          exact: bool = True) -> ThresholdRecommendation:
    """Vectorised over every candidate threshold (one per group): cumulative sums give the
    answered count, errors and cost at each threshold; the largest coverage whose upper bound
    meets ``max_risk`` wins (the bound is not monotone in coverage, so all are scanned)."""
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
    upper = wilson_upper(errs, answered, alpha)
    ok = np.flatnonzero(upper <= max_risk)
    found = ok.size > 0
    i = int(ok[-1]) if found else int(np.nanargmin(upper))
    n_ans = int(answered[i])
    cost = None
    if g.cost is not None:
        cost = float(np.cumsum(g.cost)[i] / n_ans)
    risk = float(errs[i] / n_ans)
    reason = ""
    if not found:
        reason = (f"no threshold keeps the {100 * (1 - alpha):g}% upper bound on the error rate "
                  f"of answered queries <= {max_risk:g}; the best is {float(upper[i]):.4f} "
                  f"(answering {n_ans} of {n_total} with confidence >= {float(g.threshold[i]):.4g})")
    return ThresholdRecommendation(
        found=found, threshold=float(g.threshold[i]), max_risk=max_risk, alpha=alpha,
        n=n_total, n_answered=n_ans, coverage=n_ans / n_total,
        fallback_rate=1.0 - n_ans / n_total, selective_accuracy=1.0 - risk,
        selective_risk=risk, risk_upper=float(upper[i]), cost_per_query_usd=cost,
        exact=exact, reason=reason)


def recommend_threshold(correct: Any, confidence: Any, max_risk: float, alpha: float = 0.05,
                        cost: Any = None) -> ThresholdRecommendation:
    """Lowest-fallback threshold whose one-sided ``1 - alpha`` upper Wilson bound on the error
    among answered queries (``confidence >= threshold``) is ``<= max_risk``. ``cost`` (per
    example, optional) gives the mean cost of answered queries."""
    return recommend_from_groups(groups_from_arrays(correct, confidence, cost), max_risk, alpha)
