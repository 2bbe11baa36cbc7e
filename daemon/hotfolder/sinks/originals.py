"""Where a job's original goes when it leaves the work folder: failed/, quarantine/, archive/."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from hotfolder.config import Config
from hotfolder.errors import HotfolderError
from hotfolder.sinks.local import to_archive, to_failed, to_quarantine

if TYPE_CHECKING:
    from hotfolder.scanner import Verdict


@dataclass(frozen=True)
class Originals:
    """The three local folders for originals; `archive` None deletes them after success."""

    failed: Path
    quarantine: Path
    archive: Path | None

    @classmethod
    def of(cls, cfg: Config) -> Originals:
        """The folders of a root, archiving as `output.archive` says."""
        layout = cfg.layout
        return cls(layout.failed, layout.quarantine, layout.archive if cfg.output.archive else None)

    def to_failed(self, work_file: Path, rel: PurePosixPath, error: HotfolderError) -> Path:
        """Move a problem job's original to failed/ with NAME.error.json."""
        return to_failed(work_file, self.failed, rel, error)

    def to_quarantine(self, work_file: Path, rel: PurePosixPath, verdict: Verdict, sha256: str,
                      original: Path) -> Path:
        """Move an infected original to quarantine/ with NAME.scan.json."""
        return to_quarantine(work_file, self.quarantine, rel, verdict, sha256, original)

    def to_archive(self, work_file: Path, rel: PurePosixPath, sha256: str | None = None, *,
                   remove: bool = True) -> Path | None:
        """Move a processed original to archive/ (`sha256`: its digest when known), or delete
        it when archiving is off (without `remove`, its work-folder name is left)."""
        return to_archive(work_file, self.archive, rel, sha256, remove=remove)
