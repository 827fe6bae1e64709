"""Hand-built Comparison fixtures for the renderer tests (no dependency on compare/evaluate).

The details are generated with numpy from a seeded synthetic eval set, in the shapes the
common brief fixes (reliability, confusion, risk_coverage, latency_quantiles ...).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from aipm_tracking.schema import (
    Comparison,
    DatasetInfo,
    MetricComparison,
    ModelInfo,
    RunSummary,
)

LABELS = ["billing", "refund", "tech", "other"]


def _run_details(rng: np.random.Generator, n: int, acc: float, lat_scale: float,
                 cost: float, labels: list[str]) -> dict[str, Any]:
    k = len(labels)
    y = rng.integers(0, k, n)
    correct = rng.random(n) < acc
    pred = np.where(correct, y, (y + rng.integers(1, k, n)) % k)
    conf = np.clip(np.where(correct, rng.beta(8, 2, n), rng.beta(3, 3, n)), 0, 1)
    bins = np.minimum((conf * 15).astype(int), 14)
    count = np.bincount(bins, minlength=15)
    acc_b = np.bincount(bins, weights=correct, minlength=15)
    conf_b = np.bincount(bins, weights=conf, minlength=15)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc_m = np.where(count > 0, acc_b / np.maximum(count, 1), np.nan)
        conf_m = np.where(count > 0, conf_b / np.maximum(count, 1), np.nan)
    order = np.argsort(-conf, kind="stable")
    cum_err = np.cumsum(~correct[order])
    idx = np.unique(np.linspace(0, n - 1, 201).astype(int))
    coverage = (idx + 1) / n
    risk = cum_err[idx] / (idx + 1)
    thr = conf[order][idx]
    cm = np.zeros((k, k), dtype=int)
    np.add.at(cm, (y, pred), 1)
    lat = rng.lognormal(np.log(lat_scale), 0.5, n)
    q = np.round(np.linspace(0, 1, 101), 2)
    return {
        "reliability": {
            "n_bins": 15, "count": count.tolist(),
            "accuracy": [None if np.isnan(v) else float(v) for v in acc_m],
            "confidence": [None if np.isnan(v) else float(v) for v in conf_m],
        },
        "confusion": {"labels": list(labels), "matrix": cm.tolist()},
        "risk_coverage": {"coverage": coverage.tolist(), "risk": risk.tolist(),
                          "threshold": thr.tolist()},
        "latency_quantiles": {"q": q.tolist(), "value": np.quantile(lat, q).tolist()},
        "fallback_threshold": 0.6,
        "slices": {"column": "slice", "values": {"de": n // 3, "en": n - n // 3}},
        "cost_per_query_usd": cost,
    }


def make_comparison(payload: str | None = None, with_details: bool = True,
                    blocking: bool = True) -> Comparison:
    """A realistic comparison: a blocking accuracy regression, a warning, slices.

    ``payload`` (an XSS string) is put into every data-controlled text: run names, model
    names, labels, slice names, reasons, warnings and example text.
    """
    p = payload or ""
    rng = np.random.default_rng(7)
    labels = [f"{lab}{p}" for lab in LABELS]
    base = RunSummary(ref="local:run-base1", name=f"prod{p}",
                      model=ModelInfo("support-bot", "1"),
                      dataset=DatasetInfo("tickets", "2024-05", 2000, "abc123"),
                      guardrails_hash="h1", n_examples=2000,
                      created_at="2024-06-01T10:00:00+00:00")
    cand = RunSummary(ref="local:run-cand2", name=f"cand{p}",
                      model=ModelInfo(f"support-bot{p}", "2"),
                      dataset=DatasetInfo("tickets", "2024-05", 2000, "abc123"),
                      guardrails_hash="h1", n_examples=2000,
                      created_at="2024-06-02T10:00:00+00:00")
    acc_verdict = "regression" if blocking else "pass"
    rows = [
        MetricComparison("accuracy", "higher", 0.912, 0.881, -0.031, -0.034,
                         (-0.045, -0.017), 0.0004, "mcnemar-exact", "block", acc_verdict,
                         f"worse by 0.031, beyond the 0.01 margin; CI confirms{p}",
                         threshold="min 0.85, max_regression 0.01", n=2000),
        MetricComparison("latency_ms_p95", "lower", 612.0, 655.5, 43.5, 0.071,
                         (-5.0, 90.1), 0.08, "bootstrap-paired", "block", "warn",
                         "worse by 7.1% (limit 10%) but the interval includes no change",
                         threshold="max 800, max_regression 10%", n=2000),
        MetricComparison("cost_per_query_usd", "lower", 0.0018, 0.0015, -0.0003, -0.167,
                         (-0.0004, -0.0002), 0.001, "bootstrap-paired", "block", "improved",
                         "better by 16.7%", threshold="max 0.002", n=2000),
        MetricComparison("ece", "lower", 0.031, 0.034, 0.003, 0.097, (-0.004, 0.01), 0.41,
                         "bootstrap-paired", "block", "pass", "within bounds",
                         threshold="max 0.05", n=2000),
        MetricComparison("override_rate", "lower", None, None, None, None, None, None, None,
                         "warn", "inconclusive", "metric missing in both runs",
                         threshold="max 0.05"),
        MetricComparison(f"accuracy[slice=de{p}]", "higher", 0.90, 0.84, -0.06, -0.067,
                         (-0.09, -0.03), 0.0002, "mcnemar-exact", "block",
                         "breach" if blocking else "pass", "below the minimum 0.85",
                         threshold="min 0.85", slice=f"slice=de{p}", n=667),
        MetricComparison("accuracy[slice=en]", "higher", 0.918, 0.902, -0.016, -0.017,
                         (-0.03, -0.002), 0.03, "mcnemar-exact", "block", "pass",
                         "within bounds", threshold="min 0.85", slice="slice=en", n=1333),
    ]
    details: dict[str, Any] = {
        "pairing": {"paired": True, "matched": 2000, "baseline_only": 0, "candidate_only": 0,
                    "reason": ""},
    }
    if with_details:
        bd = _run_details(rng, 2000, 0.912, 300, 0.0018, labels)
        cd = _run_details(rng, 2000, 0.881, 330, 0.0015, labels)
        cd["threshold_recommendation"] = {"threshold": 0.55, "coverage": 0.9, "risk": 0.08}
        details["baseline_details"] = bd
        details["candidate_details"] = cd
        changed = []
        for i in range(250):
            changed.append({
                "example_id": f"ex-{i}{p}", "label": labels[i % 4],
                "baseline_prediction": labels[i % 4],
                "candidate_prediction": labels[(i + 1) % 4],
                "baseline_correct": True, "candidate_correct": False,
                "slice": "de" if i % 3 == 0 else "en",
                "text": f"My invoice #{i} is wrong{p}",
            })
        details["changed_examples"] = changed[:200]
        details["cost_projection"] = {
            "queries_per_day": 10000, "days_per_month": 30,
            "baseline": {"cost_per_query_usd": 0.0018, "daily_usd": 18.0, "monthly_usd": 540.0},
            "candidate": {"cost_per_query_usd": 0.0015, "daily_usd": 15.0,
                          "monthly_usd": 450.0},
            "delta": {"daily_usd": -3.0, "monthly_usd": -90.0}}
    return Comparison(baseline=base, candidate=cand, metrics=rows,
                      warnings=[f"runs were logged on different guardrail hashes{p}"],
                      gate="confirmed", alpha=0.05, guardrails_name=f"support-bot-release{p}",
                      guardrails_hash="h1", details=details)


XSS_PAYLOADS = (
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=1">',
    '"><svg onload="window.__xss=1">',
)
