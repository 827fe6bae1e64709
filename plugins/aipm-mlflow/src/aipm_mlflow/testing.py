"""Start and stop a real ``mlflow server`` on 127.0.0.1 (tests and benchmarks).

Not used by the backend itself. The server runs as a child process with its own process
group, on a free port, with ``--workers`` uvicorn workers; :meth:`Server.stop` ends exactly
that group.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running ``mlflow server`` child process."""

    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def start_server(backend_store_uri: str, artifacts_dir: str | Path, *, workers: int = 1,
                 port: int | None = None, timeout_s: float = 90.0,
                 log_path: str | Path | None = None) -> Server:
    """Start ``mlflow server`` and wait until ``/health`` answers (raises on failure)."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    artifacts_dir = Path(artifacts_dir)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    log = Path(log_path) if log_path else artifacts_dir.parent / f"mlflow-server-{port}.log"
    mlflow_exe = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_exe) if mlflow_exe.exists() else "mlflow", "server",
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
           "--backend-store-uri", backend_store_uri,
           "--artifacts-destination", str(artifacts_dir)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    server = Server(url=url, proc=proc, log_path=log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n"
                               f"{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"mlflow server did not start within {timeout_s:.0f} s:\n"
                       f"{server.log_tail()}")
