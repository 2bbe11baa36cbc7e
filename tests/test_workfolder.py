"""The work folder's own files: the path noted beside a claimed file, and a kept result."""

from __future__ import annotations

import os
from pathlib import Path

from hotfolder.engine import Output, Rendered
from hotfolder.workfolder import WorkFolder

JOB = "0123456789ab"


def test_a_kept_result_comes_back_whole_and_a_damaged_one_not_at_all(tmp_path: Path) -> None:
    work = WorkFolder(tmp_path)
    name = os.fsdecode(b"caf\xe9.png")
    rendered = Rendered([Output(name, b"\x89PNG main", "image/png"),
                         Output("thumb.jpg", b"\xff\xd8 thumb", "image/jpeg")],
                        {"input": {"name": os.fsdecode(b"caf\xe9.jpg")}, "timings": {"process": 1}})
    work.keep(JOB, rendered, {"recipe": "gray"})
    assert work.kept(JOB) == (rendered, {"recipe": "gray"})
    kept = tmp_path / f"{JOB}.result"
    kept.write_bytes(kept.read_bytes()[:-1] + b"!")  # one byte of an output changed
    assert work.kept(JOB) is None
    kept.write_bytes(b"not json\n")
    assert work.kept(JOB) is None
    work.release(JOB)
    assert work.kept(JOB) is None
    assert list(tmp_path.iterdir()) == []


def test_the_noted_path_keeps_its_bytes(tmp_path: Path) -> None:
    work = WorkFolder(tmp_path / "work")  # made when first needed
    rel = os.fsdecode(b"A/\xff\xfe/" + b"n" * 300 + b".jpg")
    work.record(JOB, rel)
    assert work.recorded(JOB) == rel
    assert (tmp_path / "work" / f"{JOB}.path").read_bytes() == os.fsencode(rel)
    assert work.unclaimed() == [JOB]  # no file beside it
    (tmp_path / "work" / JOB).write_bytes(b"data")
    assert (work.claimed(), work.unclaimed(), work.strays()) == ([JOB], [], [])
