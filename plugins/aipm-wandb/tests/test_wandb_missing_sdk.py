"""The plugin installed without its SDK (`pip install --no-deps aipm-wandb`): one clear line
and exit 2, not an internal error. The SDK cannot be uninstalled inside a test, so it is
blocked the standard way: `sys.modules["wandb"] = None` makes `import wandb` fail."""

from __future__ import annotations

import sys

import pytest

from aipm_tracking.errors import UsageError


def test_backend_without_its_sdk_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from aipm_tracking.plugins import get_backend

    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(UsageError, match=r"needs the wandb package: pip install 'wandb"):
        get_backend("wandb")


def test_cli_without_the_sdk_prints_one_line_and_exits_2(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from aipm_tracking.cli import main

    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(SystemExit) as exc:
        main(["runs", "show", "wandb:ent/proj/abc123"])
    assert exc.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "pip install 'wandb" in lines[0], lines
