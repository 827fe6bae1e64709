"""examples/ci/github-actions.yml: valid YAML, valid aipm commands, and its log/compare steps
actually work (run with bash on a local store with the demo data)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from aipm_tracking.cli import cli

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "examples" / "ci" / "github-actions.yml"


def _workflow() -> dict[Any, Any]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(doc, dict)
    return doc


def _steps() -> list[dict[str, Any]]:
    jobs = _workflow()["jobs"]
    assert list(jobs) == ["gate"]
    steps = jobs["gate"]["steps"]
    assert isinstance(steps, list)
    return steps


def _aipm_commands(script: str) -> list[list[str]]:
    """Every ``aipm ...`` invocation in a shell script, as argv (placeholders for $VARS)."""
    script = script.replace("\\\n", " ")
    script = re.sub(r"\$\{\{[^}]*\}\}", "X", script)
    out = []
    for m in re.finditer(r"(?:^|[\s(;&|])aipm\s+([^|;)\n&]*)", script):
        args = shlex.split(m.group(1).replace('"$', '"X').replace(" $", " X"))
        out.append(args)
    return out


def test_workflow_shape() -> None:
    doc = _workflow()
    on = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert "pull_request" in on
    assert doc["permissions"]["pull-requests"] == "write"
    steps = _steps()
    ids = [s.get("id") for s in steps]
    assert "log" in ids and "compare" in ids
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "gh pr comment" in runs and "--body-file summary.md" in runs
    last = steps[-1]
    assert last["if"] == "steps.compare.outputs.code != '0'" and "exit 1" in last["run"]
    for s in steps:
        assert ("uses" in s) != ("run" in s), s


def test_every_aipm_command_parses_against_the_real_cli() -> None:
    cmds = [c for s in _steps() for c in _aipm_commands(s.get("run", ""))]
    names = {tuple(a for a in c if not a.startswith("-"))[:1] for c in cmds}
    assert ("log",) in names and ("compare",) in names
    assert len(cmds) == 4
    helped: set[str] = set()
    for argv in cmds:
        ctx = cli.make_context("aipm", list(argv), resilient_parsing=False)
        group: click.Group = cli
        with warnings.catch_warnings():  # protected_args: deprecated in click 8.2, still set
            warnings.simplefilter("ignore", DeprecationWarning)
            rest = list(ctx.protected_args) + list(ctx.args)
        assert rest, argv
        cmd = group.get_command(ctx, rest[0])
        assert cmd is not None, f"unknown aipm command in the workflow: {argv}"
        # click raises on an unknown option, a missing argument or a bad choice
        cmd.make_context(rest[0], list(rest[1:]), parent=ctx, resilient_parsing=False)
        if rest[0] in helped:
            continue
        helped.add(rest[0])
        help_text = subprocess.run([sys.executable, "-m", "aipm_tracking", rest[0], "--help"],
                                   capture_output=True, text=True, timeout=120)
        assert help_text.returncode == 0, help_text.stderr


def _run_step(step: dict[str, Any], env: dict[str, str], cwd: Path) -> int:
    step_env = {k: str(v) for k, v in (step.get("env") or {}).items()}
    for k, v in step_env.items():
        step_env[k] = re.sub(r"\$\{\{[^}]*\}\}", "", v)
    r = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=cwd,
                       env={**env, **{k: v for k, v in step_env.items() if v}},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{step.get('name')}: {r.stdout}\n{r.stderr}"
    return r.returncode


def _outputs(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out


@pytest.mark.slow
def test_log_and_compare_steps_run(tmp_path: Path) -> None:
    from aipm_tracking.demo_data import DEMO_GUARDRAILS, make_eval_set

    (tmp_path / "eval").mkdir()
    make_eval_set(1, n=3000).to_parquet(tmp_path / "eval" / "production.parquet")
    make_eval_set(2, n=3000).to_parquet(tmp_path / "eval" / "candidate.parquet")
    (tmp_path / "guardrails.yaml").write_text(DEMO_GUARDRAILS)
    out_file, summary = tmp_path / "gh_output", tmp_path / "gh_summary"
    out_file.touch()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "AIPM_STORE": str(tmp_path / "store"), "AIPM_TARGET": "local",
           "AIPM_MODEL": "support-bot", "AIPM_BASELINE": "eval/production.parquet",
           "GITHUB_SHA": "0123abc", "GITHUB_OUTPUT": str(out_file),
           "GITHUB_STEP_SUMMARY": str(summary)}
    steps = {s.get("id"): s for s in _steps()}
    _run_step(steps["log"], env, tmp_path)
    ref = _outputs(out_file)["ref"]
    assert ref.startswith("local:")
    env["CANDIDATE"] = ref
    _run_step(steps["compare"], env, tmp_path)
    code = _outputs(out_file)["code"]
    assert code == "1"  # the demo candidate regresses: the last step would fail the job
    md = (tmp_path / "summary.md").read_text()
    assert md.startswith("### ❌ aipm: FAIL")
    assert summary.read_text().count("### ❌ aipm: FAIL") == 1  # job summary written once
    assert (tmp_path / "aipm-report.html").read_text().startswith("<!DOCTYPE html>")
    assert "<testsuites" in (tmp_path / "aipm-junit.xml").read_text()
