"""The atomic writer every file of hotfolder goes through (files.py)."""

from __future__ import annotations

import errno
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from hotfolder import files
from hotfolder.files import concurrently, create_new, write_atomic


@pytest.fixture(params=["unnamed files", "named temporaries"])
def writes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Writes through unnamed files (O_TMPFILE), or as on a filesystem without them (NFS,
    CIFS): there the folder cannot be opened for writing, and the writer falls back on a
    temporary name."""
    if request.param == "named temporaries":
        monkeypatch.setattr(files, "UNNAMED_FILE_FLAGS", os.O_WRONLY | os.O_CLOEXEC)  # EISDIR
    return str(request.param)


def test_write_atomic_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_a_new_file_gets_its_name_once_and_leaves_no_temporary(tmp_path: Path,
                                                                writes: str) -> None:
    folder = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert create_new(folder, b"first", "out.png")
        assert not create_new(folder, b"second", "out.png")  # the name is taken: kept as it is
    finally:
        os.close(folder)
    assert (tmp_path / "out.png").read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_write_atomic_makes_a_name_then_replaces_it(tmp_path: Path, writes: str) -> None:
    target = tmp_path / "out.png.json"
    write_atomic(target, b"{}")
    write_atomic(target, b"[]")
    assert target.read_bytes() == b"[]"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png.json"]


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
