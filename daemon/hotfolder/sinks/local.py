"""Local folders: results into outbox/, originals into failed/, quarantine/ or archive/.

Every write is atomic (hotfolder.files: an unnamed file, fsynced, then linked or
renamed). Folders are opened one level at a time without following symlinks, so
nothing is written outside the root, whatever links someone plants in it.

Moving an original out of the work folder, in crash order:
1. the report (NAME.error.json, NAME.scan.json) is written atomically where
   the file will go, so the file is never anywhere without its reason;
2. the file gets its new name (a hard link on the same filesystem; across
   filesystems a fsynced copy under a temporary name, then linked);
3. the work folder's name is removed.
A crash after 1 leaves the original in the work folder and its job in the
journal: the job runs again and rewrites the report. A crash after 2 leaves
identical content at the destination: the repeated move recognises it and only
removes the work folder's name. Moves into one folder hold a lock on it, so two
workers never pick the same name. A move into archive/ waits for the disk only for
its new name: the removal of the work folder's name may be lost with the power, which
leaves the job done and its original in both places, and the janitor removes the
work folder's name at the next start (hotfolder.janitor).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from hotfolder.errors import HotfolderError, InputError, Unavailable
from hotfolder.files import (
    DIR_FLAGS,
    create_new,
    fsync_dir,
    link_new,
    replace,
    sync_names,
    temp_name,
    write_temp,
)
from hotfolder.names import readable
from hotfolder.sinks import KeyedSink, key_parts, renamed

if TYPE_CHECKING:
    from hotfolder.scanner import Verdict

# The reports beside an original: why it failed, or what the scanner found.
ERROR_SUFFIX = ".error.json"
SCAN_SUFFIX = ".scan.json"

# Errors of the place, not of the file: the job waits and is retried.
WAIT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
               errno.ELOOP, errno.ENOTDIR}
PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600
# An original in failed/ or archive/: readable by the share's users, writable by the service.
ORIGINAL_FILE = 0o644


@contextmanager
def place_errors(where: Path) -> Iterator[None]:
    """OSError as a plain sentence: Unavailable for disk and permission problems."""
    try:
        yield
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            reason = "a folder on the way is a symlink or a file"
        if exc.errno == errno.ENAMETOOLONG:
            raise InputError(f"cannot write {where}: the name is too long",
                             detail=str(exc), stage="deliver") from None
        if exc.errno in WAIT_ERRNOS:
            raise Unavailable(f"cannot write {where}: {reason.lower()}", detail=str(exc)) from None
        raise


@contextmanager
def open_folder(root: Path, parts: Sequence[str], *, private: bool = False) -> Iterator[int]:
    """A descriptor of root/parts, creating folders, never following a symlink below root.

    Each folder is opened first and made only when missing: most are there already.
    """
    mode = PRIVATE_DIR if private else 0o777
    try:
        fd = os.open(root, DIR_FLAGS & ~os.O_NOFOLLOW)
    except FileNotFoundError:
        root.mkdir(mode=mode, parents=True, exist_ok=True)
        fd = os.open(root, DIR_FLAGS & ~os.O_NOFOLLOW)
    try:
        if private:
            os.fchmod(fd, PRIVATE_DIR)
        for part in parts:
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                try:
                    os.mkdir(part, mode, dir_fd=fd)
                    sync_names(fd)
                except FileExistsError:  # made by another worker meanwhile
                    pass
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
            if private:
                os.fchmod(fd, PRIVATE_DIR)
        yield fd
    finally:
        os.close(fd)


def open_regular(name: str | Path, folder: int | None = None) -> io.BufferedReader | None:
    """A plain file opened for reading without following a symlink; None for anything else."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                     dir_fd=folder)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise
    src = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        src.close()
        return None
    return src


def digest_at(folder: int | None, name: str | Path) -> str | None:
    """SHA-256 of a plain file; '' for a symlink or other non-file, None when nothing is there."""
    try:
        src = open_regular(name, folder)
    except FileNotFoundError:
        return None
    if src is None:
        return ""
    with src:
        return hashlib.file_digest(src, "sha256").hexdigest()


class OutboxSink(KeyedSink):
    """Results as files under a root folder (the outbox), written atomically."""

    name = "outbox"

    def __init__(self, root: Path) -> None:
        self.root = root

    def location(self, key: PurePosixPath) -> str:
        """The absolute path of the file."""
        return str(self.root / key)

    @contextmanager
    def _folder(self, key: PurePosixPath) -> Iterator[int]:
        with place_errors(self.root / key), open_folder(self.root, key.parts[:-1]) as fd:
            yield fd

    def _digest(self, key: PurePosixPath) -> str | None:
        with self._folder(key) as fd:
            return digest_at(fd, key.name)

    def _create(self, key: PurePosixPath, data: bytes, media_type: str,
                metadata: Mapping[str, str]) -> bool:
        with self._folder(key) as fd:
            return create_new(fd, data, key.name)

    def _replace(self, key: PurePosixPath, data: bytes, media_type: str,
                 metadata: Mapping[str, str]) -> None:
        with self._folder(key) as fd:
            replace(fd, data, key.name)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def report_bytes(report: Mapping[str, Any]) -> bytes:
    """A report file's content: indented UTF-8 JSON."""
    return (json.dumps(readable(report), indent=2, ensure_ascii=False) + "\n").encode()


def move_original(work_file: Path, root: Path, rel: PurePosixPath,
                  report: tuple[str, Mapping[str, Any]] | None = None, *,
                  private: bool = False, sha256: str | None = None,
                  sync_removal: bool = True, remove: bool = True) -> Path:
    """Move work_file to root/rel (renamed on conflict), its report (suffix, fields) first.

    `sha256` is the digest of the file's content when the job has it (the bytes it read
    from its private copy), which spares reading the file again to compare it with names
    already taken. Without `sync_removal`, the work folder is not synced after its name
    is removed (the new name is, before the removal); without `remove`, the name is left in
    the work folder, for the caller to remove once the new one is durable.
    """
    parts = key_parts(rel, portable=False)
    target = root.joinpath(*parts)
    file_mode = PRIVATE_FILE if private else 0o666
    with place_errors(target), open_folder(root, parts[:-1], private=private) as fd:
        # NFS cannot flock a folder; there the names are still never replaced (link), but
        # two workers failing files of the same name at the same instant could swap reports.
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        digest = sha256 or content_digest(work_file)
        if private and digest is not None:
            os.chmod(work_file, PRIVATE_FILE, follow_symlinks=False)
        elif digest is not None and os.lstat(work_file).st_uid == os.geteuid():
            os.chmod(work_file, ORIGINAL_FILE, follow_symlinks=False)  # from a private copy
        for candidate in renamed(PurePosixPath(parts[-1])):
            existing = digest_at(fd, candidate.name)
            if existing not in (None, digest):
                continue
            if report is not None:
                suffix, fields = report
                replace(fd, report_bytes(fields), candidate.name + suffix, file_mode)
            if existing is None:
                _place(work_file, fd, candidate.name, file_mode)
            if not remove:
                return target.with_name(candidate.name)
            work_file.unlink()
            if sync_removal:
                fsync_dir(work_file.parent)
            return target.with_name(candidate.name)
    raise Unavailable(f"cannot move {work_file.name} to {target.parent}: too many names taken")


def content_digest(work_file: Path) -> str | None:
    """SHA-256 of a file in the work folder, None for a link, FIFO, socket or device (never
    opened, no content to compare); FileNotFoundError when it is gone."""
    found = digest_at(None, work_file)
    if found is None:  # moved out meanwhile (by its job): no report without its file
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(work_file))
    return found or None


def _place(source: Path, folder: int, name: str, mode: int) -> None:
    """Give source a second name in folder (a fsynced copy when it is on another filesystem)."""
    try:
        os.link(source, name, dst_dir_fd=folder, follow_symlinks=False)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        if not link_new(folder, _copy_entry(source, folder, mode), name):
            raise FileExistsError(errno.EEXIST, "the name was taken", name) from None
    sync_names(folder)


def _copy_entry(source: Path, folder: int, mode: int) -> str:
    """A copy of source under a temporary name in folder; links and FIFOs are made anew."""
    st = os.lstat(source)
    if stat.S_ISLNK(st.st_mode):
        temp = temp_name()
        os.symlink(os.readlink(source), temp, dir_fd=folder)
        return temp
    if stat.S_ISFIFO(st.st_mode):
        temp = temp_name()
        os.mkfifo(temp, PRIVATE_FILE, dir_fd=folder)
        return temp
    src = open_regular(source)
    if src is None:
        raise OSError(errno.EXDEV, "a socket or device cannot be copied to another filesystem",
                      str(source))
    with src:
        return write_temp(folder, src, mode)


def to_failed(work_file: Path, failed_dir: Path, rel: PurePosixPath,
              error: HotfolderError) -> Path:
    """Move a problem job's original to failed/ with NAME.error.json (SPEC 4)."""
    return move_original(work_file, failed_dir, rel, (ERROR_SUFFIX, error_report(error, rel)))


def error_report(error: HotfolderError, rel: PurePosixPath) -> dict[str, Any]:
    """The fields of NAME.error.json: the reason in words, stage, detail, time, original."""
    return {"message": error.message, "stage": error.stage, "detail": error.detail,
            "time": _now(), "original": str(rel)}


def to_quarantine(  # noqa: PLR0917 - the argument order of the module contract
    work_file: Path, quarantine_dir: Path, rel: PurePosixPath, verdict: Verdict,
    sha256: str, original: Path | str,
) -> Path:
    """Move an infected original to quarantine/ (folders 0700, files 0600) with NAME.scan.json."""
    report = {"signature": verdict.signature, "scanner": verdict.scanner, "sha256": sha256,
              "original": str(original), "time": _now()}
    return move_original(work_file, quarantine_dir, rel, (SCAN_SUFFIX, report), private=True,
                         sha256=sha256)


def to_archive(work_file: Path, archive_dir: Path | None, rel: PurePosixPath,
               sha256: str | None = None, *, remove: bool = True) -> Path | None:
    """Move a processed original to archive/ (`sha256`: its digest when known), or delete it
    when archive_dir is None; either way without waiting for the disk to remove it from the
    work folder (its job is done: the janitor finishes a removal lost with the power).
    Without `remove`, its work-folder name is left for the caller to remove."""
    if archive_dir is not None:
        return move_original(work_file, archive_dir, rel, sha256=sha256, sync_removal=False,
                             remove=remove)
    if not remove:
        return None
    with place_errors(work_file):
        work_file.unlink(missing_ok=True)
    return None
