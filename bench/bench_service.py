"""The service under load: throughput, latency, start-up with a backlog, memory, idle CPU.

Run by hand: `python bench/bench_service.py [--count 20] [--backlog 10000]`. It starts
a clamd of its own (scripts/clamd-local) and `hotfolder run` on a temporary root with
scanning on and one worker per core, and prints what it measured in this one run:

1. throughput on the recipe of bench_process.py (auto_orient, resize fit 1200, grayscale,
   autocontrast, PNG 300 dpi) over `--count` 12-MP JPEGs, against `hotfolder process`
   on the same files and cores (target: service >= 95% of process). clamd runs with
   `ScanImageFuzzyHash no` unless `--fuzzy-hash` is given: with it, clamd decodes each
   image to hash it, about 0.45 s per 12-MP JPEG, more than hotfolder's processing;
2. drop-to-output latency of a 1-MP JPEG: once after a minute idle, then 19 times after
   5 s idle (idle workers have backed off fully by then) (targets: median < 300 ms,
   worst < 1 s);
3. `--backlog` small files waiting at start-up: time from the start until all are claimed
   and queued (target: <= 4 s), the rate at which they are delivered (target: >= 400
   files/s), and the resident memory of all the service's processes while they are
   processed (target: RSS sum <= 250 MB; RSS counts shared pages once per process, PSS
   shares them out, both printed);
4. CPU of all the service's processes over a minute idle with the backlog's files in the
   tree (target: < 1% of one core).
`--only backlog,idle` (any of throughput, latency, backlog, idle) runs those parts alone.
Exit code 0 when every target measured is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from PIL import Image

from bench_process import RECIPE, make_inputs, photo
from hotfolder.scanner import ClamdScanner

REPO = Path(__file__).resolve().parent.parent
TARGET_THROUGHPUT = 0.95
TARGET_MEDIAN_MS, TARGET_WORST_MS = 300, 1000
TARGET_CLAIM_SECONDS = 4
TARGET_RATE = 400
TARGET_MEMORY_MB = 250
TARGET_IDLE_CPU = 1.0
PARTS = ("throughput", "latency", "backlog", "idle")
TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def wait_for(predicate: Callable[[], object], timeout: float, what: str,
             every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(every)


def tree(pid: int) -> list[int]:
    """pid and its children (the service's workers)."""
    found = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def memory_mb(pids: list[int]) -> tuple[float, float]:
    """(sum of RSS, sum of PSS) in MB."""
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return rss / 1024, pss / 1024


class Service:
    """`hotfolder run` on a root, ready when it notifies READY=1."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start it; returns the time it took until READY=1."""
        notify_path = self.root / "notify.sock"
        notify_path.unlink(missing_ok=True)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        started = time.perf_counter()
        with (self.root / "service.log").open("ab") as log:
            self.process = subprocess.Popen(
                ["hotfolder", "run", "-c", str(self.root / "hotfolder.yaml")],
                stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "NOTIFY_SOCKET": str(notify_path)})
        notify.settimeout(60)
        while b"READY=1" not in notify.recv(4096):
            pass
        notify.close()
        return time.perf_counter() - started

    def stop(self) -> None:
        assert self.process is not None
        self.process.terminate()
        if self.process.wait(60) != 0:
            raise SystemExit("the service did not exit with 0")

    @property
    def pids(self) -> list[int]:
        assert self.process is not None
        return tree(self.process.pid)


def jobs(root: Path, *states: str) -> int:
    """Jobs in the journal, in any of `states` (all of them without)."""
    db = root / "state" / "journal.db"
    if not db.exists():
        return 0
    states = states or ("queued", "running", "waiting", "done", "failed", "quarantined")
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        marks = ",".join("?" * len(states))
        return int(conn.execute(f"select count(*) from jobs where state in ({marks})",
                                states).fetchone()[0])


ENDED = ("done", "failed", "quarantined")


def clamd_local(root: Path, *options: str) -> str:
    """Start (or stop, with --stop) the root's own clamd; returns its address."""
    return subprocess.run([str(REPO / "scripts" / "clamd-local"), *options, str(root)],
                          check=True, capture_output=True, text=True).stdout.strip()


def make_root(root: Path, workers: int, fuzzy_hash: bool) -> str:
    for folder in ("inbox", "recipes", "state"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "recipes" / "foundation.yaml").write_text(RECIPE)
    address = clamd_local(root)
    if not fuzzy_hash:  # clamd decodes every image for its fuzzy hash unless told not to
        clamd_local(root, "--stop")
        with (root / "state" / "clamd.conf").open("a") as conf:
            conf.write("ScanImageFuzzyHash no\n")
        subprocess.run(["clamd", "-c", str(root / "state" / "clamd.conf")], check=True)
        wait_for(lambda: ClamdScanner(address).ping(), 60, "clamd")
    config = {"root": str(root), "scanner": {"clamd": address},
              "queue": {"workers": workers}, "metrics": {"listen": "127.0.0.1:0"},
              "web": {"listen": "127.0.0.1:0"}}
    (root / "hotfolder.yaml").write_text(yaml.safe_dump(config))
    return address


def throughput(root: Path, service: Service, inputs: list[Path], workers: int) -> float:
    """Ratio of `hotfolder process` time to the service's time on the same files."""
    out = root.parent / "process-out"
    started = time.perf_counter()
    subprocess.run(["hotfolder", "process", *map(str, inputs), "-r",
                    str(root / "recipes" / "foundation.yaml"), "-o", str(out), "-j",
                    str(workers)], check=True, stdout=subprocess.DEVNULL)
    process_time = time.perf_counter() - started
    staging = root / "inbox" / ".staging"
    staging.mkdir()
    for path in inputs:
        shutil.copy(path, staging / path.name)
    folder = root / "inbox" / "foundation"
    folder.mkdir()
    done_before = jobs(root, *ENDED)
    started = time.perf_counter()
    for path in inputs:
        os.rename(staging / path.name, folder / path.name)
    wait_for(lambda: jobs(root, *ENDED) - done_before == len(inputs), 600, "the batch")
    service_time = time.perf_counter() - started
    staging.rmdir()
    ratio = process_time / service_time
    print(f"throughput, {len(inputs)} 12-MP JPEGs, {workers} workers, scanning on:"
          f" process {process_time:.2f} s, service {service_time:.2f} s;"
          f" service/process = {ratio:.0%} (target >= {TARGET_THROUGHPUT:.0%})")
    return ratio


def latency(root: Path, first_idle: float, idle: float, count: int) -> list[float]:
    """Drop-to-output times in ms of 1-MP JPEGs dropped into an idle service."""
    folder = root / "inbox" / "foundation"
    times = []
    for n in range(count):  # each a different picture: the result cache must not answer
        staged = root / "inbox" / f".drop{n}.jpg"
        photo(1200, 834, 100 + n).save(staged, quality=90)
        time.sleep(first_idle if n == 0 else idle)
        output = root / "outbox" / "foundation" / f"late{n:02d}.png"
        started = time.perf_counter()
        os.rename(staged, folder / f"late{n:02d}.jpg")
        wait_for(output.exists, 30, "the output", every=0.001)
        times.append((time.perf_counter() - started) * 1000)
    median, worst = statistics.median(times), max(times)
    print(f"latency of a 1-MP JPEG into an idle service ({first_idle:.0f} s idle, then"
          f" {idle:.0f} s): first {times[0]:.0f} ms, median {median:.0f} ms, worst of"
          f" {count} {worst:.0f} ms (targets < {TARGET_MEDIAN_MS} / < {TARGET_WORST_MS} ms)")
    return times


def backlog(root: Path, service: Service, count: int) -> tuple[float, float, float]:
    """Seconds until `count` waiting files are claimed, files/s delivered, peak RSS sum (MB)."""
    before = jobs(root)
    for n in range(count):  # all different: the result cache must not answer
        folder = root / "inbox" / "grayscale+png" / f"dpi={n // 100 + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 24), (n % 256, n // 256 % 256, 90)).save(
            folder / f"w{n:05d}.jpg", quality=90)
    started = time.perf_counter()
    service.start()
    peak_rss = peak_pss = 0.0
    claimed_at = None
    while True:
        rss, pss = memory_mb(service.pids)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        if claimed_at is None and jobs(root) - before >= count:
            claimed_at = time.perf_counter() - started
        if jobs(root, *ENDED) - before >= count:
            break
        time.sleep(0.25)
    processed = time.perf_counter() - started
    assert claimed_at is not None
    if jobs(root, "failed"):
        raise SystemExit(f"{jobs(root, 'failed')} jobs failed: see {root}/failed")
    rate = count / processed
    print(f"{count} files waiting at start-up: all claimed and queued in {claimed_at:.1f} s"
          f" (target <= {TARGET_CLAIM_SECONDS} s), all processed in {processed:.1f} s"
          f" ({rate:.0f} files/s, target >= {TARGET_RATE})")
    print(f"memory of the service's processes during that burst: RSS sum {peak_rss:.0f} MB"
          f" (target <= {TARGET_MEMORY_MB} MB), PSS sum {peak_pss:.0f} MB")
    return claimed_at, rate, peak_rss


def idle_cpu(root: Path, service: Service, count: int, seconds: float) -> float:
    """Percent of one core used by the idle service with `count` more files in the inbox tree."""
    for n in range(count):  # names the watcher ignores: walked by each rescan, never taken
        folder = root / "inbox" / "incoming" / f"d{n // 100:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"copy{n:05d}.jpg.part").write_bytes(b"x")
    time.sleep(5)
    pids = service.pids
    before, started = cpu_seconds(pids), time.perf_counter()
    time.sleep(seconds)
    percent = (cpu_seconds(service.pids) - before) / (time.perf_counter() - started) * 100
    files = sum(len(names) for _, _, names in os.walk(root))
    print(f"idle CPU over {seconds:.0f} s with {files} files under the root: {percent:.2f}%"
          f" of one core (target < {TARGET_IDLE_CPU}%)")
    return percent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20, help="12-MP JPEGs for throughput")
    parser.add_argument("--backlog", type=int, default=10000, help="files waiting at start-up")
    parser.add_argument("--idle", type=float, default=60, help="seconds idle before latency")
    parser.add_argument("--fuzzy-hash", action="store_true",
                        help="leave clamd's ScanImageFuzzyHash on (it decodes every image)")
    parser.add_argument("--only", type=lambda text: set(text.split(",")), default=set(PARTS),
                        help=f"comma-separated parts to run, of {','.join(PARTS)}")
    args = parser.parse_args()
    if args.only - set(PARTS):
        parser.error(f"unknown parts: {','.join(sorted(args.only - set(PARTS)))}")
    workers = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        base = Path(tmp)
        root = base / "root"
        make_root(root, workers, args.fuzzy_hash)
        print(f"clamd ScanImageFuzzyHash {'yes' if args.fuzzy_hash else 'no'}")
        service = Service(root)
        met = []
        try:
            if args.only & {"throughput", "latency"}:
                service.start()
                if "throughput" in args.only:
                    inputs = make_inputs(base / "inputs", args.count)
                    met.append(throughput(root, service, inputs, workers) >= TARGET_THROUGHPUT)
                if "latency" in args.only:
                    times = latency(root, args.idle, 5, 20)
                    met.append(statistics.median(times) < TARGET_MEDIAN_MS
                               and max(times) < TARGET_WORST_MS)
                service.stop()
            if args.only & {"backlog", "idle"}:
                if "backlog" in args.only:
                    claimed, rate, rss = backlog(root, service, args.backlog)
                    met.append(claimed <= TARGET_CLAIM_SECONDS and rate >= TARGET_RATE
                               and rss <= TARGET_MEMORY_MB)
                else:
                    service.start()
                if "idle" in args.only:
                    met.append(idle_cpu(root, service, args.backlog, args.idle) < TARGET_IDLE_CPU)
                service.stop()
        finally:
            if service.process is not None and service.process.poll() is None:
                service.process.kill()
            clamd_local(root, "--stop")
    met = all(met)
    print("all targets met" if met else "some targets missed")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
