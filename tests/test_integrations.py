"""Framework adapters: a few real training steps on the CPU, then what the store holds.

Each test trains a tiny model with the real framework (no downloads: models are built from
configs with random weights) and compares what the Tracker stored, read back through the
local backend's ``read_history``, with the framework's own record of the run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported anywhere
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from aipm_tracking.backends.base import BackendOptions  # noqa: E402
from aipm_tracking.backends.local import LocalBackend  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def history(store: Path, ref: str) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for p in LocalBackend(BackendOptions(store=str(store))).read_history(ref):
        out.setdefault(p.key, []).append((p.step, p.value))
    return out


def test_integrations_import_no_framework() -> None:
    code = ("import sys, aipm_tracking.integrations as i; "
            "bad = [m for m in ('transformers', 'lightning', 'keras', 'torch') "
            "if m in sys.modules]; print(bad); assert not bad, bad")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def _tiny_bert(torch: Any, transformers: Any, n: int) -> tuple[Any, list[dict[str, Any]]]:
    """A one-layer BERT classifier and ``n`` random examples (seeded)."""
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=32,
                                  max_position_embeddings=16, num_labels=2)
    model = transformers.BertForSequenceClassification(cfg)
    g = torch.Generator().manual_seed(1)
    data = [{"input_ids": torch.randint(1, 50, (8,), generator=g),
             "attention_mask": torch.ones(8, dtype=torch.long),
             "labels": torch.tensor(i % 2)} for i in range(n)]
    return model, data


@pytest.mark.slow
def test_transformers_trainer_callback(store: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from aipm_tracking.integrations import AipmTrainerCallback

    model, data = _tiny_bert(torch, transformers, 32)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=6, logging_steps=1,
        per_device_train_batch_size=4, per_device_eval_batch_size=8, eval_strategy="steps",
        eval_steps=3, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
        run_name="hf-tiny", learning_rate=1e-3)
    cb = AipmTrainerCallback(model_version="7", spool_dir=str(tmp_path / "sp"),
                             config={"hf_token": "secret-value"})
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data,
                                   eval_dataset=data[:8], callbacks=[cb])
    trainer.train()
    assert cb.tracker is not None and cb.tracker.ref
    cb.finish()  # the run stays open after train() (a later evaluate() logs into it)
    got = history(store, cb.tracker.ref)
    # the Trainer's own log history is the independent record
    want_loss = [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e]
    want_eval = [(e["step"], e["eval_loss"]) for e in trainer.state.log_history
                 if "eval_loss" in e]
    assert [s for s, _ in want_loss] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _ in got["loss"]] == [s for s, _ in want_loss]
    assert [v for _, v in got["loss"]] == pytest.approx([v for _, v in want_loss])
    assert [s for s, _ in got["eval_loss"]] == [3, 6] == [s for s, _ in want_eval]
    assert [v for _, v in got["eval_loss"]] == pytest.approx([v for _, v in want_eval])
    assert [s for s, _ in got["learning_rate"]] == [1, 2, 3, 4, 5, 6]
    rec = LocalBackend(BackendOptions(store=str(store))).read_run(cb.tracker.ref)
    assert rec.status == "finished" and rec.name == "hf-tiny"
    assert rec.model.version == "7" and rec.config["hf_token"] == "***"


@pytest.mark.slow
def test_lightning_callback(store: Path, tmp_path: Path) -> None:
    """What the run holds is what Lightning hands its own loggers (its ``CSVLogger``, in the
    same trainer, is the independent record): per-step metrics every step, each validation
    when it runs (mid-epoch ones too, none repeated in epochs without one), nothing logged
    with ``logger=False``, all at the loggers' steps; plus the per-step training loss."""
    import csv

    torch = pytest.importorskip("torch")
    pl = pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.loggers import CSVLogger

    from aipm_tracking.integrations import AipmLightningCallback

    seen: list[tuple[int, float]] = []

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.save_hyperparameters({"width": 4})
            self.net = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            seen.append((int(self.global_step), float(loss.detach())))
            self.log("train_mse", loss, on_step=True, on_epoch=True)
            self.log("pbar_only", 123.0, prog_bar=True, logger=False)
            return loss

        def validation_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            x, y = batch
            self.log("val_mse", torch.nn.functional.mse_loss(self.net(x), y))

        def configure_optimizers(self):  # noqa: ANN201
            return torch.optim.SGD(self.parameters(), lr=0.05)

    torch.manual_seed(0)
    x = torch.randn(32, 4)
    ds = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
    dl = torch.utils.data.DataLoader(ds, batch_size=4)  # 8 batches an epoch
    cb = AipmLightningCallback(spool_dir=str(tmp_path / "sp"), run_name="pl-tiny")
    csv_logger = CSVLogger(str(tmp_path / "csv"), name="ref")
    trainer = pl.Trainer(max_epochs=4, accelerator="cpu", logger=csv_logger,
                         log_every_n_steps=1, val_check_interval=0.5,
                         check_val_every_n_epoch=2, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[cb], default_root_dir=str(tmp_path))
    trainer.fit(Tiny(), dl, dl)
    assert cb.tracker is not None and cb.tracker.ref
    assert trainer.loggers == [csv_logger]  # the callback's seat is given back
    cb.finish()
    got = history(store, cb.tracker.ref)

    want: dict[str, list[tuple[int, float]]] = {}
    with open(Path(csv_logger.log_dir) / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                if k != "step" and v != "":
                    want.setdefault(k, []).append((int(row["step"]), float(v)))
    assert {k for k in want if k != "epoch"} == {"train_mse_step", "train_mse_epoch", "val_mse"}
    for k, pts in want.items():
        assert [s for s, _ in got[k]] == [s for s, _ in pts], k
        assert [v for _, v in got[k]] == pytest.approx([v for _, v in pts], rel=1e-6), k
    assert len(want["train_mse_step"]) == 32 and len(want["val_mse"]) == 4  # 2 epochs x 2
    assert "pbar_only" not in got
    assert got["loss"] == [(s, pytest.approx(v)) for s, v in seen]
    assert [s for s, _ in got["loss"]] == list(range(32))  # the loggers' step axis
    rec = LocalBackend(BackendOptions(store=str(store))).read_run(cb.tracker.ref)
    assert rec.status == "finished" and rec.model.name == "Tiny" and rec.config == {"width": 4}


@pytest.mark.slow
def test_lightning_failure_is_recorded(store: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pl = pytest.importorskip("lightning.pytorch")
    from aipm_tracking.integrations import AipmLightningCallback

    class Boom(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            if batch_idx == 2:
                raise RuntimeError("diverged")
            return self.net(batch[0]).sum()

        def configure_optimizers(self):  # noqa: ANN201
            return torch.optim.SGD(self.parameters(), lr=0.1)

    ds = torch.utils.data.TensorDataset(torch.randn(16, 2))
    cb = AipmLightningCallback(spool_dir=str(tmp_path / "sp"))
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[cb])
    with pytest.raises(RuntimeError, match="diverged"):
        trainer.fit(Boom(), torch.utils.data.DataLoader(ds, batch_size=4))
    assert cb.tracker is not None and cb.tracker.ref
    cb.finish()  # Lightning reported the exception: failed
    rec = LocalBackend(BackendOptions(store=str(store))).read_run(cb.tracker.ref)
    assert rec.status == "failed"
    assert [s for s, _ in history(store, cb.tracker.ref)["loss"]] == [0, 1]


@pytest.mark.slow
def test_keras_callback(store: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip(f"keras was imported with backend {keras.backend.backend()!r}")
    import numpy as np

    from aipm_tracking.integrations import AipmKerasCallback

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype("float32")
    y = x.sum(1, keepdims=True).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)], name="tiny")
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", metrics=["mae"])
    batch_logs: list[float] = []
    probe = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: batch_logs.append(float(logs["loss"])))
    cb = AipmKerasCallback(spool_dir=str(tmp_path / "sp"))
    hist = model.fit(x, y, batch_size=10, epochs=2, validation_data=(x[:10], y[:10]),
                     callbacks=[cb, probe], verbose=0)
    assert cb.tracker is not None and cb.tracker.ref
    cb.finish()
    got = history(store, cb.tracker.ref)
    assert [s for s, _ in got["loss"]] == list(range(8))  # 4 batches x 2 epochs
    assert [v for _, v in got["loss"]] == pytest.approx(batch_logs)
    assert [v for _, v in got["epoch/loss"]] == pytest.approx(hist.history["loss"])
    assert [v for _, v in got["epoch/val_loss"]] == pytest.approx(hist.history["val_loss"])
    assert [s for s, _ in got["epoch/val_mae"]] == [3, 7]
    rec = LocalBackend(BackendOptions(store=str(store))).read_run(cb.tracker.ref)
    assert rec.status == "finished" and rec.model.name == "tiny"


@pytest.mark.slow
def test_example_train_torch(store: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = subprocess.run([sys.executable, str(REPO / "examples" / "train_torch.py"),
                          "--steps", "30", "--store", str(store)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    ref = out.stdout.strip().splitlines()[-1]
    got = history(store, ref)
    assert [s for s, _ in got["loss"]] == list(range(30))
    assert "accuracy" in got
    rec = LocalBackend(BackendOptions(store=str(store))).read_run(ref)
    assert rec.status == "finished" and rec.metric("accuracy") is not None
    assert rec.examples is not None


# -- runs stay open after training; a training that raised is "failed" ---------------------
def _script(tmp_path: Path, store: Path, body: str) -> str:
    """Run ``body`` in a fresh interpreter (so the atexit hooks really run); its last stdout
    line is the run's ref."""
    import textwrap

    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(body))
    env = {**os.environ, "AIPM_STORE": str(store), "KERAS_BACKEND": "torch",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def _read(store: Path, ref: str):  # noqa: ANN202
    return LocalBackend(BackendOptions(store=str(store))).read_run(ref)


def test_owner_marks_an_unfinished_training_failed_at_exit(store: Path, tmp_path: Path) -> None:
    """Framework-free: training started, the error was caught, the process exits."""
    ref = _script(tmp_path, store, """
        from aipm_tracking.integrations._owner import TrackerOwner
        o = TrackerOwner(model="m")
        o.ensure()
        o.train_started()
        o.tracker.log(step=0, loss=1.0)
        try:
            raise RuntimeError("diverged")  # the training loop raised, the caller caught it
        except RuntimeError:
            pass
        print(o.tracker.ref)
    """)
    assert _read(store, ref).status == "failed"
    ref = _script(tmp_path, store, """
        from aipm_tracking.integrations._owner import TrackerOwner
        o = TrackerOwner(model="m")
        o.ensure()
        o.train_started()
        o.train_ended()
        print(o.tracker.ref)
    """)
    assert _read(store, ref).status == "finished"


_HF_SETUP = """
    import torch, transformers
    from aipm_tracking.integrations import AipmTrainerCallback

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=32,
                                  max_position_embeddings=16, num_labels=2)
    model = transformers.BertForSequenceClassification(cfg)
    g = torch.Generator().manual_seed(1)
    data = [{"input_ids": torch.randint(1, 50, (8,), generator=g),
             "attention_mask": torch.ones(8, dtype=torch.long),
             "labels": torch.tensor(i % 2)} for i in range(32)]
    args = transformers.TrainingArguments(
        output_dir="out", max_steps=10, logging_steps=1, per_device_train_batch_size=4,
        per_device_eval_batch_size=8, save_strategy="no", report_to=[], use_cpu=True,
        disable_tqdm=True, run_name="hf-run", learning_rate=1e-3)
"""


@pytest.mark.slow
def test_transformers_evaluate_after_train_same_run(store: Path, tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    ref = _script(tmp_path, store, _HF_SETUP + """
    cb = AipmTrainerCallback()
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data,
                                   eval_dataset=data[:8], callbacks=[cb])
    trainer.train()
    final = trainer.evaluate(metric_key_prefix="final")
    print(final["final_loss"])
    print(cb.tracker.ref)  # no finish(): the process exit finishes the run
    """)
    got = history(store, ref)
    assert [s for s, _ in got["final_loss"]] == [10]
    rec = _read(store, ref)
    assert rec.status == "finished" and rec.metric("final_loss") == pytest.approx(
        got["final_loss"][0][1])
    assert len(got["loss"]) == 10


@pytest.mark.slow
def test_transformers_caught_training_error_is_failed(store: Path, tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    ref = _script(tmp_path, store, _HF_SETUP + """
    class Boom(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 7:
                raise RuntimeError("diverged")

    cb = AipmTrainerCallback()
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data,
                                   callbacks=[cb, Boom()])
    try:
        trainer.train()
    except RuntimeError:
        pass
    print(cb.tracker.ref)
    """)
    assert _read(store, ref).status == "failed"
    assert [s for s, _ in history(store, ref)["loss"]] == list(range(1, 7))


@pytest.mark.slow
def test_transformers_evaluate_only_names_the_model(store: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from aipm_tracking.integrations import AipmTrainerCallback

    model, data = _tiny_bert(torch, transformers, 8)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_eval_batch_size=8, report_to=[],
        use_cpu=True, disable_tqdm=True, run_name="eval-only")
    cb = AipmTrainerCallback(spool_dir=str(tmp_path / "sp"))
    trainer = transformers.Trainer(model=model, args=args, eval_dataset=data, callbacks=[cb])
    trainer.evaluate()
    assert cb.tracker is not None and cb.tracker.ref
    cb.finish()
    rec = _read(store, cb.tracker.ref)
    assert rec.model.name == "BertForSequenceClassification" and rec.name == "eval-only"
    assert "eval_loss" in history(store, cb.tracker.ref)
    assert rec.status == "finished"


def _pl_module():  # noqa: ANN202
    torch = pytest.importorskip("torch")
    pl = pytest.importorskip("lightning.pytorch")

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)

        def validation_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            x, y = batch
            self.log("val_mse", torch.nn.functional.mse_loss(self.net(x), y))

        def test_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            x, y = batch
            self.log("test_mse", torch.nn.functional.mse_loss(self.net(x), y))

        def configure_optimizers(self):  # noqa: ANN201
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    x = torch.randn(24, 4)
    ds = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
    return pl, Tiny, torch.utils.data.DataLoader(ds, batch_size=8)


def _pl_trainer(pl, cb, tmp_path: Path):  # noqa: ANN001, ANN202
    return pl.Trainer(max_epochs=2, accelerator="cpu", logger=False,
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[cb],
                      default_root_dir=str(tmp_path))


@pytest.mark.slow
def test_lightning_validate_after_fit_same_run(store: Path, tmp_path: Path) -> None:
    pl, Tiny, dl = _pl_module()
    from aipm_tracking.integrations import AipmLightningCallback
    cb = AipmLightningCallback(spool_dir=str(tmp_path / "sp"))
    trainer = _pl_trainer(pl, cb, tmp_path)
    module = Tiny()
    trainer.fit(module, dl, dl)
    module.net.weight.data.mul_(0.5)  # a different model: validate() must report new numbers
    res = trainer.validate(module, dl)
    tres = trainer.test(module, dl)
    assert cb.tracker is not None and cb.tracker.ref
    cb.finish()
    got = history(store, cb.tracker.ref)
    assert len(got["val_mse"]) == 3  # two epochs of fit + the validate() call
    assert got["val_mse"][-1][1] == pytest.approx(res[0]["val_mse"])
    assert got["val_mse"][-1][1] != pytest.approx(got["val_mse"][-2][1])
    assert got["test_mse"][-1][1] == pytest.approx(tres[0]["test_mse"])
    assert _read(store, cb.tracker.ref).status == "finished"


@pytest.mark.slow
def test_lightning_without_loggers_checkpoints_where_lightning_puts_them(
        store: Path, tmp_path: Path) -> None:
    """With ``logger=False`` the callback is the trainer's only logger while fit runs: the
    checkpoint directory must still be Lightning's own choice (default_root_dir/checkpoints)."""
    pl, Tiny, dl = _pl_module()
    from aipm_tracking.integrations import AipmLightningCallback
    cb = AipmLightningCallback(spool_dir=str(tmp_path / "sp"))
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[cb],
                         default_root_dir=str(tmp_path))
    trainer.fit(Tiny(), dl, dl)
    trainer.fit(Tiny(), dl, dl, ckpt_path="last")  # a second fit of the same trainer
    assert trainer.loggers == []
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()]  # where Lightning puts them
    assert not (tmp_path / "aipm").exists()
    assert cb.tracker is not None and cb.tracker.ref
    cb.finish()
    assert len(history(store, cb.tracker.ref)["val_mse"]) == 2  # the module's self.log


@pytest.mark.slow
def test_lightning_validate_after_finish_goes_to_a_new_run(store: Path, tmp_path: Path) -> None:
    """After ``finish()``, what the callback logs used to go nowhere (a finished Tracker
    ignores ``log``)."""
    pl, Tiny, dl = _pl_module()
    from aipm_tracking.integrations import AipmLightningCallback
    cb = AipmLightningCallback(spool_dir=str(tmp_path / "sp"))
    trainer = _pl_trainer(pl, cb, tmp_path)
    module = Tiny()
    trainer.fit(module, dl, dl)
    assert cb.tracker is not None
    first = cb.tracker.ref
    cb.finish()
    res = trainer.validate(module, dl)
    assert cb.tracker is not None and cb.tracker.ref and cb.tracker.ref != first
    cb.finish()
    got = history(store, cb.tracker.ref)
    assert [v for _, v in got["val_mse"]] == pytest.approx([res[0]["val_mse"]])
    assert _read(store, first).status == _read(store, cb.tracker.ref).status == "finished"


@pytest.mark.slow
def test_lightning_stand_alone_validate_creates_a_run(store: Path, tmp_path: Path) -> None:
    pl, Tiny, dl = _pl_module()
    from aipm_tracking.integrations import AipmLightningCallback
    cb = AipmLightningCallback(spool_dir=str(tmp_path / "sp"), run_name="val-only")
    res = _pl_trainer(pl, cb, tmp_path).validate(Tiny(), dl)
    assert cb.tracker is not None and cb.tracker.ref
    cb.finish()
    got = history(store, cb.tracker.ref)
    assert [v for _, v in got["val_mse"]] == pytest.approx([res[0]["val_mse"]])
    rec = _read(store, cb.tracker.ref)
    assert rec.name == "val-only" and rec.model.name == "Tiny" and rec.status == "finished"


@pytest.mark.slow
def test_lightning_gradient_accumulation_one_loss_per_optimizer_step(
        store: Path, tmp_path: Path) -> None:
    """Lightning hands the callback loss / accumulate_grad_batches for every micro-batch;
    the run gets one point per optimizer step: the mean of its micro-batch losses."""
    torch = pytest.importorskip("torch")
    pl = pytest.importorskip("lightning.pytorch")
    from aipm_tracking.integrations import AipmLightningCallback

    by_step: dict[int, list[float]] = {}

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            # Lightning's own counter: optimizer steps done before this micro-batch's; its
            # loggers log the step's metrics under it
            by_step.setdefault(int(self.global_step), []).append(float(loss.detach()))
            return loss

        def configure_optimizers(self):  # noqa: ANN201
            return torch.optim.SGD(self.parameters(), lr=0.01)

    torch.manual_seed(0)
    x = torch.randn(40, 4)  # 5 batches an epoch: two full windows of 2, then one of 1
    dl = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
    cb = AipmLightningCallback(spool_dir=str(tmp_path / "sp"))
    trainer = pl.Trainer(max_epochs=2, accumulate_grad_batches=2, accelerator="cpu",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[cb],
                         default_root_dir=str(tmp_path))
    trainer.fit(Tiny(), dl)
    assert cb.tracker is not None and cb.tracker.ref
    cb.finish()
    got = history(store, cb.tracker.ref)["loss"]
    assert trainer.global_step == 6 and sorted(len(v) for v in by_step.values()) == [1, 1, 2,
                                                                                      2, 2, 2]
    assert [s for s, _ in got] == sorted(by_step) == list(range(6))
    assert [v for _, v in got] == pytest.approx([sum(v) / len(v) for _, v in
                                                 sorted(by_step.items())])


@pytest.mark.slow
def test_keras_caught_training_error_is_failed(store: Path, tmp_path: Path) -> None:
    pytest.importorskip("keras")
    pytest.importorskip("torch")
    ref = _script(tmp_path, store, """
    import numpy as np, keras
    from aipm_tracking.integrations import AipmKerasCallback

    x = np.random.default_rng(0).normal(size=(40, 4)).astype("float32")
    y = x.sum(1, keepdims=True)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)], name="tiny")
    model.compile(optimizer="sgd", loss="mse")

    def boom(batch, logs):
        if batch == 2:
            raise RuntimeError("diverged")

    cb = AipmKerasCallback()
    try:
        model.fit(x, y, batch_size=10, epochs=1, verbose=0,
                  callbacks=[cb, keras.callbacks.LambdaCallback(on_train_batch_end=boom)])
    except RuntimeError:
        pass
    print(cb.tracker.ref)
    """)
    assert _read(store, ref).status == "failed"
