"""What every adapter shares: use a given Tracker, or create and finish one."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ..tracker import Tracker


class TrackerOwner:
    """Holds ``tracker`` (given) or the keyword arguments to create one on ``ensure``."""

    def __init__(self, tracker: Tracker | None = None, **tracker_kwargs: Any) -> None:
        self.tracker = tracker
        self._owns = tracker is None
        self._kwargs = tracker_kwargs

    def ensure(self, **defaults: Any) -> Tracker:
        """The Tracker (created now from ``defaults`` overridden by the user's kwargs)."""
        if self.tracker is None:
            from ..tracker import Tracker

            self.tracker = Tracker(**{**defaults, **self._kwargs})
        return self.tracker

    def finish(self, status: str = "finished") -> None:
        """Finish the Tracker if this adapter created it."""
        if self._owns and self.tracker is not None:
            self.tracker.finish(status)


def numeric(logs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The entries of a framework's log dict that are numbers or scalar tensors/arrays."""
    out: dict[str, Any] = {}
    for k, v in (logs or {}).items():
        if isinstance(v, bool) or v is None or isinstance(v, (str, bytes)):
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
