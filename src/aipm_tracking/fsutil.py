"""Atomic file writes: a temp file in the same directory, then ``os.replace``.

A crash or an error midway leaves the destination as it was (DESIGN §8b); the temp file is
removed on any failure.
"""

from __future__ import annotations

import os
import tempfile


def atomic_write(path: str | os.PathLike[str], data: str | bytes, *,
                 make_dirs: bool = False) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; ``make_dirs`` creates the
    parent directories first."""
    target = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(target)
    if make_dirs:
        os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
