"""The plugin installed without its SDK (`pip install --no-deps aipm-mlflow`): one clear line
and exit 2, not an internal error. The SDK cannot be uninstalled inside a test, so it is
blocked the standard way: `sys.modules["mlflow"] = None` makes `import mlflow` fail."""

from __future__ import annotations

import sys

import pytest

from aipm_tracking.errors import UsageError


def test_backend_without_its_sdk_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from aipm_tracking.plugins import get_backend

    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(UsageError, match=r"needs the mlflow package: pip install 'mlflow"):
        get_backend("mlflow")


def test_cli_without_the_sdk_prints_one_line_and_exits_2(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from aipm_tracking.cli import main

    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(SystemExit) as exc:
        main(["runs", "show", "mlflow:0123456789abcdef0123456789abcdef"])
    assert exc.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "pip install 'mlflow" in lines[0], lines
