"""Helpers shared by the aipm-mlflow tests (records, tables, the backend via the host)."""

from __future__ import annotations

import numpy as np


def backend(uri: str, **kw):  # noqa: ANN201 - test helper
    """The plugin's backend through the plugin host (the path the CLI takes)."""
    from aipm_tracking.backends.base import BackendOptions
    from aipm_tracking.plugins import get_backend

    return get_backend("mlflow", BackendOptions(mlflow_uri=uri, **kw))


def make_examples(n: int = 400, seed: int = 0, acc: float = 0.8):
    """A canonical per-example table (DESIGN §3) with random but reproducible content."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, n)
    correct = rng.random(n) < acc
    pred = np.where(correct, label, (label + 1 + rng.integers(0, 2, n)) % 3)
    conf = np.clip(rng.beta(5, 2, n), 0, 1)
    df = pd.DataFrame({
        "example_id": [f"ex{i:05d}" for i in range(n)],
        "label": [f"c{v}" for v in label],
        "prediction": [f"c{v}" for v in pred],
        "confidence": conf,
        "latency_ms": rng.gamma(2.0, 100.0, n),
        "cost_usd": rng.uniform(0.0005, 0.002, n),
        "slice": rng.choice(["de", "en", "fr"], n),
    })
    df["correct"] = df["label"] == df["prediction"]
    df["fallback"] = df["confidence"] < 0.5
    return df


def make_record(n: int = 400, seed: int = 0, *, name: str = "r1", run_id: str = "",
                with_examples: bool = True, **kw):
    """A RunRecord whose metrics are computed from its table with sklearn (independent)."""
    from sklearn.metrics import accuracy_score, confusion_matrix

    from aipm_tracking.schema import DatasetInfo, MetricValue, ModelInfo, RunRecord

    df = make_examples(n, seed)
    labels = sorted(set(df["label"]) | set(df["prediction"]))
    de = df[df["slice"] == "de"]
    metrics = {
        "n_examples": MetricValue(float(n)),
        "accuracy": MetricValue(float(accuracy_score(df["label"], df["prediction"])),
                                ci=(0.7, 0.9), n=n),
        "fallback_rate": MetricValue(float(df["fallback"].mean())),
        "latency_ms_p95": MetricValue(float(np.percentile(df["latency_ms"], 95))),
        "accuracy[slice=de]": MetricValue(float(accuracy_score(de["label"], de["prediction"]))),
    }
    details = {
        "confusion": {"labels": labels, "matrix": confusion_matrix(
            df["label"], df["prediction"], labels=labels).tolist()},
        "reliability": {"n_bins": 15, "count": [n // 15] * 15, "accuracy": [None] * 15,
                        "confidence": [None] * 15},
    }
    return RunRecord(
        run_id=run_id, name=name, model=ModelInfo("support-bot", str(kw.pop("version", "2"))),
        dataset=DatasetInfo("tickets", "v3", n, "0123456789abcdef" * 4),
        metrics=metrics, config={"fallback_threshold": 0.5, "lr": 3e-4, "api_key": "sk-XYZ",
                                 "nested": {"layers": [1, 2]}},
        tags={"team": "support"}, guardrails_hash="gh-abc", details=details,
        examples=df if with_examples else None, **kw)
