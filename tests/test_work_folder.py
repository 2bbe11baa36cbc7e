"""What waits in the work folder is the service's own: its names are checked, its bytes fixed;
the path noted beside a claimed file, and a kept result."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from PIL import Image

from clamd_server import Clamd, HeldClamd
from helpers import image_bytes, wait_until
from hotfolder.engine import Output, Rendered
from hotfolder.workfolder import WorkFolder
from service_helpers import Daemon, files_under, make_root, start

# Work files as a crash right after a claim leaves them (named by the job id, the inbox
# path noted beside them), and planted ones whose noted path would lead outside the inbox.
PLANTED = {
    "a1b2c3d4e5f6": b"../../../outside.jpg",  # a '..' path
    "b1b2c3d4e5f6": b"/tmp/absolute.jpg",  # an absolute path
    "c1b2c3d4e5f6": b"grayscale+png//empty.jpg",  # an empty component
    "d1b2c3d4e5f6": b"grayscale+png/./dot.jpg",  # a '.' component
    "e1b2c3d4e5f6": None,  # no path noted at all
    "f1b2c3d4e5f6_grayscale%2Bpng%2Fkept.jpg": None,  # not a job id: not the service's name
}
VALID = ("a0b2c3d4e5f6", b"grayscale+png/kept.jpg")


def journal_files(root: Path) -> list[str]:
    """The file of every job in the journal."""
    with sqlite3.connect(root / "state" / "journal.db") as db:
        return [row[0] for row in db.execute("select rel from jobs")]


def test_only_work_files_named_inside_the_inbox_are_adopted_at_start(
        tmp_path: Path, clamd: Clamd, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", clamd.address)
    root = config.parent
    work = root / "inbox" / ".hotfolder"
    work.mkdir(parents=True)
    for name, path in [*PLANTED.items(), VALID]:
        (work / name).write_bytes(image_bytes("JPEG", seed=len(name)))
        if path is not None:
            (work / f"{name}.path").write_bytes(path)
    before = sorted(p for p in tmp_path.rglob("*"))
    daemon = start(daemons, config)

    wait_until((root / "archive" / "grayscale+png" / "kept.jpg").exists, 30,
               "the valid claim adopted and processed")
    assert journal_files(root) == ["grayscale+png/kept.jpg"]
    for name in PLANTED:  # left alone, as they were, each named in the log
        assert (work / name).read_bytes() == image_bytes("JPEG", seed=len(name)), name
        assert f"{work / name} in the work folder " in daemon.tail(), name
        assert "left alone" in daemon.tail()
    created = sorted(set(tmp_path.rglob("*")) - set(before))
    assert all(path.is_relative_to(root) for path in created), created
    assert files_under(root / "outbox") == [root / "outbox" / "grayscale+png" / "kept.png"]
    assert files_under(root / "failed") == []
    assert daemon.stop() == 0


def test_a_file_rewritten_by_its_dropper_after_the_claim_is_processed_as_scanned(
        tmp_path: Path, held_clamd: HeldClamd, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", held_clamd.address, scanner={"timeout_seconds": 120})
    root = config.parent
    daemon = start(daemons, config)
    dropped = image_bytes("JPEG", (64, 48), seed=1)
    swapped = image_bytes("JPEG", (300, 200), seed=2)  # what the dropper puts there instead
    folder = root / "inbox" / "grayscale+png"
    folder.mkdir(parents=True)
    temp = folder / ".photo.jpg.part"
    temp.write_bytes(dropped)
    with temp.open("r+b") as kept_open:  # the dropper keeps its file open past the claim
        temp.rename(folder / "photo.jpg")
        wait_until(lambda: held_clamd.holding == 1, 30, f"the scan held (log: {daemon.tail()})")
        work = root / "inbox" / ".hotfolder"
        (claimed,) = [p for p in files_under(work) if not p.suffix]  # not its .path
        modes = stat.S_IMODE(claimed.stat().st_mode), stat.S_IMODE(work.stat().st_mode)
        kept_open.write(swapped)  # rewritten while its scan runs, as the dropper can
        kept_open.truncate()
    held_clamd.let_through()

    archived = root / "archive" / "grayscale+png" / "photo.jpg"
    wait_until(archived.exists, 30, f"the original archived (log: {daemon.tail()})")
    assert held_clamd.streams == [dropped]
    assert archived.read_bytes() == dropped  # what was scanned, not what was written later
    output = root / "outbox" / "grayscale+png" / "photo.png"
    with Image.open(output) as image:
        assert image.size == (64, 48)
    assert modes == (0o600, 0o700)  # the claimed file, and its folder, the service's alone
    assert stat.S_IMODE(archived.stat().st_mode) == 0o644  # archived: readable, as before
    assert daemon.stop() == 0


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
    assert os.readlink(os.fsencode(tmp_path / "work" / f"{JOB}.path")) == os.fsencode(rel)
    assert work.unclaimed() == [JOB]  # no file beside it
    (tmp_path / "work" / JOB).write_bytes(b"data")
    assert (work.claimed(), work.unclaimed(), work.strays()) == ([JOB], [], [])


def test_a_path_noted_again_keeps_the_first_note(tmp_path: Path) -> None:
    """A claim notes the path again when the file's copy lacks the attribute that a
    filesystem refused: the note from the first time is already there."""
    work = WorkFolder(tmp_path)
    work.record(JOB, "A/photo.jpg")
    work.record(JOB, "A/photo.jpg")
    assert work.recorded(JOB) == "A/photo.jpg"
    assert [p.name for p in tmp_path.iterdir()] == [f"{JOB}.path"]


def test_a_note_written_as_a_plain_file_is_read_too(tmp_path: Path) -> None:
    work = WorkFolder(tmp_path)
    (tmp_path / f"{JOB}.path").write_bytes(b"A/photo.jpg")  # as earlier versions wrote it
    assert work.recorded(JOB) == "A/photo.jpg"
    work.release(JOB)
    assert list(tmp_path.iterdir()) == []


def test_a_path_kept_on_the_file_itself_moves_with_it_and_a_note_beside_it_comes_first(
        tmp_path: Path) -> None:
    work = WorkFolder(tmp_path / "work")
    dropped = tmp_path / "photo.jpg"
    dropped.write_bytes(b"data")
    fd = os.open(dropped, os.O_RDONLY)
    try:
        work.record(JOB, "A/photo.jpg", fd)
    finally:
        os.close(fd)
    assert not (tmp_path / "work").exists()  # nothing beside it: the path is on the file
    (tmp_path / "work").mkdir()
    dropped.rename(work.file(JOB))
    assert work.recorded(JOB) == "A/photo.jpg"
    assert (work.claimed(), work.unclaimed(), work.strays()) == ([JOB], [], [])
    work.record(JOB, "B/photo.jpg")  # a note beside the file says more than its attribute
    assert work.recorded(JOB) == "B/photo.jpg"
