"""Quantiles two ways: exact in O(n) for arrays in memory, and a mergeable log-bucket sketch.

* :func:`exact_quantiles` equals ``np.percentile(x, 100*q)`` (numpy's default linear method,
  same rounding) without sorting everything: values are bucketed by the top bits of their
  IEEE-754 representation (monotone in the value for non-negative floats), and only the
  buckets that hold the needed order statistics are sorted.
* The sketch (:func:`sketch_update` / :func:`sketch_quantiles`) has buckets
  ``(gamma^(i-1), gamma^i]`` with ``gamma = (1 + a) / (1 - a)``, ``a = SKETCH_ALPHA = 0.005``,
  represented by ``2 gamma^i / (gamma + 1)``: every order statistic in [1e-9, 1e12] is
  returned within relative error ``a``, and so is any linear interpolation of two of them
  (a convex combination of values each within ``a``). Zeros are kept exactly in bucket 0.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

SKETCH_ALPHA = 0.005
_GAMMA = (1 + SKETCH_ALPHA) / (1 - SKETCH_ALPHA)
_LN_GAMMA = math.log(_GAMMA)
_SK_MIN = math.floor(math.log(1e-9) / _LN_GAMMA)
_SK_MAX = math.ceil(math.log(1e12) / _LN_GAMMA)
SKETCH_BUCKETS = _SK_MAX - _SK_MIN + 2   # bucket 0 holds zeros


def _virtual_index(n: int, q: np.ndarray) -> np.ndarray:
    return (n - 1) * q  # numpy's 'linear' method (get_virtual_index), same rounding


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    d = b - a
    out = a + d * t
    hi = t >= 0.5
    out[hi] = (b - d * (1 - t))[hi]
    return out


def _interp(n: int, q: np.ndarray, order_stat: Any) -> np.ndarray:
    v = _virtual_index(n, q)
    lo = np.clip(np.floor(v), 0, n - 1).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    t = np.clip(v - lo, 0.0, 1.0)
    return _lerp(order_stat(lo), order_stat(hi), t)


def exact_quantiles(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``np.percentile(x, 100*q)`` (linear), in O(n).

    Values are bucketed by the top bits of their IEEE-754 representation (for non-negative
    floats the bit pattern is monotone in the value, so this is a log-scale bucketing with no
    rounding doubt); only the few buckets holding the needed order statistics are sorted."""
    x = np.asarray(x, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    n = x.size
    if n == 0:
        return np.full(q.shape, np.nan)
    if n <= 200_000:
        s = np.sort(x)
        return _interp(n, q, lambda i: s[i])
    vmin, vmax = float(x.min()), float(x.max())
    if vmin == vmax:
        return np.full(q.shape, vmin)
    base = x if vmin >= 0 else x - vmin  # correctly rounded subtraction keeps the order
    low = vmin if vmin > 0 else float(base[base > 0].min())
    b_lo = int(np.float64(low).view(np.int64))
    b_hi = int(np.float64(vmax - min(vmin, 0.0)).view(np.int64))
    shift = max(0, (b_hi - b_lo).bit_length() - 16)
    nb = (b_hi >> shift) - (b_lo >> shift) + 1  # <= 2**16 + 1
    bi = base.view(np.int64) >> shift
    bi -= b_lo >> shift
    if vmin <= 0:  # zeros (and -0.0) join the lowest bucket: still monotone
        np.maximum(bi, 0, out=bi)
    counts = np.bincount(bi, minlength=nb)
    cum = np.cumsum(counts)
    v = _virtual_index(n, q)
    lo = np.clip(np.floor(v), 0, n - 1).astype(np.int64)
    ranks = np.unique(np.concatenate([lo, np.minimum(lo + 1, n - 1)]))
    rb = np.searchsorted(cum, ranks, side="right")
    need = np.zeros(nb, dtype=bool)
    need[rb] = True
    sel = np.sort(x[need[bi]])  # monotone buckets: sorted values are grouped by bucket
    nbk = np.flatnonzero(need)
    offset = np.zeros(nb, dtype=np.int64)
    offset[nbk] = np.cumsum(counts[nbk]) - counts[nbk]
    start = cum - counts

    def stat(r: np.ndarray) -> np.ndarray:
        bk = np.searchsorted(cum, r, side="right")
        return sel[offset[bk] + (r - start[bk])]

    return _interp(n, q, stat)


def sketch_update(counts: np.ndarray, x: np.ndarray) -> None:
    """Add non-negative values to a log-bucket sketch (bucket 0 = zeros)."""
    pos = x > 0
    counts[0] += int(x.size - np.count_nonzero(pos))
    if pos.any():
        idx = np.ceil(np.log(x[pos]) / _LN_GAMMA).astype(np.int64)
        np.clip(idx, _SK_MIN, _SK_MAX, out=idx)
        counts += np.bincount(idx - _SK_MIN + 1, minlength=counts.size)


def sketch_quantiles(counts: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Linear-interpolated quantiles from a sketch; relative error <= SKETCH_ALPHA."""
    n = int(counts.sum())
    if n == 0:
        return np.full(np.shape(q), np.nan)
    cum = np.cumsum(counts)
    keys = np.arange(counts.size) - 1 + _SK_MIN
    rep = np.where(np.arange(counts.size) == 0, 0.0, 2.0 * _GAMMA ** keys.astype(float) / (_GAMMA + 1))
    return _interp(n, np.asarray(q, dtype=np.float64),
                   lambda r: rep[np.searchsorted(cum, r, side="right")])


