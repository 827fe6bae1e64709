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

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..errors import BackendNotImplementedError
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
    # ``acks_are_durable: bool`` (default True): ``log_points`` returning means the points
    # are kept even if this process is killed next. False (W&B: its core writes the run log
    # in 32 KiB blocks) makes the spool keep them until ``finish_run``; a replay then checks
    # them against ``read_history`` by key and step and sends only the missing ones.


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
