"""The journal seam: the record of every claimed file and what remains to do with it.

Huey forgets a task the moment a worker takes it; the journal does not. A job is
`queued` when claimed, `running` while a worker holds it (with that worker's pid
and the count of consecutive starts), `waiting` while a resource it needs is
unavailable, and ends `done`, `failed` or `quarantined`; an ended job never changes
state again. Every change of state is atomic: two workers never both start a job.

Three implementations keep the same contract: `sqlite` (`state/journal.db`, one
machine), `redis` (shared by every machine of a Redis queue) and `memory` (in this
process only, for tests). `open_journal` picks one for `queue.url` and imports the
Redis client only for a Redis queue.
A job's path is any path the file system accepts, stored as text (names.stored_rel).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

UNFINISHED = ("queued", "running", "waiting")
ENDED = ("done", "failed", "quarantined")


@dataclass(frozen=True)
class Job:
    """One claimed file: where it came from and where it stands."""

    id: str
    rel: str
    state: str
    attempts: int
    waits: int
    pid: int | None
    kind: str | None
    size: int | None
    reason: str | None
    outputs: list[str] | None
    created: float
    started: float | None
    updated: float
    next_try: float | None


@dataclass(frozen=True)
class Claim:
    """A file just claimed (or refused at intake: state failed), as the journal records it."""

    id: str
    rel: str
    kind: str | None
    size: int | None
    state: str = "queued"
    reason: str | None = None


class Journal(Protocol):
    """The jobs of one hot-folder root; safe to use from threads and from forked processes."""

    def close(self) -> None:
        """Release this process's connection; the journal is not used afterwards."""
        ...

    def fork_guard(self) -> AbstractContextManager[None]:
        """Held around a fork (and nothing else): the child gets a journal no thread holds."""
        ...

    def add(self, job_id: str, rel: str, *, kind: str | None, size: int | None,
            state: str = "queued", reason: str | None = None) -> None:
        """Record a claimed file (or one refused at intake: state failed); a known id is kept."""
        ...

    def add_all(self, claims: Sequence[Claim]) -> None:
        """Record many claims at once (in one transaction where there are transactions)."""
        ...

    def get(self, job_id: str) -> Job | None:
        """The job with this id, or None."""
        ...

    def start(self, job_id: str, pid: int) -> Job | None:
        """Mark a queued or waiting job running in worker `pid` (one more attempt); else None."""
        ...

    def requeue(self, job_id: str, *, forgive: bool = False) -> None:
        """Put a running job back in the queue (`forgive`: this start does not count)."""
        ...

    def wait(self, job_id: str, reason: str, delay: float) -> None:
        """Park a running job for `delay` s while `reason` is unavailable; attempts restart."""
        ...

    def wake(self, reason: str | None = None) -> list[Job]:
        """Queue the waiting jobs due now, or all waiting for `reason`; them, oldest first."""
        ...

    def delivered(self, job_id: str, outputs: list[str]) -> None:
        """Record that the outputs are stored (a retry then only finishes the original)."""
        ...

    def finish(self, job_id: str, state: str, reason: str | None = None) -> bool:
        """End an unfinished job as done, failed or quarantined; False if it had ended already."""
        ...

    def delivered_all(self, outputs: Mapping[str, list[str]]) -> None:
        """`delivered` for many jobs (by id) at once, in one transaction where there are."""
        ...

    def finish_all(self, job_ids: Sequence[str], state: str) -> None:
        """`finish` for many jobs at once, in one transaction where there are."""
        ...

    def in_state(self, *states: str) -> list[Job]:
        """The jobs in any of these states, oldest first."""
        ...

    def ids(self) -> set[str]:
        """Every job id the journal knows."""
        ...

    def counts(self) -> dict[str, int]:
        """Number of jobs by state (states without jobs are left out)."""
        ...

    def waiting_counts(self) -> dict[str, int]:
        """Number of waiting jobs by reason."""
        ...

    def recent(self, state: str, limit: int = 10) -> list[Job]:
        """The latest `limit` jobs that ended in `state`, newest first."""
        ...

    def alive(self, job: Job) -> bool:
        """Whether the worker holding a running job still holds it (a live pid, or a lease)."""
        ...

    def forget_ended(self, before: float) -> int:
        """Drop the jobs that ended before `before` (epoch seconds); returns how many."""
        ...

    def forget(self, job_id: str) -> bool:
        """Drop one ended job (its files were deleted); False when unknown or unfinished."""
        ...


class OneByOne(ABC):
    """`delivered_all` and `finish_all` as one change per job, for journals whose changes
    are each atomic but have no transaction over many (memory, Redis)."""

    @abstractmethod
    def delivered(self, job_id: str, outputs: list[str]) -> None:
        """See `Journal.delivered`."""

    @abstractmethod
    def finish(self, job_id: str, state: str, reason: str | None = None) -> bool:
        """See `Journal.finish`."""

    def delivered_all(self, outputs: Mapping[str, list[str]]) -> None:
        """`delivered` for many jobs, one change each."""
        for job_id, stored in outputs.items():
            self.delivered(job_id, stored)

    def finish_all(self, job_ids: Sequence[str], state: str) -> None:
        """`finish` for many jobs, one change each."""
        for job_id in job_ids:
            self.finish(job_id, state)


def is_shared(queue_url: str) -> bool:
    """Whether the queue (and so the journal) is in Redis, shared between machines."""
    return queue_url.startswith(("redis://", "rediss://"))


def open_journal(queue_url: str, sqlite_path: Path) -> Journal:
    """The journal for a queue: in Redis when the queue is, else SQLite at `sqlite_path`."""
    # Imported here: the Redis client is loaded only for a Redis queue.
    if is_shared(queue_url):
        from hotfolder.journal.redis import RedisJournal  # noqa: PLC0415

        return RedisJournal(queue_url)
    from hotfolder.journal.sqlite import SqliteJournal  # noqa: PLC0415

    return SqliteJournal(sqlite_path)


def count_by_reason(jobs: Iterable[Job]) -> dict[str, int]:
    """Number of jobs by reason (for waiting jobs: what each waits for)."""
    return dict(Counter(job.reason or "" for job in jobs))


def pid_exists(pid: int | None) -> bool:
    """Whether a process with this pid exists on this machine."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def in_every_child(method: Callable[[], None]) -> None:
    """Call a bound method in every forked child, for as long as its object lives."""
    ref = weakref.WeakMethod(method)

    def call() -> None:
        bound = ref()
        if bound is not None:
            bound()

    os.register_at_fork(after_in_child=call)


# Connections inherited through fork are kept, never used or closed (SQLite forbids both).
_INHERITED: list[sqlite3.Connection] = []


class ProcessConnection:
    """One SQLite connection per process, opened by `opener` at its first use and used under
    `lock`, at synchronous=normal; a forked child gets a fresh lock and opens its own."""

    def __init__(self, opener: Callable[[], sqlite3.Connection]) -> None:
        self.lock = threading.Lock()
        self._opener = opener
        self._conn: sqlite3.Connection | None = None
        in_every_child(self._after_fork)

    def get(self) -> sqlite3.Connection:
        """This process's connection (the caller holds `lock`); kept open, since closing the
        last connection to the file checkpoints and syncs it."""
        if self._conn is None:
            conn = self._opener()
            conn.execute("pragma synchronous=normal")
            self._conn = conn
        return self._conn

    @contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """The connection in one write transaction, committed on success; `durable`: synced
        to the disk when it commits (synchronous=full for it alone)."""
        with self.lock:
            conn = self.get()
            if durable:
                conn.execute("pragma synchronous=full")
            conn.execute("begin immediate")
            try:
                yield conn
            except BaseException:
                conn.execute("rollback")
                raise
            else:
                conn.execute("commit")
            finally:
                if durable:
                    conn.execute("pragma synchronous=normal")

    def close(self) -> None:
        """Close this process's connection (the next use opens another)."""
        with self.lock:
            if self._conn is not None:
                self._conn.close()
            self._conn = None

    def _after_fork(self) -> None:
        """In a forked child: a fresh lock, and a connection of its own at its first use."""
        self.lock = threading.Lock()
        if self._conn is not None:
            _INHERITED.append(self._conn)
            self._conn = None
