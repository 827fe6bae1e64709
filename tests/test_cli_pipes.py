"""A reader that stops early (``aipm compare ... | head -3``) must not change the exit code:
click turned a broken pipe into exit 1, which DESIGN §6 reserves for a blocking regression,
so a passing comparison piped into ``head`` read as a failed gate."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes")


def _aipm_into_closed_pipe(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run aipm with its stdout a pipe whose reader has already gone; (exit code, stderr)."""
    exe = Path(sys.executable).with_name("aipm")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "aipm_tracking"]
    read, write = os.pipe()
    os.close(read)  # the reader is gone before aipm writes a byte
    try:
        proc = subprocess.run([*cmd, *args], stdout=write, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, **(env or {})}, timeout=300)
    finally:
        os.close(write)
    return proc.returncode, proc.stderr


def _eval_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(1)
    n = 2000
    base = pd.DataFrame({"example_id": np.arange(n), "label": 1,
                         "prediction": (rng.random(n) < 0.9).astype(int),
                         "confidence": rng.random(n)})
    worse = base.assign(prediction=(rng.random(n) < 0.7).astype(int))
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    base.to_csv(a, index=False)
    worse.to_csv(b, index=False)
    g = tmp_path / "g.yaml"
    g.write_text("version: 1\nmetrics:\n  accuracy: {max_regression: 0.01}\n")
    return a, b, g


def test_compare_keeps_its_exit_code_when_the_reader_stops(tmp_path: Path) -> None:
    a, b, g = _eval_files(tmp_path)
    assert _aipm_into_closed_pipe("compare", str(a), str(a), "--guardrails", str(g))[0] == 0
    assert _aipm_into_closed_pipe("compare", str(a), str(b), "--guardrails", str(g))[0] == 1


def test_history_into_a_closed_pipe_exits_0(tmp_path: Path) -> None:
    import aipm_tracking as aipm

    store = tmp_path / "store"
    with aipm.Tracker(to="local", store=str(store), run_name="r", model="m",
                      model_version="1", spool_dir=str(tmp_path / "sp")) as tr:
        for i in range(20_000):
            tr.log(step=i, loss=1.0 / (i + 1))
        ref = tr.ref
    assert ref
    code, err = _aipm_into_closed_pipe("--store", str(store), "runs", "history", ref,
                                       "--format", "csv")
    assert code == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err
