"""aipm.Tracker: values of every kind, background delivery, outages, guardrails, ranks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest

import aipm_tracking as aipm
from aipm_tracking import hookimpl, plugins
from aipm_tracking.backends.base import BackendOptions
from aipm_tracking.backends.local import LocalBackend
from aipm_tracking.errors import AipmWarning, BackendError, UsageError


def local(store: Path) -> LocalBackend:
    return LocalBackend(BackendOptions(store=str(store)))


def series(store: Path, ref: str) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for p in local(store).read_history(ref):
        out.setdefault(p.key, []).append((p.step, p.value))
    return out


def wait_for(cond: Any, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


class Flaky(LocalBackend):
    """The real local store behind a switch: ``down`` makes every call fail (an outage)."""

    down: ClassVar[bool] = False
    start_down: ClassVar[bool] = False
    alerts: ClassVar[list[tuple[str, str, str]]] = []
    calls: ClassVar[int] = 0

    def start_run(self, record: Any, target: str | None = None) -> str:
        if Flaky.start_down:
            raise BackendError("server unreachable (test)")
        return super().start_run(record, target)

    def log_points(self, ref: str, points: Any) -> None:
        Flaky.calls += 1
        if Flaky.down:
            raise BackendError("server unreachable (test)")
        super().log_points(ref, points)

    def alert(self, ref: str, title: str, text: str) -> None:
        Flaky.alerts.append((ref, title, text))


class FlakyPlugin:
    @hookimpl
    def aipm_register_backends(self, register: Any) -> None:
        register("flaky", Flaky)


@pytest.fixture
def flaky() -> type[Flaky]:
    Flaky.down = Flaky.start_down = False
    Flaky.alerts = []
    Flaky.calls = 0
    plugins.get_plugin_manager().register(FlakyPlugin(), name="flaky-test")
    return Flaky


class FakeJaxArray:
    """Stands in for a jax.Array (jax is not installed here): only its module name and
    ``__float__`` matter to the duck-typed check, which never imports jax."""

    __module__ = "jaxlib._jax"

    def __init__(self, v: float) -> None:
        self.v = v

    def __float__(self) -> float:
        return self.v


def test_every_value_kind_round_trips(store: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    arr = np.array(2.5)
    w = torch.nn.Parameter(torch.tensor(3.0))
    with aipm.Tracker(to="local", model="m", model_version="1",
                      spool_dir=tmp_path / "sp") as tr:
        assert tr.ref and tr.ref.startswith("local:")
        tr.log(step=0, a=1.5, b=7, c=True, d=np.float32(0.25), e=np.int64(9), f=arr,
               g=w * 2, h=torch.tensor([4.0]), j=FakeJaxArray(6.5))
        arr[...] = 99.0  # a mutable 0-d array is copied at log time
        tr.log(loss=0.5)  # step defaults to the next one
        tr.log_dict({"val/acc": 0.75}, step=10)
        tr.log(loss=0.25)
    got = series(store, tr.ref)
    assert got == {"a": [(0, 1.5)], "b": [(0, 7.0)], "c": [(0, 1.0)], "d": [(0, 0.25)],
                   "e": [(0, 9.0)], "f": [(0, 2.5)], "g": [(0, 6.0)], "h": [(0, 4.0)],
                   "j": [(0, 6.5)], "loss": [(1, 0.5), (11, 0.25)], "val/acc": [(10, 0.75)]}
    rec = local(store).read_run(tr.ref)
    assert rec.status == "finished" and rec.model.version == "1"
    assert rec.metric("loss") == 0.25 and rec.metric("g") == 6.0  # last values as summary
    assert not list((tmp_path / "sp").iterdir())  # delivered: spool removed


def test_bad_values_are_usage_errors(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    with aipm.Tracker(spool_dir=tmp_path / "sp") as tr:
        with pytest.raises(UsageError, match="'name' is a str"):
            tr.log(step=0, name="x")
        with pytest.raises(UsageError, match=r"'v' is a tensor of shape \(3,\)"):
            tr.log(step=0, v=torch.ones(3))
        with pytest.raises(UsageError, match="'a' is an array"):
            tr.log(step=0, a=np.ones(2))


def test_background_thread_delivers_while_training(store: Path, tmp_path: Path) -> None:
    with aipm.Tracker(flush_every_s=0.05, spool_dir=tmp_path / "sp") as tr:
        for i in range(100):
            tr.log(step=i, loss=1.0 / (i + 1))
        assert wait_for(lambda: len(local(store).read_history(tr.ref)) == 100)
        assert local(store).read_run(tr.ref).status == "running"
        # the spool holds the points and records them as acknowledged
        assert wait_for(lambda: tr._spool.state.acked == tr._spool.offset)
    assert local(store).read_run(tr.ref).status == "finished"


def test_flush_every_n_wakes_the_thread(store: Path, tmp_path: Path) -> None:
    with aipm.Tracker(flush_every_s=3600, flush_every_n=10, spool_dir=tmp_path / "sp") as tr:
        for i in range(10):
            tr.log(step=i, a=i, b=-i)
        assert wait_for(lambda: len(local(store).read_history(tr.ref)) == 20)


def test_outage_is_retried_and_backlog_replayed_once(store: Path, tmp_path: Path,
                                                     flaky: type[Flaky]) -> None:
    with aipm.Tracker(to="flaky", flush_every_s=3600, spool_dir=tmp_path / "sp") as tr:
        tr.log(step=0, loss=1.0)
        tr.flush()
        flaky.down = True
        with pytest.warns(AipmWarning, match="failed sending points.*retried"):
            for i in range(1, 50):
                tr.log(step=i, loss=float(i))  # training goes on
            tr.flush()
        tr.log(step=50, loss=50.0)
        tr.flush()  # still down
        assert len(local(store).read_history(tr.ref)) == 1
        flaky.down = False
        with pytest.warns(AipmWarning, match="is back"):
            tr.flush()
        steps = [p.step for p in local(store).read_history(tr.ref)]
        assert steps == list(range(51))
        tr.log(step=51, loss=51.0)
    assert [s for s, _v in series(store, tr.ref)["loss"]] == list(range(52))


def test_backoff_spaces_retries(tmp_path: Path, flaky: type[Flaky]) -> None:
    flaky.down = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr = aipm.Tracker(to="flaky", flush_every_s=0.02, spool_dir=tmp_path / "sp",
                          finish_timeout_s=0.1)
        for i in range(5):
            tr.log(step=i, loss=float(i))
        assert wait_for(lambda: flaky.calls >= 1)
        time.sleep(1.0)  # ~50 flush intervals; backoff 0.5 s, 1 s ... allows about 2 more
        calls = flaky.calls
        tr.finish()
    assert 1 <= calls <= 4
    assert tr.spool_path is not None and tr.spool_path.exists()  # left for 'aipm sync'


def test_backend_down_at_start_gets_ref_later(store: Path, tmp_path: Path,
                                              flaky: type[Flaky]) -> None:
    flaky.start_down = True
    with pytest.warns(AipmWarning, match="failed creating the run"):
        tr = aipm.Tracker(to="flaky", flush_every_s=3600, spool_dir=tmp_path / "sp")
    assert tr.ref is None and tr.run_id
    tr.log(step=0, loss=1.0)
    tr.flush()
    assert tr.ref is None
    flaky.start_down = False
    tr.log(step=1, loss=2.0)
    tr.finish()
    assert tr.ref is not None
    assert series(store, tr.ref) == {"loss": [(0, 1.0), (1, 2.0)]}


def test_failed_status_when_the_block_raises(store: Path, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with aipm.Tracker(spool_dir=tmp_path / "sp") as tr:
            tr.log(step=0, loss=1.0)
            raise RuntimeError("diverged")
    rec = local(store).read_run(tr.ref)
    assert rec.status == "failed" and rec.finished_at


def test_rows_keep_order_behind_an_unread_device_value(store: Path, tmp_path: Path) -> None:
    """A row whose device value is not read yet holds back later rows (monotonic steps)."""
    from aipm_tracking import tracker as tmod

    with aipm.Tracker(flush_every_s=3600, spool_dir=tmp_path / "sp") as tr:
        tr.log(step=0, loss=1.0)
        slot = [tmod._UNSET]
        tr._rows.extend((1, time.time(), {"loss": slot, "lr": 0.1}))
        tr.log(step=2, loss=3.0)
        tr._spool_once(wait=False)  # what the spooler thread does each interval
        with tr._io_lock:
            tr._send_pending(force=False)  # and what the sender does then
        assert [p.step for p in local(store).read_history(tr.ref)] == [0]
        slot[0] = 2.0  # what a completed CUDA event's read-back does
        tr._spool_once(wait=False)
        with tr._io_lock:
            tr._send_pending(force=False)
        assert series(store, tr.ref) == {"loss": [(0, 1.0), (1, 2.0), (2, 3.0)],
                                         "lr": [(1, 0.1)]}
        lost = [tmod._UNSET]  # a value whose read-back never comes: finish drops it alone
        tr._rows.extend((3, time.time(), {"loss": lost, "lr": 0.2}))
    assert series(store, tr.ref)["lr"] == [(1, 0.1), (3, 0.2)]


def eval_table(n: int, acc: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, n)
    wrong = rng.random(n) > acc
    pred = np.where(wrong, (label + 1) % 3, label)
    return pd.DataFrame({"example_id": np.arange(n), "label": label, "prediction": pred,
                         "confidence": rng.uniform(0.3, 1.0, n)})


def test_log_eval_warns_on_breach_and_alerts(store: Path, tmp_path: Path,
                                             flaky: type[Flaky]) -> None:
    from sklearn.metrics import accuracy_score

    g = {"version": 1, "name": "bot", "fallback_threshold": 0.5,
         "metrics": {"accuracy": {"min": 0.8}, "ece": {"max": 0.9}}}
    good, bad = eval_table(400, 0.95, 1), eval_table(400, 0.6, 2)
    with aipm.Tracker(to="flaky", guardrails=g, flush_every_s=3600,
                      spool_dir=tmp_path / "sp") as tr:
        with warnings.catch_warnings():
            warnings.simplefilter("error", AipmWarning)
            res = tr.log_eval(good, step=100)
        assert res is not None
        assert res.metrics["accuracy"] == pytest.approx(
            accuracy_score(good["label"], good["prediction"]))
        with pytest.warns(AipmWarning, match=r"accuracy = 0\.\d+ at step 200 breaches the "
                                             r"guardrail 'accuracy: min 0\.8'"):
            tr.log_eval(bad, step=200)
        with warnings.catch_warnings():  # still breached: no second warning
            warnings.simplefilter("error", AipmWarning)
            tr.log_eval(bad, step=300)
        tr.flush()
        assert len(flaky.alerts) == 1 and "accuracy" in flaky.alerts[0][1]
        assert flaky.alerts[0][0] == tr.ref  # the run the breach happened in
        assert "breaches the guardrail" in flaky.alerts[0][2]
    rec = local(store).read_run(tr.ref)
    assert rec.metric("accuracy") == pytest.approx(
        accuracy_score(bad["label"], bad["prediction"]))
    assert rec.guardrails_hash and rec.examples is not None and len(rec.examples) == 400
    assert [b["step"] for b in rec.details["guardrail_breaches"]] == [200, 300]
    acc_series = series(store, tr.ref)["accuracy"]
    assert [s for s, _v in acc_series] == [100, 200, 300]


def test_rank_gating(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    with aipm.Tracker(spool_dir=tmp_path / "sp") as tr:
        assert tr.rank == 1 and not tr.is_writer and tr.ref is None
        tr.log(step=0, loss=1.0)
        assert tr.log_eval(eval_table(10, 0.9, 0)) is None
    assert not store.exists() and not (tmp_path / "sp").exists()
    with aipm.Tracker(run_name="r", spool_dir=tmp_path / "sp", all_ranks=True) as tr1:
        tr1.log(step=0, loss=1.0)
    rec = local(store).read_run(tr1.ref)
    assert rec.name == "r-rank1" and rec.tags["aipm.rank"] == "1"
    with aipm.Tracker(spool_dir=tmp_path / "sp", rank=0) as tr0:  # explicit rank wins
        assert tr0.is_writer and tr0.ref


@pytest.mark.parametrize("env", [{"LOCAL_RANK": "1"}, {"LOCAL_RANK": "0", "NODE_RANK": "1"},
                                 {"SLURM_PROCID": "3"}])
def test_rank_from_launcher_variables(store: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      env: dict[str, str]) -> None:
    """Lightning's DDP launcher starts rank 1 with LOCAL_RANK=1 and no RANK; a Tracker the
    script builds before ``torch.distributed`` is initialised must not write there."""
    for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with aipm.Tracker(spool_dir=tmp_path / "sp") as tr:
        assert tr.rank != 0 and not tr.is_writer and tr.ref is None
        tr.log(step=0, loss=1.0)
    assert not store.exists()
    monkeypatch.setenv("RANK", "0")  # RANK, when set, is the global rank: it wins
    with aipm.Tracker(spool_dir=tmp_path / "sp") as tr0:
        assert tr0.rank == 0 and tr0.is_writer and tr0.ref


def test_old_spool_is_replayed_on_next_start(store: Path, tmp_path: Path,
                                             flaky: type[Flaky]) -> None:
    flaky.down = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with aipm.Tracker(to="flaky", spool_dir=tmp_path / "sp", finish_timeout_s=0.1) as old:
            old.log(step=0, loss=1.0)
    assert old.spool_path is not None and old.spool_path.exists()
    flaky.down = False
    with aipm.Tracker(to="flaky", spool_dir=tmp_path / "sp") as new:
        new.log(step=0, loss=2.0)
        assert wait_for(lambda: not old.spool_path.exists())
    assert series(store, old.ref) == {"loss": [(0, 1.0)]}
    assert local(store).read_run(old.ref).status == "finished"


DIST_CHILD = textwrap.dedent('''
    import json, os, sys
    import numpy as np
    import torch.distributed as dist
    import aipm_tracking as aipm
    from aipm_tracking.accumulate import EvalAccumulator

    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:" + sys.argv[1],
                            rank=int(sys.argv[2]), world_size=2)
    rank = dist.get_rank()
    data = np.load(sys.argv[3])
    half = slice(0, 300) if rank == 0 else slice(300, None)
    acc = EvalAccumulator(0.5)
    acc.update({"correct": data["label"][half] == data["pred"][half],
                "label": data["label"][half].astype(str),
                "prediction": data["pred"][half].astype(str),
                "confidence": data["conf"][half]})
    with aipm.Tracker(model="ddp", spool_dir=sys.argv[4]) as tr:
        tr.log(step=0, loss=float(rank))
        res = tr.merge_eval(acc, step=1)
    print(json.dumps({"rank": rank, "ref": tr.ref,
                      "acc": None if res is None else res.metrics["accuracy"],
                      "n": None if res is None else res.n_examples}), flush=True)
    dist.destroy_process_group()
''')


@pytest.mark.slow
def test_merge_eval_over_two_gloo_ranks(store: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch.distributed")
    from sklearn.metrics import accuracy_score

    rng = np.random.default_rng(5)
    label = rng.integers(0, 4, 700)
    pred = np.where(rng.random(700) < 0.8, label, (label + 1) % 4)
    np.savez(tmp_path / "data.npz", label=label, pred=pred, conf=rng.uniform(0, 1, 700))
    script = tmp_path / "child.py"
    script.write_text(DIST_CHILD)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    procs = [subprocess.Popen([sys.executable, str(script), port, str(r),
                               str(tmp_path / "data.npz"), str(tmp_path / "sp")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    r0, r1 = (json.loads(o[0].strip().splitlines()[-1]) for o in outs)
    assert r1 == {"rank": 1, "ref": None, "acc": None, "n": None}
    assert r0["n"] == 700
    assert r0["acc"] == pytest.approx(accuracy_score(label, pred))
    runs = list(local(store).list_runs())
    assert [r.ref for r in runs] == [r0["ref"]]  # rank 1 wrote nothing
    rec = local(store).read_run(r0["ref"])
    assert rec.metric("accuracy") == pytest.approx(accuracy_score(label, pred))
    assert rec.metric("n_examples") == 700
    assert series(store, r0["ref"])["loss"] == [(0, 0.0)]


def test_cuda_values_without_per_step_sync(store: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine (runs on the GPU machine)")
    model = torch.nn.Linear(64, 1).cuda()
    x = torch.randn(32, 64, device="cuda")
    expected: list[torch.Tensor] = []
    with aipm.Tracker(flush_every_s=3600, readback_every=16, spool_dir=tmp_path / "sp") as tr:
        torch.cuda.set_sync_debug_mode("error")  # any synchronising call inside raises
        try:
            for i in range(100):
                loss = model(x).pow(2).mean()
                loss.backward()
                expected.append(loss.detach().clone())
                tr.log(step=i, loss=loss, half=loss.to(torch.bfloat16), lr=0.01 * i)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    got = series(store, tr.ref)
    want = torch.stack(expected).double().tolist()
    assert [s for s, _ in got["loss"]] == list(range(100))
    assert [v for _, v in got["loss"]] == want
    halfs = torch.stack(expected).to(torch.bfloat16).double().tolist()
    assert [v for _, v in got["half"]] == halfs
    assert got["lr"][-1] == (99, 0.99)


def test_log_never_touches_io(tmp_path: Path) -> None:
    """The hot path must not write: with the thread's flush disabled nothing reaches disk."""
    with aipm.Tracker(flush_every_s=3600, flush_every_n=10**9, spool_dir=tmp_path / "sp") as tr:
        assert tr.spool_path is not None
        size = tr.spool_path.stat().st_size
        for i in range(1000):
            tr.log(step=i, loss=0.5, lr=0.1, grad_norm=1.0)
        assert tr.spool_path.stat().st_size == size
        assert len(tr._rows) == 3 * 1000  # step, time, values per row


def test_log_from_several_threads_keeps_each_row_whole(store: Path, tmp_path: Path) -> None:
    """Rows logged by concurrent threads interleave but never mix (one atomic extend each)."""
    import threading

    def worker(key: str, sign: float) -> None:
        for i in range(20_000):
            tr.log(step=i, **{key: sign * i})

    with aipm.Tracker(flush_every_s=0.01, spool_dir=tmp_path / "sp") as tr:
        threads = [threading.Thread(target=worker, args=(k, s))
                   for k, s in (("up", 1.0), ("down", -1.0), ("twice", 2.0))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    got = series(store, tr.ref)
    for key, sign in (("up", 1.0), ("down", -1.0), ("twice", 2.0)):
        assert sorted(got[key]) == [(i, sign * i) for i in range(20_000)], key


@pytest.mark.slow
def test_tracker_streams_to_real_mlflow_store(tmp_path: Path) -> None:
    pytest.importorskip("aipm_mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with aipm.Tracker(to="mlflow:tracker-test", mlflow_uri=uri, flush_every_s=0.05,
                      spool_dir=tmp_path / "sp", model="m") as tr:
        assert tr.ref and tr.ref.startswith("mlflow:")
        for i in range(30):
            tr.log(step=i, loss=1.0 / (i + 1), lr=0.1)
    run_id = tr.ref.split(":", 1)[1]
    client = MlflowClient(tracking_uri=uri)
    hist = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "loss"))
    assert hist == [(i, 1.0 / (i + 1)) for i in range(30)]
    assert client.get_run(run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_tracker_streams_to_wandb_offline(tmp_path: Path) -> None:
    pytest.importorskip("aipm_wandb")
    from aipm_tracking.plugins import get_backend

    with aipm.Tracker(to="wandb:aipm-test/tracker", flush_every_s=0.05,
                      spool_dir=tmp_path / "sp", model="m") as tr:
        assert tr.ref and tr.ref.startswith("wandb:")
        for i in range(25):
            tr.log(step=i, loss=float(i) * 0.5)
    (run_dir,) = (tmp_path / "wandb").rglob("offline-run-*")
    pts = get_backend("wandb").read_history(str(run_dir), ["loss"])
    assert sorted((p.step, p.value) for p in pts) == [(i, i * 0.5) for i in range(25)]


def test_long_healthy_run_keeps_a_small_spool(store: Path, tmp_path: Path) -> None:
    with aipm.Tracker(flush_every_s=3600, spool_dir=tmp_path / "sp", spool_max_bytes=2000,
                      keep_spool=True) as tr:
        assert tr.spool_path is not None
        sizes = []
        for i in range(20):
            for j in range(50):
                tr.log(step=i * 50 + j, loss=float(j))
            tr.flush()
            sizes.append(tr.spool_path.stat().st_size)
        assert max(sizes) < 2000 + 5000  # compacted after each delivered flush
    assert [p.step for p in local(store).read_history(tr.ref)] == list(range(1000))


def test_spool_never_holds_credentials(tmp_path: Path) -> None:
    with aipm.Tracker(spool_dir=tmp_path / "sp", keep_spool=True,
                      mlflow_uri="http://alice:s3cr3t@mlflow.example:5000",
                      config={"api_key": "k-123", "lr": 0.1}) as tr:
        tr.log(step=0, loss=1.0)
    assert tr.spool_path is not None
    text = tr.spool_path.read_text()
    assert "s3cr3t" not in text and "k-123" not in text
    head = json.loads(text.splitlines()[0][9:])
    assert head["backend"]["mlflow_uri"] is None
    assert head["record"]["config"] == {"api_key": "***", "lr": 0.1}


def test_bad_steps_and_keys_are_refused_at_the_call_and_never_block_the_rest(
        store: Path, tmp_path: Path) -> None:
    """A point no backend can take (empty or over-long key, step outside int64, a
    fractional step) is refused where it is logged; before, one such point held back the
    whole run's delivery for good."""
    with aipm.Tracker(flush_every_s=0.05, spool_dir=tmp_path / "sp") as tr:
        tr.log(step=np.int64(0), loss=1.0)  # numpy integers are steps
        with pytest.raises(UsageError, match="64-bit"):
            tr.log(step=2**63, loss=1.0)
        with pytest.raises(UsageError, match="integer"):
            tr.log(step=1.5, loss=1.0)
        with pytest.raises(UsageError, match="1 to 250 characters"):
            tr.log_dict({"": 5.0}, step=1)
        with pytest.raises(UsageError, match="1 to 250 characters"):
            tr.log_dict({"k" * 251: 5.0}, step=1)
        with pytest.warns(AipmWarning, match="dropped key ''"):
            tr.log(step=1, **{"": 2.0, "acc": 0.5})  # ** skips log_dict: dropped alone
            tr.flush()
        tr.log(step=2, loss=3.0)
        tr.log(step=2**63 - 1, loss=4.0)  # the last 64-bit step is fine ...
        with pytest.raises(UsageError, match="64-bit"):
            tr.log(loss=5.0)  # ... and the default step after it is refused
        with pytest.raises(UsageError, match="1 to 250 characters"):
            tr.log_eval(eval_table(50, 0.9, 1), prefix="p" * 250)  # prefixed keys too long
        assert tr.last_eval is None  # a refused eval is not stored at finish
    got = series(store, tr.ref)
    assert got == {"loss": [(0, 1.0), (2, 3.0), (2**63 - 1, 4.0)], "acc": [(1, 0.5)]}
    assert local(store).read_run(tr.ref).status == "finished"


FORK_SCRIPT = textwrap.dedent('''
    import os, sys
    import aipm_tracking as aipm
    from aipm_tracking.backends.base import BackendOptions
    from aipm_tracking.backends.local import LocalBackend

    tr = aipm.Tracker(flush_every_s=0.05, spool_dir=sys.argv[1])
    tr.log(step=0, loss=1.0)
    tr.flush()
    pid = os.fork()
    if pid == 0:  # the child: logs, then a normal interpreter exit (atexit handlers run)
        tr.log(step=1, loss=99.0)
        sys.exit(0)
    _, code = os.waitpid(pid, 0)
    run = LocalBackend(BackendOptions()).read_run(tr.ref)
    print("CHILD", os.waitstatus_to_exitcode(code), run.status, tr.spool_path.exists())
    tr.log(step=1, loss=2.0)
    tr.finish()
    print("REF", tr.ref)
''')


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_neither_logs_nor_finishes_the_parents_run(store: Path,
                                                                   tmp_path: Path) -> None:
    """A DataLoader worker is a fork: its exit must not finish the parent's run or delete
    its spool, and what it logs goes nowhere. Run in a fresh interpreter (a fork inside
    pytest would run pytest on in the child)."""
    script = tmp_path / "fork.py"
    script.write_text(FORK_SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "sp")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert lines["CHILD"] == "0 running True"  # the parent's run untouched by the child
    ref = lines["REF"]
    assert series(store, ref) == {"loss": [(0, 1.0), (1, 2.0)]}
    assert local(store).read_run(ref).status == "finished"


def test_a_batch_from_before_a_compaction_is_never_sent_again(
        store: Path, tmp_path: Path, flaky: type[Flaky]) -> None:
    """Offsets restart when the spool compacts. A batch still queued from before (here:
    delivered from the spool backlog, then compacted) must not be sent again against the
    new file: that would duplicate its points and push the acknowledged offset past the end
    of the new file."""
    with aipm.Tracker(to="flaky", flush_every_s=3600, flush_every_n=10**9, spool_max_bytes=1,
                      spool_dir=tmp_path / "sp", replay_on_start=False) as tr:
        for i in range(10):
            tr.log(step=i, loss=i * 0.5)
        tr._spool_once(wait=False)  # batch A queued for the sender
        with tr._io_lock:
            tr._deliver([], force=True)  # the backlog path delivers A and compacts
        assert tr._gen == 1 and flaky.calls == 1
        with tr._io_lock:
            tr._send_pending(force=True)  # A, still queued: skipped
        assert flaky.calls == 1
        assert tr._spool.state.acked == tr._spool.offset  # within the new file
        for i in range(10, 20):
            tr.log(step=i, loss=i * 0.5)
    assert flaky.calls == 2  # batch B, once
    assert series(store, tr.ref) == {"loss": [(i, i * 0.5) for i in range(20)]}


def test_adapters_leave_out_keys_the_tracker_refuses() -> None:
    """A framework's over-long metric name must not raise inside its training loop."""
    from aipm_tracking.integrations._owner import numeric

    with pytest.warns(AipmWarning, match="left out"):
        got = numeric({"": 1.0, "k" * 251: 2.0, "loss": 3.0, "k" * 250: 4.0})
    assert got == {"loss": 3.0, "k" * 250: 4.0}


def test_a_diverged_loss_stays_infinite_in_the_summary(store: Path, tmp_path: Path) -> None:
    """Strict JSON holds inf as null: the summary used to read back NaN, and a filter such
    as ``metrics.loss > 100`` missed the diverged run."""
    import math

    from click.testing import CliRunner

    from aipm_tracking.cli import cli

    with aipm.Tracker(run_name="diverged", spool_dir=tmp_path / "sp") as tr:
        tr.log(step=0, loss=2.0, margin=1.0)
        tr.log(step=1, loss=math.inf, margin=-math.inf)
    with aipm.Tracker(run_name="fine", spool_dir=tmp_path / "sp") as ok:
        ok.log(step=0, loss=0.5)
    rec = local(store).read_run(tr.ref)
    assert rec.metric("loss") == math.inf and rec.metric("margin") == -math.inf
    out = CliRunner().invoke(cli, ["--store", str(store), "runs", "list", "--filter",
                                   "metrics.loss > 100", "--format", "json"])
    assert out.exit_code == 0, out.output
    assert [r["name"] for r in json.loads(out.output)] == ["diverged"]
    shown = CliRunner().invoke(cli, ["--store", str(store), "runs", "show", tr.ref])
    assert shown.exit_code == 0 and "inf" in shown.output


def test_logged_points_of_a_guardrailed_metric_are_checked(store: Path, tmp_path: Path,
                                                           flaky: type[Flaky]) -> None:
    """A framework's own eval metrics (``log``/``log_dict``, as the adapters hand them on)
    are checked against the guardrails too: under the metric's name, or a name the
    guardrails' metric_map maps to it. They used to be stored without a word."""
    g = {"version": 1, "name": "bot", "metric_map": {"eval_accuracy": "accuracy"},
         "metrics": {"accuracy": {"min": 0.8}, "latency_ms_p95": {"max": 900}}}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with aipm.Tracker(to="flaky", guardrails=g, flush_every_s=0.05,
                          spool_dir=tmp_path / "sp") as tr:
            tr.log(step=10, eval_accuracy=0.91, loss=0.3)  # fine
            tr.log(step=20, eval_accuracy=0.62)  # breach
            tr.log(step=30, eval_accuracy=0.60)  # still breached: no second warning
            tr.log(step=40, latency_ms_p95=1200.0)
            tr.flush()
            time.sleep(0.3)
            tr.log_eval(eval_table(400, 0.6, 2), step=50)  # checked once, by log_eval
    texts = [str(w.message) for w in seen if issubclass(w.category, AipmWarning)]
    acc = [t for t in texts if t.startswith("accuracy = ")]
    assert len(acc) == 1 and "accuracy = 0.62 at step 20 breaches" in acc[0], texts
    assert any(t.startswith("latency_ms_p95 = 1200 at step 40 breaches") for t in texts)
    got = [(b["metric"], b["step"]) for b in tr.breaches]
    assert got == [("accuracy", 20), ("accuracy", 30), ("latency_ms_p95", 40),
                   ("accuracy", 50)]
    assert [a[1] for a in flaky.alerts] == ["aipm guardrail breached: accuracy",
                                            "aipm guardrail breached: latency_ms_p95"]


def test_log_eval_records_the_eval_sets_size_and_fingerprint(store: Path,
                                                             tmp_path: Path) -> None:
    """As ``aipm log`` does: a run's dataset says how many rows its eval had and which."""
    table = eval_table(300, 0.9, 4)
    with aipm.Tracker(run_name="ds", dataset="support-eval@v3",
                      spool_dir=tmp_path / "sp") as tr:
        tr.log(step=0, loss=1.0)
        tr.log_eval(table, step=1)
    logged = local(store).read_run(aipm.log(table, model="m", store=str(store),
                                            dataset="support-eval@v3"))
    rec = local(store).read_run(tr.ref)
    assert (rec.dataset.name, rec.dataset.version, rec.dataset.size) == (
        "support-eval", "v3", 300)
    assert rec.dataset.digest and rec.dataset.digest == logged.dataset.digest
