"""The embedded store: SQLite for runs, metrics and series, Parquet for per-example tables.

A built-in plugin registered through ``aipm_register_backends`` like any other (scheme
``local``). The store lives in ``options.store``, ``$AIPM_STORE`` or ``./.aipm``::

    aipm.db                    SQLite (WAL): runs, metrics, history, tags, schema_migrations
    examples/<run_id>.parquet  one per-example table per run that has one

It is created on the first write, never by a read; a store path that is not a directory,
an ``aipm.db`` that is not a file, an SQLite database that is not an aipm store, or one
written by a newer aipm-tracking (schema unknown here: read with a warning, never written)
is a StoreError, never an empty store. A run whose stored record is unreadable is a
StoreError naming it and the file; a listing skips it with one warning. Every write first
removes the temp/backup tables a killed writer left (older than an hour, so never a live
writer's). Writes are atomic from a reader's view:
the Parquet file is written to a temporary name and moved into place under the database's
write lock, inside the one transaction that inserts the run; if that transaction fails the
file is removed, so a reader sees a run complete or not at all (a copied run's series,
``write_run(..., history=points)``, go in that transaction too). Run ids are checked against
:data:`~aipm_tracking.refs.RUN_ID_RE` before they reach a path or a query, and every query
is parameterised. Importing this module is cheap: pandas and pyarrow load on first use.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
import shutil
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import AipmWarning, DataError, RunNotFoundError, StoreError, UsageError
from ..hookspecs import hookimpl
from ..redact import redact_config
from ..refs import validate_run_id
from ..schema import RUN_STATUSES, MetricPoint, RunRecord, utc_now
from . import local_db
from .base import SOURCE_TAG, BackendOptions, BaseBackend

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import pyarrow as pa

SCHEME = "local"
#: (key, value, step, timestamp) types sqlite3 binds as they are
_PLAIN_POINT = {(str, v, int, t) for v in (float, int, type(None)) for t in (float, int)}
DB_NAME = "aipm.db"
#: Key of a stored record naming its infinite metrics (strict JSON holds them as null).
_INFINITE = "infinite_metrics"
EXAMPLES_DIR = "examples"
_INSERT_POINT = ("INSERT OR REPLACE INTO history (run_id, key, step, value, ts) "
                 "VALUES (?, ?, ?, ?, ?)")


@hookimpl
def aipm_register_backends(register: Callable[[str, Any], None]) -> None:
    """Register the embedded store under the ``local`` scheme."""
    register(SCHEME, LocalBackend)


def new_run_id() -> str:
    """A fresh id: compact UTC timestamp + 12 random hex digits (sortable, RUN_ID_RE-valid)."""
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(6)}"


def _to_arrow(df: Any) -> pa.Table:
    """Per-example DataFrame -> Arrow table, or a DataError naming the offending column."""
    import pandas as pd
    import pyarrow as pa

    if not isinstance(df, pd.DataFrame):
        raise DataError(f"per-example table must be a pandas DataFrame, got {type(df).__name__}")
    names = list(df.columns)
    bad = [c for c in names if not isinstance(c, str)]
    if bad:
        raise DataError(f"per-example table column names must be strings, got {bad[0]!r}")
    dups = sorted({c for c in names if names.count(c) > 1})
    if dups:
        raise DataError(f"per-example table has duplicate column '{dups[0]}'")
    try:
        # an unnamed index is row numbers (gapped after --drop-bad-rows): not stored, as the
        # MLflow and W&B backends do not store it; a named index is data and is kept
        keep_index = None if any(n is not None for n in df.index.names) else False
        return pa.Table.from_pandas(df, preserve_index=keep_index)
    except (pa.ArrowException, TypeError, ValueError) as e:
        for col in names:
            try:
                pa.array(df[col], from_pandas=True)
            except (pa.ArrowException, TypeError, ValueError) as ce:
                kinds = sorted({type(v).__name__ for v in df[col].dropna()})
                raise DataError(f"per-example table column '{col}' cannot be stored as "
                                f"Parquet (value types {', '.join(kinds)}): {ce}") from None
        raise DataError(f"per-example table cannot be stored as Parquet: {e}") from None


class LocalBackend(BaseBackend):
    """The embedded store (see the module docstring). Safe to share between threads."""

    scheme = SCHEME

    def __init__(self, options: BackendOptions | None = None) -> None:
        options = options or BackendOptions()
        raw = options.store or os.environ.get("AIPM_STORE") or ".aipm"
        self.root = Path(raw).expanduser().absolute()
        self.db_path = self.root / DB_NAME
        self.examples_dir = self.root / EXAMPLES_DIR
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._inherited: list[sqlite3.Connection] = []  # a forked parent's; never touched
        self._warned: set[str] = set()  # run ids / conditions already warned about

    def __repr__(self) -> str:
        return f"LocalBackend({str(self.root)!r})"

    # -- plumbing --------------------------------------------------------------------
    def _db(self, create: bool, *, write: bool = False) -> sqlite3.Connection | None:
        """The process's connection; None when the store has no database and not ``create``.

        ``create`` (a new run) or ``write``: a StoreError if a newer aipm-tracking wrote the
        store (its schema is unknown here); a read of such a store warns once.
        """
        with self._lock:
            if self._conn is not None and self._pid != os.getpid():
                self._inherited.append(self._conn)  # closing it in a child could hurt the parent
                self._conn = None
            if self._conn is None:
                writing = create or write
                local_db.check_layout(self.db_path, writing, db=False)
                if create:
                    try:
                        self.examples_dir.mkdir(parents=True, exist_ok=True)
                    except OSError as e:
                        raise StoreError(f"cannot write the aipm store at {self.root}: "
                                         f"{e.strerror or e}") from None
                if not local_db.check_layout(self.db_path, writing) and not create:
                    return None
                self._conn = local_db.connect(self.db_path)
                self._pid = os.getpid()
                if not writing:
                    self._warn_if_newer(self._conn)
            if create or write:
                try:
                    version = local_db.schema_version(self._conn)
                except sqlite3.Error as e:
                    raise self._sql_error(e) from None
                if version > local_db.LATEST_VERSION:
                    raise local_db.newer_schema_error(self.db_path, version)
            return self._conn

    def _warn_if_newer(self, conn: sqlite3.Connection) -> None:
        try:
            version = local_db.schema_version(conn)
        except sqlite3.Error as e:
            raise self._sql_error(e) from None
        if version > local_db.LATEST_VERSION and "<schema>" not in self._warned:
            self._warned.add("<schema>")
            warnings.warn(f"{local_db.newer_schema_error(self.db_path, version)}; reading it "
                          f"as schema {local_db.LATEST_VERSION}", AipmWarning, stacklevel=4)

    def _sweep_temp_files(self, max_age_s: float = 3600.0) -> None:
        """Remove temp/backup tables a killed writer left behind (older than ``max_age_s``,
        so a concurrent writer's are never touched). One directory scan; stats only the
        ``.tmp-``/``.bak-`` files."""
        cutoff = time.time() - max_age_s
        try:
            with os.scandir(self.examples_dir) as it:
                for entry in it:
                    name = entry.name
                    if name.startswith((".tmp-", ".bak-")) and name.endswith(".parquet"):
                        try:
                            if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                                os.unlink(entry.path)
                        except FileNotFoundError:  # another writer's sweep took it
                            pass
        except OSError:  # best effort: a sweep never fails a write
            pass

    def close(self) -> None:
        """Close this process's connection (reopened on next use)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> LocalBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run_id_of(self, locator: str) -> str:
        """``local:ID`` or ``ID`` -> validated ID (before any path or query)."""
        if isinstance(locator, str) and locator.startswith(f"{SCHEME}:"):
            locator = locator[len(SCHEME) + 1:]
        return validate_run_id(locator)

    def examples_path(self, run_id: str) -> Path:
        """Where a run's per-example table lives (the id is validated first)."""
        validate_run_id(run_id)
        path = self.examples_dir / f"{run_id}.parquet"
        if path.parent != self.examples_dir:  # pragma: no cover - RUN_ID_RE forbids it
            raise StoreError(f"run id {run_id!r} escapes the store")
        return path

    def _not_found(self, run_id: str) -> RunNotFoundError:
        return RunNotFoundError(f"no run '{run_id}' in store {self.root}")

    def _sql_error(self, e: sqlite3.Error) -> StoreError:
        return local_db.store_error(e, self.db_path)

    @staticmethod
    def _exists(conn: sqlite3.Connection, run_id: str) -> bool:
        return conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is not None

    # -- writing runs ----------------------------------------------------------------
    def _prepare(self, record: RunRecord, status: str) -> dict[str, Any]:
        """Validate a record and build its JSON dict (no side effects)."""
        if not isinstance(record, RunRecord):
            raise UsageError(f"expected a RunRecord, got {type(record).__name__}")
        if record.run_id:
            validate_run_id(record.run_id)
        if status not in RUN_STATUSES:
            raise UsageError(f"unknown run status {status!r} (one of {', '.join(RUN_STATUSES)})")
        rec = dataclasses.replace(record, config=redact_config(dict(record.config)),
                                  status=status, examples=None)
        d = local_db.jsonable(rec.to_dict(), "record")
        d["has_examples"] = record.examples is not None
        # strict JSON writes ±inf as null: keep which were infinite (a diverged loss)
        inf = {k: ("inf" if mv.value > 0 else "-inf") for k, mv in record.metrics.items()
               if math.isinf(mv.value)}
        if inf:
            d[_INFINITE] = inf
        return d

    def _write_tmp(self, table: pa.Table) -> Path:
        import pyarrow.parquet as pq

        tmp = self.examples_dir / f".tmp-{secrets.token_hex(8)}.parquet"
        try:
            pq.write_table(table, tmp)
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            if isinstance(e, OSError):
                raise StoreError(f"cannot write the aipm store at {self.root}: "
                                 f"{e.strerror or e}") from None
            raise
        return tmp

    def _insert(self, conn: sqlite3.Connection, d: dict[str, Any], record: RunRecord) -> None:
        """Insert/replace a run's rows (inside the caller's transaction)."""
        run_id, model, finite = d["run_id"], d["model"], local_db.finite
        conn.execute(
            "INSERT INTO runs (run_id, name, model_name, model_version, dataset, "
            "created_at, created_ts, finished_at, status, guardrails_hash, record, has_examples) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (run_id) DO UPDATE SET name = excluded.name, "  # never a DELETE:
            "model_name = excluded.model_name, model_version = excluded.model_version, "
            "dataset = excluded.dataset, created_at = excluded.created_at, "  # it would
            "created_ts = excluded.created_ts, finished_at = excluded.finished_at, "  # cascade
            "status = excluded.status, guardrails_hash = excluded.guardrails_hash, "
            "record = excluded.record, has_examples = excluded.has_examples",
            (run_id, d["name"], model["name"], model["version"], json.dumps(d["dataset"]),
             d["created_at"], local_db.created_ts(d["created_at"]), d["finished_at"], d["status"],
             d["guardrails_hash"], json.dumps(d, allow_nan=False), int(d["has_examples"])))
        conn.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
        conn.executemany(
            "INSERT INTO metrics (run_id, name, value, ci_lo, ci_hi, n) VALUES (?, ?, ?, ?, ?, ?)",
            [(run_id, str(k), mv.value if math.isinf(mv.value) else finite(mv.value),
              finite(mv.ci[0]) if mv.ci else None,
              finite(mv.ci[1]) if mv.ci else None, int(mv.n) if mv.n is not None else None)
             for k, mv in record.metrics.items()])
        conn.execute("DELETE FROM tags WHERE run_id = ?", (run_id,))
        conn.executemany("INSERT INTO tags (run_id, key, value) VALUES (?, ?, ?)",
                         [(run_id, str(k), str(v)) for k, v in record.tags.items()])

    def _find_copy(self, conn: sqlite3.Connection, source_ref: str) -> tuple[str, bool] | None:
        """The newest run tagged ``aipm.source_ref = source_ref`` and whether it has series
        points; None when the store holds no copy of that run."""
        row = conn.execute(
            "SELECT r.run_id, EXISTS (SELECT 1 FROM history h WHERE h.run_id = r.run_id) "
            "FROM tags t JOIN runs r ON r.run_id = t.run_id "
            "WHERE t.key = ? AND t.value = ? ORDER BY r.created_ts DESC, r.rowid DESC LIMIT 1",
            (SOURCE_TAG, source_ref)).fetchone()
        return None if row is None else (str(row[0]), bool(row[1]))

    def _store(self, record: RunRecord, status: str, *, existing: str | None = None,
               history: Sequence[MetricPoint] | None = None,
               source_ref: str | None = None) -> str:
        """Write a run atomically; ``existing`` replaces that run (keeping id and created_at).

        ``history``: series points stored in the same transaction. ``source_ref``: the run
        is a copy of that run; a copy already in the store is returned instead (nothing is
        written), except one without series points while ``history`` has some (a copy made
        before series were copied), which is completed in place (same id).
        """
        d = self._prepare(record, status)
        # a bad table or a bad point fails here, before anything touches the store
        table = _to_arrow(record.examples) if record.examples is not None else None
        points = self._point_rows(record.run_id or record.name, history) if history else []
        conn = self._db(create=True)
        assert conn is not None
        if source_ref is not None and existing is None:  # a repeated copy: no table written
            try:
                with self._lock:
                    found = self._find_copy(conn, source_ref)
            except sqlite3.Error as e:
                raise self._sql_error(e) from None
            if found is not None and (found[1] or not points):
                return f"{SCHEME}:{found[0]}"
        self._sweep_temp_files()
        tmp = self._write_tmp(table) if table is not None else None
        final: Path | None = None  # our file in place, to remove if the transaction fails
        backup: tuple[Path, Path] | None = None  # (saved copy, its place): restored on failure
        try:
            with self._lock, local_db.transaction(conn):
                if source_ref is not None and existing is None:  # again, under the lock
                    found = self._find_copy(conn, source_ref)
                    if found is not None and (found[1] or not points):
                        self._cleanup(tmp)
                        return f"{SCHEME}:{found[0]}"  # commits nothing
                    if found is not None:
                        existing = found[0]
                if existing is not None:
                    row = conn.execute("SELECT record FROM runs WHERE run_id = ?",
                                       (existing,)).fetchone()
                    if row is None:
                        raise self._not_found(existing)
                    old = self._record(existing, row[0]).to_dict()
                    run_id = existing
                    d["created_at"] = old.get("created_at") or d["created_at"]
                    if tmp is None:
                        d["has_examples"] = bool(old.get("has_examples"))
                else:
                    run_id = record.run_id or new_run_id()
                    while self._exists(conn, run_id):  # taken: the store picks a fresh id
                        run_id = new_run_id()
                d["run_id"], d["ref"] = run_id, f"{SCHEME}:{run_id}"
                if tmp is not None:
                    path = self.examples_path(run_id)
                    if existing is not None and path.exists():
                        # a second name for the old table: readers keep seeing a file at
                        # `path` (os.replace swaps it atomically), and a failure restores it
                        backup = (path.with_name(f".bak-{secrets.token_hex(8)}.parquet"), path)
                        try:
                            os.link(path, backup[0])
                        except OSError:
                            shutil.copy2(path, backup[0])
                    os.replace(tmp, path)
                    tmp, final = None, path
                self._insert(conn, d, record)
                if points:
                    conn.executemany(_INSERT_POINT, ((run_id, *p[1:]) for p in points))
        except BaseException as e:
            self._cleanup(tmp, final)
            if backup is not None:
                os.replace(*backup)
            if isinstance(e, sqlite3.Error):
                raise self._sql_error(e) from None
            if isinstance(e, OSError):
                raise StoreError(f"cannot write the aipm store at {self.root}: "
                                 f"{e.strerror or e}") from None
            raise
        if backup is not None:
            self._cleanup(backup[0])
        return f"{SCHEME}:{run_id}"

    @staticmethod
    def _cleanup(*paths: Path | None) -> None:
        for p in paths:
            if p is not None:
                p.unlink(missing_ok=True)

    def write_run(self, record: RunRecord, target: str | None = None, *,
                  history: Sequence[MetricPoint] | None = None) -> str:
        """Store a complete run (with its per-example table); return ``local:<id>``.

        A valid ``record.run_id`` not yet in the store is kept; an empty or taken one gets
        a fresh id (see :func:`new_run_id`); an invalid one is an InvalidReferenceError.
        ``history``: the run's series points (as :meth:`log_points` takes them), stored in
        the same transaction as the run (one ``executemany``). A record tagged
        ``aipm.source_ref`` (``aipm push``/``pull``) whose source the store already holds
        a copy of returns that copy (every write is atomic: a copy there is complete); a
        copy made before series were copied (no points) is completed in place, same id.
        """
        source = record.tags.get(SOURCE_TAG) if isinstance(record, RunRecord) else None
        return self._store(record, getattr(record, "status", None) or "finished",
                           history=history, source_ref=str(source) if source else None)

    def start_run(self, record: RunRecord, target: str | None = None) -> str:
        """Create a run in state ``running`` (for the Tracker); return its reference."""
        rec = dataclasses.replace(record, finished_at=None)
        return self._store(rec, "running")

    def finish_run(self, ref: str, status: str = "finished",
                   record: RunRecord | None = None) -> None:
        """Mark a run ended; with ``record``, also replace its summary, details and tags."""
        run_id = self._run_id_of(ref)
        if status not in RUN_STATUSES:
            raise UsageError(f"unknown run status {status!r} (one of {', '.join(RUN_STATUSES)})")
        if self._db(create=False, write=True) is None:
            raise self._not_found(run_id)
        if record is None:
            record = self.read_run(run_id, with_examples=False)
        rec = dataclasses.replace(record, run_id=run_id,
                                  finished_at=record.finished_at or utc_now())
        self._store(rec, status, existing=run_id)

    # -- reading ---------------------------------------------------------------------
    def _record(self, run_id: str, text: str) -> RunRecord:
        """A stored record; StoreError naming the run and the file when it is unreadable."""
        try:
            if not isinstance(text, str):
                raise DataError(f"the record is a {type(text).__name__}, not JSON text")
            d = json.loads(text)
            rec = RunRecord.from_dict(d)
            inf = d.get(_INFINITE)
            if inf is not None and not isinstance(inf, dict):
                raise DataError(f"{_INFINITE} holds a {type(inf).__name__}, expected an object")
            for k, sign in (inf or {}).items():
                if sign not in ("inf", "-inf"):
                    raise DataError(f"{_INFINITE}.{k} is {sign!r}, expected 'inf' or '-inf'")
                if k in rec.metrics:
                    rec.metrics[k] = dataclasses.replace(rec.metrics[k], value=float(sign))
        except (DataError, ValueError, KeyError, TypeError, AttributeError,
                RecursionError) as e:
            raise StoreError(f"run '{run_id}' in {self.db_path} has an unreadable record: "
                             f"{e}") from None
        rec.run_id, rec.ref = run_id, f"{SCHEME}:{run_id}"
        return rec

    def read_examples(self, run_id: str) -> pd.DataFrame:
        """A run's per-example table; DataError naming the file if missing or corrupt."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = self.examples_path(run_id)
        try:
            return pq.read_table(path).to_pandas()
        except FileNotFoundError:
            raise DataError(f"per-example table of run '{run_id}' is missing: {path}") from None
        except (OSError, ValueError, pa.ArrowException) as e:
            raise DataError(f"cannot read the per-example table {path}: {e}") from None

    def read_run(self, locator: str, *, with_examples: bool = True) -> RunRecord:
        """Load a run (``ID`` or ``local:ID``); RunNotFoundError if the store lacks it."""
        run_id = self._run_id_of(locator)
        conn = self._db(create=False)
        if conn is None:
            raise self._not_found(run_id)
        try:
            with self._lock:
                row = conn.execute("SELECT record, has_examples FROM runs WHERE run_id = ?",
                                   (run_id,)).fetchone()
        except sqlite3.Error as e:
            raise self._sql_error(e) from None
        if row is None:
            raise self._not_found(run_id)
        rec = self._record(run_id, row[0])
        rec.examples_stored = bool(row[1])
        if with_examples and row[1]:
            rec.examples = self.read_examples(run_id)
        return rec

    def list_runs(self, target: str | None = None, *, filter: str | None = None,
                  limit: int | None = None) -> Iterator[RunRecord]:
        """Runs newest first, without per-example tables.

        ``filter``: clauses ``FIELD OP VALUE`` joined by ``and``; fields ``metrics.NAME``,
        ``tags.KEY``, ``model``, ``model_version``, ``name``, ``status``, ``dataset`` ...
        (see :func:`~aipm_tracking.backends.local_db.compile_filter`). ``target`` is
        ignored: the embedded store has a single namespace.
        """
        where, params = local_db.compile_filter(filter)
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise UsageError(f"limit must be a non-negative integer, got {limit!r}")
        conn = self._db(create=False)
        if conn is None:
            return iter(())
        sql = (f"SELECT run_id, record FROM runs WHERE {where} "
               "ORDER BY created_ts DESC, rowid DESC LIMIT ? OFFSET ?")
        out: list[RunRecord] = []
        bad: list[str] = []
        offset, want = 0, -1 if limit is None else limit
        try:
            with self._lock:
                while True:  # more pages only when unreadable rows fell within the limit
                    rows = conn.execute(sql, [*params, want, offset]).fetchall()
                    for rid, text in rows:
                        try:
                            out.append(self._record(rid, text))
                        except StoreError:  # one bad row must not hide the whole store
                            bad.append(rid)
                    if limit is None or len(out) >= limit or len(rows) < want:
                        break
                    offset, want = offset + len(rows), limit - len(out)
        except sqlite3.Error as e:
            raise self._sql_error(e) from None
        self._warn_unreadable(bad)
        return iter(out)

    def _warn_unreadable(self, run_ids: Sequence[str]) -> None:
        """One warning naming the runs a listing skipped (each run once per backend)."""
        new = [r for r in dict.fromkeys(run_ids) if r not in self._warned]
        if not new:
            return
        self._warned.update(new)
        shown = ", ".join(new[:10]) + (f" and {len(new) - 10} more" if len(new) > 10 else "")
        warnings.warn(f"skipped {len(new)} run(s) with an unreadable record in "
                      f"{self.db_path}: {shown} ('aipm runs show ID' says why)",
                      AipmWarning, stacklevel=3)

    # -- series ----------------------------------------------------------------------
    def log_points(self, ref: str, points: Sequence[MetricPoint]) -> None:
        """Append points in one transaction (one ``executemany``).

        A point with the key, step and timestamp of a stored one replaces it (idempotent
        replay). NaN values are stored as NULL and read back as NaN; numpy scalars are
        converted; anything else that is not a number is a UsageError naming the point.
        """
        run_id = self._run_id_of(ref)
        if not points:
            return
        conn = self._db(create=False, write=True)
        if conn is None:
            raise self._not_found(run_id)
        rows = self._point_rows(run_id, points)
        try:
            with self._lock, local_db.transaction(conn):
                if not self._exists(conn, run_id):
                    raise self._not_found(run_id)
                conn.executemany(_INSERT_POINT, rows)
        except sqlite3.Error as e:
            raise self._sql_error(e) from None

    def _point_rows(self, run_id: str, points: Sequence[Any]) -> list[tuple[Any, ...]]:
        """``(run_id, key, step, value, ts)`` rows of points; a UsageError names a bad one."""
        # sqlite3 binds numpy scalars as BLOBs (buffer protocol): take the fast path only when
        # every point has plain Python types (one C-speed pass), else convert point by point.
        try:
            plain = {(type(p[0]), type(p[1]), type(p[2]), type(p[3])) for p in points}
        except (TypeError, IndexError, KeyError):
            plain = set()
        if plain and plain <= _PLAIN_POINT and "" not in {p[0] for p in points}:
            return [(run_id, p[0], p[2], p[1], p[3]) for p in points]
        return self._coerce_points(run_id, points)

    @staticmethod
    def _coerce_points(run_id: str, points: Sequence[Any]) -> list[tuple[Any, ...]]:
        rows = []
        for i, p in enumerate(points):
            try:
                key, value, step, ts = p
                if not isinstance(key, str) or not key:
                    raise TypeError("key must be a non-empty string")
                row = (run_id, key, local_db.as_step(step), None if value is None else float(value),
                       float(ts))
            except (TypeError, ValueError) as e:
                raise UsageError(f"point {i} of run '{run_id}' is not "
                                 f"(key, value, step, timestamp): {p!r} ({e})") from None
            rows.append(row)
        return rows

    def _history_query(self, run_id: str, keys: Sequence[str] | None
                       ) -> tuple[str, list[Any]] | None:
        """SQL and parameters of a run's points (``key, value, step, ts``), or None when
        ``keys`` is empty (no points asked for)."""
        sql = "SELECT key, value, step, ts FROM history WHERE run_id = ?"
        params: list[Any] = [run_id]
        if keys is not None:
            keys = [str(k) for k in keys]
            if not keys:
                return None
            sql += f" AND key IN ({', '.join('?' * len(keys))})"
            params += keys
        # as the MLflow and W&B backends order them. The table is clustered on
        # (run_id, key, step, ts), so SQLite sorts: its sorter spills to a temporary file
        # beyond its cache, so memory stays bounded (3M points: 3 s, 20 MB).
        return sql + " ORDER BY step, key, ts", params

    def read_history(self, locator: str, keys: Sequence[str] | None = None) -> list[MetricPoint]:
        """Logged points ordered by step, then key (then timestamp)."""
        run_id = self._run_id_of(locator)
        conn = self._db(create=False)
        if conn is None:
            raise self._not_found(run_id)
        query = self._history_query(run_id, keys)
        if query is None:
            return []
        try:
            with self._lock:
                if not self._exists(conn, run_id):
                    raise self._not_found(run_id)
                rows = conn.execute(*query).fetchall()
        except sqlite3.Error as e:
            raise self._sql_error(e) from None
        make = MetricPoint._make  # C speed: a MetricPoint(...) call per row costs 2 us
        return [make(r) if r[1] is not None else MetricPoint(r[0], math.nan, r[2], r[3])
                for r in rows]

    def iter_history(self, locator: str, keys: Sequence[str] | None = None, *,
                     chunk_size: int = 10_000) -> Iterator[list[tuple[str, float, int, float]]]:
        """:meth:`read_history`'s points, streamed: lists of at most ``chunk_size``
        ``(key, value, step, timestamp)`` tuples (MetricPoint's fields; NaN for a NaN
        value), in the same order, read from one snapshot of the store.

        Memory stays bounded whatever the run's length (``aipm runs history`` streams
        through it). A missing run is a RunNotFoundError when this is called, not when the
        first chunk is read. The points are read through a connection of their own, so a
        Tracker writing through this backend is not held up while they are consumed.
        """
        run_id = self._run_id_of(locator)
        if self._db(create=False) is None:
            raise self._not_found(run_id)
        query = self._history_query(run_id, keys)
        try:
            reader = sqlite3.connect(str(self.db_path), timeout=local_db.BUSY_TIMEOUT_S,
                                     isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise self._sql_error(e) from None
        try:
            reader.execute("BEGIN")  # one read snapshot (WAL) for the existence check and rows
            if not self._exists(reader, run_id):
                raise self._not_found(run_id)
            cursor = reader.execute(*query) if query is not None else None
        except BaseException as e:
            reader.close()
            if isinstance(e, sqlite3.Error):
                raise self._sql_error(e) from None
            raise
        return self._history_chunks(reader, cursor, chunk_size)

    def _history_chunks(self, reader: sqlite3.Connection, cursor: sqlite3.Cursor | None,
                        chunk_size: int) -> Iterator[list[tuple[str, float, int, float]]]:
        nan = math.nan
        try:
            while cursor is not None:
                rows = cursor.fetchmany(chunk_size)
                if not rows:
                    break
                yield [r if r[1] is not None else (r[0], nan, r[2], r[3]) for r in rows]
        except sqlite3.Error as e:
            raise self._sql_error(e) from None
        finally:
            reader.close()
