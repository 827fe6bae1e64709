"""The Tracker's spool: framing and checksums, replay, idempotence, and a real SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from aipm_tracking.backends.base import BackendOptions
from aipm_tracking.backends.local import LocalBackend
from aipm_tracking.schema import MetricPoint, ModelInfo, RunRecord
from aipm_tracking.spool import (
    SpoolReader,
    SpoolState,
    SpoolWriter,
    encode_record,
    replay_all,
    replay_spool,
)


def header(store: Path, scheme: str = "local") -> dict:
    rec = RunRecord(run_id="spoolrun1", name="r", model=ModelInfo("m", "1"), status="running")
    return {"backend": {"scheme": scheme, "target": None, "store": str(store),
                        "mlflow_uri": None}, "record": rec.to_dict()}


def batches(n_batches: int, per: int = 10, key: str = "loss") -> list[list[tuple]]:
    out = []
    for b in range(n_batches):
        out.append([(key, float(s) * 0.25, s, 1700000000.0 + s / 1000)
                    for s in range(b * per, (b + 1) * per)])
    return out


def test_record_framing_is_crc32_of_the_json() -> None:
    rec = {"t": "points", "p": [["loss", 0.5, 3, 1.5], ["nan", float("nan"), 4, 2.0]]}
    line = encode_record(rec)
    assert line.endswith(b"\n") and line[8:9] == b" "
    payload = line[9:-1]
    assert int(line[:8], 16) == zlib.crc32(payload)  # independent check with zlib
    assert json.loads(payload)["p"][0] == ["loss", 0.5, 3, 1.5]


def test_torn_tail_and_corrupt_record_are_dropped(tmp_path: Path) -> None:
    w = SpoolWriter(tmp_path, "spoolrun1", header(tmp_path / "store"))
    ends = [w.append_points(b)[1] for b in batches(3)]
    w.close()
    data = bytearray(w.path.read_bytes())
    # flip one byte inside the JSON of the second points record (its checksum now fails)
    mid = ends[0] + 20
    data[mid] = ord("7") if data[mid] != ord("7") else ord("8")
    # and tear the last record: cut it in the middle (a kill during the write)
    torn = bytes(data[: ends[2] - 15])
    w.path.write_bytes(torn)
    r = SpoolReader(w.path)
    recs = [rec for _s, _e, rec in r.records(0)]
    assert [rec["t"] for rec in recs] == ["header", "points"]
    assert [p[2] for p in recs[1]["p"]] == list(range(10))
    assert r.torn and r.corrupt == 1
    assert r.end == ends[0]


def test_replay_creates_the_run_sends_points_once_and_marks_killed(tmp_path: Path) -> None:
    store = tmp_path / "store"
    w = SpoolWriter(tmp_path / "sp", "spoolrun1", header(store))
    for b in batches(4):
        w.append_points(b)
    w.close()  # never reached a backend: state.ref is None
    res = replay_spool(w.path, keep=True)
    assert res.status == "synced" and res.points == 40 and res.run_status == "killed"
    be = LocalBackend(BackendOptions(store=str(store)))
    hist = be.read_history(res.ref)
    assert [p.step for p in hist] == list(range(40))
    assert [p.value for p in hist] == [s * 0.25 for s in range(40)]
    rec = be.read_run(res.ref)
    assert rec.status == "killed" and rec.metric("loss") == 39 * 0.25
    again = replay_spool(w.path, keep=True)  # idempotent
    assert again.points == 0 and len(be.read_history(res.ref)) == 40
    assert replay_spool(w.path).points == 0  # and now deleted
    assert not w.path.exists() and not w.path.with_suffix(".state").exists()


def test_inflight_batch_is_not_duplicated(tmp_path: Path) -> None:
    """A writer died after the backend stored a batch but before it recorded the ack."""
    store = tmp_path / "store"
    be = LocalBackend(BackendOptions(store=str(store)))
    ref = be.start_run(RunRecord(run_id="spoolrun1", name="r", model=ModelInfo("m")))
    w = SpoolWriter(tmp_path / "sp", "spoolrun1", header(store))
    b = batches(3)
    _s0, e0 = w.append_points(b[0])
    _s1, e1 = w.append_points(b[1])
    w.append_points(b[2])
    w.append({"t": "finish", "status": "finished",
              "record": RunRecord(run_id="spoolrun1", name="r", model=ModelInfo("m", "9"),
                                  status="finished").to_dict()})
    be.log_points(ref, [MetricPoint(*p) for p in b[0] + b[1]])  # delivered ...
    w.state = SpoolState(ref=ref, acked=e0, inflight=e1)  # ... but batch 2 never acked
    w.save_state()
    w.close()
    res = replay_spool(w.path)
    assert res.points == 10 and res.run_status == "finished"
    steps = [p.step for p in be.read_history(ref)]
    assert steps == list(range(30))  # every point exactly once
    assert be.read_run(ref).model.version == "9"


def test_live_spool_is_skipped(tmp_path: Path) -> None:
    w = SpoolWriter(tmp_path / "sp", "spoolrun1", header(tmp_path / "store"))
    w.append_points(batches(1)[0])
    try:
        res = replay_all(tmp_path / "sp")
        assert [r.status for r in res] == ["skipped"]
    finally:
        w.close()
    assert [r.status for r in replay_all(tmp_path / "sp")] == ["synced"]


def test_sync_command_reports_failures(tmp_path: Path) -> None:
    from aipm_tracking.cli import cli

    w = SpoolWriter(tmp_path / "sp", "spoolrun1", header(tmp_path / "store", scheme="nosuch"))
    w.close()
    out = CliRunner().invoke(cli, ["sync", "--spool-dir", str(tmp_path / "sp"),
                                   "--format", "json"])
    assert out.exit_code == 1
    (r,) = json.loads(out.output)["results"]
    assert r["status"] == "failed" and "nosuch" in r["reason"]
    assert w.path.exists()  # kept for the next try


CHILD = textwrap.dedent('''
    import os, sys, time
    from aipm_tracking import hookimpl, plugins
    from aipm_tracking.backends.local import LocalBackend
    from aipm_tracking.errors import BackendError

    class Flaky(LocalBackend):
        def log_points(self, ref, points):
            if os.path.exists(os.environ["AIPM_TEST_DOWN"]):
                raise BackendError("backend down (test)")
            super().log_points(ref, points)

    class Plugin:
        @hookimpl
        def aipm_register_backends(self, register):
            register("flaky", Flaky)

    plugins.get_plugin_manager().register(Plugin(), name="flaky-test")
    import aipm_tracking as aipm
    tr = aipm.Tracker(to="flaky", model="m", flush_every_s=0.2, spool_dir=sys.argv[1],
                      replay_on_start=False)
    print("REF", tr.ref, flush=True)
    i = 0
    while True:
        tr.log(step=i, loss=i * 0.5, acc=i % 7)
        if i % 50 == 0:
            print("STEP", i, flush=True)
        i += 1
        time.sleep(0.001)
''')


class FlakyPlugin:
    """Registers the same 'flaky' scheme in this process (a LocalBackend that is up now)."""

    from aipm_tracking import hookimpl

    @hookimpl
    def aipm_register_backends(self, register):  # noqa: ANN001
        register("flaky", LocalBackend)


@pytest.mark.slow
@pytest.mark.parametrize("down", [True, False], ids=["backend-down", "backend-up"])
def test_sigkill_loses_at_most_the_last_flush_interval(tmp_path: Path, down: bool) -> None:
    from aipm_tracking import plugins
    from aipm_tracking.cli import cli

    script = tmp_path / "child.py"
    script.write_text(CHILD)
    spool_dir = tmp_path / "spool"
    flag = tmp_path / "down"
    if down:
        flag.write_text("1")
    env = {**os.environ, "AIPM_TEST_DOWN": str(flag), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(spool_dir)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ref = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("REF"):
                ref = line.split()[1]
            if line.startswith("STEP") and int(line.split()[1]) >= 300:
                break
        else:
            pytest.fail(f"child ended early: {proc.stderr.read() if proc.stderr else ''}")
        # every step <= 300 was logged before this point; wait 10 flush intervals (slack
        # for a loaded machine), then kill
        time.sleep(2.0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and ref and ref.startswith("local:")
    (spool,) = spool_dir.glob("*.spool")
    if down:  # simulate a record torn by the kill on top of it
        with open(spool, "ab") as f:
            f.write(b'0badc0de {"t":"points","p":[["loss",1.0,99999')
    be = LocalBackend(BackendOptions(store=os.environ["AIPM_STORE"]))
    before = len(be.read_history(ref))
    if down:
        assert before == 0
        flag.unlink()

    plugins.get_plugin_manager().register(FlakyPlugin(), name="flaky-test")
    out = CliRunner().invoke(cli, ["sync", "--spool-dir", str(spool_dir), "--format", "json"])
    assert out.exit_code == 0, out.output
    (res,) = json.loads(out.output)["results"]
    assert res["status"] == "synced" and res["ref"] == ref and res["run_status"] == "killed"
    assert res["torn"] is down

    hist = be.read_history(ref)
    by_key: dict[str, list[MetricPoint]] = {}
    for p in hist:
        by_key.setdefault(p.key, []).append(p)
    loss_steps = [p.step for p in by_key["loss"]]
    acc_steps = [p.step for p in by_key["acc"]]
    n = len(loss_steps)
    assert loss_steps == list(range(n)) and acc_steps == loss_steps  # a prefix, no dupes
    assert n > 300  # everything logged more than one flush interval before the kill
    assert all(p.value == p.step * 0.5 for p in by_key["loss"])  # nothing corrupted
    assert all(p.value == p.step % 7 for p in by_key["acc"])
    assert len(hist) == before + res["points"]
    rec = be.read_run(ref)
    assert rec.status == "killed"
    # the summary a finish would have written: each series' last logged value
    assert rec.metric("loss") == by_key["loss"][-1].value == (n - 1) * 0.5
    assert rec.metric("acc") == (n - 1) % 7
    out2 = CliRunner().invoke(cli, ["sync", "--spool-dir", str(spool_dir)])
    assert out2.exit_code == 0 and "nothing to sync" in out2.output
    assert len(be.read_history(ref)) == len(hist)


@pytest.mark.slow
def test_sigkill_while_a_backend_call_hangs_still_loses_one_interval_at_most(
        tmp_path: Path) -> None:
    """A real hang: another process holds the store's SQLite write lock, so the Tracker's
    delivery blocks in SQLite's busy wait. The spooler goes on writing the spool every
    interval, so what was logged well before the kill survives it."""
    import sqlite3

    from aipm_tracking.cli import cli

    script = tmp_path / "child.py"
    script.write_text(CHILD.replace('to="flaky"', 'to="local"'))
    spool_dir = tmp_path / "spool"
    env = {**os.environ, "AIPM_TEST_DOWN": str(tmp_path / "never"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(spool_dir)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = Path(os.environ["AIPM_STORE"]) / "aipm.db"
    holder = None
    try:
        assert proc.stdout is not None
        ref, last = None, -1
        for line in proc.stdout:
            if line.startswith("REF"):
                ref = line.split()[1]
            elif line.startswith("STEP"):
                last = int(line.split()[1])
                if holder is None and last >= 300:
                    holder = sqlite3.connect(str(db), timeout=30, isolation_level=None)
                    holder.execute("BEGIN EXCLUSIVE")  # every writer now waits (busy)
                    locked_at = last
                elif holder is not None and last >= locked_at + 1000:
                    break
        else:
            pytest.fail(f"child ended early: {proc.stderr.read() if proc.stderr else ''}")
        logged_before = last  # logged >= 1 s (5 flush intervals) before the kill
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if holder is not None:
            holder.execute("ROLLBACK")
            holder.close()
    assert ref and ref.startswith("local:")
    be = LocalBackend(BackendOptions(store=os.environ["AIPM_STORE"]))
    assert len({p.step for p in be.read_history(ref)}) <= locked_at + 250  # it did hang
    out = CliRunner().invoke(cli, ["sync", "--spool-dir", str(spool_dir), "--format", "json"])
    assert out.exit_code == 0, out.output
    steps = sorted(p.step for p in be.read_history(ref) if p.key == "loss")
    assert steps == list(range(len(steps)))  # a prefix, no duplicates
    assert len(steps) > logged_before, (len(steps), logged_before)


def test_compaction_keeps_the_spool_small_and_replayable(tmp_path: Path) -> None:
    store = tmp_path / "store"
    be = LocalBackend(BackendOptions(store=str(store)))
    ref = be.start_run(RunRecord(run_id="spoolrun1", name="r", model=ModelInfo("m")))
    w = SpoolWriter(tmp_path / "sp", "spoolrun1", header(store))
    header_len = w.offset
    b = batches(3)
    w.append_points(b[0])
    assert not w.compact(0)  # not delivered yet: never dropped
    be.log_points(ref, [MetricPoint(*p) for p in b[0]])
    w.state.ref, w.state.acked = ref, w.offset
    assert not w.compact(0)  # delivered, but not yet kept for sure by the backend
    w.state.durable = w.offset
    assert w.compact(0)
    assert w.path.stat().st_size == header_len and w.state.acked == header_len
    assert SpoolState.load(w.path.with_suffix(".state")).acked == header_len
    w.append_points(b[1])  # written after the compaction, never delivered
    try:
        assert [r.status for r in replay_all(tmp_path / "sp")] == ["skipped"]  # still locked
    finally:
        w.close()
    res = replay_spool(w.path)
    assert res.points == 10
    assert [p.step for p in be.read_history(ref)] == list(range(20))


@pytest.mark.slow
def test_inflight_dedup_against_real_mlflow_store(tmp_path: Path) -> None:
    """MLflow keeps whole milliseconds: the in-flight check must still recognise the points."""
    pytest.importorskip("aipm_mlflow")
    from aipm_tracking.plugins import get_backend

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    be = get_backend("mlflow", BackendOptions(mlflow_uri=uri))
    rec = RunRecord(run_id="spoolrun1", name="r", model=ModelInfo("m"))
    ref = be.start_run(rec, "spool-test")
    hdr = {"backend": {"scheme": "mlflow", "target": "spool-test", "store": None,
                       "mlflow_uri": uri}, "record": rec.to_dict()}
    w = SpoolWriter(tmp_path / "sp", "spoolrun1", hdr)
    b = [[(k, v, s, ts + 0.0007) for k, v, s, ts in bb] for bb in batches(3)]  # .7 ms
    _s0, e0 = w.append_points(b[0])
    _s1, e1 = w.append_points(b[1])
    w.append_points(b[2])
    be.log_points(ref, [MetricPoint(*p) for p in b[0] + b[1]])
    w.state = SpoolState(ref=ref, acked=e0, inflight=e1)
    w.save_state()
    w.close()
    res = replay_spool(w.path)
    assert res.status == "synced" and res.points == 10, res
    steps = sorted(p.step for p in be.read_history(ref.split(":", 1)[1], ["loss"]))
    assert steps == list(range(30))


def test_sync_mlflow_uri_redirects_a_spool_from_a_moved_server(tmp_path: Path) -> None:
    """The spool recorded a server that is gone; ``aipm sync --mlflow-uri`` sends it to the
    one given (a real MLflow SQLite store), and the recorded URI is never tried."""
    pytest.importorskip("aipm_mlflow")
    from mlflow.tracking import MlflowClient

    from aipm_tracking.cli import cli

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rec = RunRecord(run_id="spoolrun1", name="moved", model=ModelInfo("m"))
    hdr = {"backend": {"scheme": "mlflow", "target": "moved-exp", "store": None,
                       "mlflow_uri": "http://127.0.0.1:9/"}, "record": rec.to_dict()}
    w = SpoolWriter(tmp_path / "sp", "spoolrun1", hdr)
    for b in batches(2):
        w.append_points(b)
    w.close()
    t = time.monotonic()
    out = CliRunner().invoke(cli, ["sync", "--spool-dir", str(tmp_path / "sp"),
                                   "--mlflow-uri", uri, "--format", "json"])
    assert out.exit_code == 0, out.output
    assert time.monotonic() - t < 60  # no retries against the dead server
    (res,) = json.loads(out.stdout)["results"]  # (MLflow logs its set-up on stderr)
    assert res["status"] == "synced" and res["points"] == 20 and res["run_status"] == "killed"
    client = MlflowClient(tracking_uri=uri)
    run_id = res["ref"].split(":", 1)[1]
    hist = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "loss"))
    assert hist == [(s, s * 0.25) for s in range(20)]
    assert client.get_run(run_id).info.status == "KILLED"


@pytest.mark.skipif(os.name != "posix", reason="spool locks are POSIX flock")
def test_sync_never_takes_a_spool_compacted_under_it(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A sync opens the spool; before it locks, the live Tracker compacts it (a new file
    replaces the path and the lock on the old one is released). The lock then won on the
    old file must be given back: the live run is neither replayed nor marked killed."""
    import aipm_tracking.spool as spool_mod

    w = SpoolWriter(tmp_path, "spoolrun1", header(tmp_path / "store"))
    w.append_points(batches(1)[0])
    w.state.acked = w.state.inflight = w.state.durable = w.offset  # may compact
    real = spool_mod.fcntl.flock
    compacted: list[bool] = []
    calls = [0]

    def flock(fd: int, op: int) -> None:
        calls[0] += 1
        if calls[0] == 1:  # the sync's flock: the Tracker compacts just before it
            compacted.append(w.compact(0))  # (its own flock of the new file is call 2)
        real(fd, op)

    monkeypatch.setattr(spool_mod.fcntl, "flock", flock)
    res = replay_spool(w.path)
    assert compacted == [True]
    assert res.status == "skipped" and "live Tracker" in res.reason
    assert w.path.exists() and not SpoolState.load(w.state_path).finished
    monkeypatch.undo()
    w.append_points(batches(2)[1])  # the writer goes on in its new file
    w.close()
    done = replay_spool(w.path)  # once the Tracker is gone, a sync delivers it
    assert done.status == "synced" and done.run_status == "killed"
    assert done.points == 10  # the batch written after the compaction


def test_a_spool_gone_before_sync_opens_it_is_skipped(tmp_path: Path) -> None:
    res = replay_spool(tmp_path / "vanished.spool")  # another sync delivered and deleted it
    assert res.status == "skipped" and res.reason.startswith("gone")
    store = tmp_path / "store"
    w = SpoolWriter(tmp_path, "spoolrun1", header(store))
    w.append_points(batches(1)[0])
    w.close()
    # two `aipm sync` at once: both exit 0, the points arrive once
    cmd = [sys.executable, "-m", "aipm_tracking", "--store", str(store), "sync",
           "--spool-dir", str(tmp_path)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    hist = LocalBackend(BackendOptions(store=str(store))).read_history("spoolrun1")
    assert len(hist) == 10
