"""Supervision as a pure function: what to do about the running jobs, given the workers.

Once a second the service reads the journal's running jobs and its workers: the pids
of those alive and the exit codes of those that ended. `supervise` turns these and
`now` into actions, which the service applies: a job whose worker died is queued
again, and failed after MAX_ATTEMPTS crashes; a job over the time limit has its
worker killed and is failed; a job whose holder is gone without an exit code seen
here (another machine's worker whose lease ran out) is queued again, not counted.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from hotfolder.journal import Job

MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Requeue:
    """Queue the job again (`forgive`: this start does not count as an attempt)."""

    job_id: str
    why: str
    forgive: bool = False


@dataclass(frozen=True)
class Fail:
    """End the job in failed/ with this reason, if it is still running."""

    job_id: str
    reason: str


@dataclass(frozen=True)
class Kill:
    """Kill the worker process with this pid."""

    pid: int


Action = Requeue | Fail | Kill


def crash_reason(exitcode: int | None) -> str:
    """How a worker ended, in words: `worker killed: signal 11 (SIGSEGV)`."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown"
        return f"worker killed: signal {-exitcode} ({name})"
    return f"worker exited with status {exitcode}"


def supervise(running: Sequence[Job], live: Collection[int], exits: Mapping[int, int | None],
              now: float, *, timeout: float, holder_alive: Callable[[Job], bool]) -> list[Action]:
    """The actions for the running jobs: live worker pids, dead ones' exit codes, the time now."""
    actions: list[Action] = []
    for job in running:
        if job.pid is not None and job.pid in live:
            if job.started is not None and now - job.started > timeout:
                actions += [Kill(job.pid), Fail(job.id, f"processing took longer than {timeout:g}"
                                                f" s (limits.job_timeout_seconds) and was stopped")]
        elif job.pid is not None and job.pid in exits:
            reason = crash_reason(exits[job.pid])
            if job.attempts >= MAX_ATTEMPTS:
                actions.append(Fail(job.id, f"processing crashed {job.attempts} times ({reason})"))
            else:
                actions.append(Requeue(job.id, f"{reason}, queued again (attempt {job.attempts}"
                                               f" of {MAX_ATTEMPTS})"))
        elif not holder_alive(job):
            actions.append(Requeue(job.id, "its worker is gone, queued again", forgive=True))
    return actions
