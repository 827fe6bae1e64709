"""``--format junit``: guardrails as JUnit test cases, so CI systems list them as tests.

One ``<testcase>`` per guardrail row (per-slice guardrails included, named
``accuracy[slice=de]``), ``classname`` = the guardrails file's name (or ``aipm``).

Outcome mapping (documented in ``docs/``, kept here as the reference):

- blocking ``regression`` / ``breach``  -> ``<failure type="regression|breach">`` with the reason;
- ``inconclusive`` -> ``<failure type="inconclusive">`` (fail closed, like exit code 3), or
  ``<skipped>`` when the comparison was run with ``--allow-missing``;
- ``warn`` and non-blocking regressions -> a passing test whose ``system-out`` starts with
  ``WARNING:`` (JUnit has no warning state);
- ``pass`` / ``improved`` -> a passing test.

Every test case's ``system-out`` carries the numbers (baseline, candidate, delta, interval,
p-value, test, threshold). Generated with ``xml.etree`` so every value is escaped.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ..schema import Comparison, MetricComparison
from .base import ReportOptions
from .common import fmt_ci, fmt_num, fmt_p, headline, is_warning, run_label


def _numbers(r: MetricComparison) -> str:
    lines = []
    if is_warning(r):
        lines.append(f"WARNING: {r.verdict}: {r.reason}")
    lines += [
        f"verdict: {r.verdict} (severity {r.severity})",
        f"baseline: {fmt_num(r.baseline)}",
        f"candidate: {fmt_num(r.candidate)}",
        f"delta: {fmt_num(r.delta, signed=True)} {fmt_ci(r.ci)}".rstrip(),
        f"p_value: {fmt_p(r.p_value)} ({r.test or 'no test'})",
    ]
    if r.threshold:
        lines.append(f"guardrail: {r.threshold}")
    if r.n is not None:
        lines.append(f"n: {r.n}")
    if r.reason:
        lines.append(f"reason: {r.reason}")
    return "\n".join(lines)


def _outcome(r: MetricComparison, allow_missing: bool) -> str:
    """'failure', 'skipped' or 'passed'."""
    if r.blocking:
        return "failure"
    if r.verdict == "inconclusive":
        return "skipped" if allow_missing else "failure"
    return "passed"


def _clean(text: str) -> str:
    """Drop characters XML 1.0 cannot hold (control characters other than tab/newline)."""
    return "".join(c for c in text if c in "\t\n\r" or ord(c) >= 0x20)


def build_junit(cmp: Comparison) -> ET.Element:
    """The ``<testsuites>`` element for ``cmp``."""
    suite_name = cmp.guardrails_name or "aipm"
    classname = _clean(suite_name)
    outcomes = [_outcome(r, cmp.allow_missing) for r in cmp.metrics]
    counts = {
        "tests": str(len(cmp.metrics)),
        "failures": str(outcomes.count("failure")),
        "errors": "0",
        "skipped": str(outcomes.count("skipped")),
        "time": "0",
    }
    # <testsuites> carries no 'skipped' attribute in the Jenkins/Ant schema; <testsuite> does.
    root = ET.Element("testsuites", {"name": "aipm",
                                     **{k: v for k, v in counts.items() if k != "skipped"}})
    attrs = {"name": classname, **counts}
    if cmp.candidate.created_at:
        attrs["timestamp"] = cmp.candidate.created_at
    suite = ET.SubElement(root, "testsuite", attrs)
    props = ET.SubElement(suite, "properties")
    for k, v in (("verdict", cmp.verdict), ("exit_code", str(cmp.exit_code)),
                 ("baseline", run_label(cmp.baseline)),
                 ("baseline_ref", cmp.baseline.ref or ""),
                 ("candidate", run_label(cmp.candidate)),
                 ("candidate_ref", cmp.candidate.ref or ""),
                 ("gate", cmp.gate), ("alpha", f"{cmp.alpha:g}"),
                 ("guardrails_hash", cmp.guardrails_hash or "")):
        ET.SubElement(props, "property", {"name": k, "value": _clean(v)})
    for r, outcome in zip(cmp.metrics, outcomes, strict=True):
        case = ET.SubElement(suite, "testcase", {"classname": classname,
                                                 "name": _clean(r.metric), "time": "0"})
        message = _clean(f"{r.verdict}: {r.reason}" if r.reason else r.verdict)
        if outcome == "failure":
            fail = ET.SubElement(case, "failure", {"message": message, "type": r.verdict})
            fail.text = _clean(_numbers(r))
        elif outcome == "skipped":
            ET.SubElement(case, "skipped", {"message": message})
        out = ET.SubElement(case, "system-out")
        out.text = _clean(_numbers(r))
    summary = [headline(cmp)] + [f"warning: {w}" for w in cmp.warnings]
    ET.SubElement(suite, "system-out").text = _clean("\n".join(summary))
    return root


def render_junit(cmp: Comparison, opts: ReportOptions) -> str:
    """Comparison -> JUnit XML text (UTF-8 declaration, indented)."""
    root = build_junit(cmp)
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"
