"""Out of inotify watches (SPEC 10): new folders are served by the rescan, and the service says so.

The limit is the kernel's, per user, shared with every other process of the user: the test
lowers it only while the folders are made and watchdog tries to watch them, and puts it back
whatever happens.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from helpers import drop, image_bytes, wait_until
from service_helpers import Daemon, files_under, make_root, start

MAX_USER_WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")
FOLDERS = 30
WAIT = 30.0
WARNING = "are not watched, most likely because the user's inotify watches ran out"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.access(MAX_USER_WATCHES, os.W_OK),
    reason="lowering fs.inotify.max_user_watches needs root")


@contextmanager
def inotify_watches_limited_to(limit: int) -> Iterator[None]:
    """fs.inotify.max_user_watches set to `limit` inside the block, restored after it."""
    before = MAX_USER_WATCHES.read_text()
    MAX_USER_WATCHES.write_text(f"{limit}\n")
    try:
        yield
    finally:
        MAX_USER_WATCHES.write_text(before)


def another_rescan(daemon: Daemon) -> None:
    """Wait for the service's next full scan of the inbox."""
    name = "hotfolder_watcher_last_scan_timestamp_seconds"
    scan = daemon.metric(name)
    wait_until(lambda: daemon.metric(name) != scan, WAIT, "another rescan")


def test_folders_made_without_watches_left_are_served_by_the_rescan_and_reported(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root")
    root = config.parent
    daemon = start(daemons, config)
    wait_until(lambda: daemon.get("/readyz")[0] == 200, WAIT, "/readyz to answer 200")
    assert daemon.metric("hotfolder_watcher_unwatched_folders") == 0

    # Below what the service already holds: no process of this user gets another watch.
    with inotify_watches_limited_to(1):
        for n in range(FOLDERS):
            drop(root, f"resize={20 + n}+png/photo.jpg", image_bytes("JPEG", seed=n))
        wait_until(lambda: daemon.metric("hotfolder_watcher_unwatched_folders") == FOLDERS,
                   WAIT, f"the metric to count {FOLDERS} unwatched folders")

    outputs = [root / "outbox" / f"resize={20 + n}+png" / "photo.png" for n in range(FOLDERS)]
    wait_until(lambda: all(path.exists() for path in outputs), WAIT, "every file processed")
    for n, path in enumerate(outputs):
        with Image.open(path) as image:
            assert image.width == 20 + n
    assert files_under(root / "failed") == []

    # Two more rescans: the count stands, and it was said once.
    another_rescan(daemon)
    another_rescan(daemon)
    assert daemon.metric("hotfolder_watcher_unwatched_folders") == FOLDERS
    warnings = [line for line in daemon.tail(10**6).splitlines() if WARNING in line]
    assert len(warnings) == 1, warnings
    assert f"{FOLDERS} folder(s) under {root / 'inbox'} are not watched" in warnings[0]

    watcher = daemon.status()["watcher"]
    assert watcher["unwatched_folders"] == FOLDERS
    assert watcher["max_user_watches"] == 1
    text = subprocess.run(
        [sys.executable, "-m", "hotfolder.cli", "status", "-c", str(config)],
        capture_output=True, text=True, check=True).stdout
    assert (f"not watched: {FOLDERS} inbox folder(s), most likely because the inotify watches"
            " ran out (fs.inotify.max_user_watches = 1); the rescan finds their files, up to"
            " 2 s late") in text.splitlines()
    assert daemon.get("/readyz")[0] == 200
    assert daemon.stop() == 0
    assert daemon.status()["watcher"] == {"unwatched_folders": 0}
