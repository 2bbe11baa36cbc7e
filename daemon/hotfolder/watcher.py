"""Watching the inbox (SPEC 5 `watch`): watchdog observers, settling, periodic rescans.

A file is offered to intake only when it looks complete:
- inotify (local folders): when a writer closes it (IN_CLOSE_WRITE), or at once when it is
  renamed into the tree (a rename publishes a finished file: rsync, Samba, `mv`);
- anything else (a hard link, a file found by a rescan, every file in polling mode): when its
  size and mtime stay unchanged for `settle_seconds` and, on inotify, no writer has it open.
  The modification time alone is not trusted: SMB clients set it to the source file's time
  while they are still writing.
Files already in the tree when the watcher starts have rested while nothing watched: the
start-up rescan judges their settle time from the later of their mtime and ctime (a writer can
set the mtime back, never the ctime), so one unchanged for `settle_seconds` before the start,
and still unchanged at the next look, is offered at once, not waited out again. On inotify,
those are offered before the tree is watched (its claims, each opening, closing and moving a
file, then raise no event to read), and the rescan right after the watch starts finds what
came meanwhile; until then the watcher is not `healthy` (the service not ready).
inotify watches the inbox's own folder and, recursively, each folder in it that can hold inputs
(InboxWatch), for the events the watcher acts on alone: the work folder, and any other excluded
or ignored folder there, raise no event, whatever claims and jobs do in it.
Network mounts (NFS, SMB, FUSE, ...) send no inotify events for changes made elsewhere, so they
are polled (TreePoller: every folder is looked at on each pass, only the folders whose
modification time changed are listed, within a small share of a core); their clients cache a
file's attributes for a while (NFS `acregmin`, 3 s by default), so there a file must stay
unchanged for `settle_seconds` plus that time. A full rescan at
start-up and every `rescan_seconds` catches what events missed (a full inotify queue, a share
that went away), and the folders inotify could not watch once the user's watches ran out
(`Coverage` counts them). No link is followed into a folder, in any mode: a link is offered as
a file (intake refuses it), so links to other folders or loops (`a -> .`) are never walked. A
folder's recipe.yaml is configuration, never offered. on_files gets the files found complete
together (up to OFFER_BATCH at a time: a rescan's thousands are claimed in batches, two
batches at once, so that one batch's syncs wait for the disk while the next is checked),
from at most OFFER_CALLS threads at a time; it may get the same file again (intake makes that
harmless) but not the same version within a few seconds, unless it left the tree in between
(claimed, then moved back by `hotfolder retry`).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fnmatch
import functools
import itertools
import json
import logging
import os
import re
import stat
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import EventEmitter, ObservedWatch
from watchdog.observers.inotify import InotifyObserver

from hotfolder.config import RECIPE_FILE, WatchConfig
from hotfolder.files import write_atomic

log = logging.getLogger(__name__)

MOUNTS = Path("/proc/self/mounts")

# Filesystems whose changes made on other machines raise no inotify event on this one.
NETWORK_FS = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "9p", "ceph", "glusterfs", "lustre",
        "gpfs", "beegfs", "afs", "coda", "davfs", "fuse", "gfs2", "ocfs2", "vboxsf", "vmhgfs",
        "virtiofs", "drvfs", "orangefs",
    }
)  # fmt: skip
LOCAL_FUSE = frozenset({"fuseblk"})  # FUSE over a local block device (ntfs-3g, exfat-fuse)

# Temporary and housekeeping names of copy tools, sync clients, editors and desktops, matched
# case-insensitively against every path component. Names starting with a dot (rsync
# `.name.XXXXXX`, Syncthing `.syncthing.*.tmp`, `.~lock.*#`, `.DS_Store`, `._*`, `.dropbox*`,
# `.nfsXXXX`, the work folder `.hotfolder`) are always ignored.
TOOL_TEMPORARY = (
    "~$*", "~*.tmp", "*~", "*.tmp", "*.temp", "*.~tmp", "*.part", "*.partial", "*.filepart",
    "*.crdownload", "*.download", "*.opdownload", "*.!sync", "*.!ut", "*.!qb", "*.swp",
    "*.swx", "*.kate-swp", "*.sb-*", "thumbs.db", "ehthumbs.db", "desktop.ini",
    "icon\r", "$recycle.bin", "system volume information", "@eadir", "#recycle",
    "#snapshot", "@recycle", "lost+found",
)  # fmt: skip

PROC_SELF = Path("/proc/self")
MAX_USER_WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")
REPORT_NAME = "watcher.json"  # in state/: what `hotfolder status` says about watching
# watchdog adds a folder's watch when it reads the folder's creation event, in its own thread:
# a folder a rescan finds unwatched counts only if it is still unwatched this much later.
CONFIRM_SECONDS = 1.0
_WATCH_LINE = re.compile(r"^inotify wd:\S+ ino:([0-9a-f]+) ", re.MULTILINE)

OFFER_BATCH = 128  # files handed to on_files in one call, at most
OFFER_CALLS = 2  # calls of on_files at once, at most
# A start's walk offers the rested files it has found once this many wait: each one held
# costs some 0.4 kB until offered (100,000 files waiting at start-up held up to 40 MB), so
# these hold 8 MB at most. Not fewer: while a backlog's jobs run, the workers' CPU slows the
# rest of the walk, and 10,000 files offered every 2,048 were all claimed 0.4 to 0.6 s later.
WALK_OFFER_FILES = 160 * OFFER_BATCH
DEDUP_SECONDS = 10.0  # the same version of a file is offered at most once in this window
STALE_OPEN_SECONDS = 600.0  # an open writer unseen for this long is presumed gone (lost events)
RESTART_SECONDS = 1.0  # least time between two attempts to start an observer
JOIN_SECONDS = 10.0
POLL_CPU_SHARE = 0.02  # of one core, the most a poll of the tree may use: a big tree polls slower
POLL_PACE_FOLDERS = 50  # a poll checks its pace (and may pause) after this many folders
POLL_SLOW_FACTOR = 1.5  # a poll this many intervals long is said in the log...
POLL_SAY_SECONDS = 3600.0  # ...at most this often
# A folder whose modification time is older than this when it is listed cannot gain an entry
# under that same time (even with coarse times, or a server's clock somewhat behind ours).
POLL_TRUST_SECONDS = 60.0
INOTIFY_LIMITS = frozenset({errno.ENOSPC, errno.EMFILE})  # out of inotify watches or instances


# -- Decisions (pure functions) -------------------------------------------------------------


def ignored(name: str, patterns: Sequence[str]) -> bool:
    """True for a file or folder name that is never an input: hidden, temporary, or a pattern."""
    return name.startswith(".") or _matcher(tuple(patterns)).match(name.casefold()) is not None


@functools.lru_cache(maxsize=8)
def _matcher(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One regular expression for all the patterns, for case-folded names."""
    every = (*patterns, *TOOL_TEMPORARY)
    return re.compile("|".join(fnmatch.translate(pattern.casefold()) for pattern in every))


class Mount(NamedTuple):
    """One line of the mount table."""

    point: str
    fstype: str
    options: tuple[str, ...]


def _unescape_mount(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_of(path: str, mounts: str) -> Mount:
    """The mount holding an absolute path: the longest mount point above it in the table's text."""
    best = Mount("/", "", ())
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        point = _unescape_mount(fields[1])
        inside = point in ("/", path) or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best.point):  # a later mount on one point hides earlier
            best = Mount(point, fields[2], tuple(fields[3].split(",")))
    return best


def attribute_cache_seconds(mount: Mount) -> float:
    """How stale a network client's view of a file's size and mtime may be (mount options)."""
    if not network_type(mount.fstype):
        return 0.0
    if "noac" in mount.options:
        return 0.0
    options = dict(option.partition("=")[::2] for option in mount.options)
    keys = ("acregmin", "actimeo") if mount.fstype.startswith("nfs") else ("acregmax", "actimeo")
    for key in keys:
        if options.get(key, "").isdigit():
            return float(options[key])
    return 3.0 if mount.fstype.startswith("nfs") else 1.0  # nfs(5) acregmin, mount.cifs actimeo


def network_type(fstype: str) -> bool:
    """True for a filesystem type whose remote changes raise no local inotify event."""
    if fstype in LOCAL_FUSE:
        return False
    return fstype in NETWORK_FS or fstype.startswith("fuse.")


def mount_at(path: Path, mounts: str | None = None) -> Mount:
    """The mount holding a path, from /proc/self/mounts unless a table's text is given."""
    if mounts is None:
        try:
            mounts = MOUNTS.read_text(encoding="utf-8", errors="surrogateescape")
        except OSError:
            mounts = ""
    return mount_of(os.path.realpath(path), mounts)


def is_network_fs(path: Path, mounts: str | None = None) -> bool:
    """True when the path lives on a network or FUSE filesystem (from /proc/self/mounts)."""
    return network_type(mount_at(path, mounts).fstype)


def state_folder_problem(state: Path, mounts: str | None = None) -> str | None:
    """Why `state` cannot hold the SQLite databases (it is on a network filesystem), or None."""
    if not is_network_fs(state, mounts):
        return None
    return (f"{state}: the state folder is on a network filesystem; its SQLite databases need"
            " a local disk (set paths.state to a local folder)")


def polling_wanted(mode: str, network: bool) -> bool:
    """Whether to poll: forced by `watch.mode`, else only on network filesystems."""
    return mode == "polling" or (mode == "auto" and network)


def poll_interval(settle_seconds: float) -> float:
    """Seconds between the starts of two polls of the tree (a big tree may take longer)."""
    return max(settle_seconds, 2.0)


def tick_interval(settle_seconds: float) -> float:
    """Seconds between two checks of the files waiting to settle."""
    return min(max(settle_seconds / 4, 0.05), 0.5)


class Action(enum.Enum):
    """What an event means for one path."""

    TAKE = "take"  # complete now: offer it
    SETTLE = "settle"  # may still be written: offer it once it has settled
    OPENED = "opened"  # a process opened it
    CLOSED = "closed"  # a process closed it
    FORGET = "forget"  # it left the tree
    WATCH = "watch"  # a folder was made in the inbox itself: watch it; its files settle
    ARRIVED = "arrived"  # a folder was moved into the inbox itself: watch it; its files are whole
    UNWATCH = "unwatch"  # a folder left the inbox itself


# The events that `route` acts on: inotify is asked for these alone (no IN_ATTRIB, IN_MODIFY),
# so a claim's note and mode change, and every write, raise none.
ROUTED: list[type[FileSystemEvent]] = [
    FileMovedEvent, FileDeletedEvent, FileClosedEvent, FileClosedNoWriteEvent, FileOpenedEvent,
    FileCreatedEvent,
]
TOP_ROUTED = [*ROUTED, DirCreatedEvent, DirMovedEvent, DirDeletedEvent]  # see `route_top`


def route(event: FileSystemEvent) -> list[tuple[Action, str]]:
    """The actions that one inotify event asks for, in order."""
    if event.is_directory:
        return []
    src, dest = os.fsdecode(event.src_path), os.fsdecode(event.dest_path)
    if isinstance(event, FileMovedEvent):
        actions = [(Action.FORGET, src)] if src else []
        if dest:
            actions.append((Action.TAKE, dest))
        return actions
    if isinstance(event, FileDeletedEvent):
        return [(Action.FORGET, src)]
    if isinstance(event, FileClosedEvent):
        return [(Action.CLOSED, src), (Action.TAKE, src)]
    if isinstance(event, FileClosedNoWriteEvent):
        return [(Action.CLOSED, src)]
    if isinstance(event, FileOpenedEvent):
        return [(Action.OPENED, src)]
    if isinstance(event, FileCreatedEvent):
        # Synthetic creations list the content of a folder renamed into the tree: complete.
        return [(Action.TAKE if event.is_synthetic else Action.SETTLE, src)]
    return []


def route_top(event: FileSystemEvent) -> list[tuple[Action, str]]:
    """The actions that an event in the inbox's own folder asks for: a file's as in `route`;
    a folder made there, moved there or away (a watch of its own sees what is inside)."""
    if not event.is_directory:
        return route(event)
    src, dest = os.fsdecode(event.src_path), os.fsdecode(event.dest_path)
    if isinstance(event, DirMovedEvent):
        gone = [(Action.UNWATCH, src)] if src else []
        return gone + ([(Action.ARRIVED, dest)] if dest else [])
    if isinstance(event, DirDeletedEvent):
        return [(Action.UNWATCH, src)]
    if isinstance(event, DirCreatedEvent):
        return [(Action.WATCH, src)]
    return []


class Signature(NamedTuple):
    """What tells two versions of a file apart: a new copy of the same bytes has a new inode."""

    size: int
    mtime_ns: int
    inode: int


@dataclass(slots=True)  # one for every file waiting to settle
class _Waiting:
    signature: Signature | None  # as last seen, None before the first look
    since: float  # clock time since when it has looked like that
    changing: bool  # the last look saw a change (or there was none yet): look again soon


class Settler:
    """Files waiting to look complete: same size and mtime for `settle_seconds`, no open writer."""

    def __init__(self, settle_seconds: float, clock: Callable[[], float]) -> None:
        self.settle_seconds = settle_seconds
        self._clock = clock
        self._waiting: dict[str, _Waiting] = {}
        self._open: dict[str, tuple[int, float]] = {}  # path -> (open count, clock at last change)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._waiting)

    def wait(self, path: str, signature: Signature | None = None, rested: float = 0.0) -> None:
        """Start watching a path, unless it is already waiting; `rested`: seconds it had
        already looked like `signature` before this look."""
        with self._lock:
            if path not in self._waiting:
                self._waiting[path] = _Waiting(signature, self._clock() - rested,
                                               signature is None)

    def forget(self, path: str) -> None:
        """Drop a path that left the tree or was offered."""
        with self._lock:
            self._waiting.pop(path, None)
            self._open.pop(path, None)

    def opened(self, path: str) -> None:
        """Count a process that opened the file."""
        with self._lock:
            count, _ = self._open.get(path, (0, 0.0))
            self._open[path] = (count + 1, self._clock())

    def closed(self, path: str) -> None:
        """Count a process that closed the file (closes of opens before we watched are ignored)."""
        with self._lock:
            count, _ = self._open.pop(path, (0, 0.0))
            if count > 1:
                self._open[path] = (count - 1, self._clock())

    def due(self, look: Callable[[str], Signature | None]) -> list[tuple[str, Signature]]:
        """Settled paths with their signature; `look` gives a signature, or None if it is gone."""
        with self._lock:
            now = self._clock()
            # Two looks settle_seconds apart that agree mean no write in between: a file that
            # has stopped changing is looked at again only then, a changing one at every call.
            paths = [
                path
                for path, entry in self._waiting.items()
                if entry.changing or now - entry.since >= self.settle_seconds
            ]
        ready = []
        for path in paths:
            signature = look(path)
            with self._lock:
                entry = self._waiting.get(path)
                if entry is None:
                    continue
                now = self._clock()
                if signature is None:
                    del self._waiting[path]
                    self._open.pop(path, None)
                elif signature != entry.signature:
                    entry.signature, entry.since, entry.changing = signature, now, True
                elif now - entry.since >= self.settle_seconds and not self._writer(path, now):
                    del self._waiting[path]
                    ready.append((path, signature))
                else:
                    entry.changing = False
        return ready

    def _writer(self, path: str, now: float) -> bool:
        count, changed = self._open.get(path, (0, 0.0))
        return count > 0 and now - changed < STALE_OPEN_SECONDS


class Recent:
    """Remembers what was offered lately, so that one file's many events give one call."""

    def __init__(self, window: float, clock: Callable[[], float]) -> None:
        self.window = window
        self._clock = clock
        self._seen: dict[str, tuple[Signature, float]] = {}
        self._pruned = clock()
        self._lock = threading.Lock()

    def first(self, path: str, signature: Signature) -> bool:
        """True if this version of the file was not offered within the window (and records it)."""
        now = self._clock()
        with self._lock:
            previous = self._seen.get(path)
            if (
                previous is not None
                and previous[0] == signature
                and now - previous[1] < self.window
            ):
                return False
            self._seen[path] = (signature, now)
            if now - self._pruned >= self.window:
                self._seen = {p: v for p, v in self._seen.items() if now - v[1] < self.window}
                self._pruned = now
            return True

    def forget(self, path: str) -> None:
        """Drop a path that left the tree: whatever comes back under its name is offered again."""
        with self._lock:
            self._seen.pop(path, None)


def signature_of(st: os.stat_result) -> Signature:
    """What tells two versions of a file apart."""
    return Signature(st.st_size, st.st_mtime_ns, st.st_ino)


def rested_seconds(st: os.stat_result, now: float) -> float:
    """Seconds since the file last changed at `now` (epoch), by the later of its mtime and its
    ctime: a writer can set the mtime back, but each write or change of times moves the ctime."""
    return max(now - max(st.st_mtime, st.st_ctime), 0.0)


def watched_inodes(proc: Path = PROC_SELF) -> set[int]:
    """Inode numbers of the folders this process's inotify instances watch (from fdinfo)."""
    inodes: set[int] = set()
    for fd in os.listdir(proc / "fd"):
        try:
            if os.readlink(proc / "fd" / fd) != "anon_inode:inotify":
                continue
            text = (proc / "fdinfo" / fd).read_text(encoding="ascii")
        except OSError:
            continue  # closed since the listing
        inodes.update(int(ino, 16) for ino in _WATCH_LINE.findall(text))
    return inodes


def max_user_watches() -> int | None:
    """The kernel's limit of inotify watches per user, or None where it cannot be read."""
    try:
        return int(MAX_USER_WATCHES.read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None


def read_report(path: Path) -> dict[str, Any]:
    """What a running watcher last said about the folders it cannot watch (SPEC 10)."""
    try:
        report: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"unwatched_folders": 0}
    return report


def _still_folder(path: str, inode: int) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_ino == inode


class Coverage:
    """Counts the folders under the inbox that inotify does not watch, and says so once.

    When the user's inotify watches run out (fs.inotify.max_user_watches), watchdog cannot
    watch new folders and says nothing; their files are found only by the rescan. Each rescan
    passes the folders it found (`suspect`); those still unwatched CONFIRM_SECONDS later
    (`confirm`) are counted, logged once when the count leaves 0, and written to `report`.
    """

    def __init__(
        self,
        inbox: Path,
        rescan_seconds: float,
        clock: Callable[[], float],
        *,
        report: Path | None = None,
        watched: Callable[[], set[int]] = watched_inodes,
    ) -> None:
        self.inbox = inbox
        self.rescan_seconds = rescan_seconds
        self.unwatched = 0
        self._clock = clock
        self._report = report
        self._watched = watched
        self._suspects: dict[int, str] | None = None
        self._suspected_at = 0.0

    def suspect(self, folders: Mapping[int, str]) -> None:
        """The folders a rescan found (by inode), to be checked against the watches."""
        watched = self._watched() if folders else set()
        self._suspects = {ino: path for ino, path in folders.items() if ino not in watched}
        self._suspected_at = self._clock()

    def confirm(self) -> None:
        """Count the suspects still unwatched, once CONFIRM_SECONDS have passed."""
        if self._suspects is None or self._clock() - self._suspected_at < CONFIRM_SECONDS:
            return
        suspects, self._suspects = self._suspects, None
        watched = self._watched() if suspects else set()
        self._count(sum(
            1 for ino, path in suspects.items() if ino not in watched and _still_folder(path, ino)
        ))

    def clear(self) -> None:
        """Forget the count and remove the report (the watcher starts or stops)."""
        self.unwatched = 0
        if self._report is not None:
            self._report.unlink(missing_ok=True)

    def _count(self, count: int) -> None:
        if count == self.unwatched:
            return
        limit = max_user_watches()
        if count and not self.unwatched:
            log.warning(
                "%d folder(s) under %s are not watched, most likely because the user's inotify"
                " watches ran out (fs.inotify.max_user_watches = %s): their files are found by"
                " the rescan, up to %g s late; raise the limit and restart the service",
                count, self.inbox, limit, self.rescan_seconds,
            )
        elif not count:
            log.info("every folder under %s is watched again", self.inbox)
        self.unwatched = count
        if self._report is None:
            return
        if not count:
            self._report.unlink(missing_ok=True)
            return
        report = {"unwatched_folders": count, "max_user_watches": limit,
                  "rescan_seconds": self.rescan_seconds, "since": time.time()}
        write_atomic(self._report, json.dumps(report).encode())


# -- Polling ---------------------------------------------------------------------------------


@dataclass
class _Folder:
    """What the last listing of a folder saw."""

    stamp: tuple[int, int]  # (inode, mtime_ns) of the folder when it was listed
    confirmed: bool  # no entry can hide behind the stamp: listed again, or the time was old
    files: dict[str, Signature]  # by name
    folders: list[str]  # paths of the sub-folders


@dataclass
class PollStats:
    """What the poller did, counted since it started (for metrics and tests)."""

    polls: int = 0  # complete passes over the tree
    folders: int = 0  # folders the last complete pass checked
    listings: int = 0  # folders listed, because their modification time had changed
    file_looks: int = 0  # files stat'ed, in the folders listed
    seconds: float = 0.0  # how long the last complete pass took


class TreePoller:
    """Polls a tree for files that appear, change or go, at a bounded cost.

    Each pass looks at every folder (one lstat): a folder's modification time changes when an
    entry is added, removed or renamed in it (not in its sub-folders, so every folder is
    looked at), and only a folder whose time changed is listed and its files stat'ed. A folder
    changed within POLL_TRUST_SECONDS is listed once more under the same time before it is
    trusted, for file systems whose times are coarse. A pass is spread over the interval and
    uses at most POLL_CPU_SHARE of a core: a bigger tree takes a longer pass, said in the log
    (at most once an hour). A file changed in place, in a folder that did not change, is found
    by the watcher's full rescan. Links are never followed into folders. The first pass
    reports nothing: it learns the tree (the watcher's rescan then finds what is there).
    """

    def __init__(
        self,
        top: str,
        interval: float,
        candidate: Callable[[os.DirEntry[str]], bool],
        on_change: Callable[[str, Signature], None],
        on_gone: Callable[[str], None],
    ) -> None:
        self.top = top
        self.interval = interval
        self.stats = PollStats()
        self._candidate = candidate
        self._on_change = on_change
        self._on_gone = on_gone
        self._tree: dict[str, _Folder] = {}
        self._said: float | None = None  # when a slow pass was last said in the log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hotfolder-poll", daemon=True)

    @property
    def emitters(self) -> tuple[()]:
        """None: the poller is one thread (the observers' interface)."""
        return ()

    def start(self) -> None:
        """Poll in a thread that first learns the tree (OSError when its top cannot be listed)."""
        with os.scandir(self.top):
            pass
        self._thread.start()

    @property
    def learnt(self) -> bool:
        """True once the first pass has learnt the tree: what changes from then on is reported."""
        return self.stats.polls > 0

    def stop(self) -> None:
        """Ask the thread to end after the folder it is at."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end."""
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        """True while the thread polls."""
        return self._thread.is_alive()

    def _run(self) -> None:
        paced = False  # the first pass learns the tree at once
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.poll(paced=paced)
                paced = True
            except OSError as exc:
                log.warning("cannot poll %s: %s", self.top, exc.strerror)
                return  # the watcher sees the poller gone and starts another
            self._stop.wait(self.interval - (time.monotonic() - started))

    def poll(self, *, paced: bool) -> None:
        """One pass over the tree; paced: spread over the interval, within the CPU share."""
        started, cpu = time.monotonic(), time.thread_time()
        expected = max(self.stats.folders, 1)
        folders = [self.top]
        checked = 0
        while folders:
            if self._stop.is_set():
                return
            self._check(folders.pop(), folders, report=self.stats.polls > 0)
            checked += 1
            if paced and checked % POLL_PACE_FOLDERS == 0:
                self._pace(started, cpu, min(checked / expected, 1.0))
        if paced:
            self._pace(started, cpu, 1.0)
        self.stats.polls += 1
        self.stats.folders = checked
        self.stats.seconds = time.monotonic() - started
        self._say_pace(checked)

    def _pace(self, started: float, cpu: float, progress: float) -> None:
        """Pause until the pass is no ahead of the interval and within its CPU share."""
        due = max((time.thread_time() - cpu) / POLL_CPU_SHARE, self.interval * progress)
        self._stop.wait(due - (time.monotonic() - started))

    def _say_pace(self, folders: int) -> None:
        now = time.monotonic()
        if self.stats.seconds <= self.interval * POLL_SLOW_FACTOR:
            return
        if self._said is not None and now - self._said < POLL_SAY_SECONDS:
            return
        self._said = now
        log.warning(
            "polling %d folders under %s takes %.1f s a pass, longer than the %g s interval,"
            " to stay within %g%% of a core: new files are seen up to that late"
            " (hotfolder_watcher_poll_seconds follows it)",
            folders, self.top, self.stats.seconds, self.interval, 100 * POLL_CPU_SHARE,
        )

    def _check(self, path: str, folders: list[str], *, report: bool) -> None:
        """Look at one folder, list it if it changed, and queue its sub-folders."""
        try:
            st = os.stat(path) if path == self.top else os.lstat(path)
        except OSError:
            if path == self.top:
                raise
            self._drop(path)
            return
        if not stat.S_ISDIR(st.st_mode):
            if path == self.top:
                raise NotADirectoryError(errno.ENOTDIR, "not a folder", path)
            self._drop(path)  # its parent's listing offers what took its name
            return
        stamp = (st.st_ino, st.st_mtime_ns)
        folder = self._tree.get(path)
        if folder is None or folder.stamp != stamp or not folder.confirmed:
            folder = self._list(path, folder, stamp, report=report)
        folders.extend(folder.folders)

    def _list(self, path: str, before: _Folder | None, stamp: tuple[int, int], *,
              report: bool) -> _Folder:
        """List a folder; report its new, changed and gone files."""
        self.stats.listings += 1
        known = before.files if before is not None else {}
        again = before is not None and before.stamp == stamp  # only new entries can differ
        trusted = again or stamp[1] < time.time_ns() - POLL_TRUST_SECONDS * 1e9
        files: dict[str, Signature] = {}
        folders: list[str] = []
        try:
            with os.scandir(path) as listing:
                entries = list(listing)
        except OSError:
            entries = []  # gone or unreadable: the rescan says which, the next change retries
        for entry in entries:
            if not self._candidate(entry):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                    continue
                if entry.name == RECIPE_FILE:
                    continue
                signature = known.get(entry.name)
                if not again or signature is None or signature.inode != entry.inode():
                    signature = signature_of(entry.stat(follow_symlinks=False))
                    self.stats.file_looks += 1
            except OSError:
                continue  # gone since the listing
            files[entry.name] = signature
            if report and known.get(entry.name) != signature:
                self._on_change(entry.path, signature)
        for name in known.keys() - files.keys():
            self._on_gone(os.path.join(path, name))
        if before is not None:
            for gone in set(before.folders) - set(folders):
                self._drop(gone)
        folder = _Folder(stamp, trusted, files, folders)
        self._tree[path] = folder
        return folder

    def _drop(self, path: str) -> None:
        """Forget a folder that went away and the folders below it, and report their files gone."""
        gone = [path]
        while gone:
            folder_path = gone.pop()
            folder = self._tree.pop(folder_path, None)
            if folder is None:
                continue
            for name in folder.files:
                self._on_gone(os.path.join(folder_path, name))
            gone.extend(folder.folders)


# -- The watcher -----------------------------------------------------------------------------


class _Handler(FileSystemEventHandler):
    """Turns each watchdog event into actions for the watcher, and nothing more."""

    def __init__(self, act: Callable[[Action, str], None],
                 routes: Callable[[FileSystemEvent], list[tuple[Action, str]]] = route) -> None:
        self._act = act
        self._routes = routes

    def dispatch(self, event: FileSystemEvent) -> None:
        for action, path in self._routes(event):
            self._act(action, path)


class InboxWatch:
    """inotify on the inbox (watchdog's observer): one watch on the inbox's own folder, and a
    recursive one on each folder in it that `wanted` accepts, so that nothing done in the work
    folder (claims, the workers' reads) or in an ignored folder raises an event. A folder made
    in the inbox, or moved into it, is watched as its event comes (`refresh` catches up on
    events lost), then handed to `act` (WATCH, ARRIVED) for what it holds already."""

    def __init__(self, top: str, wanted: Callable[[str], bool],
                 act: Callable[[Action, str], None]) -> None:
        self.top = top
        self._wanted = wanted
        self._act = act
        self._observer = InotifyObserver(generate_full_events=True)
        self._handler = _Handler(act)
        self._folders: dict[str, ObservedWatch | None] = {}  # by path (None: out of watches)
        self._lock = threading.Lock()

    @property
    def emitters(self) -> list[EventEmitter]:
        """The observer's emitters that should be running: the inbox's, and those of folders
        still there (a folder's stops when the folder is removed)."""
        return [emitter for emitter in list(self._observer.emitters)
                if emitter.watch.path == self.top or os.path.isdir(emitter.watch.path)]

    def start(self) -> None:
        """Watch the inbox and the folders in it (OSError when the inbox cannot be watched)."""
        self._observer.schedule(_Handler(self._act_top, route_top), self.top,
                                event_filter=TOP_ROUTED)
        self._observer.start()
        self.refresh()

    def refresh(self) -> None:
        """Watch each wanted folder in the inbox not tried yet, and forget those gone."""
        with os.scandir(self.top) as listing:
            folders = {entry.path for entry in listing if entry.is_dir(follow_symlinks=False)}
        with self._lock:
            watched = set(self._folders)
        for path in watched - folders:
            self._unwatch(path)
        for path in folders - watched:
            self._watch(path)

    def stop(self) -> None:
        """Stop watching."""
        self._observer.stop()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the observer's threads to end."""
        self._observer.join(timeout)

    def is_alive(self) -> bool:
        """True while the observer runs."""
        return self._observer.is_alive()

    def _act_top(self, action: Action, path: str) -> None:
        """An action of the inbox's own folder: a folder's watch is added or removed first."""
        if action is Action.UNWATCH:
            self._unwatch(path)
        elif action in (Action.WATCH, Action.ARRIVED) and not self._watch(path):
            return
        self._act(action, path)

    def _watch(self, path: str) -> bool:
        """Watch a folder of the inbox recursively; False when it is not wanted or gone. Out
        of watches, it is served by the rescan (and counted by `Coverage`) until it is made or
        moved in again, or the service restarts."""
        if not self._wanted(path):
            return False
        try:
            watch = self._observer.schedule(self._handler, path, recursive=True,
                                            event_filter=ROUTED)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            if exc.errno not in INOTIFY_LIMITS:
                log.warning("cannot watch the folder %s: %s", path, exc.strerror)
            watch = None  # tried once, as watchdog tries the folders below a watched one
        with self._lock:
            self._folders[path] = watch
        return True

    def _unwatch(self, path: str) -> None:
        with self._lock:
            watch = self._folders.pop(path, None)
        if watch is not None:
            self._observer.unschedule(watch)


class Watcher:
    """Calls `on_files(paths)` with the complete files that appear under the inbox."""

    def __init__(
        self,
        inbox: Path,
        cfg: WatchConfig,
        on_files: Callable[[list[Path]], None],
        *,
        exclude: Sequence[Path] = (),
        report: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inbox = Path(os.path.abspath(inbox))
        self.cfg = cfg
        self.on_files = on_files
        self._exclude = tuple(os.path.abspath(path) for path in exclude)
        self.last_scan = 0.0
        mount = mount_at(self.inbox)
        self.polling = polling_wanted(cfg.mode, network_type(mount.fstype))
        # Two looks agreeing must be settle_seconds apart in what the server saw, not in cache.
        self.settle_seconds = cfg.settle_seconds + attribute_cache_seconds(mount)
        self._clock = clock
        self._settler = Settler(self.settle_seconds, clock)
        self._recent = Recent(DEDUP_SECONDS, clock)
        self._observer: InboxWatch | TreePoller | None = None
        self._observer_lock = threading.Lock()
        self._calls = threading.BoundedSemaphore(OFFER_CALLS)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_start = 0.0
        self._start_failed = False
        self.coverage = Coverage(self.inbox, cfg.rescan_seconds, clock, report=report)

    # -- lifecycle

    def start(self) -> None:
        """Start the observer and the thread that settles files and rescans the tree."""
        # A folder made together with its parents (mkdir -p) can be watched twice by watchdog's
        # inotify observer, which warns and keeps the same callback: harmless, and not an error.
        warnings.filterwarnings(
            "ignore", message="Callback with id .* already exists", category=RuntimeWarning
        )
        self._stop.clear()
        self.coverage.clear()
        if self.polling:
            self._start_observer()  # inotify's starts in the thread, after `_claim_backlog`
        self._thread = threading.Thread(target=self._loop, name="hotfolder-rescan", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching and join every thread the watcher started."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(JOIN_SECONDS)
            self._thread = None
        with self._observer_lock:
            observer, self._observer = self._observer, None
        if observer is not None:
            _halt(observer)
        self.coverage.clear()

    @property
    def healthy(self) -> bool:
        """True while the observer and all its emitters run."""
        observer = self._observer
        return (
            observer is not None
            and observer.is_alive()
            and all(emitter.is_alive() for emitter in observer.emitters)
        )

    @property
    def poll_stats(self) -> PollStats | None:
        """What the poller did, or None while the tree is not polled."""
        observer = self._observer
        return observer.stats if isinstance(observer, TreePoller) else None

    def _start_observer(self) -> bool:
        """Start an observer of the inbox; False when it cannot be watched now."""
        observer: InboxWatch | TreePoller | None = None
        try:
            if self.polling:
                observer = TreePoller(str(self.inbox), poll_interval(self.cfg.settle_seconds),
                                      self._listed, self._polled_change, self._polled_gone)
            else:
                observer = InboxWatch(str(self.inbox), self._listed_path, self._act)
            observer.start()
        except OSError as exc:
            if observer is not None:
                _halt(observer)
            if not self.polling and exc.errno in INOTIFY_LIMITS:
                log.warning(
                    "inotify cannot watch %s (%s; see fs.inotify.max_user_watches and "
                    "max_user_instances): polling it instead",
                    self.inbox,
                    exc.strerror,
                )
                self.polling = True
                return self._start_observer()
            if not self._start_failed:
                self._start_failed = True
                log.error(
                    "cannot watch %s (%s); retrying every %.0f s", self.inbox, exc, RESTART_SECONDS
                )
            return False
        self._start_failed = False
        how = (
            f"polling every {observer.interval:g} s" if isinstance(observer, TreePoller)
            else "inotify"
        )
        log.info("watching %s (%s)", self.inbox, how)
        with self._observer_lock:
            self._observer = observer
        return True

    def _loop(self) -> None:
        period = tick_interval(self.settle_seconds)
        if not self.polling:
            self._claim_backlog()
        next_scan = self._clock()
        at_start = True
        while not self._stop.is_set():
            now = self._clock()
            restart = not self.healthy and now >= self._next_start
            if restart and self._restart_observer():
                next_scan = now  # whatever happened while it was down
            if now >= next_scan and self._learnt():
                self.rescan(at_start=at_start)
                at_start = False
                next_scan = now + self.cfg.rescan_seconds
            self._settle()
            self.coverage.confirm()
            self._stop.wait(period)

    def _claim_backlog(self) -> None:
        """Offer the files that rested before the start while inotify does not watch the tree
        yet: their claims (each opens, reads, closes and moves a file) raise no event for the
        observer to read meanwhile. The rescan that follows its start finds what came since,
        and a file of the first look that had not rested waits there as always."""
        with contextlib.suppress(OSError):  # the rescan after the watch's start says why
            self._look_at_all({}, at_start=True)
            self._settle()

    def _learnt(self) -> bool:
        """False while a poller learns the tree (a rescan before it could miss a change)."""
        observer = self._observer
        return not isinstance(observer, TreePoller) or observer.learnt

    def _restart_observer(self) -> bool:
        self._next_start = self._clock() + RESTART_SECONDS
        with self._observer_lock:
            observer, self._observer = self._observer, None
        if observer is not None:
            log.warning("the watcher of %s stopped; restarting it", self.inbox)
            _halt(observer)
        return self._start_observer()

    # -- finding files

    def rescan(self, *, at_start: bool = False) -> int:
        """Walk the tree now; offer each candidate once it looks complete; return how many.
        At start, a file's settle time counts from its last change, not from this look."""
        observer = self._observer
        if isinstance(observer, InboxWatch):
            try:
                observer.refresh()  # a folder whose event was lost (a full inotify queue)
            except OSError as exc:
                log.error("cannot scan %s: %s", self.inbox, exc)
                return 0
        folders: dict[int, str] = {}
        try:
            found = self._look_at_all(folders, at_start=at_start)
        except OSError as exc:
            log.error("cannot scan %s: %s", self.inbox, exc)
            return 0
        self.last_scan = time.time()
        self.coverage.suspect({} if self.polling else folders)  # polling watches every folder
        self._settle()
        return found

    def _look_at_all(self, folders: dict[int, str], *, at_start: bool) -> int:
        """Walk the tree (its folders into `folders`), each file waiting to settle, offered
        as it does; how many were found. OSError when the inbox cannot be read."""
        found = rested_found = 0
        started = time.time()
        period = tick_interval(self.settle_seconds)
        next_settle = self._clock() + period
        for path, st in self._walk(str(self.inbox), folders):
            found += 1
            rested = rested_seconds(st, started) if at_start else 0.0
            self._settler.wait(path, signature_of(st), rested)
            rested_found += rested >= self.settle_seconds
            # A long walk (a slow share) holds nothing back, nor does a big backlog wait in
            # memory until the walk ends.
            if self._clock() >= next_settle or rested_found >= WALK_OFFER_FILES:
                self._settle()
                next_settle = self._clock() + period
                rested_found = 0
        return found

    def _walk(self, top: str, seen: dict[int, str]) -> Iterator[tuple[str, os.stat_result]]:
        """The candidate files under top; the folders below it go into `seen` by inode."""
        folders = [top]
        while folders:
            folder = folders.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError as exc:
                if folder == top:
                    raise
                if not isinstance(exc, FileNotFoundError | NotADirectoryError):
                    log.warning("cannot read the folder %s: %s", folder, exc.strerror)
                continue
            for entry in entries:
                if not self._listed(entry):
                    continue  # the folders above were checked on the way down
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # gone since the listing
                if stat.S_ISDIR(st.st_mode):
                    folders.append(entry.path)
                    seen[st.st_ino] = entry.path
                elif entry.name != RECIPE_FILE:
                    yield entry.path, st

    def _candidate(self, path: str) -> bool:
        """True for a path under the inbox that is not ignored, excluded, or a recipe file."""
        top = str(self.inbox) + os.sep
        if not path.startswith(top) or self._excluded(path):
            return False
        parts = path[len(top) :].split(os.sep)
        return parts[-1] != RECIPE_FILE and not any(ignored(p, self.cfg.ignore) for p in parts)

    def _excluded(self, path: str) -> bool:
        return any(path == folder or path.startswith(folder + os.sep) for folder in self._exclude)

    def _listed(self, entry: os.DirEntry[str]) -> bool:
        """True for an entry of a walked folder that is neither ignored nor excluded."""
        return self._listed_path(entry.path)

    def _listed_path(self, path: str) -> bool:
        """True for a path in a walked folder whose name is not ignored, and not excluded."""
        return not ignored(os.path.basename(path), self.cfg.ignore) and not self._excluded(path)

    def _polled_change(self, path: str, signature: Signature) -> None:
        """The poller saw a new or changed file: it settles from this look."""
        self._settler.wait(path, signature)

    def _polled_gone(self, path: str) -> None:
        """The poller saw a file go (its names passed `_listed` already)."""
        self._forget(path)

    def _act(self, action: Action, path: str) -> None:
        if action in (Action.WATCH, Action.ARRIVED):
            self._arrived(path, whole=action is Action.ARRIVED)
            return
        if action is Action.UNWATCH or not self._candidate(path):
            return
        if action is Action.TAKE:
            self._offer([(path, _look(path))])
        elif action is Action.SETTLE:
            self._settler.wait(path)
        elif action is Action.OPENED:
            self._settler.opened(path)
        elif action is Action.CLOSED:
            self._settler.closed(path)
        else:
            self._forget(path)

    def _arrived(self, folder: str, *, whole: bool) -> None:
        """A folder new in the inbox, watched now: offer what it holds (moved in whole), or
        let it settle (made here: it may still be written)."""
        found = []
        try:
            for path, st in self._walk(folder, {}):
                if whole:
                    found.append((path, signature_of(st)))
                else:
                    self._settler.wait(path)
        except OSError:
            return  # gone again
        self._offer_batches(found)

    def _forget(self, path: str) -> None:
        self._settler.forget(path)
        self._recent.forget(path)

    def _settle(self) -> None:
        self._offer_batches(self._settler.due(_look))

    def _offer_batches(self, found: Sequence[tuple[str, Signature | None]]) -> None:
        """Offer files in batches of OFFER_BATCH, two batches at once when there are more."""
        batches = [found[start:start + OFFER_BATCH] for start in range(0, len(found),
                                                                       OFFER_BATCH)]
        if len(batches) < 2:  # none or one (an idle tree's pass starts no thread)
            for batch in batches:
                self._offer(batch)
            return
        with ThreadPoolExecutor(1, thread_name_prefix="hotfolder-offer") as helper:
            for first, second in itertools.zip_longest(batches[::2], batches[1::2]):
                if self._stop.is_set():
                    return
                other = helper.submit(self._offer, first)
                if second is not None:
                    self._offer(second)
                other.result()

    def _offer(self, found: Sequence[tuple[str, Signature | None]]) -> None:
        paths = []
        for path, signature in found:
            self._settler.forget(path)
            if signature is not None and self._recent.first(path, signature):
                paths.append(Path(path))
        if not paths:
            return
        with self._calls:
            try:
                self.on_files(paths)
            except Exception:
                log.exception("intake of %s failed", paths[0] if len(paths) == 1
                              else f"{len(paths)} files from {paths[0]} on")
        if self._observer is None:  # no event will say which left the tree (were claimed)
            for offered in paths:
                if not os.path.lexists(offered):
                    self._recent.forget(str(offered))


def _look(path: str) -> Signature | None:
    """The signature of a non-directory, or None when it is gone or a folder."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return None if stat.S_ISDIR(st.st_mode) else signature_of(st)


def _halt(observer: InboxWatch | TreePoller) -> None:
    """Stop an observer and join its threads."""
    observer.stop()
    if observer.is_alive():
        observer.join(JOIN_SECONDS)
