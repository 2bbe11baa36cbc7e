"""`hotfolder status` and `hotfolder retry`: the journal and failed/ as an operator sees them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from hotfolder.config import Config
from hotfolder.journal import is_shared
from hotfolder.names import shown
from hotfolder.parts import build_journal, journal_file
from hotfolder.sinks import renamed
from hotfolder.sinks.local import ERROR_SUFFIX
from hotfolder.watcher import REPORT_NAME, read_report


def status(cfg: Config) -> dict[str, Any]:
    """Queue depth, jobs by state and waiting reason, the latest failures, and unwatched folders."""
    watcher = read_report(cfg.layout.state / REPORT_NAME)
    if not is_shared(cfg.queue.url) and not journal_file(cfg.layout).exists():
        return {"queue_depth": 0, "jobs": {}, "waiting": {}, "recent_failures": [],
                "watcher": watcher}
    journal = build_journal(cfg)
    try:
        counts = journal.counts()
        return {
            "queue_depth": counts.get("queued", 0),
            "jobs": counts,
            "waiting": journal.waiting_counts(),
            "watcher": watcher,
            "recent_failures": [
                {"job": job.id, "file": shown(job.rel), "reason": job.reason,
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


def retry(cfg: Config, paths: Sequence[str]
          ) -> tuple[list[tuple[PurePosixPath, Path]], list[str]]:
    """Move failed files back into their inbox folder, removing their reports.

    `paths` are files in failed/ (absolute, or relative to failed/ or to the current
    folder); empty means all of them. Returns what was moved (its path inside failed/ and
    where it went in the inbox) and what could not be, in words.
    """
    layout = cfg.layout
    chosen = [(p, retry_target(layout.failed, p)) for p in paths] if paths else [
        (str(p), PurePosixPath(p.relative_to(layout.failed).as_posix()))
        for p in failed_files(layout.failed)
    ]
    moved: list[tuple[PurePosixPath, Path]] = []
    problems: list[str] = []
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
        moved.append((rel, target))
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
