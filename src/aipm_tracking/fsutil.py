"""Atomic file writes: a temp file in the same directory, then ``os.replace``.

A crash or an error midway leaves the destination as it was (DESIGN §8b); the temp file is
removed on any failure. The file gets the permissions a plain ``open(path, "w")`` would
(``0o666`` less the umask; an existing file keeps its mode), not ``mkstemp``'s ``0o600``.
"""

from __future__ import annotations

import os
import tempfile

from .errors import StoreError


def _umask() -> int:
    """The process umask. Linux reports it in /proc (read-only); elsewhere it can only be
    read by setting it, which another thread creating a file that instant would see."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], data: str | bytes, *,
                 make_dirs: bool = False) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; ``make_dirs`` creates the
    parent directories first. An OS error is a :class:`StoreError` naming ``path``."""
    target = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(target)
    try:
        if make_dirs:
            os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp",
                                   dir=directory)
    except OSError as e:
        raise StoreError(f"{os.fspath(path)}: cannot write ({e.strerror or e})") from None
    try:
        try:
            mode = os.stat(target).st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, target)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise StoreError(f"{os.fspath(path)}: cannot write ({e.strerror or e})") from None
        raise
