"""Supervision as a table: running jobs, live workers, exit codes and the time in; actions out."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import replace

import pytest

from hotfolder.journal import Job
from hotfolder.supervisor import (
    MAX_ATTEMPTS,
    Action,
    Fail,
    Kill,
    Requeue,
    crash_reason,
    supervise,
)

NOW = 1000.0
TIMEOUT = 60.0
JOB = Job(id="a1b2c3d4e5f6", rel="A/photo.jpg", state="running", attempts=1, waits=0, pid=101,
          kind="jpeg", size=100, reason=None, outputs=None, created=NOW - 5, started=NOW - 5,
          updated=NOW - 5, next_try=None)


def always(job: Job) -> bool:
    return True


def never(job: Job) -> bool:
    return False


CASES: list[tuple[str, Job, Collection[int], Mapping[int, int | None],
                  Callable[[Job], bool], list[Action]]] = [
    ("a job within its time on a live worker is left alone",
     JOB, {101}, {}, always, []),
    ("a job exactly at the limit is left alone",
     replace(JOB, started=NOW - TIMEOUT), {101}, {}, always, []),
    ("a job over the limit has its worker killed and fails",
     replace(JOB, started=NOW - TIMEOUT - 1), {101}, {}, always,
     [Kill(101), Fail(JOB.id, "processing took longer than 60 s (limits.job_timeout_seconds)"
                              " and was stopped")]),
    ("a job not started yet is never overdue",
     replace(JOB, started=None), {101}, {}, always, []),
    ("a job whose worker crashed is queued again, the attempt counted",
     JOB, set(), {101: -11}, always,
     [Requeue(JOB.id, "worker killed: signal 11 (SIGSEGV), queued again (attempt 1 of 3)")]),
    ("a job whose worker exited is queued again",
     replace(JOB, attempts=2), {102}, {101: 1}, always,
     [Requeue(JOB.id, "worker exited with status 1, queued again (attempt 2 of 3)")]),
    ("the third crash fails the job with the reason",
     replace(JOB, attempts=MAX_ATTEMPTS), set(), {101: -9}, always,
     [Fail(JOB.id, "processing crashed 3 times (worker killed: signal 9 (SIGKILL))")]),
    ("a job held elsewhere whose holder is gone is queued again, forgiven",
     replace(JOB, pid=555), {101}, {}, never,
     [Requeue(JOB.id, "its worker is gone, queued again", forgive=True)]),
    ("a job held elsewhere by a live holder is left alone",
     replace(JOB, pid=555), {101}, {}, always, []),
    ("a job with no pid and no holder is queued again, forgiven",
     replace(JOB, pid=None), {101}, {}, never,
     [Requeue(JOB.id, "its worker is gone, queued again", forgive=True)]),
]


@pytest.mark.parametrize(("running", "live", "exits", "holder_alive", "expected"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_supervise(running: Job, live: Collection[int], exits: Mapping[int, int | None],
                   holder_alive: Callable[[Job], bool], expected: list[Action]) -> None:
    assert supervise([running], live, exits, NOW, timeout=TIMEOUT,
                     holder_alive=holder_alive) == expected


def test_each_job_gets_its_own_actions_in_journal_order() -> None:
    crashed = replace(JOB, id="000000000002", pid=102)
    overdue = replace(JOB, id="000000000003", pid=103, started=NOW - 2 * TIMEOUT)
    actions = supervise([JOB, crashed, overdue], {101, 103}, {102: -6}, NOW, timeout=TIMEOUT,
                        holder_alive=always)
    assert actions == [
        Requeue(crashed.id, "worker killed: signal 6 (SIGABRT), queued again (attempt 1 of 3)"),
        Kill(103),
        Fail(overdue.id, "processing took longer than 60 s (limits.job_timeout_seconds) and was"
                         " stopped"),
    ]


def test_crash_reasons_in_words() -> None:
    assert crash_reason(-11) == "worker killed: signal 11 (SIGSEGV)"
    assert crash_reason(-200) == "worker killed: signal 200 (unknown)"
    assert crash_reason(3) == "worker exited with status 3"
    assert crash_reason(None) == "worker exited with status None"
