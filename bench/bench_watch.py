"""Idle CPU and latency of the watcher on a tree of 10,000 files in 100 folders, events vs polling.

Run by hand: `python bench/bench_watch.py [--files 10000] [--folders 100] [--seconds 30]`.
For each mode it starts a Watcher (on_file does nothing, so the files stay: the worst case,
every rescan offers them all again), waits until the start-up scan has offered every file,
then measures the process's CPU time over the idle window, the CPU of one full rescan cycle
(walk, settle, offers), and the time from a file's close to its on_file call. The idle
target is 1% of a core including the rescan cycle spread over `rescan_seconds`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from hotfolder.config import WatchConfig
from hotfolder.watcher import Watcher, poll_interval

TARGET_IDLE = 1.0  # percent of one core


class Counter:
    """on_file that counts calls and wakes a waiter for one awaited name."""

    def __init__(self) -> None:
        self.calls = 0
        self.awaited: str | None = None
        self.arrived = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, path: Path) -> None:
        with self.lock:
            self.calls += 1
        if path.name == self.awaited:
            self.arrived.set()

    def wait_calls(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.calls >= count:
                    return True
            self.arrived.wait(0.05)
        return False


def make_tree(inbox: Path, files: int, folders: int) -> None:
    for i in range(files):
        folder = inbox / f"folder{i % folders:03d}"
        folder.mkdir(exist_ok=True)
        (folder / f"photo{i:05d}.jpg").write_bytes(b"\xff\xd8" + bytes(1024))


def latency(inbox: Path, counter: Counter, samples: int, timeout: float) -> list[float]:
    times = []
    for i in range(samples):
        name = f"drop{i:02d}.jpg"
        counter.awaited = name
        counter.arrived.clear()
        started = time.perf_counter()
        (inbox / "folder000" / name).write_bytes(b"\xff\xd8" + bytes(4096))
        if not counter.arrived.wait(timeout):
            raise SystemExit(f"{name} was not offered within {timeout} s")
        times.append(time.perf_counter() - started)
    return times


def run(mode: str, inbox: Path, files: int, seconds: float) -> None:
    cfg = WatchConfig(mode=mode, settle_seconds=2.0, rescan_seconds=60.0)
    counter = Counter()
    watcher = Watcher(inbox, cfg, counter)
    started = time.perf_counter()
    watcher.start()
    try:
        if not counter.wait_calls(files, timeout=120):
            raise SystemExit(f"{mode}: the start-up scan offered {counter.calls} of {files} files")
        startup = time.perf_counter() - started

        cpu0, wall0 = time.process_time(), time.perf_counter()
        threading.Event().wait(seconds)
        idle = 100 * (time.process_time() - cpu0) / (time.perf_counter() - wall0)

        cpu0, wall0 = time.process_time(), time.perf_counter()
        watcher.rescan()
        if not counter.wait_calls(2 * files, timeout=60):
            raise SystemExit(f"{mode}: the rescan offered {counter.calls - files} of {files}")
        cycle_cpu = time.process_time() - cpu0
        cycle_wall = time.perf_counter() - wall0
        spread = idle + 100 * cycle_cpu / cfg.rescan_seconds

        times = latency(inbox, counter, samples=20, timeout=30)
    finally:
        watcher.stop()
    how = f"polling every {poll_interval(cfg.settle_seconds):g} s" if watcher.polling else "inotify"
    print(f"{mode:8} ({how})")
    print(f"  start-up scan offered {files} files in {startup:.2f} s (settle 2 s)")
    print(f"  idle CPU over {seconds:g} s: {idle:.2f}% of a core")
    print(
        f"  one rescan cycle: {cycle_cpu * 1000:.0f} ms CPU, {cycle_wall:.2f} s wall; "
        f"spread over {cfg.rescan_seconds:g} s: {spread:.2f}% of a core "
        f"(target {TARGET_IDLE:g}%, ratio {spread / TARGET_IDLE:.2f})"
    )
    print(
        f"  close to on_file: median {statistics.median(times) * 1000:.1f} ms, "
        f"worst of {len(times)} {max(times) * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--folders", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--modes", nargs="+", default=["events", "polling"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        inbox = Path(tmp) / "inbox"
        inbox.mkdir()
        make_tree(inbox, args.files, args.folders)
        print(f"{args.files} files in {args.folders} folders under {inbox}")
        for mode in args.modes:
            run(mode, inbox, args.files, args.seconds)


if __name__ == "__main__":
    main()
