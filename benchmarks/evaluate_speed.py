"""Full ``evaluate`` of 10M rows, 10 classes vs the same quantities with scikit-learn.

Data generated like ``anchors/metrics_sklearn_anchor.py``. The aipm side computes every
DESIGN §4 metric its columns allow (accuracy, fallback rate, selective accuracy, override
rate, ECE, MCE, Brier, AURC, latency p50/p95/p99/mean, cost), the confusion matrix, the
15 reliability bins, the risk-coverage curve and 101 latency quantiles. The sklearn side
computes only accuracy_score + confusion_matrix + calibration_curve + np.percentile.
Both are timed in this process, best of ``--repeat`` runs; the ratio is printed.

    python benchmarks/evaluate_speed.py [--rows 10000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n, k = args.rows, 10
    y = rng.integers(0, k, n)
    p = np.where(rng.random(n) < 0.85, y, rng.integers(0, k, n))
    conf = np.clip(rng.beta(8, 2, n), 0, 1)
    lat = rng.lognormal(3, 0.5, n)
    cost = rng.random(n) * 1e-3
    over = rng.random(n) < 0.03
    df = pd.DataFrame({"label": y, "prediction": p, "confidence": conf, "latency_ms": lat,
                       "cost_usd": cost, "overridden": over})

    from sklearn.calibration import calibration_curve
    from sklearn.metrics import accuracy_score, confusion_matrix

    from aipm_tracking.evaluation import evaluate

    evaluate(df.head(1000))  # warm imports (scipy, pandas paths) outside the timing

    def sk() -> None:
        accuracy_score(y, p)
        confusion_matrix(y, p)
        calibration_curve((p == y).astype(int), conf, n_bins=15)
        np.percentile(lat, [50, 95, 99])

    def ours() -> None:
        res = evaluate(df)
        assert "confusion" in res.details and "reliability" in res.details
        assert "aurc" in res.metrics and "latency_ms_p99" in res.metrics

    def best(fn) -> float:  # type: ignore[no-untyped-def]
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    t_sk = best(sk)
    t_ours = best(ours)
    res = evaluate(df)
    assert abs(res.metrics["accuracy"] - accuracy_score(y, p)) < 1e-12
    assert np.allclose(res.metrics["latency_ms_p95"], np.percentile(lat, 95))
    print(f"rows {n:,}  classes {k}")
    print(f"sklearn accuracy+confusion+calibration_curve+np.percentile: {t_sk:.3f} s")
    print(f"aipm evaluate (all DESIGN §4 metrics + confusion + reliability + risk-coverage "
          f"+ 101 latency quantiles): {t_ours:.3f} s")
    print(f"ratio sklearn/aipm: {t_sk / t_ours:.1f}x  (target >= 5x)")


if __name__ == "__main__":
    main()
