"""Hugging Face ``transformers``: :class:`AipmTrainerCallback` for ``Trainer``.

``Trainer`` already reads its logs back every ``logging_steps`` (``loss``,
``learning_rate``, ``grad_norm``, ``eval_*``); the callback hands each ``on_log`` dict to
the Tracker at ``state.global_step`` (no extra device sync). Only the world process zero
writes. Usage::

    cb = AipmTrainerCallback(to="local", model="bert-tiny")
    trainer = Trainer(..., callbacks=[cb])
    trainer.train()
    trainer.evaluate(metric_key_prefix="final")  # logged into the same run
    cb.finish()  # optional: otherwise the run is finished when the process exits

The run is not finished at the end of training (as W&B's callback does), so an evaluation
after ``train()`` lands in the same run. A ``train()`` that raised (even if the caller caught
the error) is recorded as ``failed``.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from ._owner import TrackerOwner, numeric

#: Trainer log keys that describe the run, not the model (kept out of the series).
_SKIP = ("total_flos",)


class AipmTrainerCallback(TrainerCallback, TrackerOwner):  # type: ignore[misc]
    """Logs ``Trainer`` logs to an :class:`~aipm_tracking.Tracker`.

    :param tracker: a Tracker you own (you finish it); otherwise the remaining keyword
        arguments create one at ``on_train_begin``, or at the first log of a stand-alone
        ``evaluate()`` (defaults: run name from ``args.run_name``, model from the model's
        ``name_or_path`` or class, config from ``TrainingArguments``, secrets redacted).

    The run stays open after ``train()``; call :meth:`finish` to close it before the
    process exits (``failed`` if training raised, else ``finished``).
    """

    def __init__(self, tracker: Any = None, **tracker_kwargs: Any) -> None:
        TrackerOwner.__init__(self, tracker, **tracker_kwargs)

    def _start(self, args: Any, state: Any, model: Any) -> Any:
        if self.tracker is not None:
            return self.ensure()
        name = getattr(model, "name_or_path", None) or (
            type(model).__name__ if model is not None else "model")
        cfg: dict[str, Any] = {}
        try:
            cfg = {k: v for k, v in args.to_dict().items()
                   if isinstance(v, (str, int, float, bool)) or v is None}
        except Exception:  # noqa: BLE001 - config is a nicety
            pass
        return self.ensure(run_name=getattr(args, "run_name", None) or None, model=str(name),
                           config=cfg, rank=0 if state.is_world_process_zero else 1)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       **kwargs: Any) -> None:
        self._start(args, state, model)
        self.train_started()

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
               model: Any = None, **kwargs: Any) -> None:
        tr = self._start(args, state, model)
        vals = {k: v for k, v in numeric(logs).items() if k not in _SKIP}
        if vals:
            tr.log_dict(vals, step=int(state.global_step))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.train_ended()  # not finished: a later evaluate() logs into the same run
