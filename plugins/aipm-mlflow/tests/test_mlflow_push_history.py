"""aipm push / pull between the embedded store and MLflow (a real SQLite tracking store)
copy a run's logged series exactly, never as step-0 summary points; a repeated push or pull
of the same run returns the copy already there."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow_helpers import backend, make_record

from aipm_tracking import api
from aipm_tracking.backends.base import BackendOptions
from aipm_tracking.backends.local import LocalBackend
from aipm_tracking.schema import MetricPoint, RunRecord
from aipm_tracking.tracker import Tracker

N_STEPS = 2500


def _client(uri: str):  # noqa: ANN202
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def eval_table(n: int = 300, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.choice(["billing", "refund", "login"], n)
    ok = rng.random(n) < 0.8
    return pd.DataFrame({"example_id": [f"ex{i:04d}" for i in range(n)], "label": label,
                         "prediction": np.where(ok, label, "billing"),
                         "confidence": rng.uniform(0.2, 1.0, n),
                         "slice": rng.choice(["de", "en"], n)})


def tracker_run(to: str, store: Path, uri: str, steps: int = N_STEPS,
                eval_prefix: str = "") -> str:
    """Two keys for ``steps`` steps (NaN, +inf, -inf among them), then a log_eval."""
    with Tracker(to=to, store=str(store), mlflow_uri=uri, model="bot", model_version="3",
                 run_name="train", flush_every_s=0.05, config={"lr0": 0.1}) as tr:
        for i in range(steps):
            loss = 2.0 / (i + 1)
            lr = 0.1 * 0.999 ** i
            if i == 100:
                loss = float("nan")
            if i == 200:
                loss = float("inf")
            if i == 300:
                lr = float("-inf")
            tr.log(step=i, loss=loss, lr=lr)
        tr.log_eval(eval_table(), step=steps, prefix=eval_prefix)
    assert tr.ref is not None
    return tr.ref


def _v(x: float) -> Any:
    return "nan" if math.isnan(x) else x


def points(history: list[MetricPoint], ms: bool = False) -> Counter[tuple[Any, ...]]:
    """(key, step, value) multiset, NaN-aware; ``ms``: with the time in whole milliseconds
    (what MLflow keeps: ``int(seconds * 1000)``)."""
    return Counter((p.key, p.step, _v(p.value), int(p.timestamp * 1000)) if ms
                   else (p.key, p.step, _v(p.value)) for p in history)


def mlflow_points(history: list[MetricPoint]) -> Counter[tuple[Any, ...]]:
    """The same, for points read from MLflow (times ``ms / 1000``, back to exact ms)."""
    return Counter((p.key, p.step, _v(p.value), round(p.timestamp * 1000)) for p in history)


def metrics(rec: RunRecord) -> dict[str, Any]:
    return {k: _v(mv.value) for k, mv in rec.metrics.items()}


def local(store: Path) -> LocalBackend:
    return LocalBackend(BackendOptions(store=str(store)))


def _runs_in(uri: str, exp: str) -> list[Any]:
    c = _client(uri)
    e = c.get_experiment_by_name(exp)
    return list(c.search_runs([e.experiment_id])) if e else []


def test_push_to_mlflow_copies_the_series_and_a_repeat_returns_the_run(
        sqlite_uri: str, tmp_path: Path) -> None:
    store = tmp_path / "store"
    src = tracker_run("local", store, sqlite_uri, eval_prefix="val/")
    lb = local(store)
    orig, rec = lb.read_history(src), lb.read_run(src)
    opts = BackendOptions(store=str(store), mlflow_uri=sqlite_uri)

    ref = api.push(src, "mlflow:ph-push", options=opts)
    mb = backend(sqlite_uri)
    got = mb.read_history(ref)
    assert points(got) == points(orig)  # key, step, value: exactly (NaN, ±inf included)
    assert mlflow_points(got) == points(orig, ms=True)  # and the time MLflow keeps
    run_id = ref.split(":", 1)[1]
    c = _client(sqlite_uri)
    run = c.get_run(run_id)
    # a key with a series: its points as logged, no step-0 summary point; MLflow's latest
    # value is the series' last point
    loss = c.get_metric_history(run_id, "loss")
    assert sorted(m.step for m in loss) == list(range(N_STEPS))
    assert run.data.metrics["loss"] == pytest.approx(2.0 / N_STEPS)
    assert run.data.metrics["lr"] == pytest.approx(0.1 * 0.999 ** (N_STEPS - 1))
    assert run.data.metrics["val/accuracy"] == rec.metrics["accuracy"].value
    # a summary metric without a series (the eval's, unprefixed): one point at the last
    # step, found by MLflow search, listed in the tag, not a series for aipm
    acc = c.get_metric_history(run_id, "accuracy")
    assert [(m.step, m.value) for m in acc] == [(N_STEPS, rec.metrics["accuracy"].value)]
    assert "accuracy" in json.loads(run.data.tags["aipm.summary_keys"])
    assert "loss" not in json.loads(run.data.tags["aipm.summary_keys"])
    assert run.data.tags["aipm.history_points"] == str(len(orig))
    exp_id = run.info.experiment_id
    assert [r.info.run_id for r in c.search_runs([exp_id], "metrics.accuracy > 0.5")] == [run_id]
    assert mlflow_points(mb.read_history(ref, keys=["accuracy", "loss"])) == mlflow_points(
        [p for p in got if p.key == "loss"])
    back = mb.read_run(ref)
    assert metrics(back) == metrics(rec)
    pd.testing.assert_frame_equal(back.examples, rec.examples)

    assert api.push(src, "mlflow:ph-push", options=opts) == ref  # a repeat: the same run
    assert len(_runs_in(sqlite_uri, "ph-push")) == 1

    # and back: pulled into the store with its series, once
    pulled = api.pull(ref, options=opts)
    assert mlflow_points(lb.read_history(pulled)) == points(orig, ms=True)
    assert metrics(lb.read_run(pulled)) == metrics(rec)
    n = len(list(lb.list_runs()))
    assert api.pull(ref, options=opts) == pulled
    assert len(list(lb.list_runs())) == n


def test_a_run_streamed_to_mlflow_is_pulled_with_its_series_once(
        sqlite_uri: str, tmp_path: Path) -> None:
    store = tmp_path / "store"
    src = tracker_run("mlflow:ph-stream", store, sqlite_uri)
    mb = backend(sqlite_uri)
    orig = mb.read_history(src)
    assert len(orig) > 2 * N_STEPS
    opts = BackendOptions(store=str(store), mlflow_uri=sqlite_uri)
    lb = local(store)

    pulled = api.pull(src, options=opts)
    got = lb.read_history(pulled)
    assert points(got) == points(orig)
    assert Counter((p.key, p.step, p.timestamp) for p in got) == Counter(
        (p.key, p.step, p.timestamp) for p in orig)  # MLflow's times, exactly
    assert api.pull(src, options=opts) == pulled
    assert len(list(lb.list_runs())) == 1

    # pushed on to another experiment: the same series as the streamed run
    again = api.push(pulled, "mlflow:ph-stream-copy", options=opts)
    assert mlflow_points(mb.read_history(again)) == mlflow_points(orig)
    a = _client(sqlite_uri).get_run(src.split(":", 1)[1]).data.metrics
    b = _client(sqlite_uri).get_run(again.split(":", 1)[1]).data.metrics
    assert {k: _v(v) for k, v in a.items()} == {k: _v(v) for k, v in b.items()}
    assert api.push(pulled, "mlflow:ph-stream-copy", options=opts) == again


def test_a_copy_pushed_before_series_were_copied_gives_way_to_a_whole_one(
        sqlite_uri: str, tmp_path: Path) -> None:
    store = tmp_path / "store"
    src = tracker_run("local", store, sqlite_uri, steps=600)
    lb = local(store)
    mb = backend(sqlite_uri)
    # what an earlier version pushed: the record (its summary at step 0), no series
    rec = lb.read_run(src)
    rec.run_id, rec.tags = "", {**rec.tags, "aipm.source_ref": src}
    old = mb.write_run(rec, "ph-old")
    assert "aipm.history_points" not in _client(sqlite_uri).get_run(
        old.split(":", 1)[1]).data.tags

    opts = BackendOptions(store=str(store), mlflow_uri=sqlite_uri)
    ref = api.push(src, "mlflow:ph-old", options=opts)
    assert ref != old
    assert points(mb.read_history(ref)) == points(lb.read_history(src))
    assert api.push(src, "mlflow:ph-old", options=opts) == ref
    assert len(_runs_in(sqlite_uri, "ph-old")) == 2

    # a run without series is pushed as before: its summary at step 0, and only once
    plain = make_record(n=80, name="plain")
    plain.tags["aipm.source_ref"] = "local:plain-source"
    first = mb.write_run(plain, "ph-old")
    assert mb.write_run(plain, "ph-old", history=[]) == first
    hist = _client(sqlite_uri).get_metric_history(first.split(":", 1)[1], "accuracy")
    assert [m.step for m in hist] == [0]


def test_a_big_series_goes_in_batches_of_mlflows_limit(sqlite_uri: str) -> None:
    mb = backend(sqlite_uri)
    calls: list[int] = []
    real = mb.client.log_batch

    def counting(run_id: str, metrics: list[Any] = (), **kw: Any) -> Any:  # type: ignore[assignment]
        if metrics:
            calls.append(len(metrics))
        return real(run_id, metrics=metrics, **kw)

    mb.client.log_batch = counting
    n = 20_500
    hist = [MetricPoint("train/loss" if i % 2 else "loss@train", 1.0 / (i + 1), i // 2,
                        1.7e9 + i) for i in range(n)]
    rec = make_record(n=50, name="big", with_examples=False)
    rec.tags["aipm.source_ref"] = "local:big-source"
    ref = mb.write_run(rec, "ph-big", history=hist)
    assert max(calls) == 1000 and sum(calls) == n + len(rec.metrics)
    assert mlflow_points(mb.read_history(ref)) == points(hist, ms=True)


def test_summary_keys_tags_split_and_read_back() -> None:
    from aipm_mlflow import convert as cv

    keys = [f"eval/metric_{i:04d}[slice=s{i}]" for i in range(900)]
    tags = cv.summary_keys_tags(keys)
    assert len(tags) > 1 and all(len(v) <= 8000 for _, v in tags)
    assert tags[0][0] == "aipm.summary_keys" and tags[1][0] == "aipm.summary_keys.2"
    assert cv.summary_only_keys(dict(tags)) == set(keys)
    assert cv.summary_only_keys({"aipm.summary_keys": "not json"}) == set()
