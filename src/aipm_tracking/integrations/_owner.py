"""What every adapter shares: use a given Tracker, or create and finish one.

Like W&B's own integrations, an adapter does not finish the run when training ends: an
evaluation after training (``trainer.evaluate()``, ``trainer.validate()``) still logs into
the same run. The run is finished when the process exits (the Tracker's ``atexit``) or when
you call the adapter's :meth:`TrackerOwner.finish`. The adapter remembers a training that
started and did not end (it raised, even if the caller caught the error) or that the
framework reported as failed: the run is then finished as ``failed``.
"""

from __future__ import annotations

import atexit
import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ..tracker import Tracker


class _RunState:
    """What the exit hook needs, apart from the adapter: the hook holds this, not the
    callback (which may hold the model: a hyper-parameter search must not keep every model
    alive until the process exits)."""

    __slots__ = ("tracker", "training", "failed", "pid")

    def __init__(self) -> None:
        self.tracker: Tracker | None = None
        self.training = False  # training started and has not ended (yet)
        self.failed = False  # the framework reported an exception
        self.pid: int | None = None

    def at_exit(self) -> None:
        if os.getpid() != self.pid or self.tracker is None:
            return
        if not (self.training or self.failed):
            return  # a clean end: the Tracker's own atexit finishes the run
        try:
            self.tracker.finish("failed")  # also a Tracker passed in: the status is a fact
        except Exception:  # noqa: BLE001 - interpreter shutdown: the spool keeps the rest
            pass


class TrackerOwner:
    """Holds ``tracker`` (given) or the keyword arguments to create one on ``ensure``."""

    def __init__(self, tracker: Tracker | None = None, **tracker_kwargs: Any) -> None:
        self.tracker = tracker
        self._owns = tracker is None
        self._kwargs = tracker_kwargs
        self._run = _RunState()

    def ensure(self, **defaults: Any) -> Tracker:
        """The Tracker (created now from ``defaults`` overridden by the user's kwargs). A
        Tracker this adapter created and that was finished since is replaced by a new one:
        what is logged after :meth:`finish` goes to a new run, not nowhere."""
        if self._owns and self.tracker is not None and self.tracker.finished:
            self.tracker, self._run = None, _RunState()
        if self.tracker is None:
            from ..tracker import Tracker

            self.tracker = Tracker(**{**defaults, **self._kwargs})
        self._hook_exit()
        return self.tracker

    def _hook_exit(self) -> None:
        self._run.tracker = self.tracker
        # registered after the Tracker's own atexit, so it runs first (atexit is LIFO)
        if self._run.pid is None:
            self._run.pid = os.getpid()
            atexit.register(self._run.at_exit)

    def train_started(self) -> None:
        self._run.training = True
        self._hook_exit()

    def train_ended(self) -> None:
        """Training ended normally: deliver what was logged; the run stays open."""
        self._run.training = False
        if self.tracker is not None:
            self.tracker.flush()

    def train_failed(self) -> None:
        """The framework reported an exception: the run will finish as ``failed``."""
        self._run.failed = True
        self._run.training = False
        if self.tracker is not None:
            self.tracker.flush()

    @property
    def failed(self) -> bool:
        """True when training raised (or did not end): the run's final status is ``failed``."""
        return self._run.failed or self._run.training

    def finish(self, status: str | None = None) -> None:
        """Finish the run now, if this adapter created the Tracker (a Tracker you passed in
        is yours to finish). ``status`` defaults to ``failed`` when training raised or never
        ended, else ``finished``. Without this call the run is finished at process exit."""
        if self._owns and self.tracker is not None:
            self.tracker.finish(status or ("failed" if self.failed else "finished"))
            if self._run.pid is not None:
                atexit.unregister(self._run.at_exit)
                self._run.pid = None


_WARNED_KEYS: set[str] = set()


def numeric(logs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The entries of a framework's log dict that are numbers or scalar tensors/arrays.

    A key the Tracker refuses (empty, or longer than its limit) is left out with one warning:
    a logging detail must not stop the training loop the callback runs in."""
    from ..tracker import MAX_KEY_LEN

    out: dict[str, Any] = {}
    for k, v in (logs or {}).items():
        if isinstance(v, bool) or v is None or isinstance(v, (str, bytes)):
            continue
        if not str(k) or len(str(k)) > MAX_KEY_LEN:
            if str(k) not in _WARNED_KEYS:
                import warnings

                from ..errors import AipmWarning

                _WARNED_KEYS.add(str(k))
                warnings.warn(f"aipm: metric key {str(k)[:40]!r} left out: a key must be 1 "
                              f"to {MAX_KEY_LEN} characters", AipmWarning, stacklevel=3)
            continue
        if isinstance(v, (int, float)):
            if isinstance(v, float) and math.isnan(v) and k.endswith("runtime"):
                continue
            out[str(k)] = v
        elif getattr(v, "ndim", None) == 0 or getattr(v, "shape", None) in ((), (1,)):
            out[str(k)] = v
        elif hasattr(v, "__float__") and not hasattr(v, "__len__"):
            out[str(k)] = v
    return out
