"""Real wandb SDK in offline mode: runs the plugin writes (and plain wandb code writes) read back."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from aipm_wandb import convert
from aipm_wandb.offline import read_local_run, read_table_file
from wb_helpers import make_examples, make_record

from aipm_tracking import plugins
from aipm_tracking.backends.base import BackendOptions
from aipm_tracking.errors import AipmWarning, InvalidReferenceError
from aipm_tracking.schema import (
    Comparison,
    MetricComparison,
    MetricPoint,
    ModelInfo,
    RunRecord,
    RunSummary,
)


def backend(**extra: object) -> object:
    plugins.reset()
    return plugins.get_backend("wandb", BackendOptions(extra=extra))


def _locator(ref: str) -> str:
    assert ref.startswith("wandb:")
    return ref.split(":", 1)[1]


def test_push_offline_roundtrip_is_lossless_and_redacted(offline: Path,
                                                         examples: pd.DataFrame) -> None:
    rec = make_record(examples)
    ref = backend().write_run(rec, "team/support-bot")
    run_dir = _locator(ref)
    assert os.path.dirname(run_dir) == str(offline / "wandb")
    assert os.path.basename(run_dir).startswith("offline-run-")

    back = backend().read_run(run_dir)
    assert back.ref == ref and back.status == "finished"
    assert back.model == rec.model and back.dataset == rec.dataset
    assert back.guardrails_hash == rec.guardrails_hash and back.tags == rec.tags
    assert back.details == rec.details
    assert set(back.metrics) == set(rec.metrics)
    for k, mv in rec.metrics.items():
        assert back.metrics[k].value == pytest.approx(mv.value)
        assert back.metrics[k].ci == mv.ci and back.metrics[k].n == mv.n
    assert back.config["openai_api_key"] == "***" and back.config["db"]["password"] == "***"
    assert back.config["lr"] == 0.001
    pd.testing.assert_frame_equal(back.examples, examples)

    # what W&B itself holds (read from the transaction log, not from aipm/run.json)
    lr = read_local_run(run_dir)
    assert (lr.entity, lr.project) == ("team", "support-bot")
    for k, mv in rec.metrics.items():
        assert lr.summary[k] == pytest.approx(mv.value)
    assert lr.config["aipm"]["model"] == {"name": "bot", "version": "2"}
    assert lr.config["aipm"]["guardrails_hash"] == rec.guardrails_hash
    assert "guardrails=0123456789abcdef" in lr.tags and "model=bot" in lr.tags
    # no secret reached any file W&B would upload
    for path in glob.glob(os.path.join(run_dir, "**", "*"), recursive=True):
        if os.path.isfile(path) and "/logs/" not in path:
            blob = Path(path).read_bytes()
            assert b"sk-live-123" not in blob and b"hunter2" not in blob, path


def test_review_tables_and_plots(offline: Path, examples: pd.DataFrame) -> None:
    rec = make_record(examples)
    lr = read_local_run(_locator(backend().write_run(rec, "team/p")))
    tab = read_table_file(lr.run_dir, lr.summary["aipm/examples"])
    assert len(tab) == len(examples)
    assert list(tab["example_id"]) == list(examples["example_id"])
    assert tab["correct"].sum() == examples["correct"].sum()

    g = read_table_file(lr.run_dir, lr.summary["aipm/guardrails"])
    assert list(g.columns) == ["metric", "threshold", "value", "verdict", "severity", "reason"]
    assert g.iloc[0].tolist()[:4:3] == ["accuracy", "breach"]

    # confusion matrix: the Table behind wandb's confusion_matrix chart, cell by cell
    cm_ref = lr.summary["aipm/confusion_matrix_table"]
    cm = read_table_file(lr.run_dir, cm_ref)
    assert list(cm.columns) == ["Actual", "Predicted", "nPredictions"]
    expected = pd.crosstab(examples["label"], examples["prediction"])
    for _, row in cm.iterrows():
        want = expected.loc[row.Actual, row.Predicted] if row.Predicted in expected.columns \
            else 0
        assert row.nPredictions == want
    assert cm["nPredictions"].sum() == len(examples)
    # the same table wandb.plot.confusion_matrix builds from per-example labels
    import wandb

    labels = sorted(examples["label"].unique())
    idx = {lab: i for i, lab in enumerate(labels)}
    ref_chart = wandb.plot.confusion_matrix(
        y_true=[idx[v] for v in examples["label"]], preds=[idx[v] for v in examples["prediction"]],
        class_names=labels)
    theirs = {(a, p): int(n) for a, p, n in ref_chart.table.data}
    assert {(r.Actual, r.Predicted): int(r.nPredictions) for r in cm.itertuples()} == theirs
    assert ref_chart.spec.spec_name == "wandb/confusion_matrix/v1"
    assert ref_chart.spec.fields == {"Actual": "Actual", "Predicted": "Predicted",
                                     "nPredictions": "nPredictions"}

    rel = read_table_file(lr.run_dir, lr.summary["aipm/reliability_table"])
    assert rel["count"].sum() == len(examples)
    assert ((rel["accuracy"] >= 0) & (rel["accuracy"] <= 1)).all()
    assert lr.summary["aipm/examples_rows"] == len(examples)
    # chart specs are recorded in the run config, as wandb does for custom charts
    charts = json.dumps(lr.config.get("_wandb", {}))
    assert "wandb/confusion_matrix/v1" in charts and "wandb/line/v0" in charts


def test_changed_outcome_column_against_baseline(offline: Path) -> None:
    base_df = make_examples(300, seed=1)
    cand_df = make_examples(300, seed=2).iloc[:280].copy()  # 280 shared ids
    cand_df = pd.concat([cand_df, make_examples(5, seed=9).assign(
        example_id=[f"new{i}" for i in range(5)])], ignore_index=True)
    base = make_record(base_df, name="bot-1", version="1")
    ref = backend(baseline=base).write_run(make_record(cand_df), "team/p")
    lr = read_local_run(_locator(ref))
    tab = read_table_file(lr.run_dir, lr.summary["aipm/examples"])
    m = cand_df.merge(base_df[["example_id", "correct"]], on="example_id", how="left",
                      suffixes=("", "_b"))
    fixed = int(((m.correct_b == False) & m.correct).sum())  # noqa: E712
    broken = int(((m.correct_b == True) & ~m.correct).sum())  # noqa: E712
    counts = tab["change"].value_counts()
    assert counts.get("fixed", 0) == fixed and counts.get("broken", 0) == broken
    assert counts["not in baseline"] == 5
    assert int(tab["changed_outcome"].fillna(False).astype(bool).sum()) == fixed + broken
    assert tab.loc[tab.example_id.str.startswith("new"), "changed_outcome"].isna().all()


def test_baseline_named_in_config_is_loaded(offline: Path) -> None:
    base_df = make_examples(80, seed=1)
    base_ref = backend().write_run(make_record(base_df, name="bot-1", version="1"), "team/p")
    cand_df = make_examples(80, seed=2)
    cand = make_record(cand_df)
    cand.config["baseline"] = base_ref  # a run names its baseline: the push loads it
    lr = read_local_run(_locator(backend().write_run(cand, "team/p")))
    tab = read_table_file(lr.run_dir, lr.summary["aipm/examples"])
    b_ok = base_df.set_index("example_id")["correct"]
    want = (cand_df["correct"].to_numpy() != b_ok.loc[cand_df["example_id"]].to_numpy()).sum()
    assert int(tab["changed_outcome"].astype(bool).sum()) == int(want) > 0


def test_table_over_row_limit_is_split_not_truncated(offline: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    assert wandb.Table.MAX_ROWS == 10000  # the installed limit this plugin splits at
    monkeypatch.setattr(wandb.Table, "MAX_ROWS", 64)
    df = make_examples(200, seed=4)
    ref = backend().write_run(make_record(df), "team/p")
    lr = read_local_run(_locator(ref))
    parts = convert.examples_table_keys(lr.summary, None)
    assert parts == [f"aipm/examples_part{i:03d}" for i in (1, 2, 3, 4)]
    assert lr.summary["aipm/examples_parts"] == 4 and lr.summary["aipm/examples_rows"] == 200
    frames = [read_table_file(lr.run_dir, lr.summary[k]) for k in parts]
    assert [len(f) for f in frames] == [64, 64, 64, 8]
    assert list(pd.concat(frames).example_id) == list(df.example_id)
    # without the aipm files the run is read from its split W&B tables, all rows
    os.remove(os.path.join(lr.files_dir, convert.RUN_JSON))
    os.remove(os.path.join(lr.files_dir, convert.EXAMPLES_PARQUET))
    back = backend().read_run(lr.run_dir)
    assert list(back.examples.example_id) == list(df.example_id)
    assert back.model.name == "bot" and back.metric("accuracy") == pytest.approx(
        df.correct.mean())


PLAIN_SCRIPT = textwrap.dedent("""
    import os, sys, wandb
    run = wandb.init(project="legacy", entity="acme", config={"lr": 0.01, "hf_token": "t0k",
                     "model_name": "resnet"}, reinit="create_new")
    n = int(os.environ.get("STEPS", "20"))
    for step in range(n):
        run.log({"loss": 1.0 / (step + 1), "val/acc": 0.5 + step * 0.01,
                 "note": "x" * 100})
    tbl = wandb.Table(columns=["example_id", "label", "prediction"],
                      data=[[f"x{i}", i % 3, (i * 7) % 3] for i in range(30)])
    run.log({"predictions": tbl})
    if os.environ.get("KILL_AT_END"):
        import signal, time
        time.sleep(1.5)
        os.kill(os.getpid(), signal.SIGKILL)
    run.finish()
""")


def _run_script(tmp: Path, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    path = tmp / "script.py"
    path.write_text(script)
    return subprocess.run([sys.executable, str(path)], cwd=tmp, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **env})


def test_plain_wandb_run_read_through_metric_map(offline: Path) -> None:
    out = _run_script(offline, PLAIN_SCRIPT)
    assert out.returncode == 0, out.stderr[-2000:]
    (run_dir,) = glob.glob(str(offline / "wandb" / "offline-run-*"))
    plugins.reset()
    b = plugins.get_backend("wandb", BackendOptions(metric_map={"val/acc": "accuracy"}))
    rec = b.read_run(run_dir)
    assert rec.metric("accuracy") == pytest.approx(0.5 + 19 * 0.01)
    assert "val/acc" not in rec.metrics and rec.metric("loss") == pytest.approx(1 / 20)
    assert rec.model.name == "resnet" and rec.config["hf_token"] == "***"
    assert rec.status == "finished" and rec.ref == f"wandb:{run_dir}"
    assert list(rec.examples.columns) == ["example_id", "label", "prediction"]
    assert rec.examples.prediction.tolist() == [(i * 7) % 3 for i in range(30)]
    hist = b.read_history(run_dir, ["loss"])
    assert [p.step for p in hist] == list(range(20))
    assert [p.value for p in hist] == pytest.approx([1 / (s + 1) for s in range(20)])


def test_killed_run_yields_intact_records(offline: Path) -> None:
    # wandb-core writes its log a 32 KiB block at a time: log enough that blocks reach the
    # disk before the kill; the block being filled is lost, which cuts the last record
    out = _run_script(offline, PLAIN_SCRIPT, KILL_AT_END="1", STEPS="2500")
    assert out.returncode == -signal.SIGKILL
    (run_dir,) = glob.glob(str(offline / "wandb" / "offline-run-*"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AipmWarning)
        lr = read_local_run(run_dir)
    assert lr.exit_code is None and lr.status == "incomplete"
    steps = [r["_step"] for r in lr.history if "loss" in r]
    assert steps == list(range(len(steps))) and len(steps) >= 100
    assert [r["loss"] for r in lr.history if "loss" in r] == pytest.approx(
        [1 / (s + 1) for s in steps])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AipmWarning)  # whether the kill cut a record varies
        rec = backend().read_run(run_dir)
    assert rec.status == "incomplete"

    # a copy cut in the middle of a chunk: every record before the cut, plus a warning
    log = Path(lr.log_path).read_bytes()
    cut_dir = offline / "cut"
    cut_dir.mkdir()
    n_full = sum(lr.record_types.values())
    for frac in (0.3, 0.6, 0.9):
        cut = int(len(log) * frac)
        (cut_dir / "run-cut.wandb").write_bytes(log[:cut])
        with pytest.warns(AipmWarning, match="damaged"):
            part = read_local_run(str(cut_dir / "run-cut.wandb"))
        assert 0 < sum(part.record_types.values()) < n_full
        got = [r["loss"] for r in part.history if "loss" in r]
        assert got == pytest.approx([1 / (s + 1) for s in range(len(got))])


def test_offline_dir_is_a_syncable_wandb_run(offline: Path, examples: pd.DataFrame) -> None:
    """What `wandb sync` uploads: a log with header, run, config, history, summary, files, exit."""
    lr = read_local_run(_locator(backend().write_run(make_record(examples), "team/p")))
    assert lr.scan is not None and lr.scan.problem is None and lr.scan.version == 0
    assert lr.scan.crc == "ieee"
    for kind in ("header", "run", "history", "summary", "files", "exit"):
        assert lr.record_types.get(kind, 0) >= 1, kind
    assert lr.exit_code == 0
    assert {convert.RUN_JSON, convert.EXAMPLES_PARQUET} <= set(lr.files)
    for f in lr.files:
        assert os.path.isfile(os.path.join(lr.files_dir, f)), f


def _comparison(block: bool) -> Comparison:
    rows = [
        MetricComparison("accuracy", "higher", 0.86, 0.80 if block else 0.87, -0.06, -0.07,
                         (-0.09, -0.03), 0.001, "mcnemar-exact", "block",
                         "regression" if block else "improved", "worse beyond margin",
                         threshold="max_regression 0.01", n=500),
        MetricComparison("latency_ms_p95", "lower", 800.0, 790.0, -10.0, -0.0125, None, None,
                         "point", "warn", "pass", "within bounds"),
    ]
    s = RunSummary(ref="wandb:a/b/base1", name="bot-1", model=ModelInfo("bot", "1"),
                   dataset=make_record(make_examples(5)).dataset)
    c = RunSummary(ref="wandb:a/b/cand1", name="bot-2", model=ModelInfo("bot", "2"),
                   dataset=s.dataset)
    return Comparison(s, c, rows, guardrails_name="release", guardrails_hash="abc")


@pytest.mark.parametrize("block", [True, False])
def test_write_comparison_table_and_alert(offline: Path, block: bool) -> None:
    cmp = _comparison(block)
    assert cmp.exit_code == (1 if block else 0)
    ref = backend().write_comparison(cmp, "team/p")
    lr = read_local_run(_locator(ref))
    tab = read_table_file(lr.run_dir, lr.summary["aipm/comparison"])
    assert tab["metric"].tolist() == ["accuracy", "latency_ms_p95"]
    assert tab["verdict"].tolist() == [r.verdict for r in cmp.metrics]
    assert tab["ci_low"].iloc[0] == pytest.approx(-0.09) and pd.isna(tab["ci_low"].iloc[1])
    assert lr.summary["aipm/exit_code"] == cmp.exit_code
    saved = json.loads(Path(lr.files_dir, convert.COMPARISON_JSON).read_text())
    assert saved == json.loads(cmp.to_json())
    if block:
        assert len(lr.alerts) == 1 and lr.alerts[0]["level"] == "ERROR"
        assert "accuracy: regression" in lr.alerts[0]["text"]
    else:
        assert lr.alerts == []


def test_streaming_one_log_per_step(offline: Path, examples: pd.DataFrame) -> None:
    b = backend()
    ref = b.start_run(RunRecord(run_id="", name="train", model=ModelInfo("bot", "3")), "team/p")
    rng = np.random.default_rng(0)
    pts = [MetricPoint(k, float(rng.random()), s, 1.7e9 + s)
           for s in range(10) for k in ("loss", "lr", "grad_norm")]
    b.log_points(ref, pts[:12])  # steps 0-3
    b.log_points(ref, pts[12:])  # steps 4-9
    b.finish_run(ref, "finished", make_record(examples))
    lr = read_local_run(_locator(ref))
    rows = [r for r in lr.history if "loss" in r]
    assert [r["_step"] for r in rows] == list(range(10))  # one history row per step
    assert all({"loss", "lr", "grad_norm"} <= set(r) for r in rows)
    got = b.read_history(_locator(ref))
    assert sorted((p.key, p.step, p.value) for p in got) == sorted(
        (p.key, p.step, p.value) for p in pts)
    assert b.read_run(_locator(ref)).metric("accuracy") == pytest.approx(
        examples.correct.mean())


def test_bad_targets_and_refs(offline: Path) -> None:
    b = backend()
    with pytest.raises(InvalidReferenceError):
        b.write_run(make_record(make_examples(5)), "a/b/c")
    with pytest.raises(InvalidReferenceError):
        b.write_run(make_record(make_examples(5)), None)
    with pytest.raises(InvalidReferenceError):
        b.read_run("no/such/dir/anywhere")
    assert glob.glob(str(offline / "wandb" / "*run-*")) == []


def test_supported_version_range_and_proto_fields() -> None:
    from importlib.metadata import requires, version

    import aipm_wandb
    from packaging.specifiers import SpecifierSet
    from wandb.proto import wandb_internal_pb2 as pb

    assert version("wandb") in SpecifierSet(aipm_wandb.SUPPORTED_WANDB)
    reqs = [r for r in requires("aipm-wandb") or [] if r.startswith("wandb")]
    assert reqs and SpecifierSet(reqs[0][len("wandb"):].split(";")[0]) == SpecifierSet(
        aipm_wandb.SUPPORTED_WANDB)
    fields = {
        "Record": {"history", "summary", "config", "files", "run", "exit", "alert",
                   "artifact", "final"},
        "HistoryRecord": {"item", "step"}, "HistoryItem": {"key", "nested_key", "value_json"},
        "SummaryRecord": {"update", "remove"}, "SummaryItem": {"key", "nested_key",
                                                               "value_json"},
        "ConfigRecord": {"update", "remove"}, "RunRecord": {"run_id", "entity", "project",
                                                            "config", "summary", "tags",
                                                            "display_name", "start_time"},
        "AlertRecord": {"title", "text", "level"}, "RunExitRecord": {"exit_code"},
        "FilesRecord": {"files"}, "FilesItem": {"path"},
    }
    for msg, names in fields.items():
        have = {f.name for f in getattr(pb, msg).DESCRIPTOR.fields}
        assert names <= have, (msg, names - have)


def test_tracker_streams_to_wandb(offline: Path) -> None:
    import aipm_tracking as aipm

    plugins.reset()
    with aipm.Tracker(to="wandb:team/train", run_name="r", model="bot", model_version="4",
                      flush_every_s=0.2, store=str(offline / "store")) as tr:
        for step in range(30):
            tr.log(step=step, loss=1.0 / (step + 1), lr=0.01)
        ref = tr.ref
    assert ref is not None and ref.startswith("wandb:/")
    pts = backend().read_history(_locator(ref), ["loss"])
    assert [p.step for p in pts] == list(range(30))
    assert [p.value for p in pts] == pytest.approx([1 / (s + 1) for s in range(30)])
    lr = read_local_run(_locator(ref))
    assert lr.exit_code == 0 and lr.config["aipm"]["model"] == {"name": "bot", "version": "4"}


def test_tracker_breach_mid_training_is_a_wandb_alert(offline: Path) -> None:
    import aipm_tracking as aipm

    plugins.reset()
    g = {"version": 1, "name": "bot", "metrics": {"accuracy": {"min": 0.8}}}
    bad = make_examples(300, seed=3, acc=0.5)
    with aipm.Tracker(to="wandb:team/train", run_name="r", model="bot", guardrails=g,
                      flush_every_s=0.2, store=str(offline / "store")) as tr:
        tr.log(step=0, loss=1.0)
        with pytest.warns(AipmWarning, match="breaches the guardrail"):
            tr.log_eval(bad, step=10)
        ref = tr.ref
    assert ref is not None
    lr = read_local_run(_locator(ref))
    assert len(lr.alerts) == 1 and lr.alerts[0]["level"] == "WARN"
    assert "accuracy" in lr.alerts[0]["title"] and "step 10" in lr.alerts[0]["text"]


def test_points_for_a_run_started_elsewhere_resume_it(offline: Path) -> None:
    first = backend()
    ref = first.start_run(RunRecord(run_id="", name="t", model=ModelInfo("bot", "5")), "team/p")
    first.log_points(ref, [MetricPoint("loss", 1.0, 0, 1.7e9)])
    first.finish_run(ref, "killed")
    later = backend()  # another process (aipm sync): the run is not open here
    with pytest.warns(AipmWarning, match="cannot be appended"):
        later.log_points(ref, [MetricPoint("loss", 0.5, 1, 1.7e9), MetricPoint("loss", 0.25, 2,
                                                                             1.7e9)])
    later.finish_run(ref, "finished")
    orig = read_local_run(_locator(ref))
    (resumed_dir,) = glob.glob(os.path.join(os.path.dirname(orig.run_dir), "resumed-*", "wandb",
                                            "offline-run-*"))
    res = read_local_run(resumed_dir)
    assert res.run_id == orig.run_id and (res.entity, res.project) == ("team", "p")
    assert [(r["_step"], r["loss"]) for r in res.history if "loss" in r] == [(1, 0.5), (2, 0.25)]
    assert orig.exit_code == 1 and res.exit_code == 0


def test_table_reference_cannot_escape_the_run_dir(offline: Path, examples: pd.DataFrame) -> None:
    from aipm_tracking.errors import DataError

    lr = read_local_run(_locator(backend().write_run(make_record(examples), "team/p")))
    (offline / "secret.json").write_text('{"columns": ["x"], "data": [[1]]}')
    for bad in ("../../../secret.json", "/etc/passwd", ""):
        with pytest.raises(DataError):
            read_table_file(lr.run_dir, {"_type": "table-file", "path": bad})


def test_local_listing_filters_and_limits(offline: Path) -> None:
    b = backend()
    for i, name in enumerate(("bot-a", "bot-b", "other")):
        b.write_run(make_record(make_examples(20, seed=i), name=name, version=str(i)), "team/p")
    folder = str(offline / "wandb")
    assert sorted(r.name for r in b.list_runs(folder)) == ["bot-a", "bot-b", "other"]
    assert sorted(r.name for r in b.list_runs(folder, filter="^bot-")) == ["bot-a", "bot-b"]
    assert len(list(b.list_runs(folder, limit=2))) == 2
    assert all(r.examples is None for r in b.list_runs(folder))
    lr = read_local_run(_locator(b.write_run(make_record(make_examples(5)), "team/p")))
    assert lr.summary["aipm/guardrails_hash"] == "0123456789abcdef"


def test_disabled_mode_is_refused(offline: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aipm_tracking.errors import UsageError

    monkeypatch.setenv("WANDB_MODE", "disabled")
    with pytest.raises(UsageError, match="disabled"):
        backend().write_run(make_record(make_examples(5)), "team/p")


def test_a_failed_write_leaves_no_complete_looking_run(offline: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from aipm_wandb import writer

    def boom(*_a: object, **_k: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(writer, "log_review", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        backend().write_run(make_record(make_examples(30)), "team/p")
    (run_dir,) = glob.glob(str(offline / "wandb" / "offline-run-*"))
    assert not os.path.exists(os.path.join(run_dir, "files", convert.RUN_JSON))
    rec = backend().read_run(run_dir)
    assert rec.status == "failed" and read_local_run(run_dir).exit_code == 1
