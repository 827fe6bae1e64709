"""Hugging Face ``Trainer`` adapter: which ``train()`` gets which run, and ``predict()``.

Real training of a one-layer BERT on the CPU for a few steps (as in test_integrations.py);
what the store holds is compared with the Trainer's own record (``state.log_history``, the
metrics ``predict`` returns).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
from test_integrations import _read, _tiny_bert, history

from aipm_tracking.backends.base import BackendOptions
from aipm_tracking.backends.local import LocalBackend

pytestmark = pytest.mark.slow

STEPS = 4


def _runs(store: Path) -> list[Any]:
    """Every run in the store, oldest first."""
    return list(LocalBackend(BackendOptions(store=str(store))).list_runs())[::-1]


def _losses(log_history: list[dict[str, Any]]) -> list[tuple[int, float]]:
    return [(e["step"], e["loss"]) for e in log_history if "loss" in e]


def _assert_series(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert [s for s, _ in got] == [s for s, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want])


def _setup(tmp_path: Path, **arg_overrides: Any) -> tuple[Any, Any, Any, list[Any]]:
    """transformers, its TrainingArguments, a ``model_init`` (trial-aware) and the data."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    _, data = _tiny_bert(torch, transformers, 32)

    def model_init(trial: Any = None) -> Any:
        torch.manual_seed(0)
        dropout = (trial or {}).get("hidden_dropout_prob", 0.1)
        cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=32,
                                      max_position_embeddings=16, num_labels=2,
                                      hidden_dropout_prob=dropout)
        return transformers.BertForSequenceClassification(cfg)

    kw: dict[str, Any] = dict(
        output_dir=str(tmp_path / "out"), max_steps=STEPS, logging_steps=1,
        per_device_train_batch_size=4, per_device_eval_batch_size=8, save_strategy="no",
        report_to=[], use_cpu=True, disable_tqdm=True, run_name="hp", learning_rate=1e-3)
    kw.update(arg_overrides)
    return transformers, transformers.TrainingArguments(**kw), model_init, data


TRIALS = [{"learning_rate": 1e-3, "hidden_dropout_prob": 0.0},
          {"learning_rate": 3e-3, "hidden_dropout_prob": 0.2}]


def test_hf_hyperparameter_search_one_run_per_trial(
        store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``trainer.hyperparameter_search()`` itself, with a backend that runs offline.

    Neither optuna nor Ray Tune is installed here, and W&B's backend needs a sweep server
    (``wandb.sweep`` / ``wandb.agent``). So the W&B backend's ``run`` is replaced by its
    trial loop without the server: as ``run_hp_search_wandb``'s objective does, it opens a
    W&B run (offline) and calls ``trainer.train(trial=<dict of params>)`` then
    ``evaluate()`` for every trial. The rest
    is the real search: ``hyperparameter_search`` sets ``hp_search_backend``, ``hp_space``
    and ``hp_name``, ``train`` applies the trial to the arguments and sets
    ``state.is_hyper_param_search``, ``trial_name`` and ``trial_params``.
    """
    transformers, args, model_init, data = _setup(tmp_path)
    pytest.importorskip("wandb")  # transformers' hp_params() reads a dict trial only with it
    from transformers.hyperparameter_search import ALL_HYPERPARAMETER_SEARCH_BACKENDS, WandbBackend
    from transformers.trainer_utils import BestRun, HPSearchBackend

    from aipm_tracking.integrations import AipmTrainerCallback

    class OfflineSweep(WandbBackend):
        @staticmethod
        def is_available() -> bool:
            return True

        def run(self, trainer: Any, n_trials: int, direction: str, **kwargs: Any) -> Any:
            import wandb

            for i in range(n_trials):
                run = wandb.init(mode="offline")  # the agent's run (Trainer reads its id)
                trainer.objective = None
                trainer.train(resume_from_checkpoint=None, trial=dict(trainer.hp_space(i)))
                kwargs["record"].append((list(trainer.state.log_history), cb.tracker.ref))
                metrics = trainer.evaluate()
                trainer.objective = trainer.compute_objective(metrics)
                run.finish()
            return BestRun("0", 0.0, TRIALS[0])

    monkeypatch.setitem(ALL_HYPERPARAMETER_SEARCH_BACKENDS, HPSearchBackend.WANDB, OfflineSweep)
    cb = AipmTrainerCallback(spool_dir=str(tmp_path / "sp"))
    trainer = transformers.Trainer(model_init=model_init, args=args, train_dataset=data,
                                   eval_dataset=data[:8], callbacks=[cb])
    record: list[tuple[list[dict[str, Any]], str]] = []
    trainer.hyperparameter_search(hp_space=lambda i: TRIALS[i], n_trials=2, backend="wandb",
                                  hp_name=lambda t: f"lr{t['learning_rate']}", record=record)
    first_ref = record[0][1]
    assert _read(store, first_ref).status == "finished"  # closed when trial 2 began
    cb.finish()
    runs = _runs(store)
    assert [r.ref for r in runs] == [ref for _, ref in record] and len(runs) == 2
    for trial, (log_history, ref), rec in zip(TRIALS, record, runs, strict=True):
        got = history(store, ref)
        want = _losses(log_history)
        assert [s for s, _ in want] == list(range(1, STEPS + 1))
        _assert_series(got["loss"], want)
        assert [s for s, _ in got["eval_loss"]] == [STEPS]  # the search's evaluate()
        assert rec.name == f"lr{trial['learning_rate']}" and rec.status == "finished"
        assert rec.config["trial_params"] == trial
        assert rec.config["learning_rate"] == trial["learning_rate"]
        assert rec.model.name == "BertForSequenceClassification"
    assert _losses(record[0][0]) != _losses(record[1][0])  # two different trainings


def test_hf_train_with_trial_failed_trial_then_plain_train(store: Path, tmp_path: Path) -> None:
    """Repeated ``train(trial=...)`` (no search backend: the Trainer still sets
    ``state.is_hyper_param_search``): the trial that raised is ``failed``, each trial has its
    own run, and a plain ``train()`` afterwards gets a new run, not the last trial's."""
    transformers, args, model_init, data = _setup(tmp_path)
    pytest.importorskip("wandb")  # transformers' hp_params() reads a dict trial only with it
    from aipm_tracking.integrations import AipmTrainerCallback

    class Boom(transformers.TrainerCallback):
        armed = True

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.armed and state.global_step == 2:
                self.armed = False
                raise RuntimeError("diverged")

    cb = AipmTrainerCallback(spool_dir=str(tmp_path / "sp"))
    trainer = transformers.Trainer(model_init=model_init, args=args, train_dataset=data,
                                   callbacks=[cb, Boom()])
    with pytest.raises(RuntimeError, match="diverged"):
        trainer.train(trial=dict(TRIALS[0]))
    assert trainer.state.is_hyper_param_search
    failed_ref = cb.tracker.ref
    trainer.train(trial=dict(TRIALS[1]))
    trial_ref, trial_hist = cb.tracker.ref, list(trainer.state.log_history)
    assert _read(store, failed_ref).status == "failed"  # closed when trial 2 began
    trainer.train()
    plain_ref, plain_hist = cb.tracker.ref, list(trainer.state.log_history)
    cb.finish()
    assert len({failed_ref, trial_ref, plain_ref}) == 3 and len(_runs(store)) == 3
    assert [s for s, _ in history(store, failed_ref)["loss"]] == [1]
    _assert_series(history(store, trial_ref)["loss"], _losses(trial_hist))
    _assert_series(history(store, plain_ref)["loss"], _losses(plain_hist))
    failed, trial, plain = (_read(store, r) for r in (failed_ref, trial_ref, plain_ref))
    assert (failed.name, trial.name, plain.name) == ("hp-trial1", "hp-trial2", "hp")
    assert failed.config["trial_params"] == TRIALS[0]
    assert trial.config["trial_params"] == TRIALS[1]
    assert "trial_params" not in plain.config
    assert (trial.status, plain.status) == ("finished", "finished")


def test_hf_trials_with_a_tracker_passed_in_share_it(store: Path, tmp_path: Path) -> None:
    """A Tracker the user passed in is never replaced (nor finished): one warning says that
    the trials share its run."""
    transformers, args, model_init, data = _setup(tmp_path)
    pytest.importorskip("wandb")
    from aipm_tracking import Tracker
    from aipm_tracking.errors import AipmWarning
    from aipm_tracking.integrations import AipmTrainerCallback

    tr = Tracker(run_name="mine", spool_dir=str(tmp_path / "sp"))
    cb = AipmTrainerCallback(tracker=tr)
    trainer = transformers.Trainer(model_init=model_init, args=args, train_dataset=data,
                                   callbacks=[cb])
    with pytest.warns(AipmWarning, match="every trial logs into that one run"):
        trainer.train(trial=dict(TRIALS[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", AipmWarning)  # once only
        trainer.train(trial=dict(TRIALS[1]))
    assert cb.tracker is tr
    cb.finish()  # not ours to finish: a no-op
    tr.log(step=99, still_open=1.0)
    tr.finish()
    assert [r.ref for r in _runs(store)] == [tr.ref]
    assert _read(store, tr.ref).status == "finished"
    assert history(store, tr.ref)["still_open"] == [(99, 1.0)]


def test_hf_callback_reused_by_two_trainers_one_run_until_finish(
        store: Path, tmp_path: Path) -> None:
    """As with W&B: one callback in two Trainers (plain ``train()``) is one run; after
    ``cb.finish()`` the next training starts a new run (it was silently dropped)."""
    transformers, args, model_init, data = _setup(tmp_path)
    from aipm_tracking.integrations import AipmTrainerCallback

    cb = AipmTrainerCallback(spool_dir=str(tmp_path / "sp"))
    t1 = transformers.Trainer(model=model_init(), args=args, train_dataset=data, callbacks=[cb])
    t1.train()
    ref1 = cb.tracker.ref
    t2 = transformers.Trainer(model=model_init(), args=args, train_dataset=data, callbacks=[cb])
    t2.train()
    assert cb.tracker.ref == ref1  # one run, as documented
    assert len(history(store, ref1)["loss"]) == 2 * STEPS
    cb.finish()
    assert _read(store, ref1).status == "finished"
    t3 = transformers.Trainer(model=model_init(), args=args, train_dataset=data, callbacks=[cb])
    t3.train()
    ref3 = cb.tracker.ref
    assert ref3 != ref1
    cb.finish()
    _assert_series(history(store, ref3)["loss"], _losses(t3.state.log_history))
    assert _read(store, ref3).status == "finished" and len(_runs(store)) == 2


def test_hf_predict_metrics_are_logged(store: Path, tmp_path: Path) -> None:
    transformers, args, model_init, data = _setup(tmp_path)
    from aipm_tracking.integrations import AipmTrainerCallback

    cb = AipmTrainerCallback(spool_dir=str(tmp_path / "sp"))
    trainer = transformers.Trainer(model=model_init(), args=args, train_dataset=data,
                                   callbacks=[cb])
    trainer.train()
    out = trainer.predict(data[:8], metric_key_prefix="test")
    assert "test_loss" in out.metrics
    cb.finish()
    got = history(store, cb.tracker.ref)
    assert got["test_loss"] == [(STEPS, pytest.approx(out.metrics["test_loss"]))]
    assert [s for s, _ in got["test_runtime"]] == [STEPS]
    _assert_series(got["loss"], _losses(trainer.state.log_history))  # the same run
    rec = _read(store, cb.tracker.ref)
    assert rec.status == "finished" and rec.metric("test_loss") == pytest.approx(
        out.metrics["test_loss"])


def test_hf_stand_alone_predict_creates_a_run(store: Path, tmp_path: Path) -> None:
    transformers, args, model_init, data = _setup(tmp_path, run_name="predict-only")
    from aipm_tracking.integrations import AipmTrainerCallback

    cb = AipmTrainerCallback(spool_dir=str(tmp_path / "sp"))
    trainer = transformers.Trainer(model=model_init(), args=args, callbacks=[cb])
    out = trainer.predict(data[:8])
    assert cb.tracker is not None and cb.tracker.ref
    cb.finish()
    got = history(store, cb.tracker.ref)
    assert got["test_loss"] == [(0, pytest.approx(out.metrics["test_loss"]))]
    rec = _read(store, cb.tracker.ref)
    assert rec.name == "predict-only" and rec.model.name == "BertForSequenceClassification"
    assert rec.status == "finished"
