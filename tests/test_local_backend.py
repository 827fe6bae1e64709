"""The embedded store (backends/local.py): round trips, listing and filters, history,
migrations, atomicity, bad inputs and path safety.

Stored data is checked through independent readers (``sqlite3`` on ``aipm.db``, ``pyarrow``
on the Parquet files), not only through the backend's own read path.
"""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from aipm_tracking.backends.base import Backend, BackendOptions
from aipm_tracking.backends.local import LocalBackend, new_run_id
from aipm_tracking.backends.local_db import MIGRATIONS
from aipm_tracking.errors import (
    DataError,
    InvalidReferenceError,
    RunNotFoundError,
    StoreError,
    UsageError,
)
from aipm_tracking.refs import RUN_ID_RE
from aipm_tracking.schema import DatasetInfo, MetricPoint, MetricValue, ModelInfo, RunRecord

# -- helpers ------------------------------------------------------------------------------


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def backend(store_dir: Path) -> LocalBackend:
    b = LocalBackend(BackendOptions(store=str(store_dir)))
    yield b
    b.close()


def examples_frame(n: int = 50, *, int_ids: bool = False, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = np.array(["billing", "refund", "login", "other"])
    label = labels[rng.integers(0, 4, n)]
    pred = np.where(rng.random(n) < 0.8, label, labels[rng.integers(0, 4, n)])
    return pd.DataFrame({
        "example_id": np.arange(n) * 7 if int_ids else [f"ex-{i:04d}" for i in range(n)],
        "label": label,
        "prediction": pred,
        "confidence": rng.random(n),
        "latency_ms": rng.gamma(2.0, 100.0, n),
        "overridden": rng.random(n) < 0.1,
        "slice": np.where(rng.random(n) < 0.5, "de", "en"),
        "correct": label == pred,
        "fallback": rng.random(n) < 0.2,
    })


def make_record(name: str = "run", *, model: str = "bot", version: str = "2",
                accuracy: float = 0.9, examples: pd.DataFrame | None = None,
                created_at: str | None = None, tags: dict[str, str] | None = None,
                run_id: str = "") -> RunRecord:
    rec = RunRecord(
        run_id=run_id, name=name, model=ModelInfo(model, version),
        dataset=DatasetInfo("support-eval", "v3", 50, "abc123"),
        metrics={
            "accuracy": MetricValue(accuracy, (accuracy - 0.05, accuracy + 0.02), 50),
            "latency_ms_p95": MetricValue(512.5),
            "accuracy[slice=de]": MetricValue(accuracy - 0.1, None, 20),
        },
        config={"fallback_threshold": 0.6, "lr": 3e-4, "nested": {"layers": [1, 2]}},
        tags=dict(tags or {"team": "support"}),
        guardrails_hash="sha256:feedbeef",
        details={"reliability": {"n_bins": 15, "count": [0] * 14 + [50],
                                 "accuracy": [None] * 14 + [0.9]},
                 "confusion": {"labels": ["a", "b"], "matrix": [[3, 1], [0, 4]]}},
        examples=examples,
    )
    if created_at is not None:
        rec.created_at = created_at
    return rec


def snapshot(store: Path) -> tuple[object, ...]:
    """Logical DB content (every row of every table) and the examples dir's files."""
    db = store / "aipm.db"
    rows: list[str] = []
    if db.exists():
        con = sqlite3.connect(db)
        rows = list(con.iterdump())
        con.close()
    ex = store / "examples"
    files = sorted((p.name, hashlib.sha256(p.read_bytes()).hexdigest())
                   for p in ex.iterdir()) if ex.exists() else []
    return tuple(rows), tuple(files)


def count(store: Path, table: str) -> int:
    con = sqlite3.connect(store / "aipm.db")
    try:
        return int(con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    finally:
        con.close()


# -- plugin registration, import cost ---------------------------------------------------


def test_import_is_cheap() -> None:
    code = ("import sys, aipm_tracking.backends.local; "
            "print(sorted(m for m in ('pandas', 'pyarrow', 'numpy', 'mlflow', 'wandb') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_registered_through_the_plugin_host(store_dir: Path) -> None:
    from aipm_tracking import plugins

    plugins.reset()
    try:
        b = plugins.get_backend("local", BackendOptions(store=str(store_dir)))
        assert isinstance(b, LocalBackend) and isinstance(b, Backend)
        assert b.root == store_dir.absolute()
    finally:
        plugins.reset()


def test_store_location_from_env_and_default(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIPM_STORE", str(tmp_path / "envstore"))
    assert LocalBackend(BackendOptions()).root == tmp_path / "envstore"
    monkeypatch.delenv("AIPM_STORE")
    monkeypatch.chdir(tmp_path)
    assert LocalBackend(BackendOptions()).root == tmp_path / ".aipm"
    # options.store wins over the environment
    monkeypatch.setenv("AIPM_STORE", str(tmp_path / "envstore"))
    assert LocalBackend(BackendOptions(store=str(tmp_path / "x"))).root == tmp_path / "x"


# -- round trip ---------------------------------------------------------------------------


@pytest.mark.parametrize("int_ids", [False, True], ids=["str-ids", "int-ids"])
def test_round_trip_with_examples(backend: LocalBackend, store_dir: Path, int_ids: bool) -> None:
    df = examples_frame(int_ids=int_ids)
    rec = make_record(examples=df)
    rec.config["api_key"] = "sk-live-123"  # redacted before the write (DESIGN §8b)
    ref = backend.write_run(rec)
    assert ref.startswith("local:")
    run_id = ref.split(":", 1)[1]
    assert RUN_ID_RE.match(run_id)

    got = backend.read_run(ref)
    assert got.ref == ref and got.run_id == run_id
    expected = rec.to_dict()
    expected.update(run_id=run_id, ref=ref)
    expected["config"] = {**rec.config, "api_key": "***"}
    assert got.to_dict() == expected
    assert got.metrics["accuracy"] == MetricValue(0.9, (0.9 - 0.05, 0.9 + 0.02), 50)
    assert got.metrics["latency_ms_p95"].ci is None
    pd.testing.assert_frame_equal(got.examples, df)
    assert got.examples["example_id"].tolist() == df["example_id"].tolist()

    # independent readers: the Parquet file and the query tables
    pq_df = pq.read_table(store_dir / "examples" / f"{run_id}.parquet").to_pandas()
    pd.testing.assert_frame_equal(pq_df, df)
    con = sqlite3.connect(store_dir / "aipm.db")
    rows = con.execute("SELECT name, value, ci_lo, ci_hi, n FROM metrics WHERE run_id = ? "
                       "ORDER BY name", (run_id,)).fetchall()
    assert rows == [("accuracy", 0.9, 0.9 - 0.05, 0.9 + 0.02, 50),
                    ("accuracy[slice=de]", pytest.approx(0.8), None, None, 20),
                    ("latency_ms_p95", 512.5, None, None, None)]
    run = con.execute("SELECT model_name, model_version, status, guardrails_hash, has_examples "
                      "FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    assert run == ("bot", "2", "finished", "sha256:feedbeef", 1)
    assert con.execute("SELECT key, value FROM tags WHERE run_id = ?",
                       (run_id,)).fetchall() == [("team", "support")]
    con.close()
    # without examples: the table is not loaded
    assert backend.read_run(run_id, with_examples=False).examples is None


def test_round_trip_without_examples_and_numpy_values(backend: LocalBackend) -> None:
    rec = make_record()
    rec.details["quantiles"] = np.array([0.5, np.nan, 2.0])  # numpy -> list, NaN -> null
    rec.details["count"] = np.int64(7)
    rec.metrics["nan_metric"] = MetricValue(float("nan"))
    got = backend.read_run(backend.write_run(rec))
    assert got.examples is None and not got.has_examples
    assert got.details["quantiles"] == [0.5, None, 2.0]
    assert got.details["count"] == 7
    assert math.isnan(got.metrics["nan_metric"].value)


def test_given_run_id_kept_when_free_fresh_when_taken(backend: LocalBackend) -> None:
    ref = backend.write_run(make_record(run_id="mlflow0123abcd"))
    assert ref == "local:mlflow0123abcd"
    ref2 = backend.write_run(make_record(name="again", run_id="mlflow0123abcd"))
    assert ref2 != ref and RUN_ID_RE.match(ref2.split(":", 1)[1])
    assert backend.read_run(ref).name == "run"  # the first run is untouched
    assert backend.read_run(ref2).name == "again"


def test_generated_ids_are_valid_and_distinct() -> None:
    ids = {new_run_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(RUN_ID_RE.match(i) for i in ids)


# -- reading what is not there ------------------------------------------------------------


def test_reads_never_create_the_store(backend: LocalBackend, store_dir: Path) -> None:
    with pytest.raises(RunNotFoundError) as ei:
        backend.read_run("abc123")
    assert str(ei.value) == f"no run 'abc123' in store {store_dir}"
    assert list(backend.list_runs()) == []
    with pytest.raises(RunNotFoundError):
        backend.read_history("local:abc123")
    with pytest.raises(RunNotFoundError):
        backend.log_points("abc123", [MetricPoint("loss", 1.0, 0, 0.0)])
    with pytest.raises(RunNotFoundError):
        backend.finish_run("abc123")
    assert not store_dir.exists()


def test_unknown_run_in_existing_store(backend: LocalBackend, store_dir: Path) -> None:
    backend.write_run(make_record())
    with pytest.raises(RunNotFoundError, match=r"no run 'nope123' in store .*store"):
        backend.read_run("local:nope123")
    with pytest.raises(RunNotFoundError):
        backend.read_history("nope123")


# -- listing and filters ------------------------------------------------------------------


@pytest.fixture
def three_runs(backend: LocalBackend) -> dict[str, str]:
    refs = {
        "old": backend.write_run(make_record("old", model="bot", version="1", accuracy=0.85,
                                             created_at="2026-01-01T10:00:00+00:00",
                                             tags={"team": "x"})),
        "new": backend.write_run(make_record("new", model="bot", version="2", accuracy=0.93,
                                             created_at="2026-03-01T10:00:00+00:00",
                                             tags={"team": "y"})),
        "mid": backend.write_run(make_record("mid", model="ranker", version="2", accuracy=0.95,
                                             created_at="2026-02-01T10:00:00Z",
                                             tags={"team": "x"})),
    }
    return refs


def names(runs: object) -> list[str]:
    return [r.name for r in runs]  # type: ignore[attr-defined]


def test_list_newest_first_and_limit(backend: LocalBackend, three_runs: dict[str, str]) -> None:
    runs = list(backend.list_runs())
    assert names(runs) == ["new", "mid", "old"]
    assert all(r.examples is None for r in runs)
    assert [r.ref for r in runs] == [three_runs["new"], three_runs["mid"], three_runs["old"]]
    assert names(backend.list_runs(limit=2)) == ["new", "mid"]
    assert names(backend.list_runs(limit=0)) == []
    with pytest.raises(UsageError):
        list(backend.list_runs(limit=-1))


@pytest.mark.parametrize("text, expected", [
    ("metrics.accuracy > 0.9", ["new", "mid"]),
    ("metrics.accuracy >= 0.95", ["mid"]),
    ("metrics.accuracy <= 0.85", ["old"]),
    ('model = "bot"', ["new", "old"]),
    ("model == bot", ["new", "old"]),
    ("model_version = 2", ["new", "mid"]),
    ("model_version = '1'", ["old"]),
    ('tags.team = "x"', ["mid", "old"]),
    ('tags.team != "x"', ["new"]),
    ('model = "bot" and metrics.accuracy > 0.9', ["new"]),
    ('tags.team = "x" AND model_version = "2" and metrics.accuracy > 0.5', ["mid"]),
    ('metrics."accuracy[slice=de]" > 0.8', ["new", "mid"]),
    ("metrics.accuracy[slice=de] > 0.8", ["new", "mid"]),
    ("metrics.no_such_metric > 0", []),
    ('name = "x\' OR \'1\'=\'1"', []),  # a value is data, never SQL
    ('dataset = "support-eval"', ["new", "mid", "old"]),
    ('dataset = "support-eval@v3"', ["new", "mid", "old"]),  # as --dataset takes it
    ('dataset = "support-eval@v4"', []),
    ('dataset.version = "v3"', ["new", "mid", "old"]),
    ('created_at < "2026-02-15"', ["mid", "old"]),
    ("", ["new", "mid", "old"]),
])
def test_filter(backend: LocalBackend, three_runs: dict[str, str], text: str,
                expected: list[str]) -> None:
    assert names(backend.list_runs(filter=text)) == expected


@pytest.fixture
def versioned_runs(backend: LocalBackend) -> None:
    for v, n in (("2", "9"), ("3", "10"), ("150", "100"), ("151", "x"), ("200.0", "2e1"),
                 ("beta", "11")):
        backend.write_run(make_record(f"run-{v}", model="big", version=v, tags={"N": n}))


@pytest.mark.parametrize("text, expected", [
    # an unquoted number compares numerically ("2" > "150" as text)
    ("model_version > 150", ["run-151", "run-200.0"]),
    ("model_version >= 150 and model_version < 200", ["run-150", "run-151"]),
    ("model_version <= 3", ["run-2", "run-3"]),
    ("model_version = 200", ["run-200.0"]),
    ("model_version != 2", ["run-3", "run-150", "run-151", "run-200.0"]),  # 'beta': no number
    ("tags.N > 9", ["run-3", "run-150", "run-200.0", "run-beta"]),  # 'x' is not a number
    ("tags.N < 1e2", ["run-2", "run-3", "run-200.0", "run-beta"]),
    ("tags.N = 20", ["run-200.0"]),
    # a quoted value compares as text
    ('model_version > "150"', ["run-2", "run-3", "run-151", "run-200.0", "run-beta"]),
    ("tags.N = '2e1'", ["run-200.0"]),
    ("model_version = beta", ["run-beta"]),
])
def test_filter_numbers_compare_numerically(backend: LocalBackend, versioned_runs: None,
                                            text: str, expected: list[str]) -> None:
    assert sorted(names(backend.list_runs(filter=text))) == sorted(expected)


def test_filter_sql_stays_parameterised() -> None:
    from aipm_tracking.backends.local_db import compile_filter

    sql, params = compile_filter("model_version > 150 and tags.N <= 9 and name = '1'")
    assert "150" not in sql and "9" not in sql and params == [150.0, "N", 9.0, "1"]


@pytest.mark.parametrize("text", [
    "accuracy > 0.9",  # unknown field (metrics. prefix missing)
    "metrics.accuracy > 'high'",  # metric compared with a string
    "metrics.accuracy > high",
    "model = bot or 1 = 1",
    "model = 'bot'; DROP TABLE runs",
    "model = 'bot' and",
    "metrics.accuracy >> 0.9",
    "model",
    "runs.model_name = 'bot'",
    "model = 'bot' and (1)",
])
def test_filter_rejects_unknown_syntax(backend: LocalBackend, three_runs: dict[str, str],
                                       store_dir: Path, text: str) -> None:
    before = snapshot(store_dir)
    with pytest.raises(UsageError):
        list(backend.list_runs(filter=text))
    assert snapshot(store_dir) == before
    assert count(store_dir, "runs") == 3


# -- streaming: start, log_points, finish, history -----------------------------------------


def test_streaming_run_and_history(backend: LocalBackend, store_dir: Path) -> None:
    ref = backend.start_run(make_record("train", tags={"team": "ml"}))
    running = backend.read_run(ref)
    assert running.status == "running" and running.finished_at is None
    assert names(backend.list_runs(filter='status = "running"')) == ["train"]

    rng = np.random.default_rng(1)
    steps = rng.permutation(200)
    batch1 = [MetricPoint("loss", float(1.0 / (s + 1)), int(s), 1000.0 + s) for s in steps]
    batch2 = [MetricPoint("lr", 0.001 * s, s, 2000.0 + s) for s in range(0, 200, 10)]
    backend.log_points(ref, batch1)
    backend.log_points(ref, batch2)
    # numpy scalars (what a training loop hands over) and NaN
    backend.log_points(ref, [MetricPoint("grad_norm", np.float32(1.5), np.int64(3), 5.0),
                             MetricPoint("grad_norm", float("nan"), 4, 6.0)])
    backend.log_points(ref, [])

    hist = backend.read_history(ref)
    assert len(hist) == 200 + 20 + 2
    assert [(p.step, p.key) for p in hist] == sorted((p.step, p.key) for p in hist)
    loss = [p for p in hist if p.key == "loss"]
    assert [p.step for p in loss] == list(range(200))
    assert all(p.value == pytest.approx(1.0 / (p.step + 1)) for p in loss)
    assert all(isinstance(p.step, int) and isinstance(p.value, float) for p in hist)
    gn = backend.read_history(ref, keys=["grad_norm"])
    assert [(p.step, p.value) for p in gn[:1]] == [(3, 1.5)] and math.isnan(gn[1].value)
    assert [p.key for p in backend.read_history(ref, keys=["lr", "nope"])] == ["lr"] * 20
    assert backend.read_history(ref, keys=[]) == []
    # replaying the same points (a re-sent spool) does not duplicate them
    backend.log_points(ref, batch2)
    assert len(backend.read_history(ref, keys=["lr"])) == 20
    # independent reader
    assert count(store_dir, "history") == 222

    final = make_record("train", accuracy=0.97, tags={"team": "ml", "epochs": "3"})
    final.details = {"note": "done"}
    backend.finish_run(ref, "finished", final)
    done = backend.read_run(ref)
    assert done.status == "finished" and done.finished_at is not None
    assert done.created_at == running.created_at
    assert done.metric("accuracy") == 0.97 and done.details == {"note": "done"}
    assert done.tags == {"team": "ml", "epochs": "3"}
    assert names(backend.list_runs(filter="tags.epochs = 3")) == ["train"]
    assert len(backend.read_history(ref)) == 222  # history survives the finish


def test_finish_without_record_and_with_examples(backend: LocalBackend, store_dir: Path) -> None:
    ref = backend.start_run(make_record("a"))
    backend.finish_run(ref, "failed")
    rec = backend.read_run(ref)
    assert rec.status == "failed" and rec.metric("accuracy") == 0.9
    with pytest.raises(UsageError):
        backend.finish_run(ref, "exploded")
    df = examples_frame(10)
    backend.finish_run(ref, "finished", make_record("a", examples=df))
    pd.testing.assert_frame_equal(backend.read_run(ref).examples, df)
    df2 = examples_frame(12, seed=3)
    backend.finish_run(ref, "finished", make_record("a", examples=df2))  # replaces the table
    pd.testing.assert_frame_equal(backend.read_run(ref).examples, df2)
    assert [p.name for p in (store_dir / "examples").iterdir()] == [f"{rec.run_id}.parquet"]


def test_bad_points_change_nothing(backend: LocalBackend, store_dir: Path) -> None:
    ref = backend.start_run(make_record())
    backend.log_points(ref, [MetricPoint("loss", 1.0, 0, 1.0)])
    before = snapshot(store_dir)
    for bad in ([MetricPoint("loss", 2.0, 1, 1.0), MetricPoint("loss", "high", 2, 1.0)],
                [MetricPoint("loss", 2.0, 1.5, 1.0)],
                [MetricPoint("", 2.0, 1, 1.0)],
                [("loss", 2.0)]):
        with pytest.raises(UsageError, match="point"):
            backend.log_points(ref, bad)  # type: ignore[arg-type]
    assert snapshot(store_dir) == before


# -- migrations -----------------------------------------------------------------------------


def test_migrations_table_and_idempotent_reopen(backend: LocalBackend, store_dir: Path) -> None:
    backend.write_run(make_record())
    con = sqlite3.connect(store_dir / "aipm.db")
    first = con.execute("SELECT version, name, applied_at FROM schema_migrations").fetchall()
    assert [r[0] for r in first] == [m[0] for m in MIGRATIONS]
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"schema_migrations", "runs", "metrics", "history", "tags"} <= tables
    con.close()
    for i in range(2):  # reopening applies nothing twice
        with LocalBackend(BackendOptions(store=str(store_dir))) as b:
            assert len(list(b.list_runs())) == 1 + i
            b.write_run(make_record())
    con = sqlite3.connect(store_dir / "aipm.db")
    assert con.execute("SELECT version, name, applied_at FROM schema_migrations").fetchall() \
        == first
    con.close()
    conn = backend._db(create=False)
    assert conn is not None
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 10_000


# -- errors: unwritable, corrupt, truncated -------------------------------------------------


def test_store_under_a_regular_file_is_a_store_error(tmp_path: Path) -> None:
    # A directory below a regular file can never be created, even by root (for whom
    # chmod does not block writes), so this always exercises the "cannot write" path.
    blocker = tmp_path / "somefile"
    blocker.write_text("not a directory")
    store = blocker / "store"
    b = LocalBackend(BackendOptions(store=str(store)))
    with pytest.raises(StoreError) as ei:
        b.write_run(make_record(examples=examples_frame(5)))
    msg = str(ei.value)
    assert msg.startswith(f"cannot write the aipm store at {store}: ")
    assert "\n" not in msg
    with pytest.raises(RunNotFoundError):  # reading is not an error: there is nothing
        b.read_run("abc123")
    assert blocker.read_text() == "not a directory"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root ignores directory permissions; the regular-file test "
                           "above covers the unwritable store when running as root")
def test_read_only_directory_is_a_store_error(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        b = LocalBackend(BackendOptions(store=str(ro / "store")))
        with pytest.raises(StoreError, match=r"cannot write the aipm store at .*Permission"):
            b.write_run(make_record())
    finally:
        ro.chmod(0o700)


def test_corrupt_database_is_a_store_error(store_dir: Path) -> None:
    store_dir.mkdir()
    (store_dir / "aipm.db").write_bytes(b"this is not sqlite at all " * 200)
    b = LocalBackend(BackendOptions(store=str(store_dir)))
    for op in (lambda: b.read_run("abc123"), lambda: list(b.list_runs()),
               lambda: b.write_run(make_record())):
        with pytest.raises(StoreError) as ei:
            op()
        assert str(store_dir / "aipm.db") in str(ei.value)
        assert "corrupt" in str(ei.value)
    assert (store_dir / "aipm.db").read_bytes() == b"this is not sqlite at all " * 200


def test_truncated_parquet_is_a_data_error(backend: LocalBackend, store_dir: Path) -> None:
    ref = backend.write_run(make_record(examples=examples_frame(200)))
    path = store_dir / "examples" / f"{ref.split(':')[1]}.parquet"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as ei:
        backend.read_run(ref)
    assert str(path) in str(ei.value)
    assert backend.read_run(ref, with_examples=False).metric("accuracy") == 0.9
    path.unlink()
    with pytest.raises(DataError, match="missing"):
        backend.read_run(ref)


# -- atomicity: bad input never changes the store --------------------------------------------


def _mixed_type_ids() -> pd.DataFrame:
    df = examples_frame(6)
    df["example_id"] = pd.Series([1, "b", 3, "d", 5, "f"], dtype=object)
    return df


@pytest.mark.parametrize("make_bad, error", [
    (lambda: make_record(examples=_mixed_type_ids()), DataError),
    (lambda: make_record(examples=examples_frame(5).rename(columns={"label": 3})), DataError),
    (lambda: make_record(examples=[1, 2, 3]), DataError),  # type: ignore[arg-type]
    (lambda: RunRecord(run_id="", name="x", model=ModelInfo("m"),
                       details={"obj": object()}), DataError),
    (lambda: make_record(run_id="../../etc/passwd", examples=examples_frame(5)),
     InvalidReferenceError),
    (lambda: make_record(run_id="a/b"), InvalidReferenceError),
    (lambda: "not a record", UsageError),
])
def test_bad_input_leaves_the_store_unchanged(backend: LocalBackend, store_dir: Path,
                                              make_bad: object, error: type) -> None:
    backend.write_run(make_record(examples=examples_frame(5)))
    before = snapshot(store_dir)
    with pytest.raises(error) as ei:
        backend.write_run(make_bad())  # type: ignore[operator]
    assert "\n" not in str(ei.value)
    assert snapshot(store_dir) == before
    assert count(store_dir, "runs") == 1


def test_mixed_type_column_error_names_the_column(backend: LocalBackend) -> None:
    with pytest.raises(DataError, match="column 'example_id'"):
        backend.write_run(make_record(examples=_mixed_type_ids()))


def test_failed_transaction_removes_the_parquet_and_hides_the_run(
        backend: LocalBackend, store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend.write_run(make_record(examples=examples_frame(5)))
    before = snapshot(store_dir)
    reader = LocalBackend(BackendOptions(store=str(store_dir)))  # its own connection
    seen: dict[str, object] = {}
    original = LocalBackend._insert

    def failing_insert(self: LocalBackend, conn: sqlite3.Connection, d: dict, rec: RunRecord):
        run_id = d["run_id"]
        seen["file_in_place"] = self.examples_path(run_id).exists()
        original(self, conn, d, rec)  # rows written but not committed ...
        try:
            reader.read_run(run_id)
        except RunNotFoundError:
            seen["hidden"] = True
        raise sqlite3.OperationalError("disk I/O error")  # ... then the transaction fails

    monkeypatch.setattr(LocalBackend, "_insert", failing_insert)
    with pytest.raises(StoreError, match="disk I/O error"):
        backend.write_run(make_record("doomed", examples=examples_frame(8)))
    assert seen == {"file_in_place": True, "hidden": True}
    assert snapshot(store_dir) == before  # no row, no Parquet file, no temp file
    monkeypatch.undo()
    ref = backend.write_run(make_record("ok", examples=examples_frame(8)))  # store still fine
    assert reader.read_run(ref).name == "ok"
    reader.close()


# -- path traversal ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["../../etc/passwd", "a/b", "local:../x", "..", "a\\b",
                                 "/etc/passwd", "x" * 65, "ab", "", "a b", "a.parquet"])
def test_path_traversal_rejected_before_any_path(backend: LocalBackend, store_dir: Path,
                                                 bad: str) -> None:
    backend.write_run(make_record())
    before = snapshot(store_dir)
    for op in (lambda: backend.read_run(bad), lambda: backend.read_history(bad),
               lambda: backend.log_points(bad, [MetricPoint("a", 1.0, 0, 0.0)]),
               lambda: backend.finish_run(bad), lambda: backend.examples_path(bad)):
        with pytest.raises(InvalidReferenceError):
            op()
    assert snapshot(store_dir) == before


def test_write_comparison_not_implemented(backend: LocalBackend) -> None:
    from aipm_tracking.errors import BackendNotImplementedError

    with pytest.raises(BackendNotImplementedError, match="local"):
        backend.write_comparison(None, None)  # type: ignore[arg-type]


def test_database_path_that_cannot_be_opened(store_dir: Path) -> None:
    (store_dir / "aipm.db").mkdir(parents=True)  # a directory where the DB file should be
    b = LocalBackend(BackendOptions(store=str(store_dir)))
    with pytest.raises(StoreError, match=rf"cannot write the aipm store at {store_dir}: "):
        b.write_run(make_record())
    with pytest.raises(StoreError, match="is not a database file"):  # not an empty store
        list(b.list_runs())
    assert sorted(p.name for p in store_dir.iterdir()) == ["aipm.db", "examples"]


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(),
                    reason="needs the fork start method")
def test_connection_is_reopened_after_fork(backend: LocalBackend) -> None:
    import multiprocessing as mp

    ref = backend.write_run(make_record("parent"))
    ctx = mp.get_context("fork")
    p = ctx.Process(target=_child_writes, args=(backend,))
    p.start()
    p.join(timeout=60)
    assert p.exitcode == 0
    assert sorted(names(backend.list_runs())) == ["child", "parent"]  # parent's conn still fine
    assert backend.read_run(ref).name == "parent"
    assert [pt.step for pt in backend.read_history(ref)] == [1]


def _child_writes(b: LocalBackend) -> None:
    b.write_run(make_record("child"))
    b.log_points(next(iter(b.list_runs(filter='name = "parent"'))).run_id,
                 [MetricPoint("loss", 0.5, 1, 1.0)])


def test_filter_fuzz_only_usage_errors(backend: LocalBackend, store_dir: Path) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    backend.write_run(make_record())
    before = snapshot(store_dir)
    pieces = st.sampled_from(["metrics.accuracy", "model", "tags.team", "name", "and", "or",
                              "=", "!=", ">", "<=", "'x'", '"bot"', "0.9", "-1e3", ";",
                              "(", ")", "DROP TABLE runs", "--", "'", '"', "\\", " "])

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(st.text(max_size=40), st.lists(pieces, max_size=8).map(" ".join)))
    def check(text: str) -> None:
        try:
            runs = list(backend.list_runs(filter=text))
        except UsageError:
            return
        assert len(runs) <= 1

    check()
    assert snapshot(store_dir) == before


def test_failed_finish_keeps_the_previous_table(backend: LocalBackend, store_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    df = examples_frame(10)
    ref = backend.write_run(make_record("a", examples=df))
    before = snapshot(store_dir)

    def failing_insert(*args: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(LocalBackend, "_insert", failing_insert)
    with pytest.raises(StoreError):
        backend.finish_run(ref, "finished", make_record("b", examples=examples_frame(3, seed=9)))
    monkeypatch.undo()
    assert snapshot(store_dir) == before  # old table back in place, no temp/backup files
    got = backend.read_run(ref)
    assert got.name == "a"
    pd.testing.assert_frame_equal(got.examples, df)


def test_stale_temp_files_of_a_killed_writer_are_swept(store_dir: Path) -> None:
    ex = store_dir / "examples"
    ex.mkdir(parents=True)
    old_tmp, old_bak, fresh = ex / ".tmp-dead.parquet", ex / ".bak-dead.parquet", \
        ex / ".tmp-inflight.parquet"
    for p in (old_tmp, old_bak, fresh):
        p.write_bytes(b"partial")
    for p in (old_tmp, old_bak):
        os.utime(p, (1_000_000_000, 1_000_000_000))
    with LocalBackend(BackendOptions(store=str(store_dir))) as b:
        ref = b.write_run(make_record(examples=examples_frame(3)))
    assert sorted(p.name for p in ex.iterdir()) == sorted(
        [".tmp-inflight.parquet", f"{ref.split(':')[1]}.parquet"])


def test_row_numbers_are_not_stored_a_named_index_is(backend: LocalBackend) -> None:
    """A gapped row index (rows dropped by --drop-bad-rows) came back as the index of the
    stored table, where MLflow and W&B give 0..n-1."""
    df = pd.DataFrame({"example_id": ["a", "b", "c"], "label": [1, 0, 1]}, index=[0, 4, 9])
    got = backend.read_run(backend.write_run(make_record("gaps", examples=df))).examples
    assert got is not None and list(got.index) == [0, 1, 2]
    assert got.reset_index(drop=True).equals(df.reset_index(drop=True))
    named = df.set_index("example_id")
    got = backend.read_run(backend.write_run(make_record("named", examples=named))).examples
    assert got is not None and got.index.name == "example_id" and list(got.index) == list("abc")
