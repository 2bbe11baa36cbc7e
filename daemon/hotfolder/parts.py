"""The composition root: the parts of a service, each built once from its configuration.

`hotfolder run` and `hotfolder worker` build their parts here before forking the
workers, which inherit them: one journal, one scanner, one sink for results (the
outbox, S3 or both), the folders for originals (failed/, quarantine/, archive/), the
recipe book, the result cache, the metrics and the Huey queue. Each part comes from
the factory of its own module, and the configuration alone picks the implementation:
the S3 sink (and boto3) is imported only when `output.s3` is set, the Redis journal
only for a Redis queue. `hotfolder status` and `hotfolder check` build what they read
through the same functions, so they see what the service runs with; huey is loaded
only to build the queue.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from hotfolder.cache import ResultCache, open_cache
from hotfolder.config import Config, Layout
from hotfolder.errors import ConfigError
from hotfolder.journal import Journal, open_journal
from hotfolder.metrics import Metrics, clear_directory
from hotfolder.recipes import RecipeBook
from hotfolder.scanner import ClamdScanner, Scanner, make_scanner
from hotfolder.sinks import Sink, make_sink
from hotfolder.sinks.originals import Originals
from hotfolder.watcher import state_folder_problem
from hotfolder.workfolder import WorkFolder

if TYPE_CHECKING:
    from huey.api import Huey


@dataclass
class Parts:
    """What a service runs with: the workers run jobs with it, the service supervises it."""

    cfg: Config
    journal: Journal
    scanner: Scanner | None
    sink: Sink
    originals: Originals
    book: RecipeBook
    huey: Huey
    metrics: Metrics
    cache: ResultCache | None = None

    @cached_property
    def layout(self) -> Layout:
        """The root's folders (made absolute once: every job asks)."""
        return self.cfg.layout

    @cached_property
    def work(self) -> WorkFolder:
        """The work folder, where claimed files wait."""
        return WorkFolder(self.layout.work)


def prepare_root(cfg: Config) -> None:
    """Create the root's folders; ConfigError when they cannot serve (see folder_problems)."""
    layout = cfg.layout
    for folder in (layout.inbox, layout.outbox, layout.failed, layout.archive, layout.state):
        folder.mkdir(parents=True, exist_ok=True)
    for private in (layout.work, layout.quarantine):  # the service's alone
        private.mkdir(mode=0o700, parents=True, exist_ok=True)
    problems = folder_problems(layout)
    if problems:
        raise ConfigError("; ".join(problems))


def folder_problems(layout: Layout) -> list[str]:
    """Why the root's folders cannot serve: state/ on the network, work/ apart from inbox/."""
    problems = [state_folder_problem(layout.state), work_folder_problem(layout)]
    return [problem for problem in problems if problem is not None]


def work_folder_problem(layout: Layout) -> str | None:
    """Why files cannot be claimed: the work folder is on another filesystem than the inbox."""
    if device_of(layout.work) == device_of(layout.inbox):
        return None
    return (f"{layout.work}: the work folder is on another filesystem than the inbox"
            f" {layout.inbox}; a file is claimed by one rename, which needs both on one"
            " filesystem (set paths.work to a folder on the inbox's filesystem)")


def device_of(folder: Path) -> int:
    """The filesystem a folder is on, or would be on once made (that of its nearest parent)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return os.stat(folder).st_dev


def journal_file(layout: Layout) -> Path:
    """Where the journal of a root with a local queue lives."""
    return layout.state / "journal.db"


def build_journal(cfg: Config) -> Journal:
    """The root's journal: in Redis for a Redis queue, else in the state folder."""
    return open_journal(cfg.queue.url, journal_file(cfg.layout))


def build_scanner(cfg: Config) -> ClamdScanner | None:
    """The virus scanner for files up to limits.max_file_mb, or None when `clamd: off`."""
    return make_scanner(cfg.scanner, cfg.limits.max_file_bytes)


def build_book(cfg: Config) -> RecipeBook:
    """The recipe book that gives each inbox folder its plan."""
    return RecipeBook(cfg.layout.recipes, cfg.default_recipe, inline=cfg.recipes.inline_allowed)


def build_queue(cfg: Config) -> Huey:
    """The Huey queue of `queue.url`."""
    # Imported here: huey's storage loads the Redis client whenever it is installed, and
    # the commands that read the root (status, check, cache) need no queue.
    from hotfolder.queue import make_huey  # noqa: PLC0415

    return make_huey(cfg.queue.url, cfg.layout)


def assemble(cfg: Config, *, watching: bool, scanner: ClamdScanner | None = None) -> Parts:
    """Every part of the service for `cfg`; `watching`: this process counts metrics afresh;
    `scanner`: the one the caller made already for `cfg` (probing ahead, say)."""
    prepare_root(cfg)
    layout = cfg.layout
    metrics_dir = layout.state / "metrics"
    if watching:
        clear_directory(metrics_dir)
    return Parts(
        cfg=cfg,
        journal=build_journal(cfg),
        scanner=scanner or build_scanner(cfg),
        sink=make_sink(cfg.output, layout.outbox),
        originals=Originals.of(cfg),
        book=build_book(cfg),
        huey=build_queue(cfg),
        metrics=Metrics(directory=metrics_dir),
        cache=open_cache(cfg.cache, layout.state),
    )
