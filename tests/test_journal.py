"""The journal: states of a job, and a connection per process."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hotfolder.journal import Journal
from hotfolder.redis_journal import RedisJournal


@pytest.fixture(params=["sqlite", "redis"])
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Journal | RedisJournal]:
    """Each test runs against both journals: SQLite (one machine) and Redis (scaled out)."""
    store = (Journal(tmp_path / "journal.db") if request.param == "sqlite"
             else RedisJournal(request.getfixturevalue("redis_server").url))
    yield store
    store.close()


def test_a_claimed_job_runs_once(journal: Journal) -> None:
    journal.add("j1", "A/photo.jpg", kind="jpeg", size=10)
    started = journal.start("j1", pid=123)
    assert started is not None
    assert (started.state, started.attempts, started.pid) == ("running", 1, 123)
    assert journal.start("j1", pid=124) is None  # a duplicate task finds it taken
    assert journal.finish("j1", "done")
    assert not journal.finish("j1", "failed")
    job = journal.get("j1")
    assert job is not None and job.state == "done" and job.pid is None


def test_adding_the_same_id_twice_keeps_the_first(journal: Journal) -> None:
    journal.add("j1", "a.jpg", kind="jpeg", size=1)
    journal.add("j1", "b.jpg", kind="png", size=2)
    job = journal.get("j1")
    assert job is not None and job.rel == "a.jpg"


def test_crashed_starts_accumulate_and_a_forgiven_one_does_not(journal: Journal) -> None:
    journal.add("j1", "a.jpg", kind="jpeg", size=1)
    for _ in range(2):
        journal.start("j1", pid=1)
        journal.requeue("j1")
    journal.start("j1", pid=1)
    journal.requeue("j1", forgive=True)
    job = journal.start("j1", pid=1)
    assert job is not None and job.attempts == 3


def test_waiting_jobs_wake_when_due_or_when_their_resource_returns(journal: Journal) -> None:
    for name in ("a", "b", "c"):
        journal.add(name, f"{name}.jpg", kind="jpeg", size=1)
        journal.start(name, pid=1)
    journal.wait("a", "scanner", delay=0)
    journal.wait("b", "scanner", delay=3600)
    journal.wait("c", "outbox", delay=3600)
    assert journal.waiting_counts() == {"scanner": 2, "outbox": 1}
    job = journal.get("b")
    assert job is not None and job.attempts == 0 and job.waits == 1
    assert [j.id for j in journal.wake()] == ["a"]
    assert [j.id for j in journal.wake("scanner")] == ["b"]
    assert journal.counts() == {"queued": 2, "waiting": 1}
    assert journal.start("b", pid=1) is not None


def test_delivered_outputs_are_remembered(journal: Journal) -> None:
    journal.add("j1", "a.jpg", kind="jpeg", size=1)
    journal.delivered("j1", ["a.png", "a.png.json"])
    job = journal.get("j1")
    assert job is not None and job.outputs == ["a.png", "a.png.json"]


def test_recent_failures_and_cleanup_of_old_rows(journal: Journal) -> None:
    for n in range(3):
        journal.add(f"f{n}", f"{n}.jpg", kind=None, size=0, state="failed", reason=f"bad {n}")
    assert [j.reason for j in journal.recent("failed", 2)] == ["bad 2", "bad 1"]
    assert journal.forget_ended(time.time() + 1) == 3
    assert journal.counts() == {}


def test_a_forked_child_opens_its_own_connection(journal: Journal) -> None:
    journal.add("j1", "a.jpg", kind="jpeg", size=1)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        ok = journal.start("j1", pid=os.getpid()) is not None
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    job = journal.get("j1")
    assert job is not None and job.state == "running" and job.pid == pid


def test_a_running_job_is_alive_while_its_worker_holds_it(journal: Journal) -> None:
    journal.add("j1", "a.jpg", kind="jpeg", size=1)
    job = journal.start("j1", pid=os.getpid())
    assert job is not None and journal.alive(job)
    journal.finish("j1", "done")
    ended = journal.get("j1")
    assert ended is not None and not journal.alive(ended)
