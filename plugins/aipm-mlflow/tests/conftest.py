"""Fixtures of the aipm-mlflow tests: a real MLflow SQLite store per test, one real
``mlflow server`` per session (127.0.0.1, free port, ``--workers 1``), and an environment
that no test can leak into another."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from aipm_mlflow.testing import Server, start_server

_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Own store dir; fast, bounded HTTP retries (3 tries, no sleeps); nothing leaks."""
    monkeypatch.setenv("AIPM_STORE", str(tmp_path / "store"))
    monkeypatch.delenv("AIPM_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    for k, v in _ENV_DEFAULTS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)  # plain mlflow code must not write into the repo
    from aipm_tracking import plugins

    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture(scope="session")
def sqlite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real MLflow 3 SQLite tracking store, shared by the session (creating its schema
    takes seconds); tests keep apart by using their own experiment names."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow-sqlite') / 'mlflow.db'}"


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real ``mlflow server`` for the whole session (startup takes ~15-30 s here)."""
    d = tmp_path_factory.mktemp("mlflow-server")
    try:
        server = start_server(f"sqlite:///{d / 'server.db'}", d / "artifacts", workers=1,
                              timeout_s=120)
    except RuntimeError as e:  # pragma: no cover - the environment cannot run a server
        pytest.fail(f"could not start mlflow server: {e}")
    yield server
    server.stop()
