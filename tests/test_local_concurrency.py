"""Several processes writing to one embedded store at once: nothing lost, nothing corrupt.

Four writer processes start together on a store that does not exist yet (so they also
race on creating the database and applying the migrations); each writes 25 complete runs
with a per-example table and streams one run with history points, while a reader process
lists and reads runs throughout. Afterwards every run, table and point is counted with
independent readers (``sqlite3``, ``pyarrow``).
"""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from aipm_tracking.backends.base import BackendOptions
from aipm_tracking.backends.local import LocalBackend
from aipm_tracking.errors import RunNotFoundError
from aipm_tracking.schema import MetricPoint, MetricValue, ModelInfo, RunRecord

N_PROCS = 4
RUNS_PER_PROC = 25
BATCHES = 10
POINTS_PER_BATCH = 50


def _frame(proc: int, i: int) -> pd.DataFrame:
    n = 20 + i
    return pd.DataFrame({
        "example_id": [f"p{proc}-r{i}-{k}" for k in range(n)],
        "label": ["a", "b"] * (n // 2) + ["a"] * (n % 2),
        "prediction": ["a"] * n,
        "confidence": np.linspace(0.0, 1.0, n),
        "correct": [k % 2 == 0 for k in range(n)],
    })


def _writer(store: str, proc: int, barrier: Any, out: Any) -> None:
    try:
        b = LocalBackend(BackendOptions(store=store))
        barrier.wait(timeout=60)
        refs = []
        stream = b.start_run(RunRecord(run_id="", name=f"stream-{proc}", model=ModelInfo("m")))
        for i in range(RUNS_PER_PROC):
            rec = RunRecord(run_id="", name=f"p{proc}-r{i}", model=ModelInfo("m", str(proc)),
                            metrics={"accuracy": MetricValue(i / 100, (0.0, 1.0), 20 + i)},
                            tags={"proc": str(proc)}, examples=_frame(proc, i))
            refs.append(b.write_run(rec))
            if i < BATCHES:
                b.log_points(stream, [MetricPoint("loss", float(s), s, 1000.0 + s)
                                      for s in range(i * POINTS_PER_BATCH,
                                                     (i + 1) * POINTS_PER_BATCH)])
        b.finish_run(stream, "finished")
        out.put(("ok", proc, refs, stream))
    except BaseException:  # noqa: BLE001 - report to the parent, which fails the test
        out.put(("error", proc, traceback.format_exc(), None))


def _reader(store: str, barrier: Any, out: Any) -> None:
    try:
        b = LocalBackend(BackendOptions(store=store))
        barrier.wait(timeout=60)
        reads = 0
        for _ in range(40):
            for rec in list(b.list_runs(limit=5)):
                try:
                    full = b.read_run(rec.run_id)  # a listed run is complete
                except RunNotFoundError:
                    raise AssertionError(f"listed run {rec.run_id} vanished") from None
                if full.has_examples:
                    assert len(full.examples) == full.metrics["accuracy"].n
                reads += 1
        out.put(("ok", "reader", reads, None))  # reads: how many runs it saw
    except BaseException:  # noqa: BLE001
        out.put(("error", "reader", traceback.format_exc(), None))


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("fork" if "fork" in methods else "spawn")
    barrier = ctx.Barrier(N_PROCS + 1)
    out = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(store), p, barrier, out))
             for p in range(N_PROCS)]
    procs.append(ctx.Process(target=_reader, args=(str(store), barrier, out)))
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    errors = [r[2] for r in results if r[0] == "error"]
    assert not errors, "\n".join(errors)
    assert all(p.exitcode == 0 for p in procs)

    writers = [r for r in results if r[1] != "reader"]
    refs = [ref for r in writers for ref in r[2]]
    streams = [r[3] for r in writers]
    assert len(refs) == len(set(refs)) == N_PROCS * RUNS_PER_PROC

    # independent reader: the database itself
    con = sqlite3.connect(store / "aipm.db")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == len(refs) + N_PROCS
    assert con.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == len(refs)
    assert con.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0] == 1
    per_run = dict(con.execute("SELECT run_id, COUNT(*) FROM history GROUP BY run_id"))
    assert per_run == {s.split(":")[1]: BATCHES * POINTS_PER_BATCH for s in streams}
    assert con.execute("SELECT COUNT(*) FROM runs WHERE status != 'finished'").fetchone()[0] == 0
    con.close()

    # every per-example table is in place and belongs to its run; no temp files left
    files = sorted(p.name for p in (store / "examples").iterdir())
    assert files == sorted(f"{r.split(':')[1]}.parquet" for r in refs)
    b = LocalBackend(BackendOptions(store=str(store)))
    for ref in refs:
        rec = b.read_run(ref)
        proc, i = (int(x[1:]) for x in rec.name.split("-"))
        pd.testing.assert_frame_equal(rec.examples, _frame(proc, i))
        raw = pq.read_table(store / "examples" / f"{rec.run_id}.parquet")
        assert raw.num_rows == 20 + i
    for s in streams:
        assert [p.step for p in b.read_history(s)] == list(range(BATCHES * POINTS_PER_BATCH))
    b.close()


def _create(db: str, barrier: Any, q: Any) -> None:
    from aipm_tracking.backends import local_db

    try:
        barrier.wait(timeout=60)
        local_db.connect(Path(db)).close()
        q.put("ok")
    except Exception as e:  # noqa: BLE001 - reported to the parent
        q.put(f"{type(e).__name__}: {e}")


def test_processes_creating_one_new_store_at_once_all_succeed(tmp_path: Path) -> None:
    """Switching a brand-new database to WAL answers 'database is locked' at once (no busy
    wait) when another process is doing the same: connect must wait, not fail."""
    ctx = mp.get_context("spawn")
    results: list[str] = []
    for round_ in range(12):
        db = str(tmp_path / f"r{round_}" / "aipm.db")
        Path(db).parent.mkdir()
        barrier, q = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_create, args=(db, barrier, q)) for _ in range(4)]
        for p in procs:
            p.start()
        results += [q.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
    assert results == ["ok"] * 48, [r for r in results if r != "ok"]
