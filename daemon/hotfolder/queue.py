"""The Huey queue from `queue.url`, and consumers whose worker processes suit a service.

Workers are forked processes (a crashing decoder kills one worker, not the service).
Each one dies with the process that forked it (PR_SET_PDEATHSIG), ignores the
terminal's and systemd's stop signals (the service stops it through Huey's stop flag
once its job is done), runs at a lower priority than the service, is capped at
limits.worker_memory_mb (`memory.cap`), and sleeps on a
pipe that the service writes to when it queues a job, so a dropped file never waits
for Huey's idle polling back-off.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from huey.api import Huey
from huey.consumer import Consumer, ProcessEnvironment, Worker
from huey.storage import MemoryStorage, RedisStorage, SqliteStorage

from hotfolder import memory
from hotfolder.config import Layout
from hotfolder.errors import ConfigError

log = logging.getLogger("hotfolder.queue")

PR_SET_PDEATHSIG = 1
KILL_WAIT_SECONDS = 5.0
# Idle workers poll the queue this often at most (the wake pipe makes it rarely matter).
MAX_POLL_SECONDS = 1.0
QUEUE_NAME = "hotfolder"
# Wake-up bytes written at most for one batch of jobs: a worker awake takes job after job
# until the queue is empty, so more bytes would only wake workers to find it empty.
WAKE_MOST = 64
# Workers yield the CPU to the service's watcher and intake, so that a backlog is claimed
# (and `status` tells the truth about it) while the first jobs run.
WORKER_NICE = 10
# A worker that cannot read the queue says so in one line at most this often.
QUEUE_ERROR_REPEAT_SECONDS = 60.0
# Connections inherited through fork are kept, never used or closed (SQLite forbids both).
INHERITED: list[Any] = []


# The prefix of Huey's key for a revoked task (Task.revoke_id).
REVOKED_PREFIX = "r:"


class ServiceHuey(Huey):  # type: ignore[misc]
    """Huey without revocations: the service revokes no task (its journal says which jobs are
    to do). Huey looks for a task's revocation before it runs it and deletes it after, which
    on SQLite costs two reads and a write transaction per job, under the lock that every
    worker and the intake take too."""

    def is_revoked(self, task: Any, timestamp: Any = None, peek: bool = True) -> bool:
        return False

    def delete(self, key: str) -> bool:
        if key.startswith(REVOKED_PREFIX):  # none is ever written
            return False
        return bool(super().delete(key))


def make_huey(url: str, layout: Layout) -> Huey:
    """The Huey instance for `queue.url`; sqlite paths are relative to the root."""
    split = urlsplit(url)
    if split.scheme == "sqlite":
        path = Path(split.netloc + split.path)
        if not url.startswith("sqlite:////"):
            path = layout.root / path.relative_to("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        return ServiceHuey(QUEUE_NAME, storage_class=SqliteStorage, filename=str(path),
                           results=False, fsync=False)
    if split.scheme in ("redis", "rediss"):
        return ServiceHuey(QUEUE_NAME, storage_class=RedisStorage, url=url, results=False)
    if split.scheme == "memory":
        return ServiceHuey(QUEUE_NAME, storage_class=MemoryStorage, results=False)
    raise ConfigError(f"queue.url {url!r}: unknown scheme {split.scheme!r}")


def enqueue_all(huey: Huey, tasks: Sequence[Any]) -> None:
    """Queue tasks: in one transaction on an SQLite queue (whose every write takes the lock
    the workers' dequeues take too), one by one on the others."""
    storage = huey.storage
    if not isinstance(storage, SqliteStorage):
        for task in tasks:
            huey.enqueue(task)
        return
    rows = [(storage.name, storage.to_blob(huey.serialize_task(task)), task.priority or 0)
            for task in tasks]
    with storage.db(commit=True) as cursor:  # the statement of SqliteStorage.enqueue
        cursor.executemany("insert into task (queue, data, priority) values (?, ?, ?)", rows)


def die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies; exit if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:
        os._exit(1)


class WakePipe:
    """A pipe whose bytes wake sleeping workers: one byte per queued job."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def ring(self, jobs: int = 1) -> None:
        """Wake a sleeping worker for each job queued, up to WAKE_MOST (a full pipe means they
        are all awake anyway)."""
        if jobs > 0:
            with contextlib.suppress(BlockingIOError):
                os.write(self.write_fd, b"!" * min(jobs, WAKE_MOST))

    def take(self) -> None:
        """Consume one wake-up byte, if any is left."""
        with contextlib.suppress(BlockingIOError):
            os.read(self.read_fd, 1)

    def close(self) -> None:
        """Close both ends."""
        for fd in (self.read_fd, self.write_fd):
            os.close(fd)


class QueueErrorsInWords(logging.Filter):
    """Huey's "Error reading from queue" and its traceback, as one plain line a minute."""

    def __init__(self) -> None:
        super().__init__()
        self._quiet_until = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != "Error reading from queue" or not record.exc_info:
            return True
        now = time.monotonic()
        if now < self._quiet_until:
            return False
        self._quiet_until = now + QUEUE_ERROR_REPEAT_SECONDS
        record.msg = "the queue does not answer, this worker tries again: %s"
        record.args = (record.exc_info[1],)
        record.exc_info, record.exc_text = None, None
        return True


class _Environment(ProcessEnvironment):  # type: ignore[misc]
    """Forked workers that die with their parent, leave stop signals to the service, and are
    capped at `memory_limit` bytes (limits.worker_memory_mb)."""

    memory_limit: int | None = None

    def init_child(self, process: Any) -> None:
        parent = os.getppid()
        storage = process.huey.storage
        if hasattr(storage, "lock"):  # SQL storages: the parent's lock and connection stay there
            storage.lock = threading.Lock()
            INHERITED.append(storage._conn)
            storage._conn = None
        super().init_child(process)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        os.nice(WORKER_NICE)
        die_with_parent(parent)
        if self.memory_limit is not None:
            memory.cap(self.memory_limit)


class _Worker(Worker):  # type: ignore[misc]
    """A Huey worker that sleeps on the wake pipe as well as on the stop flag."""

    wake: WakePipe | None = None
    delay: float
    default_delay: float
    max_delay: float
    backoff: float

    def sleep(self) -> None:
        delay = min(self.delay, self.max_delay)
        if self.wake is None:
            self.stop_flag.wait(delay)
        else:
            poller = select.poll()
            poller.register(self.stop_flag._r, select.POLLIN)
            poller.register(self.wake.read_fd, select.POLLIN)
            if any(fd == self.wake.read_fd for fd, _ in poller.poll(delay * 1000)):
                self.wake.take()
                self.delay = self.default_delay
                return
        self.delay *= self.backoff


class ServiceConsumer(Consumer):  # type: ignore[misc]
    """Huey's consumer with process workers and no scheduler process: no task is scheduled
    for later (the journal wakes the jobs that wait), and the service, not Huey, handles
    signals."""

    def __init__(self, huey: Huey, workers: int, wake: WakePipe | None,
                 memory_limit: int | None = None) -> None:
        self.worker_class = type("Worker", (_Worker,), {"wake": wake})
        self.memory_limit = memory_limit
        super().__init__(
            huey, workers=workers, periodic=False, initial_delay=0.05, backoff=1.5,
            max_delay=MAX_POLL_SECONDS, worker_type="process",
            check_worker_health=True,
        )

    def get_environment(self, worker_type: str) -> ProcessEnvironment:
        environment = _Environment(self._graceful_sig, self._interrupt_sig)
        environment.memory_limit = self.memory_limit
        return environment

    def start(self) -> None:
        """Fork the workers (Huey's scheduler process, which nothing here uses, is not started)."""
        self.huey.storage.close()  # forked children must not share the parent's connection
        for _, process in self.worker_threads:
            process.start()

    def check_worker_health(self) -> bool:
        """Fork a new worker for each dead one; False when any was dead."""
        dead = [n for n, (_, process) in enumerate(self.worker_threads)
                if not process.is_alive()]
        for n in dead:
            worker = self._create_worker()
            process = self._create_process(worker, f"Worker-{n + 1}")
            process.start()
            self.worker_threads[n] = (worker, process)
        return not dead

    def worker_processes(self) -> list[Any]:
        """The multiprocessing.Process of each worker."""
        return [process for _, process in self.worker_threads]

    def replace_dead_workers(self, *, holding: contextlib.AbstractContextManager[Any]) -> None:
        """Fork new workers for dead ones, holding `holding` and the queue's lock meanwhile."""
        # No child may inherit a lock held; Redis' connection pool is fork-safe and has none.
        with holding, getattr(self.huey.storage, "lock", contextlib.nullcontext()):
            self.check_worker_health()

    def kill_worker(self, process: Any) -> int | None:
        """SIGKILL one worker process; returns its exit code once it is gone (None: not yet)."""
        process.kill()
        process.join(KILL_WAIT_SECONDS)
        return int(process.exitcode) if process.exitcode is not None else None

    def stop_workers(self, seconds: float) -> None:
        """Let the workers finish the jobs they hold, for up to `seconds`, then kill them."""
        self.stop_flag.set()
        deadline = time.monotonic() + seconds
        processes = self.worker_processes()
        for process in processes:
            process.join(max(deadline - time.monotonic(), 0))
        for process in processes:
            if process.is_alive():
                log.warning("worker %s still busy after %.0f s, stopped; its job will run again"
                            " at the next start", process.pid, seconds)
                process.kill()
                process.join()
