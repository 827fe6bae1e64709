"""`aipm --help` start-up time vs the 0.5 s budget and the import times of the SDKs it wraps.

Prints median wall time over several runs of each, measured in this run:
  aipm --help (every plugin loaded: MLflow and W&B plugins included), aipm metrics,
  python -c pass (the interpreter floor), python -c "import mlflow" / "import wandb".
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

REPS = int(sys.argv[1]) if len(sys.argv) > 1 else 7
AIPM = str(Path(sys.executable).with_name("aipm"))


def timed(cmd: list[str], reps: int = REPS) -> float:
    subprocess.run(cmd, capture_output=True, check=False)  # warm the page cache
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=False)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    floor = timed([sys.executable, "-c", "pass"])
    help_s = timed([AIPM, "--help"])
    metrics_s = timed([AIPM, "metrics"])
    print(f"python -c pass          {floor * 1e3:7.0f} ms")
    print(f"aipm --help             {help_s * 1e3:7.0f} ms   budget 500 ms -> "
          f"{help_s / 0.5:.2f} of budget")
    print(f"aipm metrics            {metrics_s * 1e3:7.0f} ms")
    for sdk in ("mlflow", "wandb"):
        s = timed([sys.executable, "-c", f"import {sdk}"], reps=3)
        print(f"python -c 'import {sdk}' {s * 1e3:6.0f} ms   aipm --help is {s / help_s:.1f}x faster")


if __name__ == "__main__":
    main()
