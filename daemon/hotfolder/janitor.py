"""The janitor: removes what no job owns, once a minute and at start-up.

Temporary files of interrupted writes older than the job time limit (in the work folder
too, where a claim makes its private copy); a file left in the work folder after its
job ended: the original of a done job, whose removal from the work folder a power cut
undid (it is archived again, which finds it already there, or deleted when archiving is
off), or else one that goes to failed/ with that reason; archived originals older than
`output.archive_days`; journal rows of jobs that ended more than JOURNAL_KEEP_DAYS ago.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path, PurePosixPath

from hotfolder.cache import cache_folder
from hotfolder.config import Config
from hotfolder.errors import HotfolderError, InputError
from hotfolder.files import TEMP_GLOB
from hotfolder.journal import ENDED, Journal
from hotfolder.names import shown
from hotfolder.sinks.originals import Originals
from hotfolder.workfolder import WorkFolder

log = logging.getLogger("hotfolder.janitor")

JOURNAL_KEEP_DAYS = 30
DAY_SECONDS = 86400


class Janitor:
    """Cleans one root's folders and journal; `sweep` is given the time `now`."""

    def __init__(self, cfg: Config, journal: Journal, originals: Originals) -> None:
        self.layout = cfg.layout
        self.temp_seconds = cfg.limits.job_timeout_seconds
        self.archive_days = cfg.output.archive_days
        self.journal = journal
        self.originals = originals

    def sweep(self, now: float) -> None:
        """One round: temporary files, work-folder leftovers, old archives, old journal rows."""
        self.remove_temporary(before=now - self.temp_seconds)
        self.clear_leftovers()
        if self.archive_days is not None:
            removed = remove_older(self.layout.archive, now - self.archive_days * DAY_SECONDS)
            if removed:
                log.info("removed %d archived original(s) older than %g days", removed,
                         self.archive_days)
        self.journal.forget_ended(now - JOURNAL_KEEP_DAYS * DAY_SECONDS)

    def remove_temporary(self, before: float, *, at_start: bool = False) -> None:
        """Remove temporary files of interrupted writes last changed at or before `before`;
        `at_start` also in the result cache, whose many folders are not walked every minute
        (an output of its cut short by a killed worker waits for the next start)."""
        layout = self.layout
        # the work folder: a private copy cut short at a claim
        folders = [layout.outbox, layout.failed, layout.quarantine, layout.archive, layout.work]
        if at_start:
            folders.append(cache_folder(layout.state))
        for folder in folders:
            for temp in folder.rglob(TEMP_GLOB):
                try:
                    if temp.lstat().st_mtime <= before:
                        temp.unlink()
                        log.info("removed the temporary file %s", temp)
                except FileNotFoundError:
                    continue

    def clear_leftovers(self) -> None:
        """A file left in the work folder after its job ended: a done job's original is
        archived (or deleted) again, any other goes to failed/ with that reason."""
        work = WorkFolder(self.layout.work)
        for job_id in work.claimed():
            job = self.journal.get(job_id)
            if job is None or job.state not in ENDED:
                continue
            left = f"{shown(job.rel)}: left in the work folder after its job ended ({job.state})"
            try:
                if job.state == "done":
                    self.originals.to_archive(work.file(job_id), PurePosixPath(job.rel))
                    where = "deleted" if self.originals.archive is None else "archived"
                else:
                    self.originals.to_failed(work.file(job_id), PurePosixPath(job.rel),
                                             InputError(left, stage="cleanup"))
                    where = "moved to failed/"
            except FileNotFoundError:  # its job moved it out after the folder was listed
                continue
            except (HotfolderError, OSError) as exc:  # tried again at the next sweep
                log.warning("job %s: %s; it cannot be moved now: %s", job.id, left, exc)
                continue
            work.release(job_id)
            log.warning("job %s: %s; %s", job.id, left, where)


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
