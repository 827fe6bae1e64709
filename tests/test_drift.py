"""Population stability index: numeric (baseline quantile bins), categorical, drift_report."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from aipm_tracking.drift import drift_report, psi, psi_categorical


def _psi_loop(base: np.ndarray, cand: np.ndarray, n_bins: int, floor: float) -> float:
    """Independent, plain-Python PSI: decile edges via pandas.qcut on the baseline."""
    _, edges = pd.qcut(base, n_bins, retbins=True, duplicates="drop")
    inner = list(edges[1:-1])

    def shares(x: np.ndarray) -> list[float]:
        counts = [0] * (len(inner) + 1)
        for v in x:
            counts[sum(1 for e in inner if v >= e)] += 1
        return [c / len(x) for c in counts]

    total = 0.0
    for b, c in zip(shares(base), shares(cand), strict=True):
        b, c = max(b, floor), max(c, floor)
        total += (c - b) * math.log(c / b)
    return total


def test_psi_matches_loop_implementation() -> None:
    rng = np.random.default_rng(0)
    base = rng.beta(5, 2, 3000)
    cand = rng.beta(4, 2, 2000)
    assert psi(base, cand) == pytest.approx(_psi_loop(base, cand, 10, 1e-4), rel=1e-9)
    assert psi(base, cand, n_bins=5) == pytest.approx(_psi_loop(base, cand, 5, 1e-4), rel=1e-9)


def test_psi_identical_is_zero_and_shift_is_large() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=5000)
    assert psi(x, x) == pytest.approx(0.0, abs=1e-12)
    assert psi(x, x + 2.0) > 1.0


def test_psi_floor_and_constant_baseline() -> None:
    base = np.full(100, 0.5)
    cand = np.concatenate([np.full(50, 0.5), np.full(50, 0.9)])
    # the constant is a bin of its own: [0.5] holds 1 vs 0.5, (0.5, inf) holds 0 vs 0.5
    # (merged into one bin, this shift used to read PSI 0)
    assert psi(base, cand) == pytest.approx(
        (0.5 - 1) * math.log(0.5 / 1) + (0.5 - 1e-4) * math.log(0.5 / 1e-4))
    assert psi(base, base) == 0.0
    # candidate entirely above the baseline's range: the last bin gets everything
    b = np.linspace(0, 1, 1000)
    v = psi(b, np.full(10, 2.0), n_bins=10)
    expected = 9 * (1e-4 - 0.1) * math.log(1e-4 / 0.1) + (1 - 0.1) * math.log(1 / 0.1)
    assert v == pytest.approx(expected, rel=1e-3)


def test_psi_saturated_baseline_confidence() -> None:
    """92% of the baseline at confidence 1.0 (an LLM): every quantile edge from 10% up is
    1.0, so the bins used to collapse into one and PSI read 0 whatever the candidate did."""
    rng = np.random.default_rng(0)
    base = np.r_[np.ones(920), rng.random(80)]
    cand = np.full(1000, 0.2)
    # by hand: bins (-inf, 1.0) and [1.0]: the baseline 0.08 / 0.92, the candidate 1 / 0
    exp = (1 - 0.08) * math.log(1 / 0.08) + (1e-4 - 0.92) * math.log(1e-4 / 0.92)
    assert psi(base, cand) == pytest.approx(exp)
    assert psi(base, base) == 0.0
    # continuous data has no atom: the bins are the plain deciles (as the loop computes)
    smooth = rng.beta(5, 2, 3000)
    assert psi(smooth, cand) == pytest.approx(_psi_loop(smooth, cand, 10, 1e-4), rel=1e-9)


def test_psi_categorical_compares_by_name() -> None:
    """A Parquet integer slice and a CSV text slice are the same slices (psi_slice of the
    same rows read from the two formats used to be 16 and block)."""
    ints = np.array([1, 2, 3] * 200)
    assert psi_categorical(ints, ints.astype(str)) == 0.0
    assert psi_categorical(ints.astype(float), ints.astype(str)) == 0.0
    withnull = np.array(["1", None, "2"] * 10, dtype=object)
    assert psi_categorical(withnull, np.array([1.0, np.nan, 2.0] * 10)) == 0.0


def test_psi_categorical_by_hand() -> None:
    b = ["a"] * 50 + ["b"] * 50
    c = ["a"] * 80 + ["b"] * 10 + ["c"] * 10
    exp = ((0.8 - 0.5) * math.log(0.8 / 0.5) + (0.1 - 0.5) * math.log(0.1 / 0.5)
           + (0.1 - 1e-4) * math.log(0.1 / 1e-4))
    assert psi_categorical(b, c) == pytest.approx(exp)
    assert psi_categorical(b, b) == 0.0


def test_drift_report_keys_and_reference() -> None:
    rng = np.random.default_rng(2)
    base = pd.DataFrame({"confidence": rng.random(500), "prediction": rng.integers(0, 3, 500),
                         "slice": rng.choice(["de", "en"], 500)})
    cand = pd.DataFrame({"confidence": rng.random(400) ** 0.5,
                         "prediction": rng.integers(0, 3, 400)})
    rep = drift_report(base, cand)
    assert set(rep) == {"psi_confidence", "psi_prediction"}
    assert rep["psi_confidence"] == pytest.approx(psi(base.confidence, cand.confidence))
    prod = pd.DataFrame({"confidence": rng.random(1000), "slice": ["de"] * 1000})
    rep2 = drift_report(base, cand, reference=prod)
    assert rep2["psi_confidence_vs_reference"] == pytest.approx(
        psi(prod.confidence, cand.confidence))
    assert "psi_slice_vs_reference" not in rep2  # candidate has no slice column
