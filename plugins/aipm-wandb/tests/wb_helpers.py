"""Shared test helpers: synthetic eval tables and RunRecords (no wandb import)."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from aipm_wandb.offline import read_local_run
from fake_wandb_server import FakeRun

from aipm_tracking.schema import DatasetInfo, MetricValue, ModelInfo, RunRecord


def make_examples(n: int = 200, seed: int = 0, acc: float = 0.8) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = rng.choice(["billing", "refund", "login"], n)
    correct = rng.random(n) < acc
    other = np.where(labels == "billing", "refund", "billing")
    df = pd.DataFrame({
        "example_id": [f"ex{i:05d}" for i in range(n)],
        "label": labels,
        "prediction": np.where(correct, labels, other),
        "confidence": np.round(rng.uniform(0.3, 1.0, n), 4),
        "latency_ms": np.round(rng.gamma(4, 100, n), 2),
        "slice": rng.choice(["en", "de"], n),
    })
    df["correct"] = df["label"] == df["prediction"]
    df["fallback"] = df["confidence"] < 0.5
    return df


def make_record(df: pd.DataFrame, *, name: str = "bot-2", model: str = "bot",
                version: str = "2", **extra: Any) -> RunRecord:
    """A RunRecord whose metrics are computed here with plain numpy (not aipm code)."""
    correct = df["correct"].to_numpy(dtype=bool)
    conf = df["confidence"].to_numpy(dtype=float)
    labels = sorted(df["label"].unique())
    idx = {lab: i for i, lab in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=int)
    np.add.at(matrix, (df["label"].map(idx).to_numpy(),
                       df["prediction"].map(lambda v: idx.get(v, 0)).to_numpy()), 1)
    bins = np.minimum((conf * 15).astype(int), 14)
    count = np.bincount(bins, minlength=15)
    acc_b = np.bincount(bins, weights=correct, minlength=15)
    conf_b = np.bincount(bins, weights=conf, minlength=15)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc_l = [None if c == 0 else float(a / c) for a, c in zip(acc_b, count, strict=True)]
        conf_l = [None if c == 0 else float(a / c) for a, c in zip(conf_b, count, strict=True)]
    metrics = {
        "n_examples": MetricValue(float(len(df))),
        "accuracy": MetricValue(float(correct.mean()), ci=(0.7, 0.9), n=len(df)),
        "fallback_rate": MetricValue(float(df["fallback"].mean())),
        "latency_ms_p95": MetricValue(float(np.percentile(df["latency_ms"], 95))),
        "accuracy[slice=de]": MetricValue(float(correct[df["slice"].to_numpy() == "de"].mean())),
    }
    details = {
        "confusion": {"labels": labels, "matrix": matrix.tolist()},
        "reliability": {"n_bins": 15, "count": count.tolist(), "accuracy": acc_l,
                        "confidence": conf_l},
        "guardrails": [{"metric": "accuracy", "threshold": "min 0.9",
                        "value": float(correct.mean()), "verdict": "breach"}],
    }
    kw: dict[str, Any] = dict(
        run_id="", name=name, model=ModelInfo(model, version),
        dataset=DatasetInfo("tickets", "v1", len(df), "d1g3st"), metrics=metrics,
        config={"lr": 0.001, "openai_api_key": "sk-live-123", "db": {"password": "hunter2"},
                "fallback_threshold": 0.5},
        tags={"team": "support"}, guardrails_hash="0123456789abcdef", details=details,
        examples=df)
    kw.update(extra)
    return RunRecord(**kw)


def synced_run(run_dir: str, entity: str, project: str) -> FakeRun:
    """What `wandb sync` would upload from a local run dir: config, summary, history, files."""
    lr = read_local_run(run_dir)
    files = {}
    for path in glob.glob(os.path.join(lr.files_dir, "**", "*"), recursive=True):
        if os.path.isfile(path):
            files[os.path.relpath(path, lr.files_dir)] = Path(path).read_bytes()
    config = {k: v for k, v in lr.config.items()}
    return FakeRun(entity, project, lr.run_id, display_name=lr.display_name,
                   config=config, summary=lr.summary, history=lr.history, files=files,
                   created_at="2026-05-01T10:00:00")
