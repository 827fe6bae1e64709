"""``aipm report`` (single run, trend) and end-to-end ``aipm compare --format ...``."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import run_cli
from report_samples import XSS_PAYLOADS

from aipm_tracking import plugins
from aipm_tracking.backends.base import BackendOptions
from aipm_tracking.report.trend import TrendMetric, build_trend, latest_per_version
from aipm_tracking.schema import MetricValue, ModelInfo, RunRecord

GUARDRAILS = """version: 1
name: bot-release
metrics:
  accuracy: {min: 0.8, max_regression: 0.01}
  latency_ms_p95: {max: 900}
"""


def _rec(version: str, acc: float, lat: float, created: str, model: str = "bot",
         name: str | None = None) -> RunRecord:
    return RunRecord(run_id=f"r{version}{model}", name=name or f"{model}-{version}",
                     model=ModelInfo(model, version), created_at=created,
                     metrics={"accuracy": MetricValue(acc), "latency_ms_p95": MetricValue(lat),
                              "n_examples": MetricValue(1000.0)})


def _store_runs(store: Path, recs: list[RunRecord]) -> list[str]:
    plugins.reset()
    backend = plugins.get_backend("local", BackendOptions(store=str(store)))
    return [backend.write_run(r) for r in recs]


# -- trend logic -------------------------------------------------------------------------
def test_trend_notes_flattening_and_regressions() -> None:
    flat = TrendMetric("accuracy", "higher", [0.80, 0.85, 0.88, 0.882])
    assert flat.note().startswith("improvement flattening")
    assert TrendMetric("accuracy", "higher", [0.8, 0.85, 0.9]).note().startswith("improving")
    worse = TrendMetric("latency_ms_p95", "lower", [500.0, 480.0, 520.0])
    assert worse.note().startswith("worse in the last version")
    assert TrendMetric("latency_ms_p95", "lower", [500.0, 450.0, 400.0]).note().startswith(
        "improving")
    assert flat.steps() == pytest.approx([0.05, 0.03, 0.002])
    assert TrendMetric("x", "higher", [0.5]).note() == "one version only"


def test_latest_run_per_version_in_time_order() -> None:
    runs = [_rec("2", 0.85, 500, "2024-02-01T00:00:00+00:00", name="old-2"),
            _rec("1", 0.80, 520, "2024-01-01T00:00:00+00:00"),
            _rec("2", 0.86, 490, "2024-02-05T00:00:00+00:00", name="new-2"),
            _rec("3", 0.87, 480, "2024-03-01T00:00:00+00:00")]
    picked = latest_per_version(runs)
    assert [r.name for r in picked] == ["bot-1", "new-2", "bot-3"]
    t = build_trend("bot", runs)
    assert t.versions == ["v1", "v2", "v3"]
    assert [m.metric for m in t.metrics] == ["accuracy", "latency_ms_p95"]  # info metrics left out


def test_versions_order_as_numbers_not_by_when_they_were_logged() -> None:
    """v2 logged before the v1 baseline (or v1 re-evaluated later) must still read v1 -> v2:
    ordering by log time reversed the trend ("worse in the last version")."""
    runs = [_rec("2", 0.9175, 971, "2024-01-01T00:00:00+00:00"),
            _rec("10", 0.93, 900, "2024-01-02T00:00:00+00:00"),
            _rec("1", 0.9085, 800, "2024-01-03T00:00:00+00:00")]
    t = build_trend("bot", runs)
    assert t.versions == ["v1", "v2", "v10"]
    acc = next(m for m in t.metrics if m.metric == "accuracy")
    assert acc.values == [0.9085, 0.9175, 0.93] and acc.note().startswith("improving")
    # versions that are not numbers (git hashes) keep the order they were first logged in,
    # also when an old one is logged again later
    shas = [_rec("a1f3", 0.80, 700, "2024-01-01T00:00:00+00:00"),
            _rec("9c2e", 0.85, 690, "2024-01-02T00:00:00+00:00"),
            _rec("a1f3", 0.81, 700, "2024-01-03T00:00:00+00:00", name="again")]
    assert [r.name for r in latest_per_version(shas)] == ["again", "bot-9c2e"]


# -- CLI ---------------------------------------------------------------------------------
@pytest.fixture
def trend_store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    _store_runs(store, [
        _rec("1", 0.80, 700, "2024-01-01T00:00:00+00:00"),
        _rec("2", 0.85, 760, "2024-02-01T00:00:00+00:00"),
        _rec("3", 0.86, 950, "2024-03-01T00:00:00+00:00"),
        _rec("9", 0.10, 100, "2024-03-02T00:00:00+00:00", model="other-model"),
    ])
    return store


def test_trend_html(trend_store: Path, tmp_path: Path) -> None:
    g = tmp_path / "g.yaml"
    g.write_text(GUARDRAILS)
    out = tmp_path / "trend.html"
    r = run_cli("--store", str(trend_store), "report", "--model", "bot", "--guardrails",
                str(g), "-o", str(out))
    assert r.returncode == 0, r.stderr
    doc = out.read_text()
    assert "http://" not in doc and "https://" not in doc
    assert doc.count('<svg class="plot"') == 2  # one per guardrailed metric
    assert "bot: 3 versions" in doc and "other-model" not in doc
    assert "min 0.8" in doc and "max 900" in doc  # guardrail lines labelled
    assert re.search(r">v1<.*>v2<.*>v3<", doc, flags=re.S)
    assert "improvement flattening" in doc  # 0.80 -> 0.85 -> 0.86


def test_trend_markdown_without_guardrails(trend_store: Path) -> None:
    r = run_cli("--store", str(trend_store), "report", "--model", "bot", "--format",
                "markdown")
    assert r.returncode == 0, r.stderr
    assert "| metric | guardrail | v1 | v2 | v3 | trend |" in r.stdout
    assert "| accuracy |" in r.stdout and "n\\_examples" not in r.stdout  # info metrics left out
    assert "worse in the last version" in r.stdout  # latency 760 -> 950


def test_single_run_report(trend_store: Path, tmp_path: Path) -> None:
    ref = _store_runs(trend_store, [RunRecord(
        run_id="run-xss", name=XSS_PAYLOADS[0], model=ModelInfo("bot", "4"),
        metrics={"accuracy": MetricValue(0.9)})])[0]
    out = tmp_path / "run.html"
    r = run_cli("--store", str(trend_store), "report", ref, "-o", str(out))
    assert r.returncode == 0, r.stderr
    doc = out.read_text()
    assert "0.9" in doc and "accuracy" in doc
    assert XSS_PAYLOADS[0] not in doc and "&lt;script&gt;window.__xss=1" in doc
    assert "not available (summary-only runs)" in doc


def test_report_usage_errors(trend_store: Path) -> None:
    r = run_cli("--store", str(trend_store), "report")
    assert r.returncode == 2 and "either a run REF or --model" in r.stderr
    r = run_cli("--store", str(trend_store), "report", "local:nope-nope", "--model", "bot")
    assert r.returncode == 2
    r = run_cli("--store", str(trend_store), "report", "--model", "nobody", "--format",
                "markdown")
    assert r.returncode == 2 and "no runs of model 'nobody' in local" in r.stderr
    assert r.stdout == ""  # a typo in CI must not pass as an empty trend


# -- end to end: compare with every built-in format ---------------------------------------
@pytest.fixture(scope="module")
def eval_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    from aipm_tracking.demo_data import make_eval_set

    d = tmp_path_factory.mktemp("e2e")
    a, b = d / "v1.parquet", d / "v2.parquet"
    make_eval_set(1, n=3000).to_parquet(a)
    make_eval_set(2, n=3000).to_parquet(b)
    g = d / "g.yaml"
    g.write_text("version: 1\nname: e2e\nfallback_threshold: 0.6\nmetrics:\n"
                 "  accuracy: {min: 0.8, max_regression: 0.01}\n"
                 "  latency_ms_p95: {max: 1500, max_regression: '10%'}\n"
                 "  ece: {max: 0.2}\n"
                 "slices:\n  'slice=de': {accuracy: {min: 0.8}}\n")
    return a, b, g


def test_compare_end_to_end_formats_agree(eval_files: tuple[Path, Path, Path],
                                          tmp_path: Path) -> None:
    a, b, g = eval_files
    base = ["compare", str(a), str(b), "--guardrails", str(g)]
    rj = run_cli(*base, "--format", "json")
    doc = json.loads(rj.stdout)
    assert rj.returncode == doc["exit_code"]
    verdicts = {m["metric"]: m["verdict"] for m in doc["metrics"]}
    rx = run_cli(*base, "--format", "junit")
    suite = ET.fromstring(rx.stdout).find("testsuite")
    assert suite is not None
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(cases) == set(verdicts)
    for name, v in verdicts.items():
        failed = cases[name].find("failure") is not None
        assert failed == (v in ("regression", "breach", "inconclusive")
                          and next(m for m in doc["metrics"] if m["metric"] == name)[
                              "severity"] == "block" or v == "inconclusive"), name
    rm = run_cli(*base, "--format", "markdown")
    assert rm.stdout.splitlines()[0].startswith("### ") and doc["verdict"].upper() in rm.stdout
    rt = run_cli(*base, "--format", "table")
    assert doc["verdict"].upper() in rt.stdout.splitlines()[0]
    assert max(len(x) for x in rt.stdout.splitlines()) <= 100
    out = tmp_path / "r.html"
    rh = run_cli(*base, "--format", "html", "-o", str(out))
    assert rh.returncode == doc["exit_code"]
    html_doc = out.read_text()
    assert "http://" not in html_doc and "https://" not in html_doc
    # cost is not guardrailed, but both runs measured it: its plot comes from their metrics
    assert html_doc.count('<svg class="plot"') == 4 and 'id="plot-cost"' in html_doc
    rh = run_cli(*base, "--format", "html", "--queries-per-day", "1000", "-o", str(out))
    assert out.read_text().count('<svg class="plot"') == 4
    assert 'id="changed"' in html_doc  # per-example data on both sides


def test_compare_html_without_cost(eval_files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    import pandas as pd

    a, b, _ = eval_files
    paths = []
    for src in (a, b):
        dst = tmp_path / src.name
        pd.read_parquet(src).drop(columns=["cost_usd"]).to_parquet(dst)
        paths.append(dst)
    out = tmp_path / "r.html"
    r = run_cli("compare", str(paths[0]), str(paths[1]), "--format", "html", "-o", str(out))
    assert r.returncode == 0, r.stderr
    doc = out.read_text()
    assert doc.count('<svg class="plot"') == 3 and 'id="plot-cost"' not in doc
    assert "neither run has a cost_usd column" in doc


@pytest.mark.slow
def test_trend_from_mlflow(tmp_path: Path) -> None:
    """--from mlflow:EXP: the real MLflow plugin on a SQLite store (its filter syntax differs,
    so the command filters by model name itself)."""
    pytest.importorskip("aipm_mlflow", reason="the aipm-mlflow plugin is not installed")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    plugins.reset()
    backend = plugins.get_backend("mlflow", BackendOptions(mlflow_uri=uri))
    for r in (_rec("1", 0.80, 700, "2024-01-01T00:00:00+00:00"),
              _rec("2", 0.85, 760, "2024-02-01T00:00:00+00:00"),
              _rec("3", 0.86, 950, "2024-03-01T00:00:00+00:00"),
              _rec("1", 0.5, 100, "2024-03-02T00:00:00+00:00", model="other")):
        backend.write_run(r, "exp1")
    r = run_cli("--mlflow-uri", uri, "report", "--model", "bot", "--from", "mlflow:exp1",
                "--format", "markdown")
    assert r.returncode == 0, r.stderr
    assert "| metric | guardrail | v1 | v2 | v3 | trend |" in r.stdout
    assert "| accuracy |  | 0.8 | 0.85 | 0.86 | improvement flattening" in r.stdout


def test_trend_note_unchanged_and_missing_newest_value() -> None:
    assert TrendMetric("accuracy", "higher", [0.8, 0.8]).note() == "unchanged in the last version"
    assert TrendMetric("accuracy", "higher", [0.7, 0.8, 0.8]).note() == (
        "unchanged in the last version")
    assert TrendMetric("x", "lower", [0.1 + 0.2, 0.3]).note() == "unchanged in the last version"
    note = TrendMetric("accuracy", "higher", [0.8, 0.9, None]).note()
    assert note.startswith("no value in the newest version") and "improving" in note


def test_trend_version_labels_and_counts() -> None:
    from aipm_tracking.report.markdown import render_run_markdown
    from aipm_tracking.report.trend import render_trend_markdown

    runs = [_rec("v1.0", 0.8, 500, "2024-01-01T00:00:00+00:00"),
            _rec("2", 0.85, 450, "2024-02-01T00:00:00+00:00")]
    t = build_trend("bot", runs)
    assert t.versions == ["v1.0", "v2"]
    one = render_trend_markdown(build_trend("bot", runs[:1]))
    assert "(1 version)" in one and "(1 versions)" not in one
    md = render_run_markdown(runs[0])
    assert "(bot v1.0)" in md and "vv1.0" not in md
    assert "| n\\_examples | 1000 |" in md and "1000.0" not in md
