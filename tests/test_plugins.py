"""Plugin loading through real entry points (a dist-info on sys.path), not monkeypatching."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from conftest import run_cli


def _make_dist(root: Path, name: str, module_src: str, ep_name: str | None = None) -> None:
    """Write an installed-looking distribution: a module + NAME.dist-info with an entry point."""
    mod = name.replace("-", "_")
    (root / f"{mod}.py").write_text(textwrap.dedent(module_src))
    info = root / f"{mod}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[aipm_tracking]\n{ep_name or mod} = {mod}\n")


GOOD = '''
from aipm_tracking import hookimpl
from aipm_tracking.metrics import MetricDef
import click

@hookimpl
def aipm_register_metrics(register):
    register(MetricDef("helpfulness", "higher", "score", "LLM-judge helpfulness (1-5)."))

@hookimpl
def aipm_register_commands(cli):
    @click.command("hello")
    def hello():
        """Say hello from a plugin."""
        click.echo("hello from plugin")
    cli.add_command(hello)
'''

BROKEN = '''
raise RuntimeError("boom at import")
'''

UNKNOWN_HOOK = '''
from aipm_tracking import hookimpl

@hookimpl
def aipm_no_such_hook(x):
    return x
'''

HIJACK = '''
from aipm_tracking import hookimpl
import click

@hookimpl
def aipm_register_commands(cli):
    @click.command("compare")
    def evil():
        click.echo("hijacked")
    cli.add_command(evil)
'''


@pytest.fixture
def plugin_path(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    return root


def _env(root: Path, **extra: str) -> dict[str, str]:
    pp = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    return {"PYTHONPATH": pp, **extra}


def test_third_party_plugin_adds_metric_and_command(plugin_path: Path) -> None:
    _make_dist(plugin_path, "aipm-good", GOOD)
    env = _env(plugin_path)
    out = run_cli("metrics", "--format", "json", env=env)
    assert out.returncode == 0, out.stderr
    names = {m["name"]: m for m in json.loads(out.stdout)}
    assert names["helpfulness"]["direction"] == "higher"
    assert names["helpfulness"]["source"] == "aipm_good"
    hello = run_cli("hello", env=env)
    assert hello.returncode == 0 and hello.stdout.strip() == "hello from plugin"
    plugins = json.loads(run_cli("plugins", "--format", "json", env=env).stdout)
    good = [p for p in plugins["plugins"] if p["name"] == "aipm_good"][0]
    assert good["version"] == "1.2.3"
    assert "aipm_register_metrics" in good["hooks"] and good["error"] is None


def test_broken_plugin_is_a_warning_not_a_crash(plugin_path: Path) -> None:
    _make_dist(plugin_path, "aipm-broken", BROKEN)
    out = run_cli("metrics", env=_env(plugin_path))
    assert out.returncode == 0
    assert "accuracy" in out.stdout
    assert "plugin 'aipm_broken'" in out.stderr and "boom at import" in out.stderr
    listed = json.loads(run_cli("plugins", "--format", "json", env=_env(plugin_path)).stdout)
    broken = [p for p in listed["plugins"] if p["name"] == "aipm_broken"][0]
    assert "boom at import" in broken["error"]


def test_disable_plugins_blocks_by_name(plugin_path: Path) -> None:
    _make_dist(plugin_path, "aipm-broken", BROKEN)
    _make_dist(plugin_path, "aipm-good", GOOD)
    out = run_cli("metrics", "--format", "json",
                  env=_env(plugin_path, AIPM_DISABLE_PLUGINS="aipm_broken,aipm_good"))
    assert out.returncode == 0
    assert "boom" not in out.stderr
    assert "helpfulness" not in {m["name"] for m in json.loads(out.stdout)}


def test_check_pending_rejects_unknown_hook(plugin_path: Path) -> None:
    _make_dist(plugin_path, "aipm-typo", UNKNOWN_HOOK)
    out = run_cli("plugins", "--format", "json", env=_env(plugin_path))
    assert out.returncode == 0
    assert "aipm_typo" in out.stderr and "disabled" in out.stderr
    typo = [p for p in json.loads(out.stdout)["plugins"] if p["name"] == "aipm_typo"][0]
    assert "aipm_no_such_hook" in typo["error"]


def test_plugin_cannot_replace_builtin_command(plugin_path: Path) -> None:
    _make_dist(plugin_path, "aipm-hijack", HIJACK)
    out = run_cli("compare", "--help", env=_env(plugin_path))
    assert "hijacked" not in out.stdout
    assert "BASELINE" in out.stdout
    assert "tried to replace command 'compare'" in out.stderr


def test_metric_name_collision_names_both_plugins() -> None:
    from aipm_tracking.errors import PluginError
    from aipm_tracking.metrics import MetricDef, MetricRegistry

    reg = MetricRegistry([MetricDef("x", "higher", "", "", source="a")])
    with pytest.raises(PluginError, match="'x' registered twice .*a.*b"):
        reg.register(MetricDef("x", "lower", "", "", source="b"))


def test_builtins_load_through_the_plugin_path() -> None:
    from aipm_tracking import plugins

    infos = {i.name: i for i in plugins.plugin_infos()}
    for name in plugins.DEFAULT_PLUGINS:
        assert infos[name].source == "builtin" and infos[name].error is None, infos[name]
    assert "local" in plugins.backend_schemes()
    assert {"table", "json", "markdown"} <= set(plugins.reporter_names())


def test_installed_backend_plugins_are_registered() -> None:
    """The two backend distributions in this repo register through the entry-point group."""
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group="aipm_tracking")}
    assert {"mlflow", "wandb"} <= names
    from aipm_tracking import plugins

    assert {"mlflow", "wandb"} <= set(plugins.backend_schemes())
