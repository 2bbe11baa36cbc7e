"""What the console does with jobs, apart from HTTP: views, files, retry, process again, delete.

Everything here works through a `Backend`: the journal, the intake's claim (a file on
the inbox's filesystem taken as if dropped at an inbox path), the recipe book and the
layout. Files are reached below their folder without following any link, and no path
from a request is used as given: a folder must be one `upload_folders` lists, and a job
is found by its id in the journal.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from hotfolder import admin
from hotfolder.config import RECIPE_FILE, Config, Layout
from hotfolder.errors import RecipeError
from hotfolder.intake import open_below
from hotfolder.journal import ENDED, UNFINISHED, Job, Journal
from hotfolder.metrics import Metrics
from hotfolder.names import readable
from hotfolder.parts import Parts
from hotfolder.recipes import Plan, RecipeBook, inbox_folders, parse_chain
from hotfolder.sinks import renamed
from hotfolder.sinks.local import ERROR_SUFFIX, SCAN_SUFFIX, open_regular
from hotfolder.watcher import ignored
from hotfolder.workfolder import JOB_ID_CHARS

STATES = (*UNFINISHED, *ENDED)
UPLOAD_PREFIX = ".upload-"
REPORT_BYTES = 1024 * 1024
JOB_ID = re.compile(rf"[0-9a-f]{{{JOB_ID_CHARS}}}")
LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000
ENDED_WINDOW = 2000  # ended jobs of each state looked at by a list
CLAIM_WAIT_SECONDS = 5.0
CTIME_SLACK_SECONDS = 30.0  # an archived original moved this close to its job's end is its own

Claim = Callable[[Path, PurePosixPath], Job | None]
"""Take a file on the inbox's filesystem as if it had been dropped at inbox/rel."""


class Refused(Exception):
    """A request that cannot be done, with its HTTP status and the reason in plain words."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Backend:
    """The parts of the service the console works with."""

    cfg: Config
    journal: Journal
    book: RecipeBook
    claim: Claim
    metrics: Metrics

    @classmethod
    def of(cls, parts: Parts, claim: Claim) -> Backend:
        """The console's view of a service's parts."""
        return cls(parts.cfg, parts.journal, parts.book, claim, parts.metrics)

    @property
    def layout(self) -> Layout:
        return self.cfg.layout


def moment(text: str) -> float:
    """A time from a request: epoch seconds, or ISO 8601 as the API gives its times."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise Refused(400, f"{text!r} is not a time (epoch seconds or ISO 8601)") from None


def iso(when: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with milliseconds."""
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")


def summary(job: Job) -> dict[str, Any]:
    """The list fields of a job (SPEC 11); bytes of names that are not UTF-8 as `\\xff`."""
    rel = PurePosixPath(job.rel)
    return readable({"id": job.id, "name": rel.name,
                     "folder": "" if str(rel.parent) == "." else rel.parent.as_posix(),
                     "state": job.state, "reason": job.reason, "created": iso(job.created),
                     "started": iso(job.started), "updated": iso(job.updated)})


def find_job(backend: Backend, job_id: str) -> Job:
    """The job with this id; 404 otherwise."""
    job = backend.journal.get(job_id) if JOB_ID.fullmatch(job_id) else None
    if job is None:
        raise Refused(404, f"no job {job_id!r}")
    return job


# -- folders --------------------------------------------------------------------------------


def folder_view(backend: Backend, folder: Path) -> dict[str, Any] | None:
    """What /folders says of one inbox folder; None when its name is not a recipe."""
    layout = backend.layout
    try:
        plan = backend.book.resolve(layout.inbox, folder / "file")
        description = backend.book.folder(folder)[2].description
    except RecipeError:
        return None
    return {"path": folder.relative_to(layout.inbox).as_posix(), "recipe": plan.name,
            "description": description, "steps": step_words(plan)}


def step_words(plan: Plan) -> list[str]:
    """The steps of a plan, one short phrase each."""
    return [step.summary() for step in plan.steps]


def upload_folders(backend: Backend) -> list[dict[str, Any]]:
    """The inbox folders that take uploads: every one whose name gives a recipe."""
    layout = backend.layout
    views = (folder_view(backend, folder) for folder in inbox_folders(layout.inbox, layout.work))
    return [view for view in views if view is not None]


def upload_folder(backend: Backend, path: str) -> PurePosixPath:
    """A folder path from a request, if /folders lists it; 400 otherwise."""
    rel = PurePosixPath(path.strip("/"))
    layout = backend.layout
    parts = rel.parts
    if (not parts or path.startswith("/") or any(ignored(p, []) or p == ".." for p in parts)):
        raise Refused(400, f"{path!r} is not a folder that takes uploads (see /api/v1/folders)")
    try:
        os.close(open_below(layout.inbox, rel))
    except OSError:
        raise Refused(400, f"{path!r} is not a folder of the inbox (see /api/v1/folders)") from None
    if (layout.inbox / rel) == layout.work or folder_view(backend, layout.inbox / rel) is None:
        raise Refused(400, f"{path!r} is not a folder that takes uploads (see /api/v1/folders)")
    return rel


def upload_name(given: str, backend: Backend) -> str:
    """A file name from a request, reduced to its last component; 400 when none is left."""
    name = given.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if name in ("", ".", "..") or "\0" in name:
        raise Refused(400, f"{given!r} is not a file name")
    if name == RECIPE_FILE or ignored(name, backend.cfg.watch.ignore):
        raise Refused(400, f"{name!r}: a file of that name is never taken from the inbox"
                      " (a recipe, or hidden or temporary: watch.ignore)")
    return name


# -- the list -------------------------------------------------------------------------------


def list_jobs(journal: Journal, *, state: str | None = None, folder: str | None = None,
              q: str | None = None, limit: int = LIST_LIMIT,
              before: float | None = None) -> list[Job]:
    """Jobs newest first (by creation), filtered by state, folder, a part of the name, time."""
    if state is not None and state not in STATES:
        raise Refused(400, f"state must be one of {', '.join(STATES)}, not {state!r}")
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise Refused(400, f"limit must be from 1 to {MAX_LIST_LIMIT}")
    states = [state] if state else list(STATES)
    jobs = journal.in_state(*[s for s in states if s in UNFINISHED])
    for ended in (s for s in states if s in ENDED):
        jobs += journal.recent(ended, ENDED_WINDOW)
    needle = q.casefold() if q else None

    def wanted(job: Job) -> bool:
        view = summary(job)
        return ((folder is None or view["folder"] == folder.strip("/"))
                and (needle is None or needle in view["name"].casefold())
                and (before is None or job.created < before))

    return sorted(filter(wanted, jobs), key=lambda j: j.created, reverse=True)[:limit]


# -- a job's files --------------------------------------------------------------------------


def open_under(root: Path, path: Path) -> io.BufferedReader | None:
    """A plain file below root, reached without following links; None if not there or not one."""
    try:
        rel = PurePosixPath(path.relative_to(root).as_posix())
    except ValueError:
        return None
    if not rel.parts or ".." in rel.parts:
        return None
    try:
        folder = open_below(root, rel.parent)
    except OSError:
        return None
    try:
        return open_regular(rel.name, folder)
    except OSError:
        return None
    finally:
        os.close(folder)


def read_json(root: Path, path: Path) -> dict[str, Any] | None:
    """A report or sidecar below root, or None when missing or not JSON."""
    src = open_under(root, path)
    if src is None:
        return None
    with src:
        data = src.read(REPORT_BYTES + 1)
    if len(data) > REPORT_BYTES:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def candidates(root: Path, rel: PurePosixPath) -> Iterator[Path]:
    """Where a job's original may be under root: its path, then the renamed ones that exist."""
    for n, candidate in enumerate(renamed(rel)):
        path = root / candidate
        if not os.path.lexists(path):
            if n:
                return
            continue
        yield path


@dataclass(frozen=True)
class JobFiles:
    """Where a job's files are: outputs (locations, and paths here), sidecar, original, report."""

    outputs: list[str]
    local: list[Path | None]
    sidecar: dict[str, Any] | None
    original: Path | None
    report: dict[str, Any] | None

    def results(self) -> list[Path]:
        """The outputs on this machine, sidecar excluded."""
        return [path for path, where in zip(self.local, self.outputs, strict=True)
                if path is not None and not where.endswith(".json")]


def on_this_machine(backend: Backend, job: Job, location: str) -> Path | None:
    """Where an output is here: its outbox path, or the outbox copy of an S3 object."""
    outbox = backend.layout.outbox
    if location.startswith("s3://"):
        s3 = backend.cfg.output.s3
        if s3 is None or not s3.keep_local:
            return None
        return outbox / PurePosixPath(job.rel).parent / PurePosixPath(location).name
    path = Path(location)
    return path if path.is_relative_to(outbox) else None


def job_files(backend: Backend, job: Job) -> JobFiles:
    """Find a job's files: outputs from the journal, the original and report by their content."""
    layout = backend.layout
    rel = PurePosixPath(job.rel)
    outputs = job.outputs or []
    local = [on_this_machine(backend, job, where) for where in outputs]
    sidecar = next((read_json(layout.outbox, path) for path, where in zip(local, outputs,
                                                                         strict=True)
                    if path is not None and where.endswith(".json")), None)
    if job.state == "done" and backend.cfg.output.archive:
        sha = (sidecar or {}).get("input", {}).get("sha256")
        return JobFiles(outputs, local, sidecar, archived(layout.archive, rel, job, sha), None)
    if job.state in ("failed", "quarantined"):
        root, suffix = ((layout.failed, ERROR_SUFFIX) if job.state == "failed"
                        else (layout.quarantine, SCAN_SUFFIX))
        for path in candidates(root, rel):
            report = read_json(root, Path(f"{path}{suffix}"))
            if report is not None and report_of(job, report):
                return JobFiles(outputs, local, sidecar, path, report)
    return JobFiles(outputs, local, sidecar, None, None)


def report_of(job: Job, report: dict[str, Any]) -> bool:
    """Whether a failed/ or quarantine/ report is this job's (its reason is the same)."""
    if job.state == "failed":
        return bool(report.get("message") == job.reason)
    return f"{report.get('signature')} ({report.get('scanner')})" == job.reason


def archived(archive: Path, rel: PurePosixPath, job: Job, sha256: str | None) -> Path | None:
    """A done job's original in archive/: same content as its sidecar says, else moved there
    as the job ended."""
    best: tuple[float, Path] | None = None
    for path in candidates(archive, rel):
        if sha256 is not None:
            src = open_under(archive, path)
            if src is not None:
                with src:
                    if hashlib.file_digest(src, "sha256").hexdigest() == sha256:
                        return path
            continue
        with contextlib.suppress(OSError):
            gap = abs(os.lstat(path).st_ctime - job.updated)
            if gap <= CTIME_SLACK_SECONDS and (best is None or gap < best[0]):
                best = (gap, path)
    return best[1] if best else None


def info(backend: Backend, job: Job) -> dict[str, Any]:
    """One job: the list fields, its steps, outputs, and the sidecar or the report."""
    files = job_files(backend, job)
    view = summary(job)
    try:
        plan = backend.book.resolve(backend.layout.inbox, backend.layout.inbox / job.rel)
        view["recipe"], view["steps"] = plan.name, step_words(plan)
    except RecipeError as exc:
        view["recipe"], view["steps"] = None, [exc.message]
    view["outputs"] = [{"index": n, "name": PurePosixPath(where).name, "location": where,
                        "here": path is not None}
                       for n, (where, path) in enumerate(zip(files.outputs, files.local,
                                                             strict=True))]
    view["sidecar"] = files.sidecar
    view["error" if job.state == "failed" else "scan"] = files.report
    return readable(view)


# -- changes --------------------------------------------------------------------------------


def new_temp(folder: Path) -> tuple[int, Path]:
    """A private file for an upload in `folder` (the work folder, on the inbox's filesystem)."""
    path = folder / f"{UPLOAD_PREFIX}{secrets.token_hex(8)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    return fd, path


def seal(fd: int) -> None:
    """Make an upload's file durable and readable as a dropped one is, then close it."""
    try:
        os.fchmod(fd, 0o644)
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_temporary(work: Path) -> int:
    """Remove upload files an interrupted request left in the work folder; returns how many."""
    removed = 0
    for path in work.glob(f"{UPLOAD_PREFIX}*"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed


def claimed(backend: Backend, path: Path, rel: PurePosixPath) -> Job:
    """Hand a file to the intake as if dropped at inbox/rel; the job it became."""
    job = backend.claim(path, rel)
    if job is None:
        raise Refused(409, f"{rel}: the file could not be claimed")
    return job


def retry(backend: Backend, job: Job) -> Job:
    """A failed job's file back into its folder, as `hotfolder retry`, claimed at once."""
    if job.state != "failed":
        raise Refused(409, f"job {job.id} is {job.state}: only a failed job can be retried")
    original = job_files(backend, job).original
    if original is None:
        raise Refused(404, f"{job.rel}: its file is no longer in failed/")
    since = time.time()
    moved, problems = admin.retry(backend.cfg, [str(original)])
    if problems or not moved:
        raise Refused(409, "; ".join(problems) or f"{job.rel}: not moved")
    _, target = moved[0]
    target_rel = PurePosixPath(target.relative_to(backend.layout.inbox).as_posix())
    again = backend.claim(target, target_rel)
    return again or watcher_claim(backend.journal, target_rel.as_posix(), since)


def watcher_claim(journal: Journal, rel: str, since: float) -> Job:
    """The job the watcher made of a file moved into the inbox (it sees a move at once)."""
    deadline = time.monotonic() + CLAIM_WAIT_SECONDS
    while time.monotonic() < deadline:
        found = [job for job in list_jobs(journal, q=PurePosixPath(rel).name,
                                          limit=MAX_LIST_LIMIT)
                 if job.rel == rel and job.created >= since]
        if found:
            return found[-1]
        time.sleep(0.02)
    raise Refused(409, f"{rel}: moved back into the inbox, but not claimed yet")


def process_again(backend: Backend, job: Job, body: dict[str, Any]) -> Job:
    """The archived original of a done job, claimed again into another folder or steps."""
    if job.state != "done":
        raise Refused(409, f"job {job.id} is {job.state}: only a done job's original is kept")
    folder = again_folder(backend, body)
    original = job_files(backend, job).original
    src = open_under(backend.layout.archive, original) if original is not None else None
    if src is None:
        raise Refused(404, f"{job.rel}: its original is no longer in archive/")
    fd, temp = new_temp(backend.layout.work)
    try:
        with src, os.fdopen(os.dup(fd), "wb") as out:
            while chunk := src.read(1024 * 1024):
                out.write(chunk)
        seal(fd)
        return claimed(backend, temp, folder / PurePosixPath(job.rel).name)
    finally:
        temp.unlink(missing_ok=True)


def again_folder(backend: Backend, body: dict[str, Any]) -> PurePosixPath:
    """The folder a job is processed again in: one of /folders, or the inline steps given."""
    if isinstance(body.get("folder"), str) and "steps" not in body:
        return upload_folder(backend, body["folder"])
    chain = body.get("steps")
    if not isinstance(chain, str) or "folder" in body:
        raise Refused(400, 'give either {"folder": PATH} or {"steps": "step+step..."}')
    if not backend.cfg.recipes.inline_allowed:
        raise Refused(400, "steps cannot be given here: inline folder names are turned off"
                      " (recipes.inline: deny); choose a folder")
    if "/" in chain or chain.startswith(".") or len(chain.encode()) > 255:
        raise Refused(400, f"{chain!r} cannot be a folder name: no '/', no leading '.',"
                      " at most 255 bytes")
    try:
        parse_chain(chain)
    except RecipeError as exc:
        raise Refused(400, exc.message) from None
    return PurePosixPath(chain)


def delete(backend: Backend, job: Job, *, quarantine: bool) -> None:
    """Remove an ended job's outputs, sidecar and original (with its report)."""
    if job.state not in ENDED:
        raise Refused(409, f"job {job.id} is {job.state}: it can be deleted once it has ended")
    if job.state == "quarantined" and not quarantine:
        raise Refused(409, "a quarantined file is deleted only with ?quarantine=yes")
    layout = backend.layout
    files = job_files(backend, job)
    doomed = [(layout.outbox, path) for path in files.local if path is not None]
    if files.original is not None:
        root = {"done": layout.archive, "failed": layout.failed,
                "quarantined": layout.quarantine}[job.state]
        suffix = {"failed": ERROR_SUFFIX, "quarantined": SCAN_SUFFIX}.get(job.state)
        doomed.append((root, files.original))
        if suffix:
            doomed.append((root, Path(f"{files.original}{suffix}")))
    for root, path in doomed:
        remove_under(root, path)
    backend.journal.forget(job.id)


def remove_under(root: Path, path: Path) -> None:
    """Remove one name below root, reached without following links; gone already is fine."""
    rel = PurePosixPath(path.relative_to(root).as_posix())
    if not rel.parts or ".." in rel.parts:
        return
    try:
        folder = open_below(root, rel.parent)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return
        raise
    try:
        os.unlink(rel.name, dir_fd=folder)
    except FileNotFoundError:
        pass
    finally:
        os.close(folder)
