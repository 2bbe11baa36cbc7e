"""Scanning ahead: while a worker runs one job, it scans the next jobs waiting in the queue.

clamd scans in a process of its own, on the same cores. A job that waits for its verdict
leaves its worker idle, and clamd, scheduled apart from the service (its own session or
systemd unit), gets no more than its share of a busy machine. So when a job starts, its
worker's scan-ahead thread takes the next few waiting jobs (AHEAD_LOOK of them) that no
one scans yet, one after the other, scans each claimed file and leaves the verdict
beside it (`work/<id>.verdict`: the SHA-256 of the bytes scanned, and what the scanner
said); a job then finds its verdict made or under way.

A job reads its file once, as always, and uses a verdict left for it only when the
SHA-256 of what it read is the one scanned; otherwise, or when there is none, it scans
itself. A verdict being made is locked (flock): the job waits for it rather than scanning
the file twice, and the lock goes with a process that dies. A scan that fails leaves no
verdict, so the job scans itself and applies `scanner.on_unavailable` as usual. Only
files already made private at their claim, and no larger than AHEAD_MAX_BYTES, are
scanned ahead: a worker holds at most that much beside its own job. Nor are files smaller
than AHEAD_MIN_BYTES: clamd answers for them within a millisecond or so, less than a
verdict file costs to make and remove (a new file on a busy disk can take as long).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import PurePosixPath

from hotfolder.config import LimitsConfig
from hotfolder.errors import HotfolderError
from hotfolder.files import NEW_FILE_FLAGS
from hotfolder.intake import is_private, read_claimed
from hotfolder.scanner import Scanner, Verdict
from hotfolder.sinks.local import PRIVATE_FILE
from hotfolder.workfolder import WorkFolder

log = logging.getLogger("hotfolder.scanahead")

AHEAD_MAX_BYTES = 16 * 1024 * 1024
AHEAD_MIN_BYTES = 64 * 1024


def verdict_left(work: WorkFolder, job_id: str, sha256: str) -> Verdict | None:
    """The verdict scanned ahead for these bytes of the job's file (waiting while it is being
    made), or None: none was made, it failed, or it is for other bytes."""
    try:
        fd = os.open(work.verdict(job_id), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as made:
        fcntl.flock(fd, fcntl.LOCK_SH)  # released when the scan ahead ends, or its process dies
        text = made.read()
    try:
        record = json.loads(text)
        if record["sha256"] != sha256:
            return None
        return Verdict(clean=bool(record["clean"]), signature=record["signature"],
                       scanner=str(record["scanner"]))
    except (ValueError, KeyError, TypeError):  # empty: the scan broke off
        return None


def scan_ahead(scanner: Scanner, work: WorkFolder, job_id: str, limits: LimitsConfig, *,
               smallest: int = AHEAD_MIN_BYTES) -> bool:
    """Scan a waiting job's file and leave the verdict beside it; False when someone else
    does (or did), the job has ended or its file is smaller than `smallest` bytes, True when
    this one tried."""
    try:
        if os.lstat(work.file(job_id)).st_size < smallest:
            return False
    except FileNotFoundError:  # the job has left the work folder
        return False
    path = work.verdict(job_id)
    try:
        fd = os.open(path, NEW_FILE_FLAGS, PRIVATE_FILE)
    except (FileExistsError, FileNotFoundError):  # taken, or the job has left the work folder
        return False
    made = False
    with os.fdopen(fd, "wb") as out:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            made = _scan_into(out.fileno(), scanner, work, job_id, limits)
        finally:
            if not made:  # the job scans itself
                path.unlink(missing_ok=True)
    return True


def _scan_into(fd: int, scanner: Scanner, work: WorkFolder, job_id: str,
               limits: LimitsConfig) -> bool:
    file = work.file(job_id)
    try:
        st = os.lstat(file)
        if not is_private(st) or st.st_size > AHEAD_MAX_BYTES:
            return False
        data, st = read_claimed(file, limits)
        if not is_private(st):
            return False
        name = PurePosixPath(work.recorded(job_id) or job_id).name
        verdict = scanner.scan(data, name)
    except (HotfolderError, OSError, MemoryError) as exc:  # its job meets the same, says so
        log.debug("job %s not scanned ahead: %s", job_id, exc)
        return False
    record = {"sha256": hashlib.sha256(data).hexdigest(), "clean": verdict.clean,
              "signature": verdict.signature, "scanner": verdict.scanner}
    os.write(fd, json.dumps(record).encode())
    return True


class ScanAhead:
    """A worker's scan-ahead thread, started in the process that first asks for it.

    While the worker runs a job (between `look` and `rest`), the thread scans the next
    waiting jobs that no one scans yet, and looks at the queue again every POLL_SECONDS
    for jobs queued meanwhile; an idle worker's thread sleeps. A job's start wakes only a
    sleeping thread: jobs of small files start hundreds of times a second, and a look at
    the queue for each would cost as much as a tenth of their work.
    """

    POLL_SECONDS = 0.05

    def __init__(self, scanner: Scanner, work: WorkFolder, limits: LimitsConfig,
                 waiting: Callable[[], list[str]], *, smallest: int = AHEAD_MIN_BYTES) -> None:
        self.scanner = scanner
        self.work = work
        self.limits = limits
        self.waiting = waiting  # the ids of the next jobs in the queue, first first
        self.smallest = smallest  # bytes: smaller files are left to their jobs to scan
        self._busy = False
        self._sleeping = False  # the thread waits for the worker's next job
        self._changed = threading.Condition()
        self._pid = 0

    def look(self) -> None:
        """The worker starts a job: scan ahead until it rests."""
        with self._changed:
            if self._pid != os.getpid():  # first use in this (forked) worker
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="scan-ahead", daemon=True).start()
            self._busy = True
            if self._sleeping:
                self._changed.notify()

    def rest(self) -> None:
        """The worker's job has ended."""
        with self._changed:
            self._busy = False

    def _run(self) -> None:
        tried: set[str] = set()  # of the jobs waiting at the last look at the queue
        while True:
            with self._changed:
                while not self._busy:
                    self._sleeping = True
                    self._changed.wait()
                self._sleeping = False
            try:
                waiting = self.waiting()
                fresh = [job_id for job_id in waiting if job_id not in tried]
                for job_id in fresh:
                    scan_ahead(self.scanner, self.work, job_id, self.limits,
                               smallest=self.smallest)
                tried = set(waiting)
            except Exception:  # the thread lives on; the jobs scan themselves meanwhile
                log.exception("scanning ahead failed")
                fresh = []
            if not fresh:
                with self._changed:
                    self._changed.wait(self.POLL_SECONDS)
