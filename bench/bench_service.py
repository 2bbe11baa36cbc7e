"""The service under load: throughput, latency, start-up with a backlog, memory, idle CPU.

Run by hand: `python bench/bench_service.py [--count 20] [--backlog 10000]`. It compiles
the package's modules first (as pip does when it installs it), starts a clamd of its own
(scripts/clamd-local) and `hotfolder run` on a temporary root with scanning on and one
worker per core, and prints what it measured in this one run:

1. throughput on the recipe of bench_process.py (auto_orient, resize fit 1200, grayscale,
   autocontrast, PNG 300 dpi) over `--count` 12-MP JPEGs, against `hotfolder process`
   on the same files with the same worker count (target: service >= 95% of process).
   Each of `--rounds` rounds makes its own copies of the photos (a JPEG comment marks
   the round, so neither clamd's cache of clean files nor the result cache knows them),
   then times, in alternating order: `hotfolder process` from the command's start to its
   exit, and the service from the drop of the files (renamed into the inbox at once) to
   the end of the last job (its output delivered, its original archived) as the journal
   recorded it. The ratio is that of the medians, printed with each side's range and the
   load average (the machine may be shared). The process's start-up (the median time of
   `hotfolder process` on one tiny JPEG) is printed too, with the ratio it would give
   without it, and so are clamd's CPU time per photo and the mean time per photo of each
   stage in the service's workers (its stage_seconds histogram). It runs with clamd's
   `ScanImageFuzzyHash no`, then with Debian's default (yes: clamd decodes each image to
   hash it), and prints what the image hashing costs per photo, in clamd's CPU and in the
   service's time (`--fuzzy-hash no|yes|both`);
2. drop-to-output latency of a 1-MP JPEG: once after a minute idle, then 19 times after
   5 s idle (idle workers have backed off fully by then) (targets: median < 300 ms,
   worst < 1 s);
3. `--backlog` small files waiting at start-up: time from the start until all are claimed
   and queued (target: <= 4 s), the rate at which they are delivered, from the start to
   the end of the last job (target: >= 400 files/s), and the resident memory of all the
   service's processes while they are processed (target: RSS sum <= 250 MB; RSS counts
   shared pages once per process, PSS shares them out, both printed); the targets are set
   for up to 10,000 files, which are all older than settle_seconds at the start (they
   have waited). `--backlog 1000,10000,100000` measures each in turn (the
   service stopped in between) and prints how each figure grows against the first, with
   the load average around each run;
4. CPU of all the service's processes over a minute idle with the backlog's files in the
   tree (target: < 1% of one core).
`--only backlog,idle` (any of throughput, latency, backlog, idle) runs those parts alone.
Exit code 0 when every target measured is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import compileall
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
from dataclasses import dataclass
from pathlib import Path

import yaml
from PIL import Image
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

import hotfolder
from bench_process import RECIPE, make_inputs, photo
from hotfolder.config import WatchConfig
from hotfolder.scanner import ClamdScanner

REPO = Path(__file__).resolve().parent.parent
TARGET_THROUGHPUT = 0.95
TARGET_MEDIAN_MS, TARGET_WORST_MS = 300, 1000
TARGET_BACKLOG = 10000  # the start-up targets are set for up to this many files
TARGET_CLAIM_SECONDS = 4
TARGET_RATE = 400
TARGET_MEMORY_MB = 250
TARGET_IDLE_CPU = 1.0
PARTS = ("throughput", "latency", "backlog", "idle")
TICKS = os.sysconf("SC_CLK_TCK")
SPEED_LOOP = 2_000_000  # iterations of machine_speed's loop
SPEED_FILES = 200  # files machine_speed makes
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
    if not fuzzy_hash:
        set_fuzzy_hash(root, address, on=False)
    config = {"root": str(root), "scanner": {"clamd": address},
              "queue": {"workers": workers}, "metrics": {"listen": "127.0.0.1:0"},
              "web": {"listen": "127.0.0.1:0"}}
    (root / "hotfolder.yaml").write_text(yaml.safe_dump(config))
    return address


def set_fuzzy_hash(root: Path, address: str, *, on: bool) -> None:
    """Restart the root's clamd with ScanImageFuzzyHash yes (Debian's default) or no."""
    clamd_local(root, "--stop")
    clamd_local(root, *([] if on else ["--set", "ScanImageFuzzyHash no"]))
    wait_for(lambda: ClamdScanner(address).ping(), 60, "clamd")


def clamd_cpu(root: Path) -> float:
    """CPU seconds the root's clamd has used."""
    return cpu_seconds([int((root / "state" / "clamd.pid").read_text())])


def marked(source: Path, target: Path, mark: str) -> None:
    """A copy of a JPEG with a comment segment holding `mark` (other bytes, same pixels)."""
    data, comment = source.read_bytes(), mark.encode()
    segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
    target.write_bytes(data[:2] + segment + data[2:])


STAGES = ("scan", "decode", "process", "encode", "deliver")


def stage_totals(root: Path) -> dict[str, tuple[float, float]]:
    """(seconds, times) of each stage so far, from the service's stage_seconds histogram."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(root / "state" / "metrics"))
    totals = {}
    for stage in STAGES:
        labels = {"stage": stage}
        totals[stage] = (registry.get_sample_value("hotfolder_stage_seconds_sum", labels) or 0.0,
                         registry.get_sample_value("hotfolder_stage_seconds_count", labels) or 0.0)
    return totals


@dataclass
class Throughput:
    """Seconds measured in each round with one clamd setting."""

    process: list[float]
    service: list[float]
    startup: list[float]
    clamd: list[float]  # clamd's CPU seconds per photo during each service round
    load: tuple[float, float]  # the load average before and after the rounds
    stages: dict[str, float]  # mean seconds per photo of each stage, over the service rounds

    @property
    def ratio(self) -> float:
        """Speed of the service as a share of the speed of `hotfolder process` (medians)."""
        return statistics.median(self.process) / statistics.median(self.service)


def spread(values: list[float]) -> str:
    """The median and the range of a few timings."""
    return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"


def run_process(files: list[Path], recipe: Path, out: Path, workers: int) -> float:
    """Wall time of `hotfolder process` on the files, from its start to its exit."""
    started = time.perf_counter()
    subprocess.run(["hotfolder", "process", *map(str, files), "-r", str(recipe), "-o",
                    str(out), "-j", str(workers)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def run_service(root: Path, files: list[Path]) -> tuple[float, float]:
    """Seconds from the drop of the files to the last job ended, and clamd's CPU seconds."""
    staging = root / "inbox" / ".staging"
    staging.mkdir(exist_ok=True)
    for path in files:
        shutil.copy(path, staging / path.name)
    folder = root / "inbox" / "foundation"
    ended_before, cpu_before = jobs(root, *ENDED), clamd_cpu(root)
    dropped = time.time()
    for path in files:
        os.rename(staging / path.name, folder / path.name)
    wait_for(lambda: jobs(root, *ENDED) - ended_before == len(files), 600, "the batch")
    if jobs(root, "failed", "quarantined"):
        raise SystemExit(f"jobs failed or were quarantined: see {root}")
    return last_end(root, dropped) - dropped, clamd_cpu(root) - cpu_before


def last_end(root: Path, since: float) -> float:
    """When the last job claimed since `since` ended, as the journal recorded it (the bench
    polls the journal only every 50 ms, and so takes little of the CPU it measures)."""
    with sqlite3.connect(f"file:{root / 'state' / 'journal.db'}?mode=ro", uri=True,
                         timeout=10) as conn:
        return float(conn.execute("select max(updated) from jobs where created >= ?",
                                  (since,)).fetchone()[0])


def throughput(root: Path, inputs: list[Path], workers: int, rounds: int) -> Throughput:
    """The service (already started on root) against `hotfolder process`, `rounds` times."""
    recipe = root / "recipes" / "foundation.yaml"
    (root / "inbox" / "foundation").mkdir(exist_ok=True)
    work = root.parent / f"throughput-{time.time_ns()}"
    tiny = work / "tiny.jpg"
    work.mkdir()
    Image.new("RGB", (64, 48), (90, 120, 150)).save(tiny)
    process_times, service_times, startups, clamd_times = [], [], [], []
    load_before, stages_before = os.getloadavg()[0], stage_totals(root)
    for n in range(rounds):
        batch = work / f"round{n}"
        batch.mkdir()
        files = [batch / f"{path.stem}-r{n}{path.suffix}" for path in inputs]
        for path, copy in zip(inputs, files, strict=True):
            marked(path, copy, f"round {n} of {work.name}")
        for side in ("process", "service") if n % 2 == 0 else ("service", "process"):
            if side == "process":
                process_times.append(run_process(files, recipe, work / f"out{n}", workers))
            else:
                seconds, cpu = run_service(root, files)
                service_times.append(seconds)
                clamd_times.append(cpu / len(files))
        startups.append(run_process([tiny], recipe, work / "tiny", 1))
    shutil.rmtree(work)
    stages = {stage: (seconds - stages_before[stage][0]) / max(times - stages_before[stage][1], 1)
              for stage, (seconds, times) in stage_totals(root).items()}
    return Throughput(process_times, service_times, startups, clamd_times,
                      (load_before, os.getloadavg()[0]), stages)


def report_throughput(measured: Throughput, count: int, workers: int, fuzzy_hash: bool) -> None:
    startup = statistics.median(measured.startup)
    without = (statistics.median(measured.process) - startup) / statistics.median(measured.service)
    print(f"throughput, {count} 12-MP JPEGs, {workers} workers, clamd ScanImageFuzzyHash"
          f" {'yes' if fuzzy_hash else 'no'}, {len(measured.process)} alternating rounds, load"
          f" average {measured.load[0]:.1f} -> {measured.load[1]:.1f}:")
    print(f"  hotfolder process {spread(measured.process)} (its start-up, {startup:.2f} s,"
          f" included), service {spread(measured.service)} from the drop")
    print(f"  service/process = {measured.ratio:.0%} (medians"
          + (f", target >= {TARGET_THROUGHPUT:.0%})" if not fuzzy_hash else ")")
          + f"; without process's start-up {without:.0%}; clamd's CPU"
          f" {statistics.median(measured.clamd) * 1000:.0f} ms per photo")
    print("  per photo in a worker (means): " + ", ".join(
        f"{stage} {seconds * 1000:.0f} ms" for stage, seconds in measured.stages.items()))


def report_fuzzy_hash(without: Throughput, default: Throughput, count: int) -> None:
    """What clamd's image fuzzy hash (Debian's default) costs, from both settings' rounds."""
    cpu = statistics.median(default.clamd) - statistics.median(without.clamd)
    wall = (statistics.median(default.service) - statistics.median(without.service)) / count
    print(f"clamd's image fuzzy hash costs {cpu * 1000:.0f} ms of CPU per 12-MP JPEG, and the"
          f" service {wall * 1000:.0f} ms more per photo on these cores"
          " (ScanImageFuzzyHash no in clamd.conf turns it off)")


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


@dataclass(frozen=True)
class Backlog:
    """What one start-up with a backlog measured."""

    count: int
    ready: float  # seconds from the start to READY=1
    claimed: float  # seconds from the start until every file was claimed and queued
    rate: float  # files delivered per second, from the start to the last one's end
    rss: float  # peak sum of the service's processes' RSS, MB
    pss: float  # the same in PSS, MB
    load: tuple[float, float]  # load average before and after


def machine_speed(folder: Path) -> tuple[float, float]:
    """How fast the machine is just now, to read a run's figures against: the CPU time of a
    fixed loop of Python in ms (best of three), and of making a small file in `folder` in µs
    (ext4 without a journal looks past every inode freed in the last minutes for a new one,
    so a run right after a big clean-up, another benchmark's say, pays for each new file).
    The probe's files are left in place: removing them would cost the run itself."""
    loops = []
    for _ in range(3):
        started, total = time.thread_time(), 0
        for n in range(SPEED_LOOP):
            total += n
        loops.append(time.thread_time() - started)
    probe = folder / f"speed-probe-{time.time_ns()}"
    probe.mkdir()
    started = time.thread_time()
    for n in range(SPEED_FILES):
        (probe / str(n)).write_bytes(b"x" * 300)
    return min(loops) * 1000, (time.thread_time() - started) / SPEED_FILES * 1e6


def backlog(root: Path, service: Service, count: int) -> Backlog:
    """Start the service on `count` waiting files and measure until all are delivered."""
    before = jobs(root)
    for n in range(count):  # all different (a pixel spells n): the result cache must not answer
        folder = (root / "inbox" / "grayscale+png" / f"dpi={n // 100 % 100 + 1}"
                  / f"run{count}-{n // 10000:02d}")
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.new("RGB", (32, 24), (n % 256, 90, 90))
        image.putpixel((0, 0), (n & 255, n >> 8 & 255, n >> 16 & 255))
        image.save(folder / f"w{n:06d}.jpg", quality=90)
    # A backlog has rested: none is still settling, and its files are on disk (not still in
    # the page cache for the kernel to write back while the service claims them).
    os.sync()
    time.sleep(WatchConfig().settle_seconds)
    speed = machine_speed(root)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    ready = service.start()
    peak_rss = peak_pss = 0.0
    claimed_at = None
    next_memory = 0.0
    while True:
        if time.perf_counter() >= next_memory:  # reading smaps costs the service: 4 times a second
            rss, pss = memory_mb(service.pids)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            next_memory = time.perf_counter() + 0.25
        if claimed_at is None and jobs(root) - before >= count:
            claimed_at = time.perf_counter() - started
        if jobs(root, *ENDED) - before >= count:
            break
        time.sleep(0.25 if claimed_at is not None else 0.05)  # the claim time to 50 ms
    processed = time.perf_counter() - started
    assert claimed_at is not None
    if jobs(root, "failed"):
        raise SystemExit(f"{jobs(root, 'failed')} jobs failed: see {root}/failed")
    run = Backlog(count, ready, claimed_at, count / processed, peak_rss, peak_pss,
                  (load_before, os.getloadavg()[0]))
    print(f"the machine just before: {speed[0]:.0f} ms of CPU for the reference loop, a new"
          f" small file {speed[1]:.0f} µs of CPU")
    print(f"{count} files waiting at start-up (load average {run.load[0]:.1f} before,"
          f" {run.load[1]:.1f} after): ready in {ready:.1f} s, all claimed and queued in"
          f" {claimed_at:.1f} s (target <= {TARGET_CLAIM_SECONDS} s), all processed in"
          f" {processed:.1f} s ({run.rate:.0f} files/s, target >= {TARGET_RATE})")
    print(f"memory of the service's processes during that burst: RSS sum {peak_rss:.0f} MB"
          f" (target <= {TARGET_MEMORY_MB} MB), PSS sum {peak_pss:.0f} MB")
    return run


def report_growth(runs: list[Backlog]) -> None:
    """How claim time, delivery rate and memory grow with the backlog, against the smallest."""
    first = runs[0]
    print("backlog   claimed (ms/file)   files/s    RSS MB   PSS MB   against the first:"
          " claim ms/file, files/s, RSS")
    for run in runs:
        per_file = run.claimed / run.count * 1000
        first_per_file = first.claimed / first.count * 1000
        print(f"{run.count:>7}   {run.claimed:6.1f} s ({per_file:5.2f})   {run.rate:7.0f}"
              f"   {run.rss:7.0f}  {run.pss:7.0f}   x{per_file / first_per_file:.2f},"
              f" x{run.rate / first.rate:.2f}, x{run.rss / first.rss:.2f}")


def backlog_met(run: Backlog) -> bool:
    """The start-up targets, which are set for up to 10,000 files."""
    return (run.claimed <= TARGET_CLAIM_SECONDS and run.rate >= TARGET_RATE
            and run.rss <= TARGET_MEMORY_MB)


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
    parser.add_argument("--backlog", type=lambda text: [int(n) for n in text.split(",")],
                        default=[10000], help="files waiting at start-up; several, comma-"
                        "separated (1000,10000,100000), each measured in turn")
    parser.add_argument("--idle", type=float, default=60, help="seconds idle before latency")
    parser.add_argument("--rounds", type=int, default=5, help="alternating throughput rounds")
    parser.add_argument("--fuzzy-hash", choices=("no", "yes", "both"), default="both",
                        help="clamd's ScanImageFuzzyHash for throughput (yes decodes every"
                             " image); the other parts run with no")
    parser.add_argument("--only", type=lambda text: set(text.split(",")), default=set(PARTS),
                        help=f"comma-separated parts to run, of {','.join(PARTS)}")
    args = parser.parse_args()
    if args.only - set(PARTS):
        parser.error(f"unknown parts: {','.join(sorted(args.only - set(PARTS)))}")
    workers = len(os.sched_getaffinity(0))
    # As an installed package is (pip compiles it when it installs it): an editable one run
    # with PYTHONDONTWRITEBYTECODE set compiles every module again at each start (0.15 s here).
    compileall.compile_dir(Path(hotfolder.__file__).parent, quiet=1)
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        base = Path(tmp)
        root = base / "root"
        address = make_root(root, workers, fuzzy_hash=False)
        service = Service(root)
        met = []
        try:
            if "throughput" in args.only:
                inputs = make_inputs(base / "inputs", args.count)
                settings = {"no": [False], "yes": [True], "both": [False, True]}[args.fuzzy_hash]
                measured = {}
                for fuzzy_hash in settings:
                    if fuzzy_hash:  # clamd started with it off
                        set_fuzzy_hash(root, address, on=True)
                    service.start()
                    measured[fuzzy_hash] = throughput(root, inputs, workers, args.rounds)
                    service.stop()
                    report_throughput(measured[fuzzy_hash], args.count, workers, fuzzy_hash)
                if False in measured:
                    met.append(measured[False].ratio >= TARGET_THROUGHPUT)
                if len(measured) == 2:
                    report_fuzzy_hash(measured[False], measured[True], args.count)
                if settings[-1] and args.only != {"throughput"}:
                    set_fuzzy_hash(root, address, on=False)
            if "latency" in args.only:
                service.start()
                times = latency(root, args.idle, 5, 20)
                met.append(statistics.median(times) < TARGET_MEDIAN_MS
                           and max(times) < TARGET_WORST_MS)
                service.stop()
            if args.only & {"backlog", "idle"}:
                if "backlog" in args.only:
                    runs = []
                    for n, count in enumerate(args.backlog):
                        if n:
                            service.stop()  # the next backlog waits for the next start
                        runs.append(backlog(root, service, count))
                        if count <= TARGET_BACKLOG:
                            met.append(backlog_met(runs[-1]))
                    if len(runs) > 1:
                        report_growth(runs)
                else:
                    service.start()
                if "idle" in args.only:
                    met.append(idle_cpu(root, service, args.backlog[-1], args.idle)
                               < TARGET_IDLE_CPU)
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
