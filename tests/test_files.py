"""The atomic writer every file of hotfolder goes through (files.py)."""

from __future__ import annotations

import errno
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from hotfolder.files import concurrently, write_atomic


def test_write_atomic_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_write_atomic_failure_leaves_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(target, 123)  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_a_name_that_cannot_be_replaced_leaves_no_temporary(tmp_path: Path) -> None:
    (tmp_path / "out.png").mkdir()
    (tmp_path / "out.png" / "inside").write_bytes(b"kept")
    with pytest.raises(IsADirectoryError):
        write_atomic(tmp_path / "out.png", b"new")
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
    assert (tmp_path / "out.png" / "inside").read_bytes() == b"kept"


def test_concurrent_calls_run_in_a_process_forked_after_some_ran() -> None:
    # The service forks its workers (and replaces dead ones) after it has synced claims: its
    # threads are waiting for more then (three at least, as the barrier holds each call).
    together = threading.Barrier(3, timeout=10)
    assert concurrently(lambda n: together.wait() >= 0 and n, [1, 2, 3]) == [1, 2, 3]
    pid = os.fork()
    if pid == 0:  # the child: its own threads, not the parent's, which it lacks
        os._exit(0 if concurrently(lambda n: n + 1, [1, 2, 3]) == [2, 3, 4] else 1)
    deadline = time.monotonic() + 10
    while (status := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if status[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child's concurrent calls never ran")
    assert os.waitstatus_to_exitcode(status[1]) == 0


def test_every_concurrent_call_runs_before_the_first_error_is_raised() -> None:
    # A batch of claims whose syncs partly fail is given up whole, with every sync ended.
    ran = []

    def sync(n: int) -> int:
        ran.append(n)
        if n % 5 == 2:
            raise OSError(errno.EIO, f"file {n}: Input/output error")
        return n

    with pytest.raises(OSError, match="file 2:"):
        concurrently(sync, range(40))
    assert sorted(ran) == list(range(40))
    assert concurrently(sync, [0, 1, 3, 4] * 10) == [0, 1, 3, 4] * 10
