"""The journal in this process's memory, for unit tests: the same contract, nothing on disk.

A forked child gets a copy of the jobs as they were; changes on either side stay there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

from hotfolder.journal import (
    ENDED,
    UNFINISHED,
    Claim,
    Job,
    OneByOne,
    count_by_reason,
    in_every_child,
    pid_exists,
)


class MemoryJournal(OneByOne):
    """Jobs in a dict behind one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        in_every_child(self._after_fork)

    def _after_fork(self) -> None:
        """In a forked child: a fresh lock."""
        self._lock = threading.Lock()

    def _change(self, job_id: str, allowed: Sequence[str],
                change: Callable[[Job], Job]) -> Job | None:
        """Apply `change` to a job in an `allowed` state, stamped now; None when it is not."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state not in allowed:
                return None
            changed = replace(change(job), updated=time.time())
            self._jobs[job_id] = changed
            return changed

    def _all(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    @contextmanager
    def fork_guard(self) -> Iterator[None]:
        """Hold the lock every change holds."""
        with self._lock:
            yield

    def close(self) -> None:
        """Nothing to release."""

    def add(self, job_id: str, rel: str, *, kind: str | None, size: int | None,
            state: str = "queued", reason: str | None = None) -> None:
        """Record a claimed file (or one refused at intake, with state failed)."""
        self.add_all([Claim(job_id, rel, kind, size, state, reason)])

    def add_all(self, claims: Sequence[Claim]) -> None:
        """Record many claims at once."""
        now = time.time()
        with self._lock:
            for c in claims:
                self._jobs.setdefault(c.id, Job(
                    id=c.id, rel=c.rel, state=c.state, attempts=0, waits=0, pid=None,
                    kind=c.kind, size=c.size, reason=c.reason, outputs=None, created=now,
                    started=None, updated=now, next_try=None))

    def get(self, job_id: str) -> Job | None:
        """The job with this id, or None."""
        with self._lock:
            return self._jobs.get(job_id)

    def start(self, job_id: str, pid: int) -> Job | None:
        """Mark the job running in worker `pid`; None when it is not queued or waiting."""
        return self._change(job_id, ("queued", "waiting"), lambda job: replace(
            job, state="running", attempts=job.attempts + 1, pid=pid, started=time.time(),
            next_try=None))

    def requeue(self, job_id: str, *, forgive: bool = False) -> None:
        """Put a running job back in the queue (`forgive`: this start does not count)."""
        self._change(job_id, ("running",), lambda job: replace(
            job, state="queued", pid=None, attempts=max(job.attempts - forgive, 0)))

    def wait(self, job_id: str, reason: str, delay: float) -> None:
        """Park the job until `delay` seconds from now because `reason` is unavailable."""
        self._change(job_id, ("running",), lambda job: replace(
            job, state="waiting", reason=reason, attempts=0, waits=job.waits + 1, pid=None,
            next_try=time.time() + delay))

    def wake(self, reason: str | None = None) -> list[Job]:
        """Waiting jobs made queued: those due now, or all waiting for `reason`."""
        now = time.time()
        woken = []
        with self._lock:
            for job in sorted(self._jobs.values(), key=lambda job: job.created):
                due = job.reason == reason if reason is not None else (
                    job.next_try is not None and job.next_try <= now)
                if job.state == "waiting" and due:
                    woken.append(replace(job, state="queued", updated=now))
                    self._jobs[job.id] = woken[-1]
        return woken

    def delivered(self, job_id: str, outputs: list[str]) -> None:
        """Record that the outputs are stored (a retry then only finishes the original)."""
        self._change(job_id, (*UNFINISHED, *ENDED),
                     lambda job: replace(job, outputs=list(outputs)))

    def finish(self, job_id: str, state: str, reason: str | None = None) -> bool:
        """End an unfinished job as done, failed or quarantined; False if it had ended already."""
        if state not in ENDED:
            raise ValueError(f"not an end state: {state}")
        return self._change(job_id, UNFINISHED, lambda job: replace(
            job, state=state, reason=reason, pid=None, next_try=None)) is not None

    def in_state(self, *states: str) -> list[Job]:
        """The jobs in any of these states, oldest first."""
        return sorted((job for job in self._all() if job.state in states),
                      key=lambda job: job.created)

    def ids(self) -> set[str]:
        """Every job id the journal knows."""
        with self._lock:
            return set(self._jobs)

    def counts(self) -> dict[str, int]:
        """Number of jobs by state."""
        counts: dict[str, int] = {}
        for job in self._all():
            counts[job.state] = counts.get(job.state, 0) + 1
        return counts

    def waiting_counts(self) -> dict[str, int]:
        """Number of waiting jobs by reason."""
        return count_by_reason(self.in_state("waiting"))

    def recent(self, state: str, limit: int = 10) -> list[Job]:
        """The latest jobs that ended in `state`, newest first."""
        ended = sorted((job for job in self._all() if job.state == state),
                       key=lambda job: job.updated, reverse=True)
        return ended[:limit]

    def alive(self, job: Job) -> bool:
        """Whether the worker process holding a running job still exists (on this machine)."""
        return pid_exists(job.pid)

    def forget(self, job_id: str) -> bool:
        """Drop one ended job."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state not in ENDED:
                return False
            del self._jobs[job_id]
            return True

    def forget_ended(self, before: float) -> int:
        """Drop the jobs that ended before `before` (epoch seconds)."""
        with self._lock:
            old = [job.id for job in self._jobs.values()
                   if job.state in ENDED and job.updated < before]
            for job_id in old:
                del self._jobs[job_id]
        return len(old)
