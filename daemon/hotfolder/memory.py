"""The memory cap of a process that renders jobs (`limits.worker_memory_mb`, SPEC 10).

The cap is the soft RLIMIT_DATA of the worker process: the kernel refuses an allocation
beyond it, which Python, numpy and Pillow report as MemoryError and OpenCV as an
"Insufficient memory" error, so the job fails with a sentence and the worker lives on.
RLIMIT_DATA counts what a job allocates (heap and private writable mappings); RLIMIT_AS
would also count the ~450 MB of code and reserved address space a worker maps without
using it. Only the soft limit is set, so code that is not the job's (loading numba's
compiler, whose BLAS library retries a failed allocation for ever) can lift it for a
moment with `uncapped`.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager

LIMIT = resource.RLIMIT_DATA
MB = 2**20


def machine_memory() -> int:
    """The machine's physical memory in bytes."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def cap(limit: int) -> None:
    """Cap this process's data at `limit` bytes (never above the hard limit it was given)."""
    _, hard = resource.getrlimit(LIMIT)
    resource.setrlimit(LIMIT, (limit if hard == resource.RLIM_INFINITY else min(limit, hard),
                               hard))


@contextmanager
def capped(limit: int) -> Iterator[None]:
    """Cap this process's data at `limit` bytes while the block runs."""
    before = resource.getrlimit(LIMIT)
    cap(limit)
    try:
        yield
    finally:
        resource.setrlimit(LIMIT, before)


@contextmanager
def uncapped() -> Iterator[None]:
    """Lift the cap while the block runs: for loading code, never for a job's pixels."""
    before = resource.getrlimit(LIMIT)
    resource.setrlimit(LIMIT, (before[1], before[1]))
    try:
        yield
    finally:
        resource.setrlimit(LIMIT, before)


def reserve(size: int) -> None:
    """MemoryError when `size` bytes more would not fit under the cap: for libraries that end
    the process when an allocation fails instead of reporting it."""
    soft, _ = resource.getrlimit(LIMIT)
    if soft != resource.RLIM_INFINITY and data_size() + size > soft:
        raise MemoryError(f"{size} bytes would exceed the cap of {soft} bytes")


def data_size() -> int:
    """This process's data segment now, in bytes (what the cap counts)."""
    with open("/proc/self/status", "rb") as status:
        for line in status:
            if line.startswith(b"VmData:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmData in /proc/self/status")


def not_enough_memory() -> str:
    """The reason of a job that reached the cap, in plain words."""
    soft, _ = resource.getrlimit(LIMIT)
    if soft == resource.RLIM_INFINITY:
        return "not enough memory to process it on this machine"
    return (f"not enough memory to process it: it needs more than the {soft // MB} MB a worker"
            " may use (limits.worker_memory_mb)")
