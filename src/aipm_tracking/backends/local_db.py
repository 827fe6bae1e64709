"""SQLite plumbing of the embedded store: connection, migrations, transactions, filters.

The store's database ``aipm.db`` runs in WAL mode (readers never block the one writer),
with a 30 s busy timeout (concurrent writers from several processes queue instead of
failing) and foreign keys on. Schema changes are *migrations*: an ordered list of
``(version, name, statements)``; each pending one is applied inside one ``BEGIN IMMEDIATE``
transaction together with its row in ``schema_migrations``, so two processes opening a
fresh store at once apply it exactly once. Future migrations are appended to
:data:`MIGRATIONS`, never edited. Before anything is written (WAL mode rewrites the file
header) :func:`check_store` makes sure the database is empty or an aipm store: an unrelated
SQLite file is a StoreError and is left byte for byte as it was. A store whose schema is
newer than :data:`LATEST_VERSION` is not migrated (the backend refuses to write it).

``history`` is a ``WITHOUT ROWID`` table clustered on ``(run_id, key, step, ts)``: one
b-tree instead of a table plus an index (half the bytes per point, faster appends), and a
point replayed with the same key, step and timestamp (a spool re-sent by ``aipm sync``)
replaces itself instead of appearing twice.

:func:`compile_filter` turns the small ``list_runs`` filter language
(``metrics.accuracy > 0.9 and model = "bot"``) into a parameterised SQL condition: values
become ``?`` parameters and column names come from a fixed whitelist, never from the text.
The small value helpers at the end (``jsonable``, ``finite``, ``as_step``, ``created_ts``)
shape what goes into a row.
"""

from __future__ import annotations

import math
import operator
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import DataError, StoreError, UsageError
from ..schema import utc_now

BUSY_TIMEOUT_S = 30.0

#: Ordered schema migrations: (version, name, statements). Append only.
MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (1, "initial schema", (
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            model_name TEXT NOT NULL,
            model_version TEXT NOT NULL,
            dataset TEXT NOT NULL,
            created_at TEXT NOT NULL,
            created_ts REAL NOT NULL,
            finished_at TEXT,
            status TEXT NOT NULL,
            guardrails_hash TEXT,
            record TEXT NOT NULL,
            has_examples INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX runs_created ON runs (created_ts)",
        "CREATE INDEX runs_model ON runs (model_name, model_version)",
        """CREATE TABLE metrics (
            run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            value REAL,
            ci_lo REAL,
            ci_hi REAL,
            n INTEGER,
            PRIMARY KEY (run_id, name)
        )""",
        "CREATE INDEX metrics_name_value ON metrics (name, value)",
        """CREATE TABLE history (
            run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            step INTEGER NOT NULL,
            value REAL,
            ts REAL NOT NULL,
            PRIMARY KEY (run_id, key, step, ts)
        ) WITHOUT ROWID""",
        """CREATE TABLE tags (
            run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (run_id, key)
        )""",
        "CREATE INDEX tags_key_value ON tags (key, value)",
    )),
)
LATEST_VERSION = MIGRATIONS[-1][0]


def store_error(e: BaseException, db_path: Path) -> StoreError:
    """Map an sqlite3/OS error to one clear :class:`StoreError` line naming the file/dir."""
    msg = str(e)
    low = msg.lower()
    root = db_path.parent
    if isinstance(e, OSError):
        return StoreError(f"cannot write the aipm store at {root}: {e.strerror or e}")
    if "not a database" in low or "malformed" in low or "corrupt" in low:
        return StoreError(f"the aipm store database {db_path} is corrupt or not an SQLite "
                          f"database ({msg})")
    if "unable to open" in low or "readonly" in low or "read-only" in low:
        why = "Permission denied" if not os.access(root, os.W_OK) else msg
        return StoreError(f"cannot write the aipm store at {root}: {why}")
    if "locked" in low or "busy" in low:
        return StoreError(f"the aipm store {db_path} is busy: locked by another process "
                          f"(waited up to {BUSY_TIMEOUT_S:.0f} s: {msg})")
    return StoreError(f"aipm store {db_path}: {msg}")


def check_layout(db_path: Path, writing: bool, *, db: bool = True) -> bool:
    """Whether the store has its database file. A StoreError when the store path is not a
    directory or (``db``) its ``aipm.db`` is there but not a file: never an empty store."""
    root = db_path.parent

    def error(read_msg: str, write_why: str) -> StoreError:
        return StoreError(f"cannot write the aipm store at {root}: {write_why}" if writing
                          else read_msg)

    try:
        if root.exists() and not root.is_dir():
            raise error(f"store {root} is not a directory", "it is not a directory")
        if not db:
            return False
        if db_path.is_file():
            return True
        if db_path.exists():
            msg = f"{db_path} is not a database file"
            raise error(msg, msg)
    except OSError as e:
        why = e.strerror or str(e)
        raise error(f"cannot read the aipm store at {root}: {why}", why) from None
    return False


def connect(db_path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the store database, set pragmas, apply migrations."""
    try:
        conn = sqlite3.connect(str(db_path), timeout=BUSY_TIMEOUT_S, isolation_level=None,
                               check_same_thread=False)
    except sqlite3.Error as e:
        raise store_error(e, db_path) from None
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            # before anything writes (WAL mode rewrites the file header): never touch a
            # database that is not an aipm store
            check_store(conn, db_path)
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            conn.execute("PRAGMA synchronous = NORMAL")  # safe in WAL mode: no corruption
            conn.execute("PRAGMA foreign_keys = ON")
            migrate(conn)
            return conn
        except StoreError:
            conn.close()
            raise
        except sqlite3.OperationalError as e:
            # two processes creating the store at once: switching a new database to WAL
            # answers "database is locked" at once, without SQLite's busy wait: wait here
            if "locked" in str(e).lower() and time.monotonic() < deadline:
                time.sleep(0.02)
                continue
            conn.close()
            raise store_error(e, db_path) from None
        except sqlite3.Error as e:
            conn.close()
            raise store_error(e, db_path) from None


#: the columns an aipm store's bookkeeping tables have in every schema version
_SIGNATURE = {"schema_migrations": {"version", "name", "applied_at"},
              "runs": {"run_id", "record"}}


def check_store(conn: sqlite3.Connection, db_path: Path) -> int:
    """The store's schema version (0: an empty database, a new store); a StoreError when
    the database holds tables but is not an aipm store. Reads only."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
              if not str(r[0]).startswith("sqlite_")}
    if not tables:
        return 0
    for table, needed in _SIGNATURE.items():
        cols = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")} if table in tables \
            else set()
        if not needed <= cols:
            shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise StoreError(f"{db_path} is not an aipm store (an SQLite database with other "
                             f"tables: {shown}); point --store or AIPM_STORE elsewhere")
    try:
        return schema_version(conn)
    except (TypeError, ValueError):
        raise StoreError(f"{db_path} is not an aipm store (its schema_migrations table "
                         f"holds no version numbers)") from None


def newer_schema_error(db_path: Path, version: int) -> StoreError:
    return StoreError(f"store {db_path.parent} was written by a newer aipm-tracking "
                      f"(schema {version} > {LATEST_VERSION}): upgrade aipm-tracking to "
                      f"write to it")


def schema_version(conn: sqlite3.Connection) -> int:
    """Highest applied migration (0 for a new database)."""
    row = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                       "AND name = 'schema_migrations'").fetchone()
    if row is None:
        return 0
    return int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
               .fetchone()[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations, each in the same transaction as its bookkeeping row.

    Returns the number applied. Cheap when up to date (one read, no write lock).
    """
    if schema_version(conn) >= LATEST_VERSION:
        return 0
    applied = 0
    with transaction(conn):
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                     "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
        current = schema_version(conn)  # re-read under the write lock
        for version, name, statements in MIGRATIONS:
            if version <= current:
                continue
            for stmt in statements:
                conn.execute(stmt)
            conn.execute("INSERT INTO schema_migrations (version, name, applied_at) "
                         "VALUES (?, ?, ?)", (version, name, utc_now()))
            applied += 1
    return applied


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:  # pragma: no cover - the original error matters more
                pass
        raise


# -- the list_runs filter language ------------------------------------------------------

#: filter field -> SQL expression over ``runs`` (a fixed whitelist, never user text)
COLUMN_FIELDS: dict[str, str] = {
    "model": "runs.model_name",
    "model_name": "runs.model_name",
    "model_version": "runs.model_version",
    "name": "runs.name",
    "status": "runs.status",
    "run_id": "runs.run_id",
    "guardrails_hash": "runs.guardrails_hash",
    "created_at": "runs.created_at",
    "finished_at": "runs.finished_at",
    "dataset": "json_extract(runs.dataset, '$.name')",
    "dataset.name": "json_extract(runs.dataset, '$.name')",
    "dataset.version": "json_extract(runs.dataset, '$.version')",
}
_OPS = {"=": "=", "==": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_QUOTED = r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\''
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?![\w.\-])"
_CLAUSE_RE = re.compile(
    r"\s*(?P<field>(?:metrics|tags)\.(?:" + _QUOTED + r"|[A-Za-z0-9_][\w./\-]*(?:\[[^\]]*\])?)"
    r"|[A-Za-z_][\w.]*)"
    r"\s*(?P<op>==|!=|<=|>=|=|<|>)"
    r"\s*(?P<value>" + _QUOTED + "|" + _NUMBER + r"|[A-Za-z0-9_][\w.:\-]*)\s*"
)
_AND_RE = re.compile(r"and\s+", re.I)
FILTER_HELP = ('expected FIELD OP VALUE joined by "and", e.g. metrics.accuracy > 0.9 and '
               'model = "bot"; fields: metrics.NAME, tags.KEY, ' + ", ".join(COLUMN_FIELDS)
               + "; operators: = != < <= > >=")


#: compared as ISO-8601 text even with a bare number (``created_at >= 2024`` = a prefix)
_TIME_FIELDS = frozenset({"created_at", "finished_at"})
_NUMBER_RE = re.compile(_NUMBER)


def _is_number(raw: str, quoted: bool) -> bool:
    """An unquoted numeric literal (``150``, ``-0.5``, ``1e3``): compare numerically."""
    return not quoted and _NUMBER_RE.fullmatch(raw) is not None


def _compare(expr: str, op: str, value: str, numeric: bool) -> tuple[str, Any]:
    """SQL for ``expr op ?`` (``expr`` and ``op`` come from fixed whitelists) and its argument.

    Numeric: only rows whose text is a well-formed number match (``CAST(x AS NUMERIC) = x``
    holds just for those, by SQLite's comparison affinity), compared as REAL; so
    ``model_version > 150`` does not match ``"2"`` < ``"150"`` as text, nor ``"beta"``.
    """
    if not numeric:
        return f"{expr} {op} ?", value
    return f"(CAST({expr} AS NUMERIC) = {expr} AND CAST({expr} AS REAL) {op} ?)", float(value)


def _unquote(text: str) -> tuple[str, bool]:
    """``"a\\"b"`` -> (``a"b``, True); a bare token -> (token, False)."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return re.sub(r"\\(.)", r"\1", text[1:-1]), True
    return text, False


def compile_filter(text: str | None) -> tuple[str, list[Any]]:
    """Filter text -> (SQL condition over ``runs``, parameters). Empty text -> ("1", [])."""
    if text is None or not text.strip():
        return "1", []
    pos, conds, params = 0, [], []  # type: ignore[var-annotated]
    while True:
        m = _CLAUSE_RE.match(text, pos)
        if m is None:
            raise UsageError(f"cannot read filter {text!r} at position {pos}: {FILTER_HELP}")
        field, op, raw = m.group("field"), _OPS[m.group("op")], m.group("value")
        value, quoted = _unquote(raw)
        if field.startswith("metrics."):
            name, _ = _unquote(field[len("metrics."):])
            if quoted:
                raise UsageError(f"filter {text!r}: {field} compares with a number, got {raw}")
            try:
                number = float(value)
            except ValueError:
                raise UsageError(f"filter {text!r}: {field} compares with a number, "
                                 f"got {raw}") from None
            conds.append("EXISTS (SELECT 1 FROM metrics m WHERE m.run_id = runs.run_id "
                         f"AND m.name = ? AND m.value {op} ?)")
            params += [name, number]
        elif field.startswith("tags."):
            key, _ = _unquote(field[len("tags."):])
            cond, arg = _compare("t.value", op, value, numeric=_is_number(raw, quoted))
            conds.append("EXISTS (SELECT 1 FROM tags t WHERE t.run_id = runs.run_id "
                         f"AND t.key = ? AND {cond})")
            params += [key, arg]
        elif field in COLUMN_FIELDS:
            numeric = _is_number(raw, quoted) and field not in _TIME_FIELDS
            expr = COLUMN_FIELDS[field]
            if field == "dataset" and "@" in value:  # NAME@VERSION, as --dataset takes it
                expr = ("(json_extract(runs.dataset, '$.name') || '@' || "
                        "json_extract(runs.dataset, '$.version'))")
            cond, arg = _compare(expr, op, value, numeric=numeric)
            conds.append(cond)
            params.append(arg)
        else:
            raise UsageError(f"filter {text!r}: unknown field {field!r}; {FILTER_HELP}")
        pos = m.end()
        if pos >= len(text):
            break
        a = _AND_RE.match(text, pos)
        if a is None:
            raise UsageError(f"cannot read filter {text!r} at position {pos}: {FILTER_HELP}")
        pos = a.end()
    return " AND ".join(f"({c})" for c in conds), params


# -- values ---------------------------------------------------------------------------


def created_ts(created_at: str | None) -> float:
    """Sort key for ``created_at`` (ISO-8601); unparsable text sorts as 'now'."""
    if created_at:
        try:
            dt = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=timezone.utc)
            return dt.timestamp()
        except ValueError:
            pass
    return time.time()


def jsonable(value: Any, where: str) -> Any:
    """A JSON-safe copy: numpy scalars/arrays -> Python, NaN/inf -> None; else DataError."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        return jsonable(tolist(), where)
    raise DataError(f"run record key '{where}' holds a {type(value).__name__}, "
                    f"which cannot be stored as JSON")


def finite(x: float | None) -> float | None:
    """``float(x)``, with NaN/inf (and None) as None (SQL NULL)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def as_step(step: Any) -> int:
    """An integer step (numpy ints and integral floats accepted)."""
    try:
        return operator.index(step)
    except TypeError:
        f = float(step)
        if not f.is_integer():
            raise ValueError(f"step must be an integer, got {step!r}") from None
        return int(f)
