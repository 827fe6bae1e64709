"""``aipm runs list/show/history`` and ``aipm plugins``: user strings are shown verbatim
(never read as rich markup), JSON output is strict, counts are integers."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import textwrap
from pathlib import Path

import pytest
from conftest import run_cli

from aipm_tracking.backends.base import BackendOptions
from aipm_tracking.backends.local import LocalBackend
from aipm_tracking.schema import DatasetInfo, MetricValue, ModelInfo, RunRecord

#: names rich would read as markup: a bare closing tag crashes, the others vanish
MARKUP_NAMES = ("x[/][/]y", "[red]x[/]", "[b]b[/b]", ":smile:\\[")


def _write(store: Path, name: str, **metrics: float) -> str:
    rec = RunRecord(run_id="", name=name, model=ModelInfo("m[x]", "[1]"),
                    dataset=DatasetInfo("d[/]", "v[2]"), tags={"t": "[/]"},
                    metrics={k: MetricValue(v) for k, v in metrics.items()})
    return LocalBackend(BackendOptions(store=str(store))).write_run(rec)


@pytest.mark.parametrize("name", MARKUP_NAMES)
def test_runs_list_and_show_print_names_verbatim(store: Path, name: str) -> None:
    ref = _write(store, name, **{"accuracy": 0.9, "accuracy[slice=de]": 0.8,
                                 "accuracy[slice=fr]": 0.7, "n_examples": 400.0})
    out = run_cli("runs", "list")
    assert out.returncode == 0, out.stderr
    assert name in out.stdout and "m[x]" in out.stdout
    out = run_cli("runs", "show", ref)
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith(name)
    assert "d[/]@v[2]" in out.stdout and "m[x] [1]" in out.stdout
    # per-slice metrics keep their suffix, so the rows can be told apart
    assert "accuracy[slice=de]" in out.stdout and "accuracy[slice=fr]" in out.stdout


def test_runs_list_counts_are_integers(store: Path) -> None:
    _write(store, "r", accuracy=0.9, n_examples=400.0)
    rows = list(csv.DictReader(io.StringIO(run_cli("runs", "list", "--format", "csv").stdout)))
    assert rows[0]["n_examples"] == "400" and rows[0]["accuracy"] == "0.9"
    table = run_cli("runs", "list").stdout
    assert " 400 " in table and "400.0" not in table


def _strict_json(text: str) -> object:
    def no_constants(c: str) -> object:
        raise ValueError(f"non-standard JSON constant {c}")

    return json.loads(text, parse_constant=no_constants)


def test_runs_history_json_is_strict_and_table_keeps_keys(store: Path) -> None:
    import aipm_tracking as a

    with a.Tracker(to="local", model="m", spool_dir=str(store.parent / "sp")) as t:
        t.log_dict({"lr": float("nan"), "acc[slice=de]": 0.5}, step=0)
        t.log_dict({"x": float("inf"), "y": float("-inf"), "[red]k[/]": 1.0}, step=1)
    out = run_cli("runs", "history", t.ref or "", "--format", "json")
    assert out.returncode == 0, out.stderr
    points = _strict_json(out.stdout)
    assert isinstance(points, list)
    by_key = {p["key"]: p["value"] for p in points}
    assert by_key["lr"] is None and by_key["x"] is None and by_key["y"] is None
    assert by_key["acc[slice=de]"] == 0.5 and by_key["[red]k[/]"] == 1.0
    assert all(isinstance(p["timestamp"], float) and math.isfinite(p["timestamp"])
               for p in points)
    table = run_cli("runs", "history", t.ref or "", "--format", "table")
    assert table.returncode == 0, table.stderr
    assert "acc[slice=de]" in table.stdout and "[red]k[/]" in table.stdout


BROKEN = '''
raise RuntimeError("broken [/] plugin [bold]x")
'''


def test_plugins_table_shows_names_and_errors_verbatim(tmp_path: Path) -> None:
    root = tmp_path / "site"
    root.mkdir()
    (root / "fake_mod.py").write_text(textwrap.dedent(BROKEN))
    info = root / "fake_mod-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-mod\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[aipm_tracking]\nfake[x] = fake_mod\n")
    env = {"PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
           "COLUMNS": "200"}
    out = run_cli("plugins", env=env)
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if "fake" in ln)
    assert "fake[x]" in line and "broken [/] plugin [bold]x" in line


def test_report_without_arguments_says_what_is_missing() -> None:
    out = run_cli("report")
    assert out.returncode == 2
    assert "not both" not in out.stderr and "neither was given" in out.stderr
    out = run_cli("report", "local:abc", "--model", "m")
    assert out.returncode == 2 and "not both" in out.stderr
