"""What logging the loss every step costs a GPU training loop: aipm.Tracker vs the anchors.

Patterned on ``anchors/gpu_logging_anchor.py`` (same models, optimiser, bf16 autocast):
variants ``none`` (no read-back), ``item`` (``loss.item()`` each step, a host-device sync),
``tracker`` (``tr.log(step=i, loss=loss)`` each step into the local store; the Tracker keeps
the loss on the GPU and reads it back in batches through pinned memory and CUDA events),
``wandb`` (``wandb.log({"loss": loss.item()})`` each step, offline). Every variant runs in
each of ``ROUNDS`` rounds (in alternating order, so drift of the machine hits all of them alike; ``wandb``
runs last, beside its own ``none`` blocks, since its service process outlives the run); a round times
``REPS`` blocks of ``STEPS`` steps. One JSON line per (model, variant): the median step
time over all blocks and its ratio to ``none``. The tracker's points are read back from the
store afterwards and counted (every step must be there, finite).

    STEPS=400 ROUNDS=2 python benchmarks/gpu_callback.py
    AB=1 PAIRS=40 BLOCK_SMALL=200 BLOCK_MEDIUM=100 python benchmarks/gpu_callback.py

``AB=1`` runs paired blocks instead (see :func:`ab`): the ratio's median with a 95% bootstrap
interval, and the process CPU time that logging adds per step. ``benchmarks/gpu_device.sh``
runs the device check in one go (the CUDA test, then the A/B for both models).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import aipm_tracking as aipm  # noqa: E402
from aipm_tracking.backends.base import BackendOptions  # noqa: E402
from aipm_tracking.backends.local import LocalBackend  # noqa: E402

dev = "cuda" if torch.cuda.is_available() else "cpu"
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")
SIZES = {"small": (1024, 2, 256), "medium": (4096, 6, 1024)}
STEPS = int(os.environ.get("STEPS", "400"))
REPS = int(os.environ.get("REPS", "3"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
WANDB_ROUNDS = int(os.environ.get("WANDB_ROUNDS", "2"))
WARMUP = 30


def make(width: int, depth: int) -> torch.nn.Module:
    layers: list[torch.nn.Module] = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.GELU()]
    layers.append(torch.nn.Linear(width, 10))
    return torch.nn.Sequential(*layers).to(dev)


def sync() -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


def run(size: str, variant: str, wandb: object, tmp: str, checks: list[dict]) -> list[float]:
    width, depth, batch = SIZES[size]
    torch.manual_seed(0)
    model = make(width, depth)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, width, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    run_ = None
    tr = None
    if variant == "wandb":
        run_ = wandb.init(project="bench", dir=tempfile.mkdtemp(dir=tmp),  # type: ignore[attr-defined]
                          reinit="finish_previous")
    elif variant.startswith("tracker") or variant.startswith("tr_"):
        kw = {"tr_nobg": {"flush_every_s": 1e6, "flush_every_n": 10**9},
              "tr_noread": {"flush_every_s": 1e6, "flush_every_n": 10**9,
                            "readback_every": 10**9}}.get(variant, {})
        tr = aipm.Tracker(to="local", store=os.path.join(tmp, "store"), model=size,
                          spool_dir=os.path.join(tmp, "spool"), replay_on_start=False,
                          **{"flush_every_s": 1.0, **kw})
    buf: list = []
    pend: list = []
    ring = [torch.empty(300, dtype=torch.float64, pin_memory=(dev == "cuda")) for _ in range(8)]
    slot = [0]

    def step(i: int) -> None:
        with torch.autocast(dev, dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if variant == "item":
            loss.item()
        elif variant == "wandb":
            wandb.log({"loss": loss.item()}, step=i)  # type: ignore[attr-defined]
        elif variant == "tr_float":
            tr.log(step=i, loss=1.0)  # type: ignore[union-attr]
        elif tr is not None:
            tr.log(step=i, loss=loss)
        elif variant == "time_only":
            time.time()
        elif variant == "anchor_event":  # the anchor's deferred_event, 256 per read
            buf.append(loss.detach())
            if len(buf) == 256:
                host = ring[slot[0] % 8]
                slot[0] += 1
                host[:256].copy_(torch.stack(buf).double(), non_blocking=True)
                ev = torch.cuda.Event() if dev == "cuda" else None
                if ev:
                    ev.record()
                pend.append((ev, host))
                buf.clear()
            while pend and (pend[0][0] is None or pend[0][0].query()):
                pend.pop(0)[1].tolist()

    for i in range(WARMUP):
        step(i)
    sync()
    times = []
    for rep in range(REPS):
        t = time.perf_counter()
        for i in range(STEPS):
            step(WARMUP + rep * STEPS + i)
        sync()
        times.append((time.perf_counter() - t) / STEPS)
    if run_ is not None:
        run_.finish()
    if tr is not None:
        tr.finish()
        hist = LocalBackend(BackendOptions(store=os.path.join(tmp, "store"))).read_history(
            tr.ref or "")
        steps = [p.step for p in hist]
        checks.append({"check": "tracker_points", "model": size, "ref": tr.ref,
                       "points": len(hist), "expected": WARMUP + REPS * STEPS,
                       "steps_ok": steps == list(range(WARMUP + REPS * STEPS)),
                       "all_finite": all(math.isfinite(p.value) for p in hist)})
    return times


def log_call_cost(tmp: str, n: int = 20000) -> dict:
    """CPU cost of one ``tr.log(step=i, loss=t)`` with a device tensor (no training)."""
    t_dev = torch.ones((), device=dev)
    with aipm.Tracker(store=os.path.join(tmp, "store2"), spool_dir=os.path.join(tmp, "sp2"),
                      replay_on_start=False) as tr:
        spent = [0.0, 0]
        inner = tr._readback

        def timed_readback() -> None:
            t0 = time.perf_counter()
            inner()
            spent[0] += time.perf_counter() - t0
            spent[1] += 1

        tr._readback = timed_readback  # type: ignore[method-assign]
        for _ in range(2):  # first pass warms the pinned-buffer pool
            spent[:] = [0.0, 0]
            t = time.perf_counter()
            for i in range(n):
                tr.log(step=i, loss=t_dev)
            per_call = (time.perf_counter() - t) / n
    t = time.perf_counter()
    for _ in range(n):
        time.time()
    clock_us = (time.perf_counter() - t) / n * 1e6
    return {"check": "tracker_log_call_us", "tensor_device": dev, "time_time_us": round(clock_us, 3),
            "us_per_call": round(per_call * 1e6, 3), "readbacks": spent[1],
            "us_per_readback": round(spent[0] / max(spent[1], 1) * 1e6, 1)}


def median_ci(ratios: list[float], reps: int = 4000, seed: int = 0) -> list[float]:
    """95% percentile-bootstrap interval of the median of the pair ratios."""
    import numpy as np

    r = np.asarray(ratios, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(r), size=(reps, len(r)))
    meds = np.median(r[idx], axis=1)
    return [round(float(q), 4) for q in np.quantile(meds, [0.025, 0.975])]


def ab(size: str, variant: str, wandb: object, tmp: str, pairs: int, block: int) -> dict:
    """Paired A/B on one model: alternate blocks without logging and with ``variant``.

    Slow drift of the machine (which moved whole runs by +-15% on the small model) cancels
    in each pair's ratio; the median of the pair ratios is reported with a 95% bootstrap
    interval. Beside wall time, each block's process CPU time (every thread of this process:
    the training loop, the tracker's thread, CUDA's) is taken: ``cpu_us_added`` is the
    median extra CPU per step with logging. It is not shaken by other tenants of the machine
    (time descheduled is not counted); on a CPU-bound loop it is what logging adds to the
    step. wandb's own service process is not counted in it. The tracker's background thread
    runs throughout, so part of its flush work can land in a 'none' block.
    """
    width, depth, batch = SIZES[size]
    torch.manual_seed(0)
    model = make(width, depth)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, width, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    tr = run_ = None
    if variant == "wandb":
        run_ = wandb.init(project="bench", dir=tempfile.mkdtemp(dir=tmp),  # type: ignore[attr-defined]
                          reinit="finish_previous")
    elif variant == "tracker":
        tr = aipm.Tracker(to="local", store=os.path.join(tmp, "store"), model=size,
                          spool_dir=os.path.join(tmp, "spool"), replay_on_start=False)
    i = 0

    def steps(n: int, log: bool) -> tuple[float, float]:
        nonlocal i
        sync()
        t, c = time.perf_counter(), time.process_time()
        for _ in range(n):
            with torch.autocast(dev, dtype=torch.bfloat16):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if log:
                if variant == "item":
                    loss.item()
                elif variant == "wandb":
                    wandb.log({"loss": loss.item()}, step=i)  # type: ignore[attr-defined]
                elif tr is not None:
                    tr.log(step=i, loss=loss)
            i += 1
        sync()
        return (time.perf_counter() - t) / n, (time.process_time() - c) / n

    steps(WARMUP, True)
    ratios, base_ms, var_ms, cpu_add = [], [], [], []
    for p in range(pairs):
        if p % 2 == 0:
            b, v = steps(block, False), steps(block, True)
        else:
            v, b = steps(block, True), steps(block, False)
        ratios.append(v[0] / b[0])
        base_ms.append(b[0] * 1e3)
        var_ms.append(v[0] * 1e3)
        cpu_add.append((v[1] - b[1]) * 1e6)
    if run_ is not None:
        run_.finish()
    if tr is not None:
        tr.finish()
        hist = LocalBackend(BackendOptions(store=os.path.join(tmp, "store"))).read_history(
            tr.ref or "")
        want = WARMUP + pairs * block  # the steps logged: warm-up and the logging blocks
        print(json.dumps({"check": "tracker_points", "model": size, "points": len(hist),
                          "expected": want, "ok": len(hist) == want
                          and all(math.isfinite(p.value) for p in hist)}), flush=True)
    q = statistics.quantiles(ratios, n=4)
    none_ms = statistics.median(base_ms)
    return {"mode": "ab", "model": size, "variant": variant, "pairs": pairs, "block": block,
            "ratio_median": round(statistics.median(ratios), 4),
            "ratio_ci95": median_ci(ratios),
            "ratio_iqr": [round(q[0], 4), round(q[2], 4)],
            "none_ms": round(none_ms, 4),
            "variant_ms": round(statistics.median(var_ms), 4),
            "cpu_us_added": round(statistics.median(cpu_add), 2),
            "cpu_added_of_step": round(statistics.median(cpu_add) / (none_ms * 1e3), 4)}


def main() -> None:
    wandb = None
    try:
        import wandb as _w

        wandb = _w
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"wandb_import_error": repr(e)}), flush=True)
    print(json.dumps({"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
                      "torch": torch.__version__, "wandb": getattr(wandb, "__version__", None),
                      "steps": STEPS, "reps": REPS, "rounds": ROUNDS}), flush=True)
    variants = ["none", "item", "tracker"]
    if os.environ.get("AB"):
        tmp = tempfile.mkdtemp(prefix="aipm-gpu-ab-")
        pairs = int(os.environ.get("PAIRS", "40"))
        for size in os.environ.get("ONLY", ",".join(SIZES)).split(","):
            block = int(os.environ.get("BLOCK_" + size.upper(), "200"))
            for v in os.environ.get("AB_VARIANTS", "tracker,item,wandb").split(","):
                if v == "wandb" and not wandb:
                    continue
                print(json.dumps(ab(size, v, wandb, tmp, pairs, block)), flush=True)
        shutil.rmtree(tmp, ignore_errors=True)
        return
    if os.environ.get("DIAG"):
        variants = os.environ["DIAG"].split(",")
        wandb = None
    tmp = tempfile.mkdtemp(prefix="aipm-gpu-bench-")
    checks: list[dict] = []

    def timed(size: str, v: str, into: dict[str, list[float]]) -> None:
        try:
            into.setdefault(v, []).extend(run(size, v, wandb, tmp, checks))
        except Exception as e:  # noqa: BLE001 - report it, keep the others
            print(json.dumps({"model": size, "variant": v, "error": repr(e)}), flush=True)

    try:
        for size in os.environ.get("ONLY", ",".join(SIZES)).split(","):
            times: dict[str, list[float]] = {}
            for r in range(ROUNDS):  # alternate the order so drift hits every variant alike
                for v in (variants if r % 2 == 0 else variants[::-1]):
                    timed(size, v, times)
            # wandb last: its service process lives on after wandb.finish(); its own 'none'
            # blocks are measured beside it
            wb: dict[str, list[float]] = {}
            if wandb is not None:
                for _r in range(WANDB_ROUNDS):
                    timed(size, "none", wb)
                    timed(size, "wandb", wb)
            base = statistics.median(times["none"])
            rows = [(v, times.get(v, []), base) for v in variants]
            if wb.get("wandb"):
                rows.append(("wandb", wb["wandb"], statistics.median(wb["none"])))
            for v, ts, b in rows:
                if not ts:
                    continue
                s = statistics.median(ts)
                print(json.dumps({"model": size, "variant": v, "step_ms": round(s * 1e3, 4),
                                  "ratio_to_none": round(s / b, 3),
                                  "none_ms": round(b * 1e3, 4),
                                  "blocks_ms": [round(t * 1e3, 4) for t in ts]}), flush=True)
        if os.environ.get("PROFILE"):
            import cProfile
            import io
            import pstats

            pr = cProfile.Profile()
            pr.enable()
            run("small", "tracker", wandb, tmp, checks)
            pr.disable()
            out = io.StringIO()
            pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(25)
            print(out.getvalue()[-6000:], flush=True)
        checks.append(log_call_cost(tmp))
        for c in checks:
            print(json.dumps(c), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
