"""Population stability index (PSI) between two eval sets, or an eval set and production.

``PSI = sum_i (c_i - b_i) * ln(c_i / b_i)`` over bins ``i``, with ``b`` the baseline's and
``c`` the candidate's share of rows per bin. Rules of thumb: < 0.1 stable, 0.1-0.2 moderate
shift, > 0.2 significant shift.

* **Numeric** (:func:`psi`): bin edges are the baseline's quantiles at ``0, 1/n_bins, ..., 1``
  (numpy linear); repeated edges are merged, so there may be fewer bins. A value that holds
  at least ``1/n_bins`` of the baseline (an atom: an LLM's confidence 1.0, a constant
  column) is a bin of its own, so a candidate that moves off it shows (merging it with its
  neighbours used to give PSI 0 whatever the candidate did). Otherwise the outer bins are
  open (values below the baseline minimum count in the first bin, above the maximum in the
  last).
* **Categorical** (:func:`psi_categorical`): one bin per value seen on either side; values
  are compared by name, as slice names are (``1``, ``1.0`` and ``"1"`` are one category:
  a Parquet integer slice and a CSV text slice are the same slice).
* **Floor**: empty bins would make ``ln`` infinite, so every share is raised to at least
  ``floor`` (default ``1e-4``) before the sum; shares are not renormalised afterwards. A
  category present on one side only therefore contributes about ``share * ln(share / 1e-4)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_FLOOR = 1e-4


def _psi_from_shares(b: np.ndarray, c: np.ndarray, floor: float) -> float:
    b = np.maximum(b, floor)
    c = np.maximum(c, floor)
    return float(np.sum((c - b) * np.log(c / b)))


def psi(baseline_values: Any, candidate_values: Any, n_bins: int = 10,
        floor: float = DEFAULT_FLOOR) -> float:
    """PSI of a numeric column, bins from the baseline's quantiles (NaNs are ignored)."""
    b = np.asarray(baseline_values, dtype=np.float64)
    c = np.asarray(candidate_values, dtype=np.float64)
    b, c = b[~np.isnan(b)], c[~np.isnan(c)]
    if b.size == 0 or c.size == 0:
        return float("nan")
    edges = np.unique(np.quantile(b, np.linspace(0.0, 1.0, n_bins + 1)))
    values, counts = np.unique(b, return_counts=True)
    atoms = values[counts * n_bins >= b.size]  # each gets [v, next float after v)
    inner = np.unique(np.concatenate([edges[1:-1], atoms, np.nextafter(atoms, np.inf)]))
    k = inner.size + 1
    bi = np.bincount(np.searchsorted(inner, b, side="right"), minlength=k)
    ci = np.bincount(np.searchsorted(inner, c, side="right"), minlength=k)
    return _psi_from_shares(bi / b.size, ci / c.size, floor)


def _names(a: np.ndarray) -> np.ndarray:
    """Category values by name, nulls kept null: integers and integral floats as ``"1"``,
    other numbers as ``str``, text as it is (vectorised for numeric and text columns)."""
    import pandas as pd

    if a.dtype.kind in "iub":
        return a.astype(str)
    if a.dtype.kind == "f":
        out = a.astype(object)
        ok = np.isfinite(a) & (np.abs(np.where(np.isfinite(a), a, 0.0)) < 2.0 ** 63)
        whole = ok & (a == np.floor(np.where(ok, a, 0.0)))
        out[whole] = a[whole].astype(np.int64).astype(str)
        rest = np.isfinite(a) & ~whole
        out[rest] = a[rest].astype(str)
        out[np.isnan(a)] = None
        return out
    s = pd.Series(a, dtype=object)
    if pd.api.types.infer_dtype(s, skipna=True) in ("string", "empty"):
        return a
    return s.map(lambda v: v if v is None or isinstance(v, str) or (
        isinstance(v, float) and np.isnan(v)) else _names(np.asarray([v]))[0]).to_numpy()


def psi_categorical(baseline_values: Any, candidate_values: Any,
                    floor: float = DEFAULT_FLOOR) -> float:
    """PSI of a categorical column (nulls are a category of their own)."""
    import pandas as pd

    b, c = np.asarray(baseline_values).reshape(-1), np.asarray(candidate_values).reshape(-1)
    if b.size == 0 or c.size == 0:
        return float("nan")
    b, c = _names(b), _names(c)
    # one factorize over both sides (hash-based, vectorised): codes index the union of values
    codes, uniques = pd.factorize(np.concatenate([b, c]), use_na_sentinel=False)
    k = len(uniques)
    bs = np.bincount(codes[:b.size], minlength=k) / b.size
    cs = np.bincount(codes[b.size:], minlength=k) / c.size
    return _psi_from_shares(bs, cs, floor)


def drift_report(base_examples: Any, cand_examples: Any, reference: Any = None, *,
                 n_bins: int = 10, floor: float = DEFAULT_FLOOR) -> dict[str, float]:
    """PSI of confidence, prediction mix and slice mix, candidate vs baseline eval set.

    Returns ``{"psi_confidence", "psi_prediction", "psi_slice"}`` for the columns both tables
    have. With ``reference`` (a production sample: DataFrame with any of those columns) it
    adds ``psi_confidence_vs_reference`` ... : the candidate eval set against production
    (the reference is the PSI baseline there). Values are floats; NaN never appears (a column
    with no rows is left out).
    """
    out: dict[str, float] = {}

    def add(name: str, a: Any, b: Any) -> None:
        for col in ("confidence", "prediction", "slice"):
            if a is None or b is None or col not in a.columns or col not in b.columns:
                continue
            x, y = a[col].to_numpy(), b[col].to_numpy()
            v = (psi(x, y, n_bins, floor) if col == "confidence"
                 else psi_categorical(x, y, floor))
            if np.isfinite(v):
                out[name.format(col)] = v

    add("psi_{}", base_examples, cand_examples)
    if reference is not None:
        add("psi_{}_vs_reference", reference, cand_examples)
    return out
