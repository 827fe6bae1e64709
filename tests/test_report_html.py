"""HTML report, static checks: self-contained, escaped, every section, graceful without details.

The real-browser checks (console errors, scripts not executing, screenshot) are in
``test_html_browser.py``.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import pytest
from report_samples import XSS_PAYLOADS, make_comparison

from aipm_tracking.report.base import ReportOptions
from aipm_tracking.report.blocks import SUMMARY_ONLY, Side, confusion_table, risk_coverage_plot
from aipm_tracking.report.html import render_html, render_run_html
from aipm_tracking.report.svg import nice_ticks
from aipm_tracking.schema import DatasetInfo, MetricValue, ModelInfo, RunRecord

OPTS = ReportOptions()


def _tags(doc: str) -> list[tuple[str, list[str]]]:
    """(tag, attribute names) of every start tag, via the stdlib HTML tokenizer."""
    found: list[tuple[str, list[str]]] = []

    class P(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.append((tag, [k for k, _ in attrs]))

    P().feed(doc)
    return found


def _no_external_refs(doc: str) -> None:
    assert "http://" not in doc and "https://" not in doc
    assert "//" not in re.sub(r"<script>.*?</script>", "", doc, flags=re.S).replace(
        "<!DOCTYPE", "")  # no protocol-relative URLs either
    for attr in re.findall(r'\b(?:src|href|action|xlink:href)\s*=\s*"([^"]*)"', doc):
        assert attr.startswith(("#", "data:")), attr
    assert "@import" not in doc and "url(" not in doc


def test_comparison_page_has_every_section_and_is_self_contained() -> None:
    doc = render_html(make_comparison(), OPTS)
    _no_external_refs(doc)
    assert doc.startswith("<!DOCTYPE html>")
    # verdict first: the banner is the first element of <main>
    main = doc.split("<main>", 1)[1]
    assert main.lstrip().startswith('<div class="banner fail" id="verdict"><h1>FAIL: 1 blocking')
    assert doc.count('<svg class="plot"') == 4
    for pid in ("plot-reliability", "plot-risk-coverage", "plot-latency", "plot-cost"):
        assert f'id="{pid}"' in doc
    assert 'class="v-regression"' in doc and 'class="v-warn"' in doc
    assert "[-0.045, -0.017]" in doc  # interval shown
    assert "Confusion matrix difference" in doc and 'class="confusion"' in doc
    assert "accuracy[slice=de]" in doc.split("Per-slice guardrails", 1)[1]
    sizes = doc.split('id="slice-sizes"', 1)[1].split("</table>", 1)[0]
    assert re.findall(r"<td>(\w+)</td><td class=\"num\">(\d+)</td>", sizes) == [
        ("de", "666"), ("en", "1334")]
    changed = doc.split('id="changed"', 1)[1]
    assert changed.count("<tr>") == 201  # header + 200 examples (the first 200)
    assert "My invoice #199 is wrong" in changed
    assert 'id="filter"' in doc and "<script>" in doc
    # the CSP allows exactly the inline script by hash and nothing from the network
    csp = re.search(r'Content-Security-Policy" content="([^"]+)"', doc)
    assert csp and "default-src 'none'" in csp.group(1) and "'sha256-" in csp.group(1)


def test_threshold_marked_and_quantiles_labelled() -> None:
    doc = render_html(make_comparison(), OPTS)
    assert "recommended threshold 0.55" in doc  # candidate's recommendation
    assert "fallback threshold 0.6" in doc  # baseline falls back to fallback_threshold
    lat = doc.split('id="plot-latency"', 1)[1].split("</figure>", 1)[0]
    for q in ("p50", "p95", "p99"):
        assert f">{q}</text>" in lat


def test_confusion_difference_aligns_labels() -> None:
    base = {"confusion": {"labels": ["a", "b"], "matrix": [[5, 1], [2, 7]]}}
    cand = {"confusion": {"labels": ["b", "a", "c"],
                          "matrix": [[6, 2, 0], [1, 4, 1], [0, 0, 3]]}}
    out = confusion_table(base, cand)
    rows = re.findall(r"<tr><th>([^<]*)</th>(.*?)</tr>", out)
    cells = {lab: re.findall(r"<td[^>]*>([^<]*)</td>", body) for lab, body in rows}
    # union order a, b, c; cand - base
    assert cells["a"] == ["-1", "0", "+1"]  # a->a 4-5, a->b 1-1, a->c 1-0
    assert cells["b"] == ["0", "-1", "0"]  # b->a 2-2, b->b 6-7
    assert cells["c"] == ["0", "0", "+3"]


def test_risk_coverage_threshold_point() -> None:
    rc = {"coverage": [0.25, 0.5, 0.75, 1.0], "risk": [0.0, 0.1, 0.2, 0.3],
          "threshold": [0.9, 0.7, 0.5, 0.1]}
    out = risk_coverage_plot([Side("m", {"risk_coverage": rc, "fallback_threshold": 0.6})])
    assert "coverage 50.0%, risk 10.0%" in out


def test_summary_only_runs_say_not_available() -> None:
    doc = render_html(make_comparison(with_details=False), OPTS)
    _no_external_refs(doc)
    assert doc.count(SUMMARY_ONLY) >= 3  # reliability, risk-coverage, confusion
    assert "Examples whose outcome changed" in doc
    assert "needs per-example data on both runs" in doc
    assert 'id="plot-cost"' in doc  # cost still drawn from the metric rows
    assert "<script>" not in doc  # no script when there is nothing to filter


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_payloads_are_escaped_everywhere(payload: str) -> None:
    doc = render_html(make_comparison(payload=payload), OPTS)
    assert payload not in doc
    assert "<img" not in doc
    tags = _tags(doc)  # parsed as a browser tokenizer would: no injected tag or handler
    assert not [t for t, _ in tags if t == "img"]
    assert [t for t, _ in tags if t == "script"] == ["script"]  # only the filter script
    assert not [a for _, attrs in tags for a in attrs if a.startswith("on")]
    assert "<script>window" not in doc
    assert html.escape(payload, quote=True) in doc
    # in plot legends (SVG text) and labels too
    plots = "".join(re.findall(r'<svg class="plot".*?</svg>', doc, flags=re.S))
    assert html.escape(f"prod{payload}", quote=True) in plots


def test_single_run_page() -> None:
    cmp = make_comparison()
    rec = RunRecord(run_id="r1", name="<b>bot</b>", model=ModelInfo("bot", "3"),
                    dataset=DatasetInfo("tickets", "v1"), ref="local:r1",
                    metrics={"accuracy": MetricValue(0.9), "cost_per_query_usd":
                             MetricValue(0.002)},
                    details=cmp.details["candidate_details"])
    doc = render_run_html(rec)
    _no_external_refs(doc)
    assert "<b>bot" not in doc and "&lt;b&gt;bot&lt;/b&gt;" in doc
    assert doc.count('<svg class="plot"') == 4
    assert "accuracy" in doc and 'class="confusion"' in doc
    empty = render_run_html(RunRecord(run_id="r2", name="x", model=ModelInfo("m")))
    assert SUMMARY_ONLY in empty


def test_nice_ticks() -> None:
    assert nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0, 1500) == [0, 500, 1000, 1500]
    t = nice_ticks(0.0011, 0.0019)
    assert t[0] >= 0.0011 and t[-1] <= 0.0019 and len(t) >= 3


# -- axes, long trends, number formats --------------------------------------------------------
def _texts(svg: str, cls: str, anchor: str) -> list[str]:
    return [html.unescape(t) for t in re.findall(
        rf'<text [^>]*class="{cls}" text-anchor="{anchor}">([^<]*)</text>', svg)]


def test_y_tick_labels_are_compact_for_large_and_small_values() -> None:
    from aipm_tracking.report.svg import Plot, Series, render_plot, tick_labels

    for hi, want in ((4.9e11, "4e11"), (2.5e7, "2e7"), (3e-6, "3e-6")):
        svg = render_plot(Plot("p", "x", "y", [Series("s", [0, 1], [0, hi])]))
        labels = _texts(svg, "tick", "end")
        assert want in labels, labels
        assert all(len(lb) <= 7 for lb in labels), labels  # fits the 58px left margin
        assert not any(lb.endswith(",000") for lb in labels)
    assert tick_labels([0, 0.2, 0.4]) == ["0", "0.2", "0.4"]
    assert tick_labels([0, 500, 1000, 1500]) == ["0", "500", "1,000", "1,500"]
    # close ticks at a large magnitude still get distinct labels
    close = tick_labels(nice_ticks(4.8691e11, 4.8692e11))
    assert len(set(close)) == len(close)


def test_trend_with_many_versions_thins_labels_and_shortens_captions() -> None:
    from aipm_tracking.report.trend import Trend, TrendMetric, render_trend_html

    versions = [f"v{i}" for i in range(1, 201)]
    values: list[float | None] = [0.5 + i / 1000 for i in range(200)]
    values[100] = 4.9e11
    t = Trend("big", versions, versions, [TrendMetric("latency_ms_p95", "lower", values,
                                                      [("max", 800.0)], "max 800")])
    doc = render_trend_html(t)
    svg = re.search(r'<svg class="plot".*?</svg>', doc, flags=re.S).group(0)  # type: ignore[union-attr]
    xlabels = _texts(svg, "tick", "middle")
    assert 2 <= len(xlabels) <= 12 and xlabels[0] == "v1" and xlabels[-1] == "v200"
    assert "max 800" in svg and "max 800.0" not in svg
    assert all(not lb.endswith(",000") for lb in _texts(svg, "tick", "end"))
    banner = re.search(r'<div class="sub">(.*?)</div>', doc).group(1)  # type: ignore[union-attr]
    caption = re.search(r"<figcaption>(.*?)</figcaption>", doc).group(1)  # type: ignore[union-attr]
    for text in (html.unescape(banner), html.unescape(caption)):
        assert "v1 → v2 → v3 → … → v198 → v199 → v200 (200 versions)" in text
        assert "v100" not in text
    # a short trend still lists every version
    short = render_trend_html(Trend("m", ["v1", "v2"], ["a", "b"],
                                    [TrendMetric("accuracy", "higher", [0.8, 0.9])]))
    assert "v1 → v2<" in short
    assert _texts(re.search(r'<svg class="plot".*?</svg>', short, flags=re.S).group(0),  # type: ignore[union-attr]
                  "tick", "middle") == ["v1", "v2"]


def test_relative_delta_is_bounded_and_counts_are_integers() -> None:
    from dataclasses import replace

    cmp = make_comparison()
    row = cmp.metrics[0]
    cmp.metrics[0] = replace(row, delta_rel=1016985060.521)
    cmp.metrics[1] = replace(cmp.metrics[1], delta_rel=-0.125)
    doc = render_html(cmp, ReportOptions())
    assert "(&gt;+999%)" in doc and "101698506052" not in doc
    assert "(-12.5%)" in doc
    rec = RunRecord(run_id="r1", name="r", model=ModelInfo("bot", "v1.0"),
                    metrics={"n_examples": MetricValue(400.0), "accuracy": MetricValue(0.9),
                             "n_examples[slice=de]": MetricValue(80.0)})
    page = render_run_html(rec)
    assert ">400<" in page and "400.0" not in page and ">80<" in page
    assert "bot v1.0" in page and "vv1.0" not in page


def test_a_threshold_that_meets_no_target_is_not_called_recommended() -> None:
    from aipm_tracking.report.blocks import _threshold_of

    found = {"threshold_recommendation": {"found": True, "threshold": 0.55}}
    none = {"threshold_recommendation": {"found": False, "threshold": 0.3}}
    assert _threshold_of(found) == (0.55, "recommended threshold")
    assert _threshold_of(none) == (0.3, "closest threshold (none meets the risk target)")
