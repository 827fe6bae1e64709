"""The CLI's terminal views stay short however big the run (a scale audit: a 3M-point series,
3,000 runs, a run with 1,000 slices, a model with 200 versions), while json and csv stay
complete and byte for byte what they were."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli

from aipm_tracking.backends.base import BackendOptions
from aipm_tracking.backends.local import LocalBackend
from aipm_tracking.report.trend import build_trend, render_trend_markdown
from aipm_tracking.schema import MetricPoint, MetricValue, ModelInfo, RunRecord


def _backend(store: Path) -> LocalBackend:
    return LocalBackend(BackendOptions(store=str(store)))


def _run_with_points(store: Path, points: list[MetricPoint]) -> str:
    b = _backend(store)
    ref = b.start_run(RunRecord(run_id="", name="long", model=ModelInfo("llm", "1")))
    b.log_points(ref, points)
    b.close()
    return ref


def _cli(store: Path, *args: str):  # type: ignore[no-untyped-def]
    out = run_cli("--store", str(store), *args, env={"COLUMNS": "100"})
    assert out.returncode == 0, out.stderr
    return out


# -- runs history ----------------------------------------------------------------------------
def test_history_table_is_bounded_and_says_what_it_left_out(store: Path) -> None:
    n_steps = 100_000  # 200,000 points: the old table had one row per point
    points = [MetricPoint(k, 1.0 / (i + 1) if k == "loss" else 1e-3, i, 1000.0 + i)
              for i in range(n_steps) for k in ("loss", "lr")]
    ref = _run_with_points(store, points)
    out = _cli(store, "runs", "history", ref, "--format", "table").stdout
    lines = out.splitlines()
    assert len(lines) < 40, len(lines)
    assert "199,980 points not shown" in out
    assert "200,000 points (2 keys, steps 0–99999), 199,980 not shown" in out
    assert "--format csv or json prints them all" in out
    # the first and the last points are there, in order
    steps = [int(m.group(1)) for ln in lines if (m := re.match(r"│ (\d+) +│", ln))]
    assert steps[:4] == [0, 0, 1, 1] and steps[-4:] == [99998, 99998, 99999, 99999]


def test_history_table_of_a_short_run_shows_every_point(store: Path) -> None:
    ref = _run_with_points(store, [MetricPoint("loss", 0.5, i, 1.0 + i) for i in range(12)])
    out = _cli(store, "runs", "history", ref, "--format", "table").stdout
    assert "not shown" not in out
    assert len([ln for ln in out.splitlines() if "loss" in ln]) == 12


#: points logged in an order unlike the output's (step, key, timestamp), with NaN and ±inf
#: values, a key CSV must quote and one JSON must escape
GOLDEN = [MetricPoint("b", 0.25, 1, 1001.5), MetricPoint("a", float("nan"), 1, 1001.0),
          MetricPoint('k,"x', -2.5, 0, 1000.0), MetricPoint("a", 1e-07, 0, 1000.25),
          MetricPoint("a", float("inf"), 2, 1002.0), MetricPoint("é", 3.0, 2, 1002.0),
          MetricPoint("a", 0.1, 0, 999.0)]
GOLDEN_CSV = """step,key,value
0,a,0.1
0,a,1e-07
0,"k,""x",-2.5
1,a,nan
1,b,0.25
2,a,inf
2,é,3.0
"""
GOLDEN_JSON = (
    '[{"step": 0, "key": "a", "value": 0.1, "timestamp": 999.0}, '
    '{"step": 0, "key": "a", "value": 1e-07, "timestamp": 1000.25}, '
    '{"step": 0, "key": "k,\\"x", "value": -2.5, "timestamp": 1000.0}, '
    '{"step": 1, "key": "a", "value": null, "timestamp": 1001.0}, '
    '{"step": 1, "key": "b", "value": 0.25, "timestamp": 1001.5}, '
    '{"step": 2, "key": "a", "value": null, "timestamp": 1002.0}, '
    '{"step": 2, "key": "\\u00e9", "value": 3.0, "timestamp": 1002.0}]\n')


def test_history_csv_and_json_are_unchanged(store: Path) -> None:
    ref = _run_with_points(store, GOLDEN)
    assert _cli(store, "runs", "history", ref, "--format", "csv").stdout == GOLDEN_CSV
    assert _cli(store, "runs", "history", ref).stdout == GOLDEN_CSV  # csv is the default
    assert _cli(store, "runs", "history", ref, "--format", "json").stdout == GOLDEN_JSON
    keys = _cli(store, "runs", "history", ref, "--keys", "b,é", "--format", "csv").stdout
    assert keys == "step,key,value\n1,b,0.25\n2,é,3.0\n"
    empty = _run_with_points(store, [])
    assert _cli(store, "runs", "history", empty, "--format", "json").stdout == "[]\n"
    assert _cli(store, "runs", "history", empty, "--format", "csv").stdout == "step,key,value\n"


def test_history_streams_in_chunks_with_the_same_text(store: Path) -> None:
    """Longer than one chunk (10,000 points): chunks join into the text of one list."""
    n = 12_345
    points = [MetricPoint("loss", i / 7, i, 1000.0 + i / 3) for i in range(n)]
    ref = _run_with_points(store, points)
    b = _backend(store)
    chunks = list(b.iter_history(ref, None, chunk_size=5000))
    assert [len(c) for c in chunks] == [5000, 5000, 2345]
    assert [tuple(p) for c in chunks for p in c] == [tuple(p) for p in b.read_history(ref)]
    want = [{"step": p.step, "key": p.key, "value": p.value, "timestamp": p.timestamp}
            for p in points]
    assert _cli(store, "runs", "history", ref, "--format", "json").stdout \
        == json.dumps(want) + "\n"
    csv_text = _cli(store, "runs", "history", ref, "--format", "csv").stdout
    assert csv_text == "step,key,value\n" + "".join(f"{i},loss,{i / 7!r}\n" for i in range(n))
    with pytest.raises(Exception, match="no run"):
        b.iter_history("local:20240101-000000-000000000000")
    assert list(b.iter_history(ref, [])) == []


# -- runs list -------------------------------------------------------------------------------
def _many_runs(store: Path, n: int) -> None:
    b = _backend(store)
    for i in range(n):
        b.write_run(RunRecord(
            run_id="", name=f"run-{i:03d}", model=ModelInfo("bot", str(i)),
            created_at=f"2024-01-{1 + i // 24 + 1:02d}T{i % 24:02d}:00:00+00:00",
            metrics={"accuracy": MetricValue(0.5 + i / 1000)}))
    b.close()


def test_runs_list_table_shows_the_newest_100_and_json_csv_every_run(store: Path) -> None:
    _many_runs(store, 300)
    table = _cli(store, "runs", "list").stdout
    names = re.findall(r"run-\d{3}", table)
    assert len(names) == 100 and names[0] == "run-299" and names[-1] == "run-200"
    assert "the newest 100 runs in local" in table
    assert "more runs not shown" in table and "--limit 0 lists all" in table
    listed = json.loads(_cli(store, "runs", "list", "--format", "json").stdout)
    assert len(listed) == 300 and listed[0]["name"] == "run-299"
    csv_rows = _cli(store, "runs", "list", "--format", "csv").stdout.splitlines()
    assert len(csv_rows) == 301
    every = _cli(store, "runs", "list", "--limit", "0").stdout
    assert len(re.findall(r"run-\d{3}", every)) == 300 and "not shown" not in every
    five = _cli(store, "runs", "list", "--limit", "5").stdout
    assert re.findall(r"run-\d{3}", five) == [f"run-{i}" for i in range(299, 294, -1)]
    assert "not shown" not in five
    assert len(json.loads(_cli(store, "runs", "list", "--limit", "0", "--format",
                               "json").stdout)) == 300


def test_runs_list_json_is_the_text_of_one_list(store: Path) -> None:
    _many_runs(store, 3)
    text = _cli(store, "runs", "list", "--format", "json").stdout
    assert text == json.dumps(json.loads(text), indent=2) + "\n"
    assert _cli(store, "runs", "list", "--filter", "name = nobody", "--format",
                "json").stdout == "[]\n"


# -- runs show / report of a run with many slices -------------------------------------------
N_SLICES = 300


def _sliced_run(store: Path, examples: pd.DataFrame | None = None) -> str:
    metrics: dict[str, MetricValue] = {}
    for s in range(N_SLICES):  # slice metrics first, as a log with slices stores them
        for m, v in (("accuracy", 0.8), ("ece", 0.05), ("n_examples", 40.0)):
            metrics[f"{m}[slice=seg{s}]"] = MetricValue(v + s / 10_000)
    metrics.update({"accuracy": MetricValue(0.91, ci=(0.9, 0.92), n=12_000),
                    "ece": MetricValue(0.04), "n_examples": MetricValue(12_000.0)})
    rec = RunRecord(run_id="", name="sliced", model=ModelInfo("bot", "7"), metrics=metrics,
                    examples=examples)
    return _backend(store).write_run(rec)


def test_runs_show_many_slices_is_bounded_and_whole_set_metrics_come_first(
        store: Path) -> None:
    ref = _sliced_run(store)
    out = _cli(store, "runs", "show", ref).stdout
    lines = out.splitlines()
    assert len(lines) < 120, len(lines)
    first_slice = next(i for i, ln in enumerate(lines) if "seg" in ln)
    for name in ("accuracy", "ece", "n_examples"):
        assert any(re.match(rf"│ {name} +│", ln) for ln in lines[:first_slice]), name
    assert "per-slice metrics: 300 slices × 3 metrics (the first 50 by name)" in out
    # slices in natural order: seg0, seg1, ..., seg9, seg10 ...
    shown = re.findall(r"slice=seg(\d+) ", out)
    assert shown[:12] == [str(i) for i in range(12)] and "slice=seg49 " in out
    assert "slice=seg50 " not in out
    assert f"… 250 more slices not shown (the first 50 by name are); 'aipm runs show {ref} " \
           "--format json' lists every metric" in " ".join(out.split())
    doc = json.loads(_cli(store, "runs", "show", ref, "--format", "json").stdout)
    assert len(doc["metrics"]) == 3 * N_SLICES + 3


def test_report_of_a_run_never_reads_its_examples(store: Path, tmp_path: Path) -> None:
    df = pd.DataFrame({"example_id": range(10), "label": ["a"] * 10, "prediction": ["a"] * 10})
    ref = _sliced_run(store, examples=df)
    (store / "examples" / f"{ref.split(':', 1)[1]}.parquet").write_bytes(b"not parquet")
    out_html = tmp_path / "run.html"
    _cli(store, "report", ref, "-o", str(out_html))  # the old code failed: unreadable table
    doc = out_html.read_text()
    # whole-set metrics first, before the plots; the slices after, as a bounded pivot
    assert doc.index(">n_examples<") < doc.index("<h2>Plots</h2>") \
        < doc.index('id="slice-metrics"')
    pivot = doc[doc.index('id="slice-metrics"'):]
    assert pivot.count("<tr>") == 1 + 50  # header and the first 50 slices
    assert "250 more slices not shown" in doc and ">12000<" in doc
    md = _cli(store, "report", ref, "--format", "markdown").stdout
    assert len(md.splitlines()) < 80
    assert md.index("| n\\_examples | 12000 |") < md.index("**Per-slice metrics** (300 slices)")
    assert "| slice | accuracy | ece | n\\_examples |" in md
    assert "| slice=seg0 | 0.8 | 0.05 | 40 |" in md and "250 more slices not shown" in md


# -- trend markdown ----------------------------------------------------------------------
def test_trend_markdown_keeps_the_newest_versions() -> None:
    runs = [RunRecord(run_id=f"r{i}", name=f"r{i}", model=ModelInfo("bot", str(i)),
                      created_at=f"2024-01-01T00:{i:02d}:00+00:00",
                      metrics={"accuracy": MetricValue(0.5 + i / 100)}) for i in range(1, 41)]
    md = render_trend_markdown(build_trend("bot", runs))
    assert "### aipm trend: bot (40 versions)" in md
    head = next(ln for ln in md.splitlines() if ln.startswith("| metric |"))
    assert head == "| metric | guardrail | " + " | ".join(f"v{i}" for i in range(31, 41)) \
        + " | trend |"
    assert "The newest 10 of 40 versions are shown (from v31)" in md
    assert max(len(ln) for ln in md.splitlines()) < 250
    row = next(ln for ln in md.splitlines() if ln.startswith("| accuracy |"))
    assert row.count("|") == 2 + 10 + 2 and "0.9 |" in row and "improving" in row
    assert math.isclose(float(row.split("|")[3]), 0.81)


def test_point_formatters_write_what_the_json_and_csv_modules_write() -> None:
    import csv
    import io

    from aipm_tracking.commands.runs import _csv_points, _json_points

    plain = [("loss", 0.1, 0, 1.5), ('k,"\n', float("nan"), 1, 2.0), ("é\x1b", -1e300, 2, 3.0),
             ("a", float("-inf"), 3, 4.25)]
    mixed = [("loss", 1, 0, 1), ("lr", 0.5, 1, 2.0), ("x", float("inf"), 2, float("nan"))]
    for chunk in (plain, mixed):
        want = json.dumps([{"step": s, "key": k, "value": v if math.isfinite(v) else None,
                            "timestamp": t if math.isfinite(t) else None}
                           for k, v, s, t in chunk], allow_nan=False)
        assert _json_points(chunk, {}) == want[1:-1]
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows((s, k, repr(float(v)))
                                                       for k, v, s, _t in chunk)
        assert _csv_points(chunk, {}) == buf.getvalue()
