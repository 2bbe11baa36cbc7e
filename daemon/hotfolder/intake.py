"""Intake: check a dropped file without trusting it, then claim it as a job (SPEC 2, 8).

A file is looked at with `lstat` first: links, FIFOs, sockets and devices are refused
without being opened, and so is a file over the size limit: these move to failed/ with
their reason. Any other file is claimed by one atomic rename into `work/<job id>`,
its path noted beside it first (hotfolder.workfolder), then recorded in the journal:
the work folder alone is enough to find the job again if the service dies between
the two. Any name the file system accepts is claimed, whatever its length or bytes;
names in messages are shown escaped (hotfolder.names). A file whose
first bytes are not an accepted image is claimed with that refusal recorded: it is
scanned like any other, so malware goes to quarantine/, and fails only once clean.
The file's folder is reached from the inbox without following any link (a link to a
folder is refused as a file of its own), so no claim reaches outside the inbox.
Right after the rename, the claimed file is replaced by a private copy (the service's
own, mode 0600) of what it held: whoever dropped it, even with the file still open,
cannot change what the job reads. The job reads it once (`claimed_bytes`).
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import stat
from pathlib import Path, PurePosixPath

from hotfolder import imaging
from hotfolder.config import Layout, LimitsConfig
from hotfolder.errors import InputError
from hotfolder.files import replace, write_atomic
from hotfolder.journal import Job, Journal
from hotfolder.names import shown
from hotfolder.sinks import key_parts, renamed
from hotfolder.sinks.local import (
    ERROR_SUFFIX,
    PRIVATE_FILE,
    error_report,
    open_folder,
    place_errors,
    report_bytes,
    to_failed,
)
from hotfolder.workfolder import JOB_ID_CHARS, WorkFolder

log = logging.getLogger("hotfolder.intake")


def new_job_id() -> str:
    """A short random job id, also the job's file name in the work folder."""
    return secrets.token_hex(JOB_ID_CHARS // 2)


def inbox_path(text: str) -> PurePosixPath | None:
    """`text` as a file's path inside the inbox, or None when it could lead anywhere else:
    absolute, empty, with an empty, `.` or `..` component, or a NUL character.

    Both what is claimed and what is adopted from the work folder (its noted path) pass
    through here.
    """
    parts = text.split("/")
    if "\0" in text or any(part in ("", ".", "..") for part in parts):
        return None
    return PurePosixPath(text)


def special_kind(st: os.stat_result) -> str | None:
    """Why a file must not be opened (link, FIFO, socket, device), or None for a plain file."""
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return "it is a symbolic link"
    if stat.S_ISFIFO(mode):
        return "it is a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "it is a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "it is a device"
    if stat.S_ISREG(mode) and st.st_nlink > 1:
        return f"it has {st.st_nlink} hard links (another name points to the same data)"
    return None


def read_head(path: Path, expect: os.stat_result, size: int) -> bytes:
    """The first `size` bytes of a regular file, refusing one swapped since `expect`."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (expect.st_dev, expect.st_ino) or not stat.S_ISREG(
            st.st_mode
        ):
            raise InputError("the file was replaced while it was being checked", stage="intake")
        return os.read(fd, size)
    finally:
        os.close(fd)


def read_claimed(path: Path, limits: LimitsConfig) -> tuple[bytes, os.stat_result]:
    """A claimed file's whole content, read once through one descriptor, and its fstat: never
    through a link, only a regular file within limits.max_file_mb."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise InputError("refused, it is a symbolic link", stage="intake") from None
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError("refused, it is not a regular file", stage="intake")
        imaging.check_size(st.st_size, limits)
        data = src.read(limits.max_file_bytes + 1)
    imaging.check_size(len(data), limits)  # it may have grown since
    return data, st


def make_private(path: Path, data: bytes) -> None:
    """Replace the file at path by a new one holding `data` that only this user can read and
    write: whoever wrote the old one, or still holds it open, cannot change it.

    The copy's bytes are synced before its rename, the folder is not: until it is, the power
    may take the rename away, which leaves the claimed file of the same bytes (SPEC 8.1), made
    private again when its job reads it."""
    write_atomic(path, data, PRIVATE_FILE, sync_folder=False)


def claimed_bytes(path: Path, limits: LimitsConfig) -> bytes:
    """A claimed file's content, read once (see read_claimed); the file is made private
    first when it is not yet (its claim was cut short)."""
    data, st = read_claimed(path, limits)
    if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) != PRIVATE_FILE or st.st_nlink != 1:
        with place_errors(path):  # a full disk makes the job wait
            make_private(path, data)
    return data


def open_below(top: Path, rel: PurePosixPath) -> int:
    """A descriptor of the folder rel under top, reached without following any link."""
    fd = os.open(top, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in rel.parts:
            child = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                            dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def park_special(path: Path, failed_dir: Path, rel: PurePosixPath, error: InputError) -> bool:
    """Move a link, FIFO, socket or device to failed/ by renaming only; False across filesystems."""
    parts = key_parts(rel)
    with open_folder(failed_dir, parts[:-1]) as fd:
        if os.fstat(fd).st_dev != os.lstat(path).st_dev:
            return False
        for candidate in renamed(PurePosixPath(parts[-1])):
            try:
                os.lstat(candidate.name, dir_fd=fd)
                continue
            except FileNotFoundError:
                pass
            replace(fd, report_bytes(error_report(error, rel)), candidate.name + ERROR_SUFFIX)
            os.rename(path, candidate.name, dst_dir_fd=fd)
            os.fsync(fd)
            return True
    return False


class Intake:
    """Checks and claims files of one inbox into its work folder and journal."""

    def __init__(self, layout: Layout, limits: LimitsConfig, journal: Journal) -> None:
        self.layout = layout
        self.limits = limits
        self.journal = journal
        self.work = WorkFolder(layout.work)
        self._left: set[tuple[int, int]] = set()

    def offer(self, path: Path) -> Job | None:
        """Check and claim one file: a queued job, a failed one when refused, None when gone."""
        try:
            rel = inbox_path(path.relative_to(self.layout.inbox).as_posix())
        except ValueError:
            return None
        if rel is None:
            log.warning("%s is not a file's path inside the inbox; left alone", path)
            return None
        try:
            folder = open_below(self.layout.inbox, rel.parent)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return None  # gone, or reached through a link (the link itself gets refused)
            raise
        try:
            # The folder's descriptor stands in for the path to it: no link in it is resolved.
            return self._check(Path(f"/proc/self/fd/{folder}") / rel.name, rel)
        finally:
            os.close(folder)

    def offer_as(self, path: Path, rel: PurePosixPath) -> Job | None:
        """Check and claim a file kept elsewhere on the inbox's filesystem (an upload) as if
        it had been dropped at inbox/rel."""
        return self._check(path, rel)

    def _check(self, path: Path, rel: PurePosixPath) -> Job | None:
        """Check the file at path (inbox-relative rel) and claim it, or refuse it."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(st.st_mode):
            return None
        why = special_kind(st)
        if why is not None:
            error = InputError(f"{shown(rel)}: refused, {why}", stage="intake")
            return self._refuse(path, rel, st, error)
        try:
            imaging.check_size(st.st_size, self.limits)
        except InputError as exc:
            error = InputError(f"{shown(rel)}: {exc.message}", stage="intake")
            return self._refuse(path, rel, st, error)
        try:
            kind, refusal = self._sniff(path, rel, st), None
        except FileNotFoundError:
            return None
        except InputError as exc:  # claimed all the same: it is scanned before it fails
            kind, refusal = None, exc.message
        return self._claim(path, rel, st, kind, refusal)

    def _sniff(self, path: Path, rel: PurePosixPath, st: os.stat_result) -> str:
        """The file's type by its first bytes; InputError when it is not an accepted image."""
        try:
            return imaging.sniff(read_head(path, st, imaging.SNIFF_BYTES), self.limits.formats)
        except InputError as exc:
            raise InputError(f"{shown(rel)}: {exc.message}", detail=exc.detail,
                             stage="intake") from None

    def _claim(self, path: Path, rel: PurePosixPath, st: os.stat_result, kind: str | None,
               refusal: str | None) -> Job | None:
        """Rename the file into the work folder and record the job (with its refusal, if any)."""
        job_id = new_job_id()
        self.work.record(job_id, rel.as_posix())
        target = self.work.file(job_id)
        try:
            os.rename(path, target)
        except OSError:  # claimed by a concurrent offer, removed meanwhile, or a fault
            self.work.release(job_id)
            if not os.path.lexists(path):
                return None
            raise
        moved = os.lstat(target)
        if (moved.st_dev, moved.st_ino) != (st.st_dev, st.st_ino):
            error = InputError(f"{shown(rel)}: the file was replaced while it was being checked",
                               stage="intake")
            job = self._refuse(target, rel, moved, error, job_id)
            self.work.release(job_id)
            return job
        try:  # from now on, no one but the service can change what the job will read
            make_private(target, read_claimed(target, self.limits)[0])
        except InputError as exc:  # it grew past the limit since it was checked
            error = InputError(f"{shown(rel)}: {exc.message}", stage="intake")
            job = self._refuse(target, rel, moved, error, job_id)
            self.work.release(job_id)
            return job
        except OSError as exc:  # a full disk, say: the job makes the copy before it reads
            log.warning("job %s: %s not made private at its claim: %s", job_id, rel, exc)
        self.journal.add(job_id, rel.as_posix(), kind=kind, size=st.st_size, reason=refusal)
        log.info("job %s: claimed %s (%s, %d bytes)", job_id, rel, kind or "refused",
                 st.st_size)
        return self.journal.get(job_id)

    def _refuse(self, path: Path, rel: PurePosixPath, st: os.stat_result, error: InputError,
                job_id: str | None = None) -> Job | None:
        """Move a refused file to failed/ with its reason; a special file is never opened."""
        key = (st.st_dev, st.st_ino)
        if key in self._left:
            return None
        job_id = job_id or new_job_id()
        try:
            if special_kind(st) is None:
                to_failed(path, self.layout.failed, rel, error)
            elif not park_special(path, self.layout.failed, rel, error):
                self._left.add(key)
                log.warning("%s; left in place (failed/ is on another filesystem)", error.message)
                return None
        except FileNotFoundError:
            return None
        self.journal.add(job_id, rel.as_posix(), kind=None, size=st.st_size, state="failed",
                         reason=error.message)
        log.warning("job %s: %s; moved to failed/", job_id, error.message)
        return self.journal.get(job_id)

    def adopt(self) -> list[Job]:
        """Jobs for work-folder files the journal lacks (a crash right after a claim)."""
        for stray in self.work.strays():
            log.warning("%s in the work folder is not a claimed file; left alone", stray)
        for job_id in self.work.unclaimed():  # a claim that never happened, or a job's leftovers
            self.work.release(job_id)
        known = self.journal.ids()
        adopted = []
        for job_id in self.work.claimed():
            if job_id in known:
                continue
            job = self._adopt(job_id)
            if job is not None:
                adopted.append(job)
        return adopted

    def _adopt(self, job_id: str) -> Job | None:
        """Record the job of one work-folder file from the path noted beside it."""
        entry = self.work.file(job_id)
        rel = self.work.recorded(job_id)
        if rel is None:
            log.warning("%s in the work folder has no record of its path; left alone", entry)
            return None
        if inbox_path(rel) is None:
            log.warning("%s in the work folder has a path that is not inside the inbox (%s);"
                        " left alone", entry, rel)
            return None
        self.journal.add(job_id, rel, kind=None, size=entry.lstat().st_size)
        log.info("job %s: found %s in the work folder, queued again", job_id, rel)
        return self.journal.get(job_id)
