"""Uploads: multipart bodies read as they stream, within the limits, then claimed as drops.

The body is parsed chunk by chunk as it arrives. Each file is written to a private
temporary file in the work folder (on the inbox's filesystem, never watched), and
the request is refused with 413 as soon as a file passes `limits.max_file_mb` or the
files pass `web.max_files`, before the rest of the body is read. Once the body is
complete, every file is handed to the intake's claim as if it had been dropped into
the chosen folder, under its name reduced to the last component: it is checked,
scanned, processed and delivered exactly as a dropped file.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, cast

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

from hotfolder.web.console import (
    Backend,
    Refused,
    claimed,
    new_temp,
    seal,
    summary,
    upload_folder,
    upload_name,
)

FIELD_BYTES = 4096  # the folder field; nothing else but files is accepted
PART_OVERHEAD = 16 * 1024  # headers and boundary of one part, at most, for the early check


@dataclass
class Part:
    """One part of the body as it arrives."""

    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    value: bytearray = field(default_factory=bytearray)
    fd: int | None = None
    path: Path | None = None
    size: int = 0
    complete: bool = False


@dataclass
class Upload:
    """The state of one upload request: what was received, and the files written so far."""

    backend: Backend
    folder: PurePosixPath | None = None
    files: list[Part] = field(default_factory=list)
    part: Part | None = None
    header_field: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    events: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def max_files(self) -> int:
        return self.backend.cfg.web.max_files

    @property
    def max_bytes(self) -> int:
        return self.backend.cfg.limits.max_file_bytes

    def parser(self, boundary: bytes) -> MultipartParser:
        """A parser whose callbacks only note what arrived; `feed` acts on it."""
        def note(kind: str) -> Any:
            def callback(data: bytes | None = None, start: int = 0, end: int = 0) -> None:
                self.events.append((kind, data[start:end] if data is not None else b""))
            return callback

        kinds = ("part_begin", "header_field", "header_value", "header_end",
                 "headers_finished", "part_data", "part_end", "end")
        callbacks = {f"on_{kind}": note(kind) for kind in kinds}
        return MultipartParser(boundary, cast("MultipartCallbacks", callbacks))

    def act(self) -> None:
        """Apply the events the parser noted since the last call."""
        events, self.events = self.events, []
        for kind, data in events:
            if kind == "part_begin":
                self.part = Part()
            elif kind == "header_field":
                self.header_field += data
            elif kind == "header_value":
                self.header_value += data
            elif kind == "header_end":
                self.current.headers[bytes(self.header_field).lower()] = bytes(self.header_value)
                self.header_field.clear()
                self.header_value.clear()
            elif kind == "headers_finished":
                self.begin(self.current)
            elif kind == "part_data":
                self.data(self.current, data)
            elif kind == "part_end":
                self.end(self.current)

    @property
    def current(self) -> Part:
        if self.part is None:
            raise Refused(400, "the multipart body is malformed")
        return self.part

    def begin(self, part: Part) -> None:
        """A part's headers are in: a file gets its temporary file, past the limit a 413."""
        _, options = parse_options_header(part.headers.get(b"content-disposition", b""))
        try:
            part.name = options.get(b"name", b"").decode()
            filename = options.get(b"filename")
            part.filename = filename.decode() if filename is not None else None
        except UnicodeDecodeError:
            raise Refused(400, "a field or file name is not UTF-8") from None
        if part.name == "files":
            if len(self.files) >= self.max_files:
                raise Refused(413, f"more than {self.max_files} files in one upload"
                              " (web.max_files)")
            upload_name(part.filename or "", self.backend)
            part.fd, part.path = new_temp(self.backend.layout.work)
            self.files.append(part)
        elif part.name != "folder":
            raise Refused(400, f"unknown field {part.name!r}: an upload has `files` and `folder`")

    def data(self, part: Part, data: bytes) -> None:
        """Bytes of a part: into its file, within the size limit."""
        part.size += len(data)
        if part.fd is None:
            if part.size > FIELD_BYTES:
                raise Refused(400, f"the field {part.name!r} is too long")
            part.value += data
            return
        if part.size > self.max_bytes:
            raise Refused(413, f"{upload_name(part.filename or '', self.backend)} is larger than"
                          f" {self.backend.cfg.limits.max_file_mb:g} MB (limits.max_file_mb)")
        self.backend.metrics.upload_bytes.inc(len(data))
        os.write(part.fd, data)

    def end(self, part: Part) -> None:
        """A part is complete; the folder is checked at once."""
        part.complete = True
        if part.fd is None:
            self.folder = upload_folder(self.backend, part.value.decode(errors="replace"))

    def claim(self) -> list[dict[str, Any]]:
        """Hand every file to the intake in the chosen folder; their jobs' list fields."""
        if self.folder is None:
            raise Refused(400, "the upload has no `folder` field (a path from /api/v1/folders)")
        if not self.files:
            raise Refused(400, "the upload has no files (field `files`)")
        jobs = []
        for part in self.files:
            if not part.complete or part.fd is None or part.path is None:
                raise Refused(400, "the multipart body ends inside a file")
            fd, part.fd = part.fd, None
            seal(fd)
            name = upload_name(part.filename or "", self.backend)
            jobs.append(summary(claimed(self.backend, part.path, self.folder / name)))
        return jobs

    def discard(self) -> None:
        """Remove what was written and not claimed."""
        for part in self.files:
            if part.fd is not None:
                os.close(part.fd)
            if part.path is not None:
                with contextlib.suppress(FileNotFoundError):
                    part.path.unlink()


def boundary_of(request: Request) -> bytes:
    """The multipart boundary of the request; 400 for anything else."""
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise Refused(400, "an upload is multipart/form-data with `files` and `folder`")
    return boundary


async def receive(request: Request, backend: Backend) -> list[dict[str, Any]]:
    """Read an upload as it streams and claim its files; the jobs' list fields."""
    boundary = boundary_of(request)
    declared = request.headers.get("content-length", "")
    upload = Upload(backend)
    most = upload.max_files * (upload.max_bytes + PART_OVERHEAD) + FIELD_BYTES + PART_OVERHEAD
    if declared.isdigit() and int(declared) > most:
        raise Refused(413, f"the upload is larger than {upload.max_files} files of"
                      f" {backend.cfg.limits.max_file_mb:g} MB (web.max_files,"
                      " limits.max_file_mb)")
    parser = upload.parser(boundary)
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            upload.act()
        parser.finalize()
        upload.act()
        return await run_in_threadpool(upload.claim)
    except ClientDisconnect:
        raise Refused(400, "the upload was cut off before its end") from None
    finally:
        upload.discard()
