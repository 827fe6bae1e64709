"""PyTorch Lightning: :class:`AipmLightningCallback`.

What is logged, at the steps Lightning's own loggers use (``CSVLogger``, ``WandbLogger``: the
count of batches that stepped the optimizer, from 0):

* the training loss of every optimizer step, from ``training_step``'s output, kept on the
  device (no sync). With gradient accumulation it is the mean of the step's micro-batch
  losses, undoing Lightning's division by ``accumulate_grad_batches``;
* every metric the module logs with ``self.log`` / ``self.log_dict`` for its loggers (not
  ``logger=False``), when and as Lightning hands it to its loggers: ``on_step`` metrics every
  ``log_every_n_steps``, ``on_epoch`` aggregates at the epoch's end, each validation when it
  runs (``val_check_interval`` included). The callback takes part as one more logger of the
  trainer while a ``fit``/``validate``/``test`` runs; it is added after the checkpoint
  directory is chosen and removed at the end, so where checkpoints go does not change.

A stand-alone ``trainer.validate()`` or ``trainer.test()`` logs into the run of an earlier
``fit()`` with the same callback, or into a new run. The run is not finished when ``fit()``
returns: it is finished when the process exits, or when you call
:meth:`AipmLightningCallback.finish`; ``failed`` when Lightning reported an exception (even
if the caller caught it). Only global rank 0 writes. Works with ``lightning`` or the older
``pytorch_lightning``.
"""

from __future__ import annotations

import warnings
from typing import Any

try:
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers import Logger
except ImportError:  # pragma: no cover - the pre-2.0 package name
    from pytorch_lightning.callbacks import Callback  # type: ignore[assignment]
    from pytorch_lightning.loggers import Logger  # type: ignore[assignment]

from ..errors import AipmWarning
from ._owner import TrackerOwner, numeric


class _TrackerLogger(Logger):  # type: ignore[misc]
    """The callback's seat among the trainer's loggers: what Lightning logs, to the Tracker."""

    def __init__(self, callback: AipmLightningCallback) -> None:
        super().__init__()
        self._cb = callback

    @property
    def name(self) -> str:
        return "aipm"

    @property
    def version(self) -> str | None:
        tr = self._cb.tracker
        return None if tr is None or not tr.ref else str(tr.ref).rsplit(":", 1)[-1]

    @property
    def save_dir(self) -> str | None:
        return None

    @property
    def experiment(self) -> Any:
        return self._cb.tracker

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Left alone: the run's config is taken from ``hparams`` when the run starts."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._cb._logged(metrics, step)


def _step(trainer: Any) -> int:
    """The step Lightning's loggers log at now (batches that stepped the optimizer)."""
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    n = getattr(loop, "_batches_that_stepped", None)
    return int(n) if isinstance(n, int) else int(trainer.global_step)


class AipmLightningCallback(Callback, TrackerOwner):  # type: ignore[misc]
    """Logs a Lightning run to an :class:`~aipm_tracking.Tracker`.

    :param tracker: a Tracker you own; otherwise keyword arguments create one at
        ``on_fit_start`` (model name defaults to the LightningModule's class,
        config to its ``hparams``).
    :param loss_key: the series name of the per-step training loss. A module that logs a
        metric of this name itself gets a warning: pass another ``loss_key``.

    Call :meth:`finish` to close the run before the process exits.
    """

    def __init__(self, tracker: Any = None, *, loss_key: str = "loss",
                 **tracker_kwargs: Any) -> None:
        Callback.__init__(self)
        TrackerOwner.__init__(self, tracker, **tracker_kwargs)
        self.loss_key = loss_key
        self._logger = _TrackerLogger(self)
        self._loss_sum: Any = None  # micro-batch losses of the optimizer step under way
        self._loss_n = 0
        self._loss_step = 0  # the logger step those micro-batches belong to
        self._warned_key = False

    def _start(self, trainer: Any, pl_module: Any) -> None:
        if self.tracker is None:
            hp = getattr(pl_module, "hparams", None) or {}
            cfg = {str(k): v for k, v in dict(hp).items()
                   if isinstance(v, (str, int, float, bool)) or v is None}
            self.ensure(model=type(pl_module).__name__, config=cfg,
                        rank=int(getattr(trainer, "global_rank", 0)))
        else:
            self.ensure()
        if not any(lg is self._logger for lg in trainer.loggers):
            trainer.loggers = [*trainer.loggers, self._logger]

    def _leave(self, trainer: Any) -> None:
        if any(lg is self._logger for lg in trainer.loggers):
            trainer.loggers = [lg for lg in trainer.loggers if lg is not self._logger]

    # -- what Lightning hands its loggers ---------------------------------------------
    def _logged(self, metrics: dict[str, Any], step: int | None) -> None:
        if self.tracker is None:
            return
        vals = numeric(metrics)
        if self.loss_key in vals and not self._warned_key:
            self._warned_key = True
            warnings.warn(f"aipm: the module logs '{self.loss_key}' itself; the callback's "
                          f"per-step training loss has the same name: pass "
                          f"AipmLightningCallback(loss_key=...) to keep them apart",
                          AipmWarning, stacklevel=2)
        if vals:
            self.tracker.log_dict(vals, step=int(step) if step is not None else None)

    # -- the per-step loss ------------------------------------------------------------
    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None or self.tracker is None:
            return
        step = _step(trainer)  # the same for every micro-batch of one optimizer step
        if step != self._loss_step:
            self._log_loss()
        # automatic optimisation hands back loss / accumulate_grad_batches (manual
        # optimisation requires accumulate_grad_batches == 1): undo it, on the device
        k = int(getattr(trainer, "accumulate_grad_batches", 1) or 1)
        if getattr(pl_module, "automatic_optimization", True) and k != 1:
            loss = loss * k
        self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
        self._loss_n += 1
        self._loss_step = step
        if k == 1:  # no accumulation: this batch is its step's only one
            self._log_loss()

    def _log_loss(self) -> None:
        """Log the mean loss of the micro-batches of the last optimizer step."""
        if self._loss_n and self.tracker is not None:
            total, n = self._loss_sum, self._loss_n
            self.tracker.log_dict({self.loss_key: total if n == 1 else total / n},
                                  step=self._loss_step)
        self._loss_sum, self._loss_n = None, 0

    # -- lifecycle --------------------------------------------------------------------
    @staticmethod
    def _stand_alone(trainer: Any) -> bool:
        """A ``validate()``/``test()`` call of its own (not the validation inside ``fit``)."""
        fn = getattr(getattr(trainer, "state", None), "fn", None)
        return getattr(fn, "value", fn) != "fit" and not getattr(trainer, "sanity_checking",
                                                                 False)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._start(trainer, pl_module)  # after every setup(): checkpoint dirs are chosen
        self.train_started()

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if self._stand_alone(trainer):
            self._start(trainer, pl_module)

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._start(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._log_loss()  # micro-batches of an epoch cut short

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._log_loss()
        self._leave(trainer)
        self.train_failed()  # finished as failed at process exit or by finish()

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._log_loss()
        self.train_ended()  # not finished: a later validate() logs into the same run

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._leave(trainer)
