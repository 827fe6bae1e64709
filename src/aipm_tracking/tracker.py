"""The training-loop callback core: ``aipm.Tracker`` (DESIGN §7b).

``tracker.log(step=i, loss=loss)`` extends a list by (step, time, values) and returns
(well under a microsecond): no lock, no I/O, no dataclass, and never a device
synchronisation. Two daemon threads do the rest. The spooler turns the buffered rows into
points every ``flush_every_s`` seconds (or once ``flush_every_n`` calls are buffered) and
appends them to the run's spool (:mod:`aipm_tracking.spool`, fsync'd once per flush
interval), whatever the backend is doing; the sender delivers each spooled batch with one
``backend.log_points`` call. So a backend call that hangs (a locked database, a server that
does not answer) delays delivery but not spooling: a SIGKILL still loses at most one flush
interval, as long as the spooler keeps up with the loop: on the 2-core development box it
kept the bound at 170k points/s (0.14 s lost with a 0.5 s interval); a bare loop of ``log``
calls at 490k points/s outruns it. A backlog is spooled as records of at most 50,000 points
(``spool.RECORD_MAX_POINTS``), one after the other, so the spool keeps growing while it is
drained: a kill loses what was not drained yet plus at most the record being written (a
loop that logged 3M points at once, killed once its spool stopped growing, lost none).

Steps are integers in the 64-bit range and keys 1 to 250 characters (MLflow's limit):
anything else is refused by ``log``/``log_dict`` (a key passed through ``**`` that is empty
or too long is dropped with a warning), so one bad point never blocks the rest.

Values: Python numbers and numpy scalars are stored as they are (converted by the thread);
CPU torch tensors are read with ``.item()`` at once (no sync is involved); JAX arrays are
kept and converted by the thread (JAX is never imported). CUDA tensors are detached and
kept on the device; every ``readback_every`` values (or ``flush_every_s``) the training
thread stacks them on the device, copies the stack without blocking into pinned host
memory and records a CUDA event; the thread reads the values once the event has completed.
Rows keep their order: a row whose device values are not read yet holds back the rows
after it, so backends that need monotonic steps (W&B) get them. A CUDA tensor is captured
by reference: one updated in place after ``log`` is read with its later value (pass
``x.clone()`` for an accumulator). Call ``log`` from one thread (the training loop); calls
after :meth:`Tracker.finish` are ignored.

Backend down: points stay in the spool; the sender retries with exponential backoff (to
60 s) while training goes on and replays the backlog when the backend answers. If the run
cannot even be created at start (a remote backend unreachable), ``tracker.ref`` is ``None``
until it can (``tracker.run_id`` is known at once and names the spool); a Tracker that
never reached its backend leaves a spool that ``aipm sync`` (or the next Tracker using the
same spool directory) delivers. The local backend is created synchronously: its ``ref``
is always known at start, and a local store error is raised.

A process forked from one with a live Tracker (a DataLoader worker) gets an inert copy:
its ``log`` and ``finish`` do nothing and its exit leaves the parent's run alone.

Distributed: the rank comes from ``rank=``, an initialised ``torch.distributed`` or
``$RANK``; only rank 0 writes unless ``all_ranks=True`` (then each rank writes its own run,
named ``<run_name>-rank<r>``). On the other ranks every method is a cheap no-op and ``ref``
is ``None``. :meth:`Tracker.merge_eval` gathers per-rank eval accumulators on rank 0.
"""

from __future__ import annotations

import atexit
import math
import operator
import os
import sys
import threading
import time
import uuid
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import AipmError, AipmWarning, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from .backends.base import Backend, BackendOptions
    from .guardrails import Guardrails
    from .schema import EvalResult, MetricPoint, RunRecord
    from .spool import SpoolWriter

_time = time.time
_PLAIN = frozenset((float, int, bool))
_UNSET = object()  # an unread device value in a slot (a one-element list)
_MAX_BACKOFF_S = 60.0
#: Points the outbox keeps in memory for the sender; past it, batches are read back from
#: the spool (a backend that hangs or is down must not grow memory without bound).
_OUTBOX_MAX_POINTS = 500_000
#: Points per ``log_points`` call when the sender delivers what the outbox holds (whole
#: spool records; a kill then leaves at most this much in doubt for the replay to check).
_SEND_MAX_POINTS = 50_000


_I64 = 1 << 63
#: The longest metric key (MLflow's limit, the strictest backend's): a run must be pushable.
MAX_KEY_LEN = 250
_LIVE: weakref.WeakSet[Tracker] = weakref.WeakSet()


def _disable_in_child() -> None:
    """After ``os.fork`` (a DataLoader worker, say): the child's copies of live Trackers
    have no threads; they must neither log nor finish the parent's run at exit."""
    for tr in list(_LIVE):
        tr._off = True
        tr._finished = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_disable_in_child)


def _bg_warn(message: str) -> None:
    """Warn from a background thread: under ``-W error`` the warning would raise and end
    the thread (no more spooling, or no more delivery), so an error here is swallowed."""
    try:
        warnings.warn(message, AipmWarning, stacklevel=3)
    except Exception:  # noqa: BLE001
        pass


def _check_step(step: Any) -> int:
    try:
        i = operator.index(step)
    except TypeError:
        raise UsageError(f"Tracker.log: step must be an integer, got {step!r}") from None
    if not -_I64 <= i < _I64:
        raise UsageError(f"Tracker.log: step {i} is outside the 64-bit integer range")
    return i


#: Where launchers put a process's rank, in the order Lightning's ``rank_zero_only`` reads
#: them (Lightning's own DDP launcher sets only ``LOCAL_RANK`` in the processes it starts).
_RANK_VARS = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def _env_int(name: str) -> int | None:
    try:
        v = os.environ.get(name)
        return int(v) if v not in (None, "") else None
    except ValueError:
        return None


def detect_rank(rank: int | None = None) -> int:
    """``rank`` if given, else ``torch.distributed``'s (when initialised), else the first of
    ``$RANK``, ``$LOCAL_RANK``, ``$SLURM_PROCID``, ``$JSM_NAMESPACE_RANK`` that is set. A
    local rank 0 on a node other than the first (``$NODE_RANK``/``$GROUP_RANK`` > 0) is not
    global rank 0: it is reported as rank 1 (enough to keep it from writing)."""
    if rank is not None:
        return int(rank)
    dist = sys.modules.get("torch.distributed")
    if dist is not None:
        try:
            if dist.is_available() and dist.is_initialized():
                return int(dist.get_rank())
        except Exception:  # noqa: BLE001
            pass
    for name in _RANK_VARS:
        r = _env_int(name)
        if r is not None:
            if r == 0 and name == "LOCAL_RANK" and any(
                    (_env_int(n) or 0) > 0 for n in ("NODE_RANK", "GROUP_RANK")):
                return 1
            return r
    return 0


class Tracker:
    """Log a training run from any loop without slowing it; lose nothing on a crash.

    Use it as a context manager (the final status is ``failed`` when the block raised)
    or call :meth:`finish`. See the module docstring for the design.

    :param to: ``"local"``, ``"mlflow:EXPERIMENT"``, ``"wandb:ENTITY/PROJECT"``, or any
        scheme a plugin registers.
    :param flush_every_s: flush (and fsync) interval; a SIGKILL loses at most this much.
    :param flush_every_n: flush early once this many ``log`` calls are buffered.
    :param readback_every: device values gathered before one device-to-host copy.
    :param spool_dir: default ``$AIPM_SPOOL_DIR`` or ``<store>/spool``.
    :param keep_spool: keep the spool files after a clean finish (default: deleted).
    :param replay_on_start: deliver spools that dead Trackers left in ``spool_dir``.
    :param finish_timeout_s: how long :meth:`finish` retries an unreachable backend.
    :param spool_max_bytes: once everything is delivered and the spool is larger, it starts
        afresh (a spool only grows while the backend is down, or, for a backend whose
        deliveries are not durable at once (W&B), until :meth:`finish`).
    """

    def __init__(self, to: str = "local", run_name: str | None = None, *,
                 model: str | None = None, model_version: str = "",
                 guardrails: Any = None, flush_every_s: float = 1.0,
                 flush_every_n: int = 5000, spool_dir: str | os.PathLike[str] | None = None,
                 config: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None,
                 dataset: str | None = None, store: str | os.PathLike[str] | None = None,
                 mlflow_uri: str | None = None, rank: int | None = None,
                 all_ranks: bool = False, readback_every: int = 256,
                 keep_spool: bool = False, replay_on_start: bool = True,
                 finish_timeout_s: float = 5.0, spool_max_bytes: int = 64 << 20) -> None:
        if flush_every_s <= 0 or flush_every_n < 1 or readback_every < 1:
            raise UsageError("flush_every_s must be > 0, flush_every_n and readback_every >= 1")
        self.rank = detect_rank(rank)
        self.is_writer = self.rank == 0 or all_ranks
        self.ref: str | None = None
        self.run_id = uuid.uuid4().hex[:20]
        self.last_eval: EvalResult | None = None
        self.breaches: list[dict[str, Any]] = []
        self._off = not self.is_writer
        self._finished = False
        self._step = 0
        self._flush_s = float(flush_every_s)
        self._flush_n = int(flush_every_n)
        self._flush_len = 3 * self._flush_n  # in _rows items
        self._K = int(readback_every)
        # buffered rows, flat: step, timestamp, {key: value}, step, ... One atomic
        # ``list.extend`` per row (safe from several threads) and no tuple kept per row,
        # which would be a GC-tracked object: with a large buffer the collector's passes
        # over them doubled the cost of ``log``.
        self._rows: list[Any] = []
        self._head = 0  # _rows items before it are spooled, not yet deleted (_spool_lock)
        self._dev: list[tuple[Any, int, list[Any]]] = []  # (tensor, device index, slot)
        self._dev_t0 = 0.0
        self._readbacks: deque[tuple[Any, Any, list[list[Any]]]] = deque()
        self._pinned: list[Any] = []  # free pinned host buffers
        self._rb_lock = threading.Lock()
        self._actions: deque[Callable[[], None]] = deque()
        self._last: dict[str, float] = {}
        self._breached: set[str] = set()
        self._bad_keys: set[str] = set()
        self.guardrails: Guardrails | None = None
        self.spool_path: Path | None = None
        if self._off:
            return

        from .api import load_guardrails
        from .backends.base import BackendOptions
        from .redact import redact_config
        from .refs import parse_target
        from .schema import DatasetInfo, ModelInfo, RunRecord
        from .spool import SpoolWriter, default_spool_dir

        self.guardrails = load_guardrails(guardrails)
        #: logged key -> the guardrailed metric it is (its own name, or a metric_map entry:
        #: ``eval_accuracy: accuracy``); such points are checked as they are spooled
        self._guarded: dict[str, str] = {}
        self._eval_points: set[tuple[str, int]] = set()  # (key, step) logged by log_eval
        if self.guardrails is not None:
            names = {g.metric for g in self.guardrails.guardrails}
            self._guarded = {n: n for n in names}
            self._guarded.update({k: v for k, v in self.guardrails.metric_map.items()
                                  if v in names})
        self.scheme, self.target = parse_target(to)
        store_abs = str(Path(store or os.environ.get("AIPM_STORE") or ".aipm").absolute())
        self.options: BackendOptions = BackendOptions(store=store_abs, mlflow_uri=mlflow_uri)
        name = run_name or f"{model or 'run'}-{self.run_id[:8]}"
        if all_ranks and self.rank != 0:
            name = f"{name}-rank{self.rank}"
        cfg = redact_config(dict(config or {}))
        tg = {str(k): str(v) for k, v in (tags or {}).items()}
        if all_ranks:
            tg["aipm.rank"] = str(self.rank)
        self.record: RunRecord = RunRecord(
            run_id=self.run_id, name=name, model=ModelInfo(model or name, str(model_version)),
            dataset=DatasetInfo.parse(dataset), config=cfg, tags=tg,
            guardrails_hash=getattr(self.guardrails, "hash", None) or None, status="running")

        from .plugins import get_backend

        self.backend: Backend = get_backend(self.scheme, self.options)  # unknown scheme: raise
        from .spool import acks_are_durable

        self._durable_acks = acks_are_durable(self.backend)
        # never write credentials to disk: a URI with user:password@ (or a secret in its
        # query) is left for aipm sync's --mlflow-uri / $MLFLOW_TRACKING_URI
        safe_uri = mlflow_uri if mlflow_uri and not _has_credentials(mlflow_uri) else None
        header = {"backend": {"scheme": self.scheme, "target": self.target, "store": store_abs,
                              "mlflow_uri": safe_uri},
                  "record": self.record.to_dict()}
        self._spool_dir = Path(spool_dir) if spool_dir else default_spool_dir(store_abs)
        self._spool: SpoolWriter = SpoolWriter(self._spool_dir, self.run_id, header,
                                               fsync_every_s=self._flush_s)
        self.spool_path = self._spool.path
        self._failures = 0
        self._retry_at = 0.0
        self._outage_warned = False
        self._finish_timeout = float(finish_timeout_s)
        self._keep = keep_spool
        self._spool_max = int(spool_max_bytes)
        try:
            self._start_run()
        except AipmError as e:
            if self.scheme == "local" or isinstance(e, UsageError):
                self._spool.close(remove=True)
                raise
            self._backend_failed(e, "creating the run")
        except Exception as e:  # noqa: BLE001 - a remote SDK's own error: spool and retry
            if self.scheme == "local":
                self._spool.close(remove=True)
                raise
            self._backend_failed(e, "creating the run")
        # two threads: the spooler drains the buffer into the spool every flush interval
        # whatever the backend does (so a SIGKILL loses at most one interval even while a
        # backend call hangs); the sender delivers what was spooled, retrying with backoff.
        self._spool_lock = threading.Lock()  # buffer drain + spool writes and compaction
        self._io_lock = threading.Lock()  # backend calls and the delivery state
        self._wake = threading.Event()  # spooler
        self._send_wake = threading.Event()  # sender
        # (points or None, start, end, spool generation): offsets restart when the spool
        # is compacted, so a batch from before a compaction (delivered: compaction needs
        # everything acknowledged) is told apart by its generation and skipped
        self._outbox: deque[tuple[list[MetricPoint] | None, int, int, int]] = deque()
        self._outbox_pts = 0
        self._gen = 0
        self._stop = False
        self._send_stop = False
        self._replay_on_start = replay_on_start
        self._thread = threading.Thread(target=self._loop, name=f"aipm-spool-{self.run_id[:8]}",
                                        daemon=True)
        self._sender = threading.Thread(target=self._send_loop,
                                        name=f"aipm-send-{self.run_id[:8]}", daemon=True)
        self._thread.start()
        self._sender.start()
        self._pid = os.getpid()
        _LIVE.add(self)
        atexit.register(self._atexit)

    # -- the hot path --------------------------------------------------------------------
    def log(self, step: int | None = None, **scalars: Any) -> None:
        """Buffer scalars for ``step`` (default: one past the last step). Never blocks."""
        if self._off:
            return
        now = _time()
        if step is None:
            step = self._step
            if step >= _I64:  # the step after 2**63 - 1
                step = _check_step(step)
        elif type(step) is not int or not -_I64 <= step < _I64:
            step = _check_step(step)
        self._step = step + 1
        for v in scalars.values():
            if type(v) not in _PLAIN:
                scalars = self._convert(scalars)
                break
        rows = self._rows
        rows.extend((step, now, scalars))
        if len(rows) == self._flush_len:
            self._wake.set()
        if self._dev and (len(self._dev) >= self._K or now - self._dev_t0 >= self._flush_s):
            self._readback()

    def log_dict(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """:meth:`log` for keys that are not Python identifiers (``val/acc``)."""
        d = {str(k): v for k, v in metrics.items()}
        for k in d:
            if not k or len(k) > MAX_KEY_LEN:
                raise UsageError(f"Tracker.log: metric key {k[:40]!r} must be 1 to "
                                 f"{MAX_KEY_LEN} characters")
        self.log(step, **d)

    def _convert(self, scalars: dict[str, Any]) -> dict[str, Any]:
        """Slow path: tensors, numpy and JAX values (see the module docstring)."""
        out: dict[str, Any] = {}
        torch = sys.modules.get("torch")
        np = sys.modules.get("numpy")
        for k, v in scalars.items():
            if type(v) in _PLAIN:
                out[k] = v
            elif torch is not None and isinstance(v, torch.Tensor):
                v = v.detach()
                if v.dim() != 0:
                    if v.numel() != 1:
                        raise UsageError(f"Tracker.log: '{k}' is a tensor of shape "
                                         f"{tuple(v.shape)}; log scalars only")
                    v = v.reshape(())
                if v.is_cuda:
                    slot = [_UNSET]
                    if not self._dev:
                        self._dev_t0 = _time()
                    self._dev.append((v, v.get_device(), slot))
                    out[k] = slot
                elif v.device.type == "cpu":
                    out[k] = v.item()
                else:  # other accelerators: read by the background thread
                    out[k] = v
            elif np is not None and isinstance(v, np.generic):
                out[k] = v  # immutable: converted by the thread
            elif np is not None and isinstance(v, np.ndarray):
                if v.size != 1:
                    raise UsageError(f"Tracker.log: '{k}' is an array of shape {v.shape}; "
                                     f"log scalars only")
                out[k] = float(v.reshape(()))  # mutable: copied now
            elif type(v).__module__.startswith(("jax", "jaxlib")):
                out[k] = v  # immutable, maybe not computed yet: the thread waits for it
            elif isinstance(v, (str, bytes)) or not hasattr(v, "__float__"):
                raise UsageError(f"Tracker.log: '{k}' is a {type(v).__name__}, not a number")
            else:
                out[k] = float(v)
        return out

    def _readback(self) -> None:
        """Gather pending device values: stack on the device, copy without blocking into a
        pinned host buffer (pooled: pinning memory is slow), record a CUDA event."""
        items, self._dev = self._dev, []
        if not items:
            return
        import torch

        groups: dict[int, tuple[list[Any], list[list[Any]]]] = {}
        for x, dev, slot in items:
            g = groups.get(dev)
            if g is None:
                g = groups[dev] = ([], [])
            g[0].append(x)
            g[1].append(slot)
        with self._rb_lock:
            self._harvest(wait=False)  # frees buffers whose copies are done
            for dev, (xs, slots) in groups.items():
                n = len(xs)
                free = self._pinned
                host = free.pop() if free and len(free[-1]) >= n else torch.empty(
                    max(n, self._K + 16), dtype=torch.float64, pin_memory=True)
                with torch.no_grad(), torch.cuda.device(dev):
                    vals = torch.stack(xs).to(torch.float64)
                    host[:n].copy_(vals, non_blocking=True)
                    ev = torch.cuda.Event()
                    ev.record()
                self._readbacks.append((ev, host, slots))

    def _harvest(self, wait: bool) -> None:
        """Fill the slots of completed device reads (``wait``: of all). Holds ``_rb_lock``."""
        rbs = self._readbacks
        while rbs:
            ev, host, slots = rbs[0]
            if wait:
                ev.synchronize()
            elif not ev.query():
                break
            rbs.popleft()
            for slot, val in zip(slots, host[:len(slots)].tolist(), strict=True):
                slot[0] = val
            self._pinned.append(host)

    # -- evaluation and guardrails --------------------------------------------------------
    def log_eval(self, table: Any, step: int | None = None, *,
                 fallback_threshold: float | None = None,
                 column_map: Mapping[str, str] | None = None, prefix: str = "") -> EvalResult | None:
        """Evaluate a per-example table, log its metrics, check the guardrails' bounds.

        A ``min``/``max`` bound crossed by the metric warns at once (:class:`AipmWarning`
        naming the guardrail) and sends the backend's alert where it has one. The last
        eval's summary, details and per-example table are stored by :meth:`finish`.
        Returns the :class:`EvalResult` (``None`` on ranks that do not write).
        """
        if self._off:
            return None
        from .api import _eval_kwargs, evaluate

        res = evaluate(table, **_eval_kwargs(self.guardrails, fallback_threshold,
                                             column_map, None))
        self._record_eval(res, step, prefix)
        return res

    def _record_eval(self, res: EvalResult, step: int | None, prefix: str) -> None:
        if step is None:
            step = max(self._step - 1, 0)
        vals = {f"{prefix}{k}": v for k, v in res.metrics.items()}
        # checked below, with the eval's own interval: not again when spooled
        self._eval_points.update((k, step) for k in vals if k in self._guarded)
        self.log_dict(vals, step=step)
        self.last_eval = res  # (after log_dict: a prefix that makes a key too long raises)
        self._check_guardrails(res.metrics, step)

    def _check_points(self, pts: list[MetricPoint]) -> None:
        """Guardrails on logged points (the spooler thread: values are on the host now)."""
        for p in pts:
            metric = self._guarded.get(p.key)
            if metric is not None and (p.key, p.step) not in self._eval_points:
                self._check_guardrails({metric: p.value}, p.step, background=True)

    def _check_guardrails(self, metrics: Mapping[str, float], step: int, *,
                          background: bool = False) -> None:
        if self.guardrails is None:
            return
        for g in self.guardrails.guardrails:
            value = metrics.get(g.metric)
            if value is None or not math.isfinite(value):
                continue
            bound = g.breached_bound(value)
            if bound is None:
                self._breached.discard(g.metric)
                continue
            entry = {"metric": g.metric, "value": value, "bound": bound, "step": step,
                     "guardrail": g.describe(), "severity": g.severity}
            self.breaches.append(entry)
            if g.metric in self._breached:
                continue  # still breached: warned already
            self._breached.add(g.metric)
            title = f"aipm guardrail breached: {g.metric}"
            text = (f"{g.metric} = {value:.6g} at step {step} breaches the guardrail "
                    f"'{g.metric}: {g.describe()}' ({bound}; severity {g.severity}) "
                    f"in run {self.ref or self.run_id}")
            if background:
                _bg_warn(text)
            else:
                warnings.warn(text, AipmWarning, stacklevel=4)
            alert = getattr(self.backend, "alert", None)
            if callable(alert):
                self._actions.append(_call(self._alert, alert, title, text))
                self._send_wake.set()

    def _alert(self, alert: Callable[[str, str, str], None], title: str, text: str) -> None:
        """Send a backend alert on the background thread (not while the run does not exist
        on the backend: the warning already went out)."""
        if self.ref is not None:
            alert(self.ref, title, text)

    def merge_eval(self, accumulator: Any, step: int | None = None, *, group: Any = None,
                   prefix: str = "") -> EvalResult | None:
        """Merge every rank's eval accumulator into one result on rank 0, and log it there.

        Collective: every rank calls it. Under an initialised ``torch.distributed`` the
        accumulators' ``to_state()`` are gathered with ``all_gather_object``; otherwise the
        local one is used alone. Returns the merged :class:`EvalResult` on rank 0 (the
        writer), ``None`` elsewhere. With ``all_ranks=True`` every rank gets and logs it.
        """
        states = gather_states(accumulator.to_state(), group=group)
        if self.rank != 0 and not (self.is_writer and not self._off):
            return None
        res = merge_states(type(accumulator), states)
        if not self._off:
            self._record_eval(res, step, prefix)
        return res

    # -- the background threads ------------------------------------------------------------
    def _loop(self) -> None:
        """The spooler: every ``flush_every_s`` (or when woken), buffer -> spool -> outbox."""
        while True:
            self._wake.wait(self._flush_s)
            self._wake.clear()
            stop = self._stop
            try:
                self._spool_once(wait=False)
            except Exception as e:  # noqa: BLE001 - the thread must survive anything
                _bg_warn(f"aipm tracker: spooling failed: {type(e).__name__}: {e}")
            if stop:
                return

    def _spool_once(self, wait: bool) -> None:
        """Drain the buffer, append it to the spool (fsync on the time bound, or now when
        ``wait``), hand the batch to the sender. A backlog (a loop that logged faster than
        this thread drains) is spooled as records of at most ``RECORD_MAX_POINTS`` points,
        one after the other, each handed to the sender as it is written: the spool grows
        steadily and a kill loses at most the record being built (plus what was not drained
        yet). While the sender is far behind (a backend that hangs or is down), batches go
        to the outbox without their points: the sender then reads them back from the spool."""
        from .spool import RECORD_MAX_POINTS

        more = True
        while more:
            with self._spool_lock:  # per record: the sender may take the outbox meanwhile
                pts, more = self._drain(wait, RECORD_MAX_POINTS)
                if self._guarded and pts:
                    self._check_points(pts)
                spool = self._spool
                if pts:
                    start, end = spool.append_points(pts)
                    keep = self._outbox_pts < _OUTBOX_MAX_POINTS
                    self._outbox.append((pts if keep else None, start, end, self._gen))
                    if keep:
                        self._outbox_pts += len(pts)
                spool.sync(force=wait and not more)
            if pts or self._actions:
                self._send_wake.set()

    def _send_loop(self) -> None:
        """The sender: replay old spools once, then deliver the outbox (and alerts) as it
        fills, retrying a failed backend with backoff until :meth:`finish` stops it."""
        if self._replay_on_start:
            try:
                from .spool import replay_all, warn_results

                warn_results(replay_all(self._spool_dir, exclude=[self._spool.path]))
            except Exception as e:  # noqa: BLE001 - (a warning raised as an error too)
                _bg_warn(f"could not replay old spools in {self._spool_dir}: {e}")
        while not self._send_stop:
            self._send_wake.wait(self._flush_s)
            self._send_wake.clear()
            if self._send_stop:
                return
            try:
                with self._io_lock:
                    self._send_pending(force=False)
            except Exception as e:  # noqa: BLE001 - the thread must survive anything
                _bg_warn(f"aipm tracker: delivery failed: {type(e).__name__}: {e}")

    def _send_pending(self, force: bool) -> None:
        """Run queued alerts, then deliver every spooled batch. Holds ``_io_lock``."""
        while self._actions:
            act = self._actions.popleft()
            try:
                act()
            except Exception as e:  # noqa: BLE001
                _bg_warn(f"aipm tracker: backend alert failed: {e}")
        box = self._outbox
        batches = []
        acked = self._spool.state.acked
        with self._spool_lock:  # the spooler adds to the count under it (lock order: io, spool)
            while box:
                b_pts, b_start, b_end, gen = box.popleft()
                if b_pts is not None:
                    self._outbox_pts -= len(b_pts)
                if gen == self._gen and b_end > acked:  # else delivered already (backlog)
                    batches.append((b_pts, b_start, b_end))
        self._deliver(batches, force=force)

    def _drain(self, wait: bool, limit: int) -> tuple[list[MetricPoint], bool]:
        """Buffered rows (and completed device reads) -> points, in logging order: at most
        ``limit`` of them (whole rows; a row with more keys alone). Returns the points and
        whether it stopped at the limit (more rows are waiting). Holds ``_spool_lock``."""
        from .schema import MetricPoint

        if self._readbacks:
            with self._rb_lock:
                self._harvest(wait)
        out: list[MetricPoint] = []
        rows = self._rows
        last = self._last
        n = len(rows)  # whole rows only: each was added by one extend
        i = self._head
        full = False
        while i < n:
            step, ts, d = rows[i], rows[i + 1], rows[i + 2]
            if out and len(out) + len(d) > limit:
                full = True
                break
            pts = []
            for k, v in d.items():
                if not k or len(k) > MAX_KEY_LEN:  # log(**{"": x}) passes no check
                    if k not in self._bad_keys:  # once per key, not once per step
                        self._bad_keys.add(k)
                        _bg_warn(f"aipm tracker: dropped key {k[:40]!r} (first at step "
                                 f"{step}): a key must be 1 to {MAX_KEY_LEN} characters")
                    continue
                if type(v) is list:
                    v = v[0]
                    if v is _UNSET:
                        if not wait:
                            break
                        # every read-back was launched and completed: this value was lost
                        # (log() called from two threads at once); drop it, keep the rest
                        _bg_warn(f"aipm tracker: device value '{k}' at step {step} was "
                                 f"never read back; dropped")
                        continue
                try:
                    fv = float(v)
                except Exception as e:  # noqa: BLE001 - a bad value must not stop the rest
                    _bg_warn(f"aipm tracker: dropped '{k}' at step {step}: {e}")
                    continue
                pts.append(MetricPoint(k, fv, int(step), ts))
            else:
                i += 3
                out.extend(pts)
                for p in pts:
                    last[p.key] = p.value
                if len(out) >= limit:
                    full = i < n
                    break
                continue
            break  # a device value of this row is not read yet: keep order
        # rows logged meanwhile stay behind what is deleted (``del`` is atomic); a backlog
        # is deleted once half of it is spooled, not per record (each ``del`` moves the rest)
        if i and (not full or 2 * i >= n):
            del rows[:i]
            i = 0
        self._head = i
        return out, full

    def _deliver(self, batches: list[tuple[list[MetricPoint] | None, int, int]],
                 force: bool = False) -> None:
        """Send spooled batches: at once when they follow what the backend acknowledged,
        else (a failure or a dropped batch before them) the backlog from the spool."""
        if not force and time.monotonic() < self._retry_at:
            return
        spool, state = self._spool, self._spool.state
        try:
            if self.ref is None:
                self._start_run()
            assert self.ref is not None
            end = batches[-1][2] if batches else state.acked
            chain = state.acked
            for b_pts, b_start, b_end in batches:
                if b_pts is None or b_start != chain:
                    break
                chain = b_end
            if batches and chain == end and state.acked < end:
                pts: list[MetricPoint] = []
                chain = state.acked
                for b_pts, _b_start, b_end in batches:  # whole records, a few per call
                    if pts and len(pts) + len(b_pts or ()) > _SEND_MAX_POINTS:
                        self._send_points(pts, chain)
                        pts = []
                    pts.extend(b_pts or ())
                    chain = b_end
                self._send_points(pts, end)
                self._compact_or_save()
            elif state.acked < end or (not batches and state.acked < spool.offset):
                from .spool import deliver_backlog

                upto = end if batches else spool.offset
                deliver_backlog(spool.path, state, self.backend, upto=upto,
                                save=lambda _s: spool.save_state())
                self._compact_or_save()
        except Exception as e:  # noqa: BLE001 - retried with backoff; the spool keeps all
            self._backend_failed(e, "sending points")
            return
        if self._failures and self._outage_warned:
            _bg_warn(f"aipm tracker: backend '{self.scheme}' is back; backlog delivered")
        self._failures = 0
        self._outage_warned = False
        self._retry_at = 0.0

    def _send_points(self, pts: list[MetricPoint], end: int) -> None:
        """One ``log_points`` call for the spool's points up to ``end`` (in doubt until it
        returns: a replay after a kill checks them against the backend's history)."""
        state = self._spool.state
        if state.acked >= end:
            return
        assert self.ref is not None
        state.inflight = end
        self._spool.save_state()
        self.backend.log_points(self.ref, pts)
        state.acked = state.inflight = end
        if self._durable_acks:
            state.durable = end

    def _compact_or_save(self) -> None:
        with self._spool_lock:  # no append may land between the check and the swap
            if self._spool.compact(self._spool_max):
                self._gen += 1
            else:
                self._spool.save_state()

    def _start_run(self) -> None:
        ref = self.backend.start_run(self.record, self.target)
        self.ref = self.record.ref = ref
        self._spool.state.ref = ref
        self._spool.save_state()

    def _backend_failed(self, e: BaseException, what: str) -> None:
        self._failures += 1
        delay = min(_MAX_BACKOFF_S, 0.5 * 2 ** (self._failures - 1))
        self._retry_at = time.monotonic() + delay
        if not self._outage_warned:
            self._outage_warned = True
            _bg_warn(f"aipm tracker: backend '{self.scheme}' failed {what} "
                     f"({type(e).__name__}: {e}); training continues, points are spooled "
                     f"in {self._spool.path} and retried")

    # -- ending ---------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """True once :meth:`finish` ran: later ``log`` calls are ignored."""
        return self._finished

    def flush(self) -> None:
        """Read back device values and deliver everything buffered now (blocks)."""
        if self._off or self._finished:
            return
        self._readback()
        self._spool_once(wait=True)
        with self._io_lock:
            self._send_pending(force=True)

    def _final_record(self, status: str) -> RunRecord:
        import dataclasses

        from .schema import MetricValue, utc_now

        metrics: dict[str, MetricValue] = {k: MetricValue(v) for k, v in self._last.items()}
        details: dict[str, Any] = {}
        examples = None
        dataset = self.record.dataset
        if self.last_eval is not None:
            from .api import _digest

            metrics.update(self.last_eval.metric_values())
            details = dict(self.last_eval.details)
            examples = self.last_eval.examples
            # as aipm.log records it: the eval set's size and content fingerprint
            dataset = dataclasses.replace(dataset, size=self.last_eval.n_examples,
                                          digest=dataset.digest or _digest(examples))
        if self.breaches:
            details["guardrail_breaches"] = self.breaches[-200:]
        return dataclasses.replace(self.record, metrics=metrics, details=details,
                                   status=status, finished_at=utc_now(), ref=self.ref,
                                   examples=examples, dataset=dataset)

    def finish(self, status: str = "finished") -> None:
        """Flush, wait for device copies, record the final status and the last eval."""
        if self._finished:
            return
        self._finished = True
        if self._off:
            return
        self._off = True  # later log() calls are no-ops
        atexit.unregister(self._atexit)
        self._readback()
        self._stop = True
        self._wake.set()
        wait_s = max(30.0, self._finish_timeout * 2)
        self._thread.join(timeout=wait_s)
        self._send_stop = True
        self._send_wake.set()
        self._sender.join(timeout=wait_s)
        self._spool_once(wait=True)  # whatever was logged since, fsync'd
        if not self._io_lock.acquire(timeout=wait_s):
            # the sender is stuck in a backend call that does not time out
            warnings.warn(f"aipm tracker: backend '{self.scheme}' does not answer; what was "
                          f"logged is in {self._spool.path}: run 'aipm sync' after this "
                          f"process ends", AipmWarning, stacklevel=2)
            return
        try:
            self._send_pending(force=True)
            record = self._final_record(status)
            fin = self._spool.append({"t": "finish", "status": status,
                                      "record": record.to_dict()})
            self._spool.sync(force=True)
            deadline = time.monotonic() + self._finish_timeout
            err: BaseException | None = None
            while True:
                try:
                    self._finish_backend(record, status, fin[0])
                    err = None
                    break
                except Exception as e:  # noqa: BLE001
                    err = e
                    self._failures += 1
                    pause = min(2.0, 0.25 * 2 ** (self._failures - 1))
                    if time.monotonic() + pause > deadline:
                        break
                    time.sleep(pause)
            if err is not None:
                self._spool.close(remove=False)
                warnings.warn(f"aipm tracker: backend '{self.scheme}' unavailable at finish "
                              f"({type(err).__name__}: {err}); run 'aipm sync' to deliver "
                              f"{self._spool.path}", AipmWarning, stacklevel=2)
                return
            self._spool.close(remove=not self._keep)
        finally:
            self._io_lock.release()

    def _finish_backend(self, record: RunRecord, status: str, points_end: int) -> None:
        from .spool import deliver_backlog

        state = self._spool.state
        if self.ref is None:
            self._start_run()
            record.ref = self.ref
        assert self.ref is not None
        if state.acked < points_end:
            deliver_backlog(self._spool.path, state, self.backend, upto=points_end,
                            save=lambda _s: self._spool.save_state())
        self.backend.finish_run(self.ref, status, record)
        state.finished = True
        state.durable = state.acked  # a finished run is kept whole
        self._spool.save_state()

    def _atexit(self) -> None:
        if os.getpid() != self._pid:  # a forked child exits: the run is the parent's
            return
        # an uncaught exception ended the program: the interpreter set sys.last_* before exit
        died = getattr(sys, "last_exc", None) or getattr(sys, "last_type", None)
        try:
            self.finish("failed" if died is not None else "finished")
        except Exception:  # noqa: BLE001 - interpreter shutdown: the spool keeps the rest
            pass

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.finish("failed" if exc_type is not None else "finished")

    def __repr__(self) -> str:
        return (f"Tracker(ref={self.ref!r}, run_id={self.run_id!r}, rank={self.rank}, "
                f"writer={self.is_writer})")


def _has_credentials(uri: str) -> bool:
    from urllib.parse import urlsplit

    from .redact import is_secret_key

    try:
        parts = urlsplit(uri)
    except ValueError:
        return True
    return "@" in parts.netloc or any(is_secret_key(q.split("=", 1)[0])
                                      for q in parts.query.split("&") if q)


def _call(fn: Callable[..., Any], *args: Any) -> Callable[[], None]:
    def run() -> None:
        fn(*args)
    return run


# -- distributed eval ---------------------------------------------------------------------

def gather_states(state: Any, group: Any = None) -> list[Any]:
    """Every rank's accumulator state, in rank order (``[state]`` outside torch.distributed).

    Uses ``torch.distributed.all_gather_object`` (pickle inside torch's own collective
    between the job's ranks; states are plain JSON-able data).
    """
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return [state]
    out: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, state, group=group)
    return out


def merge_states(cls: Any, states: list[Any]) -> EvalResult:
    """Rebuild each rank's accumulator from its state, merge them, return the result."""
    accs = [cls.from_state(s) for s in states]
    acc = accs[0]
    for other in accs[1:]:
        acc.merge(other)
    return acc.result()  # type: ignore[no-any-return]
