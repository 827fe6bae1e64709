"""Listing W&B runs: the core's --filter language, single run directories, has_examples,
and the alert text of a blocking per-slice guardrail (real wandb SDK offline; a loopback
fake server for remote listings)."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from aipm_wandb.offline import read_local_run
from fake_wandb_server import FakeRun, FakeWandbServer
from wb_helpers import make_examples, make_record

from aipm_tracking import plugins
from aipm_tracking.backends.base import BackendOptions
from aipm_tracking.cli import main
from aipm_tracking.errors import UsageError


def backend(metric_map: dict[str, str] | None = None, **extra: object) -> Any:
    plugins.reset()
    return plugins.get_backend("wandb", BackendOptions(metric_map=metric_map or {},
                                                       extra=extra))


def aipm(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    plugins.reset()
    capsys.readouterr()
    code = 0
    try:
        main(list(args))
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def listed(capsys: pytest.CaptureFixture[str], source: str, *extra: str) -> list[dict[str, Any]]:
    code, out, err = aipm(capsys, "runs", "list", "--from", source, "--format", "json", *extra)
    assert code == 0, err
    runs = json.loads(out)
    return runs if isinstance(runs, list) else runs["runs"]


def names(runs: list[dict[str, Any]]) -> list[str]:
    return sorted(r["name"] for r in runs)


# -- local run directories --------------------------------------------------------------


@pytest.fixture
def three_runs(offline: Path) -> dict[str, str]:
    """bot-1 (bot v1, accurate), bot-2 (bot v2, less so), other-1 (other v1, accurate)."""
    b = backend()
    refs = {}
    for name, model, version, seed, acc in (("bot-1", "bot", "1", 1, 0.98),
                                            ("bot-2", "bot", "2", 2, 0.75),
                                            ("other-1", "other", "1", 3, 0.98)):
        rec = make_record(make_examples(200, seed=seed, acc=acc), name=name, model=model,
                          version=version)
        refs[name] = b.write_run(rec, "team/p")
    return refs


def test_local_listing_takes_the_core_filter_language(
        capsys: pytest.CaptureFixture[str], offline: Path, three_runs: dict[str, str]) -> None:
    folder = f"wandb:{offline / 'wandb'}"
    everything = {r["name"]: r for r in listed(capsys, folder)}
    acc = {n: r["metrics"]["accuracy"] for n, r in everything.items()}
    assert acc["bot-1"] > 0.91 and acc["other-1"] > 0.91 and acc["bot-2"] < 0.91

    cases = {
        'metrics.accuracy > 0.91 and model = "bot"': ["bot-1"],
        'model = "bot"': ["bot-1", "bot-2"],
        'name = "bot-2"': ["bot-2"],
        'status = "finished"': ["bot-1", "bot-2", "other-1"],
        'status = "failed"': [],
        "model_version >= 2": ["bot-2"],
        'tags.team = "support" and dataset = "tickets" and metrics.accuracy < 0.91': ["bot-2"],
        "^bot-": ["bot-1", "bot-2"],  # the older form: a regex on the run name, kept
    }
    for flt, want in cases.items():
        got = listed(capsys, folder, "--filter", flt)
        assert names(got) == want, flt
    refs = [r["ref"] for r in listed(capsys, folder, "--filter", 'model = "bot"')]
    assert refs == [three_runs["bot-2"], three_runs["bot-1"]]  # newest first
    assert len(listed(capsys, folder, "--filter", 'model = "bot"', "--limit", "1")) == 1

    # the trend report lists runs with `model = "..."`: it sees both versions of bot
    code, out, err = aipm(capsys, "report", "--model", "bot", "--from", folder,
                          "--format", "markdown")
    assert code == 0, err
    assert "bot (2 versions)" in out and "| v1 | v2 |" in out


def test_a_filter_that_cannot_be_evaluated_is_an_error(
        capsys: pytest.CaptureFixture[str], offline: Path, three_runs: dict[str, str]) -> None:
    folder = f"wandb:{offline / 'wandb'}"
    for flt, says in (("metrics.accuracy >> 0.9", "cannot read filter"),
                      ("colour = 1", "unknown field 'colour'"),
                      ("metrics.accuracy > high", "compares with a number"),
                      ('{"state": "finished"}', "JSON"),
                      ("bot-(", "regular expression")):
        code, out, err = aipm(capsys, "runs", "list", "--from", folder, "--filter", flt)
        assert code == 2, (flt, out, err)
        assert out == "" and says in err, (flt, err)
        assert len(err.strip().splitlines()) == 1, err
    with pytest.raises(UsageError):
        backend().list_runs(str(offline / "wandb"), filter="model ~ bot")


def test_a_single_run_directory_lists_that_run(
        capsys: pytest.CaptureFixture[str], offline: Path, three_runs: dict[str, str]) -> None:
    newest = three_runs["other-1"].split(":", 1)[1]
    (log,) = glob.glob(os.path.join(newest, "run-*.wandb"))
    for where in (offline / "wandb" / "latest-run", newest, log):
        got = listed(capsys, f"wandb:{where}")
        assert [r["ref"] for r in got] == [three_runs["other-1"]], where
        assert got[0]["model"] == {"name": "other", "version": "1"}
    bot1 = three_runs["bot-1"].split(":", 1)[1]
    assert names(listed(capsys, f"wandb:{bot1}")) == ["bot-1"]
    assert listed(capsys, f"wandb:{bot1}", "--filter", 'model = "other"') == []
    code, out, err = aipm(capsys, "runs", "list", "--from", f"wandb:{bot1}")
    assert code == 0 and "1 run(s)" in out, err


PLAIN = textwrap.dedent("""
    import wandb
    run = wandb.init(project="legacy", entity="acme", name="with-table",
                     config={"model_name": "resnet"}, reinit="create_new")
    run.log({"val/acc": 0.9})
    run.log({"predictions": wandb.Table(columns=["example_id", "label", "prediction"],
                                        data=[[f"x{i}", i % 3, (i * 7) % 3] for i in range(30)])})
    run.finish()
    run = wandb.init(project="legacy", entity="acme", name="no-table",
                     config={"model_name": "resnet"}, reinit="create_new")
    run.log({"val/acc": 0.8})
    run.finish()
""")


def test_has_examples_of_a_plain_wandb_run_with_a_predictions_table(
        capsys: pytest.CaptureFixture[str], offline: Path) -> None:
    script = offline / "plain.py"
    script.write_text(PLAIN)
    out = subprocess.run([sys.executable, str(script)], cwd=offline, capture_output=True,
                         text=True, timeout=180, env=dict(os.environ))
    assert out.returncode == 0, out.stderr[-2000:]
    dirs = {read_local_run(d).display_name: d
            for d in glob.glob(str(offline / "wandb" / "offline-run-*"))}
    assert set(dirs) == {"with-table", "no-table"}

    by_name = {r["name"]: r for r in listed(capsys, f"wandb:{offline / 'wandb'}")}
    assert by_name["with-table"]["has_examples"] is True
    assert by_name["no-table"]["has_examples"] is False
    for name, want in (("with-table", True), ("no-table", False)):
        code, shown, err = aipm(capsys, "runs", "show", f"wandb:{dirs[name]}", "--format",
                                "json")
        assert code == 0, err
        assert json.loads(shown)["has_examples"] is want, name
        # consistent with what read_run loads (and aipm compare uses)
        assert (backend().read_run(dirs[name]).examples is not None) is want


# -- the alert of a comparison stored in W&B -------------------------------------------


def _eval_csv(path: Path, acc: float, seed: int, n: int = 400) -> None:
    label = np.random.default_rng(99).integers(0, 4, n)
    rng = np.random.default_rng(seed)
    correct = rng.random(n) < acc
    pd.DataFrame({
        "example_id": np.arange(n), "label": label.astype(str),
        "prediction": np.where(correct, label, (label + 1) % 4).astype(str),
        "confidence": rng.uniform(0.3, 1.0, n).round(4),
        "slice": np.where(rng.random(n) < 0.5, "de", "en"),
    }).to_csv(path, index=False)


def test_alert_names_a_per_slice_guardrail_once(
        capsys: pytest.CaptureFixture[str], offline: Path) -> None:
    _eval_csv(offline / "base.csv", 0.96, 1)
    _eval_csv(offline / "cand.csv", 0.80, 2)
    (offline / "g.yaml").write_text("version: 1\nname: slices\nmetrics:\n"
                                    "  accuracy: {min: 0.9}\n"
                                    "  accuracy[slice=de]: {min: 0.9}\n")
    code, out, err = aipm(capsys, "compare", str(offline / "base.csv"),
                          str(offline / "cand.csv"), "--guardrails", str(offline / "g.yaml"),
                          "--format", "json", "--to", "wandb:acme/reviews")
    assert code == 1, err
    rows = {r["metric"]: r for r in json.loads(out)["metrics"]}
    assert rows["accuracy[slice=de]"]["slice"] == "slice=de"
    (run_dir,) = glob.glob(str(offline / "wandb" / "offline-run-*"))
    (alert,) = read_local_run(run_dir).alerts
    lines = alert["text"].splitlines()
    assert [line.split(":")[0] for line in lines] == ["accuracy", "accuracy[slice=de]"]
    assert "[slice=de][slice=de]" not in alert["text"]


# -- a W&B server ----------------------------------------------------------------------


def _runs_requests(server: FakeWandbServer) -> list[dict[str, Any]]:
    """Record the variables of every Runs query the server answers."""
    seen: list[dict[str, Any]] = []
    answer = server.answer

    def recording(query: str, variables: dict[str, Any]) -> dict[str, Any]:
        if "query Runs" in query:
            seen.append(dict(variables))
        return answer(query, variables)

    server.answer = recording  # type: ignore[method-assign]
    return seen


@pytest.fixture
def served(server: FakeWandbServer) -> FakeWandbServer:
    """Five runs in acme/bots (newest first: other v2, bot v3 crashed, bot v2, bot v1, and
    a plain wandb run with a predictions table); the fake server ignores filters."""
    specs = [("r1", "bot-1", "bot", "1", 0.95, "finished"),
             ("r2", "bot-2", "bot", "2", 0.80, "finished"),
             ("r3", "bot-3", "bot", "3", 0.97, "crashed"),
             ("r4", "other-2", "other", "2", 0.96, "finished")]
    for i, (rid, name, model, version, acc, state) in enumerate(specs):
        server.add_run(FakeRun("acme", "bots", rid, display_name=name, state=state,
                               config={"aipm": {"name": name,
                                                "model": {"name": model, "version": version},
                                                "tags": {"team": "support"}}},
                               summary={"accuracy": acc},
                               created_at=f"2026-05-0{i + 2}T10:00:00"))
    path = "media/table/predictions_3_0123456789abcdef.table.json"
    table = {"columns": ["example_id", "label", "prediction"],
             "data": [[f"x{i}", i % 3, i % 3] for i in range(12)]}
    server.add_run(FakeRun("acme", "bots", "f0", display_name="resnet-3",
                           config={"model_name": "resnet"},
                           summary={"val/acc": 0.93, "predictions": {
                               "_type": "table-file", "path": path, "nrows": 12, "ncols": 3}},
                           files={path: json.dumps(table).encode()},
                           created_at="2026-05-01T10:00:00"))
    return server


def test_server_listing_takes_the_core_filter_language(
        capsys: pytest.CaptureFixture[str], served: FakeWandbServer) -> None:
    seen = _runs_requests(served)
    src = "wandb:acme/bots"
    assert names(listed(capsys, src)) == ["bot-1", "bot-2", "bot-3", "other-2", "resnet-3"]
    cases = {
        'metrics.accuracy > 0.91 and model = "bot"': ["bot-1", "bot-3"],
        'model = "bot"': ["bot-1", "bot-2", "bot-3"],
        'name = "bot-2"': ["bot-2"],
        'status = "finished"': ["bot-1", "bot-2", "other-2", "resnet-3"],
        'status = "failed"': ["bot-3"],  # W&B's crashed
        'tags.team = "support" and model_version >= 2': ["bot-2", "bot-3", "other-2"],
        'model = "resnet"': ["resnet-3"],
    }
    for flt, want in cases.items():
        seen.clear()
        assert names(listed(capsys, src, "--filter", flt)) == want, flt
    # what W&B can apply is sent with the request (the rest is checked on each run read)
    seen.clear()
    listed(capsys, src, "--filter", 'metrics.accuracy > 0.91 and model = "bot"')
    assert json.loads(seen[0]["filters"]) == {"summary_metrics.accuracy": {"$gt": 0.91}}
    seen.clear()
    listed(capsys, src, "--filter", 'status = "finished" and metrics.accuracy <= 0.96')
    assert json.loads(seen[0]["filters"]) == {"$and": [
        {"state": "finished"}, {"summary_metrics.accuracy": {"$lte": 0.96}}]}
    # the older forms go to the server as before
    seen.clear()
    listed(capsys, src, "--filter", '{"state": "finished"}')
    assert json.loads(seen[0]["filters"]) == {"state": "finished"}
    seen.clear()
    listed(capsys, src, "--filter", "^bot-")
    assert json.loads(seen[0]["filters"]) == {"display_name": {"$regex": "^bot-"}}

    # a filter it cannot read: one line, exit 2, and no request
    seen.clear()
    code, out, err = aipm(capsys, "runs", "list", "--from", src, "--filter", "colour = 1")
    assert code == 2 and out == "" and "unknown field 'colour'" in err
    assert len(err.strip().splitlines()) == 1 and seen == []

    # the trend report over the server's runs
    code, out, err = aipm(capsys, "report", "--model", "bot", "--from", src,
                          "--format", "markdown")
    assert code == 0, err
    assert "bot (3 versions)" in out


def test_server_listing_limit_counts_matching_runs(served: FakeWandbServer) -> None:
    got = list(backend(per_page=2).list_runs("acme/bots", filter='model = "bot"', limit=2))
    assert [r.name for r in got] == ["bot-3", "bot-2"]  # other-2, the newest, is skipped
    metric_mapped = backend({"val/acc": "accuracy"}, per_page=2)
    got = list(metric_mapped.list_runs("acme/bots", filter="metrics.accuracy > 0.92",
                                       limit=10))
    assert [r.name for r in got] == ["other-2", "bot-3", "bot-1", "resnet-3"]


def test_server_listing_and_show_tell_has_examples(
        capsys: pytest.CaptureFixture[str], served: FakeWandbServer) -> None:
    by_name = {r["name"]: r for r in listed(capsys, "wandb:acme/bots")}
    assert by_name["resnet-3"]["has_examples"] is True
    assert by_name["bot-1"]["has_examples"] is False
    code, out, err = aipm(capsys, "runs", "show", "wandb:acme/bots/f0", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["has_examples"] is True
    assert len(backend().read_run("acme/bots/f0").examples) == 12
    code, out, err = aipm(capsys, "runs", "show", "wandb:acme/bots/r1", "--format", "json")
    assert json.loads(out)["has_examples"] is False
