"""The Huey task: the one place that wires a claimed file through scan, engine and sinks.

A job in a worker, in order: mark it running in the journal (a second copy of the
task finds it taken and stops); scan the file before anything reads it; resolve the
recipe from its folders and render it; deliver the outputs and the sidecar; record
the delivery; move the original to archive/ (or delete it); end the job. An
infected file goes to quarantine/, a bad one to failed/ with its reason, and a job
whose scanner or destination is unavailable waits in the journal to be retried.
A retry after a crash repeats only what was not recorded as done.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from huey.api import Huey

from hotfolder import engine
from hotfolder.cache import ResultCache, open_cache, render_cached
from hotfolder.config import Config, Layout
from hotfolder.errors import HotfolderError, InputError, RecipeError, Unavailable
from hotfolder.intake import work_path
from hotfolder.journal import Job, Journal
from hotfolder.metrics import Metrics
from hotfolder.recipes import RecipeBook
from hotfolder.scanner import Scanner, Untrusted, Verdict, make_scanner
from hotfolder.sinks import Sink
from hotfolder.sinks.local import to_archive, to_failed, to_quarantine
from hotfolder.sinks.s3 import make_sink

log = logging.getLogger("hotfolder.tasks")

TASK_NAME = "hotfolder.process"
# A job waiting for its scanner or destination is retried after 5 s, 10 s, 20 s ... 5 min.
FIRST_RETRY_SECONDS = 5.0
LAST_RETRY_SECONDS = 300.0
NOT_SCANNED = Verdict(clean=True, signature=None, scanner="none (scanner off)")
SKIPPED = Verdict(clean=True, signature=None, scanner="skipped (unavailable, allowed)")


def retry_delay(waits: int) -> float:
    """Seconds before the next try of a job that has waited `waits` times."""
    return float(min(FIRST_RETRY_SECONDS * 2 ** min(waits, 16), LAST_RETRY_SECONDS))


class Wait(Exception):
    """The job cannot go on now because `reason` (scanner, outbox, s3) is unavailable."""

    def __init__(self, reason: str, error: Unavailable) -> None:
        super().__init__(error.message)
        self.reason = reason
        self.error = error


@dataclass
class Context:
    """What a process needs to run jobs of one root; built once per process."""

    cfg: Config
    journal: Journal
    scanner: Scanner | None
    sink: Sink
    metrics: Metrics | None = None
    cache: ResultCache | None = None
    book: RecipeBook = field(init=False)

    def __post_init__(self) -> None:
        self.book = RecipeBook(self.layout.recipes, self.cfg.default_recipe,
                               inline=self.cfg.recipes.inline_allowed)

    @property
    def layout(self) -> Layout:
        return self.cfg.layout

    def work_file(self, job: Job) -> Path:
        """Where a claimed job's file waits."""
        return work_path(self.layout.work, job.id, job.rel)


def make_context(cfg: Config, journal: Journal, metrics: Metrics | None = None) -> Context:
    """The context of a root from its configuration: clamd scanner, outbox or S3, cache."""
    return Context(cfg, journal, make_scanner(cfg.scanner, cfg.limits.max_file_bytes),
                   make_sink(cfg.output, cfg.layout.outbox), metrics,
                   open_cache(cfg.cache, cfg.layout.state))


def register(huey: Huey, context: Callable[[], Context]) -> Callable[[str], Any]:
    """Declare the job task on `huey`; returns a function that queues a job by id."""

    @huey.task(name=TASK_NAME)  # type: ignore[untyped-decorator]
    def process(job_id: str) -> None:
        run_job(context(), job_id)

    def submit(job_id: str) -> Any:
        return huey.enqueue(process.s(job_id))

    return submit


@dataclass
class Tally:
    """What a job's run measured, for the metrics."""

    recipe: str = "unknown"
    timings: dict[str, float] = field(default_factory=dict)
    bytes_in: int = 0
    bytes_out: int = 0

    def record(self, metrics: Metrics | None, outcome: str) -> None:
        """Count the job as ended with `outcome`."""
        if metrics is not None:
            metrics.record_job(self.recipe, outcome, timings=self.timings,
                               bytes_in=self.bytes_in, bytes_out=self.bytes_out)


def run_job(ctx: Context, job_id: str) -> None:
    """Take the job if it is still to do, and carry it as far as it can go now."""
    job = ctx.journal.start(job_id, os.getpid())
    if job is None:
        return
    work_file = ctx.work_file(job)
    if not os.path.lexists(work_file):
        state = "done" if job.outputs is not None else "failed"
        ctx.journal.finish(job.id, state, "the file had already left the work folder")
        log.warning("job %s: %s had already left the work folder", job.id, job.rel)
        return
    tally = Tally()
    try:
        outcome, summary = carry(ctx, job, work_file, tally)
    except Wait as wait:
        delay = retry_delay(job.waits)
        ctx.journal.wait(job.id, wait.reason, delay)
        log.warning("job %s: waiting %.0f s, %s", job.id, delay, wait.error.message)
        return
    except (InputError, RecipeError) as exc:
        fail(ctx, job, exc)
        tally.record(ctx.metrics, "failed")
        return
    except Unavailable as exc:  # a move to failed/, quarantine/ or archive/ that must wait
        ctx.journal.wait(job.id, "disk", retry_delay(job.waits))
        log.warning("job %s: waiting, %s", job.id, exc.message)
        return
    tally.record(ctx.metrics, outcome)
    log.info("job %s: %s", job.id, summary)


def fail(ctx: Context, job: Job, error: HotfolderError) -> None:
    """Move the job's original to failed/ with the error and end the job (any process)."""
    rel = PurePosixPath(job.rel)
    if not error.message.startswith(job.rel):
        error = type(error)(f"{job.rel}: {error.message}", detail=error.detail, stage=error.stage)
    work_file = ctx.work_file(job)
    if os.path.lexists(work_file):
        to_failed(work_file, ctx.layout.failed, rel, error)
    ctx.journal.finish(job.id, "failed", error.message)
    log.warning("job %s: failed, %s", job.id, error.message)


def carry(ctx: Context, job: Job, work_file: Path, tally: Tally) -> tuple[str, str]:
    """Scan, render, deliver and archive one job; returns its outcome and a summary."""
    rel = PurePosixPath(job.rel)
    outputs = job.outputs
    if outputs is None:
        started = time.perf_counter()
        verdict = scan(ctx, job, work_file)
        tally.timings["scan"] = time.perf_counter() - started
        data = work_file.read_bytes()
        tally.bytes_in = len(data)
        if not verdict.clean:
            to_quarantine(work_file, ctx.layout.quarantine, rel, verdict,
                          hashlib.sha256(data).hexdigest(), ctx.layout.inbox / rel)
            ctx.journal.finish(job.id, "quarantined", f"{verdict.signature} ({verdict.scanner})")
            return "quarantined", f"{job.rel} quarantined, the scanner found {verdict.signature}"
        if job.kind is None and job.reason:  # refused at intake, failed once known clean
            raise InputError(job.reason, stage="intake")
        plan = ctx.book.resolve(ctx.layout.inbox, ctx.layout.inbox / rel)
        tally.recipe = plan.metric_name
        rendered = render_cached(ctx.cache, data, rel.name, plan, origin=job.rel,
                                 limits=ctx.cfg.limits)
        tally.timings.update(rendered.sidecar.get("timings", {}))
        started = time.perf_counter()
        outputs = deliver(ctx, job, rendered, sidecar=plan.sidecar, verdict=verdict,
                          scanned=tally.timings["scan"])
        tally.timings["deliver"] = time.perf_counter() - started
        tally.bytes_out = sum(len(o.data) for o in rendered.outputs)
        ctx.journal.delivered(job.id, outputs)
    archive = ctx.layout.archive if ctx.cfg.output.archive else None
    to_archive(work_file, archive, rel)
    ctx.journal.finish(job.id, "done")
    return "done", f"{job.rel} done -> {', '.join(outputs) or 'nothing (name taken, skipped)'}"


def scan(ctx: Context, job: Job, work_file: Path) -> Verdict:
    """The scanner's verdict, applying `on_unavailable` when it cannot give one."""
    if ctx.scanner is None:
        return NOT_SCANNED
    try:
        return ctx.scanner.scan(work_file)
    except Unavailable as exc:
        policy = ctx.cfg.scanner.on_unavailable
        if policy == "allow" and not isinstance(exc, Untrusted):  # it would pass unread files
            log.warning("job %s: processed unscanned (scanner.on_unavailable: allow), %s",
                        job.id, exc.message)
            if ctx.metrics is not None:
                ctx.metrics.unscanned.inc()
            return SKIPPED
        if policy == "reject":
            raise InputError(
                f"the virus scanner was unavailable and scanner.on_unavailable is reject:"
                f" {exc.message}", detail=exc.detail, stage="scan",
            ) from None
        raise Wait("scanner", exc) from None


def deliver(ctx: Context, job: Job, rendered: engine.Rendered, *, sidecar: bool,
            verdict: Verdict, scanned: float) -> list[str]:
    """Store the outputs (and the sidecar beside the main one); returns their locations."""
    folder = PurePosixPath(job.rel).parent
    metadata = {"job": job.id, "source": job.rel, "sha256": rendered.sidecar["input"]["sha256"],
                "recipe": str(rendered.sidecar.get("recipe", ""))}
    started = time.perf_counter()
    locations: list[str] = []
    try:
        for output in rendered.outputs:
            where = ctx.sink.deliver(folder / output.name, output.data,
                                     media_type=output.media_type, metadata=metadata,
                                     on_conflict=ctx.cfg.output.on_conflict)
            if where is not None:
                locations.append(where)
        if sidecar and locations:
            record = sidecar_record(rendered.sidecar, verdict, scanned,
                                    time.perf_counter() - started)
            name = engine.sidecar_name(PurePosixPath(locations[0]).name)
            where = ctx.sink.deliver(folder / name, record, media_type="application/json",
                                     metadata=metadata, on_conflict="overwrite")
            locations.append(str(where))
    except Unavailable as exc:
        raise Wait(ctx.sink.name, exc) from None
    return locations


def sidecar_record(sidecar: dict[str, Any], verdict: Verdict, scanned: float,
                   delivered: float) -> bytes:
    """The sidecar JSON: the engine's record plus the scan verdict and service timings."""
    record = {
        **sidecar,
        "scan": {"clean": verdict.clean, "signature": verdict.signature,
                 "scanner": verdict.scanner},
        "timings": {"scan": round(scanned, 4), **sidecar.get("timings", {}),
                    "deliver": round(delivered, 4)},
    }
    return (json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n").encode()
