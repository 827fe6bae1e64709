"""Regression tests for the W&B audit (credentials in errors, steps W&B drops, ±inf,
sync of a run killed early, table versions, listing statuses, guardrail columns).

Real wandb SDK offline for writes; the loopback fake server for pulls.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fake_wandb_server import FakeRun, FakeWandbServer
from wb_helpers import make_examples, make_record

from aipm_tracking import plugins
from aipm_tracking.backends.base import BackendOptions
from aipm_tracking.errors import AipmWarning, BackendError, InvalidReferenceError
from aipm_tracking.schema import MetricPoint, MetricValue, ModelInfo, RunRecord


def backend(**extra: object) -> Any:
    plugins.reset()
    return plugins.get_backend("wandb", BackendOptions(extra=extra))


def _locator(ref: str) -> str:
    return ref.split(":", 1)[1]


# -- BUG 1: credentials in WANDB_BASE_URL never reach an error message ---------------------

SECRETS = ("s3cr3tPW", "SECRETKEY123")
CRED_URLS = ("http://user:s3cr3tPW@127.0.0.1:9", "http://127.0.0.1:9/?api_key=SECRETKEY123")


@pytest.mark.parametrize("url", CRED_URLS)
def test_connect_error_hides_url_credentials(url: str) -> None:
    from aipm_wandb import remote

    with pytest.raises(BackendError) as ei:
        remote.make_api({"base_url": url, "timeout_s": 1, "retry_max": 0})
    msg = str(ei.value)
    assert not any(s in msg for s in SECRETS), msg
    assert "127.0.0.1:9" in msg and "***" in msg


class _Boom:
    """A wandb object whose every call fails with text that repeats the configured URL."""

    id = "r1"
    name = "run-r1-predictions:v0"
    type = "run_table"

    def __init__(self, text: str) -> None:
        self.text = text

    def _fail(self, *_a: object, **_k: object) -> Any:
        raise RuntimeError(self.text)

    run = file = files = logged_artifacts = scan_history = runs = _fail


@pytest.mark.parametrize("url", CRED_URLS)
@pytest.mark.parametrize("call", ["get_run", "download", "run_files", "artifact_table",
                                  "scan_history", "iter_runs"])
def test_request_errors_hide_url_credentials_and_key(monkeypatch: pytest.MonkeyPatch,
                                                     url: str, call: str) -> None:
    from aipm_wandb import remote

    monkeypatch.setenv("WANDB_BASE_URL", url)
    key = os.environ["WANDB_API_KEY"]
    boom = _Boom(f'Post "{url}/graphql": 500 from {url} (x-api-key: {key}; key {key})')
    calls = {
        "get_run": lambda: remote.get_run(boom, "e/p/r1"),
        "download": lambda: remote.download(boom, "aipm/run.json"),
        "run_files": lambda: remote.run_files(boom),
        "artifact_table": lambda: remote.read_table(boom, "predictions", {"path": "x"}),
        "scan_history": lambda: remote.scan_history(boom),
        "iter_runs": lambda: list(remote.iter_runs(boom, "e/p", filters=None, per_page=5,
                                                   limit=None, quiet=True)),
    }
    with pytest.raises(BackendError) as ei:
        calls[call]()
    msg = str(ei.value)
    assert not any(s in msg for s in (*SECRETS, key)), msg
    assert "127.0.0.1:9" in msg and "***" in msg


def test_scrub_message_masks_every_url_and_known_value(monkeypatch: pytest.MonkeyPatch) -> None:
    from aipm_wandb.scrub import scrub_message

    monkeypatch.setenv("WANDB_BASE_URL", "https://bob:pa%24%24word@w.example/?token=T0KENVALUE")
    text = ("a https://bob:pa%24%24word@w.example/graphql?token=T0KENVALUE b "
            "pa$$word T0KENVALUE http://x:y@other.host/p?api_key=zz&n=1 KeyError: 'k'")
    out = scrub_message(text)
    for s in ("pa%24%24word", "pa$$word", "T0KENVALUE", "x:y@", "api_key=zz"):
        assert s not in out, out
    assert "w.example/graphql" in out and "other.host/p" in out and "n=1" in out
    assert "KeyError: 'k'" in out


# -- BUG 2 and 3: steps W&B would drop; ±inf -----------------------------------------------

def test_points_below_the_current_step_warn_and_stay_out_of_the_summary(
        offline: Path) -> None:
    from aipm_wandb.offline import read_local_run

    b = backend()
    ref = b.start_run(RunRecord(run_id="", name="t", model=ModelInfo("bot", "1")), "team/p")
    inf = float("inf")
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        b.log_points(ref, [MetricPoint("neg_step", 1.0, -1, 1.7e9)])
        b.log_points(ref, [MetricPoint("loss", 0.5, 5, 1.7e9), MetricPoint("big", inf, 5, 1.7e9),
                           MetricPoint("small", -inf, 5, 1.7e9),
                           MetricPoint("gap", float("nan"), 5, 1.7e9)])
        b.log_points(ref, [MetricPoint("loss", 0.1, 6, 1.7e9), MetricPoint("loss", 99.0, 3, 1.7e9),
                           MetricPoint("late", 1.0, 3, 1.7e9)])
        b.log_points(ref, [MetricPoint("loss", 98.0, 2, 1.7e9), MetricPoint("late", 2.0, 1, 1.7e9),
                           MetricPoint("loss", 0.2, 6, 1.7e9)])  # same step: merges
    msgs = [str(w.message) for w in got if issubclass(w.category, AipmWarning)]
    assert len(msgs) == 2, msgs  # once per key set: the 4th batch repeats {late, loss}
    assert "1 point(s) of neg_step at step(s) -1" in msgs[0]
    assert "2 point(s) of late, loss at step(s) 3" in msgs[1] and "current step (5)" in msgs[1]
    # the Tracker's final record: its last values by logging order (loss=0.2, late=2.0)
    final = RunRecord(run_id="", name="t", model=ModelInfo("bot", "1"), metrics={
        "loss": MetricValue(0.2), "late": MetricValue(2.0), "neg_step": MetricValue(1.0),
        "big": MetricValue(inf), "accuracy": MetricValue(0.9)})
    with pytest.warns(AipmWarning, match="5 point\\(s\\) in all were not logged"):
        b.finish_run(ref, "finished", final)
    lr = read_local_run(_locator(ref))
    rows = {r["_step"]: {k: v for k, v in r.items() if not k.startswith("_")}
            for r in lr.history}
    assert sorted(rows) == [5, 6]
    assert rows[5]["big"] == inf and rows[5]["small"] == -inf and math.isnan(rows[5]["gap"])
    assert rows[6] == {"loss": 0.2}
    # the summary holds no value missing from the history
    assert "late" not in lr.summary and "neg_step" not in lr.summary
    assert lr.summary["loss"] == 0.2 and lr.summary["big"] == inf
    assert lr.summary["accuracy"] == 0.9
    hist = b.read_history(_locator(ref))
    assert {(p.key, p.step) for p in hist} >= {("big", 5), ("small", 5), ("loss", 6)}
    assert [p.value for p in hist if p.key == "small"] == [-inf]


def test_summary_falls_back_to_the_last_value_wandb_holds(offline: Path) -> None:
    from aipm_wandb.offline import read_local_run

    b = backend()
    ref = b.start_run(RunRecord(run_id="", name="t", model=ModelInfo("bot", "1")), "team/p")
    b.log_points(ref, [MetricPoint("loss", 0.5, 5, 1.7e9)])
    with pytest.warns(AipmWarning, match="loss at step"):
        b.log_points(ref, [MetricPoint("loss", 99.0, 4, 1.7e9)])  # last logged, dropped
    b.finish_run(ref, "finished", RunRecord(run_id="", name="t", model=ModelInfo("bot", "1"),
                                            metrics={"loss": MetricValue(99.0)}))
    lr = read_local_run(_locator(ref))
    assert lr.summary["loss"] == 0.5
    assert backend().read_run(_locator(ref)).metric("loss") == 0.5  # aipm/run.json agrees


def test_tracker_keeps_inf_and_warns_about_backward_steps(offline: Path) -> None:
    from aipm_wandb.offline import read_local_run

    import aipm_tracking as aipm

    plugins.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the warning may come from the sender thread
        with aipm.Tracker(to="wandb:team/p", model="m", flush_every_s=30,
                          store=str(offline / "store")) as tr:
            tr.log(step=5, loss=0.5, big=float("inf"), neg=float("-inf"))
            tr.flush()
            tr.log(step=3, loss=99.0, late=1.0)
            tr.log(step=6, loss=0.1)
    assert tr.ref is not None
    lr = read_local_run(_locator(tr.ref))
    rows = {r["_step"]: r for r in lr.history}
    assert rows[5]["big"] == float("inf") and rows[5]["neg"] == float("-inf")
    assert sorted(rows) == [5, 6] and "late" not in lr.summary and lr.summary["loss"] == 0.1


# -- BUG 4: aipm sync of a Tracker killed before wandb wrote a block -----------------------

KILLED = textwrap.dedent("""
    import os, signal, sys, time
    import aipm_tracking as aipm
    tr = aipm.Tracker(to="wandb:team/p", run_name="killed", model="m", flush_every_s=0.05,
                      spool_dir=sys.argv[1])
    for i in range(20):
        tr.log(step=i, loss=1.0 / (i + 1))
    time.sleep(0.6)
    print(tr.ref, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def _killed_child(script: str, spool: Path) -> str:
    """Run a Tracker script that SIGKILLs itself; return the ref it printed."""
    # its own wandb-core: wandb exports WANDB_SERVICE, and a child using this process's
    # core would leave the killed run open there (and its log written on our exit)
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    proc = subprocess.run([sys.executable, "-c", script, str(spool)], capture_output=True,
                          text=True, timeout=180, env=env)
    assert proc.returncode == -9, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def _sync_killed(spool: Path, run_dir: str) -> tuple[Any, str]:
    """``aipm sync``'s replay of the killed run's spool -> (result, resumed run dir)."""
    from aipm_tracking.spool import replay_all

    plugins.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (res,) = replay_all(spool)
    assert res.status == "synced", res.reason
    (resumed,) = glob.glob(os.path.join(os.path.dirname(run_dir), "resumed-*", "wandb",
                                        "offline-run-*"))
    return res, resumed


def test_sync_reopens_a_run_killed_before_wandb_wrote_anything(offline: Path) -> None:
    from aipm_wandb.offline import read_local_run


    spool = offline / "spool"
    run_dir = _locator(_killed_child(KILLED, spool))
    # usually wandb-core has written nothing yet (its first 32 KiB block is not full); it may
    # have (its own start records), so cut the log to what the kill leaves in the usual case
    (log,) = glob.glob(os.path.join(run_dir, "run-*.wandb"))
    with open(log, "r+b") as fh:
        fh.truncate(7)  # the 7-byte header alone
    orig = read_local_run(run_dir)
    assert orig.project == ""  # no record names the project: aipm-target.json must
    res, resumed = _sync_killed(spool, orig.run_dir)
    lr = read_local_run(resumed)
    assert (lr.entity, lr.project, lr.run_id) == ("team", "p", orig.run_id)
    assert lr.display_name == "killed" and lr.exit_code == 1  # recorded as killed


KILLED_LATE = textwrap.dedent("""
    import os, signal, sys, time
    import aipm_tracking as aipm
    tr = aipm.Tracker(to="wandb:team/p", run_name="late", model="m", flush_every_s=0.05,
                      spool_dir=sys.argv[1])
    for i in range(3000):
        tr.log(step=i, loss=1.0 / (i + 1), lr=1e-3)
    time.sleep(2.0)  # every batch delivered to wandb (log_points returned)
    print(tr.ref, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_points_wandb_had_not_written_at_a_kill_are_replayed(offline: Path) -> None:
    """wandb-core writes its run log in 32 KiB blocks: points delivered (log_points
    returned) but still in its buffer die with the process. The spool keeps them until the
    run is finished (acks_are_durable = False), and aipm sync sends exactly the missing
    tail: together the killed log and the resumed run hold every step once."""
    from aipm_wandb.offline import read_local_run


    spool = offline / "spool"
    orig = read_local_run(_locator(_killed_child(KILLED_LATE, spool)))
    kept = sorted(r["_step"] for r in orig.history if "loss" in r)
    assert kept == list(range(len(kept))) and len(kept) < 3000  # the block-buffered tail died
    res, resumed = _sync_killed(spool, orig.run_dir)
    assert res.points == 2 * (3000 - len(kept))  # loss and lr of the missing steps only
    lr = read_local_run(resumed)
    rows = {r["_step"]: r for r in lr.history if "loss" in r}
    assert sorted(rows) == list(range(len(kept), 3000))
    assert all(rows[i]["loss"] == 1.0 / (i + 1) and rows[i]["lr"] == 1e-3 for i in rows)


def test_resume_without_project_or_target_file_says_why(offline: Path) -> None:
    from aipm_wandb import writer

    b = backend()
    ref = b.start_run(RunRecord(run_id="", name="t", model=ModelInfo("bot", "1")), "team/p")
    b.finish_run(ref, "killed")
    run_dir = _locator(ref)
    (log,) = glob.glob(os.path.join(run_dir, "run-*.wandb"))
    with open(log, "r+b") as fh:
        fh.truncate(7)  # what a SIGKILL before the first 32 KiB block leaves
    os.unlink(os.path.join(run_dir, writer.TARGET_FILE))
    with pytest.raises(InvalidReferenceError, match="names no project") as ei:
        backend().log_points(ref, [MetricPoint("loss", 1.0, 0, 1.7e9)])
    assert "--to" not in str(ei.value)


# -- BUG 6: the table version the summary references -----------------------------------------

def _table(acc_ok: int) -> bytes:
    rows = [[f"e{i}", i % 2, i % 2 if i < acc_ok else 1 - i % 2, 0.9] for i in range(10)]
    return json.dumps({"columns": ["example_id", "label", "prediction", "confidence"],
                       "data": rows}).encode()


@pytest.mark.parametrize(("named", "correct"), [(2, 0), (1, 5), (None, 0)])
def test_foreign_table_is_the_version_the_summary_names(server: FakeWandbServer,
                                                        named: int | None, correct: int) -> None:
    versions = {0: _table(10), 1: _table(5), 2: _table(0)}  # correct rows per version
    path = f"media/table/predictions_{named or 2}_x.table.json"
    ref: dict[str, Any] = {"_type": "table-file", "path": path, "nrows": 10, "ncols": 4}
    if named is not None:
        ref["sha256"] = hashlib.sha256(versions[named]).hexdigest()
    server.add_run(FakeRun(
        "acme", "legacy", "ep3run", summary={"val/acc": 0.1, "predictions": ref},
        files={path: versions[named or 2]},
        artifacts=[{"name": "run-ep3run-predictions", "type": "run_table", "version": v,
                    "entries": {"predictions.table.json": versions[v]}}
                   for v in (0, 1, 2)]))  # listed oldest first
    rec = backend().read_run("acme/legacy/ep3run")
    ex = rec.examples
    assert ex is not None and len(ex) == 10
    # v0: 10 correct rows, v1: 5, v2 (the newest): 0; None names no version: the newest
    assert int((ex["label"] == ex["prediction"]).sum()) == correct


# -- BUG 7: runs list maps W&B states as runs show does --------------------------------------

def test_listing_maps_wandb_states_like_show(server: FakeWandbServer) -> None:
    from aipm_tracking.schema import RUN_STATUSES

    for rid, state in (("c1", "crashed"), ("p1", "pending"), ("f1", "finished"),
                       ("k1", "killed"), ("x1", "preempted")):
        server.add_run(FakeRun("acme", "bots", rid, state=state, summary={"accuracy": 0.7}))
    b = backend()
    listed = {r.run_id: r.status for r in b.list_runs("acme/bots")}
    assert listed == {"c1": "failed", "p1": "incomplete", "f1": "finished", "k1": "killed",
                      "x1": "incomplete"}
    assert set(listed.values()) <= set(RUN_STATUSES)
    for rid, status in listed.items():
        assert b.read_run(f"acme/bots/{rid}", with_examples=False).status == status


# -- NOTE 8: the guardrail table has all six fields ------------------------------------------

def test_guardrail_table_has_severity_and_reason(offline: Path) -> None:
    from aipm_wandb.offline import read_local_run, read_table_file

    rec = make_record(make_examples(30))
    rec.details["guardrails"] = [
        {"metric": "accuracy", "threshold": "min 0.9", "value": 0.8, "verdict": "breach",
         "reason": "0.8 is below min 0.9", "severity": "warn"},
        {"metric": "latency_ms_p95", "threshold": "max_regression 5", "value": None,
         "verdict": "n/a", "reason": "max_regression needs a baseline (aipm compare)",
         "severity": "block"}]
    lr = read_local_run(_locator(backend().write_run(rec, "team/p")))
    g = read_table_file(lr.run_dir, lr.summary["aipm/guardrails"])
    assert list(g.columns) == ["metric", "threshold", "value", "verdict", "severity", "reason"]
    assert g.iloc[0].tolist() == ["accuracy", "min 0.9", 0.8, "breach", "warn",
                                  "0.8 is below min 0.9"]
    assert g.iloc[1]["severity"] == "block" and g.iloc[1]["reason"].startswith("max_reg")
    assert pd.isna(g.iloc[1]["value"])
