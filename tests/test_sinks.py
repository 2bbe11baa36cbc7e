"""Sinks: one contract run against the outbox, S3 (moto over HTTP) and the in-memory sink;
moves of originals."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import pytest

from hotfolder.config import S3Config
from hotfolder.errors import InputError, Unavailable
from hotfolder.scanner import Verdict
from hotfolder.sinks import KeyedSink, MemorySink
from hotfolder.sinks.local import OutboxSink, to_archive, to_failed, to_quarantine
from hotfolder.sinks.s3 import S3Sink
from moto_server import S3Endpoint

KEY = PurePosixPath("Wood/Oak/photo.png")


def deliver(sink: KeyedSink, data: bytes, key: PurePosixPath | str = KEY,
            on_conflict: str = "rename") -> str | None:
    return sink.deliver(PurePosixPath(key), data, media_type="image/png",
                        metadata={"source": "photo.jpg"}, on_conflict=on_conflict)


class SinkContract:
    """What every sink does; subclasses provide `sink`, `read(location)` and `stored()`."""

    def read(self, sink: KeyedSink, location: str) -> bytes:
        raise NotImplementedError

    def stored(self, sink: KeyedSink) -> dict[str, bytes]:
        raise NotImplementedError

    def test_stores_the_bytes_under_the_key(self, sink: KeyedSink) -> None:
        location = deliver(sink, b"result")
        assert location is not None
        assert location.endswith("Wood/Oak/photo.png")
        assert self.read(sink, location) == b"result"
        assert self.stored(sink) == {"Wood/Oak/photo.png": b"result"}

    def test_rename_keeps_both(self, sink: KeyedSink) -> None:
        first, second, third = (deliver(sink, data) for data in (b"one", b"two", b"three"))
        assert self.stored(sink) == {"Wood/Oak/photo.png": b"one", "Wood/Oak/photo-1.png": b"two",
                                     "Wood/Oak/photo-2.png": b"three"}
        assert second is not None
        assert second.endswith("photo-1.png")
        assert len({first, second, third}) == 3

    @pytest.mark.parametrize("on_conflict", ["rename", "overwrite", "skip"])
    def test_same_content_again_is_already_delivered(self, sink: KeyedSink,
                                                     on_conflict: str) -> None:
        first = deliver(sink, b"result", on_conflict=on_conflict)
        again = deliver(sink, b"result", on_conflict=on_conflict)
        assert first == again
        assert self.stored(sink) == {"Wood/Oak/photo.png": b"result"}

    def test_rename_finds_its_earlier_delivery(self, sink: KeyedSink) -> None:
        deliver(sink, b"someone else's")
        mine = deliver(sink, b"mine")
        assert deliver(sink, b"mine") == mine
        assert len(self.stored(sink)) == 2

    def test_overwrite_replaces(self, sink: KeyedSink) -> None:
        deliver(sink, b"old", on_conflict="overwrite")
        location = deliver(sink, b"new", on_conflict="overwrite")
        assert location is not None
        assert self.read(sink, location) == b"new"
        assert self.stored(sink) == {"Wood/Oak/photo.png": b"new"}

    def test_skip_keeps_what_is_there(self, sink: KeyedSink) -> None:
        deliver(sink, b"old", on_conflict="skip")
        assert deliver(sink, b"new", on_conflict="skip") is None
        assert self.stored(sink) == {"Wood/Oak/photo.png": b"old"}

    @pytest.mark.parametrize(("key", "reason"), [
        ("../photo.png", "has a '..' component"),
        ("Wood/../../photo.png", "has a '..' component"),
        ("/etc/photo.png", "is absolute"),
        ("Wood\\..\\photo.png", "contains a backslash"),
        ("pho\x00to.png", "contains a NUL character"),
        ("pho\nto.png", "contains a control character"),
        ("", "is empty"),
    ])
    def test_keys_never_leave_the_root(self, sink: KeyedSink, key: str,
                                       reason: str) -> None:
        with pytest.raises(InputError, match=reason) as info:
            deliver(sink, b"x", key=key)
        assert info.value.message.startswith("the output name ")
        assert self.stored(sink) == {}

    def test_unknown_conflict_rule_is_refused(self, sink: KeyedSink) -> None:
        with pytest.raises(ValueError, match="rename, overwrite, skip"):
            deliver(sink, b"x", on_conflict="merge")


class TestMemorySink(SinkContract):
    @pytest.fixture
    def sink(self) -> MemorySink:
        return MemorySink()

    def read(self, sink: KeyedSink, location: str) -> bytes:
        assert isinstance(sink, MemorySink)
        return sink.objects[PurePosixPath(location.removeprefix("memory://"))].data

    def stored(self, sink: KeyedSink) -> dict[str, bytes]:
        assert isinstance(sink, MemorySink)
        return {str(key): obj.data for key, obj in sink.objects.items()}

    def test_keeps_media_type_and_metadata(self, sink: MemorySink) -> None:
        deliver(sink, b"x")
        assert sink.objects[KEY].media_type == "image/png"
        assert sink.objects[KEY].metadata == {"source": "photo.jpg"}

    def test_switched_off_is_unavailable(self, sink: MemorySink) -> None:
        sink.available = False
        with pytest.raises(Unavailable, match="switched off"):
            deliver(sink, b"x")


class TestS3Sink(SinkContract):
    @pytest.fixture
    def sink(self, s3: S3Endpoint) -> S3Sink:
        return S3Sink(S3Config(bucket=s3.bucket(), endpoint_url=s3.url, region="us-east-1"))

    def read(self, sink: KeyedSink, location: str) -> bytes:
        assert isinstance(sink, S3Sink)
        key = location.removeprefix(f"s3://{sink.cfg.bucket}/")
        return bytes(sink.client.get_object(Bucket=sink.cfg.bucket, Key=key)["Body"].read())

    def stored(self, sink: KeyedSink) -> dict[str, bytes]:
        assert isinstance(sink, S3Sink)
        listing = sink.client.list_objects_v2(Bucket=sink.cfg.bucket)
        return {item["Key"]: self.read(sink, f"s3://{sink.cfg.bucket}/{item['Key']}")
                for item in listing.get("Contents", [])}


def all_files(root: Path) -> dict[str, bytes]:
    """Every file under root, dot-names (temporary files) included."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


class TestOutboxSink(SinkContract):
    @pytest.fixture
    def sink(self, tmp_path: Path) -> OutboxSink:
        return OutboxSink(tmp_path / "outbox")

    def read(self, sink: KeyedSink, location: str) -> bytes:
        return Path(location).read_bytes()

    def stored(self, sink: KeyedSink) -> dict[str, bytes]:
        assert isinstance(sink, OutboxSink)
        return all_files(sink.root) if sink.root.exists() else {}

    def test_concurrent_deliveries_of_one_name_all_land(self, sink: OutboxSink) -> None:
        datas = [f"result {n}".encode() for n in range(16)]
        with ThreadPoolExecutor(8) as pool:
            locations = list(pool.map(lambda data: deliver(sink, data), datas))
        assert len(set(locations)) == 16
        assert sorted(self.stored(sink).values()) == sorted(datas)

    def test_symlinked_folder_is_not_followed(self, sink: OutboxSink, tmp_path: Path) -> None:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        sink.root.mkdir()
        (sink.root / "Wood").symlink_to(elsewhere)
        with pytest.raises(Unavailable, match="a folder on the way is a symlink or a file"):
            deliver(sink, b"x")
        assert list(elsewhere.iterdir()) == []

    @pytest.mark.parametrize("on_conflict", ["rename", "overwrite"])
    def test_symlink_at_the_name_is_never_written_through(self, sink: OutboxSink,
                                                          tmp_path: Path, on_conflict: str) -> None:
        target = tmp_path / "precious.txt"
        target.write_bytes(b"precious")
        (sink.root / "Wood/Oak").mkdir(parents=True)
        (sink.root / KEY).symlink_to(target)
        location = deliver(sink, b"result", on_conflict=on_conflict)
        assert location is not None
        assert Path(location).read_bytes() == b"result"
        assert not Path(location).is_symlink()
        assert target.read_bytes() == b"precious"

    def test_files_are_readable_by_others(self, sink: OutboxSink) -> None:
        location = deliver(sink, b"x")
        assert location is not None
        assert stat.S_IMODE(os.stat(location).st_mode) & 0o044 == 0o044


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs of its own (skipped where mounting is not permitted)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def remount_read_only(mount: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)


def test_full_disk_is_unavailable_and_leaves_no_temp_file(small_fs: Path) -> None:
    sink = OutboxSink(small_fs / "outbox")
    with pytest.raises(Unavailable, match=r"outbox/Wood/Oak/photo.png: no space left on device"):
        deliver(sink, os.urandom(256 * 1024))
    assert all_files(small_fs) == {}
    assert deliver(sink, b"small") is not None


def test_read_only_outbox_is_unavailable(small_fs: Path) -> None:
    sink = OutboxSink(small_fs / "outbox")
    (small_fs / "outbox").mkdir()
    remount_read_only(small_fs)
    with pytest.raises(Unavailable, match="read-only file system"):
        deliver(sink, b"x")


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A claimed original in the work folder."""
    path = tmp_path / "inbox/.hotfolder/job1/Wood/photo.jpg"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"original bytes")
    return path


REL = PurePosixPath("Wood/photo.jpg")


def test_to_failed_moves_the_original_with_its_reason(work: Path, tmp_path: Path) -> None:
    error = InputError("photo.jpg is not an image: the JPEG data ends early", detail="EOF")
    moved = to_failed(work, tmp_path / "failed", REL, error)
    assert moved == tmp_path / "failed/Wood/photo.jpg"
    assert moved.read_bytes() == b"original bytes"
    assert not work.exists()
    report = json.loads((tmp_path / "failed/Wood/photo.jpg.error.json").read_text())
    assert report["message"] == "photo.jpg is not an image: the JPEG data ends early"
    assert (report["stage"], report["detail"], report["original"]) == ("decode", "EOF",
                                                                      "Wood/photo.jpg")
    assert report["time"].endswith("+00:00")


def test_a_file_gone_before_its_move_leaves_no_report(tmp_path: Path) -> None:
    """The cleanup may list a work file that its job moves out an instant later."""
    error = InputError("photo.jpg: left in the work folder after its job ended (done)")
    with pytest.raises(FileNotFoundError):
        to_failed(tmp_path / "gone", tmp_path / "failed", REL, error)
    assert not (tmp_path / "failed/Wood/photo.jpg.error.json").exists()


def test_to_failed_never_replaces_an_earlier_failure(work: Path, tmp_path: Path) -> None:
    earlier = tmp_path / "failed/Wood/photo.jpg"
    earlier.parent.mkdir(parents=True)
    earlier.write_bytes(b"another photo")
    moved = to_failed(work, tmp_path / "failed", REL, InputError("bad"))
    assert moved.name == "photo-1.jpg"
    assert earlier.read_bytes() == b"another photo"
    assert json.loads(moved.with_name("photo-1.jpg.error.json").read_text())["message"] == "bad"


def test_move_repeated_after_a_crash_leaves_one_copy(work: Path, tmp_path: Path) -> None:
    # The crash came after the link into failed/ and before the work name was removed.
    linked = tmp_path / "failed/Wood/photo.jpg"
    linked.parent.mkdir(parents=True)
    os.link(work, linked)
    moved = to_failed(work, tmp_path / "failed", REL, InputError("bad"))
    assert moved == linked
    assert not work.exists()
    assert sorted(p.name for p in linked.parent.iterdir()) == ["photo.jpg",
                                                               "photo.jpg.error.json"]


def test_report_left_by_a_crash_is_rewritten(work: Path, tmp_path: Path) -> None:
    # The crash came after the report was written and before the file was moved.
    stale = tmp_path / "failed/Wood/photo.jpg.error.json"
    stale.parent.mkdir(parents=True)
    stale.write_text('{"message": "old"}')
    moved = to_failed(work, tmp_path / "failed", REL, InputError("new"))
    assert moved.name == "photo.jpg"
    assert json.loads(stale.read_text())["message"] == "new"


def test_originals_keep_names_windows_would_not_allow(tmp_path: Path) -> None:
    odd = tmp_path / "inbox/.hotfolder/job2/Wood/a\\b\n.jpg"
    odd.parent.mkdir(parents=True)
    odd.write_bytes(b"odd")
    moved = to_failed(odd, tmp_path / "failed", PurePosixPath("Wood/a\\b\n.jpg"),
                      InputError("bad"))
    assert moved == tmp_path / "failed/Wood/a\\b\n.jpg"
    assert moved.read_bytes() == b"odd"
    with pytest.raises(InputError, match=r"has a '\.\.' component"):
        to_failed(odd, tmp_path / "failed", PurePosixPath("../escape.jpg"), InputError("bad"))


def test_to_quarantine_is_private(work: Path, tmp_path: Path) -> None:
    quarantine = tmp_path / "quarantine"
    quarantine.mkdir(mode=0o755)
    verdict = Verdict(clean=False, signature="Eicar-Test-Signature", scanner="clamd")
    moved = to_quarantine(work, quarantine, REL, verdict, "ab" * 32, "inbox/Wood/photo.jpg")
    assert moved == quarantine / "Wood/photo.jpg"
    assert not work.exists()
    for folder in (quarantine, quarantine / "Wood"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    report_path = quarantine / "Wood/photo.jpg.scan.json"
    for path in (moved, report_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    report = json.loads(report_path.read_text())
    assert report["signature"] == "Eicar-Test-Signature"
    assert report["sha256"] == "ab" * 32
    assert report["original"] == "inbox/Wood/photo.jpg"


def test_to_archive_moves_or_deletes(work: Path, tmp_path: Path) -> None:
    moved = to_archive(work, tmp_path / "archive", REL)
    assert moved == tmp_path / "archive/Wood/photo.jpg"
    assert moved.read_bytes() == b"original bytes"
    assert not work.exists()
    work.write_bytes(b"second")
    assert to_archive(work, None, REL) is None
    assert not work.exists()


@pytest.mark.parametrize("known", [True, False], ids=["digest known", "digest read"])
def test_archive_repeated_after_a_crash_leaves_one_copy(work: Path, tmp_path: Path,
                                                        known: bool) -> None:
    # The job passes the digest of the bytes it read; without it the file is read again.
    sha256 = hashlib.sha256(work.read_bytes()).hexdigest() if known else None
    archive = tmp_path / "archive/Wood"
    archive.mkdir(parents=True)
    (archive / "photo.jpg").write_bytes(b"an older photo of that name")
    os.link(work, archive / "photo-1.jpg")  # the crash came after the link
    moved = to_archive(work, tmp_path / "archive", REL, sha256)
    assert moved == archive / "photo-1.jpg"
    assert not work.exists()
    assert sorted(p.name for p in archive.iterdir()) == ["photo-1.jpg", "photo.jpg"]
    assert (archive / "photo.jpg").read_bytes() == b"an older photo of that name"


def test_move_across_filesystems(work: Path, small_fs: Path) -> None:
    moved = to_failed(work, small_fs / "failed", REL, InputError("bad"))
    assert moved.read_bytes() == b"original bytes"
    assert not work.exists()
    assert sorted(all_files(small_fs)) == ["failed/Wood/photo.jpg",
                                           "failed/Wood/photo.jpg.error.json"]


def test_full_failed_disk_keeps_the_original(work: Path, small_fs: Path) -> None:
    work.write_bytes(os.urandom(256 * 1024))
    with pytest.raises(Unavailable, match="no space left on device"):
        to_failed(work, small_fs / "failed", REL, InputError("bad"))
    assert work.stat().st_size == 256 * 1024
    assert not any(p.name.endswith(".tmp") for p in small_fs.rglob("*"))


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_bytes(b"secret")
    return path


def special(work_dir: Path, kind: str, secret: Path) -> Path:
    """A symlink to a secret, or a FIFO that would block whoever opens it, in the work folder."""
    path = work_dir / "Wood" / "photo.jpg"
    path.parent.mkdir(parents=True)
    if kind == "symlink":
        path.symlink_to(secret)
    else:
        os.mkfifo(path)
    return path


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_special_files_are_moved_without_being_opened(tmp_path: Path, secret: Path,
                                                      kind: str) -> None:
    path = special(tmp_path / "work", kind, secret)
    moved = to_failed(path, tmp_path / "failed", REL, InputError("refused, it is a link"))
    assert not os.path.lexists(path)
    mode = moved.lstat().st_mode
    assert stat.S_ISLNK(mode) if kind == "symlink" else stat.S_ISFIFO(mode)
    assert secret.read_bytes() == b"secret"
    assert (tmp_path / "failed/Wood/photo.jpg.error.json").exists()


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_special_files_move_across_filesystems(small_fs: Path, tmp_path: Path, secret: Path,
                                               kind: str) -> None:
    path = special(tmp_path / "work", kind, secret)
    secret_mode = secret.stat().st_mode
    moved = to_quarantine(path, small_fs / "quarantine", REL,
                          Verdict(clean=False, signature="x", scanner="clamd"), "", "x")
    assert not os.path.lexists(path)
    if kind == "symlink":
        assert os.readlink(moved) == str(secret)
    else:
        assert stat.S_ISFIFO(moved.lstat().st_mode)
    assert secret.read_bytes() == b"secret"
    assert secret.stat().st_mode == secret_mode  # the link's target was not made private


def test_a_symlink_beside_an_identical_file_is_not_taken_for_it(tmp_path: Path,
                                                               secret: Path) -> None:
    path = special(tmp_path / "work", "symlink", secret)
    (tmp_path / "failed/Wood").mkdir(parents=True)
    (tmp_path / "failed/Wood/photo.jpg").symlink_to(secret)
    moved = to_failed(path, tmp_path / "failed", REL, InputError("refused"))
    assert moved.name == "photo-1.jpg"
    assert moved.is_symlink()


WRITER = """
import os, sys
from hotfolder.files import write_temp
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
write_temp(fd, sys.stdin.buffer)
"""


def test_a_writer_killed_mid_write_leaves_no_file_in_the_folder(tmp_path: Path) -> None:
    """What a worker killed while writing leaves in the outbox: nothing, not even a temp name."""
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)],
                              stdin=subprocess.PIPE)
    assert writer.stdin is not None
    writer.stdin.write(b"x" * (4 << 20))  # returns once the writer has taken most of it
    writer.stdin.flush()
    writer.send_signal(signal.SIGKILL)
    assert writer.wait(10) == -signal.SIGKILL
    writer.stdin.close()
    assert os.listdir(tmp_path) == []

