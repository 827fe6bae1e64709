"""PyTorch Lightning: :class:`AipmLightningCallback`.

Logs the training loss once per optimizer step, at the step's ``trainer.global_step`` (from
``training_step``'s output, kept on the device: no sync). With gradient accumulation that is
the mean of the step's micro-batch losses, undoing Lightning's division by
``accumulate_grad_batches`` (the value Hugging Face's ``Trainer`` reports). At the end of each training epoch, the metrics the module logged with
``self.log`` (``trainer.callback_metrics``: the epoch's aggregates and the latest validation
results), all at ``trainer.global_step``. A stand-alone ``trainer.validate()`` or
``trainer.test()`` is logged at its end: into the run of an earlier ``fit()`` with the same
callback, or into a new run.
The run is not finished when ``fit()`` returns: it is finished when the process exits, or
when you call :meth:`AipmLightningCallback.finish`; ``failed`` when Lightning reported an
exception (even if the caller caught it).
Only global rank 0 writes. Works with ``lightning`` or the older ``pytorch_lightning``.
"""

from __future__ import annotations

from typing import Any

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # pragma: no cover - the pre-2.0 package name
    from pytorch_lightning.callbacks import Callback  # type: ignore[assignment]

from ._owner import TrackerOwner, numeric


class AipmLightningCallback(Callback, TrackerOwner):  # type: ignore[misc]
    """Logs a Lightning run to an :class:`~aipm_tracking.Tracker`.

    :param tracker: a Tracker you own; otherwise keyword arguments create one at
        ``on_fit_start`` (model name defaults to the LightningModule's class,
        config to its ``hparams``).
    :param loss_key: the series name of the per-batch loss.

    Call :meth:`finish` to close the run before the process exits.
    """

    def __init__(self, tracker: Any = None, *, loss_key: str = "loss",
                 **tracker_kwargs: Any) -> None:
        Callback.__init__(self)
        TrackerOwner.__init__(self, tracker, **tracker_kwargs)
        self.loss_key = loss_key
        self._loss_sum: Any = None  # micro-batch losses of the optimizer step under way
        self._loss_n = 0
        self._step_seen = -1  # global_step at the previous batch end

    def _start(self, trainer: Any, pl_module: Any) -> None:
        if self.tracker is not None:
            self.ensure()
            return
        hp = getattr(pl_module, "hparams", None) or {}
        cfg = {str(k): v for k, v in dict(hp).items()
               if isinstance(v, (str, int, float, bool)) or v is None}
        self.ensure(model=type(pl_module).__name__, config=cfg,
                    rank=int(getattr(trainer, "global_rank", 0)))

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._start(trainer, pl_module)
        self.train_started()

    @staticmethod
    def _stand_alone(trainer: Any) -> bool:
        """A ``validate()``/``test()`` call of its own (not the validation inside ``fit``)."""
        fn = getattr(getattr(trainer, "state", None), "fn", None)
        return getattr(fn, "value", fn) != "fit" and not getattr(trainer, "sanity_checking",
                                                                 False)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if self._stand_alone(trainer):
            self._start(trainer, pl_module)

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._start(trainer, pl_module)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        step = int(trainer.global_step)
        if loss is not None and self.tracker is not None:
            # automatic optimisation hands back loss / accumulate_grad_batches (manual
            # optimisation requires accumulate_grad_batches == 1): undo it, on the device
            k = int(getattr(trainer, "accumulate_grad_batches", 1) or 1)
            if getattr(pl_module, "automatic_optimization", True) and k != 1:
                loss = loss * k
            self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
            self._loss_n += 1
        if step != self._step_seen:  # an optimizer step ended with this batch
            self._step_seen = step
            self._log_loss(step)

    def _log_loss(self, step: int) -> None:
        """Log the mean loss of the micro-batches since the last optimizer step."""
        if self._loss_n and self.tracker is not None:
            total, n = self._loss_sum, self._loss_n
            self.tracker.log_dict({self.loss_key: total if n == 1 else total / n}, step=step)
        self._loss_sum, self._loss_n = None, 0

    def _epoch_metrics(self, trainer: Any) -> None:
        if self.tracker is None:
            return
        vals = numeric(dict(trainer.callback_metrics))
        if vals:
            vals["epoch"] = int(trainer.current_epoch)
            self.tracker.log_dict(vals, step=int(trainer.global_step))

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._step_seen = int(trainer.global_step)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        # micro-batches without an optimizer step after them (an epoch cut short)
        self._log_loss(int(trainer.global_step))
        self._epoch_metrics(trainer)

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        # during fit, the train epoch end logs the epoch's final metrics (validation
        # included); here only a stand-alone trainer.validate() is logged
        if self._stand_alone(trainer):
            self._epoch_metrics(trainer)

    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._epoch_metrics(trainer)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._log_loss(int(trainer.global_step))
        self.train_failed()  # finished as failed at process exit or by finish()

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self.train_ended()  # not finished: a later validate() logs into the same run
