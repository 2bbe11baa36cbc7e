"""Every Prometheus metric of SPEC 9, declared once, and the HTTP server for /metrics and probes.

Jobs run in worker processes, so the metrics are split by what they describe:

- Events (counters and the stage histogram: `files_detected_total`,
  `jobs_total`, `stage_seconds`, `bytes_total`, `files_unscanned_total`,
  `web_requests_total`, `web_upload_bytes_total`) are counted in whichever
  process sees them. With `Metrics(directory=state/metrics)` they use
  prometheus_client's multiprocess mode: each process writes its own
  memory-mapped file there, forked workers switch to a file of their own, and
  a scrape sums all files, so counts of a worker that was killed are kept.
  The service clears the folder once at start-up (`clear_directory`), so
  counters restart from zero as Prometheus expects after a restart. The
  switch is for the whole process and the processes it starts (prometheus_client
  keeps one value class per process): a process uses one such folder, for good.
- The present state (`queue_depth`, `jobs_in_progress`, `waiting_jobs`,
  `scanner_up`, `watcher_last_scan_timestamp_seconds`, `watcher_unwatched_folders`,
  `watcher_poll_seconds`) is computed at scrape time in the serving process by the callback given to
  `Metrics.follow`, from the queue, the journal and the watcher. A gauge kept by a worker would stay
  wrong after that worker is killed mid-job; a callback cannot. `scanner_up` is left out
  while scanning is switched off, so that no scanner reads as a scanner down, and
  `watcher_poll_seconds` while the inbox is not polled.
- `resident_memory_bytes` sums the resident memory of the serving process and every
  process below it (the workers), read from /proc at scrape time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from hotfolder import __version__

PREFIX = "hotfolder_"
HEADER_BYTES = 8  # of a multiprocess metric file: how much of it is used
OUTCOMES = ("done", "failed", "quarantined")
STAGES = ("scan", "decode", "process", "encode", "deliver")
UNKNOWN_RECIPE = "unknown"  # the recipe label of a job that failed before its recipe was known
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                 120.0, 300.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
# How often the server thread checks for shutdown.
POLL_SECONDS = 0.05
# A connection that sends nothing for this long is closed; at most this many are served at
# once, and those beyond are closed at once, so a flood of idle connections holds no threads.
IDLE_SECONDS = 10.0
MAX_CONNECTIONS = 8

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class State:
    """What the gauges show at one scrape."""

    queue_depth: int
    jobs_in_progress: int
    waiting_jobs: Mapping[str, int] = field(default_factory=dict)
    scanner_up: bool | None = False  # None: scanning is switched off
    watcher_last_scan: float = 0.0
    watcher_unwatched_folders: int = 0
    watcher_poll_seconds: float | None = None  # None: the inbox is not polled


def _parents() -> dict[int, int]:
    """The parent of each live (non-zombie) process, from /proc."""
    parents = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # it ended meanwhile
                continue
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    return parents


def resident_memory(pid: int) -> int:
    """Resident bytes of pid and of every process below it, summed."""
    parents = _parents()
    tree, added = {pid}, True
    while added:
        below = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= below
        added = bool(below)
    pages = 0
    for member in tree:
        try:
            pages += int(Path(f"/proc/{member}/statm").read_text().split()[1])
        except OSError:  # it ended meanwhile
            continue
    return pages * PAGE_BYTES


def clear_directory(directory: Path) -> None:
    """Remove the metric files of earlier runs; call once, before any worker starts."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.glob("*.db"):
        path.unlink()


def _use_directory(directory: Path) -> None:
    """Switch this process (and the processes it starts) to files in directory."""
    directory.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(directory)
    # prometheus_client picks its value class when first imported; pick again now.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


class _StateCollector(Collector):
    """The gauges, from the followed callback, plus build_info."""

    def __init__(self) -> None:
        self.source: Callable[[], State] | None = None

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily(PREFIX + "build_info", "Version of hotfolder and of Python",
                                 labels=["version", "python"])
        info.add_metric([__version__, platform.python_version()], 1)
        yield info
        yield GaugeMetricFamily(PREFIX + "resident_memory_bytes",
                                "Resident memory of the service's processes (this one and the"
                                " workers below it), summed",
                                value=resident_memory(os.getpid()))
        if self.source is None:
            return
        state = self.source()
        yield GaugeMetricFamily(PREFIX + "queue_depth", "Jobs queued and not yet started",
                                value=state.queue_depth)
        yield GaugeMetricFamily(PREFIX + "jobs_in_progress", "Jobs being worked on now",
                                value=state.jobs_in_progress)
        waiting = GaugeMetricFamily(PREFIX + "waiting_jobs",
                                    "Jobs waiting for something outside the file",
                                    labels=["reason"])
        for reason, count in sorted(state.waiting_jobs.items()):
            waiting.add_metric([reason], count)
        yield waiting
        if state.scanner_up is not None:
            yield GaugeMetricFamily(PREFIX + "scanner_up", "1 when the virus scanner answers",
                                    value=int(state.scanner_up))
        yield GaugeMetricFamily(PREFIX + "watcher_last_scan_timestamp_seconds",
                                "Unix time of the watcher's last full scan of the inbox",
                                value=state.watcher_last_scan)
        yield GaugeMetricFamily(PREFIX + "watcher_unwatched_folders",
                                "Inbox folders inotify does not watch (its watches ran out):"
                                " their files are found by the rescan only",
                                value=state.watcher_unwatched_folders)
        if state.watcher_poll_seconds is not None:
            yield GaugeMetricFamily(PREFIX + "watcher_poll_seconds",
                                    "How long the watcher's last complete poll of the inbox took:"
                                    " how late a new file may be seen, before it settles",
                                    value=state.watcher_poll_seconds)


class SettledFiles(MultiProcessCollector):
    """The processes' metric files, but for one still empty: a process creating its file
    sizes it an instant later, and reading it before then failed the whole scrape."""

    def collect(self) -> Iterable[Metric]:
        """The metrics summed over every file that has its header."""
        files = []
        for path in Path(self._path).glob("*.db"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_size >= HEADER_BYTES:
                    files.append(str(path))
        return self.merge(files, accumulate=True)  # type: ignore[no-any-return, no-untyped-call]


class Metrics:
    """The metrics of one service; `registry` is what /metrics serves."""

    def __init__(self, registry: CollectorRegistry | None = None, *,
                 directory: Path | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        own: CollectorRegistry | None = self.registry
        if directory is not None:
            _use_directory(directory)
            SettledFiles(self.registry, str(directory))  # type: ignore[no-untyped-call]
            own = None  # values are read back from the files
        self.files_detected = Counter(
            PREFIX + "files_detected", "Files the watcher offered to intake", registry=own)
        self.jobs = Counter(
            PREFIX + "jobs", "Jobs finished, by recipe and outcome (done, failed, quarantined)",
            ["recipe", "outcome"], registry=own)
        self.stage_seconds = Histogram(
            PREFIX + "stage_seconds", "Time spent in each stage of a job, each time it ran",
            ["stage"], buckets=STAGE_BUCKETS, registry=own)
        self.unscanned = Counter(
            PREFIX + "files_unscanned",
            "Files processed unscanned: the scanner was unavailable and on_unavailable is allow",
            registry=own)
        self.bytes = Counter(
            PREFIX + "bytes", "Bytes read from inputs (in) and written as results (out)",
            ["direction"], registry=own)
        self.web_requests = Counter(
            PREFIX + "web_requests", "Requests to the console and its API, by route and status",
            ["route", "status"], registry=own)
        self.upload_bytes = Counter(
            PREFIX + "web_upload_bytes", "Bytes of files received by console uploads",
            registry=own)
        self._state = _StateCollector()
        self.registry.register(self._state)

    def follow(self, source: Callable[[], State]) -> None:
        """Compute the gauges from source at every scrape."""
        self._state.source = source

    def record_job(self, recipe: str, outcome: str, *, timings: Mapping[str, float],
                   bytes_in: int = 0, bytes_out: int = 0) -> None:
        """Count one finished job with its stage timings (seconds) and sizes."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
        self.record_stages(timings)
        self.jobs.labels(recipe=recipe, outcome=outcome).inc()
        if bytes_in:
            self.bytes.labels(direction="in").inc(bytes_in)
        if bytes_out:
            self.bytes.labels(direction="out").inc(bytes_out)


    def record_stages(self, timings: Mapping[str, float]) -> None:
        """Observe stages (seconds) that ran, each time they run."""
        unknown = set(timings) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown stages {sorted(unknown)}; stages are {', '.join(STAGES)}")
        for stage, seconds in timings.items():
            self.stage_seconds.labels(stage=stage).observe(seconds)


def parse_listen(listen: str) -> tuple[str, int]:
    """`127.0.0.1:9464` or `[::1]:9464` -> (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer
    timeout = IDLE_SECONDS

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._reply(HTTPStatus.OK, encoder(self.server.registry), content_type)
        elif path == "/healthz":
            self._reply(HTTPStatus.OK, b"ok\n")
        elif path == "/readyz":
            if self.server.ready():
                self._reply(HTTPStatus.OK, b"ready\n")
            else:
                self._reply(HTTPStatus.SERVICE_UNAVAILABLE, b"not ready\n")
        else:
            self._reply(HTTPStatus.NOT_FOUND, b"not found: try /metrics, /healthz or /readyz\n")

    def _reply(self, status: HTTPStatus, body: bytes,
               content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics http: " + format, *args)


class MetricsServer(ThreadingHTTPServer):
    """/metrics, /healthz and /readyz, served from a background thread.

    Each connection has a thread of its own, at most MAX_CONNECTIONS at once.
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry,
                 ready: Callable[[], bool]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.registry = registry
        self.ready = ready
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._thread = threading.Thread(target=self.serve_forever, args=(POLL_SECONDS,),
                                        name="metrics-http", daemon=True)

    @property
    def url(self) -> str:
        """The base URL, with the port actually bound."""
        host, port = str(self.server_address[0]), self.server_address[1]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in a thread of its own, or close it when all are busy."""
        if not self._slots.acquire(blocking=False):
            log.debug("metrics http: %d connections already, one more closed", MAX_CONNECTIONS)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection, then free its slot."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port."""
        self.shutdown()
        self.server_close()
        self._thread.join()


def serve(listen: str, registry: CollectorRegistry, ready: Callable[[], bool]) -> MetricsServer:
    """Serve /metrics, /healthz (200 while alive) and /readyz (200 when ready() else 503)."""
    server = MetricsServer(parse_listen(listen), registry, ready)
    server.start()
    return server
