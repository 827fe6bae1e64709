"""``wandb.Api`` code paths for real, against a loopback fake W&B server.

wandb 0.31 sends these requests from its Go sidecar; the fake server answers exactly the
GraphQL operations it was seen to send (Viewer, Run, Runs with cursor paging,
RunHistoryKeys, RunParquetHistory, HistoryPage, RunFiles) and serves file downloads.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import pandas as pd
import pytest
from fake_wandb_server import FakeRun, FakeWandbServer
from wb_helpers import make_examples, make_record, synced_run

from aipm_tracking import plugins
from aipm_tracking.backends.base import BackendOptions
from aipm_tracking.errors import AipmWarning, BackendError, RunNotFoundError


def backend(metric_map: dict[str, str] | None = None, **extra: object) -> object:
    plugins.reset()
    return plugins.get_backend("wandb", BackendOptions(metric_map=metric_map or {},
                                                       extra=extra))


@pytest.fixture
def aipm_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An aipm-written run (offline, real SDK), then served as if synced."""
    df = make_examples(150, seed=5)
    rec = make_record(df)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    ref = backend().write_run(rec, "acme/bots")
    monkeypatch.setenv("WANDB_MODE", "online")
    return rec, df, synced_run(ref.split(":", 1)[1], "acme", "bots")


def test_pull_aipm_run_is_lossless(server: FakeWandbServer, aipm_run) -> None:
    rec, df, fake = aipm_run
    server.add_run(fake)
    got = backend().read_run(f"acme/bots/{fake.run_id}")
    assert got.ref == f"wandb:acme/bots/{fake.run_id}" and got.run_id == fake.run_id
    assert got.model == rec.model and got.dataset == rec.dataset
    assert got.guardrails_hash == rec.guardrails_hash and got.details == rec.details
    assert got.metrics == rec.metrics  # exact: restored from aipm/run.json
    assert got.config["openai_api_key"] == "***"
    pd.testing.assert_frame_equal(got.examples, df)
    ops = [op for op, _ in server.graphql_ops()]
    assert "Viewer" in ops and "Run" in ops and "RunFiles" in ops
    assert server.unknown == []
    downloads = [r["path"] for r in server.requests if r["method"] == "GET"]
    assert any(p.endswith("aipm/run.json") for p in downloads)
    assert any(p.endswith("aipm/examples.parquet") for p in downloads)


def test_summary_only_read_from_config_and_summary(server: FakeWandbServer, aipm_run) -> None:
    rec, _df, fake = aipm_run
    fake.files = {}  # a run whose aipm files were not uploaded: identity from config
    server.add_run(fake)
    got = backend().read_run(f"acme/bots/{fake.run_id}", with_examples=False)
    assert got.model == rec.model and got.guardrails_hash == rec.guardrails_hash
    assert got.metric("accuracy") == pytest.approx(rec.metric("accuracy"))
    assert got.metric("accuracy[slice=de]") == pytest.approx(rec.metric("accuracy[slice=de]"))
    assert set(got.metrics) == set(rec.metrics)  # no W&B internals or aipm bookkeeping
    assert got.examples is None


def _foreign(server: FakeWandbServer) -> tuple[FakeRun, list[list[object]]]:
    rows = [[f"x{i}", i % 3, (i * 5) % 3, 0.5 + i / 100] for i in range(40)]
    table = {"columns": ["example_id", "label", "prediction", "confidence"], "data": rows}
    path = "media/table/predictions_20_0123456789abcdef.table.json"
    run = server.add_run(FakeRun(
        "acme", "legacy", "f0reign1", display_name="resnet-sweep-3",
        config={"lr": 0.01, "model_name": "resnet", "api_token": "t0k"},
        summary={"val/acc": 0.91, "loss": 0.2, "_step": 19,
                 "predictions": {"_type": "table-file", "path": path, "nrows": 40,
                                 "ncols": 4}},
        history=[{"_step": s, "loss": 1 / (s + 1), "val/acc": 0.5 + s / 50,
                  "_timestamp": 1.7e9 + s} for s in range(20)],
        files={path: json.dumps(table).encode()}))
    return run, rows


def test_plain_wandb_run_through_metric_map(server: FakeWandbServer) -> None:
    _run, rows = _foreign(server)
    got = backend({"val/acc": "accuracy"}).read_run("acme/legacy/f0reign1")
    assert got.metric("accuracy") == pytest.approx(0.91) and "val/acc" not in got.metrics
    assert got.model.name == "resnet" and got.config["api_token"] == "***"
    assert got.name == "resnet-sweep-3" and got.status == "finished"
    assert got.examples.values.tolist() == rows


def test_table_read_from_its_run_table_artifact(server: FakeWandbServer) -> None:
    run, rows = _foreign(server)
    table = run.files.pop(next(iter(run.files)))  # only the artifact holds the table now
    run.artifacts.append({"name": "run-f0reign1-predictions-Xy12", "type": "run_table",
                          "entries": {"predictions.table.json": table}})
    got = backend({"val/acc": "accuracy"}).read_run("acme/legacy/f0reign1")
    assert got.examples.values.tolist() == rows
    assert list(got.examples.columns) == ["example_id", "label", "prediction", "confidence"]
    ops = [op for op, _ in server.graphql_ops()]
    assert "RunOutputArtifacts" in ops and "FetchArtifactManifest" in ops
    # the entry itself may come from wandb's artifact cache (keyed by content digest)
    assert not any(r["path"].startswith("/files/") for r in server.requests)
    assert not os.path.exists("artifacts")  # nothing written to the working directory
    assert server.unknown == []


def test_full_history_with_scan_history(server: FakeWandbServer) -> None:
    _foreign(server)
    pts = backend().read_history("acme/legacy/f0reign1", ["loss"])
    assert [p.step for p in pts] == list(range(20))
    assert [p.value for p in pts] == pytest.approx([1 / (s + 1) for s in range(20)])
    assert pts[3].timestamp == pytest.approx(1.7e9 + 3)
    ops = [op for op, _ in server.graphql_ops()]
    assert "HistoryPage" in ops and "RunHistoryKeys" in ops


def test_listing_is_paged_newest_first(server: FakeWandbServer) -> None:
    for i in range(5):
        server.add_run(FakeRun("acme", "bots", f"run{i:03d}", display_name=f"bot-{i}",
                               config={"aipm": {"model": {"name": "bot", "version": str(i)},
                                                "guardrails_hash": "h"}},
                               summary={"accuracy": 0.8 + i / 100},
                               created_at=f"2026-05-0{i + 1}T10:00:00"))
    got = list(backend(per_page=2).list_runs("acme/bots"))
    assert [r.run_id for r in got] == [f"run{i:03d}" for i in (4, 3, 2, 1, 0)]
    assert [r.model.version for r in got] == ["4", "3", "2", "1", "0"]
    assert got[0].metric("accuracy") == pytest.approx(0.84)
    assert got[0].ref == "wandb:acme/bots/run004"
    assert got[0].created_at.startswith("2026-05-05T10:00:00")
    assert [op for op, _ in server.graphql_ops()].count("Runs") == 3  # 2 + 2 + 1

    server.requests.clear()
    limited = list(backend(per_page=2).list_runs("acme/bots", limit=3, filter="^bot-"))
    assert len(limited) == 3
    assert [op for op, _ in server.graphql_ops()].count("Runs") == 2


def test_429_is_retried_after_its_reset_header(server: FakeWandbServer) -> None:
    _foreign(server)
    server.fail_next(429, {"Retry-After": "1", "RateLimit-Reset": "1"}, ops={"Run"})
    got = backend().read_run("acme/legacy/f0reign1", with_examples=False)
    assert got.run_id == "f0reign1"
    runs = [r for r in server.requests if r["op"] == "Run"]
    assert [r["status"] for r in runs] == [429, 200]
    assert runs[1]["t"] - runs[0]["t"] >= 0.9  # waited for the reset, not the 0.05 s backoff


def test_500_is_retried_then_bounded(server: FakeWandbServer) -> None:
    # measured: wandb-core 0.31 honours x_graphql_retry_max, but its backoff for 5xx starts
    # at ~2 s whatever x_graphql_retry_wait_min_seconds says, so keep the retries few here
    _foreign(server)
    server.fail_next(500, count=1, ops={"Run"})
    assert backend().read_run("acme/legacy/f0reign1", with_examples=False).run_id == "f0reign1"
    assert [r["status"] for r in server.requests if r["op"] == "Run"] == [500, 200]

    server.requests.clear()
    server.fail_next(500, count=50, ops={"Run"})
    with pytest.raises(BackendError, match="f0reign1"):
        backend(retry_max=1).read_run("acme/legacy/f0reign1", with_examples=False)
    assert [r["status"] for r in server.requests if r["op"] == "Run"] == [500, 500]
    server.fail_queue.clear()


def test_missing_run_and_bad_locator(server: FakeWandbServer) -> None:
    with pytest.raises(RunNotFoundError, match="acme/bots/nosuchrun"):
        backend().read_run("acme/bots/nosuchrun")
    with pytest.raises(Exception, match="ENTITY/PROJECT/RUN_ID"):
        backend().read_run("not a path or a run")
    assert all(r["path"] in ("/graphql",) or r["path"].startswith("/sdk/")
               for r in server.requests)


def test_wandb_sync_uploads_the_offline_run_and_pull_reads_it(
        server: FakeWandbServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real `wandb sync` CLI uploads what the plugin wrote offline; pull reads it back."""
    import subprocess
    import sys

    df = make_examples(120, seed=8)
    rec = make_record(df)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    run_dir = backend().write_run(rec, "acme/synced").split(":", 1)[1]
    monkeypatch.setenv("WANDB_MODE", "online")
    wandb_cli = os.path.join(os.path.dirname(sys.executable), "wandb")
    out = subprocess.run([wandb_cli, "sync", run_dir], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "WANDB_BASE_URL": server.url})
    assert out.returncode == 0, out.stderr[-2000:]
    run_id = os.path.basename(run_dir).rsplit("-", 1)[1]
    fake = server.runs[("acme", "synced", run_id)]
    assert fake.state == "finished"
    assert {"aipm/run.json", "aipm/examples.parquet"} <= set(fake.files)
    assert fake.summary["accuracy"] == pytest.approx(rec.metric("accuracy"))
    assert fake.config["openai_api_key"] == "***"

    got = backend().read_run(f"acme/synced/{run_id}")
    assert got.metrics == rec.metrics and got.model == rec.model
    assert got.details == rec.details
    pd.testing.assert_frame_equal(got.examples, df)
    # and a summary-only read, from what W&B itself keeps (config + summary)
    fake.files = {}
    with pytest.warns(AipmWarning, match="no table file"):
        got2 = backend().read_run(f"acme/synced/{run_id}")
    assert got2.examples is None
    assert got2.model == rec.model and got2.guardrails_hash == rec.guardrails_hash
    assert got2.metric("accuracy[slice=de]") == pytest.approx(rec.metric("accuracy[slice=de]"))


def test_listing_shows_progress_on_a_tty(server: FakeWandbServer,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    import rich.progress

    for i in range(3):
        server.add_run(FakeRun("acme", "bots", f"tty{i:03d}", summary={"accuracy": 0.5}))
    seen: dict[str, float] = {}

    class Recording(rich.progress.Progress):
        def add_task(self, description: str, *a: object, **kw: object) -> rich.progress.TaskID:
            seen["total"] = float(kw.get("total") or 0)  # type: ignore[arg-type]
            return super().add_task(description, *a, **kw)  # type: ignore[arg-type]

        def advance(self, task_id: rich.progress.TaskID, advance: float = 1) -> None:
            seen["done"] = seen.get("done", 0) + advance
            super().advance(task_id, advance)

    monkeypatch.setattr(rich.progress, "Progress", Recording)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert len(list(backend(per_page=2).list_runs("acme/bots"))) == 3
    assert seen == {"total": 3, "done": 3}
    seen.clear()
    plugins.reset()
    quiet = plugins.get_backend("wandb", BackendOptions(quiet=True))
    assert len(list(quiet.list_runs("acme/bots"))) == 3
    assert seen == {}


def test_online_push_and_comparison_alert(server: FakeWandbServer) -> None:
    """Online mode: wandb.init talks to the (fake) server; the alert is a real mutation."""
    from test_offline import _comparison

    df = make_examples(60, seed=11)
    rec = make_record(df)
    ref = backend().write_run(rec, "acme/online")
    assert ref.startswith("wandb:acme/online/")
    run_id = ref.rsplit("/", 1)[1]
    fake = server.runs[("acme", "online", run_id)]
    assert fake.state == "finished" and fake.config["openai_api_key"] == "***"
    got = backend().read_run(f"acme/online/{run_id}")
    assert got.metrics == rec.metrics
    pd.testing.assert_frame_equal(got.examples, df)
    # the synced run's local directory (wandb/run-…) reads the same, from its files
    (local,) = glob.glob(os.path.join(os.environ["WANDB_DIR"], "wandb", f"run-*-{run_id}"))
    here = backend().read_run(local)
    assert here.metrics == rec.metrics and here.status == "finished"
    pd.testing.assert_frame_equal(here.examples, df)

    cref = backend().write_comparison(_comparison(True), "acme/reviews")
    assert cref.startswith("wandb:acme/reviews/")
    (alert,) = server.alerts
    assert alert["severity"] == "ERROR" and alert["projectName"] == "reviews"
    assert "accuracy: regression" in alert["text"] and "bot-2" in alert["title"]
    assert server.unknown == []
