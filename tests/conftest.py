"""Shared fixtures: an isolated store and environment for every test."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test gets its own store, no plugin blocks, no W&B/MLflow leakage."""
    monkeypatch.setenv("AIPM_STORE", str(tmp_path / "store"))
    monkeypatch.delenv("AIPM_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("AIPM_DEBUG", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from aipm_tracking import plugins

    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def aipm_bin() -> list[str]:
    """The CLI as a subprocess command (the real console script path)."""
    exe = Path(sys.executable).with_name("aipm")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "aipm_tracking"]


def run_cli(*args: str, env: dict[str, str] | None = None, input: str | None = None):
    """Run ``aipm`` in a subprocess; returns CompletedProcess (text)."""
    import subprocess

    exe = Path(sys.executable).with_name("aipm")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "aipm_tracking"]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=full_env,
                          input=input, timeout=300)
