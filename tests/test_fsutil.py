"""atomic_write: the destination is either the old file or the new one, never half of it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aipm_tracking.errors import StoreError
from aipm_tracking.fsutil import atomic_write


def test_writes_text_and_bytes_and_makes_dirs(tmp_path: Path) -> None:
    atomic_write(tmp_path / "a.txt", "héllo")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo"
    atomic_write(tmp_path / "sub" / "dir" / "b.bin", b"\x00\x01", make_dirs=True)
    assert (tmp_path / "sub" / "dir" / "b.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(StoreError) as ei:  # names the file asked for, not the temp file
        atomic_write(tmp_path / "missing" / "c.txt", "x")
    assert str(ei.value).startswith(f"{tmp_path / 'missing' / 'c.txt'}: cannot write")
    assert ".tmp" not in str(ei.value)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_new_file_mode_follows_the_umask_and_an_existing_mode_is_kept(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "report.xml", "<x/>")
        assert (tmp_path / "report.xml").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
        os.umask(0o077)
        atomic_write(tmp_path / "private.txt", "x")
        assert (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o600
        os.chmod(tmp_path / "report.xml", 0o640)
        atomic_write(tmp_path / "report.xml", "<y/>")
        assert (tmp_path / "report.xml").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_a_failure_leaves_the_old_file_and_no_temp(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "report.html"
    dest.write_text("old")

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full (test)")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(StoreError, match="disk full"):
        atomic_write(dest, "new " * 1000)
    assert dest.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
