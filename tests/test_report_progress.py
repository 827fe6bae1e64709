"""progress(): a rich bar on a TTY (a real pseudo-terminal here), nothing elsewhere."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys

import pytest

from aipm_tracking.progress import progress, progress_enabled


def _read_all(fd: int) -> bytes:
    out = b""
    while select.select([fd], [], [], 0.2)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return out


@pytest.fixture()
def tty() -> tuple[io.TextIOWrapper, int]:
    master, slave = pty.openpty()
    f = os.fdopen(slave, "w", buffering=1)
    yield f, master
    f.close()
    os.close(master)


def test_bar_drawn_on_a_tty(tty: tuple[io.TextIOWrapper, int],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIPM_NO_PROGRESS", raising=False)
    f, master = tty
    assert progress_enabled(False, f)
    items = list(progress(range(50), "evaluating rows", file=f))
    f.flush()
    out = _read_all(master).decode("utf-8", "replace")
    assert items == list(range(50))
    assert "evaluating rows" in out
    assert "50/50" in out or "\x1b[" in out  # rich drew (and cleared) a bar


def test_total_mode_on_a_tty(tty: tuple[io.TextIOWrapper, int]) -> None:
    f, master = tty
    with progress(1000, "pushing rows", file=f) as bar:
        assert bar.enabled
        bar.advance(400)
        bar.advance(600)
    f.flush()
    assert "pushing rows" in _read_all(master).decode("utf-8", "replace")


def test_nothing_when_quiet_even_on_a_tty(tty: tuple[io.TextIOWrapper, int]) -> None:
    f, master = tty
    assert list(progress([1, 2, 3], "x", quiet=True, file=f)) == [1, 2, 3]
    with progress(10, "y", quiet=True, file=f) as bar:
        bar.advance(10)
    f.flush()
    assert _read_all(master) == b""


def test_nothing_on_a_non_tty() -> None:
    buf = io.StringIO()
    gen = (i for i in range(5))  # no len(): total unknown
    assert list(progress(gen, "x", file=buf)) == [0, 1, 2, 3, 4]
    with progress(5, "y", file=buf) as bar:
        bar.advance(5)
        bar.update(completed=5, description="z")
    assert buf.getvalue() == ""


def test_env_switch_turns_it_off(tty: tuple[io.TextIOWrapper, int],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    f, _ = tty
    monkeypatch.setenv("AIPM_NO_PROGRESS", "1")
    assert not progress_enabled(False, f)


def test_total_mode_is_not_iterable() -> None:
    with pytest.raises(TypeError):
        list(progress(3, "x", file=io.StringIO()))


def test_default_stream_is_stderr_and_stdout_stays_clean() -> None:
    """In a subprocess whose stderr is a pipe: stdout gets the data, nothing else appears."""
    code = ("from aipm_tracking.progress import progress\n"
            "print(sum(progress(range(100), 'work')))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "4950\n" and r.stderr == ""
