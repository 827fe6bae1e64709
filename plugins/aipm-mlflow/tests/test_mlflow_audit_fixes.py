"""Fixes of the MLflow audit, each against a real MLflow store (SQLite, or the real
``mlflow server`` fixture): ending a push, artifact tags, checks before the run exists,
injective keys, redaction of foreign params, column_map on backend tables, credentials in
debug tracebacks."""

from __future__ import annotations

import json
import traceback
import warnings
from pathlib import Path

import pandas as pd
import pytest
from aipm_mlflow.testing import Server
from click.testing import CliRunner
from mlflow_helpers import backend, make_examples, make_record

from aipm_tracking.errors import AipmWarning, BackendError

ODD_KEYS = [
    "loss@train", "loss_train", "val/f1:macro", "eval/split:test", "a b", "münchen/東京",
    "x[y]", "acc[slice=de]", "acc[slice=a/b:c]", "acc[slice=]", "/lead", "trail/", "a//b",
    "..dots", "a/./b", "a/../b", ".", "ǀ", "lossǀ40ǀtrain", "50%", "q?=&", "emoji 😀",
    "tab\tkey", "dup:colon::x", "train/acc[slice=de]", "[x]", "a]b[c=d]",
]


def _client(uri: str):  # noqa: ANN202
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _cli(uri: str, *args: str) -> tuple[int, str, str]:
    from aipm_tracking.cli import cli

    res = CliRunner().invoke(cli, ["--mlflow-uri", uri, "-q", *args])
    err = res.stderr if res.stderr_bytes is not None else ""
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        err += f"{type(res.exception).__name__}: {res.exception}"
    return res.exit_code, res.stdout, err


def _aipm(uri: str, *args: str) -> tuple[int, str, str]:
    """The console entry point (AipmError -> one line, exit code), in-process."""
    import contextlib
    import io

    from aipm_tracking.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            pytest.raises(SystemExit) as ei:
        main(["--mlflow-uri", uri, "-q", *args])
    return int(ei.value.code or 0), out.getvalue(), err.getvalue()


# -- BUG 1: the run is ended before it is tagged complete ---------------------------------
def test_end_run_failure_stays_incomplete_and_a_retry_ends_it(
        sqlite_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.exceptions import MlflowException

    be = backend(sqlite_uri)
    rec = make_record(n=40, run_id="end-fails")
    real = be.client.set_terminated

    def down(*a, **kw):  # noqa: ANN002, ANN003, ANN202 - the server goes away at the end
        raise MlflowException("simulated: server went away")

    monkeypatch.setattr(be.client, "set_terminated", down)
    with pytest.raises(BackendError, match="end run.*tagged aipm.status=incomplete; push again"):
        be.write_run(rec, "endrun")
    c = _client(sqlite_uri)
    [run] = c.search_runs([c.get_experiment_by_name("endrun").experiment_id])
    assert run.data.tags["aipm.status"] == "incomplete" and run.info.status == "RUNNING"
    assert [r.status for r in be.list_runs("endrun")] == ["incomplete"]

    monkeypatch.setattr(be.client, "set_terminated", real)
    assert be.write_run(rec, "endrun") == f"mlflow:{run.info.run_id}"
    run = c.get_run(run.info.run_id)
    assert run.data.tags["aipm.status"] == "complete" and run.info.status == "FINISHED"
    assert run.info.end_time is not None
    assert [r.status for r in be.list_runs("endrun")] == ["finished"]


def test_a_complete_run_left_running_by_an_older_plugin_is_ended_by_a_push(
        sqlite_uri: str) -> None:
    be = backend(sqlite_uri)
    rec = make_record(n=20, run_id="old-running", with_examples=False)
    run_id = be.write_run(rec, "endrun-old").split(":")[1]
    c = _client(sqlite_uri)
    c.update_run(run_id, status="RUNNING")  # what the old ordering left behind
    assert c.get_run(run_id).info.status == "RUNNING"
    assert be.write_run(rec, "endrun-old") == f"mlflow:{run_id}"
    assert c.get_run(run_id).info.status == "FINISHED"


def test_streamed_run_is_ended_before_it_is_tagged_complete(
        sqlite_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.exceptions import MlflowException

    from aipm_tracking.schema import ModelInfo, RunRecord

    be = backend(sqlite_uri)
    ref = be.start_run(RunRecord(run_id="", name="s", model=ModelInfo("m", "1")), "endstream")
    real = be.client.set_terminated
    monkeypatch.setattr(be.client, "set_terminated",
                        lambda *a, **kw: (_ for _ in ()).throw(MlflowException("gone")))
    with pytest.raises(BackendError, match="end run"):
        be.finish_run(ref)
    run = _client(sqlite_uri).get_run(ref.split(":")[1])
    assert run.data.tags["aipm.status"] == "running" and run.info.status == "RUNNING"
    monkeypatch.setattr(be.client, "set_terminated", real)
    be.finish_run(ref)
    run = _client(sqlite_uri).get_run(ref.split(":")[1])
    assert run.data.tags["aipm.status"] == "complete" and run.info.status == "FINISHED"


# -- BUG 2: artifact tags only after the upload; a missing artifact is a warning ----------
def _interrupted_push(be, exp: str, monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
                      run_id: str) -> str:
    from mlflow.exceptions import MlflowException

    def broken(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        raise MlflowException("artifact store unavailable")

    with monkeypatch.context() as m:
        m.setattr(be.client, "log_artifacts", broken)
        with pytest.raises(BackendError, match="incomplete; push again"):
            be.write_run(make_record(n=60, run_id=run_id), exp)
    [half] = list(be.list_runs(exp))
    return str(half.run_id)


def _check_interrupted_run_reads(uri: str, be, run_id: str) -> None:  # noqa: ANN001
    c = _client(uri)
    tags = c.get_run(run_id).data.tags
    assert "aipm.examples_artifact" not in tags and "aipm.record" not in tags
    with pytest.warns(AipmWarning, match="unfinished"):
        rec = be.read_run(run_id)
    assert rec.status == "incomplete" and rec.examples is None

    # a run an older plugin left behind: the tag is there, the artifact is not
    c.set_tag(run_id, "aipm.examples_artifact", "aipm/examples.parquet")
    with pytest.warns(AipmWarning, match="'aipm/examples.parquet' but it is not there"):
        rec = be.read_run(run_id)
    assert rec.examples is None
    code, out, err = _cli(uri, "pull", f"mlflow:{run_id}")
    assert code == 0, err
    code, out, err = _cli(uri, "compare", f"mlflow:{run_id}", f"mlflow:{run_id}",
                          "--format", "json")
    assert code in (0, 3), err  # compared (point gate), not a download error (exit 2)
    assert json.loads(out)["metrics"]


def test_interrupted_push_reads_with_a_warning_sqlite(
        sqlite_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    be = backend(sqlite_uri)
    run_id = _interrupted_push(be, "interrupted", monkeypatch, "int-sqlite")
    _check_interrupted_run_reads(sqlite_uri, be, run_id)


def test_interrupted_push_reads_with_a_warning_server(
        mlflow_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    be = backend(mlflow_server.url)
    run_id = _interrupted_push(be, "interrupted-srv", monkeypatch, "int-server")
    _check_interrupted_run_reads(mlflow_server.url, be, run_id)
    # a retry finishes it and the table is read again
    assert be.write_run(make_record(n=60, run_id="int-server"), "interrupted-srv") == \
        f"mlflow:{run_id}"
    back = be.read_run(run_id)
    assert back.status == "finished" and back.examples is not None and len(back.examples) == 60


# -- BUG 3: everything is checked before the run exists -----------------------------------
def test_bad_inputs_are_one_line_and_create_nothing(sqlite_uri: str, tmp_path: Path) -> None:
    f = tmp_path / "e.parquet"
    make_examples(50).drop(columns=["correct", "fallback"]).to_parquet(f, index=False)
    long_tag = "k" * 251
    code, out, err = _aipm(sqlite_uri, "log", str(f), "--model", "t", "--tag", f"{long_tag}=v",
                           "--to", "mlflow:toolong")
    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith("aipm: error: tag key 'kkkk") and "251 characters" in line
    assert "incomplete" not in line
    assert _client(sqlite_uri).get_experiment_by_name("toolong") is None

    be = backend(sqlite_uri)
    rec = make_record(n=20, with_examples=False, name="flat")
    rec.config = {"a": {"b": 1}, "a.b": 2}
    with pytest.raises(BackendError, match="config key 'a.b' appears twice"):
        be.write_run(rec, "flatclash")
    assert _client(sqlite_uri).get_experiment_by_name("flatclash") is None
    rec = make_record(n=20, with_examples=False, name="longcfg")
    rec.config["k" * 251] = 1
    with pytest.raises(BackendError, match="251 characters"):
        be.write_run(rec, "flatclash")
    assert _client(sqlite_uri).get_experiment_by_name("flatclash") is None


def test_names_that_used_to_share_a_key_are_kept_apart(sqlite_uri: str,
                                                       tmp_path: Path) -> None:
    f = tmp_path / "slices2.csv"
    pd.DataFrame({"example_id": range(8), "label": [1] * 8,
                  "prediction": [1, 1, 1, 0, 1, 1, 1, 1], "confidence": [0.9] * 8,
                  "slice": ["en+de", "en&de"] * 4}).to_csv(f, index=False)
    code, out, err = _aipm(sqlite_uri, "log", str(f), "--model", "s", "--to", "mlflow:s3")
    assert code == 0, err
    ref = next(w for w in out.split() if w.startswith("mlflow:"))
    for how in (["runs", "show", ref], ["runs", "list", "--from", "mlflow:s3"]):
        code, out, err = _aipm(sqlite_uri, *how, "--format", "json")
        assert code == 0, err
        doc = json.loads(out)
        metrics = (doc if isinstance(doc, dict) else doc[0])["metrics"]
        assert metrics["accuracy[slice=en+de]"] == pytest.approx(1.0)
        assert metrics["accuracy[slice=en&de]"] == pytest.approx(0.75)

    be = backend(sqlite_uri)
    rec = make_record(n=20, with_examples=False, name="cfg")
    rec.config = {"a@b": 1, "a_b": 2}
    run_id = be.write_run(rec, "cfgclash").split(":")[1]
    assert len(_client(sqlite_uri).get_run(run_id).data.params) == 2
    [listed] = list(be.list_runs("cfgclash"))
    assert listed.config == {"a@b": "1", "a_b": "2"}


# -- BUG 4: names survive the trip through MLflow keys ------------------------------------
def test_odd_tracker_keys_round_trip_exactly(sqlite_uri: str, tmp_path: Path) -> None:
    from aipm_tracking.tracker import Tracker

    with Tracker(to="mlflow:oddkeys", run_name="odd", model="m", model_version="1",
                 mlflow_uri=sqlite_uri, spool_dir=tmp_path / "spool",
                 flush_every_s=0.2) as tr:
        for step in range(3):
            tr.log_dict({k: i * 100 + step for i, k in enumerate(ODD_KEYS)}, step=step)
    assert tr.ref is not None
    be = backend(sqlite_uri)
    hist = be.read_history(tr.ref)
    want = {(k, s, float(i * 100 + s)) for i, k in enumerate(ODD_KEYS) for s in range(3)}
    assert {(p.key, p.step, p.value) for p in hist} == want  # no merge, no rename
    assert len(hist) == 3 * len(ODD_KEYS)
    some = ["loss@train", "val/f1:macro", "acc[slice=a/b:c]"]
    assert {p.key for p in be.read_history(tr.ref, some)} == set(some)

    code, out, err = _cli(sqlite_uri, "runs", "history", tr.ref, "--format", "json")
    assert code == 0, err
    assert {(p["key"], p["step"], p["value"]) for p in json.loads(out)} == want
    final = {k: float(i * 100 + 2) for i, k in enumerate(ODD_KEYS)}
    code, out, err = _cli(sqlite_uri, "runs", "show", tr.ref, "--format", "json")
    assert code == 0, err
    assert json.loads(out)["metrics"] == pytest.approx(final)
    code, out, err = _cli(sqlite_uri, "runs", "list", "--from", "mlflow:oddkeys",
                          "--format", "json")
    assert code == 0, err
    assert json.loads(out)[0]["metrics"] == pytest.approx(final)
    # MLflow holds one key per name, readable where it can be
    keys = set(_client(sqlite_uri).get_run(tr.ref.split(":")[1]).data.metrics)
    assert len(keys) == len(ODD_KEYS)
    assert {"loss_train", "acc/slice:de", "a b", "münchen/東京"} <= keys


def test_a_streamed_key_too_long_once_escaped_is_dropped_not_blocking(sqlite_uri: str) -> None:
    from aipm_tracking.schema import MetricPoint, MetricValue, ModelInfo, RunRecord

    be = backend(sqlite_uri)
    ref = be.start_run(RunRecord(run_id="", name="s", model=ModelInfo("m", "1")), "toolong-s")
    long = "k" * 249 + "@"  # the Tracker takes 250 characters; escaped it is 253
    pts = [MetricPoint(long, 1.0, 0, 1.0), MetricPoint("ok", 2.0, 0, 1.0)]
    with pytest.warns(AipmWarning, match="253 characters.*not sent to MLflow"):
        be.log_points(ref, pts)
    be.log_points(ref, [MetricPoint(long, 1.0, 1, 2.0), MetricPoint("ok", 3.0, 1, 2.0)])
    assert [(p.key, p.value) for p in be.read_history(ref)] == [("ok", 2.0), ("ok", 3.0)]
    # the final record still has the metric: finishing leaves it out of the summary (no
    # second warning), ends the run and tags it complete
    final = RunRecord(run_id="", name="s", model=ModelInfo("m", "1"),
                      metrics={long: MetricValue(1.0), "ok": MetricValue(3.0)},
                      status="finished")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        be.finish_run(ref, "finished", final)
    assert not [w for w in caught if issubclass(w.category, AipmWarning)]
    run = _client(sqlite_uri).get_run(ref.split(":")[1])
    assert run.info.status == "FINISHED" and run.data.tags["aipm.status"] == "complete"
    assert set(run.data.metrics) == {"ok"}
    assert be.read_run(ref).metrics[long].value == 1.0  # aipm/run.json keeps it
    # a new process finishing it (aipm sync) says it once
    ref2 = be.start_run(RunRecord(run_id="", name="s2", model=ModelInfo("m", "1")), "toolong-s")
    with pytest.warns(AipmWarning, match="253 characters.*left out of the MLflow summary"):
        backend(sqlite_uri).finish_run(ref2, "finished", final)
    run = _client(sqlite_uri).get_run(ref2.split(":")[1])
    assert run.info.status == "FINISHED" and run.data.tags["aipm.status"] == "complete"


def test_tracker_with_a_key_too_long_once_escaped_finishes_its_run(
        sqlite_uri: str, tmp_path: Path) -> None:
    from aipm_tracking.tracker import Tracker

    long = "k" * 249 + "@"
    with pytest.warns(AipmWarning, match="253 characters"), \
            Tracker(to="mlflow:toolong-t", run_name="t", model="m", mlflow_uri=sqlite_uri,
                    spool_dir=tmp_path / "spool", flush_every_s=0.05) as tr:
        tr.log(step=0, loss=1.0, **{long: 0.5})
        tr.log(step=1, loss=0.5)
    assert tr.ref is not None
    run = _client(sqlite_uri).get_run(tr.ref.split(":")[1])
    assert run.info.status == "FINISHED" and run.data.tags["aipm.status"] == "complete"
    assert set(run.data.metrics) == {"loss"}


def test_odd_slice_values_round_trip_through_aipm_log(sqlite_uri: str, tmp_path: Path) -> None:
    values = ["en+de", "en&de", "a/b", "x:y", "münchen", "a b", "東京", "50%", "[x]", "ǀ", ".."]
    n = len(values) * 4
    f = tmp_path / "odd.csv"
    pd.DataFrame({"example_id": range(n), "label": [1] * n, "prediction": [1] * n,
                  "confidence": [0.9] * n, "slice": values * 4}).to_csv(f, index=False)
    code, out, err = _aipm(sqlite_uri, "log", str(f), "--model", "s", "--to", "mlflow:oddlog")
    assert code == 0, err
    ref = next(w for w in out.split() if w.startswith("mlflow:"))
    code, out, err = _aipm(sqlite_uri, "log", str(f), "--model", "s", "--to", "local")
    assert code == 0, err
    local = next(w for w in out.split() if w.startswith("local:"))
    _, shown_local, _ = _aipm(sqlite_uri, "runs", "show", local, "--format", "json")
    want = set(json.loads(shown_local)["metrics"])
    assert {f"accuracy[slice={v}]" for v in values} <= want
    _, shown, _ = _aipm(sqlite_uri, "runs", "show", ref, "--format", "json")
    assert set(json.loads(shown)["metrics"]) == want
    _, listed, _ = _aipm(sqlite_uri, "runs", "list", "--from", "mlflow:oddlog", "--format", "json")
    assert set(json.loads(listed)[0]["metrics"]) == want


def test_runs_of_older_plugins_and_of_plain_mlflow_keep_their_names(sqlite_uri: str) -> None:
    from mlflow.entities import Metric

    c = _client(sqlite_uri)
    exp = c.create_experiment("legacy-keys")
    t0 = 1_700_000_000_000
    old = c.create_run(exp, tags={"aipm.schema": "aipm.run/1", "aipm.status": "complete"},
                       run_name="old")
    plain = c.create_run(exp, run_name="plain", start_time=t0 + 10)
    for run in (old, plain):
        c.log_batch(run.info.run_id, metrics=[
            Metric("accuracy/slice:de", 0.9, t0, 0), Metric("eval/split:test", 0.5, t0, 0),
            Metric("loss_train", 1.0, t0, 0)])
    be = backend(sqlite_uri)
    rec_old = next(r for r in be.list_runs("legacy-keys") if r.name == "old")
    assert set(rec_old.metrics) == {"accuracy[slice=de]", "eval[split=test]", "loss_train"}
    assert {p.key for p in be.read_history(old.info.run_id)} == set(rec_old.metrics)
    # a name given to an old run finds the key the old plugin wrote for it
    assert [p.value for p in be.read_history(old.info.run_id, ["loss@train"])] == [1.0]
    rec_plain = next(r for r in be.list_runs("legacy-keys") if r.name == "plain")
    assert set(rec_plain.metrics) == {"accuracy/slice:de", "eval/split:test", "loss_train"}
    assert {p.key for p in be.read_history(plain.info.run_id)} == set(rec_plain.metrics)
    assert [p.value for p in be.read_history(plain.info.run_id, ["eval/split:test"])] == [0.5]


# -- BUG 5: params of foreign runs are redacted -------------------------------------------
def test_secret_params_of_plain_mlflow_runs_are_redacted(sqlite_uri: str) -> None:
    c = _client(sqlite_uri)
    exp = c.create_experiment("plain-secrets")
    run = c.create_run(exp, run_name="p")
    c.log_param(run.info.run_id, "db_password", "hunter2")
    c.log_param(run.info.run_id, "lr", "0.1")
    be = backend(sqlite_uri)
    assert be.read_run(run.info.run_id).config == {"db_password": "***", "lr": "0.1"}
    [listed] = list(be.list_runs("plain-secrets"))
    assert listed.config["db_password"] == "***"
    for args in (["runs", "show", f"mlflow:{run.info.run_id}"],
                 ["runs", "list", "--from", "mlflow:plain-secrets"]):
        code, out, err = _cli(sqlite_uri, *args, "--format", "json")
        assert code == 0, err
        assert "hunter2" not in out and '"***"' in out


# -- BUG 6: column_map applies to per-example tables read from MLflow ---------------------
GUARDRAILS = """\
version: 1
name: release
metric_map: {{"val/acc": accuracy}}
{column_map}metrics:
  accuracy: {{min: 0.5, max_regression: 0.01}}
"""


def test_column_map_renames_columns_of_a_plain_mlflow_table(sqlite_uri: str,
                                                            tmp_path: Path) -> None:
    import mlflow

    ids = []
    mlflow.set_tracking_uri(sqlite_uri)
    try:
        mlflow.set_experiment("plain-tables")
        for seed, acc in ((21, 0.9), (21, 0.7)):
            df = make_examples(600, seed=seed, acc=acc).drop(columns=["correct", "fallback"])
            with mlflow.start_run(run_name=f"plain-{acc}") as run:
                mlflow.log_metric("val/acc", float((df.label == df.prediction).mean()))
                mlflow.log_table(df.rename(columns={"prediction": "pred"}), "tables/ex.json")
                mlflow.set_tag("aipm.examples_artifact", "tables/ex.json")
            ids.append(run.info.run_id)
    finally:
        mlflow.set_tracking_uri("")
    with_map = tmp_path / "g.yaml"
    with_map.write_text(GUARDRAILS.format(column_map="column_map: {pred: prediction}\n"))
    without = tmp_path / "g2.yaml"
    without.write_text(GUARDRAILS.format(column_map=""))
    for extra in (["--guardrails", str(with_map)],
                  ["--guardrails", str(without), "--map", "pred=prediction"]):
        code, out, err = _cli(sqlite_uri, "compare", f"mlflow:{ids[0]}", f"mlflow:{ids[1]}",
                              *extra, "--format", "json")
        res = json.loads(out)
        acc = next(r for r in res["metrics"] if r["metric"] == "accuracy")
        assert acc["verdict"] == "regression" and acc["test"] != "point", (json.dumps(acc), err)
        assert code == 1, err


# -- NOTE 9: the debug traceback never shows the URI's credentials -------------------------
def test_debug_traceback_has_no_credentials() -> None:
    import re

    import responses

    with responses.RequestsMock() as rs:
        rs.add(responses.GET, re.compile(r".*/experiments/get-by-name.*"), status=503,
               json={"error_code": "TEMPORARILY_UNAVAILABLE", "message": "x"})
        uri = "http://alice:" + "s3cret-pw" + "@127.0.0.1:5999"  # not on a traceback line
        with pytest.raises(BackendError) as ei:
            list(backend(uri).list_runs("x"))
    text = "".join(traceback.format_exception(ei.value))
    assert "s3cret-pw" not in text and "alice:" not in text
    assert "***@127.0.0.1:5999" in text and "The above exception was the direct cause" in text


# -- ±inf: MLflow's stores clamp it to the largest double ----------------------------------
def test_infinite_values_read_back_as_infinite(sqlite_uri: str, tmp_path: Path) -> None:
    import math

    from aipm_tracking.tracker import Tracker

    with Tracker(to="mlflow:infs", run_name="inf", model="m", model_version="1",
                 mlflow_uri=sqlite_uri, spool_dir=tmp_path / "spool") as tr:
        tr.log(step=0, loss=2.0, grad_norm=math.inf, margin=-math.inf)
        tr.log(step=1, loss=math.inf, grad_norm=1.5, margin=-1e300)
    assert tr.ref is not None
    run_id = tr.ref.split(":")[1]
    raw = _client(sqlite_uri).get_run(run_id).data.metrics
    assert raw["loss"] == 1.7976931348623157e308  # what MLflow itself hands back
    be = backend(sqlite_uri)
    got = {(p.key, p.step): p.value for p in be.read_history(tr.ref)}
    assert got == {("loss", 0): 2.0, ("loss", 1): math.inf, ("grad_norm", 0): math.inf,
                   ("grad_norm", 1): 1.5, ("margin", 0): -math.inf, ("margin", 1): -1e300}
    rec = be.read_run(tr.ref)
    assert rec.metrics["loss"].value == math.inf and rec.metrics["margin"].value == -1e300


def test_listings_say_which_runs_hold_a_per_example_table(sqlite_uri: str) -> None:
    be = backend(sqlite_uri)
    with_table = be.write_run(make_record(name="with", seed=1), "listing-examples")
    without = be.write_run(make_record(name="without", seed=2, with_examples=False),
                           "listing-examples")
    listed = {r.ref: r.has_examples for r in be.list_runs("listing-examples")}
    assert listed == {with_table: True, without: False}
    code, out, err = _cli(sqlite_uri, "runs", "list", "--from", "mlflow:listing-examples",
                          "--format", "json")
    assert code == 0, err
    assert {r["ref"]: r["has_examples"] for r in json.loads(out)} == listed


def test_reading_never_creates_a_store_nor_logs_noise(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """With no tracking URI set, MLflow defaults to sqlite:///mlflow.db in the current
    directory: a read (runs show / list / history) used to create that database (and log
    two INFO lines) before failing."""
    import mlflow.tracking._tracking_service.utils as mlflow_uri_state

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(mlflow_uri_state, "_tracking_uri", None)  # set by earlier tests
    for args in (["runs", "show", "mlflow:deadbeef"], ["runs", "list", "--from", "mlflow:x"],
                 ["runs", "history", "mlflow:deadbeef"]):
        code, out, err = _aipm_no_uri(*args)
        assert code == 2
        assert err.strip().splitlines() == [
            f"aipm: error: no MLflow store at {tmp_path / 'mlflow.db'} (give --mlflow-uri or "
            f"set MLFLOW_TRACKING_URI)"], err
    assert list(tmp_path.iterdir()) == []
    # writing creates it, without MLflow's INFO lines on stderr
    (tmp_path / "e.csv").write_text("example_id,label,prediction,confidence\n1,a,a,0.9\n")
    code, out, err = _aipm_no_uri("log", "e.csv", "--model", "m", "--to", "mlflow:x")
    assert code == 0 and (tmp_path / "mlflow.db").exists()
    assert "INFO" not in err and "Creating initial" not in err, err


def _aipm_no_uri(*args: str) -> tuple[int, str, str]:
    import contextlib
    import io
    import logging

    from aipm_tracking.cli import main

    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)  # MLflow's own logging, wherever it would go
    logging.getLogger().addHandler(handler)
    mlflow_logger = logging.getLogger("mlflow")
    mlflow_logger.addHandler(handler)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                pytest.raises(SystemExit) as ei:
            main(list(args))
    finally:
        logging.getLogger().removeHandler(handler)
        mlflow_logger.removeHandler(handler)
    return int(ei.value.code or 0), out.getvalue(), err.getvalue()
