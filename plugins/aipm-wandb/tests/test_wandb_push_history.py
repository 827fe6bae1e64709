"""aipm push / pull between the embedded store, W&B (the real SDK, offline) and MLflow (a
real SQLite store) copy a run's logged series exactly, and a repeated push or pull of the
same run returns the copy already there."""

from __future__ import annotations

import glob
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from aipm_wandb import convert, remote
from aipm_wandb.backend import WandbBackend
from aipm_wandb.offline import read_local_run
from fake_wandb_server import FakeWandbServer
from wb_helpers import synced_run

from aipm_tracking import api
from aipm_tracking.backends.base import BackendOptions
from aipm_tracking.backends.local import LocalBackend
from aipm_tracking.errors import AipmWarning
from aipm_tracking.plugins import get_backend
from aipm_tracking.schema import MetricPoint, RunRecord
from aipm_tracking.tracker import Tracker

N_STEPS = 2000


def eval_table(n: int = 300, seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.choice(["billing", "refund", "login"], n)
    ok = rng.random(n) < 0.8
    return pd.DataFrame({"example_id": [f"ex{i:04d}" for i in range(n)], "label": label,
                         "prediction": np.where(ok, label, "billing"),
                         "confidence": rng.uniform(0.2, 1.0, n),
                         "slice": rng.choice(["de", "en"], n)})


def tracker_run(to: str, store: Path, steps: int = N_STEPS, **kw: Any) -> str:
    """Two keys for ``steps`` steps, one ``log`` per step (NaN, +inf, -inf among them),
    then a log_eval at its own step."""
    with Tracker(to=to, store=str(store), model="bot", model_version="5", run_name="train",
                 flush_every_s=0.05, config={"lr0": 0.1}, **kw) as tr:
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
        tr.log_eval(eval_table(), step=steps)
    assert tr.ref is not None
    return tr.ref


def _v(x: float) -> Any:
    return "nan" if math.isnan(x) else x


def points(history: list[MetricPoint], *, ts: bool = False) -> Counter[tuple[Any, ...]]:
    """(key, step, value[, time]) multiset, NaN-aware."""
    return Counter((p.key, p.step, _v(p.value), p.timestamp) if ts
                   else (p.key, p.step, _v(p.value)) for p in history)


def metrics(rec: RunRecord) -> dict[str, Any]:
    return {k: _v(mv.value) for k, mv in rec.metrics.items()}


def run_dirs(root: Path) -> list[str]:
    return sorted(glob.glob(str(root / "wandb" / "*run-*")))


def history_of(ref: str, opts: BackendOptions) -> list[MetricPoint]:
    scheme, _, loc = ref.partition(":")
    return get_backend(scheme, opts).read_history(loc)


def test_push_to_wandb_copies_the_series_and_a_repeat_returns_the_run(
        offline: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    src = tracker_run("local", store)
    lb = LocalBackend(BackendOptions(store=str(store)))
    orig, rec = lb.read_history(src), lb.read_run(src)
    opts = BackendOptions(store=str(store))

    ref = api.push(src, "wandb:acme/copies", options=opts)
    got = history_of(ref, opts)
    # one W&B row per step, with its time: key, step, value (NaN, ±inf) and time, exactly
    assert points(got, ts=True) == points(orig, ts=True)
    lr = read_local_run(ref.split(":", 1)[1])
    assert [row["_step"] for row in lr.history if "loss" in row] == list(range(N_STEPS))
    assert lr.summary["loss"] == pytest.approx(2.0 / N_STEPS)
    assert lr.summary["accuracy"] == rec.metrics["accuracy"].value
    back = WandbBackend(opts).read_run(ref.split(":", 1)[1])
    assert metrics(back) == metrics(rec) and back.tags["aipm.source_ref"] == src
    pd.testing.assert_frame_equal(back.examples, rec.examples)

    dirs = run_dirs(offline)
    assert api.push(src, "wandb:acme/copies", options=opts) == ref  # a repeat: the same run
    assert run_dirs(offline) == dirs
    other = api.push(src, "wandb:acme/elsewhere", options=opts)  # another project: a copy
    assert other != ref and len(run_dirs(offline)) == len(dirs) + 1

    # and back into the store, once
    pulled = api.pull(ref, options=opts)
    assert points(lb.read_history(pulled), ts=True) == points(orig, ts=True)
    assert metrics(lb.read_run(pulled)) == metrics(rec)
    n = len(list(lb.list_runs()))
    assert api.pull(ref, options=opts) == pulled
    assert len(list(lb.list_runs())) == n


def test_every_pair_of_local_mlflow_and_wandb_copies_the_series(
        offline: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    src = tracker_run("local", store, steps=1200)
    opts = BackendOptions(store=str(store), mlflow_uri=uri)
    want = points(history_of(src, opts))

    m = api.push(src, "mlflow:copies", options=opts)  # local -> mlflow
    w = api.push(m, "wandb:acme/from-mlflow", options=opts)  # mlflow -> wandb
    m2 = api.push(w, "mlflow:from-wandb", options=opts)  # wandb -> mlflow
    via = api.pull(m, options=opts)  # mlflow -> local -> wandb
    w2 = api.push(via, "wandb:acme/via-local", options=opts)
    via2 = api.pull(w, options=opts)  # wandb -> local -> mlflow
    m3 = api.push(via2, "mlflow:via-local", options=opts)
    for ref in (m, w, m2, via, w2, via2, m3):
        assert points(history_of(ref, opts)) == want, ref
        assert metrics(api.load_run(ref, options=opts)) == metrics(api.load_run(src,
                                                                                 options=opts))
    # W&B keeps the times of a W&B copy's rows exactly
    assert points(history_of(w2, opts), ts=True) == points(history_of(via, opts), ts=True)
    # every copy again: the same runs, none new
    n_dirs = len(run_dirs(offline))
    assert [api.push(m, "wandb:acme/from-mlflow", options=opts),
            api.push(w, "mlflow:from-wandb", options=opts), api.pull(m, options=opts),
            api.push(via, "wandb:acme/via-local", options=opts), api.pull(w, options=opts),
            api.push(via2, "mlflow:via-local", options=opts)] == [w, m2, via, w2, via2, m3]
    assert len(run_dirs(offline)) == n_dirs


def test_a_run_streamed_to_wandb_is_pulled_with_its_series_once(
        offline: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    src = tracker_run("wandb:acme/stream", store, steps=1500)
    opts = BackendOptions(store=str(store))
    orig = history_of(src, opts)
    assert len(orig) > 3000
    pulled = api.pull(src, options=opts)
    lb = LocalBackend(BackendOptions(store=str(store)))
    assert points(lb.read_history(pulled), ts=True) == points(orig, ts=True)
    assert api.pull(src, options=opts) == pulled
    assert len(list(lb.list_runs())) == 1


def test_a_negative_step_cannot_go_to_wandb_and_is_said(offline: Path) -> None:
    hist = [MetricPoint("loss", 1.0 / (s + 3), s, 1.7e9 + s) for s in range(-2, 50)]
    rec = RunRecord(run_id="", name="neg", model=convert.ModelInfo("m", "1"))
    be = WandbBackend(BackendOptions())
    with pytest.warns(AipmWarning, match=r"2 point\(s\) of loss at negative step\(s\) not"):
        ref = be.write_run(rec, "acme/neg", history=hist)
    assert points(be.read_history(ref.split(":", 1)[1]), ts=True) == points(hist[2:], ts=True)


def test_a_copy_on_a_server_is_found_by_its_source(
        offline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "store"
    src = tracker_run("local", store, steps=300)
    opts = BackendOptions(store=str(store))
    copy = api.push(src, "wandb:acme/copies", options=opts)
    lr = read_local_run(copy.split(":", 1)[1])
    assert convert.source_tag(src) in lr.tags

    srv = FakeWandbServer().start()  # what `wandb sync` of the copy uploads
    try:
        fake = synced_run(lr.run_dir, "acme", "copies")
        fake.tags = list(lr.tags)
        srv.add_run(fake)
        monkeypatch.setenv("WANDB_BASE_URL", srv.url)
        monkeypatch.setenv("WANDB_MODE", "online")
        ref = api.push(src, "wandb:acme/copies", options=opts)
        assert ref == f"wandb:acme/copies/{lr.run_id}"
        tag = convert.source_tag(src)

        def find(source: str) -> str | None:  # a new Api each time: wandb caches listings
            return remote.find_copy(remote.make_api({}), "acme/copies", source, tag,
                                    convert.RUN_JSON)

        assert find(src) == ref and find("local:other") is None
        fake.state = "running"  # an unfinished copy is not one
        assert find(src) is None
        fake.state = "finished"
        del fake.files[convert.RUN_JSON]  # nor one without its record
        assert find(src) is None
    finally:
        srv.stop()
    assert os.path.isdir(lr.run_dir)
