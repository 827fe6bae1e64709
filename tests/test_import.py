"""Start-up stays light: the CLI module and plugin loading import no heavy library."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("wandb", "mlflow", "pandas", "pyarrow", "matplotlib", "scipy", "sklearn", "torch")


def _imported_after(code: str) -> list[str]:
    probe = f"""
import sys, json
{code}
print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cli_import_is_light() -> None:
    assert _imported_after("import aipm_tracking.cli") == []


def test_package_import_is_light() -> None:
    assert _imported_after("import aipm_tracking") == []


def test_loading_every_plugin_is_light() -> None:
    """Built-ins and the MLflow/W&B plugins register without importing their SDKs."""
    code = ("from aipm_tracking import plugins; plugins.plugin_infos(); "
            "plugins.backend_schemes(); plugins.reporter_names(); plugins.metric_registry()")
    assert _imported_after(code) == []


def test_help_lists_every_command_without_heavy_imports() -> None:
    code = ("from aipm_tracking.cli import cli\n"
            "try:\n    cli.main(['--help'], standalone_mode=False)\n"
            "except SystemExit:\n    pass")
    assert _imported_after(code) == []


def test_public_api_functions_are_not_shadowed_by_submodules() -> None:
    """`aipm.evaluate` / `aipm.compare` stay functions after the engine modules load."""
    code = (
        "import inspect, aipm_tracking as aipm\n"
        "import aipm_tracking.comparator, aipm_tracking.evaluation, aipm_tracking.api\n"
        "bad = [n for n in ('evaluate', 'compare', 'log', 'load_run', 'push', 'pull')\n"
        "       if not inspect.isfunction(getattr(aipm, n))]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
