"""What users of the share can write (links, recipe files, folder names) reaches nothing outside."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from service_helpers import Daemon, drop, jpeg, make_root, start, wait_until


@pytest.mark.parametrize("mode", ["polling", "events"])
def test_no_link_to_a_folder_is_followed_and_link_loops_do_not_stall_the_watcher(
        tmp_path: Path, daemons: list[Daemon], mode: str) -> None:
    config = make_root(tmp_path / "root", watch={"mode": mode, "settle_seconds": 0.3,
                                                  "rescan_seconds": 300})
    root = config.parent
    kept = root / "archive" / "kept.jpg"
    kept.parent.mkdir()
    kept.write_bytes(jpeg(1))
    (root / "inbox" / "x").symlink_to("../archive")
    hidden = root / "inbox" / ".loops"  # never offered, so never moved away: the walk meets it
    hidden.mkdir()
    (hidden / "a").symlink_to(".")
    (hidden / "b").symlink_to(".")
    start(daemons, config)

    # Found by the start-up scan: the link itself is refused, nothing behind it is claimed.
    report = root / "failed" / "x.error.json"
    wait_until(report.exists, 20, "the link's refusal")
    assert "symbolic link" in json.loads(report.read_text())["message"]
    # Dropped after the start-up scan, with the next rescan minutes away: only the
    # observer, walking past the loops, can find it.
    drop(root, "after.jpg", jpeg(2))
    wait_until((root / "outbox" / "after.jpg").exists, 20, "the file dropped beside the links")
    (root / "inbox" / "y").symlink_to("../archive")
    wait_until((root / "failed" / "y.error.json").exists, 20, "the refusal of a new link")

    assert kept.read_bytes() == jpeg(1)
    assert "kept.jpg" not in names_under(root, "inbox", "outbox", "failed")


def names_under(root: Path, *folders: str) -> set[str]:
    """The names of the files under these folders of root, links not followed."""
    return {name for folder in folders for _, _, files in os.walk(root / folder)
            for name in files}
