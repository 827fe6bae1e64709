"""A W&B offline run whose Tracker was killed, after `aipm sync`: the ref the user holds
(``tr.ref``, what sync prints) reads the whole run, and a listing shows it once.

`aipm sync` cannot append to the killed run's directory: it writes the rest of the run to a
new offline run with the same id (a *resumed segment*, ``resumed-ID-MS/wandb/offline-run-…``
beside it) and records it in the original's ``aipm-segments.json``; reading the original
merges its segments. Real wandb SDK offline; the Tracker runs in a child process that
SIGKILLs itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

from aipm_tracking import plugins
from aipm_tracking.backends.base import BackendOptions
from aipm_tracking.cli import main
from aipm_tracking.errors import AipmWarning
from aipm_tracking.schema import MetricPoint, ModelInfo, RunRecord

N = 1000

KILLED = textwrap.dedent("""
    import os, signal, sys, time
    import aipm_tracking as aipm
    n = int(sys.argv[2])
    tr = aipm.Tracker(to="wandb:ent/proj", run_name="killed-sync", model="m",
                      flush_every_s=0.05, spool_dir=sys.argv[1])
    for i in range(n):
        tr.log(step=i, loss=1.0 / (i + 1))
    time.sleep(1.0)  # every batch delivered to wandb (log_points returned)
    print(tr.ref, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def _killed_child(spool: Path, n: int) -> str:
    """Run the Tracker script (it SIGKILLs itself); return the ref it printed."""
    # its own wandb-core (see test_audit_fixes._killed_child)
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    proc = subprocess.run([sys.executable, "-c", KILLED, str(spool), str(n)],
                          capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == -9, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def aipm(*args: str) -> tuple[int, str]:
    """Run the CLI in this process; (exit code, stdout)."""
    import contextlib
    import io

    plugins.reset()
    out = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            main(list(args))
        except SystemExit as e:
            code = int(e.code or 0)
    return code, out.getvalue()


def _listed(folder: str) -> list[dict[str, Any]]:
    code, out = aipm("runs", "list", "--from", f"wandb:{folder}", "--format", "json")
    assert code == 0, out
    doc = json.loads(out)
    return doc if isinstance(doc, list) else doc["runs"]


def test_sync_of_a_killed_offline_run_reads_whole_through_the_original_ref(
        offline: Path) -> None:
    from aipm_wandb.offline import read_local_run

    spool = offline / "spool"
    ref = _killed_child(spool, N)
    assert ref.startswith("wandb:/") and "offline-run-" in ref
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kept = read_local_run(ref.split(":", 1)[1])
    assert kept.exit_code is None  # the kill: no exit record
    kept_steps = sorted(r["_step"] for r in kept.history if "loss" in r)
    assert kept_steps == list(range(len(kept_steps))) and len(kept_steps) < N  # tail lost

    code, out = aipm("sync", "--spool-dir", str(spool), "--format", "json")
    assert code == 0, out
    (res,) = json.loads(out)["results"]
    assert res["status"] == "synced" and res["run_status"] == "killed"
    assert res["ref"] == ref  # sync names the run the user holds
    assert res["points"] == N - len(kept_steps)  # exactly the lost tail was replayed

    code, out = aipm("runs", "show", ref, "--format", "json")
    assert code == 0, out
    shown = json.loads(out)
    assert shown["status"] == "killed"
    assert shown["metrics"]["loss"] == pytest.approx(1.0 / N)

    code, out = aipm("runs", "history", ref, "--format", "json")
    assert code == 0, out
    hist = [(p["step"], p["value"]) for p in json.loads(out) if p["key"] == "loss"]
    assert hist == [(i, 1.0 / (i + 1)) for i in range(N)]  # every step exactly once

    wandb_dir = os.path.dirname(ref.split(":", 1)[1])
    listed = _listed(wandb_dir)
    assert len(listed) == 1  # the run once: its resumed segment is not a run of its own
    (run,) = listed
    assert run["ref"] == ref and run["status"] == "killed"
    assert run["metrics"]["loss"] == pytest.approx(1.0 / N)
    (one,) = _listed(ref.split(":", 1)[1])  # the run's own directory
    assert one["status"] == "killed"

    # idempotent: a second sync has nothing left; the run reads the same
    code, out = aipm("sync", "--spool-dir", str(spool), "--format", "json")
    assert code == 0 and json.loads(out)["results"] == []
    code, out = aipm("runs", "history", ref, "--format", "json")
    assert len([p for p in json.loads(out) if p["key"] == "loss"]) == N


def _backend() -> Any:
    plugins.reset()
    return plugins.get_backend("wandb", BackendOptions())


def test_resumed_segments_merge_in_order_and_are_recorded(offline: Path) -> None:
    """Two resumes (a sync that was itself interrupted, then another): reading the original
    merges both segments in order; the last one's end is the run's status."""
    from aipm_wandb import writer
    from aipm_wandb.offline import read_local_run

    first = _backend()
    ref = first.start_run(RunRecord(run_id="", name="seg", model=ModelInfo("bot", "1")),
                          "team/p")
    first.log_points(ref, [MetricPoint("loss", 1.0, 0, 1.7e9)])
    first.finish_run(ref, "killed")
    for steps in ((1, 2), (3,)):
        later = _backend()
        with pytest.warns(AipmWarning, match="cannot be appended"):
            later.log_points(ref, [MetricPoint("loss", 1.0 / (s + 1), s, 1.7e9)
                                   for s in steps])
        later.finish_run(ref, "finished" if steps == (3,) else "killed")
    run_dir = ref.split(":", 1)[1]
    b = _backend()
    rec = b.read_run(run_dir, with_examples=False)
    assert rec.ref == ref and rec.status == "finished"
    assert [(p.step, p.value) for p in b.read_history(run_dir)] == [
        (0, 1.0), (1, 0.5), (2, 1 / 3), (3, 0.25)]
    (listed,) = list(b.list_runs(os.path.dirname(run_dir)))
    assert listed.ref == ref and listed.status == "finished"

    with open(os.path.join(run_dir, writer.SEGMENTS_FILE), encoding="utf-8") as fh:
        segs = json.load(fh)["segments"]
    assert len(segs) == 2 and all(s.startswith("resumed-") for s in segs)
    from aipm_wandb.offline import segment_dirs

    seg_dirs = segment_dirs(run_dir)  # each a run with the same id, under resumed-*/wandb/
    assert [os.path.relpath(d, os.path.dirname(run_dir)).split(os.sep)[0]
            for d in seg_dirs] == segs
    assert {read_local_run(d).run_id for d in seg_dirs} == {read_local_run(run_dir).run_id}
    assert [read_local_run(d).exit_code for d in seg_dirs] == [1, 0]
