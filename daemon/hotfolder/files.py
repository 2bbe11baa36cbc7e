"""Atomic file writes: the one writer behind the outbox, failed/, quarantine/, the cache and init.

The bytes go to an unnamed file in the destination folder (O_TMPFILE), are fsynced, and
are linked to their final name (`link` never replaces anything); to replace a file, the
unnamed file is linked to a temporary dot-name `.hf-<random>.tmp` (which the watcher
ignores and the service's cleanup removes) and renamed over it. On filesystems without
unnamed files the bytes go to such a temporary name first. Then the folder is fsynced.
A process killed while writing leaves the old file, or nothing, never a partial one.
Many files written together can share their wait for the disk (`SyncGroup`): each one's
bytes are still synced (fdatasync), all at once, so that the filesystem commits them
together. The folders that several writes give names in can be synced once for all of
them, later (`FolderSyncs`, set with `folder_syncs_later`).
"""

from __future__ import annotations

import errno
import functools
import os
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import BinaryIO, TypeVar

T = TypeVar("T")
R = TypeVar("R")

TEMP_GLOB = ".hf-*.tmp"
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
UNNAMED_FILE_FLAGS = os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC
# Calls in flight at once in `concurrently`: enough for the filesystem to serve their waits
# together. The threads are started once per process and kept: starting them for every batch
# cost more than the calls, on a busy machine above all.
THREADS = 16
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def concurrently(call: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """call(item) for each item, from up to THREADS threads, the results in order: file-system
    calls that wait on the disk (fsync, freeing a replaced file's blocks) wait together. Every
    call runs, then the first OSError is raised. `call` must not use `concurrently` itself."""
    if len(items) <= 1:
        return [call(item) for item in items]
    share = -(-len(items) // THREADS)  # each thread takes a run of items: one task, not many
    runs = list(_threads().map(functools.partial(_each, call),
                               [items[start:start + share]
                                for start in range(0, len(items), share)]))
    for _, error in runs:
        if error is not None:
            raise error
    return [result for results, _ in runs for result in results]


def _each(call: Callable[[T], R], items: Sequence[T]) -> tuple[list[R], OSError | None]:
    """call(item) for each item in turn, and the first OSError met: the calls after it run."""
    results: list[R] = []
    error: OSError | None = None
    for item in items:
        try:
            results.append(call(item))
        except OSError as exc:
            error = error or exc
    return results, error


def _threads() -> ThreadPoolExecutor:
    """This process's threads for `concurrently`, started at its first use."""
    global _pool  # noqa: PLW0603  (one pool per process)
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(THREADS, thread_name_prefix="hotfolder-io")
        return _pool


def _forget_threads() -> None:
    """In a forked child: the parent's threads are not there, the child starts its own."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_threads)


class SyncGroup:
    """Files written without waiting for the disk, synced together by `sync`; used in a
    `with` block, which closes the descriptors of those left unsynced."""

    def __init__(self) -> None:
        self._fds: list[int] = []

    def __enter__(self) -> SyncGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, fd: int) -> None:
        """Sync this file with the group (the group keeps a descriptor of its own)."""
        self._fds.append(os.dup(fd))

    def sync(self) -> None:
        """Sync the bytes of every file of the group (fdatasync), concurrently; OSError when
        any of them failed."""
        fds, self._fds = self._fds, []
        try:
            concurrently(os.fdatasync, fds)  # raises the first error, once all have ended
        finally:
            for fd in fds:
                os.close(fd)

    def close(self) -> None:
        """Forget the files not synced yet."""
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)


class FolderSyncs:
    """Folders in which new names were made, synced later, together: each one once."""

    def __init__(self) -> None:
        self._fds: dict[tuple[int, int], int] = {}

    def note(self, folder: int) -> None:
        """Sync this folder (a descriptor) with the others."""
        st = os.fstat(folder)
        if (st.st_dev, st.st_ino) not in self._fds:
            # Opened anew, not dup'ed: a lock taken on `folder` must end when it is closed.
            self._fds[st.st_dev, st.st_ino] = os.open(".", os.O_RDONLY | os.O_DIRECTORY
                                                      | os.O_CLOEXEC, dir_fd=folder)

    def absorb(self, other: FolderSyncs) -> None:
        """Take over the folders noted in `other`."""
        for key, fd in other._fds.items():
            if key in self._fds:
                os.close(fd)
            else:
                self._fds[key] = fd
        other._fds = {}

    def sync(self) -> None:
        """Sync every folder noted; OSError when any of them failed."""
        try:
            for fd in self._fds.values():
                os.fsync(fd)
        finally:
            self.close()

    def close(self) -> None:
        """Forget the folders, unsynced."""
        fds, self._fds = list(self._fds.values()), {}
        for fd in fds:
            os.close(fd)


_later: ContextVar[FolderSyncs | None] = ContextVar("folder_syncs_later", default=None)


@contextmanager
def folder_syncs_later(syncs: FolderSyncs | None) -> Iterator[None]:
    """Within the block, `sync_names` notes folders in `syncs` (when given) instead of
    syncing them."""
    token = _later.set(syncs)
    try:
        yield
    finally:
        _later.reset(token)


def sync_names(folder: int) -> None:
    """Make the names made in a folder (a descriptor) durable: now, or with the FolderSyncs
    that `folder_syncs_later` set."""
    syncs = _later.get()
    if syncs is None:
        os.fsync(folder)
    else:
        syncs.note(folder)


def fsync_dir(folder: Path) -> None:
    """Make a rename or creation inside `folder` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name() -> str:
    """A fresh temporary dot-name."""
    return f".hf-{secrets.token_hex(8)}.tmp"


def write_temp(folder: int, source: bytes | BinaryIO, mode: int = 0o666,
               group: SyncGroup | None = None, *, sync: bool = True) -> str:
    """Write bytes (or an open file's content) to a new temporary name in folder, fsynced
    now, or with `group` when one is given (not at all without `sync`).

    Where the filesystem allows, the bytes go to an unnamed file (O_TMPFILE) that gets its
    temporary name only once complete, so a process killed while writing leaves nothing.
    """
    return _write(folder, source, mode, group, sync=sync)


def create_new(folder: int, data: bytes, name: str, mode: int = 0o666) -> bool:
    """Write data under `name` in folder unless that name is taken (False), the bytes synced
    before the name exists, the name with `sync_names`: an unnamed file gets it at once,
    elsewhere a temporary name is linked to it."""
    try:
        made = _write(folder, data, mode, None, sync=True, name=name)
    except FileExistsError:
        return False
    if made != name:  # no unnamed files here: the temporary name was written
        return link_new(folder, made, name)
    sync_names(folder)
    return True


def _write(folder: int, source: bytes | BinaryIO, mode: int, group: SyncGroup | None, *,
           sync: bool, name: str | None = None, taken_ok: bool = False) -> str:
    """`write_temp`, the unnamed file linked to `name` instead when one is given; when that
    name is taken, FileExistsError, or with `taken_ok` a temporary name. The name the bytes
    got."""
    temp = None
    try:
        fd = os.open(".", UNNAMED_FILE_FLAGS, mode, dir_fd=folder)
    except OSError as exc:  # NFS, CIFS and others have no unnamed files
        if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
        temp = temp_name()
        fd = os.open(temp, NEW_FILE_FLAGS, mode, dir_fd=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            if hasattr(source, "read"):
                shutil.copyfileobj(source, out, 1 << 20)
            else:
                out.write(source)
            out.flush()
            if group is not None:
                group.add(out.fileno())
            elif sync:
                os.fsync(out.fileno())
            if temp is None:
                made = name or temp_name()
                try:
                    os.link(f"/proc/self/fd/{out.fileno()}", made, dst_dir_fd=folder)
                except FileExistsError:
                    if not taken_ok:
                        raise
                    made = temp_name()
                    os.link(f"/proc/self/fd/{out.fileno()}", made, dst_dir_fd=folder)
                return made
    except BaseException:
        if temp is not None:
            os.unlink(temp, dir_fd=folder)
        raise
    return temp


def link_new(folder: int, temp: str, name: str) -> bool:
    """Give the temporary file its final name unless that name is taken; removes the temp name."""
    try:
        os.link(temp, name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
    except FileExistsError:
        return False
    finally:
        os.unlink(temp, dir_fd=folder)
    sync_names(folder)
    return True


def replace(folder: int, source: bytes, name: str, mode: int = 0o666, *,
            sync_folder: bool = True, sync: bool = True) -> None:
    """Write source under name in folder atomically, replacing what is there; without
    `sync_folder`, the rename may be lost with the power (the old file is then left); without
    `sync`, neither the bytes nor the rename are synced (the power may leave the old file, a
    new one cut short, or nothing)."""
    made = _write(folder, source, mode, None, sync=sync, name=name, taken_ok=True)
    if made != name:  # a temporary name, renamed over the one taken
        try:
            os.rename(made, name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            os.unlink(made, dir_fd=folder)
            raise
    if sync_folder and sync:
        sync_names(folder)


def write_atomic(path: Path, data: bytes, mode: int = 0o666, *, sync_folder: bool = True,
                 sync: bool = True) -> None:
    """Write data to path atomically, replacing what is there; its folder must exist."""
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        replace(fd, data, path.name, mode, sync_folder=sync_folder, sync=sync)
    finally:
        os.close(fd)
