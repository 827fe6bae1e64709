"""Mergeable accumulators: the metrics of DESIGN §4 from chunks, shards or ranks.

An :class:`EvalAccumulator` takes clean per-example arrays chunk by chunk (``update``), merges
with another (``merge``), ships as a dict of numpy arrays (``to_state`` / ``from_state``) and
produces an :class:`~aipm_tracking.schema.EvalResult` (``result``). Its state is histograms
and sums whose size is bounded whatever the number of rows, except for the *exact* arrays it
keeps while they are small. The fine confidence histogram below is sparse (the occupied bins
only, 48 bytes each; :mod:`aipm_tracking.fine_hist`) up to ``SPARSE_BINS`` = 30,720 bins and dense (2.5 MB) beyond, and the
latency sketch (39 KB) exists only once latencies are sketched, so a small accumulator (each
per-slice one is an accumulator of its own) holds memory in proportion to its rows; both forms
of the histogram hold the same values and give the same results, bit for bit:

* **Latency percentiles** are exact (numpy's linear method, computed in O(n) by
  :func:`exact_quantiles`) while the accumulator holds at most ``exact_rows`` latencies (no
  limit for an in-memory DataFrame). Beyond that they come from a log-bucket sketch whose
  relative error is at most ``SKETCH_ALPHA`` = 0.5% for values in [1e-9, 1e12] (each order
  statistic is represented within 0.5%, so is any linear interpolation of two of them).
* **AURC, risk-coverage and threshold recommendations** are exact (one sort, ties grouped;
  see :mod:`aipm_tracking.selective`) up to ``aurc_exact_rows`` rows (default
  ``AURC_EXACT_ROWS`` = 2M; streaming evaluation uses 200k); beyond that they come from
  a histogram of ``FINE_BINS`` = 61,440 equal-width confidence bins, in which confidences in
  the same 1/61,440-wide bin count as tied and thresholds lie on that grid.
* **ECE/MCE/reliability bins, Brier, rates, means, confusion** are exact sums at any size.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np

from .fine_hist import FINE_BINS, N_BINS, SPARSE_BINS, FineHist  # noqa: F401 (re-exported)
from .quantiles import (  # noqa: F401  (re-exported)
    SKETCH_ALPHA,
    SKETCH_BUCKETS,
    exact_quantiles,
    sketch_quantiles,
    sketch_update,
)
from .schema import EvalResult, MetricValue
from .selective import Groups, aurc_from_groups, curve_from_groups, groups_from_arrays

AURC_EXACT_ROWS = 2_000_000
LATENCY_Q = np.arange(101) / 100.0
PCTS = (("latency_ms_p50", 0.5), ("latency_ms_p95", 0.95), ("latency_ms_p99", 0.99))
RATE_METRICS = ("accuracy", "fallback_rate", "selective_accuracy", "override_rate")


# -- kernels ----------------------------------------------------------------------------------
def wilson_ci(k: float, n: float, alpha: float = 0.05) -> tuple[float, float]:
    """Two-sided Wilson score interval (stats.wilson_interval when that module exists)."""
    try:
        from .stats import wilson_interval

        lo, hi = wilson_interval(k, n, alpha)
        return float(lo), float(hi)
    except ImportError:  # pragma: no cover - stats.py is written alongside
        pass
    if n <= 0:
        return (float("nan"), float("nan"))
    z = NormalDist().inv_cdf(1 - alpha / 2)
    p = k / n
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, c - h), min(1.0, c + h))


def _label_key(s: str) -> tuple[int, float, str]:
    try:
        return (0, float(s), s)
    except ValueError:
        return (1, 0.0, s)


_EMPTY = np.empty(0, dtype=np.int64)


# -- the accumulator -------------------------------------------------------------------------
_SUMS = ("n", "n_correct", "n_label", "n_conf", "n_fb", "n_fb_true", "n_ans", "n_ans_correct",
         "n_ov", "ov_sum", "n_lat", "lat_sum", "n_cost", "cost_sum", "brier_sum",
         "slice_missing")


def _int_name(v: Any) -> str:
    """A class named as the integral chunks name it: ``1.0`` -> ``"1"``; ``0.5`` stays."""
    f = float(v)
    return str(int(f)) if f.is_integer() else str(v)


class EvalAccumulator:
    """Sums and histograms for every DESIGN §4 metric; mergeable and serialisable.

    ``update`` takes a dict of equal-length numpy arrays, all optional: ``correct`` (bool) with
    ``label`` and ``prediction`` (any values, for the confusion matrix), ``confidence``
    (float in [0, 1]), ``fallback`` (bool), ``overridden`` (float, NaN = null), ``latency_ms``,
    ``cost_usd`` (float >= 0) and ``slice`` (values; None/NaN = no slice). Rows must already be
    clean (see :mod:`aipm_tracking.evaluation`).
    """

    def __init__(self, fallback_threshold: float = 0.5, *, exact_rows: int | None = 2_000_000,
                 slices: bool = True, cost_by_confidence: bool = True,
                 aurc_exact_rows: int = AURC_EXACT_ROWS) -> None:
        self.fallback_threshold = float(fallback_threshold)
        self.exact_rows = exact_rows
        self.aurc_exact_rows = aurc_exact_rows
        self._slices_enabled = slices
        #: keep cost per confidence bin (thresholds' cost on the histogram path); in-memory
        #: evaluation recommends thresholds from the exact arrays and can skip it
        self._cost_hist = cost_by_confidence
        self.s: dict[str, float] = dict.fromkeys(_SUMS, 0)
        self.has: set[str] = set()
        self.labels: list[str] = []
        self._label_idx: dict[str, int] = {}
        self.confusion = np.zeros((0, 0), dtype=np.int64)
        self.hist = FineHist()
        self.sketch: np.ndarray | None = None       # made when latencies are first sketched
        self.lat_exact: list[np.ndarray] | None = []
        self.sel_exact: list[tuple[np.ndarray, ...]] | None = []   # (correct, conf, cost)
        self.slices: dict[str, EvalAccumulator] = {}
        self._scratch = _EMPTY

    # -- update ------------------------------------------------------------------------------
    def update(self, cols: dict[str, np.ndarray]) -> None:
        """Add a chunk (all arrays the same length)."""
        n = len(next(iter(cols.values()))) if cols else 0
        self._scratch = np.empty(n, dtype=np.int64)  # reused by the passes below
        try:
            self._update(cols, n)
        finally:
            self._scratch = _EMPTY

    def _update(self, cols: dict[str, np.ndarray], n: int) -> None:
        self.s["n"] += n
        corr = cols.get("correct")
        conf = cols.get("confidence")
        if corr is not None:
            self.has.add("correct")
            self.s["n_correct"] += int(np.count_nonzero(corr))
            if "label" in cols and "prediction" in cols:
                self._add_confusion(cols["label"], cols["prediction"])
        if conf is not None:
            self.has.add("confidence")
            self.s["n_conf"] += n
        cost = cols.get("cost_usd")
        if corr is not None and conf is not None:
            self._add_calibration(corr, conf, cost)
        fb = cols.get("fallback")
        if fb is not None:
            self.has.add("fallback")
            self.s["n_fb"] += n
            self.s["n_fb_true"] += int(np.count_nonzero(fb))
            if corr is not None:
                n_fb = int(np.count_nonzero(fb))
                self.s["n_ans"] += n - n_fb
                self.s["n_ans_correct"] += int(np.count_nonzero(corr)) - int(
                    np.count_nonzero(corr & fb))
        ov = cols.get("overridden")
        if ov is not None:
            self.has.add("overridden")
            if ov.dtype == bool:
                self.s["n_ov"] += n
                self.s["ov_sum"] += int(np.count_nonzero(ov))
            else:
                ok = ~np.isnan(ov)
                self.s["n_ov"] += int(np.count_nonzero(ok))
                self.s["ov_sum"] += float(ov[ok].sum())
        lat = cols.get("latency_ms")
        if lat is not None:
            self.has.add("latency_ms")
            self._add_latency(np.asarray(lat, dtype=np.float64))
        if cost is not None:
            self.has.add("cost_usd")
            self.s["n_cost"] += n
            self.s["cost_sum"] += float(np.sum(cost))
        if self._slices_enabled and cols.get("slice") is not None:
            self._update_slices(cols)

    def _add_confusion(self, label: np.ndarray, pred: np.ndarray) -> None:
        kinds = {label.dtype.kind, pred.dtype.kind}
        int_names = False
        if (label.dtype != pred.dtype and kinds <= set("biuf") and not kinds <= set("iu")
                and label.size):
            # different numeric types compare by value (True == 1 == 1.0, as ``correct`` is
            # computed): one class, not two; float32 0.1 != 0.1, two classes. Integral values
            # are named as integers ("1"). Integers of different widths need no cast.
            label, pred = label.astype(np.float64), pred.astype(np.float64)
            int_names = True  # in every chunk, whether or not this one is all integral
            if (np.all(np.isfinite(label)) and np.all(np.isfinite(pred))
                    and np.all(label == np.floor(label)) and np.all(pred == np.floor(pred))):
                label, pred = label.astype(np.int64), pred.astype(np.int64)
        if label.dtype.kind in "iu" and pred.dtype.kind in "iu" and label.size:
            lo = int(min(label.min(), pred.min()))
            hi = int(max(label.max(), pred.max()))
            if hi - lo < 4096:
                k = hi - lo + 1
                key = self._scratch[: label.size]
                np.multiply(label, k, out=key)
                np.add(key, pred, out=key)
                if lo:
                    key -= lo * (k + 1)
                cm = np.bincount(key, minlength=k * k).reshape(k, k)
                used = np.flatnonzero(cm.any(axis=0) | cm.any(axis=1))
                self._add_matrix([str(v + lo) for v in used], cm[np.ix_(used, used)])
                return
        import pandas as pd

        lc, lu = pd.factorize(label, use_na_sentinel=False)
        pc, pu = pd.factorize(pred, use_na_sentinel=False)
        cm = np.bincount(lc * len(pu) + pc, minlength=len(lu) * len(pu)).reshape(len(lu), len(pu))
        name = _int_name if int_names else str
        self._add_matrix([name(v) for v in lu], cm, [name(v) for v in pu])

    def _add_matrix(self, rows: list[str], cm: np.ndarray, cols: list[str] | None = None) -> None:
        cols = rows if cols is None else cols
        for name in (*rows, *cols):
            if name not in self._label_idx:
                self._label_idx[name] = len(self.labels)
                self.labels.append(name)
        k = len(self.labels)
        if self.confusion.shape[0] < k:
            grown = np.zeros((k, k), dtype=np.int64)
            m = self.confusion.shape[0]
            grown[:m, :m] = self.confusion
            self.confusion = grown
        ri = np.array([self._label_idx[r] for r in rows], dtype=np.int64)
        ci = np.array([self._label_idx[c] for c in cols], dtype=np.int64)
        np.add.at(self.confusion, (ri[:, None], ci[None, :]), cm)

    def _add_calibration(self, corr: np.ndarray, conf: np.ndarray, cost: np.ndarray | None) -> None:
        conf = np.asarray(conf, dtype=np.float64)
        ci = corr.view(np.int8) if corr.dtype == bool else corr.astype(np.int8)
        idx = self._scratch[: conf.size]
        np.copyto(idx, conf * float(FINE_BINS), casting="unsafe")  # floor: conf >= 0
        np.minimum(idx, FINE_BINS - 1, out=idx)
        self.hist.add_rows(idx, ci, conf, cost if self._cost_hist else None)
        d = conf - ci  # sum (c - y)^2 directly: expanding it loses precision near 0
        self.s["brier_sum"] += float(np.dot(d, d))
        self.s["n_label"] += conf.size
        if self.sel_exact is not None:
            if self.s["n_label"] <= self.aurc_exact_rows:
                self.sel_exact.append((corr, conf, cost) if cost is not None else (corr, conf))
            else:
                self.sel_exact = None

    def _add_latency(self, lat: np.ndarray) -> None:
        self.s["n_lat"] += lat.size
        self.s["lat_sum"] += float(lat.sum())
        if self.lat_exact is not None and (self.exact_rows is None
                                           or self.s["n_lat"] <= self.exact_rows):
            self.lat_exact.append(lat)
            return
        sketch_update(self._to_sketch(), lat)

    def _to_sketch(self) -> np.ndarray:
        if self.sketch is None:
            self.sketch = np.zeros(SKETCH_BUCKETS, dtype=np.int64)
        if self.lat_exact is not None:
            for a in self.lat_exact:
                sketch_update(self.sketch, a)
            self.lat_exact = None
        return self.sketch

    def _slice_acc(self, key: str) -> EvalAccumulator:
        acc = self.slices.get(key)
        if acc is None:
            acc = self.slices[key] = EvalAccumulator(
                self.fallback_threshold, exact_rows=self.exact_rows, slices=False,
                cost_by_confidence=self._cost_hist, aurc_exact_rows=self.aurc_exact_rows)
        return acc

    def _update_slices(self, cols: dict[str, np.ndarray]) -> None:
        """Split a chunk by slice value with one stable (radix) sort of the slice codes; the
        gathers then read each column in increasing order within a slice (cheaper than a
        boolean-mask compress per slice value, measured)."""
        import pandas as pd

        # a Series (no copy): pandas 2.2-2.3 warn on factorize of a NumpyExtensionArray
        codes, uniq = pd.factorize(pd.Series(cols["slice"], copy=False))
        self.s["slice_missing"] += int(np.count_nonzero(codes < 0))
        # per-slice confusion matrices are not reported: leave label/prediction out
        rest = {k: v for k, v in cols.items() if k not in ("slice", "label", "prediction")}
        if len(uniq) < 127:
            codes = codes.astype(np.int8)
        elif len(uniq) < 32767:
            codes = codes.astype(np.int16)
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(-1, len(uniq) + 1, dtype=codes.dtype))
        sub_cols = {k: v[order] for k, v in rest.items()}
        for i, name in enumerate(uniq):
            a, b = bounds[i + 1], bounds[i + 2]
            if b > a:
                self._slice_acc(str(name)).update({k: v[a:b] for k, v in sub_cols.items()})

    # -- merge -------------------------------------------------------------------------------
    def merge(self, other: EvalAccumulator) -> EvalAccumulator:
        """Add ``other``'s rows into this accumulator (in place; returns self)."""
        for k in _SUMS:
            self.s[k] += other.s[k]
        self.has |= other.has
        if other.labels:
            nl = len(other.labels)
            self._add_matrix(other.labels, other.confusion[:nl, :nl])
        self.hist.merge(other.hist)
        self._cost_hist = self._cost_hist and other._cost_hist
        if (self.lat_exact is not None and other.lat_exact is not None
                and (self.exact_rows is None or self.s["n_lat"] <= self.exact_rows)):
            self.lat_exact.extend(other.lat_exact)
        else:
            sketch = self._to_sketch()
            if other.sketch is not None:
                sketch += other.sketch
            for a in other.lat_exact or []:
                sketch_update(sketch, a)
        if (self.sel_exact is not None and other.sel_exact is not None
                and self.s["n_label"] <= self.aurc_exact_rows):
            self.sel_exact.extend(other.sel_exact)
        else:
            self.sel_exact = None
        for name, sub in other.slices.items():
            if name in self.slices:
                self.slices[name].merge(sub)
            else:
                self.slices[name] = EvalAccumulator.from_state(sub.to_state())
        return self

    # -- state -------------------------------------------------------------------------------
    def to_state(self) -> dict[str, np.ndarray]:
        """Numpy arrays only (ship with ``np.savez`` or any collective)."""
        st: dict[str, np.ndarray] = {
            "sums": np.array([self.s[k] for k in _SUMS], dtype=np.float64),
            "has": np.array(sorted(self.has), dtype=str),
            "threshold": np.array([self.fallback_threshold]),
            "exact_rows": np.array([-1 if self.exact_rows is None else self.exact_rows]),
            "cost_hist": np.array([self._cost_hist]),
            "aurc_exact_rows": np.array([self.aurc_exact_rows]),
            "labels": np.array(self.labels, dtype=str),
            "confusion": self.confusion, **self.hist.state(),
        }
        if self.sketch is not None:
            st["sketch"] = self.sketch
        if self.lat_exact is not None:
            st["lat_exact"] = np.concatenate(self.lat_exact) if self.lat_exact else np.zeros(0)
        if self.sel_exact is not None:
            parts = list(zip(*self.sel_exact, strict=True)) if self.sel_exact else [[], []]
            st["sel_correct"] = np.concatenate(parts[0]).astype(bool) if parts[0] else np.zeros(0, bool)
            st["sel_conf"] = np.concatenate(parts[1]) if parts[1] else np.zeros(0)
            if len(parts) > 2:
                st["sel_cost"] = np.concatenate(parts[2])
        st["slice_names"] = np.array(list(self.slices), dtype=str)
        for i, sub in enumerate(self.slices.values()):
            for k, v in sub.to_state().items():
                st[f"slice{i}.{k}"] = v
        return st

    @classmethod
    def from_state(cls, st: dict[str, np.ndarray]) -> EvalAccumulator:
        if len(st["sums"]) != len(_SUMS):
            raise ValueError(f"accumulator state has {len(st['sums'])} sums, expected "
                             f"{len(_SUMS)}: it comes from a different aipm version")
        er = int(st["exact_rows"][0])
        acc = cls(float(st["threshold"][0]), exact_rows=None if er < 0 else er,
                  cost_by_confidence=bool(st["cost_hist"][0]) if "cost_hist" in st else True,
                  aurc_exact_rows=int(st["aurc_exact_rows"][0]) if "aurc_exact_rows" in st
                  else AURC_EXACT_ROWS)
        acc.s = {k: (float(v) if k.endswith("_sum") else int(v))
                 for k, v in zip(_SUMS, st["sums"], strict=True)}
        acc.has = {str(h) for h in st["has"]}
        acc.labels = [str(x) for x in st["labels"]]
        acc._label_idx = {k: i for i, k in enumerate(acc.labels)}
        acc.confusion = np.array(st["confusion"], dtype=np.int64)
        acc.hist = FineHist.from_state(st)
        acc.sketch = np.array(st["sketch"], dtype=np.int64) if "sketch" in st else None
        acc.lat_exact = [np.array(st["lat_exact"])] if "lat_exact" in st else None
        if "sel_conf" in st:
            t = (np.array(st["sel_correct"], bool), np.array(st["sel_conf"], np.float64))
            acc.sel_exact = [(*t, np.array(st["sel_cost"]))] if "sel_cost" in st else [t]
        else:
            acc.sel_exact = None
        for i, name in enumerate(st["slice_names"]):
            pre = f"slice{i}."
            sub = {k[len(pre):]: v for k, v in st.items() if k.startswith(pre)}
            acc.slices[str(name)] = cls.from_state(sub)
        return acc

    # -- results -----------------------------------------------------------------------------
    def selection_groups(self) -> tuple[Groups, bool]:
        """Tie groups for AURC / risk-coverage / thresholds, and whether they are exact."""
        if self.sel_exact is not None:
            parts = list(zip(*self.sel_exact, strict=True))
            if parts:
                cost = np.concatenate(parts[2]) if len(parts) > 2 else None
                return groups_from_arrays(np.concatenate(parts[0]), np.concatenate(parts[1]),
                                          cost), True
        return self.hist.groups("cost_usd" in self.has and self._cost_hist), False

    def latency_quantiles(self, q: np.ndarray) -> tuple[np.ndarray, bool]:
        if self.lat_exact is not None:
            x = self.lat_exact[0] if len(self.lat_exact) == 1 else np.concatenate(self.lat_exact)
            return exact_quantiles(x, q), True
        return sketch_quantiles(self._to_sketch(), q), False

    def ratio_parts(self) -> dict[str, tuple[float, float]]:
        """``{metric: (numerator, denominator)}`` of the rate and mean metrics (for mixes)."""
        s, has, out = self.s, self.has, {}
        if "correct" in has:
            out["accuracy"] = (s["n_correct"], s["n"])
        if "fallback" in has:
            out["fallback_rate"] = (s["n_fb_true"], s["n_fb"])
            if "correct" in has:
                out["selective_accuracy"] = (s["n_ans_correct"], s["n_ans"])
        if "overridden" in has:
            out["override_rate"] = (s["ov_sum"], s["n_ov"])
        if "correct" in has and "confidence" in has:
            out["brier"] = (s["brier_sum"], s["n_label"])
        if "latency_ms" in has:
            out["latency_ms_mean"] = (s["lat_sum"], s["n_lat"])
        if "cost_usd" in has:
            out["cost_per_query_usd"] = (s["cost_sum"], s["n_cost"])
        return out

    def _metrics(self, details: dict[str, Any] | None) -> dict[str, MetricValue]:
        s, has = self.s, self.has
        m: dict[str, MetricValue] = {"n_examples": MetricValue(float(s["n"]), n=int(s["n"]))}
        for name, (num, den) in self.ratio_parts().items():
            if den > 0:
                ci = wilson_ci(num, den) if name in RATE_METRICS else None
                m[name] = MetricValue(num / den, ci, int(den))
        if "cost_usd" in has:
            m["cost_total_usd"] = MetricValue(s["cost_sum"], n=int(s["n_cost"]))
        if "correct" in has and "confidence" in has and s["n_label"] > 0:
            cnt, acc, csum = self.hist.reliability()
            nz = cnt > 0
            gap = np.abs(acc[nz] - csum[nz]) / cnt[nz]
            n_lab = int(s["n_label"])
            m["ece"] = MetricValue(float(np.abs(acc - csum).sum() / n_lab), n=n_lab)
            m["mce"] = MetricValue(float(gap.max()), n=n_lab)
            g, exact = self.selection_groups()
            m["aurc"] = MetricValue(aurc_from_groups(g), n=n_lab)
            if details is not None:
                with np.errstate(invalid="ignore", divide="ignore"):
                    details["reliability"] = {
                        "n_bins": N_BINS, "count": [int(c) for c in cnt],
                        "accuracy": [float(a / c) if c else None for a, c in zip(acc, cnt, strict=True)],
                        "confidence": [float(x / c) if c else None
                                       for x, c in zip(csum, cnt, strict=True)]}
                details["risk_coverage"] = curve_from_groups(g).downsample().to_dict()
                details["risk_coverage"]["exact"] = exact
        if "latency_ms" in has and s["n_lat"] > 0:
            qs = np.array([p for _, p in PCTS] + list(LATENCY_Q))
            vals, exact = self.latency_quantiles(qs)
            for i, (name, _) in enumerate(PCTS):
                m[name] = MetricValue(float(vals[i]), n=int(s["n_lat"]))
            if details is not None:
                details["latency_quantiles"] = {"q": [float(x) for x in LATENCY_Q],
                                                "value": [float(v) for v in vals[len(PCTS):]],
                                                "exact": exact}
        return m

    def result(self) -> EvalResult:
        """Metrics (+ Wilson CI and n in ``stats``) and details; per-slice metrics are named
        ``accuracy[slice=de]``. No data issues and no examples (the caller adds those)."""
        details: dict[str, Any] = {"fallback_threshold": self.fallback_threshold}
        stats = self._metrics(details)
        if "correct" in self.has and self.labels:
            order = sorted(range(len(self.labels)), key=lambda i: _label_key(self.labels[i]))
            mat = self.confusion[np.ix_(order, order)]
            details["confusion"] = {"labels": [self.labels[i] for i in order],
                                    "matrix": mat.tolist()}
        if self.slices:
            details["slices"] = {"column": "slice",
                                 "values": {k: int(a.s["n"]) for k, a in self.slices.items()},
                                 "missing": int(self.s["slice_missing"])}
            for key, sub in self.slices.items():
                for name, mv in sub._metrics(None).items():
                    stats[f"{name}[slice={key}]"] = mv
        return EvalResult(metrics={k: v.value for k, v in stats.items()},
                          n_examples=int(self.s["n"]), fallback_threshold=self.fallback_threshold,
                          stats=stats, details=details)
