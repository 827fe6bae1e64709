"""The embedded store against bad input (an audit): a store path that is a file, an aipm.db
that is a directory, corrupted records, a killed writer's temp tables, a store from a newer
aipm-tracking, an unrelated SQLite database, an unreadable spool state file.

Bad input is one clear line and exit 2 (never exit 4, never an empty store), and nothing
stored is lost or changed."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from aipm_tracking.backends.base import BackendOptions
from aipm_tracking.backends.local import LocalBackend
from aipm_tracking.errors import AipmWarning, DataError, StoreError
from aipm_tracking.schema import MetricPoint, MetricValue, ModelInfo, RunRecord
from aipm_tracking.spool import SpoolState, SpoolWriter

# -- helpers ---------------------------------------------------------------------------------


def aipm(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The real CLI entry point in-process: (exit code, stdout, stderr)."""
    from aipm_tracking.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as ei:
        main(list(args))
    cap = capsys.readouterr()
    code = ei.value.code
    return (code if isinstance(code, int) else 0 if code is None else 1), cap.out, cap.err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("aipm: error: "), err
    return lines[0]


def record(name: str, **metrics: float) -> RunRecord:
    return RunRecord(run_id="", name=name, model=ModelInfo("m", "1"),
                     metrics={k: MetricValue(v) for k, v in metrics.items()})


def examples(n: int = 20) -> pd.DataFrame:
    return pd.DataFrame({"example_id": range(n), "label": [i % 2 for i in range(n)],
                         "prediction": [1] * n, "confidence": [0.9] * n})


def eval_csv(tmp_path: Path) -> Path:
    p = tmp_path / "e1.csv"
    examples(30).to_csv(p, index=False)
    return p


def run_id(ref: str) -> str:
    return ref.split(":", 1)[1]


def corrupt(db: Path, rid: str, text: str) -> None:
    conn = sqlite3.connect(db)
    conn.execute("UPDATE runs SET record = ? WHERE run_id = ?", (text, rid))
    conn.commit()
    conn.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- 1: a store path that is a file, an aipm.db that is a directory ---------------------------


def test_store_path_that_is_a_regular_file_fails_reads_with_exit_2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    notadir = tmp_path / "notadir"
    notadir.write_text("x\n")
    monkeypatch.setenv("AIPM_STORE", str(notadir))
    code, out, err = aipm(capsys, "runs", "list", "--format", "csv")
    assert code == 2 and out == ""
    assert one_error_line(err) == f"aipm: error: store {notadir} is not a directory"
    code, out, err = aipm(capsys, "runs", "show", "local:20240101-000000-abcdefabcdef")
    assert code == 2
    assert one_error_line(err) == f"aipm: error: store {notadir} is not a directory"
    code, _, err = aipm(capsys, "log", str(eval_csv(tmp_path)), "--model", "m")
    assert code == 2 and "not a directory" in one_error_line(err)
    assert notadir.read_text() == "x\n"  # untouched


def test_aipm_db_that_is_a_directory_fails_reads_with_exit_2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "dbdir"
    (store / "aipm.db").mkdir(parents=True)
    monkeypatch.setenv("AIPM_STORE", str(store))
    for args in (("runs", "list"), ("runs", "list", "--format", "csv"),
                 ("runs", "show", "local:20240101-000000-abcdefabcdef")):
        code, out, err = aipm(capsys, *args)
        assert code == 2 and out == "", args
        assert one_error_line(err) == f"aipm: error: {store / 'aipm.db'} is not a database file"
    with pytest.raises(StoreError, match="is not a database file"):
        list(LocalBackend(BackendOptions(store=str(store))).list_runs())
    assert list((store / "aipm.db").iterdir()) == []


# -- 2: corrupted records ------------------------------------------------------------------


BAD_RECORDS = [
    ([1], "the run record"),
    ("text", "the run record"),
    ({"run_id": "r", "metrics": [1, 2]}, "metrics"),
    ({"run_id": "r", "metrics": {"accuracy": "0.5"}}, "metrics.accuracy"),
    ({"run_id": "r", "metrics": {"accuracy": [0.5]}}, "metrics.accuracy"),
    ({"run_id": "r", "metrics": {"accuracy": True}}, "metrics.accuracy"),
    ({"run_id": "r", "metrics": {"a": 0.5}, "metric_stats": {"a": {"ci": [1]}}},
     "metric_stats.a.ci"),
    ({"run_id": "r", "metrics": {"a": 0.5}, "metric_stats": {"a": {"n": "abc"}}},
     "metric_stats.a.n"),
    ({"run_id": "r", "metrics": {"a": 0.5}, "metric_stats": {"a": 3}}, "metric_stats.a"),
    ({"run_id": "r", "metric_stats": [1]}, "metric_stats"),
    ({"run_id": "r", "model": "m"}, "model"),
    ({"run_id": "r", "model": {"name": ["m"]}}, "model.name"),
    ({"run_id": "r", "dataset": [1]}, "dataset"),
    ({"run_id": "r", "dataset": {"size": "big"}}, "dataset.size"),
    ({"run_id": "r", "dataset": {"name": {"x": 1}}}, "dataset.name"),
    ({"run_id": "r", "tags": ["a"]}, "tags"),
    ({"run_id": "r", "tags": {"a": [1]}}, "tags.a"),
    ({"run_id": "r", "config": "abc"}, "config"),
    ({"run_id": "r", "details": [["a", 1]]}, "details"),
    ({"run_id": "r", "name": {"n": 1}}, "name"),
    ({"run_id": "r", "created_at": [2024]}, "created_at"),
    ({"run_id": {"x": 1}}, "run_id"),
]


@pytest.mark.parametrize(("data", "key"), BAD_RECORDS,
                         ids=[f"{i}-{k}" for i, (_, k) in enumerate(BAD_RECORDS)])
def test_run_record_from_dict_rejects_a_bad_shape_with_a_data_error(data: object,
                                                                      key: str) -> None:
    with pytest.raises(DataError) as ei:
        RunRecord.from_dict(data)  # type: ignore[arg-type]
    msg = str(ei.value)
    assert msg.startswith(key) and "\n" not in msg


def test_run_record_from_dict_validates_the_shape_and_still_reads_good_records() -> None:
    with pytest.raises(DataError, match="^metrics holds a JSON array"):
        RunRecord.from_dict({"run_id": "r", "metrics": [0.5]})
    rec = RunRecord(run_id="r1", name="n", model=ModelInfo("m", "2"),
                    metrics={"a": MetricValue(0.5, (0.4, 0.6), 10), "b": MetricValue(1.0)},
                    tags={"k": "v"}, details={"x": [1]}, config={"lr": 0.1})
    back = RunRecord.from_dict(json.loads(rec.to_json()))
    assert back == rec
    # numbers where text belongs are written out, as before
    old = RunRecord.from_dict({"run_id": 7, "model": {"name": "m", "version": 2},
                               "dataset": {"name": "d", "size": 3.0}, "metrics": {"a": None}})
    assert old.run_id == "7" and old.model.version == "2" and old.dataset.size == 3
    assert old.metric("a") != old.metric("a")  # null reads as NaN
    assert RunRecord.from_dict({"run_id": ""}).run_id == ""  # written before its id (MLflow)
    with pytest.raises(DataError, match="no 'run_id'"):
        RunRecord.from_dict({"name": "n"})


def test_a_corrupted_record_is_skipped_by_listing_and_a_clear_error_when_shown(
        store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    be = LocalBackend(BackendOptions(store=str(store)))
    good = run_id(be.write_run(record("good", accuracy=0.9)))
    bad = run_id(be.write_run(record("bad", accuracy=0.8)))
    be.close()
    db = store / "aipm.db"
    corrupt(db, bad, "[1]")

    code, out, err = aipm(capsys, "runs", "list", "--format", "csv")
    assert code == 0
    assert good in out and bad not in out
    warns = [ln for ln in err.splitlines() if ln.startswith("aipm: warning:")]
    assert len(warns) == 1 and bad in warns[0] and str(db) in warns[0], err

    code, out, err = aipm(capsys, "runs", "show", bad)
    assert code == 2
    line = one_error_line(err)
    assert f"run '{bad}'" in line and str(db) in line and "unreadable record" in line
    assert "AttributeError" not in line and "'get'" not in line

    code, out, err = aipm(capsys, "runs", "show", good)
    assert code == 0 and out.splitlines()[0].startswith("good")

    code, out, err = aipm(capsys, "report", "--model", "m")
    assert code == 0, err
    # the good run's row is untouched
    assert LocalBackend(BackendOptions(store=str(store))).read_run(good).metric("accuracy") == 0.9


@pytest.mark.parametrize("mutate", [
    lambda d: d.update(metric_stats={"accuracy": {"ci": [1]}}),  # IndexError before
    lambda d: d["metric_stats"].update(accuracy={"ci": [0.1, 0.2], "n": "abc"}),
    lambda d: d.update(metrics={"accuracy": "high"}),
    lambda d: d.update(infinite_metrics=["accuracy"]),
], ids=["ci-pair", "n-text", "metric-text", "infinite-list"])
def test_a_record_of_the_wrong_shape_is_a_store_error_naming_run_and_file(store: Path,
                                                                         mutate) -> None:
    be = LocalBackend(BackendOptions(store=str(store)))
    good = run_id(be.write_run(record("good", accuracy=0.9)))
    bad = run_id(be.write_run(record("bad", accuracy=0.8)))
    conn = sqlite3.connect(store / "aipm.db")
    d = json.loads(conn.execute("SELECT record FROM runs WHERE run_id = ?", (bad,)).fetchone()[0])
    conn.close()
    mutate(d)
    corrupt(store / "aipm.db", bad, json.dumps(d))
    with pytest.raises(StoreError) as ei:
        be.read_run(bad)
    msg = str(ei.value)
    assert msg.startswith(f"run '{bad}' in {store / 'aipm.db'} has an unreadable record: ")
    with pytest.warns(AipmWarning, match=bad):
        assert [r.name for r in be.list_runs()] == ["good"]
    assert be.read_run(good).metric("accuracy") == 0.9


def test_listing_with_a_limit_fills_it_past_unreadable_rows(store: Path) -> None:
    be = LocalBackend(BackendOptions(store=str(store)))
    refs = [be.write_run(record(f"r{i}", accuracy=i / 10)) for i in range(5)]
    for ref in refs[-2:]:  # the two newest are unreadable
        corrupt(store / "aipm.db", run_id(ref), '{"run_id": "x", "metrics": 5}')
    with pytest.warns(AipmWarning, match="skipped 2 run"):
        assert [r.name for r in be.list_runs(limit=2)] == ["r2", "r1"]
    assert [r.name for r in be.list_runs(limit=10)] == ["r2", "r1", "r0"]


def test_replacing_a_run_with_a_corrupted_record_is_a_store_error(store: Path) -> None:
    be = LocalBackend(BackendOptions(store=str(store)))
    ref = be.start_run(record("r"))
    corrupt(store / "aipm.db", run_id(ref), "[1]")
    with pytest.raises(StoreError, match=f"run '{run_id(ref)}' .* unreadable record"):
        be.finish_run(ref, "finished", record("r", accuracy=0.5))
    conn = sqlite3.connect(store / "aipm.db")
    assert conn.execute("SELECT record FROM runs").fetchone()[0] == "[1]"  # unchanged


# -- 3: a killed writer's temp tables ------------------------------------------------------


KILLED_WRITER = textwrap.dedent('''
    import os, signal, sys
    import pandas as pd
    import pyarrow.parquet as pq
    from aipm_tracking.backends.base import BackendOptions
    from aipm_tracking.backends.local import LocalBackend
    from aipm_tracking.schema import ModelInfo, RunRecord

    real = pq.write_table

    def write_then_die(table, where, **kw):
        real(table, where, **kw)
        os.kill(os.getpid(), signal.SIGKILL)  # killed before the file is moved into place

    pq.write_table = write_then_die
    n = 200_000
    df = pd.DataFrame({"example_id": range(n), "label": [i % 2 for i in range(n)],
                       "prediction": [1] * n, "text": [f"example {i}" for i in range(n)]})
    LocalBackend(BackendOptions(store=sys.argv[1])).write_run(
        RunRecord(run_id="", name="big", model=ModelInfo("m"), examples=df))
''')


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_killed_writers_temp_table_is_removed_at_the_next_write(store: Path) -> None:
    out = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(store)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == -signal.SIGKILL, out.stderr
    (left,) = list((store / "examples").glob(".tmp-*.parquet"))
    assert left.stat().st_size > 100_000

    be = LocalBackend(BackendOptions(store=str(store)))
    assert list(be.list_runs()) == []  # the killed run is not there; this opens the store
    hour_ago = time.time() - 2 * 3600
    os.utime(left, (hour_ago, hour_ago))
    old_bak = store / "examples" / ".bak-0123456789abcdef.parquet"
    old_bak.write_bytes(b"old backup")
    os.utime(old_bak, (hour_ago, hour_ago))
    fresh = store / "examples" / ".tmp-fedcba9876543210.parquet"  # a live writer's: kept
    fresh.write_bytes(b"in progress")

    ref = be.write_run(dataclass_with_examples(record("next", accuracy=0.5)))
    assert not left.exists() and not old_bak.exists()
    assert fresh.read_bytes() == b"in progress"
    assert len(be.read_run(ref).examples) == 20

    # a long-lived writer sweeps again at a later write, not only when it opens the store
    later = store / "examples" / ".tmp-00000000000000aa.parquet"
    later.write_bytes(b"x")
    os.utime(later, (hour_ago, hour_ago))
    be.write_run(record("again"))
    assert not later.exists() and fresh.exists()
    assert sorted(r.name for r in be.list_runs()) == ["again", "next"]


def dataclass_with_examples(rec: RunRecord) -> RunRecord:
    rec.examples = examples(20)
    return rec


# -- 4: a newer schema, an unrelated SQLite database ----------------------------------------


def test_a_store_of_a_newer_schema_refuses_writes_and_reads_with_a_warning(
        store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    be = LocalBackend(BackendOptions(store=str(store)))
    ref = be.start_run(record("r", accuracy=0.7))
    be.close()
    conn = sqlite3.connect(store / "aipm.db")
    conn.execute("INSERT INTO schema_migrations VALUES (99, 'future', '2099-01-01')")
    conn.commit()
    conn.close()
    before = sqlite3.connect(store / "aipm.db").execute(
        "SELECT run_id, record FROM runs").fetchall()
    monkeypatch.setenv("AIPM_STORE", str(store))

    code, out, err = aipm(capsys, "log", str(eval_csv(tmp_path)), "--model", "m")
    assert code == 2
    line = one_error_line(err)
    assert line == (f"aipm: error: store {store} was written by a newer aipm-tracking "
                    "(schema 99 > 1): upgrade aipm-tracking to write to it")

    code, out, err = aipm(capsys, "runs", "list", "--format", "csv")
    assert code == 0 and run_id(ref) in out
    assert "newer aipm-tracking (schema 99 > 1)" in err and err.startswith("aipm: warning:")

    be = LocalBackend(BackendOptions(store=str(store)))
    with pytest.warns(AipmWarning, match="schema 99"):
        assert be.read_run(ref).metric("accuracy") == 0.7
    for write in (lambda: be.log_points(ref, [MetricPoint("loss", 1.0, 0, 0.0)]),
                  lambda: be.finish_run(ref, "finished"),
                  lambda: be.write_run(record("new"))):
        with pytest.raises(StoreError, match=r"newer aipm-tracking \(schema 99 > 1\): upgrade"):
            write()
    after = sqlite3.connect(store / "aipm.db").execute("SELECT run_id, record FROM runs")
    assert after.fetchall() == before
    assert be.read_history(ref) == []


def test_an_unrelated_sqlite_database_is_not_an_aipm_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "other"
    store.mkdir()
    db = store / "aipm.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users VALUES (1, 'bob')")
    conn.commit()
    conn.close()
    before = digest(db)
    monkeypatch.setenv("AIPM_STORE", str(store))

    expected = (f"aipm: error: {db} is not an aipm store (an SQLite database with other "
                f"tables: users); point --store or AIPM_STORE elsewhere")
    code, out, err = aipm(capsys, "runs", "list", "--format", "csv")
    assert code == 2 and out == "" and one_error_line(err) == expected
    code, out, err = aipm(capsys, "log", str(eval_csv(tmp_path)), "--model", "m")
    assert code == 2 and one_error_line(err) == expected
    be = LocalBackend(BackendOptions(store=str(store)))
    with pytest.raises(StoreError, match="is not an aipm store"):
        be.write_run(record("r"))
    with pytest.raises(StoreError, match="is not an aipm store"):
        be.read_run("20240101-000000-abcdefabcdef")

    assert digest(db) == before  # not even switched to WAL
    conn = sqlite3.connect(db)
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["users"]
    assert conn.execute("SELECT * FROM users").fetchall() == [(1, "bob")]
    conn.close()


def test_a_database_with_a_foreign_schema_migrations_table_is_not_an_aipm_store(
        tmp_path: Path) -> None:
    db = tmp_path / "s" / "aipm.db"
    db.parent.mkdir()
    conn = sqlite3.connect(db)  # e.g. a Rails app: its own schema_migrations, no runs
    conn.execute("CREATE TABLE schema_migrations (version TEXT PRIMARY KEY)")
    conn.execute("INSERT INTO schema_migrations VALUES ('20240101120000')")
    conn.commit()
    conn.close()
    before = digest(db)
    be = LocalBackend(BackendOptions(store=str(db.parent)))
    with pytest.raises(StoreError, match="is not an aipm store"):
        list(be.list_runs())
    with pytest.raises(StoreError, match="is not an aipm store"):
        be.write_run(record("r"))
    assert digest(db) == before


# -- 5: an unreadable spool state file ------------------------------------------------------


@pytest.mark.parametrize("state", ["[1]", '"x"', '{"acked": "x"}', '{"ref": [1]}'])
def test_sync_with_an_unreadable_state_file_names_it(tmp_path: Path, state: str) -> None:
    from click.testing import CliRunner

    from aipm_tracking.cli import cli

    rec = RunRecord(run_id="spoolrun1", name="r", model=ModelInfo("m", "1"), status="running")
    w = SpoolWriter(tmp_path / "sp", "spoolrun1",
                    {"backend": {"scheme": "local", "target": None,
                                 "store": str(tmp_path / "store"), "mlflow_uri": None},
                     "record": rec.to_dict()})
    w.append_points([("loss", 0.5, 1, 1.0)])
    w.close()
    w.state_path.write_text(state)
    with pytest.raises(StoreError) as ei:
        SpoolState.load(w.state_path)
    assert str(ei.value).startswith(f"state file {w.state_path} is unreadable: ")
    out = CliRunner().invoke(cli, ["sync", "--spool-dir", str(tmp_path / "sp"),
                                   "--format", "json"])
    assert out.exit_code == 1, out.output
    (r,) = json.loads(out.output)["results"]
    assert r["status"] == "failed"
    assert f"state file {w.state_path} is unreadable" in r["reason"]
    assert "AttributeError" not in r["reason"] and "TypeError" not in r["reason"]
    assert w.path.exists() and w.state_path.read_text() == state  # kept as it was
