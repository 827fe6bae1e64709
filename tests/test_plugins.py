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
    listing = run_cli("--help", env=_env(plugin_path))
    assert listing.returncode == 0
    assert "tried to replace command 'compare'" in listing.stderr
    assert "hijacked" not in run_cli("compare", "a.csv", "b.csv", env=_env(plugin_path)).stdout


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
    from importlib.metadata import PackageNotFoundError, distribution, entry_points

    for dist in ("aipm-mlflow", "aipm-wandb"):
        try:
            distribution(dist)
        except PackageNotFoundError:  # a core-only install ('make test' installs both)
            pytest.skip(f"{dist} is not installed in this environment")
    names = {ep.name for ep in entry_points(group="aipm_tracking")}
    assert {"mlflow", "wandb"} <= names
    from aipm_tracking import plugins

    assert {"mlflow", "wandb"} <= set(plugins.backend_schemes())



def test_a_missing_backend_plugin_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # blocked by name: says so (the plugin is installed)
    out = run_cli("runs", "show", "mlflow:0123456789abcdef0123456789abcdef",
                  env={"AIPM_DISABLE_PLUGINS": "mlflow"})
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "blocked by AIPM_DISABLE_PLUGINS" in lines[0], lines
    # an unknown scheme: no package to name
    out = run_cli("runs", "show", "acme:run1")
    assert out.returncode == 2 and "is the plugin installed?" in out.stderr
    # not installed (the plugins cannot be uninstalled in a test: their registration is
    # taken out of the loaded host, which is what a core-only install has)
    from aipm_tracking import plugins
    from aipm_tracking.errors import UsageError

    h = plugins.host()
    try:
        h.pm.set_blocked("wandb")  # unregisters it
        monkeypatch.setattr(h, "infos", [i for i in h.infos if i.name != "wandb"])
        with pytest.raises(UsageError, match=r"install its plugin: pip install aipm-wandb"):
            plugins.get_backend("wandb")
    finally:
        plugins.reset()

EVENTS = '''
import json, os
from aipm_tracking import hookimpl

@hookimpl
def aipm_run_logged(record, ref):
    with open(os.environ["EVENT_LOG"], "a") as f:
        f.write(json.dumps({"event": "logged", "ref": ref, "model": record.model.name}) + "\\n")

@hookimpl
def aipm_comparison_done(comparison):
    with open(os.environ["EVENT_LOG"], "a") as f:
        f.write(json.dumps({"event": "compared", "verdict": comparison.verdict}) + "\\n")
    raise RuntimeError("alert service down")
'''


def test_event_hooks_fire_and_failures_are_warnings(plugin_path: Path, tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd

    _make_dist(plugin_path, "aipm-events", EVENTS)
    log = tmp_path / "events.jsonl"
    env = _env(plugin_path, EVENT_LOG=str(log))
    n = 200
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"example_id": np.arange(n), "label": rng.integers(0, 3, n),
                       "prediction": rng.integers(0, 3, n), "confidence": rng.random(n)})
    path = tmp_path / "e.csv"
    df.to_csv(path, index=False)
    out = run_cli("log", str(path), "--model", "m", env=env)
    assert out.returncode == 0, out.stderr
    ref = out.stdout.strip().splitlines()[-1]
    cmp = run_cli("compare", ref, ref, env=env)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    assert "plugin 'aipm_events' failed in aipm_comparison_done" in cmp.stderr
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert events == [{"event": "logged", "ref": ref, "model": "m"},
                      {"event": "compared", "verdict": "pass"}]


BACKEND_AND_REPORTER = '''
from aipm_tracking import hookimpl
from aipm_tracking.backends.base import BaseBackend
from aipm_tracking.errors import RunNotFoundError
from aipm_tracking.schema import RunRecord, ModelInfo, MetricValue

class Memory(BaseBackend):
    scheme = "memory"
    def __init__(self, options):
        self.options = options
    def read_run(self, locator, *, with_examples=True):
        if locator not in ("a", "b"):
            raise RunNotFoundError(f"no run {locator!r} in memory")
        acc = 0.9 if locator == "a" else 0.7
        return RunRecord(run_id=locator, name=locator, model=ModelInfo("m", locator),
                         metrics={"val/acc": MetricValue(acc)})

@hookimpl
def aipm_register_backends(register):
    register("memory", Memory)

@hookimpl
def aipm_register_reporters(register):
    register("verdict-only", lambda cmp, opts: cmp.verdict + "\\n")
'''

DUPLICATE_BACKEND = '''
from aipm_tracking import hookimpl

@hookimpl
def aipm_register_backends(register):
    register("local", object)
'''


def test_plugin_backend_and_reporter_through_compare(plugin_path: Path, tmp_path: Path) -> None:
    _make_dist(plugin_path, "aipm-memory", BACKEND_AND_REPORTER)
    g = tmp_path / "g.yaml"
    g.write_text('version: 1\nmetric_map: {"val/acc": accuracy}\n'
                 "metrics:\n  accuracy: {max_regression: 0.05}\n")
    out = run_cli("compare", "memory:a", "memory:b", "--guardrails", str(g),
                  "--format", "verdict-only", env=_env(plugin_path))
    assert out.stdout.strip() == "fail", out.stdout + out.stderr
    assert out.returncode == 1
    missing = run_cli("runs", "show", "memory:zzz", env=_env(plugin_path))
    assert missing.returncode == 2 and "no run 'zzz' in memory" in missing.stderr


def test_a_plugin_claiming_a_builtin_scheme_is_a_warning_not_a_crash(plugin_path: Path) -> None:
    """Contract §8: a failing plugin is never a crash of every command. A plugin claiming
    'local' used to make every command (even `aipm plugins`) exit 2."""
    _make_dist(plugin_path, "aipm-dup", DUPLICATE_BACKEND)
    out = run_cli("runs", "list", env=_env(plugin_path))
    assert out.returncode == 0, out.stderr
    assert "plugin 'aipm_dup' registers backend 'local', which is built in" in out.stderr
    assert out.stderr.count("registers backend 'local'") == 1  # warned once
    listing = run_cli("plugins", "--format", "json", env=_env(plugin_path))
    assert listing.returncode == 0
    dup = next(p for p in json.loads(listing.stdout)["plugins"] if p["name"] == "aipm_dup")
    assert "not replaced" in dup["error"]


SECOND_MEMORY = """
from aipm_tracking import hookimpl
from aipm_tracking.metrics import MetricDef

@hookimpl
def aipm_register_backends(register):
    register("memory", object)

@hookimpl
def aipm_register_metrics(register):
    register(MetricDef("accuracy", "lower", "", "hijack"))
"""


def test_two_third_party_plugins_claiming_one_scheme(plugin_path: Path) -> None:
    """Neither gets the scheme (which one would win is up to install order): using it names
    both; every other command works."""
    _make_dist(plugin_path, "aipm-memory", BACKEND_AND_REPORTER)
    _make_dist(plugin_path, "aipm-memory2", SECOND_MEMORY)
    env = _env(plugin_path)
    ok = run_cli("runs", "list", env=env)
    assert ok.returncode == 0, ok.stderr
    assert "backend 'memory' registered by both" in ok.stderr
    used = run_cli("runs", "show", "memory:a", env=env)
    assert used.returncode == 2
    assert used.stderr.strip().splitlines()[-1].startswith(
        "aipm: error: backend 'memory:' is registered by both"), used.stderr
    assert "aipm_memory" in used.stderr and "aipm_memory2" in used.stderr
    metrics = run_cli("metrics", "--format", "json", env=env)  # the built-in keeps its name
    assert metrics.returncode == 0, metrics.stderr
    acc = next(m for m in json.loads(metrics.stdout) if m["name"] == "accuracy")
    assert acc["direction"] == "higher" and "registered twice" in metrics.stderr
