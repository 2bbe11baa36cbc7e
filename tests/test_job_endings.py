"""Every job ends in one place or waits with a reason, and the service outlives any one job."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from clamd_server import Clamd, HeldClamd
from helpers import drop, image_bytes, wait_until
from service_helpers import Daemon, files_under, make_root, start

GRAY_RECIPE = "steps: [grayscale]\noutput: {format: png}\nsidecar: true\n"
HELD_SCAN_TIMEOUT = {"timeout_seconds": 120}  # a held scan ends only when the test lets it
NESTED_SVG = (b'<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">'
              + b"<g>" * 2000 + b'<rect width="10" height="10"/>' + b"</g>" * 2000 + b"</svg>")


def jobs(daemon: Daemon) -> list[tuple[str, str, str | None]]:
    """(file, state, reason) of every job, from the journal."""
    with sqlite3.connect(daemon.root / "state" / "journal.db") as db:
        return db.execute("select rel, state, reason from jobs order by created").fetchall()


def report(path: Path) -> str:
    """The message of a failed file's NAME.error.json."""
    return str(json.loads(path.with_name(path.name + ".error.json").read_text())["message"])


def test_a_file_where_a_failed_folder_should_be_makes_the_job_wait_then_fail(
        tmp_path: Path, clamd: Clamd, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", clamd.address)
    root = config.parent
    daemon = start(daemons, config)
    obstacle = root / "failed" / "grayscale+png"
    obstacle.write_text("planted by a user of the share\n")
    drop(root, "grayscale+png/notes.jpg", b"not a picture at all\n" * 20)
    wait_until(lambda: jobs(daemon) == [("grayscale+png/notes.jpg", "waiting", "disk")], 30,
               f"the job waiting for the disk (log: {daemon.tail()})")
    # The worker logs why just after it records the wait: the line may come an instant later.
    why = f"cannot write {obstacle}/notes.jpg: a folder on the way is a symlink or a file"
    wait_until(lambda: why in daemon.tail(), 10, f"the reason in the log ({daemon.tail()})")
    claimed = [p for p in files_under(root / "inbox" / ".hotfolder") if not p.suffix]
    assert len(claimed) == 1  # nothing lost meanwhile

    obstacle.unlink()  # the operator clears the way: the job's next try ends it in failed/
    failed = root / "failed" / "grayscale+png" / "notes.jpg"
    wait_until(failed.exists, 30, "the file in failed/ once the way is clear")
    assert "not an image type hotfolder accepts" in report(failed)
    wait_until(lambda: jobs(daemon)[0][1] == "failed", 10, "the job failed")
    assert daemon.stop() == 0


def test_a_deeply_nested_svg_fails_with_its_reason(
        tmp_path: Path, clamd: Clamd, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", clamd.address)
    root = config.parent
    daemon = start(daemons, config)
    drop(root, "grayscale+png/deep.svg", NESTED_SVG)
    failed = root / "failed" / "grayscale+png" / "deep.svg"
    wait_until(failed.exists, 30, f"the SVG in failed/ (log: {daemon.tail()})")
    assert report(failed) == ("grayscale+png/deep.svg: the SVG nests its elements 2002 levels"
                              " deep, more than the 128 levels hotfolder draws")
    wait_until(lambda: [state for _, state, _ in jobs(daemon)] == ["failed"], 10,
               "the job failed")
    assert daemon.stop() == 0


def test_an_unexpected_error_in_a_stage_fails_the_job_in_words(
        tmp_path: Path, clamd: Clamd, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", clamd.address)
    root = config.parent
    (root / "recipes" / "gray.yaml").write_text(GRAY_RECIPE)
    daemon = start(daemons, config)
    # A folder where the sidecar goes: replacing it raises IsADirectoryError, which no
    # stage expects.
    (root / "outbox" / "Gray" / "photo.png.json").mkdir(parents=True)
    drop(root, "Gray/photo.jpg", image_bytes("JPEG", seed=1))
    failed = root / "failed" / "Gray" / "photo.jpg"
    wait_until(failed.exists, 30, f"the file in failed/ (log: {daemon.tail()})")
    assert report(failed).startswith(
        "Gray/photo.jpg: processing stopped on an unexpected error in the deliver stage"
        " (IsADirectoryError: [Errno 21] Is a directory")
    assert failed.read_bytes() == image_bytes("JPEG", seed=1)
    wait_until(lambda: [state for _, state, _ in jobs(daemon)] == ["failed"], 10,
               "the job failed")

    drop(root, "Gray/next.jpg", image_bytes("JPEG", seed=2))  # the service goes on
    wait_until((root / "outbox" / "Gray" / "next.png.json").exists, 30, "the next file done")
    assert daemon.stop() == 0


def test_the_supervisor_outlives_a_job_it_cannot_fail(
        tmp_path: Path, held_clamd: HeldClamd, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", held_clamd.address, scanner=HELD_SCAN_TIMEOUT,
                       limits={"job_timeout_seconds": 0.5})
    root = config.parent
    daemon = start(daemons, config)
    obstacle = root / "failed" / "grayscale+png"
    obstacle.write_text("planted by a user of the share\n")
    drop(root, "grayscale+png/slow.jpg", image_bytes("JPEG"))  # its scan never ends by itself
    # The supervisor stops the overdue job, cannot move it to failed/, and parks it instead.
    wait_until(lambda: jobs(daemon) == [("grayscale+png/slow.jpg", "waiting", "disk")], 30,
               f"the overdue job waiting for the disk (log: {daemon.tail()})")
    assert "could not be done" not in daemon.tail()
    daemon.notifications()
    assert daemon.notifications(2.5).count("WATCHDOG=1") >= 2  # the loop still turns

    held_clamd.let_through()  # the service goes on serving other folders meanwhile
    drop(root, "png/next.jpg", image_bytes("JPEG", seed=1))
    wait_until((root / "outbox" / "png" / "next.png").exists, 30, "a file of another folder")
    assert held_clamd.answered >= 1
    assert daemon.stop() == 0
