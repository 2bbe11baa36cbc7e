"""Idle CPU and detection latency of the polling watcher on big trees of customer and order folders.

Run by hand: `python bench/bench_watch.py [--folders 2000 20000] [--files 2] [--seconds 30]`.
For each size it makes `inbox/engrave-wood/customer-N/order-M/` folders (ten orders per
customer, `--files` files in each order), starts a Watcher in polling mode at the default
settings (settle 2 s, rescan 60 s; on_file does nothing, so the files stay: the worst case,
every full rescan offers them all again), waits until the start-up scan has offered every
file, then measures the process's own CPU time (all threads) over an idle window, the CPU of
one full rescan cycle spread over `rescan_seconds`, and the time from writing a new file into
a random order folder to its on_file call. The target is 3% of a core for 2,000 folders, and
each new file seen within settle_seconds plus 4 s. The machine's load average is printed,
because CPU time on a shared machine is steadier than wall time but not free of its noise.
`--modes events polling` compares with inotify. `--share` makes the tree on a real network
share instead (an sshd of its own on 127.0.0.1, mounted with sshfs, `dir_cache=no`; needs root),
watched in `auto` mode, the new files written on the server's side; the CPU of the sshfs client
process is printed beside the watcher's.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from hotfolder.config import WatchConfig
from hotfolder.watcher import Watcher

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from sshfs_share import share

TARGET_IDLE = 3.0  # percent of one core, 2,000 folders
TARGET_SLACK = 4.0  # seconds after settle_seconds
ORDERS = 10  # order folders per customer folder


class Counter:
    """on_files that counts the files offered and wakes a waiter for one awaited name."""

    def __init__(self) -> None:
        self.calls = 0
        self.awaited: str | None = None
        self.arrived = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, paths: list[Path]) -> None:
        with self.lock:
            self.calls += len(paths)
        if any(path.name == self.awaited for path in paths):
            self.arrived.set()

    def wait_calls(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.calls >= count:
                    return True
            self.arrived.wait(0.05)
        return False


def make_tree(inbox: Path, folders: int, files: int) -> list[Path]:
    """About `folders` folders below one recipe folder; returns the order folders."""
    recipe = inbox / "engrave-wood"
    recipe.mkdir(parents=True)
    orders = []
    customer = 0
    while 1 + customer * (ORDERS + 1) < folders:
        for order in range(ORDERS):
            folder = recipe / f"customer-{customer:05d}" / f"order-{order}"
            folder.mkdir(parents=True)
            for n in range(files):
                (folder / f"photo{n}.jpg").write_bytes(b"\xff\xd8" + bytes(1024))
            orders.append(folder)
        customer += 1
    return orders


def latency(orders: list[Path], counter: Counter, samples: int, timeout: float) -> list[float]:
    times = []
    for i in range(samples):
        name = f"drop{i:02d}.jpg"
        counter.awaited = name
        counter.arrived.clear()
        started = time.perf_counter()
        (random.choice(orders) / name).write_bytes(b"\xff\xd8" + bytes(4096))
        if not counter.arrived.wait(timeout):
            raise SystemExit(f"{name} was not offered within {timeout} s")
        times.append(time.perf_counter() - started)
        threading.Event().wait(random.uniform(0.0, 2.0))  # drops at any phase of a pass
    return times


def client_seconds(mountpoint: Path | None) -> float:
    """CPU seconds used so far by the sshfs process serving a mount point (0 without one)."""
    if mountpoint is None:
        return 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        if argv[0].endswith(b"sshfs") and os.fsencode(mountpoint) in argv:
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    raise SystemExit(f"no sshfs process serves {mountpoint}")


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not happen within {timeout} s")
        threading.Event().wait(0.1)


def run(mode: str, inbox: Path, orders: list[Path], files: int, seconds: float,
        mountpoint: Path | None) -> None:
    cfg = WatchConfig(mode=mode)
    counter = Counter()
    watcher = Watcher(inbox, cfg, counter)
    started = time.perf_counter()
    watcher.start()
    try:
        if not counter.wait_calls(files, timeout=600):
            raise SystemExit(f"{mode}: the start-up scan offered {counter.calls} of {files} files")
        startup = time.perf_counter() - started
        stats = watcher.poll_stats
        if stats is not None:  # the tree was just made: each folder is listed a second time
            wait_for(lambda: stats.polls >= 3, 600, "the poller's third pass")

        load0 = os.getloadavg()[0]
        cpu0, wall0, client0 = time.process_time(), time.perf_counter(), client_seconds(mountpoint)
        threading.Event().wait(seconds)
        wall = time.perf_counter() - wall0
        idle = 100 * (time.process_time() - cpu0) / wall
        client = 100 * (client_seconds(mountpoint) - client0) / wall
        load1 = os.getloadavg()[0]

        cpu0 = time.process_time()
        watcher.rescan()
        if not counter.wait_calls(2 * files, timeout=600):
            raise SystemExit(f"{mode}: the rescan offered {counter.calls - files} of {files}")
        cycle_cpu = time.process_time() - cpu0
        spread = idle + 100 * cycle_cpu / cfg.rescan_seconds

        times = latency(orders, counter, samples=10, timeout=120)
    finally:
        watcher.stop()
    how = "polling" if watcher.polling else "inotify"
    print(f"{mode:8} ({how}, settle {watcher.settle_seconds:g} s, rescan {cfg.rescan_seconds:g} s)")
    print(f"  start-up scan offered {files} files in {startup:.1f} s")
    print(f"  idle CPU over {seconds:g} s: {idle:.2f}% of a core (load average {load0:.1f} to"
          f" {load1:.1f})")
    if stats is not None:
        print(f"  a poll pass over {stats.folders} folders took {stats.seconds:.2f} s")
    if mountpoint is not None:
        print(f"  the sshfs client process meanwhile: {client:.2f}% of a core")
    print(f"  with one full rescan ({cycle_cpu * 1000:.0f} ms CPU) spread over"
          f" {cfg.rescan_seconds:g} s: {spread:.2f}% of a core")
    print(f"  new file in an order folder to on_file: median {statistics.median(times):.2f} s,"
          f" worst of {len(times)} {max(times):.2f} s (target {watcher.settle_seconds:g} +"
          f" {TARGET_SLACK:g} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", type=int, nargs="+", default=[2_000, 20_000])
    parser.add_argument("--files", type=int, default=2, help="files in each order folder")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--modes", nargs="+", default=["polling"])
    parser.add_argument("--share", action="store_true", help="on an sshfs mount, in auto mode")
    args = parser.parse_args()
    print(f"target: {TARGET_IDLE:g}% of a core idle at 2,000 folders")
    for folders in args.folders:
        with place(args.share) as (server, watched):
            orders = make_tree(server / "inbox", folders, args.files)
            total = sum(1 for _ in (server / "inbox").rglob("*") if _.is_dir())
            print(f"{total} folders, {len(orders) * args.files} files under {watched}")
            for mode in ["auto"] if args.share else args.modes:
                run(mode, watched / "inbox", orders, len(orders) * args.files, args.seconds,
                    watched if args.share else None)


@contextmanager
def place(on_share: bool) -> Iterator[tuple[Path, Path]]:
    """Where the tree is written, and where it is watched: one folder, or a share's two sides."""
    with tempfile.TemporaryDirectory() as tmp:
        if not on_share:
            yield Path(tmp), Path(tmp)
            return
        with share(Path(tmp)) as sides:
            yield sides


if __name__ == "__main__":
    main()
