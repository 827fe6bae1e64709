"""Every error aipm raises on purpose lives here.

The CLI turns an :class:`AipmError` into one line on stderr and its ``exit_code``;
``AIPM_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations


class AipmError(Exception):
    """Base class: a problem the user can act on. ``str(err)`` is the one line shown."""

    exit_code = 2


class UsageError(AipmError):
    """Wrong arguments or options (a bad ``--map``, an unknown ``--format`` ...)."""


class ConfigError(AipmError):
    """A guardrails file (or other configuration) is malformed; names file, line and key."""


class DataError(AipmError):
    """A per-example eval table is unusable: missing column, bad rows, unreadable file."""


class ColumnTypeChanged(DataError):
    """A streamed CSV/JSONL column changes type after the rows its type was inferred from.

    Internal signal: the streamed evaluation starts again with ``column`` read as ``widen``
    (``"float64"`` or ``"string"``), as reading the whole file at once would type it. Only a
    change the whole-file reader cannot take either reaches the user, as this one line."""

    def __init__(self, message: str, column: str, widen: str) -> None:
        super().__init__(message)
        self.column = column
        self.widen = widen


class RunNotFoundError(AipmError):
    """A run reference points at nothing."""


class InvalidReferenceError(AipmError):
    """A run reference or run id is malformed (or tries to escape the store)."""


class StoreError(AipmError):
    """The embedded store cannot be read or written (permissions, corruption)."""


class BackendError(AipmError):
    """A remote backend (MLflow, W&B ...) failed after retries, or is not installed."""


class BackendNotImplementedError(BackendError):
    """A backend plugin is registered but does not implement this operation yet."""


class PluginError(AipmError):
    """A plugin is broken (bad hookimpl, name collision)."""


class AipmWarning(UserWarning):
    """A problem worth telling but not fatal (a broken plugin, criteria that moved ...)."""
