"""Jobs into the queue: the files the watcher offers, and at start-up the unfinished ones."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

from hotfolder.errors import HotfolderError
from hotfolder.intake import Intake, Outcome
from hotfolder.journal import Claim, Job
from hotfolder.metrics import UNKNOWN_RECIPE, Metrics

log = logging.getLogger("hotfolder.reception")


class Reception:
    """Turns the files the watcher offers into queued jobs (or counted refusals), nothing more."""

    def __init__(self, intake: Intake, metrics: Metrics,
                 submit: Callable[[Sequence[str]], None]) -> None:
        self.intake = intake
        self.metrics = metrics
        self.submit = submit

    def on_files(self, paths: list[Path]) -> None:
        """Claim the files and queue their jobs; a file that cannot be claimed now stays put."""
        self._receive(paths, self.intake.claim_all(paths))

    def take(self, path: Path, rel: PurePosixPath | None = None) -> Job | None:
        """Claim a file (an upload's as if dropped at inbox/`rel`) and queue its job; the job."""
        try:
            job = self.intake.offer(path) if rel is None else self.intake.offer_as(path, rel)
        except (HotfolderError, OSError) as exc:
            self._receive([path], [exc])
            return None
        if job is not None:
            self._receive([path], [Claim(job.id, job.rel, job.kind, job.size, job.state)])
        return job

    def _receive(self, paths: Sequence[Path], outcomes: Sequence[Outcome]) -> None:
        """Count what was claimed or refused, queue what was claimed, log what stays put."""
        queued = []
        detected = 0
        for path, outcome in zip(paths, outcomes, strict=True):
            if isinstance(outcome, HotfolderError | OSError):
                log.error("cannot claim %s now, it stays in the inbox: %s", path, outcome)
            elif outcome is not None:
                detected += 1
                if outcome.state == "queued":
                    queued.append(outcome.id)
                else:
                    self.metrics.record_job(UNKNOWN_RECIPE, "failed", timings={})
        if detected:
            self.metrics.files_detected.inc(detected)
        if queued:
            self.submit(queued)

    def recover(self) -> int:
        """Queue again every job claimed but not finished; returns how many."""
        journal = self.intake.journal
        self.intake.adopt()  # work-folder entries the journal lacks
        for job in journal.in_state("running"):
            if not journal.alive(job):
                journal.requeue(job.id, forgive=True)
        queued = journal.in_state("queued")
        if queued:
            self.submit([job.id for job in queued])
        return len(queued)
