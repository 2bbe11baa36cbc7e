"""The service: `hotfolder run` (watcher, intake, workers, supervisor) and `hotfolder worker`.

Start-up, in order: refuse a state folder on a network filesystem; remove temporary
files no job owns; find work-folder entries the journal lacks; queue again every job
claimed but not finished (the journal, not Huey, is the record); fork the workers;
then serve metrics, start watching, and tell systemd we are ready.

The main thread then supervises, once a second: a job whose worker died is queued
again, and failed after MAX_ATTEMPTS crashes; a job over `limits.job_timeout_seconds`
has its worker killed and is failed; waiting jobs are queued again when due (at once
when the scanner comes back); the scanner is pinged; the cleanup runs every minute;
systemd's watchdog is fed. SIGTERM or SIGINT stops the watcher, lets the workers
finish the jobs they hold (up to STOP_SECONDS), and exits 0.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from types import FrameType
from typing import Any

import sdnotify

from hotfolder import tasks
from hotfolder.config import Config
from hotfolder.errors import ConfigError, HotfolderError, InputError
from hotfolder.files import TEMP_GLOB
from hotfolder.intake import Intake, parse_work_name
from hotfolder.journal import ENDED, Job, Journal, is_shared, open_journal
from hotfolder.metrics import Metrics, MetricsServer, State, clear_directory, serve
from hotfolder.queue import ServiceConsumer, WakePipe, make_huey
from hotfolder.scanner import make_scanner
from hotfolder.sinks import renamed
from hotfolder.sinks.local import to_failed
from hotfolder.watcher import REPORT_NAME, Watcher, is_network_fs, read_report

log = logging.getLogger("hotfolder.service")

MAX_ATTEMPTS = 3
TICK_SECONDS = 1.0
SCANNER_PING_SECONDS = 5.0
CLEANUP_SECONDS = 60.0
STOP_SECONDS = 20.0
JOURNAL_KEEP_DAYS = 30
ERROR_SUFFIX = ".error.json"


def crash_reason(exitcode: int | None) -> str:
    """How a worker ended, in words: `worker killed: signal 11 (SIGSEGV)`."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown"
        return f"worker killed: signal {-exitcode} ({name})"
    return f"worker exited with status {exitcode}"


def open_state(cfg: Config) -> Journal:
    """Create the root's folders and open its journal; refuse a state folder on the network."""
    layout = cfg.layout
    for folder in (layout.inbox, layout.outbox, layout.failed, layout.archive, layout.state,
                   layout.work):
        folder.mkdir(parents=True, exist_ok=True)
    layout.quarantine.mkdir(mode=0o700, parents=True, exist_ok=True)
    if is_network_fs(layout.state):
        raise ConfigError(
            f"{layout.state}: the state folder is on a network filesystem; its SQLite databases"
            " need a local disk (set paths.state to a local folder)"
        )
    return open_journal(cfg.queue.url, layout.state / "journal.db")


class Service:
    """One running service (`watch=True`) or a set of workers only (`watch=False`)."""

    def __init__(self, cfg: Config, *, watch: bool = True,
                 notifier: Any = None, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.layout = cfg.layout
        self.watch = watch
        self.clock = clock
        self.journal = open_state(cfg)
        metrics_dir = self.layout.state / "metrics"
        if watch:
            clear_directory(metrics_dir)
        self.metrics = Metrics(directory=metrics_dir)
        self.metrics.follow(self.state)
        self.server: MetricsServer | None = None
        self.ctx = tasks.make_context(cfg, self.journal, self.metrics)
        self.huey = make_huey(cfg.queue.url, self.layout)
        self._submit = tasks.register(self.huey, lambda: self.ctx)
        self.intake = Intake(self.layout, cfg.limits, self.journal)
        self.wake = WakePipe() if watch else None
        self.consumer: ServiceConsumer | None = None
        self.watcher: Watcher | None = None
        self.notifier = notifier if notifier is not None else sdnotify.SystemdNotifier()
        if getattr(self.notifier, "socket", None) is not None:
            self.notifier.socket.setblocking(False)  # a busy systemd must never stall the service
        self.watchdog = "WATCHDOG_USEC" in os.environ
        self.scanner = make_scanner(cfg.scanner, cfg.limits.max_file_bytes)
        self.scanner_up = False  # until the first ping, which also wakes jobs held for it
        self._stop = threading.Event()
        self._exits: dict[int, int | None] = {}
        self._next_ping = 0.0
        self._next_cleanup = 0.0
        self._status = ""

    # -- queueing

    def submit(self, job_id: str) -> None:
        """Queue a job and wake a sleeping worker."""
        self._submit(job_id)
        if self.wake is not None:
            self.wake.ring()

    def on_file(self, path: Path) -> None:
        """The watcher's callback: claim the file and queue its job."""
        try:
            job = self.intake.offer(path)
        except (HotfolderError, OSError) as exc:
            log.error("cannot claim %s now, it stays in the inbox: %s", path, exc)
            return
        if job is None:
            return
        self.metrics.files_detected.inc()
        if job.state == "queued":
            self.submit(job.id)
        else:
            tasks.Tally().record(self.metrics, "failed")

    def recover(self) -> int:
        """Queue again everything claimed but not finished; returns how many jobs."""
        self.huey.storage.flush_queue()
        self.intake.adopt()
        for job in self.journal.in_state("running"):
            if not self.journal.alive(job):
                self.journal.requeue(job.id, forgive=True)
        queued = self.journal.in_state("queued")
        for job in queued:
            self.submit(job.id)
        return len(queued)

    # -- running

    def start(self) -> None:
        """Recover, fork the workers, then start watching and tell systemd."""
        if self.watch:
            self.clean_temporary(older_than=0)
            count = self.recover()
            log.info("%d unfinished job(s) queued again", count)
        workers = self.cfg.queue.worker_count
        self.consumer = ServiceConsumer(self.huey, workers, self.wake,
                                        self.cfg.limits.worker_memory_bytes(workers))
        self.consumer.start()
        log.info("%d worker process(es) started", self.cfg.queue.worker_count)
        if self.watch:
            if self.cfg.metrics.listen is not None:
                self.server = serve(self.cfg.metrics.listen, self.metrics.registry, self.ready)
            self.watcher = Watcher(self.layout.inbox, self.cfg.watch, self.on_file,
                                   exclude=[self.layout.work],
                                   report=self.layout.state / REPORT_NAME)
            self.watcher.start()
        self.notifier.notify("READY=1")

    def state(self) -> State:
        """The gauges' values now (read at each scrape)."""
        counts = self.journal.counts()
        return State(
            queue_depth=counts.get("queued", 0),
            jobs_in_progress=counts.get("running", 0),
            waiting_jobs=self.journal.waiting_counts(),
            scanner_up=self.scanner_up,
            watcher_last_scan=self.watcher.last_scan if self.watcher is not None else 0.0,
            watcher_unwatched_folders=(
                self.watcher.coverage.unwatched if self.watcher is not None else 0),
        )

    def ready(self) -> bool:
        """Watching, workers alive, and the scanner answering when one is configured."""
        workers = self.consumer is not None and all(
            p.is_alive() for p in self.consumer.worker_processes())
        watching = self.watcher is not None and self.watcher.healthy
        return workers and watching and (self.scanner is None or self.scanner_up)

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
        if self.watcher is not None:
            self.watcher.stop()
        if self.server is not None:
            self.server.close()
        if self.consumer is not None:
            self.consumer.stop_flag.set()
            deadline = time.monotonic() + STOP_SECONDS
            processes = [*self.consumer.worker_processes(), self.consumer.scheduler]
            for process in processes:
                process.join(max(deadline - time.monotonic(), 0))
            for process in processes:
                if process.is_alive():
                    log.warning("worker %s still busy after %.0f s, stopped; its job will run"
                                " again at the next start", process.pid, STOP_SECONDS)
                    process.kill()
                    process.join()
        self.journal.close()
        log.info("stopped")

    # -- supervision

    def tick(self) -> None:
        """One round of supervision (see the module docstring)."""
        now = self.clock()
        if self.consumer is not None:
            self.supervise_workers(now)
        if self.watch:
            if now >= self._next_ping:
                self._next_ping = now + SCANNER_PING_SECONDS
                self.ping_scanner()
            for job in self.journal.wake():
                self.submit(job.id)
            if now >= self._next_cleanup:
                self._next_cleanup = now + CLEANUP_SECONDS
                self.cleanup(now)
        self.report()

    def supervise_workers(self, now: float) -> None:
        """Requeue or fail jobs of dead workers, kill overdue ones, replace dead workers."""
        assert self.consumer is not None
        live: dict[int, Any] = {}
        for process in self.consumer.worker_processes():
            if process.is_alive():
                live[process.pid] = process
            elif process.pid not in self._exits:
                self._exits[process.pid] = process.exitcode
                log.warning("worker %d ended: %s", process.pid, crash_reason(process.exitcode))
        timeout = self.cfg.limits.job_timeout_seconds
        for job in self.journal.in_state("running"):
            if job.pid in live:
                if job.started is not None and now - job.started > timeout:
                    self.kill_overdue(job, live[job.pid], timeout)
            elif job.pid in self._exits:
                self.crashed(job, crash_reason(self._exits[job.pid]))
            elif not self.journal.alive(job):  # e.g. another machine's worker lost its lease
                log.warning("job %s: its worker is gone, queued again", job.id)
                self.journal.requeue(job.id, forgive=True)
                self.submit(job.id)
        if len(live) < len(self.consumer.worker_processes()):
            with self.forking():
                self.consumer.check_worker_health()

    @contextmanager
    def forking(self) -> Iterator[None]:
        """Hold the locks of shared connections while forking, so no child inherits one held."""
        # Redis' connection pool is fork-safe and has no lock.
        with self.journal.fork_guard(), getattr(self.huey.storage, "lock", nullcontext()):
            yield

    def crashed(self, job: Job, reason: str) -> None:
        """A job whose worker died: queue it again, or fail it after MAX_ATTEMPTS."""
        if job.attempts >= MAX_ATTEMPTS:
            error = InputError(f"processing crashed {job.attempts} times ({reason})",
                               stage="process")
            tasks.fail(self.ctx, job, error)
            tasks.Tally().record(self.metrics, "failed")
            return
        log.warning("job %s: %s, queued again (attempt %d of %d)", job.id, reason,
                    job.attempts, MAX_ATTEMPTS)
        self.journal.requeue(job.id)
        self.submit(job.id)

    def kill_overdue(self, job: Job, process: Any, timeout: float) -> None:
        """Kill the worker of a job over the time limit, then fail the job."""
        process.kill()
        process.join(5)
        self._exits[process.pid] = process.exitcode
        current = self.journal.get(job.id)
        if current is not None and current.state == "running":
            error = InputError(
                f"processing took longer than {timeout:g} s (limits.job_timeout_seconds)"
                " and was stopped", stage="process",
            )
            tasks.fail(self.ctx, current, error)
            tasks.Tally().record(self.metrics, "failed")

    def ping_scanner(self) -> None:
        """Ask the scanner whether it answers; when it comes back, wake the jobs waiting for it."""
        if self.scanner is None:
            return
        up = self.scanner.ping()
        came_back = up and not self.scanner_up
        if up != self.scanner_up:
            log.log(logging.INFO if up else logging.WARNING, "the virus scanner is %s",
                    "answering" if up else "not answering")
        self.scanner_up = up
        if came_back:
            for job in self.journal.wake("scanner"):
                self.submit(job.id)

    def report(self) -> None:
        """Feed systemd's watchdog and tell it what we are doing."""
        counts = self.journal.counts()
        waiting = counts.get("waiting", 0)
        status = (f"{counts.get('queued', 0)} queued, {counts.get('running', 0)} running,"
                  f" {waiting} waiting, {counts.get('done', 0)} done,"
                  f" {counts.get('failed', 0)} failed")
        if self.scanner is not None and not self.scanner_up:
            status += "; virus scanner not answering"
        lines = ["WATCHDOG=1"] if self.watchdog else []
        if status != self._status:
            self._status = status
            lines.append(f"STATUS={status}")
        if lines:
            self.notifier.notify("\n".join(lines))

    # -- cleanup

    def cleanup(self, now: float) -> None:
        """Remove what no job owns: old temporary files, ended jobs' work entries, old archives."""
        self.clean_temporary(older_than=self.cfg.limits.job_timeout_seconds)
        self.clean_work()
        days = self.cfg.output.archive_days
        if days is not None:
            removed = remove_older(self.layout.archive, now - days * 86400)
            if removed:
                log.info("removed %d archived original(s) older than %g days", removed, days)
        self.journal.forget_ended(now - JOURNAL_KEEP_DAYS * 86400)

    def clean_temporary(self, older_than: float) -> None:
        """Remove temporary files of interrupted writes, older than `older_than` seconds."""
        limit = time.time() - older_than
        for folder in (self.layout.outbox, self.layout.failed, self.layout.quarantine,
                       self.layout.archive):
            for temp in folder.rglob(TEMP_GLOB):
                try:
                    if temp.lstat().st_mtime <= limit:
                        temp.unlink()
                        log.info("removed the temporary file %s", temp)
                except FileNotFoundError:
                    continue

    def clean_work(self) -> None:
        """A file left in the work folder after its job ended goes to failed/ with that reason."""
        for entry in self.layout.work.iterdir():
            parsed = parse_work_name(entry.name)
            job = self.journal.get(parsed[0]) if parsed is not None else None
            if parsed is None or job is None or job.state not in ENDED:
                continue
            error = InputError(f"{job.rel}: left in the work folder after its job ended"
                               f" ({job.state})", stage="cleanup")
            try:
                to_failed(entry, self.layout.failed, parsed[1], error)
            except FileNotFoundError:  # its job moved it out after the folder was listed
                continue
            log.warning("job %s: %s; moved to failed/", job.id, error.message)


def remove_older(folder: Path, before: float) -> int:
    """Remove files under `folder` whose last change is before `before`; returns how many."""
    removed = 0
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            try:
                if os.lstat(path).st_ctime < before:
                    os.unlink(path)
                    removed += 1
            except FileNotFoundError:
                continue
    return removed


def run(cfg: Config, *, watch: bool = True) -> int:
    """`hotfolder run` (watch=True) or `hotfolder worker` (watch=False)."""
    return Service(cfg, watch=watch).run()


def setup_logging(environ: Mapping[str, str] = os.environ) -> None:
    """One line per event on stderr; no timestamps under systemd, whose journal adds them."""
    under_systemd = "JOURNAL_STREAM" in environ or "INVOCATION_ID" in environ
    fmt = "%(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=logging.INFO, format=fmt if under_systemd else "%(asctime)s " + fmt)
    logging.getLogger("huey").setLevel(logging.WARNING)


def status(cfg: Config) -> dict[str, Any]:
    """Queue depth, jobs by state and waiting reason, the latest failures, and unwatched folders."""
    path = cfg.layout.state / "journal.db"
    watcher = read_report(cfg.layout.state / REPORT_NAME)
    if not path.exists() and not is_shared(cfg.queue.url):
        return {"queue_depth": 0, "jobs": {}, "waiting": {}, "recent_failures": [],
                "watcher": watcher}
    journal = open_journal(cfg.queue.url, path)
    try:
        counts = journal.counts()
        return {
            "queue_depth": counts.get("queued", 0),
            "jobs": counts,
            "waiting": journal.waiting_counts(),
            "watcher": watcher,
            "recent_failures": [
                {"job": job.id, "file": job.rel, "reason": job.reason,
                 "time": datetime.fromtimestamp(job.updated, UTC).isoformat(timespec="seconds")}
                for job in journal.recent("failed")
            ],
        }
    finally:
        journal.close()


def failed_files(failed: Path) -> list[Path]:
    """Every file in failed/ except the error reports."""
    return sorted(p for p in failed.rglob("*")
                  if not p.is_dir() and not p.name.endswith(ERROR_SUFFIX))


def retry(cfg: Config, paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """Move failed files back into their inbox folder, removing their reports.

    `paths` are files in failed/ (absolute, or relative to failed/ or to the current
    folder); empty means all of them. Returns what was moved and what could not be.
    """
    layout = cfg.layout
    chosen = [(p, retry_target(layout.failed, p)) for p in paths] if paths else [
        (str(p), PurePosixPath(p.relative_to(layout.failed).as_posix()))
        for p in failed_files(layout.failed)
    ]
    moved, problems = [], []
    for given, rel in chosen:
        if rel is None or not os.path.lexists(layout.failed / rel):
            problems.append(f"{given}: not a file in {layout.failed}")
            continue
        source = layout.failed / rel
        target = next(layout.inbox / candidate for candidate in renamed(rel)
                      if not os.path.lexists(layout.inbox / candidate))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(source, target)
        Path(f"{source}{ERROR_SUFFIX}").unlink(missing_ok=True)
        moved.append(f"{rel} -> {target}")
    return moved, problems


def retry_target(failed: Path, given: str) -> PurePosixPath | None:
    """The path inside failed/ that an argument names, or None when it is outside."""
    path = Path(given.removesuffix(ERROR_SUFFIX))
    for candidate in (path if path.is_absolute() else Path.cwd() / path, failed / path):
        try:
            return PurePosixPath(candidate.resolve().relative_to(failed.resolve()).as_posix())
        except ValueError:
            continue
    return None
