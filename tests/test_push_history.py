"""aipm push / pull copy a run's logged series (read_history), and a repeated copy of the
same run to the same destination returns the copy already there (embedded store)."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import aipm_tracking as aipm
from aipm_tracking import api, hookimpl, plugins
from aipm_tracking.backends.base import BackendOptions, BaseBackend
from aipm_tracking.backends.local import LocalBackend
from aipm_tracking.errors import AipmWarning, RunNotFoundError
from aipm_tracking.schema import MetricPoint, RunRecord

N_STEPS = 2500


def eval_table(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.choice(["billing", "refund", "login"], n)
    ok = rng.random(n) < 0.8
    return pd.DataFrame({
        "example_id": [f"ex{i:04d}" for i in range(n)],
        "label": label,
        "prediction": np.where(ok, label, "billing"),
        "confidence": rng.uniform(0.2, 1.0, n),
        "slice": rng.choice(["de", "en"], n),
    })


def tracker_run(store: Path, steps: int = N_STEPS, eval_prefix: str = "") -> str:
    """A Tracker run: two keys for ``steps`` steps (NaN, +inf and -inf among them), then a
    log_eval at its own step."""
    with aipm.Tracker(to="local", store=str(store), model="bot", model_version="7",
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


def local(store: Path) -> LocalBackend:
    return LocalBackend(BackendOptions(store=str(store)))


def _v(x: float) -> Any:
    return "nan" if math.isnan(x) else x


def points(history: list[MetricPoint], *, ts: bool = True) -> Counter[tuple[Any, ...]]:
    """The points as a multiset of (key, step, value[, timestamp]), NaN-aware."""
    return Counter((p.key, p.step, _v(p.value), p.timestamp) if ts
                   else (p.key, p.step, _v(p.value)) for p in history)


def metrics(rec: RunRecord) -> dict[str, Any]:
    return {k: _v(mv.value) for k, mv in rec.metrics.items()}


def n_runs(store: Path) -> int:
    return len(list(local(store).list_runs()))


def test_push_copies_the_series_exactly_and_a_repeat_returns_the_copy(store: Path) -> None:
    src = tracker_run(store)
    be = local(store)
    orig = be.read_history(src)
    assert len(orig) == 2 * N_STEPS + len(be.read_run(src).metrics) - 2  # + the eval's
    opts = BackendOptions(store=str(store))

    copy = api.push(src, "local", options=opts)
    assert copy != src
    got = be.read_history(copy)
    assert points(got) == points(orig)  # key, step, value (NaN, ±inf) and time, exactly
    assert [(p.key, p.step) for p in got] == [(p.key, p.step) for p in orig]  # same order
    a, b = be.read_run(src), be.read_run(copy)
    assert metrics(b) == metrics(a) and math.isnan(b.metrics["loss"].value) is False
    assert b.metrics["lr"].value == pytest.approx(0.1 * 0.999 ** (N_STEPS - 1))
    assert b.tags["aipm.source_ref"] == src and b.model == a.model and b.config == a.config
    pd.testing.assert_frame_equal(b.examples, a.examples)

    before = n_runs(store)
    assert api.push(src, "local", options=opts) == copy  # a repeat: the same copy
    assert api.pull(src, options=opts) == copy
    assert n_runs(store) == before
    assert points(be.read_history(copy)) == points(orig)  # not written twice

    # the copy of a copy is a copy of its own source, and exact too
    copy2 = api.push(copy, "local", options=opts)
    assert copy2 not in (src, copy) and points(be.read_history(copy2)) == points(orig)


def test_a_run_without_series_is_copied_as_before_and_once(store: Path) -> None:
    ref = aipm.log(eval_table(), model="bot", model_version="1", store=str(store))
    opts = BackendOptions(store=str(store))
    be = local(store)
    copy = api.pull(ref, options=opts)
    assert be.read_history(copy) == [] and metrics(be.read_run(copy)) == metrics(
        be.read_run(ref))
    assert be.read_run(copy).examples is not None
    assert api.pull(ref, options=opts) == copy
    assert api.push(ref, "local", options=opts) == copy
    assert n_runs(store) == 2


def test_a_copy_made_before_series_were_copied_is_completed_in_place(store: Path) -> None:
    src = tracker_run(store, steps=800)
    be = local(store)
    # what an earlier version left: the record and table, tagged, without the series
    rec = be.read_run(src)
    rec.run_id, rec.tags = "", {**rec.tags, "aipm.source_ref": src}
    old = be.write_run(rec)
    assert be.read_history(old) == []

    copy = api.pull(src, options=BackendOptions(store=str(store)))
    assert copy == old  # the same run, now whole
    assert points(be.read_history(copy)) == points(be.read_history(src))
    assert be.read_run(copy).examples is not None and n_runs(store) == 2


def test_write_run_stores_a_big_series_in_its_one_write(store: Path) -> None:
    be = local(store)
    n = 300_000
    hist = [MetricPoint("loss" if i % 2 else "grad/norm", float(i) / 7, i // 2, 1.7e9 + i / 1e3)
            for i in range(n)]
    hist[11] = MetricPoint("loss", float("nan"), 5, 1.7e9)
    hist.append(MetricPoint("acc", np.float32(0.5), np.int64(3), 1.7e9))  # numpy scalars too
    rec = RunRecord(run_id="", name="big", model=aipm.schema.ModelInfo("m", "1"))
    ref = be.write_run(rec, history=hist)
    got = be.read_history(ref)
    assert len(got) == n + 1
    assert points(got) == points([MetricPoint(p.key, float(p.value), int(p.step), p.timestamp)
                                  for p in hist])
    # a bad point is an error before anything is written
    with pytest.raises(aipm.errors.UsageError, match="not \\(key, value, step, timestamp\\)"):
        be.write_run(RunRecord(run_id="bad1", name="bad", model=rec.model),
                     history=[MetricPoint("loss", "high", 1, 1.0)])  # type: ignore[arg-type]
    with pytest.raises(RunNotFoundError):
        be.read_run("bad1")


class _Historyless(BaseBackend):
    """A third-party backend written against the protocol before ``history``."""

    scheme = "histless"
    runs: dict[str, RunRecord] = {}  # noqa: RUF012 - shared by the instances of a test

    def __init__(self, options: BackendOptions | None = None) -> None:
        self.options = options

    def write_run(self, record: RunRecord, target: str | None = None) -> str:
        run_id = f"r{len(self.runs)}"
        self.runs[run_id] = record
        return f"histless:{run_id}"

    def read_run(self, locator: str, *, with_examples: bool = True) -> RunRecord:
        rec = self.runs[locator]
        rec.ref = f"histless:{locator}"
        return rec


class _HistorylessPlugin:
    @hookimpl
    def aipm_register_backends(self, register: Any) -> None:
        register("histless", _Historyless)


def test_a_backend_without_history_gets_the_run_and_a_warning(store: Path) -> None:
    _Historyless.runs = {}
    plugins.get_plugin_manager().register(_HistorylessPlugin(), name="histless-test")
    src = tracker_run(store, steps=300)
    opts = BackendOptions(store=str(store))
    with pytest.warns(AipmWarning, match=r"history not copied \(6\d\d point\(s\) of "):
        ref = api.push(src, "histless:x", options=opts)
    assert ref == "histless:r0"
    assert _Historyless.runs["r0"].tags["aipm.source_ref"] == src
    # and a run from it (read_history not implemented: no series) comes in without one
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = api.pull(ref, options=opts)
    assert local(store).read_history(back) == []
