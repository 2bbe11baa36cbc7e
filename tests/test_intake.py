"""Intake: refusals without opening, size and type checks, and a claim that happens once."""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import sqlite3
import stat
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from helpers import drop, image_bytes
from hotfolder.config import Config, Layout
from hotfolder.errors import InputError
from hotfolder.intake import Intake, claimed_bytes, read_claimed, read_within
from hotfolder.journal import Claim
from hotfolder.journal.sqlite import SqliteJournal
from hotfolder.workfolder import PATH_ATTRIBUTE


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Config(root=tmp_path).layout
    for folder in (layout.inbox, layout.failed, layout.state):
        folder.mkdir(parents=True)
    return layout


@pytest.fixture
def intake(layout: Layout) -> Intake:
    cfg = Config(root=layout.root, limits={"max_file_mb": 0.01, "formats": ["jpeg", "png"]})
    return Intake(layout, cfg.limits, SqliteJournal(layout.state / "journal.db"))


def refused(intake: Intake, path: Path) -> bool:
    job = intake.offer(path)
    return job is not None and job.state == "failed" and job.reason is not None


def error_of(layout: Layout, rel: str) -> dict[str, str]:
    report: dict[str, str] = json.loads((layout.failed / f"{rel}.error.json").read_text())
    return report


def test_a_good_file_is_claimed_into_the_work_folder(layout: Layout, intake: Intake) -> None:
    data = image_bytes("JPEG")
    path = drop(layout.root, "Engrave/photo.jpg", data)
    job = intake.offer(path)
    assert job is not None
    assert (job.state, job.rel, job.kind, job.size) == ("queued", "Engrave/photo.jpg", "jpeg",
                                                        len(data))
    assert not path.exists()
    assert (layout.work / job.id).read_bytes() == data  # named by the job id alone
    # The service's own file carries its path itself, into the work folder.
    assert os.getxattr(layout.work / job.id, PATH_ATTRIBUTE) == b"Engrave/photo.jpg"


def test_offering_a_file_again_or_concurrently_gives_one_job(layout: Layout,
                                                            intake: Intake) -> None:
    path = drop(layout.root, "photo.jpg", image_bytes("JPEG"))
    results = []
    threads = [threading.Thread(target=lambda: results.append(intake.offer(path)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (job,) = [r for r in results if r is not None]
    assert intake.offer(path) is None
    assert intake.journal.counts() == {"queued": 1}
    # the losers' notes of the path are gone with their claims
    assert [p.name for p in layout.work.iterdir()] == [job.id]


def test_a_symlink_is_moved_to_failed_and_its_target_left_alone(layout: Layout, intake: Intake,
                                                                tmp_path: Path) -> None:
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(image_bytes("JPEG"))
    link = layout.inbox / "A" / "link.jpg"
    link.parent.mkdir()
    link.symlink_to(secret)
    assert refused(intake, link)
    moved = layout.failed / "A" / "link.jpg"
    assert moved.is_symlink() and os.readlink(moved) == str(secret)
    assert secret.read_bytes() == image_bytes("JPEG")
    report = error_of(layout, "A/link.jpg")
    assert report["message"] == "A/link.jpg: refused, it is a symbolic link"
    assert report["stage"] == "intake"
    assert intake.journal.counts() == {"failed": 1}


def test_no_link_in_a_folder_of_the_path_is_followed(layout: Layout, intake: Intake,
                                                     tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "photo.jpg").write_bytes(image_bytes("JPEG"))
    (layout.inbox / "A").mkdir()
    (layout.inbox / "A" / "x").symlink_to(elsewhere)
    assert intake.offer(layout.inbox / "A" / "x" / "photo.jpg") is None
    assert (elsewhere / "photo.jpg").read_bytes() == image_bytes("JPEG")
    assert intake.journal.counts() == {}
    assert refused(intake, layout.inbox / "A" / "x")  # the link itself is refused


def test_a_hardlink_is_refused(layout: Layout, intake: Intake, tmp_path: Path) -> None:
    other = tmp_path / "other.jpg"
    other.write_bytes(image_bytes("JPEG"))
    os.link(other, layout.inbox / "hard.jpg")
    assert refused(intake, layout.inbox / "hard.jpg")
    assert "has 2 hard links" in error_of(layout, "hard.jpg")["message"]
    assert (layout.failed / "hard.jpg").exists()


def test_a_fifo_is_refused_without_blocking(layout: Layout, intake: Intake) -> None:
    fifo = layout.inbox / "pipe.jpg"
    os.mkfifo(fifo)
    assert refused(intake, fifo)  # opening it for reading would block forever
    assert "FIFO" in error_of(layout, "pipe.jpg")["message"]
    assert (layout.failed / "pipe.jpg").is_fifo()


def test_a_socket_is_refused(layout: Layout, intake: Intake) -> None:
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(layout.inbox / "s.jpg"))
        assert refused(intake, layout.inbox / "s.jpg")
    finally:
        server.close()
    assert error_of(layout, "s.jpg")["message"] == "s.jpg: refused, it is a socket"


def test_an_oversized_file_fails_with_the_limit_named(layout: Layout, intake: Intake) -> None:
    path = drop(layout.root, "big.jpg", image_bytes("JPEG") + bytes(20000))
    assert refused(intake, path)
    message = error_of(layout, "big.jpg")["message"]
    assert "over the limit of 0.01 MB (limits.max_file_mb)" in message
    assert (layout.failed / "big.jpg").stat().st_size > 20000


def test_content_not_name_decides_the_type(layout: Layout, intake: Intake) -> None:
    path = drop(layout.root, "Wood/notes.jpg", b"just some text, not a picture\n" * 10)
    job = intake.offer(path)  # claimed with its refusal, so that it is scanned before failing
    assert job is not None and job.kind is None and job.state == "queued"
    assert job.reason is not None and job.reason.startswith("Wood/notes.jpg: the file is")
    assert "not an image type hotfolder accepts" in job.reason
    assert (layout.work / job.id).exists()


def test_an_allowed_type_outside_limits_formats_is_refused(layout: Layout,
                                                           intake: Intake) -> None:
    job = intake.offer(drop(layout.root, "a.gif", image_bytes("GIF", (4, 4))))
    assert job is not None and job.reason is not None
    assert "gif files are not accepted here" in job.reason


def test_adopt_finds_a_claim_the_journal_never_recorded(layout: Layout, intake: Intake) -> None:
    layout.work.mkdir(parents=True)
    orphan = layout.work / "0123456789ab"
    orphan.write_bytes(image_bytes("JPEG"))
    (layout.work / "0123456789ab.path").write_bytes(b"A/B/photo 1.jpg")
    (layout.work / "stray-folder").mkdir()
    jobs = intake.adopt()
    assert [(j.id, j.rel, j.state) for j in jobs] == [
        ("0123456789ab", "A/B/photo 1.jpg", "queued")]
    assert (layout.work / "stray-folder").is_dir()  # not ours: left alone
    assert intake.adopt() == []


def test_a_claimed_file_is_a_private_copy_its_dropper_cannot_change(
        layout: Layout, intake: Intake) -> None:
    data = image_bytes("JPEG")
    path = drop(layout.root, "photo.jpg", data)
    os.chmod(path, 0o666)
    with path.open("r+b") as dropper:  # still open, as the dropper may keep it
        job = intake.offer(path)
        assert job is not None and job.state == "queued"
        claimed = layout.work / job.id
        dropper.write(b"rewritten after the claim")
    st = claimed.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_nlink) == (0o600, os.geteuid(), 1)
    assert claimed.read_bytes() == data


def test_a_claimed_file_is_read_once_as_a_regular_file_within_the_limit(
        layout: Layout, intake: Intake, tmp_path: Path) -> None:
    plain = tmp_path / "plain.jpg"
    plain.write_bytes(image_bytes("JPEG"))
    plain.chmod(0o644)
    assert claimed_bytes(plain, intake.limits) == image_bytes("JPEG")
    assert stat.S_IMODE(plain.stat().st_mode) == 0o600  # made private before it is used
    link = tmp_path / "link.jpg"
    link.symlink_to(plain)
    with pytest.raises(InputError, match="refused, it is a symbolic link"):
        read_claimed(link, intake.limits)
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="refused, it is not a regular file"):
        read_claimed(fifo, intake.limits)  # opened without blocking, never read
    large = tmp_path / "large.jpg"
    large.write_bytes(bytes(20_000))
    with pytest.raises(InputError, match=r"over the limit of 0\.01 MB"):
        read_claimed(large, intake.limits)


def test_a_file_grown_since_it_was_looked_at_is_read_whole_within_the_limit(
        intake: Intake, tmp_path: Path) -> None:
    path = tmp_path / "growing.jpg"
    path.write_bytes(b"first ")
    with path.open("rb") as read, path.open("ab") as write:
        looked = os.fstat(read.fileno())
        write.write(b"and more")
        write.flush()
        assert read_within(read.fileno(), looked, intake.limits) == b"first and more"
        write.write(bytes(20_000))
        write.flush()
        os.lseek(read.fileno(), 0, os.SEEK_SET)
        with pytest.raises(InputError, match=r"over the limit of 0\.01 MB"):
            read_within(read.fileno(), looked, intake.limits)


def test_adopt_reads_any_path_bytes_and_drops_notes_of_claims_that_never_happened(
        layout: Layout, intake: Intake) -> None:
    layout.work.mkdir(parents=True)
    raw = b"Kunde \xe4/caf\xe9 " + b"x" * 300 + b".jpg"  # not UTF-8, longer than a name
    (layout.work / "0123456789ab").write_bytes(image_bytes("JPEG"))
    (layout.work / "0123456789ab.path").write_bytes(raw)
    (layout.work / "ba9876543210.path").write_bytes(b"A/gone.jpg")  # killed before the rename
    (layout.work / "ba9876543210.result").write_bytes(b"{}\n")
    (layout.work / "cccccccccccc").write_bytes(b"no note of its path")
    (job,) = intake.adopt()
    assert (job.id, os.fsencode(job.rel), job.state) == ("0123456789ab", raw, "queued")
    assert intake.journal.get(job.id) == job  # stored and read back byte for byte
    assert sorted(p.name for p in layout.work.iterdir()) == [
        "0123456789ab", "0123456789ab.path", "cccccccccccc"]  # the last left for the operator


def test_a_name_that_is_not_utf8_is_claimed_and_refused_with_its_bytes_escaped(
        layout: Layout, intake: Intake) -> None:
    path = drop(layout.root, os.fsdecode(b"W\xfcrfel/caf\xe9.jpg"), b"not a picture\n" * 10)
    job = intake.offer(path)
    assert job is not None and job.reason is not None
    assert os.fsencode(job.rel) == b"W\xfcrfel/caf\xe9.jpg"
    assert job.reason.startswith("W\\xfcrfel/caf\\xe9.jpg: the file is")
    assert os.fsencode(intake.work.recorded(job.id) or "") == b"W\xfcrfel/caf\xe9.jpg"


def test_files_found_together_are_claimed_at_once_each_into_a_private_job(
        layout: Layout, intake: Intake) -> None:
    dropped = {f"Folder{n % 3}/p{n:03d}.jpg": image_bytes("JPEG", (8, 8), seed=n)
               for n in range(150)}
    paths = [drop(layout.root, rel, data) for rel, data in dropped.items()]
    theirs = paths[0]
    os.chown(theirs, 65534, 65534)  # dropped by another user
    ours = {path: path.stat().st_ino for path in paths[1:]}
    (layout.inbox / "Folder0" / "link.jpg").symlink_to(paths[1])
    outcomes = intake.claim_all([*paths, layout.inbox / "Folder0" / "link.jpg"])
    claims = [outcome for outcome in outcomes if isinstance(outcome, Claim)]
    assert [claim.state for claim in claims] == ["queued"] * 150 + ["failed"]
    assert intake.journal.counts() == {"queued": 150, "failed": 1}
    for path, claim in zip(paths, claims, strict=False):
        claimed = layout.work / claim.id
        st = claimed.stat()
        assert claim.rel == path.relative_to(layout.inbox).as_posix()
        assert claimed.read_bytes() == dropped[claim.rel] and not path.exists()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_nlink) == (0o600, os.geteuid(), 1)
        if path in ours:  # made private where it is; another user's file is copied (owner)
            assert st.st_ino == ours[path]
        assert intake.work.recorded(claim.id) == claim.rel
    # Another user's file is copied, its path noted beside it (a link, never followed).
    assert os.readlink(layout.work / f"{claims[0].id}.path") == claims[0].rel
    assert not list(layout.work.glob(".hf-*"))  # no copy left behind


def test_a_lone_claim_is_a_log_line_of_its_own_and_a_batch_one_line(
        layout: Layout, intake: Intake, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hotfolder.intake")
    lone = intake.offer(drop(layout.root, "Engrave/one.jpg", image_bytes("JPEG")))
    assert lone is not None
    assert caplog.messages == [f"job {lone.id}: claimed Engrave/one.jpg (jpeg, {lone.size} bytes)"]
    caplog.clear()
    paths = [drop(layout.root, f"Engrave/p{n}.jpg", image_bytes("JPEG", (8, 8), seed=n))
             for n in range(5)]
    paths.append(drop(layout.root, "Engrave/notes.jpg", b"just some notes\n"))
    claims = [outcome for outcome in intake.claim_all(paths) if isinstance(outcome, Claim)]
    assert len(claims) == 6
    first, last = claims[0], claims[-1]
    assert caplog.messages == [f"claimed 6 files, Engrave/p0.jpg (job {first.id}) to"
                               f" Engrave/notes.jpg (job {last.id})"]
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="hotfolder.intake")  # each file's line
    again = [drop(layout.root, f"Engrave/q{n}.jpg", image_bytes("JPEG")) for n in range(3)]
    intake.claim_all(again)
    assert [message.split(": ", 1)[1].split(" (")[0] for message in caplog.messages[:3]] == [
        "claimed Engrave/q0.jpg", "claimed Engrave/q1.jpg", "claimed Engrave/q2.jpg"]
    assert caplog.messages[3].startswith("claimed 3 files, Engrave/q0.jpg")


def test_a_batch_cut_short_before_its_record_is_found_again_from_the_work_folder(
        layout: Layout) -> None:
    class Dies(SqliteJournal):  # the service killed between the renames and the record
        def add_all(self, claims: Sequence[Claim]) -> None:
            raise sqlite3.OperationalError("killed")

    limits = Config(root=layout.root).limits
    paths = [drop(layout.root, f"A/p{n}.jpg", image_bytes("JPEG", seed=n)) for n in range(20)]
    with pytest.raises(sqlite3.OperationalError):
        Intake(layout, limits, Dies(layout.state / "journal.db")).claim_all(paths)
    assert not any(path.exists() for path in paths)
    restarted = Intake(layout, limits, SqliteJournal(layout.state / "journal.db"))
    jobs = restarted.adopt()
    assert sorted(job.rel for job in jobs) == sorted(f"A/p{n}.jpg" for n in range(20))
    assert all((layout.work / job.id).read_bytes() == image_bytes("JPEG", seed=int(job.rel[3:-4]))
               for job in jobs)


def test_a_batch_whose_bytes_cannot_be_synced_claims_nothing(
        layout: Layout, intake: Intake, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [drop(layout.root, f"A/p{n}.jpg", image_bytes("JPEG", seed=n)) for n in range(5)]
    os.chown(paths[0], 65534, 65534)  # copied, not made private in place

    def failing_disk(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing_disk)
    outcomes = intake.claim_all(paths)
    assert all(isinstance(outcome, OSError) for outcome in outcomes)
    assert all(path.exists() for path in paths)  # each stays in the inbox, as it was
    assert list(layout.work.iterdir()) == []  # no note, no copy
    assert intake.journal.counts() == {}
