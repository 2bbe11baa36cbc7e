"""The queue: jobs queued together reach the workers one by one, in order, on every backend."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hotfolder.config import Config
from hotfolder.queue import WAKE_MOST, WakePipe, enqueue_all, make_huey


@pytest.mark.parametrize("url", ["sqlite:///state/queue.db", "memory://"])
def test_jobs_queued_together_are_taken_one_by_one_in_order(tmp_path: Path, url: str) -> None:
    huey = make_huey(url, Config(root=tmp_path).layout)
    done: list[str] = []

    @huey.task()
    def process(job_id: str) -> None:
        done.append(job_id)

    enqueue_all(huey, [process.s(f"job{n:03d}") for n in range(300)])
    assert huey.pending_count() == 300
    while (task := huey.dequeue()) is not None:
        huey.execute(task)
    assert done == [f"job{n:03d}" for n in range(300)]


def test_a_batch_of_jobs_wakes_at_most_wake_most_workers() -> None:
    wake = WakePipe()
    try:
        wake.ring(10_000)  # an awake worker takes job after job: more bytes only wake in vain
        assert len(os.read(wake.read_fd, 1 << 16)) == WAKE_MOST
        wake.ring(3)
        assert len(os.read(wake.read_fd, 1 << 16)) == 3
    finally:
        wake.close()


def test_a_job_taken_from_sqlite_costs_one_write_and_no_look_for_revocations(
        tmp_path: Path) -> None:
    huey = make_huey("sqlite:///state/queue.db", Config(root=tmp_path).layout)
    done: list[str] = []

    @huey.task()
    def process(job_id: str) -> None:
        done.append(job_id)

    enqueue_all(huey, [process.s("job1"), process.s("job2")])
    statements: list[str] = []
    huey.storage.conn.set_trace_callback(statements.append)
    while (task := huey.dequeue()) is not None:
        huey.execute(task)
    assert done == ["job1", "job2"]
    # One write transaction per job (its dequeue), nothing read from or written to Huey's
    # key-value table (where revocations would be): the service revokes nothing.
    assert [s.split()[0].lower() for s in statements].count("begin") == 2
    assert not [s for s in statements if " kv " in s.lower()]
