"""The atomic writer every file of hotfolder goes through (files.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotfolder.files import write_atomic


def test_write_atomic_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_write_atomic_failure_leaves_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(target, 123)  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_a_name_that_cannot_be_replaced_leaves_no_temporary(tmp_path: Path) -> None:
    (tmp_path / "out.png").mkdir()
    (tmp_path / "out.png" / "inside").write_bytes(b"kept")
    with pytest.raises(IsADirectoryError):
        write_atomic(tmp_path / "out.png", b"new")
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
    assert (tmp_path / "out.png" / "inside").read_bytes() == b"kept"
