"""Per-call CPU cost of ``tracker.log(step, loss=…, lr=…, grad_norm=…)`` beside the anchors.

Measured in one process, one after the other: ``aipm.Tracker.log`` (local store) three ways
(hot path with the background thread idle; a tight loop of 600k calls that saturates the
thread; and paced beside a fixed workload per step, as the added us per step), ``wandb.log`` offline (3 scalars) and
``mlflow.log_metrics`` to a SQLite store (3 scalars, small N: ~12 ms a call). Prints one
JSON line per variant with microseconds per call (median of REPS blocks) and the ratios the
issue targets: tracker <= 1/100 of wandb and <= 1/1000 of mlflow.

    python benchmarks/tracker_cpu.py            # N_TRACKER=200000 N_WANDB=3000 N_MLFLOW=300
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

N_TRACKER = int(os.environ.get("N_TRACKER", "200000"))
N_WANDB = int(os.environ.get("N_WANDB", "3000"))
N_MLFLOW = int(os.environ.get("N_MLFLOW", "300"))
REPS = int(os.environ.get("REPS", "3"))


def per_call(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    """Median over REPS blocks of the seconds per call of ``fn(i)``."""
    out, i = [], 0
    for _ in range(REPS):
        t = time.perf_counter()
        for _ in range(n):
            fn(i)
            i += 1
        out.append((time.perf_counter() - t) / n)
    return statistics.median(out)


def bench_tracker(tmp: str, sustained: bool) -> dict:
    """``sustained``: the background thread delivers while the loop runs (default settings;
    at ~300k calls/s it is saturated and competes for the GIL on a 2-core machine). Else the
    hot path alone: the thread is idle during the timing and delivers at ``finish``."""
    import aipm_tracking as aipm

    store = os.path.join(tmp, "store-sustained" if sustained else "store-hot")
    kw = {} if sustained else {"flush_every_s": 3600.0, "flush_every_n": 10**9}
    tr = aipm.Tracker(to="local", store=store, model="bench", replay_on_start=False,
                      spool_dir=os.path.join(store, "spool"), **kw)  # type: ignore[arg-type]
    log = tr.log
    s = per_call(lambda i: log(step=i, loss=0.5, lr=1e-4, grad_norm=1.25), N_TRACKER)
    t = time.perf_counter()
    tr.finish()
    fin = time.perf_counter() - t
    from aipm_tracking.backends.base import BackendOptions
    from aipm_tracking.backends.local import LocalBackend

    n = len(LocalBackend(BackendOptions(store=store)).read_history(tr.ref or ""))
    name = "sustained, thread delivering" if sustained else "hot path, thread idle"
    return {"variant": f"aipm.Tracker.log ({name})", "us_per_call": round(s * 1e6, 3),
            "calls": N_TRACKER * REPS, "points_stored": n, "finish_s": round(fin, 3)}


def bench_paced(tmp: str, pairs: int = 10, block: int = 2000) -> dict:
    """A loop with a fixed Python workload per step (``step_us_without``), with and without
    ``tr.log`` of 3 scalars, in alternating blocks: the added microseconds per step
    include the background thread's share of the GIL at this realistic rate."""
    import aipm_tracking as aipm

    store = os.path.join(tmp, "store-paced")
    tr = aipm.Tracker(to="local", store=store, model="bench", replay_on_start=False,
                      spool_dir=os.path.join(store, "spool"))
    i = 0

    def blk(log: bool) -> float:
        nonlocal i
        t = time.perf_counter()
        for _ in range(block):
            sum(range(6000))  # the "training step" (~100 us here)
            if log:
                tr.log(step=i, loss=0.5, lr=1e-4, grad_norm=1.25)
                i += 1
        return (time.perf_counter() - t) / block

    blk(True)
    diffs, base = [], []
    for p in range(pairs):
        if p % 2:
            a, b = blk(True), blk(False)
        else:
            b, a = blk(False), blk(True)
        diffs.append(a - b)
        base.append(b)
    tr.finish()
    return {"variant": "aipm.Tracker.log (paced: added us per step beside a workload)",
            "us_per_call": round(statistics.median(diffs) * 1e6, 3),
            "step_us_without": round(statistics.median(base) * 1e6, 1), "pairs": pairs,
            "calls": i}


def bench_wandb(tmp: str) -> dict | None:
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        import wandb
    except ImportError as e:
        return {"variant": "wandb.log", "error": repr(e)}
    run = wandb.init(project="bench", dir=tmp, mode="offline")
    s = per_call(lambda i: wandb.log({"loss": 0.5, "lr": 1e-4, "grad_norm": 1.25}, step=i),
                 N_WANDB)
    run.finish()
    return {"variant": "wandb.log (offline)", "us_per_call": round(s * 1e6, 3),
            "calls": N_WANDB * REPS, "wandb": wandb.__version__}


def bench_mlflow(tmp: str) -> dict | None:
    try:
        import mlflow
    except ImportError as e:
        return {"variant": "mlflow.log_metrics", "error": repr(e)}
    mlflow.set_tracking_uri(f"sqlite:///{os.path.join(tmp, 'mlflow.db')}")
    mlflow.set_experiment("bench")
    with mlflow.start_run():
        s = per_call(lambda i: mlflow.log_metrics({"loss": 0.5, "lr": 1e-4, "grad_norm": 1.25},
                                                  step=i), N_MLFLOW)
    return {"variant": "mlflow.log_metrics (sqlite)", "us_per_call": round(s * 1e6, 3),
            "calls": N_MLFLOW * REPS, "mlflow": mlflow.__version__}


def main() -> None:
    tmp = tempfile.mkdtemp(prefix="aipm-cpu-bench-")
    try:
        import platform

        print(json.dumps({"machine": platform.processor() or platform.machine(),
                          "cpus": os.cpu_count(), "python": platform.python_version(),
                          "loadavg_1m": round(os.getloadavg()[0], 2)}), flush=True)
        trs = [bench_tracker(tmp, sustained=False), bench_tracker(tmp, sustained=True),
               bench_paced(tmp)]
        for tr in trs:
            print(json.dumps(tr), flush=True)
        rows = [bench_wandb(tempfile.mkdtemp(dir=tmp)), bench_mlflow(tmp)]
        for r in rows:
            if r is None:
                continue
            print(json.dumps(r), flush=True)
            if "us_per_call" not in r:
                continue
            target = 1 / 100 if r["variant"].startswith("wandb") else 1 / 1000
            for tr in trs:
                ratio = tr["us_per_call"] / r["us_per_call"]
                print(json.dumps({"ratio": f"{tr['variant']} / {r['variant']}",
                                  "value": round(ratio, 6), "target": target,
                                  "meets_target": ratio <= target}), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
