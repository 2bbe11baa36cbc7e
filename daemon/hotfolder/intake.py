"""Intake: check a dropped file without trusting it, then claim it as a job (SPEC 2, 8).

A file is looked at with `lstat` first: links, FIFOs, sockets and devices are refused
without being opened, and so is a file over the size limit: these move to failed/ with
their reason. Any other file is claimed by one atomic rename into `work/<job id>`,
its path noted first (on the file or beside it, hotfolder.workfolder), then recorded in
the journal: the work folder alone is enough to find the job again if the service dies
between the two. Any name the file system accepts is claimed, whatever its length or
bytes; names in messages are shown escaped (hotfolder.names). A file whose first bytes
are not an accepted image is claimed with that refusal recorded: it is scanned like any
other, so malware goes to quarantine/, and fails only once clean.
The file's folder is reached from the inbox without following any link (a link to a
folder is refused as a file of its own), so no claim reaches outside the inbox.
Right after the rename, the claimed file is made private (the service's own, mode 0600):
whoever dropped it, even with the file still open, cannot change what the job reads. A
file of another user is replaced by a copy of what was read; the service's own file, when
no process has it open for writing, is given mode 0600 where it is (nobody but the
service's user could open it for writing again). The job reads it once (`claimed_bytes`).

Files found together (the start-up backlog above all) are claimed in one batch: each is
read and noted, and the copies and the service's own files are synced all at once, then
each is renamed into the work folder, then all are recorded in one transaction. Until
its bytes are synced no file has left the inbox, so the power can take nothing away that
was claimed. Files are checked and claimed one after another in the caller's thread (each
step is a few short system calls, which threads would only make wait for each other); only
the syncs, which wait for the disk, run from several threads at once. Only the first bytes of
the service's own file are read at its claim (its type is sniffed from them); anyone else's
file is read whole, to be copied.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from hotfolder import imaging
from hotfolder.config import Layout, LimitsConfig
from hotfolder.errors import HotfolderError, InputError
from hotfolder.files import SyncGroup, replace, write_atomic, write_temp
from hotfolder.journal import Claim, Job, Journal
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

WORK_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


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


def open_regular(path: str | Path, *, expect: os.stat_result | None = None,
                 dir_fd: int | None = None) -> tuple[int, os.stat_result]:
    """A read-only descriptor of a regular file (`path` in the folder open as dir_fd, if
    given) and its fstat, never through a link (and, with `expect`, of the file that was
    looked at)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise InputError("refused, it is a symbolic link", stage="intake") from None
    try:
        st = os.fstat(fd)
        if expect is not None and (st.st_dev, st.st_ino) != (expect.st_dev, expect.st_ino):
            raise InputError("the file was replaced while it was being checked", stage="intake")
        if not stat.S_ISREG(st.st_mode):
            raise InputError("refused, it is not a regular file", stage="intake")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_within(fd: int, st: os.stat_result, limits: LimitsConfig) -> bytes:
    """The whole content of an open file (fstat `st`) within limits.max_file_mb, read once."""
    imaging.check_size(st.st_size, limits)
    with os.fdopen(fd, "rb", closefd=False) as src:
        # Its size and a byte more: a buffer of the limit's size costs more than the read.
        data = src.read(st.st_size + 1)
        if len(data) > st.st_size:  # it has grown since: the rest, up to the limit
            data += src.read(limits.max_file_bytes + 1 - len(data))
    imaging.check_size(len(data), limits)
    return data


def read_head(fd: int, st: os.stat_result, limits: LimitsConfig) -> bytes:
    """The first bytes of an open file (fstat `st`) within limits.max_file_mb, enough to sniff
    its type."""
    imaging.check_size(st.st_size, limits)
    return os.pread(fd, imaging.SNIFF_BYTES, 0)


def read_claimed(path: Path, limits: LimitsConfig) -> tuple[bytes, os.stat_result]:
    """A claimed file's whole content, read once through one descriptor, and its fstat: never
    through a link, only a regular file within limits.max_file_mb."""
    fd, st = open_regular(path)
    try:
        return read_within(fd, st, limits), st
    finally:
        os.close(fd)


def held_for_writing(fd: int) -> bool:
    """Whether any process holds the open file open for writing (or mapped writable): a read
    lease cannot be taken then. Where leases are not offered, presumed so."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError:  # EAGAIN: a writer; EINVAL, ENOLCK: no leases on this filesystem
        return True
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    return False


def make_private(path: Path, data: bytes) -> None:
    """Replace the file at path by a new one holding `data` that only this user can read and
    write: whoever wrote the old one, or still holds it open, cannot change it.

    The copy's bytes are synced before its rename, the folder is not: until it is, the power
    may take the rename away, which leaves the claimed file of the same bytes (SPEC 8.1), made
    private again when its job reads it."""
    write_atomic(path, data, PRIVATE_FILE, sync_folder=False)


def is_private(st: os.stat_result) -> bool:
    """A claimed file made the service's own (see make_private)."""
    return (stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()
            and stat.S_IMODE(st.st_mode) == PRIVATE_FILE and st.st_nlink == 1)


def claimed_bytes(path: Path, limits: LimitsConfig) -> bytes:
    """A claimed file's content, read once (see read_claimed); the file is made private
    first when it is not yet (its claim was cut short)."""
    data, st = read_claimed(path, limits)
    if not is_private(st):
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


def say_claimed(claims: Sequence[Claim]) -> None:
    """One INFO line for the files a batch claimed (a backlog of thousands would otherwise
    cost a line each): a lone file's job, path, type and size, or how many and the first and
    last of them. Each file's own line is at DEBUG; a refusal has its WARNING already."""
    claimed = [claim for claim in claims if claim.state == "queued"]
    if len(claimed) == 1:
        claim = claimed[0]
        log.info("job %s: claimed %s (%s, %d bytes)", claim.id, claim.rel,
                 claim.kind or "refused", claim.size)
    elif claimed:
        first, last = claimed[0], claimed[-1]
        log.info("claimed %d files, %s (job %s) to %s (job %s)", len(claimed), first.rel,
                 first.id, last.rel, last.id)


class Source(NamedTuple):
    """A file to claim: its name in the folder open as `folder`, or its own path (None).

    A claim's system calls reach the file through the folder's descriptor, with no path to
    resolve again; only a refusal, which moves it to failed/, needs a path (through /proc)."""

    folder: int | None
    name: str

    @property
    def path(self) -> Path:
        return Path(self.name if self.folder is None
                    else f"/proc/self/fd/{self.folder}/{self.name}")

    def lstat(self) -> os.stat_result:
        return os.lstat(self.name, dir_fd=self.folder)

    def exists(self) -> bool:
        try:
            self.lstat()
        except OSError:
            return False
        return True


@dataclass(frozen=True)
class _Read:
    """A checked file, read, its path noted, and either copied (`copy`) or, when it is the
    service's own, kept open (`fd`): claimed once its group is synced."""

    source: Source
    rel: PurePosixPath
    read: os.stat_result  # of the file as read
    kind: str | None
    refusal: str | None
    job_id: str
    copy: str | None  # the private copy's temporary name in the work folder
    fd: int | None  # the service's own file, open to be made private where it is


Outcome = Claim | HotfolderError | OSError | None  # None: gone, or not a file to claim


class Intake:
    """Checks and claims files of one inbox into its work folder and journal."""

    def __init__(self, layout: Layout, limits: LimitsConfig, journal: Journal) -> None:
        self.layout = layout
        self.limits = limits
        self.journal = journal
        self.work = WorkFolder(layout.work)
        self._left: set[tuple[int, int]] = set()
        self._top = os.path.join(layout.inbox, "")  # what the path of a file inside begins with

    def offer(self, path: Path) -> Job | None:
        """Check and claim one file: a queued job, a failed one when refused, None when gone."""
        return self._job(self.claim_all([path])[0])

    def offer_as(self, path: Path, rel: PurePosixPath) -> Job | None:
        """Check and claim a file kept elsewhere on the inbox's filesystem (an upload) as if
        it had been dropped at inbox/rel."""
        return self._job(self._claim_many([(Source(None, str(path)), rel)])[0])

    def _job(self, outcome: Outcome) -> Job | None:
        if isinstance(outcome, HotfolderError | OSError):
            raise outcome
        return None if outcome is None else self.journal.get(outcome.id)

    def claim_all(self, paths: Sequence[Path]) -> list[Outcome]:
        """Check and claim files of the inbox found together: what became of each, in order.

        Their notes and private copies are synced together, then they are renamed into the
        work folder, then recorded in one transaction: one wait for the disk for them all.
        """
        folders: dict[str, int] = {}
        try:
            return self._claim_many([self._located(path, folders) for path in paths])
        finally:
            for fd in folders.values():
                os.close(fd)

    def _located(self, path: Path, folders: dict[str, int]
                 ) -> tuple[Source, PurePosixPath] | OSError | None:
        """The file by its folder's descriptor (kept in `folders`), and its inbox path."""
        text, top = str(path), self._top
        if not text.startswith(top) and text + os.sep != top:
            return None  # outside the inbox
        inside = text[len(top):]  # empty for the inbox itself
        rel = inbox_path(inside)
        if rel is None:
            log.warning("%s is not a file's path inside the inbox; left alone", path)
            return None
        parent = inside.rpartition("/")[0]
        if parent not in folders:
            try:
                folders[parent] = open_below(self.layout.inbox, rel.parent)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    return None  # gone, or reached through a link (the link itself is refused)
                return exc
        # The folder's descriptor stands in for the path to it: no link in it is resolved.
        return Source(folders[parent], rel.name), rel

    def _claim_many(self, entries: Sequence[tuple[Source, PurePosixPath] | OSError | None]
                    ) -> list[Outcome]:
        """Check, sync, claim and record these files (inbox-relative rel)."""
        work = self._open_work()
        try:
            with SyncGroup() as group:
                checked = [self._checked(entry, work, group) for entry in entries]
                copied = [(at, file) for at, file in enumerate(checked)
                          if isinstance(file, _Read)]
                outcomes = [None if isinstance(file, _Read) else file for file in checked]
                try:
                    group.sync()
                except OSError as exc:  # nothing is claimed: each file stays in the inbox
                    for at, file in copied:
                        self._undo(file, work)
                        self._close(file)
                        outcomes[at] = exc
                    copied = []
            for at, file in copied:
                outcomes[at] = self._claimed(file, work)
        finally:
            os.close(work)
        claims = [outcome for outcome in outcomes if isinstance(outcome, Claim)]
        if claims:
            self.journal.add_all(claims)
            say_claimed(claims)
        return outcomes

    def _checked(self, entry: tuple[Source, PurePosixPath] | OSError | None, work: int,
                 group: SyncGroup) -> Outcome | _Read:
        """What `_check` made of an entry, or the error it met."""
        if not isinstance(entry, tuple):
            return entry
        try:
            return self._check(*entry, work, group)
        except (HotfolderError, OSError) as exc:
            return exc

    def _claimed(self, file: _Read, work: int) -> Outcome:
        """What `_claim` made of a read file, or the error it met."""
        try:
            return self._claim(file, work)
        except (HotfolderError, OSError) as exc:
            return exc
        finally:
            self._close(file)

    @staticmethod
    def _close(file: _Read) -> None:
        if file.fd is not None:
            os.close(file.fd)

    def _open_work(self) -> int:
        """A descriptor of the work folder, made again if it was removed."""
        try:
            return os.open(self.layout.work, WORK_FLAGS)
        except FileNotFoundError:
            self.layout.work.mkdir(mode=0o700, parents=True, exist_ok=True)
            return os.open(self.layout.work, WORK_FLAGS)

    def _check(self, source: Source, rel: PurePosixPath, work: int, group: SyncGroup
               ) -> Claim | _Read | None:
        """Check the file (inbox-relative rel) and refuse it, or read it and note its path:
        the service's own file is kept open, anyone else's is copied, and the bytes are
        synced with `group`."""
        try:
            st = source.lstat()
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(st.st_mode):
            return None
        why = special_kind(st)
        if why is not None:
            error = InputError(f"{shown(rel)}: refused, {why}", stage="intake")
            return self._refuse(source.path, rel, st, error)
        try:
            imaging.check_size(st.st_size, self.limits)
            fd, read = open_regular(source.name, expect=st, dir_fd=source.folder)
        except FileNotFoundError:
            return None
        except InputError as exc:
            return self._refuse(source.path, rel, st,
                                InputError(f"{shown(rel)}: {exc.message}", stage="intake"))
        kept = False
        own = read.st_uid == os.geteuid()  # made private where it is, once claimed
        try:
            try:
                data = read_head(fd, read, self.limits) if own else read_within(fd, read,
                                                                                self.limits)
            except InputError as exc:
                return self._refuse(source.path, rel, st,
                                    InputError(f"{shown(rel)}: {exc.message}", stage="intake"))
            try:
                kind = imaging.sniff(data, self.limits.formats)
                refusal = None
            except InputError as exc:  # claimed all the same: it is scanned before it fails
                kind, refusal = None, f"{shown(rel)}: {exc.message}"
            job_id = new_job_id()
            if own:
                self.work.record(job_id, rel.as_posix(), fd)
                group.add(fd)
                kept = True
                return _Read(source, rel, read, kind, refusal, job_id, copy=None, fd=fd)
            self.work.record(job_id, rel.as_posix())
            try:
                copy: str | None = write_temp(work, data, PRIVATE_FILE, group)
            except OSError as exc:  # a full disk, say: the job makes the copy before it reads
                log.warning("job %s: %s not made private at its claim: %s", job_id, rel, exc)
                copy = None
            return _Read(source, rel, read, kind, refusal, job_id, copy=copy, fd=None)
        finally:
            if not kept:
                os.close(fd)

    def _claim(self, file: _Read, work: int) -> Claim | None:
        """Rename a read file into the work folder and make it private: its copy renamed over
        it, or the service's own file made 0600 where it is when no one has it open for
        writing (only the service's own user could open it for writing again, and that
        user can reach the work folder anyway); else copied now."""
        rel, job_id = file.rel, file.job_id
        target = self.work.file(job_id)
        try:
            os.rename(file.source.name, target, src_dir_fd=file.source.folder)
        except OSError:  # claimed by a concurrent offer, removed meanwhile, or a fault
            self._undo(file, work)
            if not file.source.exists():
                return None
            raise
        moved = os.lstat(target)
        if (moved.st_dev, moved.st_ino) != (file.read.st_dev, file.read.st_ino):
            error = InputError(f"{shown(rel)}: the file was replaced while it was being checked",
                               stage="intake")
            claim = self._refuse(target, rel, moved, error, job_id)
            self._undo(file, work)
            return claim
        as_read = (moved.st_size, moved.st_mtime_ns) == (file.read.st_size, file.read.st_mtime_ns)
        if file.copy is not None and as_read:
            os.rename(file.copy, job_id, src_dir_fd=work, dst_dir_fd=work)
        elif file.fd is not None and as_read and not held_for_writing(file.fd):
            os.fchmod(file.fd, PRIVATE_FILE)
        else:  # written to since it was read, or still open for writing
            if file.copy is not None:
                os.unlink(file.copy, dir_fd=work)
            if file.fd is not None:  # the new copy lacks the attribute: noted beside it
                self.work.record(job_id, rel.as_posix())
            try:
                make_private(target, read_claimed(target, self.limits)[0])
            except InputError as exc:  # it grew past the limit since it was checked
                error = InputError(f"{shown(rel)}: {exc.message}", stage="intake")
                claim = self._refuse(target, rel, moved, error, job_id)
                self.work.release(job_id)
                return claim
            except OSError as exc:  # a full disk, say: the job makes the copy before it reads
                log.warning("job %s: %s not made private at its claim: %s", job_id, rel, exc)
        log.debug("job %s: claimed %s (%s, %d bytes)", job_id, rel, file.kind or "refused",
                  file.read.st_size)
        return Claim(job_id, rel.as_posix(), file.kind, file.read.st_size, reason=file.refusal)

    def _undo(self, file: _Read, work: int) -> None:
        """Remove the note and the private copy of a file that was not claimed."""
        self.work.release(file.job_id)
        if file.copy is not None:
            os.unlink(file.copy, dir_fd=work)

    def _refuse(self, path: Path, rel: PurePosixPath, st: os.stat_result, error: InputError,
                job_id: str | None = None) -> Claim | None:
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
        log.warning("job %s: %s; moved to failed/", job_id, error.message)
        return Claim(job_id, rel.as_posix(), kind=None, size=st.st_size, state="failed",
                     reason=error.message)

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
