"""A comparison without a guardrails file has an informative row per metric and slice:
the terminal and markdown views stay bounded (the most notable slice rows, and a line
saying how many were left out) while the JSON keeps every row; rows a guardrails file asks
for are always all listed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import aipm_tracking as aipm
from aipm_tracking.report.base import ReportOptions
from aipm_tracking.report.common import MAX_SLICES
from aipm_tracking.report.markdown import MAX_BULLETS, render_markdown
from aipm_tracking.report.table import render_table


def _tables(n_slices: int, n: int = 4000) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(21)
    slices = np.array([f"s{i:03d}" for i in range(n_slices)])[np.arange(n) % n_slices]
    base = pd.DataFrame({"example_id": np.arange(n), "label": 1,
                         "prediction": (rng.random(n) < 0.8).astype(int),
                         "confidence": rng.random(n), "slice": slices})
    worse = (rng.random(n) < 0.7).astype(int)
    worse[slices != "s007"] = base["prediction"].to_numpy()[slices != "s007"]
    return base, base.assign(prediction=worse)  # slice s007 regresses, the rest are equal


def _listed(text: str) -> set[str]:
    """Metric names the table lists: each row (or stacked block) starts with its name."""
    return {ln.split()[0] for ln in text.splitlines() if ln.strip() and not ln[0].isspace()}


@pytest.fixture(scope="module")
def informative() -> aipm.Comparison:
    b, c = _tables(80)
    return aipm.compare(b, c, n_boot=200)


def test_terminal_table_lists_the_notable_slice_rows_and_counts_the_rest(informative) -> None:
    cmp = informative
    sliced = [r for r in cmp.metrics if r.slice is not None]
    assert len(sliced) > 3 * MAX_SLICES
    text = render_table(cmp, ReportOptions(width=200))
    listed = _listed(text) & {r.metric for r in cmp.metrics}
    hidden = len(cmp.metrics) - len(listed)
    assert f"… {hidden:,} more per-slice rows not shown" in text
    assert sum(1 for r in sliced if r.metric in listed) == MAX_SLICES
    assert all(r.metric in listed for r in cmp.metrics if r.slice is None)  # whole-set rows
    worst = [r for r in sliced if r.metric.endswith("[slice=s007]") and r.verdict != "pass"]
    assert worst and all(r.metric in listed for r in worst)  # the regressing slice is shown
    assert len(cmp.to_dict()["metrics"]) == len(cmp.metrics)  # JSON: every row


def test_markdown_is_bounded_too(informative) -> None:
    md = render_markdown(informative, ReportOptions())
    assert "more per-slice rows not shown" in md
    bullets = [ln for ln in md.splitlines() if ln.startswith("- ")]
    attention = [r for r in informative.metrics if r.verdict not in ("pass", "improved")]
    if len(attention) > MAX_BULLETS:
        assert len(bullets) == MAX_BULLETS + 1 and bullets[-1].startswith("- … and ")
    assert len(md) < 30_000  # a GitHub comment holds 65,536 characters


def test_every_row_of_a_guardrails_file_is_listed() -> None:
    b, c = _tables(70, n=2800)
    g = {"version": 1, "metrics": {"accuracy": {"max_regression": 0.05}},
         "slices": {f"slice=s{i:03d}": {"accuracy": {"max_regression": 0.05}}
                    for i in range(70)}}
    cmp = aipm.compare(b, c, guardrails=g, n_boot=200)
    text = render_table(cmp, ReportOptions(width=200))
    assert "not shown" not in text
    assert {r.metric for r in cmp.metrics} <= _listed(text) and len(cmp.metrics) == 71


def test_traffic_mix_rows_count_as_whole_set_rows() -> None:
    b, c = _tables(80)
    mix = {f"s{i:03d}": 1.0 / 80 for i in range(80)}
    cmp = aipm.compare(b, c, traffic_mix=mix, n_boot=200)
    mixed = [r.metric for r in cmp.metrics if r.metric.endswith("[mix=traffic]")]
    assert mixed
    listed = _listed(render_table(cmp, ReportOptions(width=200)))
    assert set(mixed) <= listed
