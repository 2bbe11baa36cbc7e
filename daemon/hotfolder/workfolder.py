"""The work folder: where claimed files wait, each named by its job id alone (SPEC 2, 8).

A job's file is `work/<id>`, whatever the length or the bytes of its path in the inbox.
The path is recorded before the claim's rename, on the file itself (an extended attribute)
or beside it in `work/<id>.path` (a symbolic link to the path's raw bytes, never
followed), so the work folder alone tells where a file came from when the journal lost
its row. A result that waits for its destination is kept as `work/<id>.result`, so the
next try delivers it without rendering it again; a verdict scanned ahead of the job waits
as `work/<id>.verdict` (hotfolder.scanahead). All are removed once the file has left the
work folder; one left by a crash in between has no file beside it and is removed at
start-up. Flat names, no folders: the inotify watcher of the inbox would add a watch for
every folder made here.

A kept result is one file: a line of JSON (the sidecar record, the caller's notes, and
the name, type, size and SHA-256 of each output), then the outputs' bytes in order.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import string
from pathlib import Path
from typing import Any

from hotfolder.engine import Output, Rendered
from hotfolder.files import NEW_FILE_FLAGS, write_atomic
from hotfolder.sinks.local import PRIVATE_FILE

JOB_ID_CHARS = 12
PATH_SUFFIX = ".path"
RESULT_SUFFIX = ".result"
VERDICT_SUFFIX = ".verdict"
SUFFIXES = (PATH_SUFFIX, RESULT_SUFFIX, VERDICT_SUFFIX)
NO_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS})  # symlink() not offered
PATH_ATTRIBUTE = "user.hotfolder.path"
# setxattr() not offered, not allowed, or the path too long for an attribute here
NO_ATTRIBUTES = frozenset({errno.EOPNOTSUPP, errno.EPERM, errno.EACCES, errno.E2BIG,
                           errno.ERANGE, errno.ENOSPC, errno.ENOSYS})


def is_job_id(name: str) -> bool:
    """Whether a name is a job id (12 lower-case hex digits)."""
    return len(name) == JOB_ID_CHARS and all(c in string.hexdigits.lower() for c in name)


class WorkFolder:
    """The claimed files of one inbox, the paths they came from, and their kept results."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def file(self, job_id: str) -> Path:
        """Where the job's file waits."""
        return self.folder / job_id

    def _side(self, job_id: str, suffix: str) -> Path:
        return self.folder / f"{job_id}{suffix}"

    def verdict(self, job_id: str) -> Path:
        """Where a verdict scanned ahead of the job waits for it."""
        return self._side(job_id, VERDICT_SUFFIX)

    def record(self, job_id: str, rel: str, fd: int | None = None) -> None:
        """Durably note the inbox path of a file about to be claimed as `job_id`.

        Given the service's own file open (`fd`), the path is an extended attribute of the
        file itself (PATH_ATTRIBUTE), which moves with it into the work folder. Else, or
        where the filesystem refuses the attribute, it is a note beside the file: a symbolic
        link whose target is the path's bytes, never followed. Neither needs a flush of its
        own: each is made in one step, and the claim's rename reaches the disk after it.
        Where the filesystem has no symbolic links (SMB without Unix extensions), the note
        is a plain file, fsynced. A note without a file beside it is removed at start-up.
        """
        raw = os.fsencode(rel)
        if fd is not None:
            try:
                os.setxattr(fd, PATH_ATTRIBUTE, raw)
                return
            except OSError as exc:
                if exc.errno not in NO_ATTRIBUTES:
                    raise
        path = self._side(job_id, PATH_SUFFIX)
        try:
            _note(path, raw)
        except FileNotFoundError:  # the work folder itself was removed
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            _note(path, raw)

    def recorded(self, job_id: str) -> str | None:
        """The inbox path noted for `job_id` (a note beside it first), or None when none is."""
        path = self._side(job_id, PATH_SUFFIX)
        try:
            raw = os.readlink(os.fsencode(path))
        except FileNotFoundError:
            try:
                raw = os.getxattr(self.file(job_id), PATH_ATTRIBUTE, follow_symlinks=False)
            except OSError:  # no file, no attribute, or none offered here
                return None
        except OSError as exc:  # a note written as a plain file
            if exc.errno != errno.EINVAL:
                raise
            raw = path.read_bytes()
        return os.fsdecode(raw) if raw else None

    def release(self, job_id: str) -> None:
        """Remove what the work folder holds beside a job whose file has left it."""
        for suffix in SUFFIXES:
            self._side(job_id, suffix).unlink(missing_ok=True)

    def _names(self) -> list[str]:
        return sorted(os.listdir(self.folder)) if self.folder.is_dir() else []

    def claimed(self) -> list[str]:
        """The ids of the jobs whose files are here."""
        return [name for name in self._names()
                if is_job_id(name) and self.file(name).is_file()
                and not self.file(name).is_symlink()]

    def unclaimed(self) -> list[str]:
        """Ids with a path or result here but no file: a claim that never happened, or ended."""
        claimed = set(self.claimed())
        return sorted({name[:JOB_ID_CHARS] for name in self._names()
                       if is_job_id(name[:JOB_ID_CHARS]) and name[JOB_ID_CHARS:] in SUFFIXES}
                      - claimed)

    def strays(self) -> list[Path]:
        """Entries that are not the work folder's own, nor hidden temporary files (uploads,
        interrupted writes): left for the operator to see."""
        ours = set(self.claimed())
        return [self.folder / name for name in self._names()
                if name not in ours and not name.startswith(".")
                and not (is_job_id(name[:JOB_ID_CHARS]) and name[JOB_ID_CHARS:] in SUFFIXES)]

    def keep(self, job_id: str, rendered: Rendered, notes: dict[str, Any]) -> None:
        """Keep a job's rendered result (and the caller's notes) for its next try."""
        header = {"sidecar": rendered.sidecar, "notes": notes,
                  "outputs": [{"name": o.name, "media_type": o.media_type, "size": len(o.data),
                               "sha256": hashlib.sha256(o.data).hexdigest()}
                              for o in rendered.outputs]}
        data = b"".join([json.dumps(header).encode(), b"\n",
                         *(o.data for o in rendered.outputs)])
        write_atomic(self._side(job_id, RESULT_SUFFIX), data, PRIVATE_FILE)

    def kept(self, job_id: str) -> tuple[Rendered, dict[str, Any]] | None:
        """The result kept for `job_id` and its notes; None when there is none or it is damaged."""
        try:
            data = self._side(job_id, RESULT_SUFFIX).read_bytes()
        except FileNotFoundError:
            return None
        head, _, body = data.partition(b"\n")
        try:
            header = json.loads(head)
            outputs, at = [], 0
            for item in header["outputs"]:
                chunk = body[at:at + item["size"]]
                at += item["size"]
                if hashlib.sha256(chunk).hexdigest() != item["sha256"]:
                    return None
                outputs.append(Output(item["name"], chunk, item["media_type"]))
            return Rendered(outputs, header["sidecar"]), header["notes"]
        except (ValueError, KeyError, TypeError):
            return None


def _note(path: Path, raw: bytes) -> None:
    """The note `path` holding `raw`: a symbolic link, else a plain file, fsynced. A note
    already there is kept: a claim notes its path again once the attribute is refused."""
    try:
        os.symlink(raw, path)
        return
    except FileExistsError:
        return
    except OSError as exc:
        if exc.errno not in NO_LINKS:
            raise
    try:
        fd = os.open(path, NEW_FILE_FLAGS, PRIVATE_FILE)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as out:
        out.write(raw)
        out.flush()
        os.fsync(out.fileno())
