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


@pytest.mark.slow
def test_transformers_trainer_callback(store: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
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
    torch = pytest.importorskip("torch")
    pl = pytest.importorskip("lightning.pytorch")
    from aipm_tracking.integrations import AipmLightningCallback

    seen: list[float] = []

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.save_hyperparameters({"width": 4})
            self.net = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            seen.append(float(loss.detach()))
            self.log("train_mse", loss, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            x, y = batch
            self.log("val_mse", torch.nn.functional.mse_loss(self.net(x), y))

        def configure_optimizers(self):  # noqa: ANN201
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    x = torch.randn(24, 4)
    ds = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
    dl = torch.utils.data.DataLoader(ds, batch_size=8)
    cb = AipmLightningCallback(spool_dir=str(tmp_path / "sp"), run_name="pl-tiny")
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[cb],
                         default_root_dir=str(tmp_path))
    trainer.fit(Tiny(), dl, dl)
    assert cb.tracker is not None and cb.tracker.ref
    got = history(store, cb.tracker.ref)
    assert [s for s, _ in got["loss"]] == list(range(1, 7))  # global_step after each batch
    assert [v for _, v in got["loss"]] == pytest.approx(seen)
    assert [s for s, _ in got["val_mse"]] == [3, 6]
    assert got["val_mse"][-1][1] == pytest.approx(float(trainer.callback_metrics["val_mse"]))
    assert got["train_mse"][-1][1] == pytest.approx(float(trainer.callback_metrics["train_mse"]))
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
    rec = LocalBackend(BackendOptions(store=str(store))).read_run(cb.tracker.ref)
    assert rec.status == "failed"
    assert [s for s, _ in history(store, cb.tracker.ref)["loss"]] == [1, 2]


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
