"""MLflow plugin throughput against its anchors, all measured in this one run (SQLite store).

1. 100,000 metric points: the plugin's batch path (``start_run`` + ``log_points``, what the
   Tracker calls) vs ``MlflowClient.log_batch`` called directly with 1,000-metric batches
   (target: plugin >= 0.9x); both build ``Metric`` objects from the same ``MetricPoint`` list;
   best of ``--reps`` alternating rounds. Every run's point count is checked in the store.
2. The per-step pattern (``MlflowClient.log_metric`` once per point) on a small sample.
3. ``aipm compare mlflow:A mlflow:B`` (a subprocess, the real console script) on two runs with
   100k-example tables; the ``import mlflow`` time, its floor, printed beside it.
4. ``aipm runs list --from mlflow:EXP`` path: listing 10,000 runs through ``list_runs``
   (search_runs pages of 1,000; no request per run). The 10,000 runs are cloned in SQL
   from one run created through the API (creating them one by one would take minutes).

Usage: python benchmarks/mlflow_push.py [--points 100000] [--examples 100000]
       [--list-runs 10000] [--per-step 300] [--reps 4]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

AIPM = str(Path(sys.executable).with_name("aipm"))


def _points(n: int, keys: int = 10) -> list:
    from aipm_tracking.schema import MetricPoint

    t0 = time.time()
    return [MetricPoint(f"train/k{i % keys}", 1.0 / (1 + i), i // keys, t0 + i * 1e-4)
            for i in range(n)]


def _count_points(db: Path, run_id: str) -> int:
    with sqlite3.connect(db) as con:
        return int(con.execute("SELECT count(*) FROM metrics WHERE run_uuid = ?",
                               (run_id,)).fetchone()[0])


def bench_points(uri: str, db: Path, n: int, reps: int) -> tuple[float, float]:
    from mlflow.entities import Metric

    from aipm_tracking.backends.base import BackendOptions
    from aipm_tracking.plugins import get_backend
    from aipm_tracking.schema import ModelInfo, RunRecord

    be = get_backend("mlflow", BackendOptions(mlflow_uri=uri, quiet=True))
    client = be.client  # type: ignore[attr-defined]
    exp = be._experiment_id("bench-points")  # type: ignore[attr-defined]
    pts = _points(n)
    direct_s: list[float] = []
    plugin_s: list[float] = []
    def plugin_round(rep: int) -> None:
        # the plugin's batch path (start_run is outside the timing, as is create_run below)
        ref = be.start_run(RunRecord(run_id="", name=f"plugin-{rep}", model=ModelInfo("m")),
                           "bench-points")
        t = time.perf_counter()
        be.log_points(ref, pts)
        plugin_s.append(time.perf_counter() - t)
        assert _count_points(db, ref.split(":")[1]) == n, "plugin run lost points"

    def direct_round(rep: int) -> None:
        # MlflowClient.log_batch directly, 1,000 metrics per call
        run_id = client.create_run(exp, run_name=f"direct-{rep}").info.run_id
        t = time.perf_counter()
        for i in range(0, n, 1000):
            ms = [Metric(p.key, p.value, int(p.timestamp * 1000), p.step) for p in pts[i:i + 1000]]
            client.log_batch(run_id, metrics=ms, synchronous=True)
        direct_s.append(time.perf_counter() - t)
        assert _count_points(db, run_id) == n, "direct run lost points"

    for rep in range(reps):  # alternate who goes first: the table grows as we go
        rounds = (plugin_round, direct_round) if rep % 2 == 0 else (direct_round, plugin_round)
        for fn in rounds:
            fn(rep)
    return n / min(plugin_s), n / min(direct_s)


def bench_per_step(uri: str, n: int) -> float:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("bench-points").experiment_id
    run_id = client.create_run(exp, run_name="per-step").info.run_id
    t = time.perf_counter()
    for i in range(n):
        client.log_metric(run_id, "train/loss", 1.0 / (1 + i), step=i)
    return n / (time.perf_counter() - t)


def _table(n: int, seed: int, acc: float):  # noqa: ANN202
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    label = rng.integers(0, 5, n)
    pred = np.where(rng.random(n) < acc, label, (label + 1) % 5)
    return pd.DataFrame({
        "example_id": np.arange(n), "label": label, "prediction": pred,
        "confidence": rng.beta(5, 2, n), "latency_ms": rng.gamma(2.0, 120.0, n),
        "cost_usd": rng.uniform(0.0005, 0.002, n),
        "slice": rng.choice(["de", "en", "fr", "es"], n)})


def bench_compare(uri: str, tmp: Path, n: int) -> dict[str, float]:
    from aipm_tracking.api import evaluate, load_guardrails, record_from_eval
    from aipm_tracking.backends.base import BackendOptions
    from aipm_tracking.plugins import get_backend

    g = tmp / "g.yaml"
    g.write_text("version: 1\nname: bench\nfallback_threshold: 0.5\nmetrics:\n"
                 "  accuracy: {min: 0.5, max_regression: 0.01}\n"
                 "  latency_ms_p95: {max: 2000, max_regression: '10%'}\n"
                 "  ece: {max: 0.5}\n")
    guard = load_guardrails(str(g))
    be = get_backend("mlflow", BackendOptions(mlflow_uri=uri, quiet=True))
    refs, push_s, files = [], [], []
    for version, acc in (("1", 0.85), ("2", 0.83)):
        table = _table(n, 7, acc)
        files.append(str(tmp / f"v{version}.parquet"))
        table.to_parquet(files[-1], index=False)
        res = evaluate(table, fallback_threshold=0.5)
        rec = record_from_eval(res, model="bench-bot", model_version=version, guardrails=guard)
        t = time.perf_counter()
        refs.append(be.write_run(rec, "bench-compare"))
        push_s.append(time.perf_counter() - t)
    t = time.perf_counter()
    for ref in refs:
        assert len(be.read_run(ref).examples) == n  # type: ignore[arg-type]
    pull_s = (time.perf_counter() - t) / 2
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}

    def timed(cmd: list[str]) -> float:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
            times.append(time.perf_counter() - t)
            assert r.returncode in (0, 1), r.stderr
        return statistics.median(times)

    tail = ["--guardrails", str(g), "--format", "json"]
    open_store = ("from mlflow.tracking import MlflowClient; "
                  f"MlflowClient({uri!r}).get_experiment('0')")
    return {"push_s": statistics.median(push_s), "pull_s": pull_s,
            "compare_s": timed([AIPM, "-q", "compare", refs[0], refs[1], *tail]),
            "compare_files_s": timed([AIPM, "-q", "compare", files[0], files[1], *tail]),
            "import_mlflow_s": timed([sys.executable, "-c", "import mlflow"]),
            "open_store_s": timed([sys.executable, "-c", open_store])}


def _clone_runs(db: Path, template: str, copies: int) -> None:
    """Clone one run ``copies`` times in MLflow's SQLite tables (benchmark set-up only)."""
    tables = ("runs", "tags", "params", "latest_metrics", "metrics")
    with sqlite3.connect(db) as con:
        cols = {t: [r[1] for r in con.execute(f"PRAGMA table_info({t})")] for t in tables}
        for i in range(copies):
            new = uuid.uuid4().hex
            for t in tables:
                sel = ", ".join("?" if c == "run_uuid" else
                                (f"start_time + {i + 1}" if c == "start_time" else c)
                                for c in cols[t])
                con.execute(f"INSERT INTO {t} ({', '.join(cols[t])}) SELECT {sel} FROM {t} "
                            f"WHERE run_uuid = ?", (new, template))


def bench_list(uri: str, db: Path, n: int) -> tuple[float, int, int]:
    from mlflow.entities import Metric

    from aipm_tracking.backends.base import BackendOptions
    from aipm_tracking.plugins import get_backend

    be = get_backend("mlflow", BackendOptions(mlflow_uri=uri, quiet=True))
    client = be.client  # type: ignore[attr-defined]
    exp = be._experiment_id("bench-list")  # type: ignore[attr-defined]
    run = client.create_run(exp, run_name="listed", tags={"team": "a"})
    client.log_batch(run.info.run_id, metrics=[Metric("accuracy", 0.9, 0, 0)],
                     params=[], tags=[], synchronous=True)
    _clone_runs(db, run.info.run_id, n - 1)
    calls = {"search_runs": 0, "get_run": 0}
    for name in calls:
        real = getattr(client, name)

        def counted(*a, _real=real, _name=name, **kw):  # noqa: ANN002, ANN003, ANN202
            calls[_name] += 1
            return _real(*a, **kw)

        setattr(client, name, counted)
    t = time.perf_counter()
    got = sum(1 for _ in be.list_runs("bench-list"))
    elapsed = time.perf_counter() - t
    assert got == n, f"listed {got} of {n} runs"
    return elapsed, calls["search_runs"], calls["get_run"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--examples", type=int, default=100_000)
    ap.add_argument("--list-runs", type=int, default=10_000)
    ap.add_argument("--per-step", type=int, default=300)
    ap.add_argument("--reps", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="aipm-bench-mlflow-") as d:
        tmp = Path(d)
        db = tmp / "mlflow.db"
        uri = f"sqlite:///{db}"
        t = time.perf_counter()
        import mlflow  # noqa: F401 - measured once here; subprocesses measure it again

        print(f"import mlflow (in-process): {time.perf_counter() - t:.2f} s")
        plugin_pps, direct_pps = bench_points(uri, db, args.points, args.reps)
        print(f"\n{args.points:,} metric points to SQLite (best of {args.reps}):")
        print(f"  MlflowClient.log_batch, 1000/batch : {direct_pps:10,.0f} points/s")
        print(f"  aipm-mlflow log_points (batch path): {plugin_pps:10,.0f} points/s   "
              f"ratio {plugin_pps / direct_pps:.2f}x (target >= 0.90x)")
        step_pps = bench_per_step(uri, args.per_step)
        print(f"  per-step log_metric ({args.per_step} pts)   : {step_pps:10,.0f} points/s   "
              f"batch path is {plugin_pps / step_pps:.0f}x faster")
        c = bench_compare(uri, tmp, args.examples)
        print(f"\n{args.examples:,}-example runs: push (write_run, incl. Parquet, log_table, "
              f"dataset) {c['push_s']:.2f} s each")
        print(f"  pull (read_run with table, warm, in-process): {c['pull_s']:.2f} s each")
        print(f"  aipm compare mlflow:A mlflow:B      : {c['compare_s']:.2f} s wall (median of 3)")
        print(f"  python -c 'import mlflow'           : {c['import_mlflow_s']:.2f} s (the floor)")
        print(f"  import mlflow + open the SQLite store: {c['open_store_s']:.2f} s")
        print(f"  aipm compare A.parquet B.parquet    : {c['compare_files_s']:.2f} s "
              f"(same tables, no MLflow)")
        if args.list_runs:
            s, searches, gets = bench_list(uri, db, args.list_runs)
            print(f"\nlist_runs over {args.list_runs:,} runs: {s:.2f} s, {searches} search_runs "
                  f"page(s), {gets} get_run call(s)")


if __name__ == "__main__":
    main()
