"""The three gates on one question: is a 0.5-point accuracy drop a regression?

Run: `python examples/gates.py [DIR]`. It writes two pairs of eval files into DIR (default a
temporary directory): the same 0.5-point drop measured on 100,000 paired examples and on 200,
with a guardrail that allows a 0.1-point drop (plus an unchanged model on 100,000), and runs `aipm compare` on each pair under
`--gate confirmed` (the default), `--gate point` and `--gate strict`. The README's worked
example is this script's output.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

GUARDRAILS = "version: 1\nname: gates\nmetrics:\n  accuracy: {max_regression: 0.001}\n"


def paired_tables(n: int, only_base: int, only_cand: int, seed: int = 0
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two runs on the same ``n`` examples: ``only_base`` examples only the baseline gets
    right, ``only_cand`` only the candidate; elsewhere they agree (90 % accuracy)."""
    rng = np.random.default_rng(seed)
    base_ok = rng.random(n) < 0.9
    cand_ok = base_ok.copy()
    cand_ok[rng.choice(np.flatnonzero(base_ok), only_base, replace=False)] = False
    cand_ok[rng.choice(np.flatnonzero(~base_ok), only_cand, replace=False)] = True
    label = rng.integers(0, 5, n)
    conf = rng.uniform(0.6, 1.0, n)

    def table(ok: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({"example_id": np.arange(n), "label": label,
                             "prediction": np.where(ok, label, (label + 1) % 5),
                             "confidence": conf})

    return table(base_ok), table(cand_ok)


def main(out_dir: Path) -> dict[tuple[int, int, str], tuple[str, int]]:
    """Write the files, run the comparisons;
    ``{(n, examples lost, gate): (accuracy verdict, exit code)}``."""
    import json

    out_dir.mkdir(parents=True, exist_ok=True)
    g = out_dir / "gates.yaml"
    g.write_text(GUARDRAILS)
    results = {}
    # 100k: 2,500 examples flipped to wrong, 2,000 to right -> -0.5 points
    # 200:  5 flipped to wrong, 4 to right -> -1 example = -0.5 points
    # 100k, 1,000 flipped each way -> no change (what `strict` needs to see to pass)
    for n, only_base, only_cand in ((100_000, 2500, 2000), (200, 5, 4), (100_000, 1000, 1000)):
        base, cand = paired_tables(n, only_base, only_cand)
        stem = f"{n}_{only_base}_{only_cand}"
        a, b = out_dir / f"base_{stem}.parquet", out_dir / f"cand_{stem}.parquet"
        base.to_parquet(a)
        cand.to_parquet(b)
        for gate in ("confirmed", "point", "strict"):
            cmd = ["compare", str(a), str(b), "--guardrails", str(g), "--gate", gate]
            r = subprocess.run([sys.executable, "-m", "aipm_tracking", *cmd, "--format", "json"],
                               capture_output=True, text=True)
            row = next(m for m in json.loads(r.stdout)["metrics"] if m["metric"] == "accuracy")
            results[(n, only_base - only_cand, gate)] = (row["verdict"], r.returncode)
            ci = row["ci"] and f"[{row['ci'][0]:+.4f}, {row['ci'][1]:+.4f}]"
            print(f"n={n:<7} lost {only_base - only_cand:<4} --gate {gate:<9} delta {row['delta']:+.4f}  CI {ci}  "
                  f"p={row['p_value']:.2g}  {row['verdict']:<10} exit {r.returncode}  "
                  f"({row['reason']})")
    return results


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as d:
            main(Path(d))
