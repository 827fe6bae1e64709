"""Deltas between two runs, metric by metric: point estimate, interval, p-value.

This is the seam between ``compare`` (verdict logic, gates, Holm) and ``stats`` /
``evaluate`` (numbers). ``compare`` calls :func:`estimate_deltas` once per comparison and
then asks each :class:`DeltaEstimate` for its interval at whatever (Holm-adjusted) level
it needs via ``ci_at(level)``.

How each metric is estimated (``candidate - baseline``, in the metric's own units):

* **Pairing.** When both runs carry per-example tables with ``example_id``, rows are aligned on
  it (positionally when both tables list the same ids in the same order, else by hashing the
  ids; numeric ids on one side and text ids on the other are compared as strings,
  :func:`comparable_ids`). The runs are *not comparable* (every per-example metric ``inconclusive``, with the
  reason) when fewer than ``min_matched`` ids match, when fewer than 90% of either run's
  examples match (:data:`MIN_MATCH_FRACTION`), when ids repeat, or when labels differ on more
  than 1% of the matched examples (:data:`MAX_LABEL_MISMATCH`). Otherwise paired values are
  computed on the matched rows (the ``reason`` says so when that is not every row).
* **Paired tests.** ``accuracy``, ``fallback_rate``, ``override_rate`` (rows where ``overridden``
  is known in both runs): exact McNemar p-value, Tango score interval (test
  ``mcnemar-exact``). If ``overridden`` is null on different rows in the two runs, override
  rate is a ratio of per-run subsets and is bootstrapped instead. ``selective_accuracy``
  (accuracy over each run's own answered rows, fallback == False): paired bootstrap of the
  ratio over the 9 joint (fallback, correct) cells, exact. The means ``brier``,
  ``latency_ms_mean``, ``cost_per_query_usd``: a t-test on the per-example differences
  (``t-paired``; the interval widened on the side the data are skewed toward, see
  :func:`~aipm_tracking.stats.mean_test`). ``ece``, ``mce``, ``latency_ms_p50/p95/p99``,
  ``aurc``: paired bootstrap (``bootstrap-paired``) through :mod:`aipm_tracking.resample`; p-value
  :func:`~aipm_tracking.stats.bootstrap_p_value`, interval the percentile interval of the stored
  resample deltas at any level; for ``ece`` and ``mce`` that interval is widened by each
  side's plug-in bias bound, and the p-value follows it (:mod:`aipm_tracking.calibration_bias`).
* **Unpaired** (examples without ``example_id`` on a side): rates get Newcombe's interval from
  the two Wilson intervals and the pooled z-test p-value (``wilson-unpaired``); means Welch's
  t-test (``welch-unpaired``); the rest an independent bootstrap of each run
  (``bootstrap-unpaired``).
* **Slices** ``accuracy[slice=de]`` (any ``column=value``): the same on the rows of that slice
  (the baseline's slice column decides when paired). **Traffic mix** ``accuracy[mix=traffic]``:
  rates, ratios and means are the mix-weighted combination of per-slice values (the definition
  of ``evaluate``: rows of slice ``s`` weighted ``w_s / n_s``), bootstrapped stratified by
  slice; percentiles, calibration and AURC under a mix are point estimates with a reason.
* Metrics without per-example definitions (``n_examples``, ``cost_total_usd``, ``psi_*``,
  logged product metrics, plugin metrics) and runs without per-example tables: point estimates
  from the runs' summary values.

Speed: a paired comparison of two 1M-row runs (rates, ECE, Brier, three latency percentiles,
latency mean, cost per query, AURC) with 1,000 resamples takes about 0.6-0.9 s on a 2-core
machine (``benchmarks/paired_compare.py``); rows in another order add the id matching (~0.7 s).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .metrics import split_slice
from .schema import RunRecord

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Fewer matched examples than this fraction of either run's table: eval sets differ.
MIN_MATCH_FRACTION = 0.9
#: Labels differing on more than this fraction of matched examples: eval sets differ.
MAX_LABEL_MISMATCH = 0.01

SUMMARY_ONLY = "summary values only (no per-example data)"


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
    ``"t-paired"``, ``"wilson-unpaired"``, ``"welch-unpaired"``, ``"bootstrap-unpaired"``,
    ``"point"``); ``reason`` explains a
    point-only estimate or a paired subset.
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
                   reason: str = SUMMARY_ONLY) -> DeltaEstimate:
    """A delta from two summary values, no uncertainty."""
    ok = (baseline is not None and candidate is not None
          and math.isfinite(baseline) and math.isfinite(candidate))
    return DeltaEstimate(baseline, candidate, (candidate - baseline) if ok else None,  # type: ignore[operator]
                         test="point", reason=reason)


# metric base name -> (family, column, extra)
_FAMILIES: dict[str, tuple[str, str, float]] = {
    "accuracy": ("rate", "correct", 0.0),
    "fallback_rate": ("rate", "fallback", 0.0),
    "override_rate": ("rate", "overridden", 0.0),
    "selective_accuracy": ("selective", "correct", 0.0),
    "ece": ("calibration", "confidence", 0.0),
    "mce": ("calibration", "confidence", 1.0),
    "brier": ("mean", "brier", 0.0),
    "latency_ms_mean": ("mean", "latency_ms", 0.0),
    "cost_per_query_usd": ("mean", "cost_usd", 0.0),
    "latency_ms_p50": ("quantile", "latency_ms", 0.50),
    "latency_ms_p95": ("quantile", "latency_ms", 0.95),
    "latency_ms_p99": ("quantile", "latency_ms", 0.99),
    "aurc": ("aurc", "confidence", 0.0),
}


def _f(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


# -- pairing ---------------------------------------------------------------------------------

class _NotComparable(Exception):
    pass


def _id_keys(a: np.ndarray) -> np.ndarray:
    import pandas as pd

    if a.dtype.kind in "iub":
        return a.astype(np.int64).view(np.uint64)
    return np.asarray(pd.util.hash_array(a.astype(object), categorize=False))


def _is_numeric_ids(ids: pd.Series) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(ids.dtype) or pd.api.types.is_bool_dtype(ids.dtype))


def comparable_ids(ids_b: pd.Series, ids_c: pd.Series) -> tuple[pd.Series, pd.Series]:
    """The two runs' ``example_id`` columns, ready to be matched against each other.

    When one side's ids are numbers and the other's are not (``0, 1, ...`` read from a
    parquet file against ``"0", "1", ...`` read from JSONL), both are compared as strings,
    so ``7`` matches ``"7"``; integer ids against float ids are both compared as floats;
    otherwise they are returned unchanged. Every place that pairs
    rows by id (the alignment here, ``comparator.changed_examples``) goes through this.
    """
    import pandas as pd

    num_b, num_c = _is_numeric_ids(ids_b), _is_numeric_ids(ids_c)
    if num_b != num_c:
        return ids_b.astype(str).astype(object), ids_c.astype(str).astype(object)
    if num_b and (pd.api.types.is_float_dtype(ids_b.dtype)
                  != pd.api.types.is_float_dtype(ids_c.dtype)):  # 7 matches 7.0
        return ids_b.astype(np.float64), ids_c.astype(np.float64)
    return ids_b, ids_c


def _match_ids(ids_b: pd.Series, ids_c: pd.Series) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Row indices ``(ib, ic)`` of matching ids, or ``(None, None)`` when the two id columns
    are identical (positional pairing). Raises _NotComparable on duplicate ids."""
    import pandas as pd

    ids_b, ids_c = comparable_ids(ids_b, ids_c)
    if len(ids_b) == len(ids_c) and ids_b.dtype == ids_c.dtype and ids_b.reset_index(
            drop=True).equals(ids_c.reset_index(drop=True)):
        return None, None
    vb, vc = ids_b.to_numpy(), ids_c.to_numpy()
    if (vb.dtype.kind in "iub") != (vc.dtype.kind in "iub"):
        vb, vc = ids_b.astype(str).to_numpy(object), ids_c.astype(str).to_numpy(object)
    if vb.size == vc.size and ids_b.dtype != ids_c.dtype:  # same dtype: .equals said no
        try:
            if bool(np.all(vb == vc)):
                return None, None
        except (TypeError, ValueError):
            pass
    hb, hc = _id_keys(vb), _id_keys(vc)
    exact = hb.dtype.kind == "u" and vb.dtype.kind in "iub"  # integer ids: keys are the ids
    index_b, index_c = pd.Index(hb), pd.Index(hc)
    if not index_b.is_unique:
        k = int(pd.Series(vb).duplicated().sum())
        if k:
            raise _NotComparable(f"duplicate example_id values in the baseline's table ({k})")
        exact = False  # a 64-bit hash collision between distinct ids: match on the ids
        index_b, index_c = pd.Index(vb), pd.Index(vc)
    pos = np.asarray(index_b.get_indexer(index_c))
    ic = np.flatnonzero(pos >= 0)
    ib = pos[ic]
    if ib.size and int(np.bincount(ib).max()) > 1:  # a baseline row matched twice
        k = int(pd.Series(vc).duplicated().sum())
        if k:
            raise _NotComparable(f"duplicate example_id values in the candidate's table ({k})")
        exact = False  # a hash collision: match on the ids themselves
        index_b = pd.Index(vb)
        pos = np.asarray(index_b.get_indexer(pd.Index(vc)))
        ic = np.flatnonzero(pos >= 0)
        ib = pos[ic]
    if not exact and index_b.dtype.kind == "u":  # guard against hash collisions
        same = np.asarray(vb[ib] == vc[ic], dtype=bool)
        ib, ic = ib[same], ic[same]
    return ib, ic


def _gather(idx: np.ndarray | None, n: int) -> np.ndarray | None:
    """None (no gather needed) when ``idx`` takes every row in order."""
    if idx is None or (idx.size == n and bool(np.all(idx[1:] > idx[:-1]))):
        return None
    return idx


@dataclass
class _Sides:
    mode: str  # "summary", "unpaired", "paired", "inconclusive"
    pairing: PairingInfo
    base: RunRecord
    cand: RunRecord
    threshold: float
    ib: np.ndarray | None = None
    ic: np.ndarray | None = None
    note: str = ""
    cache: dict[Any, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, base: RunRecord, cand: RunRecord, threshold: float,
              min_matched: int) -> _Sides:
        bx, cx = base.examples, cand.examples
        if bx is None or cx is None:
            who = ("either run" if bx is None and cx is None
                   else "the baseline" if bx is None else "the candidate")
            return cls("summary", PairingInfo(False, reason=f"{SUMMARY_ONLY} on {who}"),
                       base, cand, threshold)
        nb, nc = len(bx), len(cx)
        if "example_id" not in bx.columns or "example_id" not in cx.columns:
            who = ("either table" if "example_id" not in bx.columns
                   and "example_id" not in cx.columns
                   else "the baseline's table" if "example_id" not in bx.columns
                   else "the candidate's table")
            return cls("unpaired", PairingInfo(False, 0, nb, nc,
                                               f"no example_id in {who}: unpaired intervals"),
                       base, cand, threshold)
        try:
            ib, ic = _match_ids(bx["example_id"], cx["example_id"])
        except _NotComparable as e:
            return cls("inconclusive", PairingInfo(False, 0, nb, nc, f"not paired: {e}"),
                       base, cand, threshold)
        m = nb if ib is None else int(ib.size)
        info = PairingInfo(True, m, nb - m, nc - m)
        sides = cls("paired", info, base, cand, threshold, _gather(ib, nb), _gather(ic, nc))
        why = ""
        if m < min_matched:
            why = f"only {m} examples matched on example_id (need {min_matched})"
        elif m < MIN_MATCH_FRACTION * nb or m < MIN_MATCH_FRACTION * nc:
            why = (f"eval sets differ: {m} of {nb} baseline examples matched"
                   f" ({m} of {nc} candidate examples)")
        elif "label" in bx.columns and "label" in cx.columns:
            lb, lc = sides.raw("b", "label"), sides.raw("c", "label")
            if lb.dtype.kind != lc.dtype.kind:
                lb, lc = lb.astype(str), lc.astype(str)
            diff = int(np.count_nonzero(lb != lc)) if m else 0
            if diff > MAX_LABEL_MISMATCH * m:
                why = f"eval sets differ: labels differ on {diff} of {m} matched examples"
            elif diff:
                info.reason = f"labels differ on {diff} of {m} matched examples"
        if why:
            info.paired, info.reason = False, why
            sides.mode = "inconclusive"
        elif m < nb or m < nc:
            sides.note = f"paired on the {m} matched examples (full-run values differ)"
            info.reason = "; ".join(x for x in (info.reason, sides.note) if x)
        return sides

    # -- columns ---------------------------------------------------------------------
    def raw(self, side: str, col: str) -> np.ndarray:
        df = self.base.examples if side == "b" else self.cand.examples
        assert df is not None
        a = df[col].to_numpy()
        idx = self.ib if side == "b" else self.ic
        return a if idx is None or self.mode != "paired" else a[idx]

    def col(self, side: str, col: str) -> np.ndarray | None:
        """A float column (NaN = null) aligned for pairing; derived: fallback, brier."""
        key = (side, col)
        if key in self.cache:
            return self.cache[key]  # type: ignore[no-any-return]
        df = self.base.examples if side == "b" else self.cand.examples
        assert df is not None
        out: np.ndarray | None = None
        if col == "brier":
            corr, conf = self.col(side, "correct"), self.col(side, "confidence")
            if corr is not None and conf is not None:
                out = (conf - corr) ** 2
        elif col in df.columns:
            out = _as_float(df[col])
            idx = self.ib if side == "b" else self.ic
            if idx is not None and self.mode == "paired":
                out = out[idx]
        elif col == "fallback":
            conf = self.col(side, "confidence")
            if conf is not None:
                out = np.where(np.isnan(conf), np.nan, (conf < self.threshold).astype(float))
        self.cache[key] = out
        return out

    def has_nan(self, side: str, col: str, a: np.ndarray) -> bool:
        key = ("has_nan", side, col)
        if key not in self.cache:
            self.cache[key] = bool(np.isnan(a).any())
        return bool(self.cache[key])

    def slice_mask(self, side: str, key: str) -> np.ndarray | None:
        """Rows of ``column=value`` (the baseline's column decides when paired)."""
        import pandas as pd

        column, _, value = key.partition("=")
        src = "b" if self.mode == "paired" else side
        df = self.base.examples if src == "b" else self.cand.examples
        if df is None or column not in df.columns:
            if self.mode == "paired" and self.cand.examples is not None \
                    and column in self.cand.examples.columns:
                src, df = "c", self.cand.examples
            else:
                return None
        ck = ("codes", src, column)
        if ck not in self.cache:
            codes, uniques = pd.factorize(df[column])
            idx = self.ib if src == "b" else self.ic
            if idx is not None and self.mode == "paired":
                codes = codes[idx]
            self.cache[ck] = (codes, {str(u): i for i, u in enumerate(uniques)})
        codes, lookup = self.cache[ck]
        return codes == lookup.get(value, -2)  # type: ignore[no-any-return]


def _as_float(s: pd.Series) -> np.ndarray:
    import pandas as pd

    if s.dtype == bool or pd.api.types.is_numeric_dtype(s.dtype) or str(s.dtype) == "boolean":
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    low = s.astype(str).str.strip().str.lower()
    return np.where(low.isin(("true", "t", "yes", "y", "1", "1.0")).to_numpy(), 1.0,
                    np.where(low.isin(("false", "f", "no", "n", "0", "0.0")).to_numpy(), 0.0,
                             np.nan))


# -- estimation ------------------------------------------------------------------------------

def estimate_deltas(baseline: RunRecord, candidate: RunRecord, metrics: Sequence[str], *,
                    fallback_threshold: float = 0.5, seed: int = 0, n_boot: int = 1000,
                    min_matched: int = 30, traffic_mix: Mapping[str, float] | None = None,
                    ) -> tuple[dict[str, DeltaEstimate], PairingInfo]:
    """Estimate ``candidate - baseline`` for each metric name (per-slice and ``[mix=traffic]``
    names included); see the module docstring for the tests. ``traffic_mix`` (slice value ->
    weight) defaults to the runs' ``details["traffic_mix"]``. Reproducible: each metric's
    resamples are seeded from ``(seed, metric name)``, independent of the metric order.
    """
    from .estimate_kinds import estimate_one

    sides = _Sides.build(baseline, candidate, fallback_threshold, min_matched)
    mix = traffic_mix or baseline.details.get("traffic_mix") or candidate.details.get(
        "traffic_mix")
    out: dict[str, DeltaEstimate] = {}
    for name in metrics:
        base, key = split_slice(name)
        spec = _FAMILIES.get(base)
        b_sum, c_sum = baseline.metric(name), candidate.metric(name)
        if spec is None:
            reason = SUMMARY_ONLY if sides.mode == "summary" else "point comparison (no test)"
            out[name] = point_estimate(b_sum, c_sum, reason)
        elif sides.mode == "summary":
            out[name] = point_estimate(b_sum, c_sum, sides.pairing.reason)
        elif sides.mode == "inconclusive":
            est = point_estimate(b_sum, c_sum, sides.pairing.reason)
            est.inconclusive = True
            out[name] = est
        else:
            out[name] = estimate_one(sides, name, base, key, spec, seed=seed, n_boot=n_boot,
                                     mix=dict(mix) if mix else None)
    return out, sides.pairing
