"""atomic_write: the destination is either the old file or the new one, never half of it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aipm_tracking.fsutil import atomic_write


def test_writes_text_and_bytes_and_makes_dirs(tmp_path: Path) -> None:
    atomic_write(tmp_path / "a.txt", "héllo")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo"
    atomic_write(tmp_path / "sub" / "dir" / "b.bin", b"\x00\x01", make_dirs=True)
    assert (tmp_path / "sub" / "dir" / "b.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "missing" / "c.txt", "x")


def test_a_failure_leaves_the_old_file_and_no_temp(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "report.html"
    dest.write_text("old")

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full (test)")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(dest, "new " * 1000)
    assert dest.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
