"""Scale-out: 8 concurrent writers -> a real ``mlflow server`` backed by PostgreSQL.

The script
1. starts a throw-away PostgreSQL cluster (Debian ``postgresql``: ``initdb`` + ``pg_ctl`` in a
   temp dir, as the ``postgres`` user when run as root, trust auth, listening on 127.0.0.1 on
   a free port only);
2. starts ``mlflow server --backend-store-uri postgresql://...`` (``--workers`` uvicorn
   workers, proxied artifacts in the temp dir);
3. runs ``--writers`` processes, each one a Tracker-like writer going through the plugin's
   batch path (``start_run`` once, then ``log_points`` with ``--batch`` points per call,
   ``--points`` per writer), released together by a barrier;
4. reports points/s (all points sent / wall time from release to the last writer done) and
   checks that the server's count (via the REST API, ``get_metric_history`` per run and
   key) and PostgreSQL's own ``count(*)`` both equal the count sent;
5. tears everything down (server, cluster, temp dir), also on failure.

Usage: python benchmarks/mlflow_server_load.py [--writers 8] [--points 12500]
       [--batch 5000] [--workers 4]
"""

from __future__ import annotations

import argparse
import glob
import multiprocessing as mp
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins/aipm-mlflow/src"))
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
KEYS = 5


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    exe = shutil.which("initdb")
    if exe:
        return Path(exe).parent
    raise SystemExit("PostgreSQL not found (apt-get install postgresql)")


class Postgres:
    """A temporary cluster; run as the ``postgres`` user when we are root."""

    def __init__(self, root: Path, port: int) -> None:
        self.bin, self.port = _pg_bin(), port
        self.data, self.log = root / "pgdata", root / "pg.log"
        self.sock = root / "pgsock"
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres"
            pw = pwd.getpwnam(self.user)
            for p in (root, self.sock):
                p.mkdir(exist_ok=True)
                os.chown(p, pw.pw_uid, pw.pw_gid)
        else:
            self.sock.mkdir(exist_ok=True)

    def _run(self, *cmd: str) -> None:
        full = [str(self.bin / cmd[0]), *cmd[1:]]
        if self.user:
            full = ["runuser", "-u", self.user, "--", *full]
        subprocess.run(full, check=True, capture_output=True, text=True)

    def start(self) -> str:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-sync")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-o",
                  f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 "
                  f"-c max_connections=200 -c fsync=off", "start")
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                  "mlflow")
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/mlflow"

    def stop(self) -> None:
        if self.data.exists():
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
            except subprocess.CalledProcessError:
                pass

    def count_metrics(self) -> int:
        import psycopg2

        con = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres",
                               dbname="mlflow")
        try:
            with con.cursor() as cur:
                cur.execute("SELECT count(*) FROM metrics WHERE key LIKE %s", ("load/%",))
                return int(cur.fetchone()[0])
        finally:
            con.close()


def _writer(url: str, idx: int, n: int, batch: int, barrier, out) -> None:  # noqa: ANN001
    from aipm_tracking.backends.base import BackendOptions
    from aipm_tracking.plugins import get_backend
    from aipm_tracking.schema import MetricPoint, ModelInfo, RunRecord

    be = get_backend("mlflow", BackendOptions(mlflow_uri=url, quiet=True,
                                              extra={"mlflow_timeout_s": 120}))
    ref = be.start_run(RunRecord(run_id="", name=f"writer-{idx}", model=ModelInfo("m")),
                       "load")
    t0 = time.time()
    pts = [MetricPoint(f"load/k{i % KEYS}", float(i), i // KEYS, t0 + i * 1e-3)
           for i in range(n)]
    barrier.wait()
    start = time.perf_counter()
    for i in range(0, n, batch):
        be.log_points(ref, pts[i:i + batch])
    out.put((ref, n, start, time.perf_counter()))
    be.finish_run(ref)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--points", type=int, default=12_500, help="points per writer")
    ap.add_argument("--batch", type=int, default=5_000, help="points per log_points call")
    ap.add_argument("--workers", type=int, default=4, help="mlflow server workers")
    args = ap.parse_args()

    from aipm_mlflow.testing import free_port, start_server

    root = Path(tempfile.mkdtemp(prefix="aipm-mlflow-load-"))
    os.chmod(root, 0o755)
    pg = Postgres(root / "pg", free_port())
    server = None
    try:
        t = time.perf_counter()
        db_uri = pg.start()
        print(f"PostgreSQL ({pg.bin.parent.name}) on 127.0.0.1:{pg.port}: "
              f"{time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        server = start_server(db_uri, root / "artifacts", workers=args.workers, timeout_s=180)
        print(f"mlflow server --workers {args.workers} at {server.url}: "
              f"{time.perf_counter() - t:.1f} s to start")

        ctx = mp.get_context("spawn")
        barrier, out = ctx.Barrier(args.writers + 1), ctx.Queue()
        procs = [ctx.Process(target=_writer, args=(server.url, i, args.points, args.batch,
                                                   barrier, out))
                 for i in range(args.writers)]
        for p in procs:
            p.start()
        barrier.wait(timeout=300)
        results = [out.get(timeout=1800) for _ in procs]
        for p in procs:
            p.join(timeout=300)
        if any(p.exitcode for p in procs):
            raise SystemExit(f"a writer failed: exit codes {[p.exitcode for p in procs]}")
        sent = sum(r[1] for r in results)
        wall = max(r[3] for r in results) - min(r[2] for r in results)
        per_writer = [r[1] / (r[3] - r[2]) for r in results]
        print(f"\n{args.writers} writers x {args.points:,} points "
              f"(log_points of {args.batch:,} -> log_batch of 1,000):")
        print(f"  total {sent:,} points in {wall:.1f} s: {sent / wall:,.0f} points/s "
              f"(per writer {min(per_writer):,.0f}-{max(per_writer):,.0f} points/s)")

        from aipm_tracking.backends.base import BackendOptions
        from aipm_tracking.plugins import get_backend

        be = get_backend("mlflow", BackendOptions(mlflow_uri=server.url, quiet=True))
        on_server = sum(len(be.read_history(ref)) for ref, *_ in results)
        in_db = pg.count_metrics()
        ok = on_server == sent == in_db
        print(f"  count check: sent {sent:,}, server (REST) {on_server:,}, "
              f"PostgreSQL {in_db:,} -> {'OK' if ok else 'MISMATCH'}")
        if not ok:
            raise SystemExit(1)
    finally:
        if server is not None:
            server.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
        print("torn down: server, PostgreSQL cluster, temp dir")


if __name__ == "__main__":
    main()
