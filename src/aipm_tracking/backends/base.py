"""What a backend is: the protocol every storage plugin (local, MLflow, W&B ...) implements.

A backend is registered under a *scheme* (``local``, ``mlflow``, ``wandb``) through the
``aipm_register_backends(register)`` hook, as a factory taking :class:`BackendOptions`.
References look like ``scheme:locator`` (see :mod:`aipm_tracking.refs`); the backend alone
interprets its locator (a run id, ``ENTITY/PROJECT/RUN_ID``, a directory ...).
A *target* names where new runs go: ``None`` for the local store, an experiment name for
MLflow, ``ENTITY/PROJECT`` for W&B.

Operations a backend cannot do raise :class:`~aipm_tracking.errors.BackendNotImplementedError`
(the :class:`BaseBackend` defaults), so the CLI shows one clear line.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..errors import AipmWarning, BackendNotImplementedError
from ..schema import Comparison, MetricPoint, RunRecord


@dataclass(frozen=True)
class BackendOptions:
    """Options a backend factory receives (from CLI flags or the Python API)."""

    store: str | None = None  # local store directory (default $AIPM_STORE or ./.aipm)
    mlflow_uri: str | None = None  # default $MLFLOW_TRACKING_URI
    metric_map: Mapping[str, str] = field(default_factory=dict)  # foreign name -> canonical
    quiet: bool = False  # no progress bars
    extra: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """A place runs live. All methods may raise :class:`~aipm_tracking.errors.AipmError`."""

    scheme: str

    def write_run(self, record: RunRecord, target: str | None = None) -> str:
        """Store a complete run (metrics, details, per-example table); return its reference.

        Must be atomic from a reader's view: a failure leaves no run that looks complete.
        Optional keyword (see :func:`write_run_copy`): ``history``, the run's logged series
        points, stored with the run as :meth:`log_points` would have stored them.
        """
        ...

    def read_run(self, locator: str, *, with_examples: bool = True) -> RunRecord:
        """Load the run at ``locator`` (the part after ``scheme:``). ``RunNotFoundError`` if absent."""
        ...

    def list_runs(self, target: str | None = None, *, filter: str | None = None,
                  limit: int | None = None) -> Iterator[RunRecord]:
        """Runs under ``target``, newest first, without per-example tables."""
        ...

    # -- streaming (the training-loop Tracker) ---------------------------------------
    def start_run(self, record: RunRecord, target: str | None = None) -> str:
        """Create a run in state ``running`` for streaming; return its reference."""
        ...

    def log_points(self, ref: str, points: Sequence[MetricPoint]) -> None:
        """Append a batch of series points with as few round trips as the backend allows."""
        ...

    def finish_run(self, ref: str, status: str = "finished",
                   record: RunRecord | None = None) -> None:
        """Mark the run ended; when ``record`` is given, also store its summary/details."""
        ...

    def read_history(self, locator: str, keys: Sequence[str] | None = None) -> list[MetricPoint]:
        """Logged series points of a run (all keys when ``keys`` is None), ordered by step."""
        ...

    def write_comparison(self, comparison: Comparison, target: str | None = None) -> str:
        """Store a comparison for review (W&B comparison table + alert ...); return a ref/URL."""
        ...

    # Optional (looked up with getattr; BaseBackend does not define them):
    # ``alert(ref, title, text) -> None`` notifies the run's owners (W&B: ``run.alert``).
    # The Tracker calls it from its background thread when a guardrail is breached
    # mid-training.
    # ``write_run(record, target, *, history=None)``: a backend whose ``write_run`` takes the
    # keyword ``history`` (a sequence of MetricPoint) stores a copied run's series with it,
    # as part of the one write (``aipm push``/``pull``, :func:`write_run_copy`); one whose
    # ``write_run`` does not is given the run alone, with a warning that the series were not
    # copied. ``history`` is None or empty for a run without series: write it as before.
    # A record tagged ``aipm.source_ref`` is a copy of that run: a backend that already holds
    # a complete copy of it (same destination) should return that copy's reference instead
    # of writing another (the local, MLflow and W&B backends do).
    # ``acks_are_durable: bool`` (default True): ``log_points`` returning means the points
    # are kept even if this process is killed next. False (W&B: its core writes the run log
    # in 32 KiB blocks) makes the spool keep them until ``finish_run``; a replay then checks
    # them against ``read_history`` by key and step and sends only the missing ones.
    # ``iter_history(locator, keys=None) -> Iterator[list[(key, value, step, timestamp)]]``:
    # ``read_history``'s points in the same order, in chunks, checking the run when called;
    # ``aipm runs history`` and ``aipm sync`` stream through it in constant memory where a
    # backend has it (the embedded store does), else they read ``read_history`` whole.


class BaseBackend:
    """Convenience base: every operation raises ``BackendNotImplementedError`` until overridden."""

    scheme = "?"

    def _nyi(self, op: str) -> BackendNotImplementedError:
        return BackendNotImplementedError(f"backend '{self.scheme}' does not implement {op} yet")

    def write_run(self, record: RunRecord, target: str | None = None) -> str:
        raise self._nyi("write_run")

    def read_run(self, locator: str, *, with_examples: bool = True) -> RunRecord:
        raise self._nyi("read_run")

    def list_runs(self, target: str | None = None, *, filter: str | None = None,
                  limit: int | None = None) -> Iterator[RunRecord]:
        raise self._nyi("list_runs")

    def start_run(self, record: RunRecord, target: str | None = None) -> str:
        raise self._nyi("start_run")

    def log_points(self, ref: str, points: Sequence[MetricPoint]) -> None:
        raise self._nyi("log_points")

    def finish_run(self, ref: str, status: str = "finished",
                   record: RunRecord | None = None) -> None:
        raise self._nyi("finish_run")

    def read_history(self, locator: str, keys: Sequence[str] | None = None) -> list[MetricPoint]:
        raise self._nyi("read_history")

    def write_comparison(self, comparison: Comparison, target: str | None = None) -> str:
        raise self._nyi("write_comparison")


BackendFactory = Callable[[BackendOptions], Backend]


#: The tag a copied run carries: the reference of the run it was copied from.
SOURCE_TAG = "aipm.source_ref"


def takes_history(backend: Any) -> bool:
    """Whether ``backend.write_run`` takes the keyword ``history`` (the optional part of the
    protocol): a parameter of that name, not a ``**kwargs`` that could drop it unseen."""
    try:
        params = inspect.signature(backend.write_run).parameters
    except (TypeError, ValueError, AttributeError):
        return False
    p = params.get("history")
    return p is not None and p.kind in (inspect.Parameter.KEYWORD_ONLY,
                                        inspect.Parameter.POSITIONAL_OR_KEYWORD)


def write_run_copy(backend: Backend, record: RunRecord, target: str | None,
                   history: Sequence[MetricPoint] | None) -> str:
    """``backend.write_run`` for a copied run (``aipm push``/``pull``) with its series.

    Without points the record is written exactly as before (``write_run(record, target)``);
    with points, through ``write_run(record, target, history=points)`` where the backend
    takes it, else the run alone with an :class:`AipmWarning` that the series were not
    copied (a third-party backend written against the protocol without ``history``).
    """
    if not history:
        return backend.write_run(record, target)
    if takes_history(backend):
        write: Callable[..., str] = backend.write_run
        return write(record, target, history=history)
    keys = sorted({p.key for p in history})
    shown = ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")
    warnings.warn(f"backend '{getattr(backend, 'scheme', '?')}' stores no logged series with "
                  f"a copied run (its write_run takes no history): history not copied "
                  f"({len(history)} point(s) of {shown}) from {record.ref or record.name}",
                  AipmWarning, stacklevel=3)
    return backend.write_run(record, target)
