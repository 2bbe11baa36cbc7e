"""Scaling out over Redis: the shared journal's leases, with real processes killed by SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator

import pytest

from hotfolder.redis_journal import RedisJournal
from redis_server import RedisServer

LEASE = 0.6


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def journal(redis_server: RedisServer) -> Iterator[RedisJournal]:
    store = RedisJournal(redis_server.url, lease_seconds=LEASE)
    yield store
    store.close()


def holder(url: str, job_id: str) -> subprocess.Popen[bytes]:
    """A process on 'another machine' that takes the job and keeps working on it."""
    code = textwrap.dedent(f"""
        import os, sys, time
        from hotfolder.redis_journal import RedisJournal
        journal = RedisJournal({url!r}, lease_seconds={LEASE})
        assert journal.start({job_id!r}, os.getpid()) is not None
        print("started", flush=True)
        time.sleep(60)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stdout.readline() == b"started\n"
    return process


def test_a_running_job_keeps_its_lease_until_its_process_is_killed(
        journal: RedisJournal, redis_server: RedisServer) -> None:
    journal.add("j1", "A/photo.jpg", kind="jpeg", size=10)
    process = holder(redis_server.url, "j1")
    try:
        job = journal.get("j1")
        assert job is not None and job.state == "running"
        time.sleep(3 * LEASE)  # well past the lease: only renewal keeps it
        assert journal.alive(job)

        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        wait_for(lambda: not journal.alive(job), 3 * LEASE, "the lease to expire")
    finally:
        process.kill()
        process.wait()
        assert process.stdout is not None
        process.stdout.close()

    journal.requeue("j1", forgive=True)
    again = journal.start("j1", os.getpid())
    assert again is not None and again.attempts == 1 and journal.alive(again)


def test_ending_a_job_drops_its_lease(journal: RedisJournal) -> None:
    journal.add("j1", "a.jpg", kind="jpeg", size=1)
    job = journal.start("j1", os.getpid())
    assert job is not None and journal.alive(job)

    journal.wait("j1", "s3", delay=60)

    assert not journal.alive(job)


def test_a_pid_is_only_given_for_jobs_of_this_machine(journal: RedisJournal,
                                                      redis_server: RedisServer) -> None:
    journal.add("here", "a.jpg", kind="jpeg", size=1)
    journal.add("there", "b.jpg", kind="jpeg", size=1)
    journal.start("here", 4242)
    journal.start("there", 4242)
    journal.conn.hset("hotfolder:job:there", "owner", "worker-7.example:4242")

    here, there = journal.get("here"), journal.get("there")

    assert here is not None and here.pid == 4242
    assert there is not None and there.pid is None and there.state == "running"
