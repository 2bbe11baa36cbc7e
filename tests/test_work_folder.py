"""What waits in the work folder is the service's own: its names are checked, its bytes fixed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from clamd_server import Clamd
from helpers import image_bytes, wait_until
from service_helpers import Daemon, files_under, make_root, start

# Work-folder names as a crash right after a claim leaves them, and planted ones that
# would lead outside the inbox once decoded.
PLANTED = {
    "a1b2c3d4e5f6_..%2F..%2F..%2Foutside.jpg": "a '..' path",
    "b1b2c3d4e5f6_%2Ftmp%2Fabsolute.jpg": "an absolute path",
    "c1b2c3d4e5f6_grayscale%2Bpng%2F%2Fempty.jpg": "an empty component",
    "d1b2c3d4e5f6_grayscale%2Bpng%2F.%2Fdot.jpg": "a '.' component",
    "e1b2c3d4e5f6_": "no path at all",
}
VALID = "f1b2c3d4e5f6_grayscale%2Bpng%2Fkept.jpg"


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
    for name in [*PLANTED, VALID]:
        (work / name).write_bytes(image_bytes("JPEG", seed=len(name)))
    before = sorted(p for p in tmp_path.rglob("*"))
    daemon = start(daemons, config)

    wait_until((root / "archive" / "grayscale+png" / "kept.jpg").exists, 30,
               "the valid claim adopted and processed")
    assert journal_files(root) == ["grayscale+png/kept.jpg"]
    for name in PLANTED:  # left alone, as they were, each named in the log
        assert (work / name).read_bytes() == image_bytes("JPEG", seed=len(name)), name
        assert f"{work / name} in the work folder is not a claimed file" in daemon.tail(), name
    created = sorted(set(tmp_path.rglob("*")) - set(before))
    assert all(path.is_relative_to(root) for path in created), created
    assert files_under(root / "outbox") == [root / "outbox" / "grayscale+png" / "kept.png"]
    assert files_under(root / "failed") == []
    assert daemon.stop() == 0
