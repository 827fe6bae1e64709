"""Push, pull, list, stream and compare against a real ``mlflow server`` on 127.0.0.1
(one per session, ``--workers 1``, SQLite backend, proxied artifacts in a temp dir), through
the backend and through the ``aipm`` CLI. Metric values are cross-checked with sklearn."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
from aipm_mlflow.testing import Server
from click.testing import CliRunner
from mlflow_helpers import backend, make_examples, make_record
from sklearn.metrics import accuracy_score

from aipm_tracking.schema import MetricPoint, ModelInfo, RunRecord

GUARDRAILS = """\
version: 1
name: release
fallback_threshold: 0.5
metric_map: {"val/acc": accuracy}
metrics:
  accuracy: {min: 0.5, max_regression: 0.01}
  latency_ms_p95: {max: 5000}
"""


def _cli(uri: str, *args: str) -> tuple[int, str]:
    from aipm_tracking.cli import cli

    res = CliRunner().invoke(cli, ["--mlflow-uri", uri, "-q", *args], catch_exceptions=False)
    return res.exit_code, res.output


def test_push_pull_round_trip_through_the_server(mlflow_server: Server) -> None:
    be = backend(mlflow_server.url)
    rec = make_record(n=250, seed=5, run_id="srv-run-1")
    ref = be.write_run(rec, "server-roundtrip")
    back = backend(mlflow_server.url).read_run(ref)
    assert back.model == rec.model and back.guardrails_hash == rec.guardrails_hash
    assert {k: v.value for k, v in back.metrics.items()} == pytest.approx(
        {k: v.value for k, v in rec.metrics.items()})
    assert rec.examples is not None and back.examples is not None
    pd.testing.assert_frame_equal(back.examples, rec.examples)
    listed = list(be.list_runs("server-roundtrip"))
    assert [r.ref for r in listed] == [ref] and listed[0].status == "finished"
    assert be.write_run(rec, "server-roundtrip") == ref  # a retry does not duplicate


def test_streaming_through_the_server(mlflow_server: Server) -> None:
    be = backend(mlflow_server.url)
    ref = be.start_run(RunRecord(run_id="", name="train", model=ModelInfo("m", "1")), "stream")
    t = time.time()
    pts = [MetricPoint("train/loss", 1.0 / (i + 1), i, t) for i in range(2200)]
    be.log_points(ref, pts)
    be.finish_run(ref)
    hist = be.read_history(ref)
    assert len(hist) == 2200 and hist[-1] == pts[-1]._replace(timestamp=hist[-1].timestamp)
    assert be.read_run(ref).status == "finished"


def test_cli_log_list_compare_pull(mlflow_server: Server, tmp_path: Path) -> None:
    uri, exp = mlflow_server.url, "cli-bots"
    g = tmp_path / "g.yaml"
    g.write_text(GUARDRAILS)
    good = make_examples(1500, seed=11, acc=0.85).drop(columns=["correct", "fallback"])
    worse = make_examples(1500, seed=11, acc=0.75).drop(columns=["correct", "fallback"])
    good.to_parquet(tmp_path / "good.parquet", index=False)
    worse.to_parquet(tmp_path / "worse.parquet", index=False)
    refs = []
    for name, version in (("good", "1"), ("worse", "2")):
        code, out = _cli(uri, "log", str(tmp_path / f"{name}.parquet"), "--model", "bot",
                         "--model-version", version, "--guardrails", str(g),
                         "--to", f"mlflow:{exp}")
        assert code == 0, out
        refs.append(next(w for w in out.split() if w.startswith("mlflow:")))

    code, out = _cli(uri, "runs", "list", "--from", f"mlflow:{exp}", "--format", "json")
    assert code == 0, out
    listed = json.loads(out)
    assert [r["ref"] for r in listed] == refs[::-1]

    code, out = _cli(uri, "compare", refs[0], refs[1], "--guardrails", str(g), "--format", "json")
    res = json.loads(out)
    assert code == 1 and res["exit_code"] == 1
    acc = next(r for r in res["metrics"] if r["metric"] == "accuracy")
    assert acc["baseline"] == pytest.approx(accuracy_score(good["label"], good["prediction"]))
    assert acc["candidate"] == pytest.approx(accuracy_score(worse["label"], worse["prediction"]))
    assert acc["verdict"] == "regression" and acc["test"] != "point"  # paired on examples

    code, out = _cli(uri, "pull", refs[0])
    assert code == 0, out
    local = out.strip().splitlines()[-1]
    code, out = _cli(uri, "runs", "show", local, "--format", "json")
    shown = json.loads(out)
    assert shown["model"] == {"name": "bot", "version": "1"}
    assert shown["guardrails_hash"] and shown["metrics"]["accuracy"] == pytest.approx(
        acc["baseline"])


def test_runs_from_plain_mlflow_are_compared(mlflow_server: Server, tmp_path: Path) -> None:
    import mlflow

    ids = []
    mlflow.set_tracking_uri(mlflow_server.url)
    try:
        mlflow.set_experiment("plain-mlflow")
        for name, final in (("theirs-a", 0.86), ("theirs-b", 0.80)):
            with mlflow.start_run(run_name=name) as run:
                for step in range(5):
                    mlflow.log_metric("val/acc", final - 0.01 * (4 - step), step=step)
                mlflow.log_metric("latency_ms_p95", 900.0)
            ids.append(run.info.run_id)
    finally:
        mlflow.set_tracking_uri("")
    g = tmp_path / "g.yaml"
    g.write_text(GUARDRAILS)
    code, out = _cli(mlflow_server.url, "compare", f"mlflow:{ids[0]}", f"mlflow:{ids[1]}",
                     "--guardrails", str(g), "--format", "json")
    res = json.loads(out)
    acc = next(r for r in res["metrics"] if r["metric"] == "accuracy")
    assert acc["baseline"] == pytest.approx(0.86) and acc["candidate"] == pytest.approx(0.80)
    assert acc["test"] == "point" and acc["verdict"] == "regression" and code == 1
