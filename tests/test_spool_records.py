"""A backlog is spooled as records of bounded size, and replayed in bounded chunks.

A loop that logs faster than the Tracker's spooler drains must not turn its backlog into
one giant spool record (nothing reaches the spool while it is built, so a SIGKILL then
loses all of it); ``aipm sync`` reads a spool once and sends at most ``REPLAY_CHUNK``
points per ``log_points`` call, even for a record larger than that (spools written before
the cap), without duplicating a point when a sync is itself interrupted and rerun.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from aipm_tracking.backends.base import BackendOptions
from aipm_tracking.backends.local import LocalBackend
from aipm_tracking.errors import BackendError
from aipm_tracking.schema import MetricPoint, ModelInfo, RunRecord
from aipm_tracking.spool import (
    RECORD_MAX_POINTS,
    REPLAY_CHUNK,
    SpoolState,
    SpoolWriter,
    replay_spool,
)


def spool_records(path: Path) -> list[dict]:
    """The spool's records, read straight from the file format: ``%08x <json>\\n`` lines."""
    out = []
    for line in path.read_bytes().split(b"\n"):
        if not line:
            continue
        payload = line[9:]
        assert int(line[:8], 16) == zlib.crc32(payload)
        out.append(json.loads(payload))
    return out


def header(store: Path) -> dict:
    rec = RunRecord(run_id="spoolrun1", name="r", model=ModelInfo("m", "1"), status="running")
    return {"backend": {"scheme": "local", "target": None, "store": str(store),
                        "mlflow_uri": None}, "record": rec.to_dict()}


class Recording(LocalBackend):
    """The real local backend, noting the size of every ``log_points`` call and every
    (key, step) it was sent; ``fail_after``: calls after which it raises once the points are
    stored (an ack lost to a kill)."""

    def __init__(self, options: BackendOptions, fail_after: int | None = None) -> None:
        super().__init__(options)
        self.calls: list[int] = []
        self.sent: Counter[tuple[str, int]] = Counter()
        self.fail_after = fail_after

    def log_points(self, ref: str, points: Sequence[MetricPoint]) -> None:
        super().log_points(ref, points)
        self.calls.append(len(points))
        self.sent.update((p.key, p.step) for p in points)
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise BackendError("connection lost after the points were stored (test)")


def test_a_fast_loggers_backlog_is_spooled_in_records_of_bounded_size(tmp_path: Path) -> None:
    import aipm_tracking as aipm

    store = tmp_path / "store"
    n = 40_000  # 120,000 points logged before the spooler's first flush
    tr = aipm.Tracker(to="local", model="m", store=store, spool_dir=tmp_path / "sp",
                      flush_every_s=30.0, flush_every_n=10**7, keep_spool=True,
                      replay_on_start=False)
    for i in range(n):
        tr.log(step=i, loss=i * 0.5, lr=1e-3, acc=i % 7)
    tr.flush()
    tr.finish()
    assert tr.spool_path is not None
    recs = spool_records(tr.spool_path)
    sizes = [len(r["p"]) for r in recs if r["t"] == "points"]
    assert sum(sizes) == 3 * n
    assert max(sizes) <= RECORD_MAX_POINTS, sizes
    steps = [p[2] for r in recs if r["t"] == "points" for p in r["p"] if p[0] == "loss"]
    assert steps == list(range(n))  # in logging order, each once
    hist = LocalBackend(BackendOptions(store=str(store))).read_history(tr.ref or "")
    assert len(hist) == 3 * n and len({(p.key, p.step) for p in hist}) == 3 * n


def test_sync_sends_at_most_replay_chunk_points_per_call_reading_the_spool_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A spool with small records and one huge record (as written before the cap)."""
    import aipm_tracking.spool as spool_mod

    store = tmp_path / "store"
    w = SpoolWriter(tmp_path / "sp", "spoolrun1", header(store))
    step = 0

    def points(k: int) -> list[tuple]:
        nonlocal step
        out = [("loss", s * 0.5, s, 1.7e9 + s / 1000) for s in range(step, step + k)]
        step += k
        return out

    for k in (1200, 3000, 900):
        w.append_points(points(k))
    w.append({"t": "points", "p": points(2 * REPLAY_CHUNK + 1234)})  # one huge record
    for k in (4999, 2):
        w.append_points(points(k))
    w.close()
    total = step
    decoded: list[int] = []
    real = spool_mod._decode_line

    def counting(line: bytes) -> dict | None:
        decoded.append(len(line))
        return real(line)

    monkeypatch.setattr(spool_mod, "_decode_line", counting)
    be = Recording(BackendOptions(store=str(store)))
    res = replay_spool(w.path, backend=be)
    assert res.status == "synced" and res.points == total, res
    assert max(be.calls) <= REPLAY_CHUNK and sum(be.calls) == total, be.calls
    assert set(be.sent.values()) == {1}
    n_records = 1 + 6  # header + points records
    assert len(decoded) <= n_records + 1, decoded  # once each (the header read up front)
    hist = be.read_history("spoolrun1")
    assert [p.step for p in hist] == list(range(total))
    assert be.read_run("spoolrun1").metric("loss") == (total - 1) * 0.5  # the last value


@pytest.mark.parametrize("fail_after", [1, 2, 3, 4])
def test_a_sync_cut_off_mid_record_and_rerun_sends_every_point_once(
        tmp_path: Path, fail_after: int) -> None:
    """The sync loses its connection after a call whose points were stored (a kill before
    the ack was saved), here inside the huge record too; the rerun sends the rest, once."""
    store = tmp_path / "store"
    w = SpoolWriter(tmp_path / "sp", "spoolrun1", header(store))
    pts = [("loss", s * 0.25, s, 1.7e9 + s / 1000) for s in range(3 * REPLAY_CHUNK + 10)]
    w.append_points(pts[:100])
    w.append({"t": "points", "p": pts[100:]})
    w.close()
    first = Recording(BackendOptions(store=str(store)), fail_after=fail_after)
    res = replay_spool(w.path, backend=first)
    assert res.status == "failed" and "connection lost" in res.reason
    assert w.path.exists()
    state = SpoolState.load(w.path.with_suffix(".state"))
    assert state.inflight > state.acked  # the last call is in doubt
    second = Recording(BackendOptions(store=str(store)))
    res2 = replay_spool(w.path, backend=second)
    assert res2.status == "synced" and res2.run_status == "killed", res2
    assert max(first.calls + second.calls) <= REPLAY_CHUNK
    both = first.sent + second.sent
    assert len(both) == len(pts) and set(both.values()) == {1}  # each point sent once
    assert res2.points == sum(second.calls) == len(pts) - sum(first.calls)
    assert [p.step for p in second.read_history("spoolrun1")] == list(range(len(pts)))


CHILD = textwrap.dedent('''
    import sys, time
    import aipm_tracking as aipm
    tr = aipm.Tracker(to="local", model="m", spool_dir=sys.argv[1], flush_every_s=0.2,
                      flush_every_n=1000, replay_on_start=False)
    print("REF", tr.ref, flush=True)
    n = int(sys.argv[2])
    # the loop keeps the interpreter: the spooler thread cannot run until it is done, so the
    # whole loop is one backlog (a loop that logs faster than the spooler drains)
    sys.setswitchinterval(1000.0)
    for i in range(n):
        tr.log(step=i, loss=i * 0.5, lr=1e-3, acc=i % 7)
    sys.setswitchinterval(0.005)
    print("LOOPDONE", flush=True)
    time.sleep(600)
''')


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_sigkill_after_a_fast_loop_loses_at_most_one_record(tmp_path: Path) -> None:
    """The child logs 600k points at once, then idles; it is killed once its spool has
    stopped growing for 0.75 s. With the backlog spooled record by record that means all
    of it is there; built as one record, nothing was written yet and all of it is lost."""
    from aipm_tracking.spool import replay_all

    script = tmp_path / "child.py"
    script.write_text(CHILD)
    spool_dir = tmp_path / "spool"
    steps = 200_000
    proc = subprocess.Popen([sys.executable, str(script), str(spool_dir), str(steps)],
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ref = proc.stdout.readline().split()[1]
        assert proc.stdout.readline().strip() == "LOOPDONE"
        (spool,) = spool_dir.glob("*.spool")
        size, since, t0 = spool.stat().st_size, time.monotonic(), time.monotonic()
        while time.monotonic() - since < 0.75 and time.monotonic() - t0 < 60:
            time.sleep(0.05)
            now = spool.stat().st_size
            if now != size:
                size, since = now, time.monotonic()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    sizes = [len(r["p"]) for r in spool_records(spool) if r.get("t") == "points"]
    (res,) = replay_all(spool_dir)
    assert res.status == "synced" and res.run_status == "killed", res
    be = LocalBackend(BackendOptions(store=os.environ["AIPM_STORE"]))
    hist = be.read_history(ref)
    assert len(hist) == len({(p.key, p.step) for p in hist})  # no duplicates
    assert len(hist) >= 3 * steps - RECORD_MAX_POINTS, (len(hist), 3 * steps)
    assert max(sizes) <= RECORD_MAX_POINTS
