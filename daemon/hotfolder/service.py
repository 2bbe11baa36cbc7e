"""The service's lifecycle: `hotfolder run` (watcher and workers) and `hotfolder worker`.

Start-up, in order: remove temporary files no job owns; find work-folder entries the
journal lacks; queue again every job claimed but not finished (the journal, not Huey,
is the record); ping the scanner, which probes clamd's limits once for the workers it
forks next (each would otherwise probe at its first job); fork the workers; then serve
metrics, start watching, serve the console (`hotfolder.web`), and tell systemd we are
ready. /readyz answers 200 while the watcher and the workers live and, when configured,
the scanner and the queue's Redis answered their latest ping. The parts come built from
`hotfolder.parts`.

The main thread then ticks once a second: it applies what `supervisor.supervise`
decides about the running jobs, replaces dead workers, queues waiting jobs when due
(at once when the scanner comes back), pings a Redis queue and the scanner, lets the
janitor sweep every minute, and reports its status to systemd. Each of the supervisor's
actions is applied on its own guard, so that one job's trouble is logged and never stops the round,
and systemd's watchdog is fed at every turn of the loop, whatever a round met.
SIGTERM or SIGINT stops the console and the watcher, lets the workers finish the jobs
they hold (up to STOP_SECONDS), and exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Any

import sdnotify

from hotfolder import tasks
from hotfolder.config import Config
from hotfolder.errors import HotfolderError
from hotfolder.intake import Intake
from hotfolder.janitor import Janitor
from hotfolder.journal import Job, is_shared
from hotfolder.metrics import MetricsServer, State, serve
from hotfolder.names import OneLineFormatter
from hotfolder.parts import Parts, assemble
from hotfolder.queue import QueueErrorsInWords, ServiceConsumer, WakePipe
from hotfolder.reception import Reception
from hotfolder.scanner import ClamdScanner, ScannerWatch
from hotfolder.supervisor import Action, Fail, Kill, Requeue, crash_reason, supervise
from hotfolder.watcher import REPORT_NAME, Watcher
from hotfolder.web.console import Backend
from hotfolder.web.server import WebServer

log = logging.getLogger("hotfolder.service")

TICK_SECONDS = 1.0
SCANNER_PING_SECONDS = 5.0
QUEUE_PING_SECONDS = 1.0  # a Redis that has not answered within this is not ready
CLEANUP_SECONDS = 60.0
STOP_SECONDS = 20.0


class Service:
    """One running service (`watch=True`) or a set of workers only (`watch=False`)."""

    def __init__(self, parts: Parts, *, watch: bool = True,
                 notifier: Any = None, clock: Callable[[], float] = time.time) -> None:
        self.parts = parts
        self.journal = parts.journal
        self.watch = watch
        self.clock = clock
        self._queue_jobs = tasks.register(parts)
        self.wake = WakePipe() if watch else None
        intake = Intake(parts.layout, parts.cfg.limits, parts.journal)
        self.reception = Reception(intake, parts.metrics, self.submit)
        self.janitor = Janitor(parts.cfg, parts.journal, parts.originals)
        self.consumer: ServiceConsumer | None = None
        self.watcher: Watcher | None = None
        self.web: WebServer | None = None
        self.server: MetricsServer | None = None
        self.notifier = nonblocking(notifier or sdnotify.SystemdNotifier())
        self.watchdog = "WATCHDOG_USEC" in os.environ
        self.scanner = ScannerWatch(parts.scanner)
        self.queue_problem: str | None = None  # why the queue's Redis did not answer
        self._stop = threading.Event()
        self._exits: dict[int, int | None] = {}
        self._next_ping = self._next_sweep = 0.0
        self._status = ""
        parts.metrics.follow(self.state)

    def submit(self, job_ids: Sequence[str]) -> None:
        """Queue jobs and wake as many sleeping workers."""
        self._queue_jobs(job_ids)
        if self.wake is not None:
            self.wake.ring(len(job_ids))

    def start(self) -> None:
        """Recover, fork the workers, then start watching and tell systemd."""
        cfg = self.parts.cfg
        if self.watch:
            self.janitor.remove_temporary(before=self.clock(), at_start=True)
            self.parts.huey.storage.flush_queue()  # the journal, not the queue, is the record
            log.info("%d unfinished job(s) queued again", self.reception.recover())
            self.submit([job.id for job in self.ping_scanner(self.clock())])
        workers = cfg.queue.worker_count
        self.consumer = ServiceConsumer(self.parts.huey, workers, self.wake,
                                        cfg.limits.worker_memory_bytes(workers))
        self.consumer.start()
        log.info("%d worker process(es) started", workers)
        if self.watch:
            if cfg.metrics.listen is not None:
                self.server = serve(cfg.metrics.listen, self.parts.metrics.registry, self.ready)
            layout = self.parts.layout
            self.watcher = Watcher(layout.inbox, cfg.watch, self.reception.on_files,
                                   exclude=[layout.work], report=layout.state / REPORT_NAME)
            self.watcher.start()
            if cfg.web.listen is not None:
                self.web = WebServer(Backend.of(self.parts, self.reception.take))
                self.web.start()
        self.notifier.notify("READY=1")

    def state(self) -> State:
        """The gauges' values now (read at each scrape)."""
        counts, watcher = self.journal.counts(), self.watcher
        polled = watcher.poll_stats if watcher else None
        return State(queue_depth=counts.get("queued", 0), jobs_in_progress=counts.get("running", 0),
                     waiting_jobs=self.journal.waiting_counts(),
                     scanner_up=None if self.scanner.scanner is None else self.scanner.up,
                     watcher_last_scan=watcher.last_scan if watcher else 0.0,
                     watcher_unwatched_folders=watcher.coverage.unwatched if watcher else 0,
                     watcher_poll_seconds=polled.seconds if polled else None)

    def ready(self) -> bool:
        """Watching, workers alive, and the scanner and a Redis queue answering when
        configured."""
        workers = self.consumer is not None and all(
            p.is_alive() for p in self.consumer.worker_processes())
        watching = self.watcher is not None and self.watcher.healthy
        return workers and watching and not self.scanner.down and self.queue_problem is None

    def run(self) -> int:
        """Run until SIGTERM or SIGINT; returns the exit code."""
        self.start()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        try:
            while not self._stop.is_set():
                try:
                    self.tick()
                except (OSError, HotfolderError, sqlite3.Error) as exc:  # next tick retries
                    log.error("supervision round failed, trying again: %s", exc)
                if self.watchdog:  # fed while the loop turns, whatever a round met
                    self.notifier.notify("WATCHDOG=1")
                self._stop.wait(TICK_SECONDS)
        finally:
            self.stop()
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s, finishing the jobs in progress", signal.Signals(signum).name)
        self._stop.set()

    def stop(self) -> None:
        """Stop watching, let workers finish their jobs (up to STOP_SECONDS), then end them."""
        self.notifier.notify("STOPPING=1")
        if self.web is not None:
            self.web.stop()
        if self.watcher is not None:
            self.watcher.stop()
        if self.server is not None:
            self.server.close()
        if self.consumer is not None:
            self.consumer.stop_workers(STOP_SECONDS)
        self.journal.close()
        log.info("stopped")

    def tick(self) -> None:
        """One round: ping a Redis queue, supervise the workers, wake due jobs, ping the
        scanner, sweep, report."""
        now = self.clock()
        if self.watch:
            self.ping_queue()  # first: every step below needs the journal, in that Redis
        if self.consumer is not None:
            self.supervise_workers(now)
        if self.watch:
            self.submit([job.id for job in self.ping_scanner(now) + self.journal.wake()])
            if now >= self._next_sweep:
                self._next_sweep = now + CLEANUP_SECONDS
                self.janitor.sweep(now)
        self.report()

    def ping_scanner(self, now: float) -> list[Job]:
        """Ping the scanner when due; when it came back, the jobs waiting for it, woken."""
        if now < self._next_ping:
            return []
        self._next_ping = now + SCANNER_PING_SECONDS
        return self.journal.wake("scanner") if self.scanner.ping() else []

    def ping_queue(self) -> None:
        """Ping a Redis queue, once a round (a local one always answers); logs each change."""
        url = self.parts.cfg.queue.url
        if not is_shared(url):
            return
        from hotfolder.journal.redis import check_redis  # noqa: PLC0415  (a Redis queue only)

        problem = check_redis(url, timeout=QUEUE_PING_SECONDS)
        if problem != self.queue_problem:
            if problem is None:
                log.info("the queue's Redis answers again")
            else:
                log.warning("not ready until it answers: %s", problem)
        self.queue_problem = problem

    def supervise_workers(self, now: float) -> None:
        """Apply the supervisor's actions for the running jobs, then replace dead workers."""
        assert self.consumer is not None
        processes = self.consumer.worker_processes()
        live = {process.pid: process for process in processes if process.is_alive()}
        for process in processes:
            if process.pid not in live and process.pid not in self._exits:
                self._exits[process.pid] = process.exitcode
                log.warning("worker %d ended: %s", process.pid, crash_reason(process.exitcode))
        for action in supervise(self.journal.in_state("running"), live, self._exits, now,
                                timeout=self.parts.cfg.limits.job_timeout_seconds,
                                holder_alive=self.journal.alive):
            try:
                self.apply(action, live)
            except Exception:  # one job's trouble must not stop the supervision
                log.exception("%s could not be done; tried again in the next round", action)
        if len(live) < len(processes):
            self.consumer.replace_dead_workers(holding=self.journal.fork_guard())

    def apply(self, action: Action, live: Mapping[int, Any]) -> None:
        """Carry out one of the supervisor's actions."""
        assert self.consumer is not None
        match action:
            case Kill(pid):
                self._exits[pid] = self.consumer.kill_worker(live[pid])
            case Fail(job_id, reason):
                tasks.fail_running(self.parts, job_id, reason)
            case Requeue(job_id, why, forgive):
                log.warning("job %s: %s", job_id, why)
                self.journal.requeue(job_id, forgive=forgive)
                self.submit([job_id])

    def report(self) -> None:
        """Tell systemd what we are doing, when it changed."""
        status = status_line(self.journal.counts(), scanner_down=self.scanner.down)
        if status != self._status:
            self._status = status
            self.notifier.notify(f"STATUS={status}")


def nonblocking(notifier: Any) -> Any:
    """The notifier with a non-blocking socket: a busy systemd must never stall the service."""
    if getattr(notifier, "socket", None) is not None:
        notifier.socket.setblocking(False)
    return notifier


def status_line(counts: Mapping[str, int], *, scanner_down: bool) -> str:
    """systemd's STATUS: jobs by state, and whether the virus scanner is not answering."""
    line = ", ".join(f"{counts.get(state, 0)} {state}"
                     for state in ("queued", "running", "waiting", "done", "failed"))
    return line + ("; virus scanner not answering" if scanner_down else "")


def run(cfg: Config, *, watch: bool = True, scanner: ClamdScanner | None = None) -> int:
    """`hotfolder run` (watch=True) or `hotfolder worker` (watch=False); `scanner`: the one
    made for `cfg` already."""
    return Service(assemble(cfg, watching=watch, scanner=scanner), watch=watch).run()


def setup_logging(environ: Mapping[str, str] = os.environ) -> None:
    """One line per event on stderr, names escaped; no timestamps under systemd, whose
    journal adds them."""
    under_systemd = "JOURNAL_STREAM" in environ or "INVOCATION_ID" in environ
    fmt = "%(levelname)s %(name)s: %(message)s"
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter(fmt if under_systemd else "%(asctime)s " + fmt))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    # No line shows a thread's or a process's name: each record need not look them up.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.getLogger("huey").setLevel(logging.WARNING)
    logging.getLogger("huey.consumer.Worker").addFilter(QueueErrorsInWords())
