"""The `aipm` CLI with W&B references: log/show/list/history offline, compare/pull via a server."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from aipm_wandb.offline import read_local_run
from fake_wandb_server import FakeWandbServer
from scipy.stats import binomtest
from wb_helpers import synced_run

from aipm_tracking import plugins
from aipm_tracking.cli import main

GUARDRAILS = """\
version: 1
name: wandb-cli-test
fallback_threshold: 0.5
metrics:
  accuracy: {min: 0.5, max_regression: 0.01}
  latency_ms_p95: {max: 100000}
"""


def _eval(path: Path, acc: float, seed: int, n: int = 400) -> pd.DataFrame:
    label = np.random.default_rng(99).integers(0, 4, n)  # the same eval set for every model
    rng = np.random.default_rng(seed)
    correct = rng.random(n) < acc
    df = pd.DataFrame({
        "example_id": np.arange(n),
        "label": label.astype(str),
        "prediction": np.where(correct, label, (label + 1) % 4).astype(str),
        "confidence": rng.uniform(0.3, 1.0, n).round(4),
        "latency_ms": rng.lognormal(5, 0.3, n).round(2),
        "slice": np.where(rng.random(n) < 0.5, "de", "en"),
    })
    df.to_csv(path, index=False)
    return df


def aipm(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    plugins.reset()
    capsys.readouterr()
    code = 0
    try:
        main(list(args))
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def evals(tmp_path: Path) -> dict[str, tuple[Path, pd.DataFrame]]:
    out = {}
    for name, acc, seed in (("base", 0.9, 1), ("cand", 0.78, 2)):
        p = tmp_path / f"{name}.csv"
        out[name] = (p, _eval(p, acc, seed))
    (tmp_path / "g.yaml").write_text(GUARDRAILS)
    return out


def _log(capsys: pytest.CaptureFixture[str], path: Path, version: str) -> str:
    code, out, err = aipm(capsys, "log", str(path), "--model", "bot", "--model-version",
                          version, "--to", "wandb:acme/bots")
    assert code == 0, err
    ref = out.strip().splitlines()[-1]
    assert ref.startswith("wandb:/") and "offline-run-" in ref
    return ref


def test_log_show_list_history_offline(capsys: pytest.CaptureFixture[str], offline: Path,
                                       evals: dict[str, tuple[Path, pd.DataFrame]]) -> None:
    path, df = evals["base"]
    ref = _log(capsys, path, "1")
    code, out, err = aipm(capsys, "runs", "show", ref, "--format", "json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["model"] == {"name": "bot", "version": "1"}
    assert shown["metrics"]["accuracy"] == pytest.approx((df.label == df.prediction).mean())
    assert shown["metrics"]["latency_ms_p95"] == pytest.approx(
        np.percentile(df.latency_ms, 95))

    _log(capsys, evals["cand"][0], "2")
    code, out, err = aipm(capsys, "runs", "list", "--from", f"wandb:{offline / 'wandb'}",
                          "--format", "json")
    assert code == 0, err
    listed = json.loads(out)
    versions = sorted(r["model"]["version"] for r in (listed if isinstance(listed, list)
                                                      else listed["runs"]))
    assert versions == ["1", "2"]

    lr = read_local_run(ref.split(":", 1)[1])
    assert lr.summary["accuracy"] == pytest.approx(shown["metrics"]["accuracy"])


def test_log_with_guardrails_fills_the_guardrail_table(
        capsys: pytest.CaptureFixture[str], offline: Path,
        evals: dict[str, tuple[Path, pd.DataFrame]]) -> None:
    from aipm_wandb.offline import read_table_file

    path, df = evals["cand"]  # 78 % accuracy: passes min 0.5; max_regression needs a baseline
    code, out, err = aipm(capsys, "log", str(path), "--model", "bot", "--model-version", "2",
                          "--guardrails", str(path.parent / "g.yaml"), "--to", "wandb:acme/bots")
    assert code == 0, err
    lr = read_local_run(out.strip().splitlines()[-1].split(":", 1)[1])
    table = read_table_file(lr.run_dir, lr.summary["aipm/guardrails"])
    rows = {r[0]: r for r in table.itertuples(index=False)}
    # all six fields of details["guardrails"] (DESIGN §11)
    assert list(table.columns) == ["metric", "threshold", "value", "verdict", "severity",
                                   "reason"]
    assert rows["accuracy"][1] == "min 0.5 · max_regression 0.01"
    assert rows["accuracy"][2] == pytest.approx((df.label == df.prediction).mean())
    assert rows["accuracy"][3] == "pass"
    assert rows["accuracy"][4] == "block" and rows["accuracy"][5] == "within bounds"
    assert rows["latency_ms_p95"][2] == pytest.approx(np.percentile(df.latency_ms, 95))
    assert rows["latency_ms_p95"][3] == "pass"


def test_compare_two_server_runs_and_store_the_review(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, server: FakeWandbServer,
        monkeypatch: pytest.MonkeyPatch, evals: dict[str, tuple[Path, pd.DataFrame]]) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "written"))
    ids = {}
    for name, version in (("base", "1"), ("cand", "2")):
        ref = _log(capsys, evals[name][0], version)
        fake = server.add_run(synced_run(ref.split(":", 1)[1], "acme", "bots"))
        ids[name] = fake.run_id
    monkeypatch.setenv("WANDB_MODE", "online")

    code, out, err = aipm(capsys, "compare", f"wandb:acme/bots/{ids['base']}",
                          f"wandb:acme/bots/{ids['cand']}", "--guardrails",
                          str(tmp_path / "g.yaml"), "--format", "json")
    assert code == 1, err
    doc = json.loads(out)
    assert doc["verdict"] == "fail" and doc["exit_code"] == 1
    assert doc["baseline"]["ref"] == f"wandb:acme/bots/{ids['base']}"
    row = next(r for r in doc["metrics"] if r["metric"] == "accuracy" and not r["slice"])
    b, c = evals["base"][1], evals["cand"][1]
    b_ok, c_ok = (b.label == b.prediction).to_numpy(), (c.label == c.prediction).to_numpy()
    assert row["baseline"] == pytest.approx(b_ok.mean())
    assert row["candidate"] == pytest.approx(c_ok.mean())
    assert row["test"] == "mcnemar-exact"  # per-example tables came back from W&B, paired
    n01, n10 = int((b_ok & ~c_ok).sum()), int((~b_ok & c_ok).sum())
    assert row["p_value"] == pytest.approx(binomtest(n10, n01 + n10, 0.5).pvalue, rel=1e-6)
    assert server.unknown == []

    # the same comparison stored for review in W&B (offline), with an alert: it blocks
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "reviews"))
    code, out, err = aipm(capsys, "compare", f"wandb:acme/bots/{ids['base']}",
                          f"wandb:acme/bots/{ids['cand']}", "--guardrails",
                          str(tmp_path / "g.yaml"), "--format", "json",
                          "--to", "wandb:acme/reviews")
    assert code == 1, err
    (run_dir,) = glob.glob(str(tmp_path / "reviews" / "wandb" / "offline-run-*"))
    lr = read_local_run(run_dir)
    assert lr.project == "reviews" and len(lr.alerts) == 1
    assert "accuracy" in lr.alerts[0]["text"] and lr.summary["aipm/exit_code"] == 1


def test_pull_into_store_and_push_back(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, server: FakeWandbServer,
        monkeypatch: pytest.MonkeyPatch, evals: dict[str, tuple[Path, pd.DataFrame]]) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "written"))
    ref = _log(capsys, evals["base"][0], "1")
    fake = server.add_run(synced_run(ref.split(":", 1)[1], "acme", "bots"))
    monkeypatch.setenv("WANDB_MODE", "online")
    store = str(tmp_path / "store")
    code, out, err = aipm(capsys, "--store", store, "pull", f"wandb:acme/bots/{fake.run_id}")
    assert code == 0, err
    local = out.strip().splitlines()[-1]
    assert local.startswith("local:")
    code, out, err = aipm(capsys, "--store", store, "runs", "show", local, "--format", "json")
    shown = json.loads(out)
    df = evals["base"][1]
    assert shown["metrics"]["accuracy"] == pytest.approx((df.label == df.prediction).mean())
    assert shown["model"] == {"name": "bot", "version": "1"}

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "pushed"))
    code, out, err = aipm(capsys, "--store", store, "push", local, "--to", "wandb:acme/copy")
    assert code == 0, err
    pushed = out.strip().splitlines()[-1]
    lr = read_local_run(pushed.split(":", 1)[1])
    assert lr.project == "copy" and lr.summary["accuracy"] == pytest.approx(
        shown["metrics"]["accuracy"])
    rj = json.loads(Path(lr.files_dir, "aipm", "run.json").read_text())
    assert rj["tags"]["aipm.source_ref"] == local


def test_history_of_a_server_run(capsys: pytest.CaptureFixture[str],
                                 server: FakeWandbServer) -> None:
    from fake_wandb_server import FakeRun

    server.add_run(FakeRun("acme", "legacy", "h1story", history=[
        {"_step": s, "loss": 1 / (s + 1), "_timestamp": 1.7e9 + s} for s in range(7)]))
    code, out, err = aipm(capsys, "runs", "history", "wandb:acme/legacy/h1story", "--keys",
                          "loss", "--format", "csv")
    assert code == 0, err
    got = pd.read_csv(__import__("io").StringIO(out))
    assert got["step"].tolist() == list(range(7))
    assert got["value"].to_numpy() == pytest.approx([1 / (s + 1) for s in range(7)])


def test_cross_backend_compare_mlflow_vs_wandb(
        capsys: pytest.CaptureFixture[str], offline: Path,
        evals: dict[str, tuple[Path, pd.DataFrame]]) -> None:
    pytest.importorskip("aipm_mlflow", reason="the MLflow plugin is a separate distribution")
    uri = f"sqlite:///{offline / 'mlflow.db'}"
    code, out, err = aipm(capsys, "--mlflow-uri", uri, "log", str(evals["base"][0]), "--model",
                          "bot", "--model-version", "1", "--to", "mlflow:bots")
    assert code == 0, err
    base_ref = out.strip().splitlines()[-1]
    assert base_ref.startswith("mlflow:")
    cand_ref = _log(capsys, evals["cand"][0], "2")
    code, out, err = aipm(capsys, "--mlflow-uri", uri, "compare", base_ref, cand_ref,
                          "--guardrails", str(offline / "g.yaml"), "--format", "json")
    assert code == 1, err
    doc = json.loads(out)
    row = next(r for r in doc["metrics"] if r["metric"] == "accuracy" and not r["slice"])
    b, c = evals["base"][1], evals["cand"][1]
    assert row["baseline"] == pytest.approx((b.label == b.prediction).mean())
    assert row["candidate"] == pytest.approx((c.label == c.prediction).mean())
    assert row["test"] == "mcnemar-exact" and row["verdict"] in ("regression", "breach")
    assert doc["candidate"]["ref"] == cand_ref
