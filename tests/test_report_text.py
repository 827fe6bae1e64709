"""Renderers for terminals and CI text: table (rich), json (DESIGN §6), markdown."""

from __future__ import annotations

import json
import re

import pytest
from report_samples import XSS_PAYLOADS, make_comparison

from aipm_tracking import plugins
from aipm_tracking.report.base import ReportOptions
from aipm_tracking.report.common import fmt_num, headline
from aipm_tracking.report.json_ import render_json
from aipm_tracking.report.markdown import md_escape, md_unescape, render_markdown
from aipm_tracking.report.table import render_table
from aipm_tracking.schema import Comparison, DatasetInfo, ModelInfo, RunSummary

TOP_KEYS = {"schema", "baseline", "candidate", "verdict", "exit_code", "metrics", "warnings"}
ROW_KEYS = {"metric", "direction", "baseline", "candidate", "delta", "delta_rel", "ci",
            "p_value", "test", "severity", "verdict", "reason"}


def test_builtin_formats_are_registered_through_the_plugin_host() -> None:
    plugins.reset()
    names = plugins.reporter_names()
    for fmt in ("table", "markdown", "json"):
        assert fmt in names
    out = plugins.get_reporter("json")(make_comparison(), ReportOptions())
    assert json.loads(out)["verdict"] == "fail"


# -- headline ------------------------------------------------------------------------------
def test_headline_names_blocking_rows_and_counts_warnings() -> None:
    h = headline(make_comparison())
    assert h.startswith("FAIL: 1 blocking regression (accuracy)")
    assert "1 blocking breach (accuracy[slice=de])" in h
    assert "1 warning (latency_ms_p95)" in h
    assert "1 inconclusive (override_rate)" in h


def test_headline_pass() -> None:
    cmp = make_comparison(blocking=False)
    cmp.metrics = [r for r in cmp.metrics if r.verdict in ("pass", "improved")]
    assert headline(cmp) == "PASS: 5 of 5 guardrails pass, 1 improved"


def test_fmt_num() -> None:
    assert fmt_num(None) == "—"
    assert fmt_num(float("nan")) == "—"
    assert fmt_num(0.9123456) == "0.9123"
    assert fmt_num(-0.031, signed=True) == "-0.031"
    assert fmt_num(0.031, signed=True) == "+0.031"
    assert fmt_num(612.04) == "612.0"
    assert fmt_num(0.0015) == "0.0015"
    assert fmt_num(12345.6) == "12,346"


# -- table ---------------------------------------------------------------------------------
@pytest.mark.parametrize("width", [80, 100, 140])
def test_table_fits_width_and_keeps_metric_names_whole(width: int) -> None:
    cmp = make_comparison()
    out = render_table(cmp, ReportOptions(width=width))
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= width
    assert "\x1b[" not in out  # no ANSI without colour
    assert lines[0].startswith("FAIL: 1 blocking regression (accuracy)")
    for r in cmp.metrics:
        # every metric name appears unbroken at the start of a table row
        assert any(line.lstrip().startswith(r.metric) for line in lines), r.metric
    assert "prod (support-bot v1)" in out and "cand (support-bot v2)" in out
    assert "REGRESSION" in out and "BREACH" in out
    assert "[-0.045, -0.017]" in out.replace("\n", " ") or "[-0.045," in out
    assert "runs were logged on different guardrail hashes" in out
    # reasons appear (folded) at any width
    assert "CI confirms" in " ".join(out.split())


def test_table_with_very_long_metric_names_stays_within_80_columns() -> None:
    cmp = make_comparison()
    long = "selective_accuracy[slice=enterprise-customers-emea-region]"
    cmp.metrics[0].metric = long
    out = render_table(cmp, ReportOptions(width=80))
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert long in lines  # unbroken, on its own line
    flat = " ".join(out.split())
    for r in cmp.metrics:
        assert r.metric in lines
    assert "base 0.912 · cand 0.881 · Δ -0.031 [-0.045, -0.017] · p <0.001 · REGRESSION" in flat
    assert "CI confirms" in flat and "…" not in out


def test_table_colour_only_when_asked() -> None:
    out = render_table(make_comparison(), ReportOptions(width=100, color=True))
    assert "\x1b[" in out


def test_table_empty_comparison() -> None:
    s = RunSummary(None, "a", ModelInfo("m", "1"), DatasetInfo())
    out = render_table(Comparison(s, s, []), ReportOptions(width=80))
    assert out.startswith("PASS: no guardrails to check")


# -- json ----------------------------------------------------------------------------------
def test_json_is_exactly_to_dict_with_contract_keys() -> None:
    cmp = make_comparison()
    doc = json.loads(render_json(cmp, ReportOptions()))
    assert doc == json.loads(json.dumps(cmp.to_dict()))
    assert TOP_KEYS <= set(doc)
    assert doc["schema"] == "aipm.comparison/1"
    assert doc["verdict"] == "fail" and doc["exit_code"] == 1
    for row in doc["metrics"]:
        assert ROW_KEYS <= set(row)
    assert doc["metrics"][0]["ci"] == [-0.045, -0.017]
    assert doc["metrics"][4]["baseline"] is None


def test_json_is_strict_even_with_nan_and_numpy_in_details() -> None:
    import numpy as np

    cmp = make_comparison(with_details=False)
    cmp.details["drift"] = {"psi": float("nan"), "bins": np.arange(3), "x": np.float32(0.5)}
    text = render_json(cmp, ReportOptions())
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert doc["details"]["drift"] == {"psi": None, "bins": [0, 1, 2], "x": 0.5}


# -- markdown ------------------------------------------------------------------------------
def _md_table_rows(md: str) -> list[list[str]]:
    inside = md.split("<details>", 1)[1].split("</details>", 1)[0]
    rows = []
    for line in inside.splitlines():
        if line.startswith("| ") and not line.startswith("| metric"):
            cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
            rows.append([c.strip() for c in cells])
    return rows


def test_markdown_verdicts_equal_json_verdicts() -> None:
    for cmp in (make_comparison(), make_comparison(blocking=False)):
        md = render_markdown(cmp, ReportOptions())
        doc = json.loads(render_json(cmp, ReportOptions()))
        rows = _md_table_rows(md)
        assert len(rows) == len(doc["metrics"])
        for cells, jrow in zip(rows, doc["metrics"], strict=True):
            assert md_unescape(cells[0]) == jrow["metric"]
            assert md_unescape(cells[6].split(" ", 1)[1]) == jrow["verdict"]
        first = md.splitlines()[0]
        assert doc["verdict"].upper() in first


def test_markdown_is_compact_with_details_collapsed() -> None:
    md = render_markdown(make_comparison(), ReportOptions())
    lines = md.splitlines()
    assert lines[0].startswith("### ❌ aipm: FAIL")
    before = md.split("<details>", 1)[0]
    # the short list names the blocking and warning rows, not the passing ones
    assert "**accuracy**" in before and "**latency\\_ms\\_p95**" in before
    assert "**ece**" not in before
    assert "<details><summary>All 7 guardrails</summary>" in md


@pytest.mark.parametrize("payload", XSS_PAYLOADS + ("a|b`c`", "[x](http://e.invalid)"))
def test_markdown_escapes_data(payload: str) -> None:
    md = render_markdown(make_comparison(payload=payload), ReportOptions())
    assert "<script" not in md and "<img" not in md and "<svg" not in md
    assert "`" not in md
    assert not re.search(r"(?<!\\)\]\(http", md)
    rows = _md_table_rows(md)
    assert len(rows) == 7 and all(len(r) == 8 for r in rows)  # no '|' broke a row
    assert md_unescape(md_escape(payload)) == payload


# -- markdown as GitHub renders it (checked with markdown-it-py, a CommonMark parser) -------
def _md_render(text: str) -> str:
    markdown_it = pytest.importorskip("markdown_it")
    return str(markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"])
               .render(text))


def test_markdown_report_ends_its_html_block() -> None:
    """Two reports appended to $GITHUB_STEP_SUMMARY (and an ``echo "## ..."`` after them)
    each render their heading: the ``</details>`` HTML block is closed by a blank line."""
    one = render_markdown(make_comparison(), ReportOptions())
    assert one.endswith("</details>\n\n")
    summary = one + render_markdown(make_comparison(blocking=False), ReportOptions())
    summary += "## after\n"
    out = _md_render(summary)
    assert out.count("<h3>") == 2 and "<h2>after</h2>" in out
    assert "### " not in out  # no heading swallowed into raw HTML
    assert out.count("<table>") == 2


@pytest.mark.parametrize("payload", ["~~strike~~ **b**", "ping @octocat and @org/team",
                                     "a~b@c", "@&#8203;x"])
def test_markdown_escapes_strikethrough_and_mentions(payload: str) -> None:
    md = render_markdown(make_comparison(payload=payload), ReportOptions())
    out = _md_render(md)
    assert "<s>" not in out and "<del>" not in out and "<strong>b</strong>" not in out
    # no @mention: every '@' from data is followed by a zero-width space (&#8203;)
    assert not re.search(r"@(?!&#8203;)", md)
    assert md_unescape(md_escape(payload)) == payload
