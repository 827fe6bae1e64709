"""Deltas between two runs, metric by metric: point estimate, interval, p-value.

This is the seam between ``compare`` (verdict logic, gates, Holm) and ``stats`` /
``evaluate`` (numbers). ``compare`` calls :func:`estimate_deltas` once per comparison and
then asks each :class:`DeltaEstimate` for its interval at whatever (Holm-adjusted) level
it needs via ``ci_at(level)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .schema import RunRecord


@dataclass
class PairingInfo:
    """How the two runs' per-example tables lined up on ``example_id``."""

    paired: bool
    matched: int = 0
    baseline_only: int = 0
    candidate_only: int = 0
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"paired": self.paired, "matched": self.matched,
                "baseline_only": self.baseline_only, "candidate_only": self.candidate_only,
                "reason": self.reason}


@dataclass
class DeltaEstimate:
    """``candidate - baseline`` for one metric.

    ``ci_at(level)`` returns the two-sided interval of the delta at confidence ``level``
    (e.g. 0.95) or None when only point estimates exist; ``p_value`` is the two-sided test
    against no difference; ``test`` names it (``"mcnemar-exact"``, ``"bootstrap-paired"``,
    ``"wilson-unpaired"``, ``"point"``); ``reason`` explains a point-only estimate.
    """

    baseline: float | None
    candidate: float | None
    delta: float | None
    p_value: float | None = None
    test: str = "point"
    n: int | None = None
    reason: str = ""
    #: True when the runs cannot be compared on this metric (eval sets differ, too few
    #: matched examples): compare then gives the row the verdict ``inconclusive``.
    inconclusive: bool = False
    ci_fn: Callable[[float], tuple[float, float]] | None = field(default=None, repr=False)

    def ci_at(self, level: float) -> tuple[float, float] | None:
        return None if self.ci_fn is None else self.ci_fn(level)


def point_estimate(baseline: float | None, candidate: float | None,
                   reason: str = "summary values only (no per-example data)") -> DeltaEstimate:
    """A delta from two summary values, no uncertainty."""
    ok = (baseline is not None and candidate is not None
          and math.isfinite(baseline) and math.isfinite(candidate))
    return DeltaEstimate(baseline, candidate, (candidate - baseline) if ok else None,  # type: ignore[operator]
                         test="point", reason=reason)


def estimate_deltas(baseline: RunRecord, candidate: RunRecord, metrics: Sequence[str], *,
                    fallback_threshold: float = 0.5, seed: int = 0, n_boot: int = 1000,
                    min_matched: int = 30,
                    ) -> tuple[dict[str, DeltaEstimate], PairingInfo]:
    """Estimate ``candidate - baseline`` for each metric name (per-slice names included).

    First version: point estimates from the runs' summary metrics. The evaluation engine
    replaces the body with paired tests on ``example_id``-aligned tables when both runs
    carry per-example data.
    """
    out = {m: point_estimate(baseline.metric(m), candidate.metric(m)) for m in metrics}
    return out, PairingInfo(paired=False, reason="point estimates only")
