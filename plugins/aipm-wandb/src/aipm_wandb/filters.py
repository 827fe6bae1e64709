"""``--filter`` for W&B runs: the core's ``FIELD OP VALUE`` language, on RunRecords.

A filter such as ``metrics.accuracy > 0.9 and model = "bot"`` is compiled by the core
(:func:`aipm_tracking.backends.local_db.compile_filter`: the parser, and the SQL, that the
embedded store runs) and evaluated against each W&B run's RunRecord, loaded into an
in-memory SQLite database with the store's own schema (``local_db.migrate``), row values
shaped as the store shapes them. So a filter means the same for ``local``,
``wandb:./wandb`` and ``wandb:ENTITY/PROJECT``: the same fields (``metrics.NAME``,
``tags.KEY``, ``model``, ``model_version``, ``name``, ``status``, ``dataset``,
``created_at`` ...), numbers compared as numbers, and a filter the core cannot read is a
one-line :class:`UsageError`, never an empty list.

On a server, clauses W&B can apply exactly as aipm does, or more loosely, are also sent
with the request (:meth:`RunFilter.server_filters`) so fewer runs are paged in; every clause
is still checked here, so what the server does with them changes nothing but speed.

Two older forms are kept: text starting with ``{`` is a W&B (MongoDB-style) JSON filter,
sent to the server as it is (``wandb:ENTITY/PROJECT`` only); one word (no spaces) with
none of ``= ! < >`` is a regular expression on the run name (``^bot-``; on a server, W&B's
``display_name``). Anything else goes to the core's parser, which names what it cannot
read.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections.abc import Mapping
from typing import Any

from aipm_tracking.backends import local_db
from aipm_tracking.errors import UsageError
from aipm_tracking.schema import RunRecord

#: a filter expression has a comparison operator (and spaces, mostly); the older name
#: regex form is a single word with neither
_NOT_A_REGEX = re.compile(r"[\s=<>!]")
#: splits an expression into clauses; only used for the server-side hint, and only when
#: every piece is one clause the core reads (so a quoted " and " never splits a value)
_AND_SPLIT = re.compile(r"\s+and\s+", re.I)
#: ``metrics.NAME OP NUMBER`` with a name W&B's filter paths take as one key
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_METRIC_CLAUSE = re.compile(
    r"\s*metrics\.(?P<name>[A-Za-z0-9_][A-Za-z0-9_/\-]*)\s*(?P<op>==|!=|<=|>=|=|<|>)\s*"
    r"(?P<num>" + _NUM + r")\s*")
_STATUS_FINISHED = re.compile(r"""\s*status\s*(?:==|=)\s*(?:"finished"|'finished'|finished)\s*""")
_MONGO_OPS = {"=": "$eq", "==": "$eq", "!=": "$ne", "<": "$lt", "<=": "$lte", ">": "$gt",
              ">=": "$gte"}

FORMS = ('FIELD OP VALUE joined by "and" (e.g. metrics.accuracy > 0.9 and model = "bot"), '
         'a regular expression on the run name (one word: no spaces, no = ! < >), or, on a W&B server, a JSON '
         'filter ({"state": "finished"})')


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


class RunFilter:
    """A parsed ``--filter``: :attr:`mongo` (a JSON filter), :attr:`regex` (a name regex),
    an expression (:attr:`is_expression`, checked by :meth:`matches`), or nothing."""

    def __init__(self, text: str | None) -> None:
        self.text = (text or "").strip()
        self.mongo: dict[str, Any] | None = None
        self.regex: re.Pattern[str] | None = None
        self._where: str | None = None
        self._params: list[Any] = []
        self._conn: sqlite3.Connection | None = None
        if not self.text:
            return
        if self.text.startswith("{"):
            try:
                doc = json.loads(self.text)
            except ValueError as e:
                raise UsageError(f"--filter {self.text!r} starts with '{{' but is not a JSON "
                                 f"(W&B MongoDB-style) filter: {e}") from None
            if not isinstance(doc, dict):
                raise UsageError(f"--filter {self.text!r}: a JSON filter must be an object")
            self.mongo = doc
        elif not _NOT_A_REGEX.search(self.text):
            try:
                self.regex = re.compile(self.text)
            except re.error as e:
                raise UsageError(f"--filter {self.text!r} is one word without a comparison, "
                                 f"so it is read as a regular expression on the run name, "
                                 f"and it is not a valid one ({e}); the forms are: "
                                 f"{FORMS}") from None
        else:
            # the core's parser: a UsageError (one line, with the fields) if it cannot read it
            self._where, self._params = local_db.compile_filter(self.text)

    @property
    def is_expression(self) -> bool:
        return self._where is not None

    def __bool__(self) -> bool:
        return bool(self.text)

    # -- evaluation (the core's SQL over one record) ------------------------------------
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            local_db.migrate(conn)  # the store's tables: runs, metrics, tags ...
            self._conn = conn
        return self._conn

    def matches(self, rec: RunRecord) -> bool:
        """Does ``rec`` pass? An expression is checked with the core's SQL; a name regex
        searches ``rec.name``; a JSON filter (server-side only) and no filter pass all."""
        if self.regex is not None:
            return self.regex.search(rec.name or "") is not None
        if self._where is None:
            return True
        conn = self._db()
        rid = "r"
        for table in ("metrics", "tags", "runs"):
            conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed names
        # the values as LocalBackend._insert stores them
        conn.execute(
            "INSERT INTO runs (run_id, name, model_name, model_version, dataset, created_at, "
            "created_ts, finished_at, status, guardrails_hash, record, has_examples) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (rid, rec.name or "", rec.model.name or "", str(rec.model.version or ""),
             json.dumps(rec.dataset.to_dict(), default=str), rec.created_at or "",
             local_db.created_ts(rec.created_at), rec.finished_at, rec.status or "",
             rec.guardrails_hash, "{}", int(rec.has_examples)))
        conn.executemany("INSERT INTO metrics (run_id, name, value) VALUES (?, ?, ?)",
                         [(rid, str(k), _finite(mv.value)) for k, mv in rec.metrics.items()])
        conn.executemany("INSERT INTO tags (run_id, key, value) VALUES (?, ?, ?)",
                         [(rid, str(k), str(v)) for k, v in rec.tags.items()])
        row = conn.execute(f"SELECT 1 FROM runs WHERE {self._where}",  # noqa: S608 - core SQL
                           self._params).fetchone()
        return row is not None

    # -- what a W&B server can do first ----------------------------------------------------
    def server_filters(self, metric_map: Mapping[str, str] | None = None) -> dict[str, Any] | None:
        """The MongoDB-style filter sent with ``api.runs``, or None.

        A JSON filter goes as it is; a name regex as ``display_name`` ``$regex`` (what the
        plugin always did). For an expression, only clauses the server matches for at least
        every run the expression matches: ``metrics.NAME OP NUMBER`` as
        ``summary_metrics.NAME`` (a plain name that ``metric_map`` does not touch: the
        summary holds every finite metric under that name) and ``status = "finished"`` as
        ``state`` (only a finished W&B run reads as finished). The rest is checked by
        :meth:`matches` on each run read.
        """
        if self.mongo is not None:
            return self.mongo
        if self.regex is not None:
            return {"display_name": {"$regex": self.text}}
        if self._where is None:
            return None
        mapped = set(metric_map or {}) | set((metric_map or {}).values())
        parts = _AND_SPLIT.split(self.text)
        for part in parts:  # every piece must be one clause, or the split is not trusted
            try:
                local_db.compile_filter(part)
            except UsageError:
                return None
        out: list[dict[str, Any]] = []
        for part in parts:
            m = _METRIC_CLAUSE.fullmatch(part)
            if m is not None and m["name"] not in mapped:
                out.append({f"summary_metrics.{m['name']}":
                            {_MONGO_OPS[m['op']]: float(m["num"])}})
            elif _STATUS_FINISHED.fullmatch(part):
                out.append({"state": "finished"})
        if not out:
            return None
        return out[0] if len(out) == 1 else {"$and": out}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
