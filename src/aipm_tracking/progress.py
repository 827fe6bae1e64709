"""Progress bars for long operations: a rich bar on a terminal, nothing anywhere else.

    for chunk in progress(chunks, "evaluating", quiet=state.quiet):
        ...
    with progress(n_rows, "pushing rows", quiet=state.quiet) as bar:
        bar.advance(len(batch))

The bar goes to stderr (never stdout, which scripts parse), only when that stream is a TTY
and ``quiet`` is false; ``AIPM_NO_PROGRESS=1`` turns it off too. When off, nothing is
imported or written and iteration is the plain iterator.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any, Generic, TypeVar

T = TypeVar("T")


def progress_enabled(quiet: bool = False, file: IO[str] | None = None) -> bool:
    """True when a bar should be drawn on ``file`` (default: stderr)."""
    if quiet or os.environ.get("AIPM_NO_PROGRESS", "") not in ("", "0"):
        return False
    stream = file if file is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # closed stream
        return False


class ProgressBar(Generic[T]):
    """An iterable and context manager; ``advance(n)`` moves the bar. A no-op when disabled."""

    def __init__(self, source: Iterable[T] | None, total: float | None, description: str,
                 enabled: bool, file: IO[str] | None = None) -> None:
        self._source = source
        self._total = total
        self._description = description
        self.enabled = enabled
        self._file = file
        self._progress: Any = None
        self._task: Any = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> ProgressBar[T]:
        if not self.enabled or self._progress is not None:
            return self
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = Console(file=self._file if self._file is not None else sys.stderr)
        columns: list[Any] = [TextColumn("[bold]{task.description}"), BarColumn()]
        if self._total is not None:
            columns += [MofNCompleteColumn(), TimeRemainingColumn()]
        else:
            columns += [TextColumn("{task.completed:,.0f}")]
        columns.append(TimeElapsedColumn())
        self._progress = Progress(*columns, console=console, transient=True)
        self._progress.start()
        self._task = self._progress.add_task(self._description, total=self._total)
        return self

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self) -> ProgressBar[T]:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- updates -----------------------------------------------------------------------------
    def advance(self, n: float = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def update(self, *, completed: float | None = None, total: float | None = None,
               description: str | None = None) -> None:
        if self._progress is not None:
            kw: dict[str, Any] = {}
            if completed is not None:
                kw["completed"] = completed
            if total is not None:
                kw["total"] = total
            if description is not None:
                kw["description"] = description
            self._progress.update(self._task, **kw)

    def __iter__(self) -> Iterator[T]:
        if self._source is None:
            raise TypeError("progress(total, ...) is not iterable; use it as a context manager")
        if not self.enabled:
            yield from self._source
            return
        owned = self._progress is None
        self.start()
        try:
            for item in self._source:
                yield item
                self.advance(1)
        finally:
            if owned:
                self.stop()


def progress(iterable_or_total: Iterable[T] | float | int | None, description: str = "",
             quiet: bool = False, *, total: float | None = None,
             file: IO[str] | None = None) -> ProgressBar[T]:
    """A progress bar over an iterable (``total`` from ``len()`` when it has one) or for a
    known ``total`` of work units (then use ``with ... as bar: bar.advance(n)``).

    :param quiet: the CLI's ``--quiet``; when true nothing is shown.
    :param file: where to draw (default ``sys.stderr``); a bar appears only if it is a TTY.
    """
    enabled = progress_enabled(quiet, file)
    if isinstance(iterable_or_total, bool):
        raise TypeError("progress() takes an iterable or a number of work units, not a bool")
    if isinstance(iterable_or_total, (int, float)):
        return ProgressBar(None, float(iterable_or_total), description, enabled, file)
    if iterable_or_total is None:
        return ProgressBar(None, total, description, enabled, file)
    if total is None:
        try:
            total = float(len(iterable_or_total))  # type: ignore[arg-type]
        except TypeError:
            total = None
    return ProgressBar(iterable_or_total, total, description, enabled, file)
