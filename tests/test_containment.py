"""What users of the share can write (links, recipe files, folder names) reaches nothing outside."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from clamd_server import EICAR, EICAR_SIGNATURE, Clamd, SplitReplies, image_then_zip_bomb
from conftest import RunCli
from helpers import drop, image_bytes, wait_until
from service_helpers import Daemon, files_under, make_root, start


@pytest.mark.parametrize("mode", ["polling", "events"])
def test_no_link_to_a_folder_is_followed_and_link_loops_do_not_stall_the_watcher(
        tmp_path: Path, daemons: list[Daemon], mode: str) -> None:
    config = make_root(tmp_path / "root", watch={"mode": mode, "settle_seconds": 0.3,
                                                  "rescan_seconds": 300})
    root = config.parent
    kept = root / "archive" / "kept.jpg"
    kept.parent.mkdir()
    kept.write_bytes(image_bytes("JPEG", seed=1))
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
    drop(root, "after.jpg", image_bytes("JPEG", seed=2))
    wait_until((root / "outbox" / "after.jpg").exists, 20, "the file dropped beside the links")
    (root / "inbox" / "y").symlink_to("../archive")
    wait_until((root / "failed" / "y.error.json").exists, 20, "the refusal of a new link")

    assert kept.read_bytes() == image_bytes("JPEG", seed=1)
    assert "kept.jpg" not in names_under(root, "inbox", "outbox", "failed")


def test_a_clamd_reply_that_arrives_in_two_pieces_is_read_whole(
        tmp_path: Path, daemons: list[Daemon], split_clamd: SplitReplies) -> None:
    config = make_root(tmp_path / "root", split_clamd.address)
    root = config.parent
    start(daemons, config)
    drop(root, "eicar.com", EICAR)
    drop(root, "photo.jpg", image_bytes("JPEG", seed=3))
    report = root / "quarantine" / "eicar.com.scan.json"
    wait_until(report.exists, 20, "the infected file in quarantine/")
    assert json.loads(report.read_text())["signature"].startswith(EICAR_SIGNATURE)
    wait_until((root / "outbox" / "photo.jpg").exists, 20, "the clean file in outbox/")


def test_a_clamd_that_answers_ok_for_what_it_skipped_is_never_trusted(
        tmp_path: Path, daemons: list[Daemon], small_clamd: Clamd) -> None:
    # Files of up to 2 MB are accepted; this clamd skips those over 1 MB and answers OK.
    config = make_root(tmp_path / "root", small_clamd.address, limits={"max_file_mb": 2},
                       scanner={"on_unavailable": "allow"})
    root = config.parent
    daemon = start(daemons, config)
    drop(root, "photo.jpg", image_bytes("JPEG", seed=4))
    wait_until(lambda: daemon.status()["waiting"] == {"scanner": 1}, 20,
               "the file waiting for a scanner it can trust")
    assert files_under(root / "outbox") == []
    assert daemon.get("/readyz")[0] == 503
    assert daemon.metric("hotfolder_files_unscanned_total") == 0
    assert "set AlertExceedsMax yes" in daemon.tail(20000)


def test_a_file_clamd_cannot_scan_whole_fails_under_every_policy(
        tmp_path: Path, daemons: list[Daemon], clamd: Clamd) -> None:
    config = make_root(tmp_path / "root", clamd.address, scanner={"on_unavailable": "allow"})
    root = config.parent
    start(daemons, config)
    drop(root, "photo.jpg", image_then_zip_bomb())  # a JPEG that decodes, then 40 MB zipped
    report = root / "failed" / "photo.jpg.error.json"
    wait_until(report.exists, 30, "the file in failed/")
    message = json.loads(report.read_text())["message"]
    assert "MaxScanSize" in message and "not taken as clean" in message
    assert files_under(root / "outbox") == []


def test_check_says_whether_clamd_reads_files_of_the_largest_size_whole(
        tmp_path: Path, cli: RunCli, small_clamd: Clamd) -> None:
    config = make_root(tmp_path / "root", small_clamd.address, limits={"max_file_mb": 2})
    code, out, _ = cli(tmp_path, "check", "-c", config)
    assert code == 2
    assert (f"FAIL  clamd at {small_clamd.address} did not find the EICAR test file at the end"
            " of a file of 2 MB (limits.max_file_mb)") in out
    assert "set AlertExceedsMax yes, ScanArchive yes, and StreamMaxLength, MaxFileSize" in out

    config = make_root(tmp_path / "root", small_clamd.address, limits={"max_file_mb": 0.5})
    code, out, _ = cli(tmp_path, "check", "-c", config)
    assert code == 0, out
    assert (f"ok    clamd at {small_clamd.address} answers and finds a test virus at the end of"
            " a file of 0.5 MB (limits.max_file_mb)") in out


SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def test_recipe_files_are_read_only_as_small_regular_files_and_never_quoted(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root")
    root = config.parent
    credentials = tmp_path / "credentials.yaml"
    credentials.write_text(f"aws_secret_access_key: {SECRET}\n")
    inbox = root / "inbox"
    for folder in ("Linked", "Typo", "Huge"):
        (inbox / folder).mkdir()
    (inbox / "Linked" / "recipe.yaml").symlink_to(credentials)
    (inbox / "Typo" / "recipe.yaml").write_text(f"steps:\n  - grayscale\n  - {SECRET}\n")
    (inbox / "Huge" / "recipe.yaml").write_text("# padding\n" * 200_000 + "steps: [grayscale]\n")
    start(daemons, config)
    for folder in ("Linked", "Typo", "Huge"):
        drop(root, f"{folder}/photo.jpg", image_bytes("JPEG", seed=5))

    reports = {folder: root / "failed" / folder / "photo.jpg.error.json"
               for folder in ("Linked", "Typo", "Huge")}
    for report in reports.values():
        wait_until(report.exists, 20, f"{report.relative_to(root)}")
    texts = {folder: report.read_text() for folder, report in reports.items()}
    assert not any(SECRET in text or "wJalrXUtnFEMI" in text for text in texts.values())
    messages = {folder: json.loads(text)["message"] for folder, text in texts.items()}
    assert "Linked/recipe.yaml: not read, it is a symbolic link" in messages["Linked"]
    assert "Typo/recipe.yaml, line 3, key steps.1: unknown operation (value not shown)" \
        in messages["Typo"]
    assert "Huge/recipe.yaml: not read, it is larger than 1024 KB" in messages["Huge"]
    assert credentials.read_text() == f"aws_secret_access_key: {SECRET}\n"


def names_under(root: Path, *folders: str) -> set[str]:
    """The names of the files under these folders of root, links not followed."""
    return {name for folder in folders for _, _, files in os.walk(root / folder)
            for name in files}
