"""The backend against a real MLflow 3 SQLite store (MlflowClient underneath, no mocks).

What MLflow holds is checked with plain ``MlflowClient`` calls, independently of our reader.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow_helpers import backend, make_examples, make_record

from aipm_tracking.errors import AipmWarning, BackendError, UsageError
from aipm_tracking.schema import (
    Comparison,
    MetricComparison,
    MetricPoint,
    ModelInfo,
    RunRecord,
    RunSummary,
)


def _client(uri: str):  # noqa: ANN202
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


class _CountCalls:
    """Wraps one MlflowClient method to count calls (the real method still runs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, obj: object, name: str) -> None:
        self.calls: list[tuple[tuple, dict]] = []
        real = getattr(obj, name)

        def wrapper(*a, **kw):  # noqa: ANN002, ANN003, ANN202
            self.calls.append((a, kw))
            return real(*a, **kw)

        monkeypatch.setattr(obj, name, wrapper)


def test_push_pull_is_lossless_and_mlflow_sees_everything(sqlite_uri: str) -> None:
    be = backend(sqlite_uri)
    rec = make_record(n=300, seed=1, run_id="src-run-1")
    ref = be.write_run(rec, "support-bot")
    assert ref.startswith("mlflow:")
    run_id = ref.split(":", 1)[1]

    back = be.read_run(run_id)
    assert back.ref == ref and back.status == "finished"
    assert back.model == ModelInfo("support-bot", "2")
    assert back.guardrails_hash == "gh-abc"
    assert back.dataset == rec.dataset
    assert set(back.metrics) == set(rec.metrics)
    for k, mv in rec.metrics.items():
        assert back.metrics[k].value == pytest.approx(mv.value)
    assert back.metrics["accuracy"].ci == (0.7, 0.9) and back.metrics["accuracy"].n == 300
    assert back.config["api_key"] == "***" and back.config["nested"] == {"layers": [1, 2]}
    assert back.details["confusion"] == rec.details["confusion"]
    assert rec.examples is not None and back.examples is not None
    pd.testing.assert_frame_equal(back.examples, rec.examples)

    # independently, through plain MLflow
    c = _client(sqlite_uri)
    run = c.get_run(run_id)
    tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
    assert run.info.status == "FINISHED"
    assert tags["aipm.status"] == "complete" and tags["aipm.model"] == "support-bot"
    assert tags["aipm.model_version"] == "2" and tags["aipm.guardrails_hash"] == "gh-abc"
    assert tags["mlflow.runName"] == "r1" and tags["team"] == "support"
    assert metrics["accuracy"] == pytest.approx(rec.metrics["accuracy"].value)
    assert metrics["accuracy/slice:de"] == pytest.approx(rec.metrics["accuracy[slice=de]"].value)
    assert params["lr"] == "0.0003" and params["api_key"] == "***"
    ds = run.inputs.dataset_inputs[0].dataset
    assert ds.name == "tickets" and ds.digest == rec.dataset.digest[:36]
    assert json.loads(ds.profile)["num_rows"] == 300
    names = {a.path for a in c.list_artifacts(run_id, "aipm")}
    assert {"aipm/run.json", "aipm/examples.parquet", "aipm/examples_table.json"} <= names
    details = {a.path for a in c.list_artifacts(run_id, "aipm/details")}
    assert details == {"aipm/details/confusion.json", "aipm/details/reliability.json"}
    table = json.loads(Path(c.download_artifacts(run_id, "aipm/examples_table.json")).read_text())
    assert len(table["data"]) == 300 and "confidence" in table["columns"]
    lm = c.get_logged_model(tags["aipm.logged_model_id"])
    assert lm.source_run_id == run_id and lm.tags["aipm.model_version"] == "2"
    linked = {m.key: m for m in lm.metrics}
    assert linked["accuracy"].dataset_digest == ds.digest


def test_retry_of_same_record_does_not_duplicate(sqlite_uri: str) -> None:
    be = backend(sqlite_uri)
    rec = make_record(n=50, run_id="same-run", with_examples=False)
    a = be.write_run(rec, "retry")
    b = be.write_run(rec, "retry")
    assert a == b
    assert len(list(be.list_runs("retry"))) == 1


def test_failed_push_is_marked_incomplete_and_a_retry_finishes_it(
        sqlite_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.exceptions import MlflowException

    be = backend(sqlite_uri)
    rec = make_record(n=80, run_id="flaky-run")
    real = be.client.log_artifacts

    def broken(*a, **kw):  # noqa: ANN002, ANN003, ANN202 - the artifact store fails midway
        raise MlflowException("artifact store unavailable")

    monkeypatch.setattr(be.client, "log_artifacts", broken)
    with pytest.raises(BackendError, match="incomplete; push again"):
        be.write_run(rec, "flaky")
    [half] = list(be.list_runs("flaky"))
    assert half.status == "incomplete"
    run = _client(sqlite_uri).get_run(half.run_id)
    assert run.data.tags["aipm.status"] == "incomplete" and run.info.status == "RUNNING"
    with pytest.warns(AipmWarning, match="unfinished"):
        assert be.read_run(half.run_id, with_examples=False).status == "incomplete"

    monkeypatch.setattr(be.client, "log_artifacts", real)
    ref = be.write_run(rec, "flaky")
    assert ref == f"mlflow:{half.run_id}"
    [done] = list(be.list_runs("flaky"))
    assert done.status == "finished"
    back = be.read_run(half.run_id)
    assert back.examples is not None and len(back.examples) == 80
    assert len(_client(sqlite_uri).search_logged_models([run.info.experiment_id])) == 1


def test_batches_stay_within_mlflow_limits(sqlite_uri: str, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    be = backend(sqlite_uri)
    rec = make_record(n=20, with_examples=False)
    rec.metrics.update({f"custom_{i}": rec.metrics["accuracy"] for i in range(2400)})
    rec.config.update({f"p{i}": i for i in range(230)})
    spy = _CountCalls(monkeypatch, be.client, "log_batch")
    ref = be.write_run(rec, "limits")
    sizes = [(len(kw["metrics"]), len(kw["params"]), len(kw["tags"])) for _, kw in spy.calls]
    assert all(m <= 1000 and p <= 100 and t <= 100 for m, p, t in sizes)
    assert sum(m for m, _, _ in sizes) == len(rec.metrics)
    assert sum(1 for m, _, _ in sizes if m) == 3  # ceil(2405 / 1000)
    run = _client(sqlite_uri).get_run(ref.split(":")[1])
    assert len(run.data.metrics) == len(rec.metrics) and len(run.data.params) == 234


def test_over_long_values_are_reported_never_cut(sqlite_uri: str) -> None:
    be = backend(sqlite_uri)
    rec = make_record(n=20, with_examples=False)
    long = "".join(chr(97 + i % 26) for i in range(7000))
    rec.config["prompt_template"] = long
    with pytest.warns(AipmWarning, match="'prompt_template' is 7000 characters"):
        ref = be.write_run(rec, "long")
    run_id = ref.split(":")[1]
    c = _client(sqlite_uri)
    assert "prompt_template" not in c.get_run(run_id).data.params
    path = c.download_artifacts(run_id, "aipm/params/prompt_template.txt")
    assert Path(path).read_text() == long
    assert be.read_run(run_id).config["prompt_template"] == long

    rec2 = make_record(n=20, with_examples=False, name="r2")
    rec2.config["k" * 260] = 1
    with pytest.raises(BackendError, match="260 characters; MLflow allows 250"):
        be.write_run(rec2, "long")


def test_runs_written_by_plain_mlflow_are_read_through_metric_map(sqlite_uri: str) -> None:
    import mlflow

    df = make_examples(120, seed=3)
    mlflow.set_tracking_uri(sqlite_uri)
    try:
        mlflow.set_experiment("foreign")
        with mlflow.start_run(run_name="their-run") as run:
            for step in range(30):
                mlflow.log_metric("val/acc", 0.5 + step / 100, step=step)
            mlflow.log_params({"model_name": "their-bot", "model_version": "7"})
            path = Path("eval.parquet")
            df.to_parquet(path, index=False)
            mlflow.log_artifact(str(path), "evals")
            mlflow.set_tag("aipm.examples_artifact", "evals/eval.parquet")
    finally:
        mlflow.set_tracking_uri("")
    be = backend(sqlite_uri, metric_map={"val/acc": "accuracy"})
    rec = be.read_run(run.info.run_id)
    assert rec.name == "their-run" and rec.model == ModelInfo("their-bot", "7")
    assert rec.metrics["accuracy"].value == pytest.approx(0.79)
    assert "val/acc" not in rec.metrics
    assert rec.examples is not None
    pd.testing.assert_frame_equal(rec.examples, df)
    hist = be.read_history(run.info.run_id, ["val/acc"])
    assert [p.step for p in hist] == list(range(30))
    assert [p.value for p in hist] == pytest.approx([0.5 + s / 100 for s in range(30)])
    [listed] = list(be.list_runs("foreign"))
    assert listed.metrics["accuracy"].value == pytest.approx(0.79)


def test_list_runs_pages_without_a_request_per_run(sqlite_uri: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import aipm_mlflow.backend as mod
    from mlflow.entities import Metric

    be = backend(sqlite_uri)
    c = _client(sqlite_uri)
    exp = c.create_experiment("many")
    t0 = int(time.time() * 1000)
    for i in range(25):
        r = c.create_run(exp, start_time=t0 + i, run_name=f"run{i:02d}")
        c.log_batch(r.info.run_id, metrics=[Metric("accuracy", i / 25, t0, 0)])
    monkeypatch.setattr(mod, "LIST_PAGE_SIZE", 10)
    search = _CountCalls(monkeypatch, be.client, "search_runs")
    get = _CountCalls(monkeypatch, be.client, "get_run")
    names = [r.name for r in be.list_runs("many")]
    assert names == [f"run{i:02d}" for i in reversed(range(25))]
    assert len(search.calls) == 3 and not get.calls
    high = list(be.list_runs("many", filter="metrics.accuracy > 0.8"))
    assert sorted(r.name for r in high) == [f"run{i}" for i in range(21, 25)]
    assert len(list(be.list_runs("many", limit=7))) == 7
    with pytest.raises(UsageError, match="filter"):
        list(be.list_runs("many", filter="metrics.accuracy >>> 1"))


def test_streaming_uses_few_batches_and_reads_back(sqlite_uri: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    be = backend(sqlite_uri)
    start = RunRecord(run_id="", name="train", model=ModelInfo("m", "1"), config={"lr": 0.1})
    ref = be.start_run(start, "train")
    run_id = ref.split(":")[1]
    assert _client(sqlite_uri).get_run(run_id).info.status == "RUNNING"
    rng = np.random.default_rng(0)
    t = time.time()
    pts = [MetricPoint("loss", float(v), i, t + i / 1000) for i, v in enumerate(rng.random(1500))]
    pts += [MetricPoint("lr", 0.1, i, t) for i in range(1000)]
    spy = _CountCalls(monkeypatch, be.client, "log_batch")
    be.log_points(ref, pts)
    assert len(spy.calls) == 3  # ceil(2500 / 1000)
    hist = be.read_history(ref, ["loss"])
    assert [p.value for p in hist] == pytest.approx([p.value for p in pts[:1500]])
    assert [p.step for p in hist] == list(range(1500))
    final = make_record(n=40, with_examples=True, name="train")
    with pytest.warns(AipmWarning, match="config 'lr' changed during the run"):
        be.finish_run(ref, "finished", final)
    back = be.read_run(run_id)
    assert back.status == "finished" and back.examples is not None
    assert back.metrics["accuracy"].value == pytest.approx(final.metrics["accuracy"].value)
    assert len(be.read_history(run_id, ["loss"])) == 1500


def test_write_comparison(sqlite_uri: str) -> None:
    be = backend(sqlite_uri)
    a, b = make_record(n=10, name="base"), make_record(n=10, name="cand")
    row = MetricComparison("accuracy", "higher", 0.9, 0.85, -0.05, -0.055, (-0.08, -0.02), 0.01,
                           "mcnemar-exact", "block", "regression", "worse by 5 points")
    cmp = Comparison(RunSummary.of(a), RunSummary.of(b), [row], guardrails_hash="gh-abc")
    ref = be.write_comparison(cmp, "reviews")
    run_id = ref.split(":")[1]
    c = _client(sqlite_uri)
    run = c.get_run(run_id)
    assert run.data.tags["aipm.verdict"] == "fail" and run.data.metrics["exit_code"] == 1
    assert run.data.metrics["n_regression"] == 1 and run.data.metrics["n_blocking"] == 1
    got = json.loads(Path(c.download_artifacts(run_id, "aipm/comparison.json")).read_text())
    assert got == json.loads(cmp.to_json())


def test_bad_uris_and_run_ids(tmp_path: Path, sqlite_uri: str) -> None:
    with pytest.raises(UsageError, match="file store is deprecated"):
        backend(f"file://{tmp_path}/mlruns")
    be = backend(sqlite_uri)
    from aipm_tracking.errors import InvalidReferenceError, RunNotFoundError

    with pytest.raises(InvalidReferenceError):
        be.read_run("../../etc/passwd")
    with pytest.raises(RunNotFoundError):
        be.read_run("0" * 32)


def test_tracker_streams_through_the_plugin(sqlite_uri: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    from aipm_tracking.tracker import Tracker

    spy = _CountCalls(monkeypatch, MlflowClient, "log_batch")
    log_metric = _CountCalls(monkeypatch, MlflowClient, "log_metric")
    with Tracker(to="mlflow:tracker", run_name="t", model="m", model_version="1",
                 mlflow_uri=sqlite_uri, spool_dir=tmp_path / "spool", flush_every_s=0.2,
                 config={"lr": 0.1}) as tr:
        for i in range(3000):
            tr.log(step=i, loss=1.0 / (i + 1), lr=0.1)
    assert tr.ref is not None and tr.ref.startswith("mlflow:")
    be = backend(sqlite_uri)
    hist = be.read_history(tr.ref, ["loss"])
    assert [p.step for p in hist] == list(range(3000))
    assert [p.value for p in hist] == pytest.approx([1.0 / (i + 1) for i in range(3000)])
    assert be.read_run(tr.ref, with_examples=False).status == "finished"
    metric_batches = [kw["metrics"] for _, kw in spy.calls if kw.get("metrics")]
    assert all(len(m) <= 1000 for m in metric_batches)
    assert len(metric_batches) < 60 and not log_metric.calls  # batched, never per point


def test_filter_names_aipm_slice_metrics_and_progress_on_a_tty(
        sqlite_uri: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    be = backend(sqlite_uri)
    for seed, name in ((1, "low"), (2, "high")):
        rec = make_record(n=60, seed=seed, name=name, run_id=f"slice-{name}",
                          with_examples=False)
        rec.metrics["accuracy[slice=de]"] = type(rec.metrics["accuracy"])(
            0.5 if name == "low" else 0.95)
        be.write_run(rec, "slices")
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    got = [r.name for r in be.list_runs("slices", filter="metrics.accuracy[slice=de] > 0.9")]
    assert got == ["high"]
    quiet = backend(sqlite_uri, quiet=True)
    assert len(list(quiet.list_runs("slices"))) == 2


def test_ui_table_is_a_marked_head_and_dataset_schema_is_sampled(
        sqlite_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import aipm_mlflow.backend as mod

    monkeypatch.setattr(mod, "SCHEMA_SAMPLE_ROWS", 50)
    be = backend(sqlite_uri, extra={"mlflow_ui_table_max_rows": 100})
    rec = make_record(n=300, seed=4, run_id="ui-head")
    run_id = be.write_run(rec, "ui-table").split(":")[1]
    c = _client(sqlite_uri)
    run = c.get_run(run_id)
    assert run.data.tags["aipm.ui_table_rows"] == "first 100 of 300"
    table = json.loads(Path(c.download_artifacts(run_id, "aipm/examples_table.json")).read_text())
    assert len(table["data"]) == 100
    assert rec.examples is not None
    assert table["data"][0][table["columns"].index("example_id")] == rec.examples["example_id"][0]
    back = be.read_run(run_id)
    assert back.examples is not None and len(back.examples) == 300  # Parquet has every row
    ds = run.inputs.dataset_inputs[0].dataset
    cols = {c["name"]: c["type"] for c in json.loads(ds.schema)["mlflow_colspec"]}
    assert cols["label"] == "string" and cols["confidence"] == "double"
    assert json.loads(ds.profile)["num_rows"] == 300


def test_unwritable_table_is_an_error_before_anything_is_created(sqlite_uri: str) -> None:
    """DESIGN §8b: a bad input leaves the store as it was (no half-written run)."""
    from aipm_tracking.errors import DataError

    be = backend(sqlite_uri)
    rec = make_record(n=30, run_id="mixed-types")
    assert rec.examples is not None
    rec.examples["label"] = [1 if i % 2 else "one" for i in range(30)]  # int and str mixed
    with pytest.raises(DataError, match="cannot be written as Parquet") as ei:
        be.write_run(rec, "mixed")
    assert "incomplete" not in str(ei.value)
    assert _client(sqlite_uri).get_experiment_by_name("mixed") is None
