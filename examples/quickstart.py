"""Quickstart: the Python API in five lines (evaluate, log, compare).

Run from anywhere: `python examples/quickstart.py`. It writes to the embedded store at
$AIPM_STORE (default ./.aipm) and uses the guardrails file next to this script.
"""

from __future__ import annotations

from pathlib import Path

import aipm_tracking as aipm
from aipm_tracking.demo_data import make_eval_set

HERE = Path(__file__).resolve().parent
GUARDRAILS = HERE / "guardrails.yaml"

# Per-example eval results of two model versions on the same eval set (pandas DataFrames;
# a CSV, Parquet or JSONL path works the same way).
v1 = make_eval_set(version=1, n=4000)
v2 = make_eval_set(version=2, n=4000)

# 1. metrics a PM owns, from per-example rows
res = aipm.evaluate(v2, fallback_threshold=0.6)
print(f"v2 accuracy {res.metrics['accuracy']:.3f}, fallback rate {res.metrics['fallback_rate']:.3f}, "
      f"p95 latency {res.metrics['latency_ms_p95']:.0f} ms, ECE {res.metrics['ece']:.3f}")

# 2. store both runs (with the guardrails hash, so moved criteria are detected later)
base = aipm.log(v1, model="support-bot", model_version="1", guardrails=GUARDRAILS)
cand = aipm.log(v2, model="support-bot", model_version="2", guardrails=GUARDRAILS)
print("logged", base, cand)

# 3. the verdict, with paired statistics on example_id
cmp = aipm.compare(base, cand, guardrails=GUARDRAILS)
for row in cmp.metrics:
    print(f"  {row.metric:<22} {row.verdict:<12} {row.reason}")
print(f"verdict: {cmp.verdict} (exit code {cmp.exit_code})")
