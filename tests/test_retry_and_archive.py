"""After a failure: the report in plain words, `hotfolder retry` taken at once, archive expiry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers import drop, image_bytes, wait_until
from hotfolder.cache import cache_folder
from hotfolder.config import load_config
from hotfolder.errors import ConfigError
from hotfolder.janitor import Janitor
from hotfolder.journal.sqlite import SqliteJournal
from hotfolder.parts import prepare_root
from hotfolder.sinks.originals import Originals
from service_helpers import Daemon, make_root, start

RETRY_SECONDS = 15.0  # generous for a loaded machine, far below the rescan of the test's root


def test_a_retried_file_is_taken_at_once_and_its_report_was_plain_words(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    root = tmp_path / "hf"
    config = make_root(root, watch={"rescan_seconds": 3600})  # only an event can find it
    recipe = root / "recipes" / "engrave.yaml"
    recipe.write_text("steps: [grayscale]\noutput:\n  format: png\n  qualty: 90\n")
    start(daemons, config)
    drop(root, "engrave/photo.jpg", image_bytes("JPEG", seed=1))
    report_path = root / "failed" / "engrave" / "photo.jpg.error.json"
    wait_until(report_path.exists, 20, "the error report in failed/")

    report = json.loads(report_path.read_text())
    assert report["message"] == (f"engrave/photo.jpg: {recipe}, line 4, key output.qualty:"
                                 " unknown key, did you mean 'quality'?")
    assert report["detail"] == "output.qualty was a whole number"  # never the value itself

    recipe.write_text("steps: [grayscale]\noutput:\n  format: png\n  quality: 90\n")
    retried = subprocess.run(
        [sys.executable, "-m", "hotfolder.cli", "retry", "-c", str(config), "--all"],
        capture_output=True, text=True, timeout=60, check=False)
    assert retried.returncode == 0, retried.stderr
    moved_at = time.monotonic()
    wait_until((root / "outbox" / "engrave" / "photo.png").exists, RETRY_SECONDS,
               "the retried file in outbox/")
    assert time.monotonic() - moved_at < RETRY_SECONDS
    assert not report_path.exists()


@pytest.mark.parametrize(("days", "kept"), [(0, False), (1, True)])
def test_archive_days_count_from_the_move_into_archive(tmp_path: Path, days: float,
                                                       kept: bool) -> None:
    root = tmp_path / "hf"
    config = make_root(root, output={"archive_days": days}, queue={"workers": 0})
    original = root / "archive" / "engrave" / "photo.jpg"
    original.parent.mkdir(parents=True)
    original.write_bytes(image_bytes("JPEG", seed=2))
    os.utime(original, (time.time() - 400 * 86400,) * 2)  # taken long ago, archived just now
    cfg = load_config(config)
    prepare_root(cfg)
    journal = SqliteJournal(cfg.layout.state / "journal.db")
    try:
        Janitor(cfg, journal, Originals.of(cfg)).sweep(time.time())
    finally:
        journal.close()
    assert original.exists() is kept


@pytest.mark.parametrize(("archive", "state", "ends_in"), [
    (True, "done", "archive"), (False, "done", None), (True, "failed", "failed")])
def test_an_original_left_in_the_work_folder_after_its_job_goes_where_its_job_ended(
        tmp_path: Path, archive: bool, state: str, ends_in: str | None) -> None:
    # A power cut can undo the removal of a done job's original from the work folder (the
    # removal is not synced): the original is then in the work folder and in archive/.
    root = tmp_path / "hf"
    config = make_root(root, output={"archive": archive}, queue={"workers": 0})
    cfg = load_config(config)
    prepare_root(cfg)
    layout = cfg.layout
    data = image_bytes("JPEG", seed=3)
    left = layout.work / "0123456789ab"
    left.write_bytes(data)
    if archive and state == "done":
        (layout.archive / "engrave").mkdir()
        os.link(left, layout.archive / "engrave" / "photo.jpg")
    journal = SqliteJournal(layout.state / "journal.db")
    try:
        journal.add("0123456789ab", "engrave/photo.jpg", kind="jpeg", size=len(data))
        journal.start("0123456789ab", os.getpid())
        journal.finish("0123456789ab", state)
        Janitor(cfg, journal, Originals.of(cfg)).sweep(time.time())
        assert journal.get("0123456789ab").state == state  # type: ignore[union-attr]
    finally:
        journal.close()

    assert list(layout.work.iterdir()) == []
    placed = {folder: sorted(p.relative_to(root / folder).as_posix()
                             for p in (root / folder).rglob("*") if p.is_file())
              for folder in ("archive", "failed")}
    expected = {"archive": [], "failed": []}
    if ends_in == "archive":
        expected["archive"] = ["engrave/photo.jpg"]
    elif ends_in == "failed":
        expected["failed"] = ["engrave/photo.jpg", "engrave/photo.jpg.error.json"]
    assert placed == expected
    if ends_in is not None:
        assert (root / ends_in / "engrave" / "photo.jpg").read_bytes() == data


def test_a_negative_archive_days_is_refused(tmp_path: Path) -> None:
    config = make_root(tmp_path / "hf")
    config.write_text(yaml.safe_dump({"output": {"archive_days": -1}}))
    with pytest.raises(ConfigError, match=r"key output\.archive_days: must be at least 0$"):
        load_config(config)


def test_the_start_removes_temporary_files_a_kill_left_in_every_folder(tmp_path: Path) -> None:
    config = make_root(tmp_path / "hf", queue={"workers": 0})
    cfg = load_config(config)
    prepare_root(cfg)
    layout = cfg.layout
    left = [folder / "sub" / ".hf-0123456789abcdef.tmp" for folder in (
        layout.outbox, layout.failed, layout.quarantine, layout.archive, layout.work,
        cache_folder(layout.state))]
    kept = layout.outbox / "sub" / "photo.png"
    for path in [*left, kept]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"cut short")
    journal = SqliteJournal(layout.state / "journal.db")
    try:
        janitor = Janitor(cfg, journal, Originals.of(cfg))
        janitor.remove_temporary(before=time.time())
        assert [path for path in left if path.exists()] == left[-1:]  # the cache: at start
        janitor.remove_temporary(before=time.time(), at_start=True)
    finally:
        journal.close()
    assert [path for path in left if path.exists()] == []
    assert kept.read_bytes() == b"cut short"
