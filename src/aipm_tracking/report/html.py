"""``--format html``: one self-contained page for a comparison (and for a single run).

No CDN, no URL at all: CSS and the one small script are inline, plots are inline SVG made in
Python. A Content-Security-Policy meta tag allows only that script (by its hash), no
network, no inline event handlers: even if something slipped past the escaping, it could
neither run nor load anything. Every value from data is escaped (``html.escape``, quotes
too) before it reaches the page.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from ..schema import Comparison, MetricComparison, RunRecord
from .base import ReportOptions
from .blocks import (
    SUMMARY_ONLY,
    Side,
    confusion_table,
    cost_plot,
    latency_plot,
    metrics_table,
    na,
    reliability_plot,
    risk_coverage_plot,
)
from .common import (
    SlicedMetrics,
    context_line,
    fmt_ci,
    fmt_count,
    fmt_metric,
    fmt_num,
    fmt_p,
    fmt_rel,
    headline,
    is_warning,
    more_slices_note,
    run_label,
    sorted_rows,
)
from .svg import PALETTE, esc

MAX_EXAMPLES = 200
COST_WHY = "not available (neither run has a cost_usd column or a cost_per_query_usd metric)"

CSS = """
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:#111827;background:#f8fafc;margin:0}main{max-width:1180px;margin:0 auto;padding:20px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid
#e5e7eb;padding-bottom:4px}.banner{border-radius:8px;padding:14px 18px;margin-bottom:12px;
color:#fff}.banner.pass{background:#15803d}.banner.fail{background:#b91c1c}
.banner.inconclusive{background:#7e22ce}.banner.info{background:#1e40af}.banner .sub{opacity:.9;font-size:13px}
.runs{display:grid;grid-template-columns:1fr 1fr;gap:12px}.card{background:#fff;border:1px
solid #e5e7eb;border-radius:8px;padding:10px 14px}.card h3{margin:0 0 4px;font-size:14px}
.muted,.note{color:#6b7280;font-size:12.5px}table{border-collapse:collapse;background:#fff}
table.grid{width:100%}th,td{border:1px solid #e5e7eb;padding:4px 8px;text-align:left;
vertical-align:top}th{background:#f1f5f9;font-weight:600}td.num{text-align:right;
font-variant-numeric:tabular-nums;white-space:nowrap}td.metric{white-space:nowrap;
font-family:ui-monospace,Menlo,monospace;font-size:13px}td small,th small{color:#4b5563;
font-weight:400}th.reason,td.reason{min-width:230px}
tr.v-regression td,tr.v-breach td{background:#fee2e2}tr.v-warn td{background:#fef9c3}
tr.v-inconclusive td{background:#f3e8ff}tr.v-improved td{background:#dcfce7}
.badge{display:inline-block;border-radius:4px;padding:0 6px;font-size:12px;font-weight:600}
.b-regression,.b-breach{background:#dc2626;color:#fff}.b-warn{background:#facc15}
.b-inconclusive{background:#a855f7;color:#fff}.b-improved{background:#16a34a;color:#fff}
.b-pass{background:#e5e7eb}table#trend th,table#trend td{white-space:nowrap}.plots{display:grid;grid-template-columns:repeat(auto-fit,
minmax(480px,1fr));gap:12px}.fig{margin:0;background:#fff;border:1px solid #e5e7eb;
border-radius:8px;padding:8px}.fig svg{width:100%;height:auto}figcaption{color:#4b5563;
font-size:12.5px}.na{background:#fff;border:1px dashed #cbd5e1;border-radius:8px;padding:14px;
color:#6b7280}.scroll{overflow-x:auto}table.confusion td{text-align:right;min-width:44px}
svg .frame{fill:#fff;stroke:#9ca3af}svg .grid{stroke:#eef2f7}svg .tick{font-size:11px;
fill:#6b7280}svg .axis{font-size:12px;fill:#374151}svg .ptitle{font-size:13px;font-weight:600;
fill:#111827}svg .legend,svg .mlabel{font-size:11px;fill:#374151}svg .diag{stroke:#9ca3af;
stroke-dasharray:3 3}input#filter{padding:6px 8px;width:320px;max-width:100%;border:1px solid
#cbd5e1;border-radius:6px}ul.warnings li{color:#92400e}.ok{color:#15803d}.bad{color:#b91c1c}
"""

FILTER_JS = """(function(){var box=document.getElementById('filter');
if(!box){return;}var rows=document.querySelectorAll('#changed tbody tr');
var count=document.getElementById('filter-count');
box.addEventListener('input',function(){var q=box.value.toLowerCase();var shown=0;
for(var i=0;i<rows.length;i++){var hit=rows[i].textContent.toLowerCase().indexOf(q)>=0;
rows[i].hidden=!hit;if(hit){shown++;}}if(count){count.textContent=shown+' shown';}});})();"""


def page(title: str, body: str, script: str = "") -> str:
    """A complete HTML document with inline CSS, a strict CSP and an optional inline script."""
    if script:
        digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
        script_src = f"'sha256-{digest}'"
        script_tag = f"<script>{script}</script>"
    else:
        script_src, script_tag = "'none'", ""
    csp = (f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
           f"script-src {script_src}; base-uri 'none'; form-action 'none'")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body><main>\n"
        f"{body}\n</main>{script_tag}</body></html>\n"
    )


def _badge(r: MetricComparison) -> str:
    v = "warn" if is_warning(r) else r.verdict
    word = r.verdict.upper() if r.blocking else r.verdict
    return f'<span class="badge b-{esc(v)}">{esc(word)}</span>'


def _row_class(r: MetricComparison) -> str:
    return "v-warn" if is_warning(r) else f"v-{r.verdict}"


def guardrail_table(rows: list[MetricComparison], table_id: str = "guardrails") -> str:
    head = ("<tr><th>metric</th><th>guardrail</th><th>baseline</th><th>candidate</th>"
            "<th>Δ<br><small>interval of Δ</small></th><th>p<br><small>test</small></th>"
            "<th>verdict</th><th class=\"reason\">reason</th></tr>")
    body = []
    for r in rows:
        rel = f" ({fmt_rel(r.delta_rel)})" if fmt_rel(r.delta_rel) else ""
        body.append(
            f'<tr class="{esc(_row_class(r))}"><td class="metric">{esc(r.metric)}</td>'
            f"<td>{esc(r.threshold)}</td><td class=\"num\">{esc(fmt_num(r.baseline))}</td>"
            f"<td class=\"num\">{esc(fmt_num(r.candidate))}</td>"
            f"<td class=\"num\">{esc(fmt_num(r.delta, signed=True) + rel)}<br>"
            f"<small>{esc(fmt_ci(r.ci) or '—')}</small></td>"
            f"<td class=\"num\">{esc(fmt_p(r.p_value))}<br><small>{esc(r.test or '')}</small>"
            f"</td><td>{_badge(r)}</td><td class=\"reason\">{esc(r.reason)}</td></tr>")
    return (f'<div class="scroll"><table class="grid" id="{esc(table_id)}"><thead>{head}</thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _cost_bars(cmp: Comparison) -> list[tuple[str, float | None]]:
    row = next((r for r in cmp.metrics if r.metric == "cost_per_query_usd"), None)
    if row is not None and (row.baseline is not None or row.candidate is not None):
        return [("baseline", row.baseline), ("candidate", row.candidate)]
    # optional: the runs' metric dicts, when the comparison carries them
    bm, cm = cmp.details.get("baseline_metrics"), cmp.details.get("candidate_metrics")
    if isinstance(bm, dict) and isinstance(cm, dict) and (
            "cost_per_query_usd" in bm or "cost_per_query_usd" in cm):
        return [("baseline", bm.get("cost_per_query_usd")),
                ("candidate", cm.get("cost_per_query_usd"))]
    proj = cmp.details.get("cost_projection")
    if isinstance(proj, dict):
        vals = []
        for side in ("baseline", "candidate"):
            s = proj.get(side)
            vals.append((side, s.get("cost_per_query_usd") if isinstance(s, dict) else None))
        return vals
    return []


def _changed_examples(rows: Any) -> str:
    if not isinstance(rows, list):
        return na("Changed examples", "not available (needs per-example data on both runs)")
    if not rows:
        return '<p class="muted">No example changed outcome.</p>'
    rows = [r for r in rows[:MAX_EXAMPLES] if isinstance(r, dict)]
    fixed = ["example_id", "slice", "label", "baseline_prediction", "candidate_prediction"]
    extra: list[str] = []
    for r in rows:
        for k in r:
            if k not in fixed and k not in ("baseline_correct", "candidate_correct") \
                    and k not in extra:
                extra.append(str(k))
    cols = fixed + extra
    head = "".join(f"<th>{esc(c)}</th>" for c in cols) + "<th>outcome</th>"
    body = []
    for r in rows:
        cells = "".join(f"<td>{esc('' if r.get(c) is None else r.get(c))}</td>" for c in cols)
        b, c = bool(r.get("baseline_correct")), bool(r.get("candidate_correct"))
        outcome = ('<span class="bad">right → wrong</span>' if b and not c else
                   '<span class="ok">wrong → right</span>' if c and not b else "changed")
        body.append(f"<tr>{cells}<td>{outcome}</td></tr>")
    fixed_n = sum(1 for r in rows if r.get("candidate_correct") and not r.get("baseline_correct"))
    return (f'<p class="muted">{len(rows)} examples shown: the candidate fixed {fixed_n}, '
            f"broke {len(rows) - fixed_n}. "
            '<input id="filter" type="search" placeholder="filter by text, label, id…" '
            'aria-label="filter examples"> <span id="filter-count"></span></p>'
            f'<div class="scroll"><table class="grid" id="changed"><thead><tr>{head}</tr>'
            f"</thead><tbody>{''.join(body)}</tbody></table></div>")


def _run_card(role: str, s: Any) -> str:
    ds = s.dataset
    dataset = "@".join(x for x in (ds.name, ds.version) if x) or "—"
    bits = [f"ref {s.ref}" if s.ref else "", f"dataset {dataset}",
            f"n={fmt_count(s.n_examples)}" if s.n_examples is not None else "",
            f"created {s.created_at}" if s.created_at else ""]
    return (f'<div class="card"><h3>{esc(role)}: {esc(run_label(s))}</h3>'
            f'<div class="muted">{esc(" · ".join(b for b in bits if b))}</div></div>')


def _plots(sides: list[Side], cost: list[tuple[str, float | None]],
           cost_why: str | None = None) -> str:
    return ('<div class="plots">' + reliability_plot(sides) + risk_coverage_plot(sides)
            + latency_plot(sides) + cost_plot(cost, cost_why) + "</div>")


def render_html(cmp: Comparison, opts: ReportOptions) -> str:
    """Comparison -> a self-contained HTML page."""
    verdict = cmp.verdict
    bd = cmp.details.get("baseline_details") or {}
    cd = cmp.details.get("candidate_details") or {}
    sides = [Side(f"baseline: {cmp.baseline.name}", bd, PALETTE[0], "6 4"),
             Side(f"candidate: {cmp.candidate.name}", cd, PALETTE[1])]
    parts = [
        f'<div class="banner {esc(verdict)}" id="verdict"><h1>{esc(headline(cmp))}</h1>'
        f'<div class="sub">{esc(context_line(cmp))}</div></div>',
        '<div class="runs">' + _run_card("baseline", cmp.baseline)
        + _run_card("candidate", cmp.candidate) + "</div>",
    ]
    if cmp.warnings:
        parts.append('<ul class="warnings">' + "".join(f"<li>{esc(w)}</li>"
                                                       for w in cmp.warnings) + "</ul>")
    main_rows = [r for r in sorted_rows(cmp) if r.slice is None and "[" not in r.metric]
    slice_rows = [r for r in cmp.metrics if r.slice is not None or "[" in r.metric]
    parts += ["<h2>Guardrails</h2>", guardrail_table(main_rows) if main_rows
              else '<p class="muted">No whole-set guardrails.</p>']
    parts += ["<h2>Plots</h2>", _plots(sides, _cost_bars(cmp), COST_WHY)]
    parts += ["<h2>Confusion matrix difference</h2>",
              confusion_table(bd, cd) if _has(bd, cd, "confusion") else na("Confusion matrix")]
    parts += ["<h2>Per-slice guardrails</h2>", guardrail_table(slice_rows, "slice-guardrails") if slice_rows
              else '<p class="muted">No per-slice guardrails.</p>']
    parts.append(_slice_sizes(bd, cd))
    parts += ["<h2>Examples whose outcome changed</h2>",
              _changed_examples(cmp.details.get("changed_examples"))]
    title = f"aipm: {verdict.upper()}: {cmp.candidate.name} vs {cmp.baseline.name}"
    script = FILTER_JS if isinstance(cmp.details.get("changed_examples"), list) else ""
    return page(title, "\n".join(parts), script)


def _slice_sizes(bd: Any, cd: Any) -> str:
    """Rows per slice in each run's eval set (from ``details["slices"]``), if known."""
    def values(d: Any) -> dict[str, Any]:
        sl = d.get("slices") if isinstance(d, dict) else None
        v = sl.get("values") if isinstance(sl, dict) else None
        return v if isinstance(v, dict) else {}

    vb, vc = values(bd), values(cd)
    names = list(dict.fromkeys([*vb, *vc]))
    if not names:
        return ""
    rows = "".join(f"<tr><td>{esc(n)}</td><td class=\"num\">{esc(vb.get(n, '—'))}</td>"
                   f"<td class=\"num\">{esc(vc.get(n, '—'))}</td></tr>" for n in names)
    return ('<p class="note">Rows per slice</p><table class="grid" id="slice-sizes" '
            'style="width:auto"><thead><tr><th>slice</th><th>baseline</th><th>candidate</th>'
            f"</tr></thead><tbody>{rows}</tbody></table>")


def _has(bd: Any, cd: Any, key: str) -> bool:
    return (isinstance(bd, dict) and key in bd) or (isinstance(cd, dict) and key in cd)


def render_run_html(rec: RunRecord) -> str:
    """One run -> a self-contained HTML page (metrics, reliability, risk-coverage, latency,
    cost, confusion matrix), built from the same blocks as the comparison report."""
    d = rec.details or {}
    label = run_label(_summary(rec))
    side = Side(rec.name, d, PALETTE[1])
    sm = SlicedMetrics.of({k: mv.value for k, mv in rec.metrics.items()})
    cost = [(rec.name, rec.metric("cost_per_query_usd"))]
    ds = rec.dataset
    dataset = "@".join(x for x in (ds.name, ds.version) if x) or "—"
    issues = d.get("data_issues") if isinstance(d.get("data_issues"), list) else []
    parts = [
        f'<div class="banner info" id="verdict"><h1>{esc(label)}</h1><div class="sub">'
        f'{esc(" · ".join(b for b in (rec.ref or "", "dataset " + dataset, rec.created_at) if b))}'
        "</div></div>",
        "<h2>Metrics</h2>",
        metrics_table(sm.top) if sm.top or not sm.total_slices
        else '<p class="muted">No whole-set metrics; the per-slice ones are below.</p>',
    ]
    if issues:
        parts.append("<h2>Data issues</h2><ul class=\"warnings\">" + "".join(
            f"<li>{esc(i.get('column'))}: {esc(i.get('count'))} row(s) {esc(i.get('problem'))}"
            f"</li>" for i in issues if isinstance(i, dict)) + "</ul>")
    parts += ["<h2>Plots</h2>", _plots([side], cost)]
    parts += ["<h2>Confusion matrix</h2>",
              confusion_table(None, d) if "confusion" in d else na("Confusion matrix",
                                                                   SUMMARY_ONLY)]
    if sm.total_slices:
        parts += ["<h2>Per-slice metrics</h2>", slice_pivot_table(sm, rec.ref or rec.run_id)]
    return page(f"aipm run: {label}", "\n".join(parts))


def slice_pivot_table(sm: SlicedMetrics[float], ref: str | None = None) -> str:
    """Per-slice metrics as a slice × metric table (the first slices by name), with a line
    saying how many slices it leaves out."""
    head = "<th>slice</th>" + "".join(f"<th>{esc(c)}</th>" for c in sm.columns)
    rows = "".join(
        f'<tr><td class="metric">{esc(key)}</td>'
        + "".join(f'<td class="num">{esc(fmt_metric(c, ms.get(c)))}</td>' for c in sm.columns)
        + "</tr>" for key, ms in sm.slices.items())
    note = (f'<p class="note">{esc(more_slices_note(sm.hidden, len(sm.slices), ref))}</p>'
            if sm.hidden else "")
    return (f'<p class="muted">{sm.total_slices:,} slice{"s" if sm.total_slices != 1 else ""}'
            f"</p>"
            f'<div class="scroll"><table class="grid" id="slice-metrics"><thead><tr>{head}'
            f"</tr></thead><tbody>{rows}</tbody></table></div>{note}")


def _summary(rec: RunRecord) -> Any:
    from ..schema import RunSummary

    return RunSummary.of(rec)
