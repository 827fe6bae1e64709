"""Fixtures for the W&B plugin tests: real wandb SDK offline, a loopback fake server.

No request may leave the machine: before wandb (or its Go sidecar) starts, every test
session points ``WANDB_BASE_URL`` at a closed loopback port and routes any other host
through a proxy on a closed loopback port (Go and Python clients honour
``HTTP(S)_PROXY``; loopback itself is never proxied). Tests that need a server start
:class:`FakeWandbServer` on 127.0.0.1 and point ``WANDB_BASE_URL`` at it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, os.path.dirname(__file__))

_HOME = tempfile.mkdtemp(prefix="aipm-wandb-tests-")
_DEAD = "http://127.0.0.1:9"  # discard port: connection refused
os.environ.update({
    "WANDB_SILENT": "true",
    "WANDB_BASE_URL": _DEAD,
    "WANDB_API_KEY": "a" * 40,  # dummy, 40 chars like a real key
    "WANDB_CONFIG_DIR": os.path.join(_HOME, "config"),
    "WANDB_CACHE_DIR": os.path.join(_HOME, "cache"),
    "WANDB_DATA_DIR": os.path.join(_HOME, "data"),
    "WANDB_DIR": _HOME,
    "WANDB_DISABLE_GIT": "true",
    "WANDB_DISABLE_CODE": "true",
    "HTTP_PROXY": _DEAD, "HTTPS_PROXY": _DEAD, "http_proxy": _DEAD, "https_proxy": _DEAD,
    "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
    "AIPM_WANDB_RETRY_MAX": "3",
    "AIPM_WANDB_RETRY_WAIT_MIN_S": "0.05",
    "AIPM_WANDB_RETRY_WAIT_MAX_S": "2",
})
os.environ.pop("WANDB_MODE", None)

from fake_wandb_server import FakeWandbServer  # noqa: E402
from wb_helpers import make_examples  # noqa: E402


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """wandb in offline mode writing under ``tmp_path``."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWandbServer]:
    srv = FakeWandbServer().start()
    monkeypatch.setenv("WANDB_BASE_URL", srv.url)
    # explicit: wandb caches the mode it first saw in this process (its global settings)
    monkeypatch.setenv("WANDB_MODE", "online")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def examples() -> pd.DataFrame:
    return make_examples()
