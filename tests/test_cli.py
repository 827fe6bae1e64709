"""The `aipm` CLI end to end, in subprocesses, on the embedded store and real files."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, run_cli

REF_RE = re.compile(r"^local:[A-Za-z0-9][A-Za-z0-9_-]{2,63}$")


def _eval_df(n: int = 400, acc: float = 0.9, seed: int = 0) -> pd.DataFrame:
    """One model's results on a fixed eval set: ``seed`` varies the model, not the set."""
    label = np.random.default_rng(12345).integers(0, 4, n)
    rng = np.random.default_rng(seed)
    correct = rng.random(n) < acc
    pred = np.where(correct, label, (label + 1) % 4)
    return pd.DataFrame({
        "example_id": np.arange(n),
        "label": label.astype(str),
        "prediction": pred.astype(str),
        "confidence": rng.uniform(0.3, 1.0, n),
        "latency_ms": rng.lognormal(5, 0.3, n),
        "cost_usd": rng.uniform(0.001, 0.002, n),
        "slice": np.where(rng.random(n) < 0.5, "de", "en"),
    })


GUARDRAILS = """\
version: 1
name: cli-test
fallback_threshold: 0.5
metrics:
  accuracy: {min: 0.5, max_regression: 0.01}
  latency_ms_p95: {max_regression: "10%"}
"""


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    base = tmp_path / "base.csv"
    cand = tmp_path / "cand.parquet"
    _eval_df(acc=0.9).to_csv(base, index=False)
    _eval_df(acc=0.9, seed=1).to_parquet(cand, index=False)
    g = tmp_path / "g.yaml"
    g.write_text(GUARDRAILS)
    return {"base": base, "cand": cand, "g": g}


def _store_snapshot(store: Path) -> tuple[str, list[str]]:
    runs = run_cli("runs", "list", "--format", "json")
    assert runs.returncode == 0, runs.stderr
    ids = sorted(r["ref"] for r in json.loads(runs.stdout))
    ex = sorted(p.name for p in (store / "examples").glob("*")) if (store / "examples").exists() else []
    return json.dumps(ids), ex


def _one_error_line(out) -> str:
    lines = [ln for ln in out.stderr.strip().splitlines() if ln.startswith("aipm: error:")]
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    return lines[0]


def test_version_and_module_entry() -> None:
    import subprocess
    import sys

    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.startswith("aipm 0.")
    mod = subprocess.run([sys.executable, "-m", "aipm_tracking", "--version"],
                         capture_output=True, text=True)
    assert mod.stdout == out.stdout


def test_log_list_show(files: dict[str, Path]) -> None:
    out = run_cli("log", str(files["base"]), "--model", "bot", "--model-version", "1",
                  "--dataset", "support@2024-06", "--guardrails", str(files["g"]))
    assert out.returncode == 0, out.stderr
    ref = out.stdout.strip().splitlines()[-1]
    assert REF_RE.match(ref), ref
    listed = json.loads(run_cli("runs", "list", "--format", "json").stdout)
    assert [r["ref"] for r in listed] == [ref]
    shown = json.loads(run_cli("runs", "show", ref, "--format", "json").stdout)
    for key in ("ref", "name", "model", "dataset", "metrics", "guardrails_hash", "created_at"):
        assert key in shown
    assert shown["ref"] == ref
    assert shown["model"] == {"name": "bot", "version": "1"}
    assert shown["dataset"]["name"] == "support" and shown["dataset"]["version"] == "2024-06"
    assert shown["dataset"]["size"] == 400
    df = pd.read_csv(files["base"])
    assert shown["metrics"]["accuracy"] == pytest.approx(
        float((df.label.astype(str) == df.prediction.astype(str)).mean()))
    assert shown["metrics"]["n_examples"] == 400
    from aipm_tracking.guardrails import load_guardrails

    assert shown["guardrails_hash"] == load_guardrails(str(files["g"])).hash
    csv_out = run_cli("runs", "list", "--format", "csv").stdout.splitlines()
    assert csv_out[0].startswith("ref,name,model,version")
    assert csv_out[1].startswith(ref + ",")
    table = run_cli("runs", "show", ref)
    assert table.returncode == 0 and "accuracy" in table.stdout


def test_compare_files_without_store(files: dict[str, Path], store: Path) -> None:
    out = run_cli("compare", str(files["base"]), str(files["cand"]), "--guardrails",
                  str(files["g"]), "--format", "json")
    assert out.returncode in (0, 1), out.stderr
    doc = json.loads(out.stdout)
    assert doc["schema"] == "aipm.comparison/1"
    assert set(doc) >= {"baseline", "candidate", "verdict", "exit_code", "metrics", "warnings"}
    assert doc["exit_code"] == out.returncode
    row_keys = {"metric", "direction", "baseline", "candidate", "delta", "delta_rel", "ci",
                "p_value", "test", "severity", "verdict", "reason"}
    assert doc["metrics"] and all(row_keys <= set(r) for r in doc["metrics"])
    assert not store.exists()  # file references need no store


def test_compare_stored_runs_exit_codes(files: dict[str, Path], tmp_path: Path) -> None:
    refs = []
    for f in (files["base"], files["cand"]):
        out = run_cli("log", str(f), "--model", "bot", "--guardrails", str(files["g"]))
        assert out.returncode == 0, out.stderr
        refs.append(out.stdout.strip().splitlines()[-1])
    same = run_cli("compare", refs[0], refs[0], "--guardrails", str(files["g"]))
    assert same.returncode == 0, same.stdout + same.stderr
    # a metric the runs do not have -> inconclusive (3), --allow-missing -> not 3
    g2 = tmp_path / "g2.yaml"
    g2.write_text(GUARDRAILS + "  override_rate: {max: 0.1}\n")
    missing = run_cli("compare", refs[0], refs[0], "--guardrails", str(g2))
    assert missing.returncode == 3, missing.stdout + missing.stderr
    allowed = run_cli("compare", refs[0], refs[0], "--guardrails", str(g2), "--allow-missing")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr


def test_bad_reference_is_one_line(files: dict[str, Path]) -> None:
    out = run_cli("runs", "show", "local:does-not-exist")
    assert out.returncode != 0
    assert "does-not-exist" in _one_error_line(out)
    out = run_cli("compare", "local:../../etc", str(files["base"]))
    assert out.returncode == 2
    _one_error_line(out)


def test_bad_inputs_leave_store_unchanged(files: dict[str, Path], store: Path,
                                          tmp_path: Path) -> None:
    ok = run_cli("log", str(files["base"]), "--model", "bot")
    assert ok.returncode == 0, ok.stderr
    before = _store_snapshot(store)

    bad_conf = _eval_df()
    bad_conf.loc[[3, 7], "confidence"] = [np.nan, 1.5]
    p_conf = tmp_path / "bad_conf.csv"
    bad_conf.to_csv(p_conf, index=False)
    missing_cols = tmp_path / "nocols.csv"
    _eval_df()[["example_id", "slice"]].to_csv(missing_cols, index=False)
    truncated = tmp_path / "trunc.parquet"
    data = files["cand"].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    yaml_bad = tmp_path / "bad.yaml"
    yaml_bad.write_text("version: 1\nmetrics:\n  accuracy: {min: 0.9\n")
    unknown_metric = tmp_path / "unknown.yaml"
    unknown_metric.write_text("version: 1\nmetrics:\n  my_score: {min: 0.7}\n")

    cases = [
        (["log", str(p_conf), "--model", "bot"], "confidence"),
        (["log", str(missing_cols), "--model", "bot"], "nocols.csv"),
        (["log", str(truncated), "--model", "bot"], "trunc.parquet"),
        (["log", str(files["base"]), "--model", "bot", "--guardrails", str(yaml_bad)], "bad.yaml"),
        (["log", str(files["base"]), "--model", "bot", "--guardrails", str(unknown_metric)],
         "my_score"),
        (["log", str(files["base"]), "--model", "bot", "--map", "nosuchcol=human_override"], "nosuchcol"),
    ]
    for args, must_name in cases:
        out = run_cli(*args)
        assert out.returncode != 0, args
        assert must_name in _one_error_line(out), (args, out.stderr)
    assert _store_snapshot(store) == before


def test_unwritable_store_is_one_line(files: dict[str, Path], tmp_path: Path) -> None:
    # Tests may run as root, for whom chmod does not block writes: a store path *under a
    # regular file* cannot be created by anyone.
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = run_cli("--store", str(blocker / "store"), "log", str(files["base"]), "--model", "bot")
    assert out.returncode != 0
    assert str(blocker) in _one_error_line(out)


def test_push_and_pull_between_local_stores(files: dict[str, Path], tmp_path: Path) -> None:
    ref = run_cli("log", str(files["base"]), "--model", "bot").stdout.strip().splitlines()[-1]
    pushed = run_cli("push", ref, "--to", "local")
    assert pushed.returncode == 0, pushed.stderr
    new_ref = pushed.stdout.strip()
    assert REF_RE.match(new_ref) and new_ref != ref
    a = json.loads(run_cli("runs", "show", ref, "--format", "json").stdout)
    b = json.loads(run_cli("runs", "show", new_ref, "--format", "json").stdout)
    assert a["metrics"] == b["metrics"] and a["model"] == b["model"]
    assert b["has_examples"] is True


def test_demo_catches_a_regression(tmp_path: Path) -> None:
    out = run_cli("--store", str(tmp_path / "demo-store"), "demo", "--dir",
                  str(tmp_path / "demo"), "--format", "json", "--exit-code", "--n", "3000")
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr
    doc = json.loads(out.stdout[out.stdout.index("{\n"): out.stdout.rindex("}") + 1])
    assert doc["verdict"] == "fail"
    blocking = {r["metric"] for r in doc["metrics"] if r["verdict"] in ("regression", "breach")}
    assert "accuracy[slice=de]" in blocking
    overall = [r for r in doc["metrics"] if r["metric"] == "accuracy"][0]
    assert overall["delta"] > 0  # better overall: exactly what a single number would hide


def test_quickstart_example_runs(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(REPO / "examples" / "quickstart.py")],
                         capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "AIPM_STORE": str(tmp_path / "qs")})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "verdict:" in out.stdout


def test_gates_worked_example(tmp_path: Path) -> None:
    """The README's worked example (examples/gates.py): a 0.5-point drop is a regression on
    100k paired examples under every gate; on 200 only the point and strict gates block; an
    unchanged model on 100k passes even the strict gate."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gates", REPO / "examples" / "gates.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(tmp_path)
    assert res == {
        (100_000, 500, "confirmed"): ("regression", 1), (100_000, 500, "point"): ("regression", 1),
        (100_000, 500, "strict"): ("regression", 1),
        (200, 1, "confirmed"): ("warn", 0), (200, 1, "point"): ("regression", 1),
        (200, 1, "strict"): ("regression", 1),
        # no change on 100k: the interval lies inside the 0.001 margin, so strict passes too
        (100_000, 0, "confirmed"): ("pass", 0), (100_000, 0, "point"): ("pass", 0),
        (100_000, 0, "strict"): ("pass", 0)}
    readme = (REPO / "README.md").read_text()
    assert "python examples/gates.py" in readme


def test_example_guardrails_validate() -> None:
    out = run_cli("guardrails", "validate", str(REPO / "examples" / "guardrails.yaml"))
    assert out.returncode == 0, out.stderr


# -- audit fixes: mixed id types, internal errors (exit 4), no guardrails ------------------------

def test_compare_int_ids_against_string_ids(tmp_path: Path) -> None:
    """0, 1, ... in parquet against "0", "1", ... in JSONL used to crash (pandas merge) and
    exit 1, which CI reads as a blocking regression."""
    df = _eval_df(n=300)
    a, b = tmp_path / "ids_int.parquet", tmp_path / "ids_str.jsonl"
    df.to_parquet(a, index=False)
    df.assign(example_id=df.example_id.astype(str)).to_json(b, orient="records", lines=True)
    assert b.read_text().startswith('{"example_id":"0",')  # ids as strings in the JSONL
    g = tmp_path / "g1.yaml"
    g.write_text("version: 1\nmetrics:\n  accuracy: {min: 0.5}\n")
    out = run_cli("compare", str(a), str(b), "--guardrails", str(g), "--format", "json")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    doc = json.loads(out.stdout)
    assert doc["details"]["pairing"]["matched"] == 300
    assert doc["metrics"][0]["verdict"] == "pass"


def test_internal_error_exits_4_with_one_line(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import click

    from aipm_tracking.cli import cli, main

    @click.command("boom")
    def boom() -> None:
        raise ValueError("merge failed\non two lines")

    monkeypatch.setitem(cli.commands, "boom", boom)
    monkeypatch.delenv("AIPM_DEBUG", raising=False)
    with pytest.raises(SystemExit) as ei:
        main(["boom"])
    assert ei.value.code == 4
    err = capsys.readouterr().err
    assert err.strip() == ("aipm: internal error: ValueError: merge failed on two lines "
                           "(set AIPM_DEBUG=1 for the traceback)")
    monkeypatch.setenv("AIPM_DEBUG", "1")
    with pytest.raises(SystemExit) as ei:
        main(["boom"])
    assert ei.value.code == 4
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ValueError: merge failed" in err


def test_compare_without_guardrails_not_comparable_exits_0(tmp_path: Path) -> None:
    lab = np.arange(300) % 3
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    pd.DataFrame({"example_id": range(300), "label": lab, "prediction": lab}).to_csv(a, index=False)
    pd.DataFrame({"example_id": range(5000, 5300), "label": lab,
                  "prediction": lab}).to_csv(b, index=False)
    out = run_cli("compare", str(a), str(b), "--format", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["exit_code"] == 0
    assert doc["metrics"] and all(r["verdict"] == "inconclusive" for r in doc["metrics"])
    g = tmp_path / "g.yaml"
    g.write_text("version: 1\nmetrics:\n  accuracy: {min: 0.5}\n")
    assert run_cli("compare", str(a), str(b), "--guardrails", str(g)).returncode == 3


def test_column_map_applies_to_a_stored_runs_per_example_table(tmp_path: Path) -> None:
    """A run whose table uses its own column names (``pred``, as logged by other code) is
    read from a backend through the guardrails ``column_map:`` or ``--map``, like a file."""
    from aipm_tracking.plugins import get_backend
    from aipm_tracking.schema import MetricValue, ModelInfo, RunRecord

    refs = []
    for name, acc in (("theirs-a", 0.9), ("theirs-b", 0.7)):
        df = _eval_df(n=600, acc=acc, seed=3).rename(columns={"prediction": "pred"})
        value = float((df["label"] == df["pred"]).mean())
        rec = RunRecord(run_id="", name=name, model=ModelInfo("their-bot", name[-1]),
                        metrics={"accuracy": MetricValue(value)}, examples=df)
        refs.append(get_backend("local").write_run(rec, None))
    g = tmp_path / "g.yaml"
    g.write_text(GUARDRAILS.replace("metrics:\n", "column_map: {pred: prediction}\nmetrics:\n"))
    plain = tmp_path / "plain.yaml"
    plain.write_text(GUARDRAILS)
    for extra in (["--guardrails", str(g)], ["--guardrails", str(plain), "--map", "pred=prediction"]):
        out = run_cli("compare", *refs, *extra, "--format", "json")
        doc = json.loads(out.stdout)
        acc = next(r for r in doc["metrics"] if r["metric"] == "accuracy")
        assert acc["verdict"] == "regression" and acc["test"] != "point", acc
        assert out.returncode == 1, out.stderr
