"""Keras 3: :class:`AipmKerasCallback` (any backend; tested with ``KERAS_BACKEND=torch``).

Logs each batch's ``logs`` (``loss`` and compiled metrics, running means over the epoch as
Keras reports them) at a global batch counter, and each epoch's ``logs`` (with ``val_*``)
as ``epoch/<name>`` at the same counter. Keras hands callbacks Python numbers.

The run is not finished when ``fit`` returns: it is finished when the process exits, or
when you call :meth:`AipmKerasCallback.finish`. A ``fit`` that raised (even if the caller
caught the error) is recorded as ``failed``.
"""

from __future__ import annotations

from typing import Any

import keras

from ._owner import TrackerOwner, numeric


class AipmKerasCallback(keras.callbacks.Callback, TrackerOwner):  # type: ignore[misc]
    """Logs ``model.fit`` to an :class:`~aipm_tracking.Tracker`.

    :param tracker: a Tracker you own; otherwise keyword arguments create one at
        ``on_train_begin`` (model name defaults to the Keras model's ``name``).
    :param every_n_batches: log batch-level values every N batches (1: every batch).

    Call :meth:`finish` to close the run before the process exits.
    """

    def __init__(self, tracker: Any = None, *, every_n_batches: int = 1,
                 **tracker_kwargs: Any) -> None:
        keras.callbacks.Callback.__init__(self)
        TrackerOwner.__init__(self, tracker, **tracker_kwargs)
        self.every_n_batches = max(1, int(every_n_batches))
        self.step = 0

    def on_train_begin(self, logs: Any = None) -> None:
        model = getattr(self, "model", None)
        self.ensure(model=str(getattr(model, "name", None) or "keras-model"))
        self.train_started()

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if self.tracker is not None and self.step % self.every_n_batches == 0:
            vals = numeric(logs)
            if vals:
                self.tracker.log_dict(vals, step=self.step)
        self.step += 1

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if self.tracker is None:
            return
        vals = {f"epoch/{k}": v for k, v in numeric(logs).items()}
        vals["epoch"] = epoch
        self.tracker.log_dict(vals, step=max(self.step - 1, 0))

    def on_train_end(self, logs: Any = None) -> None:
        self.train_ended()  # finished at process exit or by finish()
