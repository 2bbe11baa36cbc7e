"""Jobs into the queue: each file the watcher offers, and at start-up the unfinished ones."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from hotfolder.errors import HotfolderError
from hotfolder.intake import Intake
from hotfolder.journal import Job
from hotfolder.metrics import UNKNOWN_RECIPE, Metrics

log = logging.getLogger("hotfolder.reception")


class Reception:
    """Turns a file the watcher offers into a queued job (or a counted refusal), nothing more."""

    def __init__(self, intake: Intake, metrics: Metrics, submit: Callable[[str], None]) -> None:
        self.intake = intake
        self.metrics = metrics
        self.submit = submit

    def on_file(self, path: Path) -> None:
        """Claim the file and queue its job; a file that cannot be claimed now stays put."""
        self.take(path)

    def take(self, path: Path, rel: PurePosixPath | None = None) -> Job | None:
        """Claim a file (an upload's as if dropped at inbox/`rel`) and queue its job; the job."""
        try:
            job = self.intake.offer(path) if rel is None else self.intake.offer_as(path, rel)
        except (HotfolderError, OSError) as exc:
            log.error("cannot claim %s now, it stays in the inbox: %s", path, exc)
            return None
        if job is None:
            return None
        self.metrics.files_detected.inc()
        if job.state == "queued":
            self.submit(job.id)
        else:
            self.metrics.record_job(UNKNOWN_RECIPE, "failed", timings={})
        return job

    def recover(self) -> int:
        """Queue again every job claimed but not finished; returns how many."""
        journal = self.intake.journal
        self.intake.adopt()  # work-folder entries the journal lacks
        for job in journal.in_state("running"):
            if not journal.alive(job):
                journal.requeue(job.id, forgive=True)
        queued = journal.in_state("queued")
        for job in queued:
            self.submit(job.id)
        return len(queued)
