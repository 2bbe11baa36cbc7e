"""The Huey task: the one place that wires a claimed file through scan, engine and sinks.

A job in a worker, in order: mark it running in the journal (a second copy of the task
finds it taken and stops); read the claimed file once and scan those bytes, which are
then the ones hashed, decoded and archived (the worker's scan-ahead thread, which scans
the next waiting jobs while this one runs, has often made that verdict already: it
counts only for the very bytes read, see hotfolder.scanahead), and while clamd scans
them, resolve the recipe from its folders and look for its result in the cache; render
it once the verdict is clean; deliver the outputs and the sidecar; record the delivery;
move the original to archive/ (or delete it); end the job. An infected file goes to
quarantine/, a bad one to failed/ with its reason (an error no stage foresaw too, named
with its stage), and a job whose scanner or destination is unavailable waits in the
journal to be retried. A result that waits for its destination is kept in the work
folder with its scan verdict, and the next try delivers it: the recipe runs once per
job, however long the outbox or S3 is away. A retry after a crash repeats only what was
not recorded as done.

Jobs of small files (under SETTLE_BYTES) take their last steps together: the folders in
which their outputs and archived originals got their names are synced once for several
jobs, then each job is recorded as delivered and done and its name leaves the work
folder. They settle after SETTLE_MOST jobs, before a job of a bigger file, SETTLE_SECONDS
after the first of them was done at the latest, and when the worker stops; a worker
killed before leaves them running, and their next run finds their outputs and archive
copies in place.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from hotfolder import engine, imaging
from hotfolder.cache import Hit, look_up, render_cached
from hotfolder.errors import HotfolderError, InputError, RecipeError, Unavailable
from hotfolder.files import FolderSyncs, folder_syncs_later
from hotfolder.intake import claimed_bytes
from hotfolder.journal import Job
from hotfolder.metrics import UNKNOWN_RECIPE, Metrics
from hotfolder.names import shown
from hotfolder.parts import Parts
from hotfolder.queue import enqueue_all
from hotfolder.recipes import Plan
from hotfolder.scanahead import AHEAD_MIN_BYTES, ScanAhead, verdict_left
from hotfolder.scanner import Untrusted, Verdict

if TYPE_CHECKING:
    from huey.api import Huey

log = logging.getLogger("hotfolder.tasks")

TASK_NAME = "hotfolder.process"
# A job waiting for its scanner or destination is retried after 5 s, 10 s, 20 s ... 5 min.
FIRST_RETRY_SECONDS = 5.0
LAST_RETRY_SECONDS = 300.0
NOT_SCANNED = Verdict(clean=True, signature=None, scanner="none (scanner off)")
SKIPPED = Verdict(clean=True, signature=None, scanner="skipped (unavailable, allowed)")
# How many of the next waiting jobs a worker looks at to find one to scan ahead.
AHEAD_LOOK = 4
# Jobs of files under this size settle together (the disk's waits weigh most on them), at
# most this many at once.
SETTLE_BYTES = AHEAD_MIN_BYTES
SETTLE_MOST = 32
SETTLE_SECONDS = 0.1  # the longest a job waits to settle


def retry_delay(waits: int) -> float:
    """Seconds before the next try of a job that has waited `waits` times."""
    return float(min(FIRST_RETRY_SECONDS * 2 ** min(waits, 16), LAST_RETRY_SECONDS))


class MustWait(Exception):
    """The job cannot go on now because `reason` (scanner, outbox, s3) is unavailable."""

    def __init__(self, reason: str, error: Unavailable) -> None:
        super().__init__(error.message)
        self.reason = reason
        self.error = error


def register(parts: Parts) -> Callable[[Sequence[str]], None]:
    """Declare the job task on the parts' queue; returns a function that queues jobs by id.

    With a scanner, each job first has its worker scan the next waiting jobs ahead.
    """
    ahead = None if parts.scanner is None else ScanAhead(
        parts.scanner, parts.work, parts.cfg.limits, lambda: waiting_jobs(parts.huey))
    settling = Settlement(parts)
    parts.huey.on_shutdown()(settling.settle)

    @parts.huey.task(name=TASK_NAME)  # type: ignore[untyped-decorator]
    def process(job_id: str) -> None:
        if ahead is not None:
            ahead.look()
        try:
            run_job(parts, job_id, settling)
        finally:
            if ahead is not None:
                ahead.rest()
        if len(settling.jobs) >= SETTLE_MOST:
            settling.settle()

    def submit(job_ids: Sequence[str]) -> None:
        enqueue_all(parts.huey, [process.s(job_id) for job_id in job_ids])

    return submit


def waiting_jobs(huey: Huey) -> list[str]:
    """The ids of the next jobs in the queue, first first."""
    return [str(task.args[0]) for task in huey.pending(AHEAD_LOOK) if task.args]


@dataclass
class JobMeasurements:
    """What a job's run measured, for the metrics."""

    recipe: str = UNKNOWN_RECIPE
    stage: str = "scan"  # the stage running now, named if it ends unexpectedly
    timings: dict[str, float] = field(default_factory=dict)
    bytes_in: int = 0
    bytes_out: int = 0

    def record(self, metrics: Metrics, outcome: str) -> None:
        """Count the job as ended with `outcome`."""
        metrics.record_job(self.recipe, outcome, timings=self.timings,
                           bytes_in=self.bytes_in, bytes_out=self.bytes_out)


@dataclass(frozen=True)
class Settling:
    """A job done but for its last steps, which it takes with others (`Settlement`)."""

    job: Job
    outputs: list[str] | None  # to record as delivered (None: recorded at an earlier try)
    work_file: Path
    measured: JobMeasurements
    summary: str
    folders: FolderSyncs  # where its names were made


class Settlement:
    """The last steps of several small jobs at once: the folders their names were made in
    synced once, then each job recorded as delivered and done, its work-folder name removed.

    A thread of the worker's own settles them SETTLE_SECONDS after the first joined, unless
    the worker did before (SETTLE_MOST of them, or before a longer job)."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.jobs: list[Settling] = []
        self._changed = threading.Condition()
        self._settling = threading.Lock()
        self._pid: int | None = None
        self._since = 0.0  # when the first of `jobs` joined

    def add(self, settling: Settling) -> None:
        """A job done but for its last steps."""
        with self._changed:
            if self._pid != os.getpid():  # the first in this (forked) worker
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="settle", daemon=True).start()
            if not self.jobs:
                self._since = time.monotonic()
                self._changed.notify()
            self.jobs.append(settling)

    def _run(self) -> None:
        while True:
            with self._changed:
                while True:
                    if not self.jobs:
                        self._changed.wait()
                        continue
                    left = self._since + SETTLE_SECONDS - time.monotonic()
                    if left <= 0:
                        break
                    self._changed.wait(left)
            try:
                self.settle()
            except Exception:  # the journal failing, say: logged, and this thread goes on
                log.exception("small jobs could not be ended together")

    def settle(self) -> None:
        """Settle the jobs waiting to; while their folders cannot be synced, they wait for the
        disk (their next run finds their outputs and archive copies in place)."""
        with self._settling:
            with self._changed:
                jobs, self.jobs = self.jobs, []
            if not jobs:
                return
            folders = FolderSyncs()
            for settling in jobs:
                folders.absorb(settling.folders)
            try:
                folders.sync()
            except OSError as exc:
                for settling in jobs:
                    wait_job(self.parts, settling.job, "disk",
                             f"its output and archived original cannot be made durable ({exc})")
                return
            try:
                ended = self._end_together(jobs)
            except Exception:  # the journal failing, say: each job then ends on its own
                log.exception("%d small jobs could not be recorded done together, so each"
                              " ends on its own", len(jobs))
                ended = [settling for settling in jobs if self._end_alone(settling)]
            for settling in ended:
                settling.measured.record(self.parts.metrics, "done")
                log.info("job %s: %s", settling.job.id, settling.summary)

    def _end_together(self, jobs: list[Settling]) -> list[Settling]:
        """Record the jobs delivered, remove their work-folder names, and record done those
        whose name is gone: two journal transactions for them all. The jobs ended."""
        self.parts.journal.delivered_all({settling.job.id: settling.outputs for settling in jobs
                                          if settling.outputs is not None})
        left = [settling for settling in jobs if self._leave_work(settling)]
        self.parts.journal.finish_all([settling.job.id for settling in left], "done")
        return left

    def _leave_work(self, settling: Settling) -> bool:
        """Remove the job's work-folder name and what lies beside it; False when they cannot
        be (the job waits)."""
        try:
            settling.work_file.unlink(missing_ok=True)
            self.parts.work.release(settling.job.id)
        except OSError as exc:
            wait_job(self.parts, settling.job, "disk", f"it cannot leave the work folder ({exc})")
            return False
        return True

    def _end_alone(self, settling: Settling) -> bool:
        """`_end_together` for one job; False when it waits or failed."""
        try:
            return bool(self._end_together([settling]))
        except Exception as exc:  # as in run_job: the job ends in failed/, the others go on
            log.exception("job %s: unexpected error in its archive stage", settling.job.id)
            fail_job(self.parts, settling.job, unexpected(exc, "archive"), settling.measured)
            return False


def run_job(parts: Parts, job_id: str, settling: Settlement | None = None) -> None:
    """Take the job if it is still to do, and take it through the stages as far as it can go.

    However a stage ends, the job leaves `running`: done, quarantined, failed, or waiting;
    a small one done may first wait in `settling` for its last steps.
    """
    job = parts.journal.start(job_id, os.getpid())
    if job is None:
        return
    if settling is not None and (job.size is None or job.size >= SETTLE_BYTES):
        settling.settle()  # none waits for the end of a longer job
        settling = None
    work_file = parts.work.file(job.id)
    if not os.path.lexists(work_file):
        state = "done" if job.outputs is not None else "failed"
        parts.journal.finish(job.id, state, "the file had already left the work folder")
        log.warning("job %s: %s had already left the work folder", job.id, job.rel)
        return
    measured = JobMeasurements()
    try:
        outcome, summary = run_stages(parts, job, work_file, measured, settling)
    except MustWait as wait:
        wait_job(parts, job, wait.reason, wait.error.message)
        return
    except (InputError, RecipeError) as exc:
        fail_job(parts, job, exc, measured)
        return
    except Unavailable as exc:  # a move to quarantine/ or archive/ that must wait
        wait_job(parts, job, "disk", exc.message)
        return
    except Exception as exc:  # a library's surprise still ends the job, in failed/
        log.exception("job %s: unexpected error in its %s stage", job.id, measured.stage)
        fail_job(parts, job, unexpected(exc, measured.stage), measured)
        return
    if outcome != "settling":
        measured.record(parts.metrics, outcome)
        log.info("job %s: %s", job.id, summary)


def unexpected(exc: Exception, stage: str) -> InputError:
    """An error no stage foresaw, in words: which stage, what kind of error, and its text."""
    text = str(exc) or "no details"
    return InputError(f"processing stopped on an unexpected error in the {stage} stage"
                      f" ({type(exc).__name__}: {text[:200]})", detail=repr(exc), stage=stage)


def wait_job(parts: Parts, job: Job, reason: str, why: str) -> None:
    """Park the job until `reason` (scanner, outbox, s3, disk) is likely back."""
    delay = retry_delay(job.waits)
    parts.journal.wait(job.id, reason, delay)
    log.warning("job %s: waiting %.0f s, %s", job.id, delay, why)


def fail_job(parts: Parts, job: Job, error: HotfolderError,
             measured: JobMeasurements | None = None) -> None:
    """Move the job's original to failed/ with the error, end the job and count it.

    While failed/ cannot take the file (a full disk, a file where its folder should be),
    the job waits for the disk instead, and the log names what is in the way.
    """
    message = shown(error.message)
    if not message.startswith(shown(job.rel)):
        message = f"{shown(job.rel)}: {message}"
    error = type(error)(message, detail=error.detail, stage=error.stage)
    work_file = parts.work.file(job.id)
    try:
        if os.path.lexists(work_file):
            parts.originals.to_failed(work_file, PurePosixPath(job.rel), error)
    except (HotfolderError, OSError) as exc:
        wait_job(parts, job, "disk", f"it cannot be moved to failed/ ({exc}); it failed with:"
                                     f" {error.message}")
        return
    parts.work.release(job.id)
    parts.journal.finish(job.id, "failed", error.message)
    log.warning("job %s: failed, %s", job.id, error.message)
    (measured or JobMeasurements()).record(parts.metrics, "failed")


def fail_running(parts: Parts, job_id: str, reason: str) -> None:
    """Fail a job the supervisor gave up on (its worker crashed or overran), if still running."""
    job = parts.journal.get(job_id)
    if job is not None and job.state == "running":
        fail_job(parts, job, InputError(reason, stage="process"))


def run_stages(parts: Parts, job: Job, work_file: Path, measured: JobMeasurements,
               settling: Settlement | None = None) -> tuple[str, str]:
    """Scan, render, deliver and archive one job; returns its outcome and a summary. With
    `settling`, the job's folders are synced and its end recorded later, with others (the
    outcome is then `settling`)."""
    later = None if settling is None else FolderSyncs()  # where its folder syncs wait
    try:
        outcome, summary, new_outputs = take_stages(parts, job, work_file, measured, later)
    except BaseException:
        if later is not None:
            later.close()
        raise
    if outcome != "archived":
        if later is not None:
            later.close()
        return outcome, summary
    if settling is None or later is None:  # its outputs recorded, its name gone already
        parts.work.release(job.id)
        parts.journal.finish(job.id, "done")
        return "done", summary
    settling.add(Settling(job, new_outputs, work_file, measured, summary, later))
    return "settling", summary


def take_stages(parts: Parts, job: Job, work_file: Path, measured: JobMeasurements,
                later: FolderSyncs | None) -> tuple[str, str, list[str] | None]:
    """Scan, render, deliver and archive one job: its outcome (quarantined or archived), a
    summary and the outputs delivered by this run. With `later`, its folders are noted there,
    not synced, and neither its outputs nor its original's removal are recorded or done."""
    rel = PurePosixPath(job.rel)
    outputs = job.outputs
    new_outputs = None  # delivered by this run
    sha256 = None  # known once rendered: the original is then not read again to archive it
    if outputs is None:
        kept = parts.work.kept(job.id)
        if kept is not None:
            log.info("job %s: delivering the result kept from its last try", job.id)
            measured.bytes_in = os.path.getsize(work_file)
            measured.timings["scan"] = kept[1]["scanned"]
        result = kept or render_job(parts, job, work_file, measured)
        if isinstance(result, Verdict):
            return ("quarantined", f"{job.rel} quarantined, the scanner found"
                                   f" {result.signature}", None)
        rendered, notes = result
        sha256 = rendered.sidecar["input"]["sha256"]
        measured.recipe = notes["recipe"]
        started = time.perf_counter()
        measured.stage = "deliver"
        try:
            with folder_syncs_later(later):
                outputs = new_outputs = deliver(
                    parts, job, rendered, sidecar=notes["sidecar"],
                    verdict=Verdict(**notes["verdict"]), scanned=notes["scanned"])
        except MustWait:
            if kept is None:
                keep_result(parts, job, rendered, notes)
            raise
        measured.timings["deliver"] = time.perf_counter() - started
        measured.bytes_out = sum(len(o.data) for o in rendered.outputs)
        if later is None:
            parts.journal.delivered(job.id, outputs)
    measured.stage = "archive"
    with folder_syncs_later(later):
        parts.originals.to_archive(work_file, rel, sha256, remove=later is None)
    summary = f"{job.rel} done -> {', '.join(outputs) or 'nothing (name taken, skipped)'}"
    return "archived", summary, new_outputs


def render_job(parts: Parts, job: Job, work_file: Path,
               measured: JobMeasurements) -> tuple[engine.Rendered, dict[str, Any]] | Verdict:
    """Scan and render the job's file: the result and its notes, or the verdict that
    quarantined it."""
    rel = PurePosixPath(job.rel)
    # Read once: these bytes, and no later read of the file, are scanned, hashed,
    # decoded and archived (the file is the service's own, see intake.claimed_bytes).
    data = claimed_bytes(work_file, parts.cfg.limits)
    measured.bytes_in = len(data)
    sha256 = hashlib.sha256(data).hexdigest()  # once: the scan, the cache, the sidecar, the move
    verdict, plan, found = scan_and_plan(parts, job, data, sha256, measured)
    if not verdict.clean:
        parts.originals.to_quarantine(work_file, rel, verdict, sha256, parts.layout.inbox / rel)
        parts.work.release(job.id)
        parts.journal.finish(job.id, "quarantined", f"{verdict.signature} ({verdict.scanner})")
        return verdict
    if job.kind is None:  # refused at intake (or adopted): judged again, now known clean
        imaging.sniff(data, parts.cfg.limits.formats)
    measured.stage = "process"
    if isinstance(plan, Exception):
        raise plan
    measured.recipe = plan.metric_name
    rendered = render_cached(parts.cache, data, rel.name, plan, origin=job.rel,
                             limits=parts.cfg.limits, sha256=sha256, found=found)
    parts.metrics.record_stages(rendered.sidecar.get("timings", {}))  # each time they run
    notes = {"recipe": plan.metric_name, "sidecar": plan.sidecar, "verdict": asdict(verdict),
             "scanned": measured.timings["scan"]}
    return rendered, notes


def scan_and_plan(parts: Parts, job: Job, data: bytes, sha256: str, measured: JobMeasurements
                  ) -> tuple[Verdict, Plan | Exception, tuple[str, Hit | None] | None]:
    """The verdict on the job's bytes; its plan, or the error that finding it met; and what
    the result cache holds for them. The last two are found while clamd scans: they come from
    the folders and the bytes' SHA-256, nothing is decoded. That error counts only once the
    file is known clean (an infected file is quarantined whatever its folder). The time the
    scan took the job goes to `measured`."""
    started = time.perf_counter()
    found = None
    with scanning(parts, job, data, sha256) as verdict_of:
        meanwhile = time.perf_counter()
        try:
            plan: Plan | Exception = parts.book.resolve(parts.layout.inbox,
                                                        parts.layout.inbox / job.rel)
        except Exception as exc:  # noqa: BLE001  (raised once the file is known clean)
            plan = exc
        if parts.cache is not None and isinstance(plan, Plan):
            found = look_up(parts.cache, sha256, plan, job.rel)
        meanwhile = time.perf_counter() - meanwhile
        verdict = verdict_of()
    measured.timings["scan"] = time.perf_counter() - started - meanwhile
    return verdict, plan, found


def keep_result(parts: Parts, job: Job, rendered: engine.Rendered, notes: dict[str, Any]) -> None:
    """Keep a result whose destination is away, so that the next try only delivers it."""
    try:
        parts.work.keep(job.id, rendered, notes)
    except OSError as exc:
        log.warning("job %s: its result cannot be kept for the next try, which renders it"
                    " again: %s", job.id, exc)


@contextmanager
def scanning(parts: Parts, job: Job, data: bytes, sha256: str) -> Iterator[Callable[[], Verdict]]:
    """The scan of the job's bytes (of SHA-256 `sha256`) begun; calling what this yields gives
    the verdict: the one scanned ahead for them, else the scanner's, applying
    `on_unavailable` when it has none."""
    if parts.scanner is None:
        yield lambda: NOT_SCANNED
        return
    ahead = verdict_left(parts.work, job.id, sha256)
    if ahead is not None:
        yield lambda: ahead
        return
    with parts.scanner.scanning(data, PurePosixPath(job.rel).name) as verdict:
        yield lambda: judged(parts, job, verdict)


def judged(parts: Parts, job: Job, verdict: Callable[[], Verdict]) -> Verdict:
    """The scanner's `verdict`, or what `on_unavailable` makes of its absence."""
    try:
        return verdict()
    except Unavailable as exc:
        policy = parts.cfg.scanner.on_unavailable
        if policy == "allow" and not isinstance(exc, Untrusted):  # it would pass unread files
            log.warning("job %s: processed unscanned (scanner.on_unavailable: allow), %s",
                        job.id, exc.message)
            parts.metrics.unscanned.inc()
            return SKIPPED
        if policy == "reject":
            raise InputError(
                f"the virus scanner was unavailable and scanner.on_unavailable is reject:"
                f" {exc.message}", detail=exc.detail, stage="scan",
            ) from None
        raise MustWait("scanner", exc) from None


def deliver(parts: Parts, job: Job, rendered: engine.Rendered, *, sidecar: bool,
            verdict: Verdict, scanned: float) -> list[str]:
    """Store the outputs (and the sidecar beside the main one); returns their locations."""
    folder = PurePosixPath(job.rel).parent
    metadata = {"job": job.id, "source": shown(job.rel),
                "sha256": rendered.sidecar["input"]["sha256"],
                "recipe": str(rendered.sidecar.get("recipe", ""))}
    started = time.perf_counter()
    locations: list[str] = []
    try:
        for output in rendered.outputs:
            where = parts.sink.deliver(folder / output.name, output.data,
                                       media_type=output.media_type, metadata=metadata,
                                       on_conflict=parts.cfg.output.on_conflict)
            if where is not None:
                locations.append(where)
        if sidecar and locations:
            record = sidecar_record(rendered.sidecar, verdict, scanned,
                                    time.perf_counter() - started)
            side = engine.sidecar_output(record, beside=PurePosixPath(locations[0]).name)
            where = parts.sink.deliver(folder / side.name, side.data, media_type=side.media_type,
                                       metadata=metadata, on_conflict="overwrite")
            locations.append(str(where))
    except Unavailable as exc:
        raise MustWait(parts.sink.name, exc) from None
    return locations


def sidecar_record(sidecar: dict[str, Any], verdict: Verdict, scanned: float,
                   delivered: float) -> dict[str, Any]:
    """The service's sidecar: the engine's record plus the scan verdict and service timings."""
    return {
        **sidecar,
        "scan": {"clean": verdict.clean, "signature": verdict.signature,
                 "scanner": verdict.scanner},
        "timings": {"scan": round(scanned, 4), **sidecar.get("timings", {}),
                    "deliver": round(delivered, 4)},
    }
