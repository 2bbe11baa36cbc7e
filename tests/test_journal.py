"""The journal seam: one contract run against SQLite, Redis and memory, then what each adds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import wait_until
from hotfolder.errors import Unavailable
from hotfolder.journal import ENDED, UNFINISHED, Journal, is_shared, open_journal
from hotfolder.journal.memory import MemoryJournal
from hotfolder.journal.redis import RedisJournal
from hotfolder.journal.sqlite import SqliteJournal
from redis_server import RedisServer
from server_process import free_port
from service_helpers import make_root

SQLITE_QUEUE = "sqlite:///state/queue.db"
# Renewed every LEASE / 4: a renewal late by most of a lease (a busy machine) still counts.
LEASE = 2.0


def queue_url(kind: str, request: pytest.FixtureRequest) -> str:
    """The `queue.url` that selects the journal of this kind."""
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return server.url
    return SQLITE_QUEUE


@pytest.fixture(params=["sqlite", "redis", "memory"])
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Journal]:
    """Each contract test runs against every journal."""
    store: Journal = (MemoryJournal() if request.param == "memory"
                      else open_journal(queue_url(request.param, request),
                                        tmp_path / "journal.db"))
    yield store
    store.close()


def state_of(journal: Journal, job_id: str) -> str:
    job = journal.get(job_id)
    assert job is not None
    return job.state


def exit_code(pid: int, timeout: float = 30) -> int:
    """The exit code of forked child `pid`; it is killed if it has not exited in time."""

    def reaped() -> tuple[int] | None:
        done, status = os.waitpid(pid, os.WNOHANG)
        return (status,) if done else None

    try:
        (status,) = wait_until(reaped, timeout, f"child {pid} to exit")
    except AssertionError:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    return os.waitstatus_to_exitcode(status)


def a_dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


class TestContract:
    """What every journal does, whatever keeps it."""

    def test_a_claimed_job_runs_once(self, journal: Journal) -> None:
        journal.add("j1", "A/photo.jpg", kind="jpeg", size=10)
        queued = journal.get("j1")
        assert queued is not None
        assert (queued.rel, queued.state, queued.kind, queued.size) == (
            "A/photo.jpg", "queued", "jpeg", 10)
        assert (queued.attempts, queued.waits, queued.pid, queued.outputs) == (0, 0, None, None)
        started = journal.start("j1", pid=123)
        assert started is not None
        assert (started.state, started.attempts, started.pid) == ("running", 1, 123)
        assert started.started is not None and started.started >= queued.created
        assert journal.start("j1", pid=124) is None  # a duplicate task finds it taken
        assert journal.finish("j1", "done")
        assert not journal.finish("j1", "failed")
        job = journal.get("j1")
        assert job is not None and job.state == "done" and job.pid is None

    def test_an_ended_job_never_starts_or_changes_state_again(self, journal: Journal) -> None:
        for state in ENDED:
            journal.add(state, f"{state}.jpg", kind="jpeg", size=1)
            assert journal.finish(state, state, reason=f"it is {state}")
            assert journal.start(state, pid=1) is None
            journal.requeue(state)
            journal.wait(state, "scanner", delay=0)
            assert not journal.finish(state, "done")
            job = journal.get(state)
            assert job is not None
            assert (job.state, job.reason, job.attempts) == (state, f"it is {state}", 0)
        assert journal.wake() == [] and journal.wake("scanner") == []

    def test_an_unknown_job_is_none_and_refused(self, journal: Journal) -> None:
        assert journal.get("nope") is None
        assert journal.start("nope", pid=1) is None
        assert not journal.finish("nope", "failed")
        journal.requeue("nope")
        journal.wait("nope", "scanner", delay=0)
        journal.delivered("nope", ["a.png"])
        assert journal.get("nope") is None and journal.ids() == set()

    def test_only_an_end_state_finishes_a_job(self, journal: Journal) -> None:
        journal.add("j1", "a.jpg", kind="jpeg", size=1)
        for state in UNFINISHED:
            with pytest.raises(ValueError, match=f"not an end state: {state}"):
                journal.finish("j1", state)
        assert state_of(journal, "j1") == "queued"

    def test_adding_the_same_id_twice_keeps_the_first(self, journal: Journal) -> None:
        journal.add("j1", "a.jpg", kind="jpeg", size=1)
        journal.add("j1", "b.jpg", kind="png", size=2, state="failed", reason="later")
        job = journal.get("j1")
        assert job is not None and (job.rel, job.kind, job.state) == ("a.jpg", "jpeg", "queued")

    def test_a_file_refused_at_intake_is_recorded_as_failed(self, journal: Journal) -> None:
        journal.add("j1", "a.exe", kind=None, size=5, state="failed", reason="not an image")
        job = journal.get("j1")
        assert job is not None
        assert (job.state, job.reason, job.kind, job.size) == ("failed", "not an image", None, 5)
        assert journal.start("j1", pid=1) is None
        assert [j.id for j in journal.recent("failed")] == ["j1"]

    def test_crashed_starts_accumulate_and_a_forgiven_one_does_not(
            self, journal: Journal) -> None:
        journal.add("j1", "a.jpg", kind="jpeg", size=1)
        for _ in range(2):
            journal.start("j1", pid=1)
            journal.requeue("j1")
        journal.start("j1", pid=1)
        journal.requeue("j1", forgive=True)
        requeued = journal.get("j1")
        assert requeued is not None and (requeued.state, requeued.pid) == ("queued", None)
        job = journal.start("j1", pid=1)
        assert job is not None and job.attempts == 3

    def test_only_a_running_job_is_requeued_or_parked(self, journal: Journal) -> None:
        journal.add("j1", "a.jpg", kind="jpeg", size=1)
        journal.requeue("j1", forgive=True)
        journal.wait("j1", "scanner", delay=0)
        job = journal.get("j1")
        assert job is not None and (job.state, job.attempts, job.waits) == ("queued", 0, 0)

    def test_a_wait_parks_the_job_and_resets_its_attempts(self, journal: Journal) -> None:
        journal.add("j1", "a.jpg", kind="jpeg", size=1)
        journal.start("j1", pid=1)
        journal.requeue("j1")
        journal.start("j1", pid=1)
        before = time.time()
        journal.wait("j1", "s3", delay=60)
        job = journal.get("j1")
        assert job is not None
        assert (job.state, job.reason, job.attempts, job.waits, job.pid) == (
            "waiting", "s3", 0, 1, None)
        assert job.next_try is not None and before + 60 <= job.next_try <= time.time() + 60
        assert journal.start("j1", pid=2) is not None  # a waiting job may be started early
        journal.wait("j1", "s3", delay=60)
        again = journal.get("j1")
        assert again is not None and again.waits == 2

    def test_waiting_jobs_wake_when_due_or_when_their_resource_returns(
            self, journal: Journal) -> None:
        for name in ("a", "b", "c", "d"):
            journal.add(name, f"{name}.jpg", kind="jpeg", size=1)
            journal.start(name, pid=1)
        journal.wait("a", "scanner", delay=0)
        journal.wait("b", "scanner", delay=3600)
        journal.wait("c", "outbox", delay=3600)
        journal.wait("d", "scanner", delay=3600)
        assert journal.waiting_counts() == {"scanner": 3, "outbox": 1}
        woken = journal.wake()
        assert [(j.id, j.state) for j in woken] == [("a", "queued")]
        assert [(j.id, j.state) for j in journal.wake("scanner")] == [
            ("b", "queued"), ("d", "queued")]
        assert journal.wake("scanner") == [] and journal.wake() == []
        assert journal.counts() == {"queued": 3, "waiting": 1}
        assert journal.waiting_counts() == {"outbox": 1}
        assert state_of(journal, "b") == "queued" and state_of(journal, "c") == "waiting"
        assert journal.start("b", pid=1) is not None

    def test_delivered_outputs_are_remembered_through_the_end(self, journal: Journal) -> None:
        journal.add("j1", "a.jpg", kind="jpeg", size=1)
        journal.start("j1", pid=1)
        journal.delivered("j1", ["a.png", "a.png.json"])
        running = journal.get("j1")
        assert running is not None and running.state == "running"
        assert running.outputs == ["a.png", "a.png.json"]
        assert journal.finish("j1", "done")
        job = journal.get("j1")
        assert job is not None and job.outputs == ["a.png", "a.png.json"]

    def test_many_jobs_delivered_and_done_at_once_leave_the_others(self,
                                                                   journal: Journal) -> None:
        for name in ("a", "b", "c", "ended"):
            journal.add(name, f"{name}.jpg", kind="jpeg", size=1)
            journal.start(name, pid=1)
        journal.finish("ended", "failed", "bad")
        journal.delivered_all({"a": ["a.png"], "b": ["b.png", "b.png.json"]})
        journal.finish_all(["a", "b", "ended"], "done")
        outcome = {name: (job.state, job.outputs, job.pid) for name in ("a", "b", "c", "ended")
                   if (job := journal.get(name)) is not None}
        assert outcome == {"a": ("done", ["a.png"], None),
                           "b": ("done", ["b.png", "b.png.json"], None),
                           "c": ("running", None, 1), "ended": ("failed", None, None)}
        with pytest.raises(ValueError, match="not an end state"):
            journal.finish_all(["c"], "running")

    def test_jobs_by_state_oldest_first(self, journal: Journal) -> None:
        for name in ("a", "b", "c", "d"):
            journal.add(name, f"{name}.jpg", kind="jpeg", size=1)
        journal.start("c", pid=1)
        journal.start("a", pid=1)
        journal.finish("b", "failed", "bad")
        assert [j.id for j in journal.in_state("running")] == ["a", "c"]
        assert [j.id for j in journal.in_state("queued", "running")] == ["a", "c", "d"]
        assert [j.id for j in journal.in_state("queued", "failed")] == ["b", "d"]
        assert journal.in_state("waiting") == []
        assert journal.ids() == {"a", "b", "c", "d"}

    def test_counts_by_state_and_by_waiting_reason(self, journal: Journal) -> None:
        assert journal.counts() == {} and journal.waiting_counts() == {}
        for name in ("a", "b", "c", "d", "e"):
            journal.add(name, f"{name}.jpg", kind="jpeg", size=1)
        for name in ("b", "c", "d"):
            journal.start(name, pid=1)
        journal.wait("c", "scanner", delay=60)
        journal.finish("d", "quarantined", "Eicar")
        journal.finish("e", "done")
        assert journal.counts() == {"queued": 1, "running": 1, "waiting": 1,
                                    "quarantined": 1, "done": 1}
        assert journal.waiting_counts() == {"scanner": 1}

    def test_recent_ends_newest_first_by_when_they_ended(self, journal: Journal) -> None:
        for name in ("a", "b", "c", "d"):
            journal.add(name, f"{name}.jpg", kind="jpeg", size=1)
        for name in ("c", "a", "b"):
            journal.finish(name, "failed", f"bad {name}")
        journal.finish("d", "done")
        assert [j.reason for j in journal.recent("failed")] == ["bad b", "bad a", "bad c"]
        assert [j.id for j in journal.recent("failed", 2)] == ["b", "a"]
        assert [j.id for j in journal.recent("done")] == ["d"]
        assert journal.recent("quarantined") == []

    def test_a_running_job_is_alive_while_its_worker_holds_it(self, journal: Journal) -> None:
        journal.add("j1", "a.jpg", kind="jpeg", size=1)
        queued = journal.get("j1")
        assert queued is not None and not journal.alive(queued)
        job = journal.start("j1", pid=os.getpid())
        assert job is not None and journal.alive(job)
        again = journal.get("j1")
        assert again is not None and journal.alive(again)
        journal.finish("j1", "done")
        ended = journal.get("j1")
        assert ended is not None and not journal.alive(ended)

    def test_a_parked_job_is_no_longer_held(self, journal: Journal) -> None:
        journal.add("j1", "a.jpg", kind="jpeg", size=1)
        journal.start("j1", pid=os.getpid())
        journal.wait("j1", "s3", delay=60)
        parked = journal.get("j1")
        assert parked is not None and not journal.alive(parked)

    def test_old_ended_jobs_are_forgotten_and_the_rest_kept(self, journal: Journal) -> None:
        for name in ("old-done", "old-failed", "queued", "running", "waiting"):
            journal.add(name, f"{name}.jpg", kind="jpeg", size=1)
        journal.start("running", pid=1)
        journal.start("waiting", pid=1)
        journal.wait("waiting", "scanner", delay=60)
        journal.finish("old-done", "done")
        journal.finish("old-failed", "failed", "bad")
        ended = journal.get("old-failed")
        assert ended is not None
        cutoff = ended.updated + 0.001
        wait_until(lambda: time.time() > cutoff, 5, "the clock to pass the cutoff")
        journal.add("new", "new.jpg", kind=None, size=0, state="failed", reason="late")

        assert journal.forget_ended(cutoff) == 2

        assert journal.ids() == {"queued", "running", "waiting", "new"}
        assert journal.get("old-done") is None and journal.recent("done") == []
        assert [j.id for j in journal.recent("failed")] == ["new"]
        assert journal.counts() == {"queued": 1, "running": 1, "waiting": 1, "failed": 1}
        assert journal.forget_ended(cutoff) == 0

    def test_one_ended_job_is_forgotten_and_an_unfinished_one_kept(
            self, journal: Journal) -> None:
        journal.add("done", "a.jpg", kind="jpeg", size=1)
        journal.add("queued", "b.jpg", kind="jpeg", size=1)
        journal.finish("done", "done")

        assert journal.forget("done") is True
        assert journal.forget("queued") is False
        assert journal.forget("unknown") is False

        assert journal.ids() == {"queued"}
        assert journal.recent("done") == [] and journal.counts() == {"queued": 1}

    def test_a_child_forked_under_the_guard_can_use_the_journal(
            self, journal: Journal) -> None:
        journal.add("j1", "a.jpg", kind="jpeg", size=1)
        with journal.fork_guard():
            pid = os.fork()
            if pid == 0:  # pragma: no cover - child
                with journal.fork_guard():  # not left held by the parent's fork
                    pass
                journal.add("j2", "b.jpg", kind="jpeg", size=1)
                ok = journal.get("j1") is not None and journal.get("j2") is not None
                os._exit(0 if ok else 1)
        assert exit_code(pid) == 0
        assert journal.start("j1", pid=1) is not None  # the parent's journal still works


@pytest.fixture(params=["sqlite", "redis"])
def shared_url(request: pytest.FixtureRequest) -> str:
    """The queue URL of a journal that several processes share."""
    return queue_url(request.param, request)


def in_another_process(url: str, db: Path, code: str) -> subprocess.Popen[str]:
    """Python `code` with `journal` open on the same journal, in a process of its own."""
    script = ("import os, sys\nfrom pathlib import Path\n"
              "from hotfolder.journal import open_journal\n"
              f"journal = open_journal({url!r}, Path({str(db)!r}))\n"
              + textwrap.dedent(code))
    return subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


class TestSharedBetweenProcesses:
    """SQLite and Redis: one journal for every process that opens it."""

    def test_jobs_outlive_the_process_that_recorded_them(self, shared_url: str,
                                                         tmp_path: Path) -> None:
        db = tmp_path / "journal.db"
        writer = in_another_process(shared_url, db, """
            journal.add("j1", "a.jpg", kind="jpeg", size=1)
            journal.start("j1", 4242)
            journal.delivered("j1", ["a.png"])
            journal.close()
        """)
        writer.communicate(timeout=30)
        assert writer.returncode == 0
        journal = open_journal(shared_url, db)
        job = journal.get("j1")
        assert job is not None and (job.state, job.pid, job.outputs) == (
            "running", 4242, ["a.png"])
        journal.close()

    def test_a_forked_child_opens_its_own_connection(self, shared_url: str,
                                                     tmp_path: Path) -> None:
        journal = open_journal(shared_url, tmp_path / "journal.db")
        journal.add("j1", "a.jpg", kind="jpeg", size=1)
        with journal.fork_guard():
            pid = os.fork()
            if pid == 0:  # pragma: no cover - child
                ok = journal.start("j1", pid=os.getpid()) is not None
                os._exit(0 if ok else 1)
        assert exit_code(pid) == 0
        job = journal.get("j1")
        assert job is not None and job.state == "running" and job.pid == pid
        journal.close()

    def test_processes_racing_for_the_same_jobs_never_both_start_one(
            self, shared_url: str, tmp_path: Path) -> None:
        db = tmp_path / "journal.db"
        journal = open_journal(shared_url, db)
        ids = [f"j{n:02d}" for n in range(40)]
        for job_id in ids:
            journal.add(job_id, f"{job_id}.jpg", kind="jpeg", size=1)
        racers = [in_another_process(shared_url, db, f"""
            print("ready", flush=True)
            sys.stdin.readline()
            print(" ".join(i for i in {ids!r} if journal.start(i, os.getpid())), flush=True)
        """) for _ in range(3)]
        for racer in racers:
            assert racer.stdout is not None and racer.stdout.readline() == "ready\n"
        for racer in racers:
            assert racer.stdin is not None
            racer.stdin.write("go\n")
            racer.stdin.flush()
        taken = [racer.communicate(timeout=60)[0].split() for racer in racers]

        assert sorted(i for won in taken for i in won) == ids  # each job once, none lost
        assert journal.counts() == {"running": len(ids)}
        for racer, won in zip(racers, taken, strict=True):
            assert racer.returncode == 0
            assert {journal.get(i).pid for i in won} <= {racer.pid}  # type: ignore[union-attr]
        journal.close()


class TestPidLiveness:
    """SQLite and memory: a running job is alive while its worker's pid exists."""

    @pytest.mark.parametrize("kind", ["sqlite", "memory"])
    def test_a_job_whose_worker_died_is_not_alive(self, kind: str, tmp_path: Path) -> None:
        journal: Journal = (SqliteJournal(tmp_path / "journal.db") if kind == "sqlite"
                            else MemoryJournal())
        journal.add("j1", "a.jpg", kind="jpeg", size=1)
        job = journal.start("j1", pid=a_dead_pid())
        assert job is not None and job.state == "running" and not journal.alive(job)
        journal.close()


class TestSqlite:
    """SQLite: one file on a local disk, shared by the processes of one machine."""

    def test_a_reader_in_another_process_does_not_hold_up_writers(self, tmp_path: Path) -> None:
        journal = SqliteJournal(tmp_path / "journal.db")
        journal.add("j1", "a.jpg", kind="jpeg", size=1)
        reader = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(f"""
                import sqlite3, sys
                db = sqlite3.connect({str(tmp_path / "journal.db")!r}, isolation_level=None)
                db.execute("begin")
                print(db.execute("select count(*) from jobs").fetchone()[0], flush=True)
                sys.stdin.readline()
                print(db.execute("select count(*) from jobs").fetchone()[0], flush=True)
            """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert reader.stdout is not None and reader.stdout.readline() == "1\n"
            writes = time.monotonic()
            journal.add("j2", "b.jpg", kind="jpeg", size=1)  # with a rollback journal: locked
            assert journal.start("j1", pid=1) is not None
            assert time.monotonic() - writes < 10  # the busy timeout is 30 s
            assert journal.counts() == {"queued": 1, "running": 1}
            out, _ = reader.communicate("\n", timeout=30)
            assert out == "1\n"  # the reader keeps its snapshot
        finally:
            reader.kill()
            reader.wait()
        journal.close()

    def test_waits_and_failures_are_synced_and_other_changes_are_not(
            self, tmp_path: Path) -> None:
        journal = SqliteJournal(tmp_path / "journal.db")
        syncs: list[str] = []
        journal.add("j1", "a.jpg", kind="jpeg", size=1)
        conn = journal._db.get()
        conn.set_trace_callback(lambda sql: syncs.append(sql) if "synchronous" in sql else None)
        journal.start("j1", pid=1)
        journal.delivered("j1", ["a.png"])
        assert syncs == []  # NORMAL: not synced
        journal.wait("j1", "s3", delay=0)
        journal.start("j1", pid=1)
        journal.requeue("j1")
        journal.start("j1", pid=1)
        journal.finish("j1", "failed", "bad")
        assert syncs == ["pragma synchronous=full", "pragma synchronous=normal"] * 2
        assert conn.execute("pragma synchronous").fetchone()[0] == 1  # NORMAL between writes
        journal.close()


class TestRedis:
    """Redis: leases instead of pids, and plain words when Redis is away."""

    @pytest.fixture
    def leased(self, redis_server: RedisServer) -> Iterator[RedisJournal]:
        store = RedisJournal(redis_server.url, lease_seconds=LEASE)
        yield store
        store.close()

    def holder(self, url: str, job_id: str) -> subprocess.Popen[bytes]:
        """A process on 'another machine' that takes the job and keeps working on it."""
        code = textwrap.dedent(f"""
            import os, sys, time
            from hotfolder.journal.redis import RedisJournal
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
            self, leased: RedisJournal, redis_server: RedisServer) -> None:
        leased.add("j1", "A/photo.jpg", kind="jpeg", size=10)
        process = self.holder(redis_server.url, "j1")
        try:
            job = leased.get("j1")
            assert job is not None and job.state == "running"
            time.sleep(2 * LEASE)  # well past the lease: only renewal keeps it
            assert leased.alive(job)

            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            wait_until(lambda: not leased.alive(job), 3 * LEASE, "the lease to expire")
        finally:
            process.kill()
            process.wait()
            assert process.stdout is not None
            process.stdout.close()

        leased.requeue("j1", forgive=True)
        again = leased.start("j1", os.getpid())
        assert again is not None and again.attempts == 1 and leased.alive(again)

    def test_a_job_whose_process_died_holds_its_lease_until_it_expires(
            self, leased: RedisJournal) -> None:
        leased.add("j1", "a.jpg", kind="jpeg", size=1)
        job = leased.start("j1", a_dead_pid())  # the pid says nothing on other machines
        assert job is not None and leased.alive(job)

    def test_ending_or_parking_a_job_drops_its_lease(self, leased: RedisJournal) -> None:
        for end in ("wait", "finish"):
            leased.add(end, "a.jpg", kind="jpeg", size=1)
            job = leased.start(end, os.getpid())
            assert job is not None and leased.alive(job)
            if end == "wait":
                leased.wait(end, "s3", delay=60)
            else:
                leased.finish(end, "done")
            assert not leased.alive(job)  # the job as it was when running

    def test_a_pid_is_only_given_for_jobs_of_this_machine(self, leased: RedisJournal) -> None:
        leased.add("here", "a.jpg", kind="jpeg", size=1)
        leased.add("there", "b.jpg", kind="jpeg", size=1)
        leased.start("here", 4242)
        leased.start("there", 4242)
        leased.conn.hset("hotfolder:job:there", "owner", "worker-7.example:4242")

        here, there = leased.get("here"), leased.get("there")

        assert here is not None and here.pid == 4242
        assert there is not None and there.pid is None and there.state == "running"

    def test_redis_away_is_unavailable_in_plain_words_without_the_password(self) -> None:
        port = free_port()
        journal = RedisJournal(f"redis://:secret@127.0.0.1:{port}/0", retries=0)

        with pytest.raises(Unavailable) as away:
            journal.counts()

        assert away.value.message == (
            f"the journal in Redis at redis://127.0.0.1:{port}/0 does not answer")
        assert "secret" not in away.value.message
        journal.close()


class TestFactory:
    """`open_journal` picks the journal for `queue.url`, and a local one needs no Redis."""

    def test_the_queue_url_chooses_the_journal(self, redis_server: RedisServer,
                                               tmp_path: Path) -> None:
        assert is_shared(redis_server.url) and is_shared("rediss://host:6380/1")
        assert not is_shared(SQLITE_QUEUE) and not is_shared("memory://")
        shared = open_journal(redis_server.url, tmp_path / "journal.db")
        local = open_journal(SQLITE_QUEUE, tmp_path / "journal.db")
        assert isinstance(shared, RedisJournal) and isinstance(local, SqliteJournal)
        shared.close()
        local.close()

    def test_a_local_journal_does_not_import_redis(self, tmp_path: Path) -> None:
        process = in_another_process(SQLITE_QUEUE, tmp_path / "journal.db", """
            journal.add("j1", "a.jpg", kind="jpeg", size=1)
            assert journal.start("j1", os.getpid()) is not None
            print(sorted(m for m in sys.modules if m.split(".")[0] == "redis"
                         or m == "hotfolder.journal.redis"))
        """)
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0
        assert out == "[]\n"


def imported_by(command: str, config: Path) -> set[str]:
    """The top-level modules loaded by `hotfolder COMMAND -c CONFIG`, run in a new process."""
    code = textwrap.dedent(f"""
        import contextlib, io, json, sys
        from hotfolder.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            main([{command!r}, "-c", {str(config)!r}])
        print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}})))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


@pytest.mark.parametrize(("command", "module"), [
    ("check", "redis"),
    ("check", "boto3"),
    ("check", "huey"),
    ("status", "redis"),
    ("status", "boto3"),
    ("status", "huey"),
    ("cache", "huey"),
])
def test_the_command_line_on_a_local_root_does_not_import(
        command: str, module: str, tmp_path: Path) -> None:
    config = make_root(tmp_path / "root")
    (tmp_path / "root" / "state").mkdir()
    journal = open_journal(SQLITE_QUEUE, tmp_path / "root" / "state" / "journal.db")
    journal.add("j1", "a.jpg", kind="jpeg", size=1)  # so that status opens the journal
    journal.close()

    assert module not in imported_by(command, config)
