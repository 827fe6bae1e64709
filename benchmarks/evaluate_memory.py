"""Peak memory of evaluating a 20M-row Parquet file chunk by chunk.

Writes a 20M-row eval file (example_id, label, prediction, confidence, latency_ms, cost_usd,
overridden, slice) to a temporary directory in 1M-row row groups, then evaluates it in a
fresh subprocess (streaming mode: ParquetFile.iter_batches, 1M-row chunks) and reports that
process's peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) next to the RSS of the
same process after imports only. Target: < 1 GB.

    python benchmarks/evaluate_memory.py [--rows 20000000] [--keep DIR] [--shuffle-ids]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import numpy, pandas, pyarrow.parquet, scipy.special  # imports first: their RSS is the floor
from aipm_tracking.evaluation import evaluate
def hwm_kb():  # this process's own high-water mark (ru_maxrss may carry the parent's over exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
floor_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
res = evaluate(sys.argv[1])
secs = time.perf_counter() - t
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"floor_mb": floor_kb / 1024, "peak_mb": peak_kb / 1024, "seconds": secs,
                  "hwm_mb": hwm_kb() / 1024,
                  "n": res.n_examples, "examples_kept": res.examples is not None,
                  "p99": res.metrics.get("latency_ms_p99"), "accuracy": res.metrics.get("accuracy"),
                  "quantiles_exact": res.details["latency_quantiles"]["exact"],
                  "n_slices": len(res.details.get("slices", {}).get("values", {}))}))
"""


def write_file(path: Path, rows: int, chunk: int = 1_000_000, shuffle_ids: bool = False) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    ids = rng.permutation(rows) if shuffle_ids else None
    writer = None
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        y = rng.integers(0, 10, n)
        conf = rng.beta(8, 2, n)
        tbl = pa.table({
            "example_id": (ids[start:start + n] if ids is not None
                           else np.arange(start, start + n, dtype=np.int64)),
            "label": y,
            "prediction": np.where(rng.random(n) < conf, y, rng.integers(0, 10, n)),
            "confidence": conf,
            "latency_ms": rng.lognormal(3, 0.5, n),
            "cost_usd": rng.random(n) * 1e-3,
            "overridden": rng.random(n) < 0.03,
            "slice": rng.choice(np.array(["de", "en", "fr", "es"]), n),
        })
        if writer is None:
            writer = pq.ParquetWriter(str(path), tbl.schema)
        writer.write_table(tbl)
    assert writer is not None
    writer.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--keep", default=None, help="directory to keep the file in")
    ap.add_argument("--shuffle-ids", action="store_true",
                    help="unordered example ids (the duplicate check then sorts all ids)")
    ap.add_argument("--write-only", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.write_only:  # runs in its own process so the parent stays small
        write_file(Path(args.write_only), args.rows, shuffle_ids=args.shuffle_ids)
        return
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(args.keep or tmp)
        path = d / f"eval_{args.rows}{'_shuffled' if args.shuffle_ids else ''}.parquet"
        if not path.exists():
            t = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--write-only",
                            str(path), *(["--shuffle-ids"] if args.shuffle_ids else [])],
                           check=True)
            print(f"wrote {path.name}: {path.stat().st_size / 2**20:.0f} MiB "
                  f"in {time.perf_counter() - t:.1f} s")
        out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True,
                             text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"rows {r['n']:,}  slices {r['n_slices']}  examples kept: {r['examples_kept']}  "
          f"latency quantiles exact: {r['quantiles_exact']}")
    print(f"evaluate (streamed): {r['seconds']:.1f} s, accuracy {r['accuracy']:.4f}, "
          f"p99 {r['p99']:.2f} ms")
    print(f"peak RSS (ru_maxrss) {r['peak_mb']:.0f} MiB, VmHWM {r['hwm_mb']:.0f} MiB "
          f"(after imports only: {r['floor_mb']:.0f} MiB; evaluation adds "
          f"{r['peak_mb'] - r['floor_mb']:.0f} MiB)  target < 1024 MiB: "
          f"{'OK' if max(r['peak_mb'], r['hwm_mb']) < 1024 else 'OVER'}")


if __name__ == "__main__":
    main()
