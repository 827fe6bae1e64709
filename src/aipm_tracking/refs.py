"""Run references: ``scheme:locator`` strings -> :class:`RunRef` (DESIGN §7).

* ``local:RUN_ID`` or a bare ``RUN_ID`` -> the embedded store
* ``mlflow:RUN_ID``, ``wandb:ENTITY/PROJECT/RUN_ID``, ``wandb:PATH`` -> plugins
* a path to a ``.csv`` / ``.parquet`` / ``.jsonl`` eval file -> scheme ``file``, evaluated on the fly

Parsing only: which backend serves a scheme is :mod:`aipm_tracking.plugins`' business.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .errors import InvalidReferenceError

EVAL_FILE_SUFFIXES = (".csv", ".parquet", ".pq", ".jsonl", ".ndjson")
_SCHEME_RE = re.compile(r"^(?P<scheme>[a-z][a-z0-9_+-]{1,31}):(?P<rest>.*)$", re.S)
#: Strict pattern for run ids of the embedded store (and any id used in a path or query).
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,63}$")


@dataclass(frozen=True)
class RunRef:
    """A parsed reference: ``scheme`` picks the backend, ``locator`` is the backend's own."""

    scheme: str
    locator: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.locator}"


def is_eval_file(text: str) -> bool:
    return text.lower().endswith(EVAL_FILE_SUFFIXES)


def validate_run_id(run_id: str, what: str = "run id") -> str:
    """Return ``run_id`` if it matches :data:`RUN_ID_RE`, else raise (never touch a path)."""
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id):
        raise InvalidReferenceError(
            f"invalid {what} {run_id!r}: expected 3-64 letters, digits, '_' or '-'"
        )
    return run_id


def parse_ref(text: str) -> RunRef:
    """Parse a reference string. Eval-file paths win over schemes (``./a:b.csv`` is a file)."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidReferenceError("empty run reference")
    text = text.strip()
    if is_eval_file(text) and (os.path.exists(text) or not _SCHEME_RE.match(text)):
        return RunRef("file", text)
    m = _SCHEME_RE.match(text)
    if m:
        scheme, rest = m.group("scheme"), m.group("rest")
        if not rest:
            raise InvalidReferenceError(f"run reference {text!r} has nothing after '{scheme}:'")
        if scheme == "local":
            validate_run_id(rest)
        if scheme == "file":
            return RunRef("file", rest)
        return RunRef(scheme, rest)
    if RUN_ID_RE.match(text):
        return RunRef("local", text)
    raise InvalidReferenceError(
        f"cannot read run reference {text!r}: expected RUN_ID, local:RUN_ID, mlflow:RUN_ID, "
        f"wandb:ENTITY/PROJECT/RUN_ID, wandb:PATH or an eval file (.csv/.parquet/.jsonl)"
    )


def parse_target(text: str | None) -> tuple[str, str | None]:
    """A destination (``--to``): ``local``, ``mlflow:EXPERIMENT``, ``wandb:ENTITY/PROJECT``."""
    if not text or text == "local" or text == "local:":
        return "local", None
    m = _SCHEME_RE.match(text)
    if m:
        return m.group("scheme"), (m.group("rest") or None)
    if re.match(r"^[a-z][a-z0-9_+-]{1,31}$", text):
        return text, None
    raise InvalidReferenceError(
        f"cannot read destination {text!r}: expected local, mlflow:EXPERIMENT or "
        f"wandb:ENTITY/PROJECT"
    )
