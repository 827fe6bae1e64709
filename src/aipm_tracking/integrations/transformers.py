"""Hugging Face ``transformers``: :class:`AipmTrainerCallback` for ``Trainer``.

``Trainer`` already reads its logs back every ``logging_steps`` (``loss``,
``learning_rate``, ``grad_norm``, ``eval_*``); the callback hands each ``on_log`` dict to
the Tracker at ``state.global_step`` (no extra device sync), and the metrics of
``trainer.predict()`` (``test_loss`` ...: ``predict`` logs nothing itself) at the same step.
Only the world process zero writes. Usage::

    cb = AipmTrainerCallback(to="local", model="bert-tiny")
    trainer = Trainer(..., callbacks=[cb])
    trainer.train()
    trainer.evaluate(metric_key_prefix="final")  # logged into the same run
    trainer.predict(test_ds, metric_key_prefix="test")  # so is this
    cb.finish()  # optional: otherwise the run is finished when the process exits

The run is not finished at the end of training (as W&B's callback does), so an evaluation
after ``train()`` lands in the same run. A ``train()`` that raised (even if the caller caught
the error) is recorded as ``failed``.

Which ``train()`` gets which run (as W&B's ``WandbCallback`` does, except where noted):

* **Hyper-parameter search** (``trainer.hyperparameter_search()``, or any
  ``train(trial=...)``: the Trainer sets ``state.is_hyper_param_search``): every trial is a
  run of its own. A trial's ``train()`` first finishes the previous trial's run (``failed``
  if that trial raised, else ``finished``), then starts one named ``state.trial_name`` (the
  search's ``hp_name``) or ``<run name>-trial<N>``, with the trial's parameters in its
  config under ``trial_params``. A plain ``train()`` after the search starts a new run too
  (W&B would log it into the last trial's run). With ``tracker=`` the Tracker is yours and
  is never replaced: all trials then share it (one warning says so).
* **One callback reused by two Trainers** (two plain ``train()`` calls): one run, as with
  W&B, where every ``Trainer`` logs into the one ``wandb.run`` until it is finished. The
  second training's steps start again at 1 in that run. For two runs, give each Trainer
  its own callback, or call :meth:`~AipmTrainerCallback.finish` in between: once finished,
  the next ``train()``, ``evaluate()`` or ``predict()`` starts a new run.
"""

from __future__ import annotations

import warnings
from typing import Any

from transformers import TrainerCallback

from ._owner import TrackerOwner, _RunState, numeric

#: Trainer log keys that describe the run, not the model (kept out of the series).
_SKIP = ("total_flos",)


def _plain(value: Any) -> Any:
    """A config-friendly copy of a trial parameter (numbers, strings, lists, dicts)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


class AipmTrainerCallback(TrainerCallback, TrackerOwner):  # type: ignore[misc]
    """Logs ``Trainer`` logs (and ``predict()`` metrics) to an :class:`~aipm_tracking.Tracker`.

    :param tracker: a Tracker you own (you finish it); otherwise the remaining keyword
        arguments create one at ``on_train_begin``, or at the first log of a stand-alone
        ``evaluate()`` / ``predict()`` (defaults: run name from ``args.run_name``, model from
        the model's ``name_or_path`` or class, config from ``TrainingArguments``, secrets
        redacted).

    The run stays open after ``train()``; call :meth:`finish` to close it before the
    process exits (``failed`` if training raised, else ``finished``). In a hyper-parameter
    search each trial gets a run of its own (see the module's documentation).
    """

    def __init__(self, tracker: Any = None, **tracker_kwargs: Any) -> None:
        TrackerOwner.__init__(self, tracker, **tracker_kwargs)
        self._trial_run = False  # the open run was created for a hyper-parameter trial
        self._closed = False  # finish() closed the run we created: the next one is new
        self._trials = 0
        self._warned_shared = False

    def finish(self, status: str | None = None) -> None:
        super().finish(status)
        if self._owns and self.tracker is not None:
            self._closed = True

    def _new_run(self) -> None:
        """Finish the run this callback created (if any) and forget it: the next
        :meth:`_start` creates another."""
        if self._owns and self.tracker is not None:
            if not self._closed:
                self.finish()
            self.tracker = None
            self._run = _RunState()
        self._closed = False
        self._trial_run = False

    def _start(self, args: Any, state: Any, model: Any, trial: bool = False) -> Any:
        if self._closed:
            self._new_run()
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
        defaults: dict[str, Any] = dict(
            run_name=getattr(args, "run_name", None) or None, model=str(name), config=cfg,
            rank=0 if state.is_world_process_zero else 1)
        if not trial:
            return self.ensure(**defaults)
        # a trial: its own name and parameters, also over the user's run_name / config
        self._trials += 1
        kw = {**defaults, **self._kwargs}
        base = kw.get("run_name") or str(name)
        kw["run_name"] = getattr(state, "trial_name", None) or f"{base}-trial{self._trials}"
        params = getattr(state, "trial_params", None) or {}
        kw["config"] = {**dict(kw.get("config") or {}), "trial_params": _plain(dict(params))}
        from ..tracker import Tracker

        self.tracker = Tracker(**kw)
        return self.ensure()

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       **kwargs: Any) -> None:
        trial = bool(getattr(state, "is_hyper_param_search", False))
        if trial and not self._owns and not self._warned_shared:
            from ..errors import AipmWarning

            self._warned_shared = True
            warnings.warn("aipm: hyper-parameter search with a Tracker passed in (tracker=): "
                          "every trial logs into that one run; let the callback create the "
                          "Tracker for a run per trial", AipmWarning, stacklevel=2)
        if self._owns and (trial or self._trial_run):
            self._new_run()  # the previous trial's run ends here (failed if it raised)
        self._start(args, state, model, trial=trial and self._owns)
        self._trial_run = trial and self._owns
        self.train_started()

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
               model: Any = None, **kwargs: Any) -> None:
        tr = self._start(args, state, model)
        vals = {k: v for k, v in numeric(logs).items() if k not in _SKIP}
        if vals:
            tr.log_dict(vals, step=int(state.global_step))

    def on_predict(self, args: Any, state: Any, control: Any, metrics: Any = None,
                   model: Any = None, **kwargs: Any) -> None:
        """``trainer.predict()`` returns its metrics without logging them: log them here."""
        tr = self._start(args, state, model)
        vals = {k: v for k, v in numeric(metrics).items() if k not in _SKIP}
        if vals:
            tr.log_dict(vals, step=int(state.global_step))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.train_ended()  # not finished: a later evaluate() logs into the same run
