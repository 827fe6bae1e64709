"""Docs stay true: every hook documented (docstring + docs/hooks.md) and tested; metrics listed."""

from __future__ import annotations

import inspect
import re

import pytest
from conftest import REPO

from aipm_tracking import hookspecs
from aipm_tracking.metrics import BUILTIN_METRICS

HOOKS = sorted(n for n, f in vars(hookspecs).items()
               if n.startswith("aipm_") and inspect.isfunction(f))


def test_there_are_hooks() -> None:
    assert len(HOOKS) >= 6


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_docstring_and_types(hook: str) -> None:
    fn = getattr(hookspecs, hook)
    doc = inspect.getdoc(fn) or ""
    assert ":return:" in doc and ":param" in doc, f"{hook} docstring lacks params/return"
    sig = inspect.signature(fn)
    assert all(p.annotation is not inspect.Parameter.empty for p in sig.parameters.values())


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_documented_in_docs(hook: str) -> None:
    text = (REPO / "docs" / "hooks.md").read_text()
    assert re.search(rf"^##+ `?{hook}\b", text, re.M), f"docs/hooks.md has no section for {hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_exercised_by_a_test(hook: str) -> None:
    tests = list((REPO / "tests").glob("test_*.py")) + list(REPO.glob("plugins/*/tests/test_*.py"))
    users = [p for p in tests if p.name != "test_docs.py" and hook in p.read_text()]
    assert users, f"no test mentions {hook}"


def test_every_builtin_metric_is_documented() -> None:
    text = (REPO / "docs" / "metrics.md").read_text()
    for m in BUILTIN_METRICS:
        assert f"`{m.name}`" in text, m.name


def test_readme_starts_with_the_two_commands() -> None:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, re.S)
    first_cmds = [ln.split("#", 1)[0].strip() for b in blocks for ln in b.splitlines()
                  if ln.strip() and not ln.strip().startswith("#")][:2]
    assert first_cmds == ["make demo", "make test"]


def test_readme_mentions_every_cli_command() -> None:
    from aipm_tracking.cli import LAZY_COMMANDS

    text = (REPO / "README.md").read_text()
    for cmd in LAZY_COMMANDS:
        assert f"aipm {cmd}" in text, cmd
