"""A loopback stand-in for the W&B server: answers the GraphQL the installed wandb sends.

wandb 0.31 routes ``wandb.Api`` through its Go sidecar (``wandb-core``), so the requests
below come from a Go HTTP client. The server binds 127.0.0.1 on a free port, counts every
request (``server.requests``) and can be told to answer the next N GraphQL requests with a
429 (with ``Retry-After`` / ``RateLimit-Reset``) or a 500 (``server.fail_next``).
Set ``AIPM_FAKE_WANDB_DEBUG=1`` to print queries it does not know.

This is a mock of a remote service that cannot run here (the W&B server); everything on
the client side (wandb SDK, wandb-core, our plugin) is the real code.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_OP_RE = re.compile(r"\b(query|mutation)\s+([A-Za-z_][A-Za-z0-9_]*)")


@dataclass
class FakeRun:
    entity: str
    project: str
    run_id: str
    display_name: str = ""
    state: str = "finished"
    config: dict[str, Any] = field(default_factory=dict)  # plain values
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)  # rows with _step
    tags: list[str] = field(default_factory=list)
    created_at: str = "2026-01-01T00:00:00"
    files: dict[str, bytes] = field(default_factory=dict)  # name -> content
    # logged artifacts: {"name", "type", "entries": {path: bytes}, "version": N (default
    # 0)}, listed in this order; the highest version of a name carries the alias "latest"
    artifacts: list[dict[str, Any]] = field(default_factory=list)

    def node(self, full: bool = True) -> dict[str, Any]:
        last = max((int(r.get("_step", i)) for i, r in enumerate(self.history)), default=-1)
        keys = sorted({k for r in self.history for k in r})
        n: dict[str, Any] = {
            "id": f"id-{self.run_id}", "projectId": "1", "tags": self.tags,
            "name": self.run_id, "displayName": self.display_name or self.run_id,
            "sweepName": None, "state": self.state, "group": None, "jobType": None,
            "commit": None, "readOnly": False, "createdAt": self.created_at,
            "heartbeatAt": self.created_at, "description": None, "notes": None,
            "historyLineCount": len(self.history),
            "user": {"name": "tester", "username": "tester"},
        }
        if full:
            n.update({
                "config": json.dumps({k: {"value": v, "desc": None}
                                      for k, v in self.config.items()}),
                "systemMetrics": "{}",
                "summaryMetrics": json.dumps(self.summary),
                "historyKeys": {"lastStep": last,
                                "keys": {k: {"typeCounts": [{"type": "number", "count": 1}]}
                                         for k in keys}},
            })
        return n


class FakeWandbServer:
    """Serve runs over GraphQL on 127.0.0.1; count requests; inject 429/500 answers."""

    def __init__(self) -> None:
        self.runs: dict[tuple[str, str, str], FakeRun] = {}
        self.requests: list[dict[str, Any]] = []  # {"method", "path", "op", "status", "t"}
        self.fail_queue: list[tuple[int, dict[str, str]]] = []
        self.fail_ops: set[str] | None = None
        self.unknown: list[str] = []
        self.artifacts: list[dict[str, Any]] = []
        self.alerts: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.debug = bool(os.environ.get("AIPM_FAKE_WANDB_DEBUG"))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    # -- control ---------------------------------------------------------------------
    def start(self) -> FakeWandbServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def add_run(self, run: FakeRun) -> FakeRun:
        self.runs[(run.entity, run.project, run.run_id)] = run
        return run

    def fail_next(self, status: int, headers: dict[str, str] | None = None, count: int = 1,
                  ops: set[str] | None = None) -> None:
        """Answer the next ``count`` GraphQL requests (of ``ops`` if given) with ``status``."""
        with self.lock:
            self.fail_ops = ops
            self.fail_queue.extend([(status, dict(headers or {}))] * count)

    def graphql_ops(self) -> list[tuple[str, int]]:
        return [(r["op"], r["status"]) for r in self.requests if r["path"] == "/graphql"]

    # -- GraphQL ---------------------------------------------------------------------
    def answer(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        m = _OP_RE.search(query)
        op = m.group(2) if m else ""
        if "viewer" in query and op in ("Viewer", "GetDefaultEntity", ""):
            return {"data": {"viewer": {"id": "u1", "entity": "tester", "username": "tester",
                                        "email": None, "flags": "{}",
                                        "teams": {"edges": []}}}}
        if op == "ServerInfo" or "serverInfo" in query:
            return {"data": {"serverInfo": None}}
        ent, proj = variables.get("entity"), variables.get("project")
        if op in ("Run", "RunHistoryKeys", "RunState", "RunSampledHistory", "RunFullHistory"):
            run = self.runs.get((ent, proj, variables.get("name")))
            if run is None:
                return {"data": {"project": {"run": None}}}
            node = run.node()
            if op == "RunSampledHistory":
                node = {"sampledHistory": [self._sampled(run, variables)]}
            elif op == "RunFullHistory":
                node = {"history": [json.dumps(r) for r in run.history]}
            return {"data": {"project": {"run": node}}}
        if op == "Runs":
            return self._runs_page(ent, proj, variables, full="RunFragment on Run" in query
                                   and "Lightweight" not in query)
        if op == "RunParquetHistory":
            run = self.runs.get((ent, proj, variables.get("runName")))
            if run is None:
                return {"data": {"project": {"run": None}}}
            return {"data": {"project": {"run": {"parquetHistory": {
                "parquetUrls": [], "liveData": []}}}}}
        if op == "HistoryPage":
            run = self.runs.get((ent, proj, variables.get("run")))
            if run is None:
                return {"data": {"project": {"run": None}}}
            lo, hi = int(variables["minStep"]), int(variables["maxStep"])
            rows = [r for r in run.history if lo <= int(r["_step"]) < hi]
            rows = rows[: int(variables.get("pageSize") or len(rows))]
            return {"data": {"project": {"run": {"history": [json.dumps(r) for r in rows]}}}}
        if op in ("RunFiles", "RunFile"):
            return self._files(query, variables)
        if op == "RunOutputArtifacts":
            run = self.runs.get((ent, proj, variables.get("run")))
            if run is None:
                return {"data": {"project": {"run": None}}}
            edges = [{"node": self._artifact_node(run, i, a)}
                     for i, a in enumerate(run.artifacts)]
            return {"data": {"project": {"run": {"artifacts": {
                "totalCount": len(edges), "edges": edges,
                "pageInfo": {"__typename": "PageInfo", "endCursor": str(len(edges)),
                             "hasNextPage": False}}}}}}
        if op == "GetArtifactMembershipFileUrls":
            alias = variables.get("alias")
            found = next(((r, i, a) for r in self.runs.values() if r.entity == ent
                          and r.project == proj for i, a in enumerate(r.artifacts)
                          if a["name"] == variables.get("collection")
                          and alias in (None, *self._aliases(r, a))), None)
            if found is None:
                return {"data": {"project": {"artifactCollection": None}}}
            r, i, a = found
            edges = [{"node": {"__typename": "File", "name": n,
                               "directUrl": f"{self.url}/artifact-file/art-{r.run_id}-{i}/{n}"}}
                     for n in a["entries"]]
            return {"data": {"project": {"artifactCollection": {
                "__typename": "ArtifactSequence", "artifactMembership": {"files": {
                    "pageInfo": {"__typename": "PageInfo", "endCursor": str(len(edges)),
                                 "hasNextPage": False}, "edges": edges}}}}}}
        if op == "FetchArtifactManifest":
            return {"data": {"artifact": {"currentManifest": {"file": {
                "directUrl": f"{self.url}/manifest/{variables['id']}"}}}}}
        if op == "UpsertBucket":
            return self._upsert_bucket(variables)
        if op == "ArtifactType":  # "does artifact NAME exist, of which type": no
            return {"data": {"project": {"artifact": None}}}
        if op == "NotifyScriptableRunAlert":
            self.alerts.append(dict(variables))
            return {"data": {"notifyScriptableRunAlert": {"success": True}}}
        if op == "CreateRunFiles":
            run_name = variables["run"]
            files = [{"name": n, "uploadUrl": f"{self.url}/upload/{ent}/{proj}/{run_name}/{n}"}
                     for n in variables["files"]]
            return {"data": {"createRunFiles": {"runID": f"id-{run_name}", "uploadHeaders": [],
                                                "files": files}}}
        if op == "CreateArtifact":
            # answer "already committed" (digest deduplication): wandb skips the upload;
            # run tables reach the server as run files anyway
            self.artifacts.append(variables.get("input") or {})
            return {"data": {"createArtifact": {"artifact": {
                "id": f"art{len(self.artifacts)}", "state": "COMMITTED",
                "artifactSequence": {"latestArtifact": {"id": f"art{len(self.artifacts)}"}}}}}}
        if self.debug:
            print(f"[fake-wandb] unknown op {op!r}: {query[:2000]} vars={variables}",
                  file=sys.stderr, flush=True)
        self.unknown.append(op or query[:80])
        return {"data": None, "errors": [{"message": f"fake server: unsupported {op}"}]}

    # -- what `wandb sync` / online runs send ------------------------------------------
    def _upsert_bucket(self, v: dict[str, Any]) -> dict[str, Any]:
        key = (v.get("entity") or "tester", v.get("project") or "uncategorized", v["name"])
        with self.lock:
            run = self.runs.get(key)
            if run is None:
                run = self.runs[key] = FakeRun(*key)
                run.state = "running"
            if v.get("displayName"):
                run.display_name = v["displayName"]
            if v.get("tags") is not None:
                run.tags = list(v["tags"])
            if v.get("config"):
                run.config = {k: (x.get("value") if isinstance(x, dict) else x)
                              for k, x in json.loads(v["config"]).items()}
            if v.get("summaryMetrics"):
                run.summary.update(json.loads(v["summaryMetrics"]))
            if v.get("state"):
                run.state = v["state"]
        return {"data": {"upsertBucket": {"inserted": True, "bucket": {
            "id": f"id-{run.run_id}", "name": run.run_id, "displayName": run.display_name,
            "description": None, "config": json.dumps(v.get("config") or "{}"),
            "sweepName": None, "historyLineCount": len(run.history),
            "project": {"id": "1", "name": run.project,
                        "entity": {"id": "1", "name": run.entity}}}}}}

    def find_artifact(self, art_id: str) -> dict[str, Any] | None:
        for run in self.runs.values():
            for i, a in enumerate(run.artifacts):
                if f"art-{run.run_id}-{i}" == art_id:
                    return a
        return None

    def manifest(self, art_id: str) -> dict[str, Any] | None:
        import base64
        import hashlib

        a = self.find_artifact(art_id)
        if a is None:
            return None
        contents = {name: {"digest": base64.b64encode(hashlib.md5(b).digest()).decode(),
                           "size": len(b)} for name, b in a["entries"].items()}
        return {"version": 1, "storagePolicy": "wandb-storage-policy-v1",
                "storagePolicyConfig": {"storageLayout": "V2"}, "contents": contents}

    @staticmethod
    def _aliases(run: FakeRun, a: dict[str, Any]) -> list[str]:
        """``vN``, plus ``latest`` on the highest version of the name."""
        v = int(a.get("version", 0))
        top = max(int(b.get("version", 0)) for b in run.artifacts if b["name"] == a["name"])
        return [f"v{v}", "latest"] if v == top else [f"v{v}"]

    def _artifact_node(self, run: FakeRun, i: int, a: dict[str, Any]) -> dict[str, Any]:
        project = {"id": "1", "internalId": "1", "name": run.project,
                   "entity": {"name": run.entity}}
        seq = {"__typename": "ArtifactSequence", "name": a["name"], "project": project}
        return {
            "__typename": "Artifact", "id": f"art-{run.run_id}-{i}", "artifactSequence": seq,
            "versionIndex": int(a.get("version", 0)), "artifactType": {"name": a["type"]},
            "description": None,
            "metadata": "{}", "ttlDurationSeconds": -1, "ttlIsInherited": True, "tags": [],
            "historyStep": 0, "state": "COMMITTED",
            "size": sum(len(b) for b in a["entries"].values()),
            "digest": f"digest{i}", "commitHash": f"commit{i}",
            "fileCount": len(a["entries"]), "createdAt": run.created_at,
            "updatedAt": run.created_at,
            "aliases": [{"__typename": "ArtifactAlias", "id": f"alias{i}-{alias}", "alias": alias,
                         "artifactCollection": {"__typename": "ArtifactSequence",
                                                "name": a["name"], "project": project}}
                        for alias in self._aliases(run, a)]}

    def file_stream(self, path: str, raw: bytes) -> None:
        """``POST /files/E/P/R/file_stream``: history lines, summary, exit state."""
        parts = path.split("/")
        ent, proj, run_id = parts[2], parts[3], parts[4]
        body = json.loads(raw or b"{}")
        with self.lock:
            run = self.runs.setdefault((ent, proj, run_id), FakeRun(ent, proj, run_id))
            files = body.get("files") or {}
            for line in (files.get("wandb-history.jsonl") or {}).get("content") or []:
                run.history.append(json.loads(line))
            for line in (files.get("wandb-summary.json") or {}).get("content") or []:
                run.summary = json.loads(line)
            if body.get("complete"):
                run.state = "finished" if body.get("exitcode", 0) == 0 else "failed"

    def _sampled(self, run: FakeRun, variables: dict[str, Any]) -> list[dict[str, Any]]:
        spec = json.loads(variables["specs"][0])
        keys = spec.get("keys") or []
        return [{k: r[k] for k in keys if k in r} for r in run.history
                if all(k in r for k in keys)]

    def _runs_page(self, ent: str, proj: str, variables: dict[str, Any],
                   full: bool) -> dict[str, Any]:
        runs = sorted((r for (e, p, _), r in self.runs.items() if e == ent and p == proj),
                      key=lambda r: r.created_at,
                      reverse=str(variables.get("order") or "").startswith("-"))
        per_page = int(variables.get("perPage") or 50)
        cursor = variables.get("cursor")
        start = int(cursor) if cursor else 0
        page = runs[start:start + per_page]
        end = start + len(page)
        edges = [{"node": r.node(full=full), "cursor": str(start + i + 1)}
                 for i, r in enumerate(page)]
        return {"data": {"project": {
            "internalId": "1", "runCount": len(runs), "readOnly": False,
            "runs": {"edges": edges,
                     "pageInfo": {"endCursor": str(end), "hasNextPage": end < len(runs)}}}}}

    def _files(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        run = self.runs.get((variables.get("entity"), variables.get("project"),
                             variables.get("name")))
        if run is None:
            return {"data": {"project": {"run": None}}}
        names = variables.get("fileNames") or list(run.files)
        edges = []
        for i, name in enumerate(n for n in names if n in run.files):
            content = run.files[name]
            edges.append({"node": {
                "id": f"file-{i}", "name": name, "url": f"{self.url}/files/{run.run_id}/{name}",
                "directUrl": f"{self.url}/files/{run.run_id}/{name}",
                "sizeBytes": len(content), "mimetype": "application/json",
                "updatedAt": run.created_at, "md5": "", "digest": "",
                "storagePath": None},
                "cursor": str(i + 1)})
        return {"data": {"project": {"run": {
            "fileCount": len(edges), "id": f"id-{run.run_id}",
            "files": {"edges": edges, "pageInfo": {"endCursor": str(len(edges)),
                                                   "hasNextPage": False}}}}}}

    # -- HTTP ------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None,
                      ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802
                import time

                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                if self.path != "/graphql":
                    server.requests.append({"method": "POST", "path": self.path, "op": "",
                                            "status": 200, "t": time.monotonic()})
                    if self.path.endswith("/file_stream"):
                        server.file_stream(self.path, raw)
                    self._send(200, b"{}")
                    return
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                query = body.get("query") or ""
                m = _OP_RE.search(query)
                op = m.group(2) if m else ""
                fail: tuple[int, dict[str, str]] | None = None
                with server.lock:
                    if server.fail_queue and (server.fail_ops is None or op in server.fail_ops):
                        fail = server.fail_queue.pop(0)
                rec = {"method": "POST", "path": "/graphql", "op": op,
                       "status": fail[0] if fail else 200, "t": time.monotonic()}
                server.requests.append(rec)
                if fail:
                    self._send(fail[0], json.dumps({"errors": [{"message": "injected"}]})
                               .encode(), fail[1])
                    return
                out = server.answer(query, body.get("variables") or {})
                self._send(200, json.dumps(out).encode())

            def do_PUT(self) -> None:  # noqa: N802
                import time

                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                server.requests.append({"method": "PUT", "path": self.path, "op": "",
                                        "status": 200, "t": time.monotonic()})
                parts = self.path.split("?")[0].split("/")
                if len(parts) >= 6 and parts[1] == "upload":
                    ent, proj, run_id, name = parts[2], parts[3], parts[4], "/".join(parts[5:])
                    with server.lock:
                        run = server.runs.setdefault((ent, proj, run_id),
                                                     FakeRun(ent, proj, run_id))
                        run.files[name] = raw
                self._send(200, b"")

            def do_GET(self) -> None:  # noqa: N802
                import time

                server.requests.append({"method": "GET", "path": self.path, "op": "",
                                        "status": 200, "t": time.monotonic()})
                parts = self.path.split("?")[0].split("/")
                if len(parts) >= 4 and parts[1] == "files":
                    run_id, name = parts[2], "/".join(parts[3:])
                    for run in server.runs.values():
                        if run.run_id == run_id and name in run.files:
                            self._send(200, run.files[name], ctype="application/octet-stream")
                            return
                if len(parts) >= 4 and parts[1] == "artifactsV2":
                    # storage layout V2: /artifactsV2/REGION/E/P/COLLECTION/ID/MD5HEX/NAME
                    import hashlib

                    md5hex, name = parts[-2], parts[-1]
                    for run in server.runs.values():
                        for a in run.artifacts:
                            b = a["entries"].get(name)
                            if b is not None and hashlib.md5(b).hexdigest() == md5hex:
                                self._send(200, b, ctype="application/octet-stream")
                                return
                if len(parts) >= 4 and parts[1] == "artifact-file":
                    a = server.find_artifact(parts[2])
                    name = "/".join(parts[3:])
                    if a is not None and name in a["entries"]:
                        self._send(200, a["entries"][name], ctype="application/octet-stream")
                        return
                if len(parts) == 3 and parts[1] == "manifest":
                    man = server.manifest(parts[2])
                    if man is not None:
                        self._send(200, json.dumps(man).encode())
                        return
                if server.debug:
                    print(f"[fake-wandb] GET {self.path}", file=sys.stderr, flush=True)
                self._send(404, b"not found", ctype="text/plain")

        return Handler
