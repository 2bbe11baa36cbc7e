"""Where results go: the Sink seam and its factory, the rules every sink shares, a memory sink.

A key is the result's path relative to the sink's root (`A/B/photo.png`); it can
never leave the root. Conflicts resolve the same way everywhere: `rename` tries
`photo.png`, `photo-1.png`, `photo-2.png`...; `overwrite` replaces; `skip` keeps
what is there and returns None. An object that already holds identical content
counts as delivered, so a job repeated after a crash leaves no duplicate.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

from hotfolder.config import OutputConfig
from hotfolder.errors import InputError, Unavailable

ON_CONFLICT = ("rename", "overwrite", "skip")
MAX_RENAMES = 1000
CONTROL = re.compile("[\x00-\x1f\x7f]")


class Sink(Protocol):
    """A destination for results."""

    name: str

    def deliver(self, key: PurePosixPath, data: bytes, *, media_type: str,
                metadata: Mapping[str, str], on_conflict: str) -> str | None:
        """Store data atomically at key; returns where it went, or None when skipped."""
        ...


def make_sink(output: OutputConfig, outbox: Path) -> Sink:
    """Where results go: the outbox, S3, or both (`output.s3.keep_local`)."""
    from hotfolder.sinks.local import OutboxSink  # noqa: PLC0415  (it builds on this module)

    local = OutboxSink(outbox)
    if output.s3 is None:
        return local
    from hotfolder.sinks.s3 import S3Sink, S3WithLocalCopy  # noqa: PLC0415  (boto3 only for S3)

    s3 = S3Sink(output.s3)
    return S3WithLocalCopy(s3, local) if output.s3.keep_local else s3


def key_parts(key: PurePosixPath | str, *, portable: bool = True) -> list[str]:
    """The folders and name of a relative key; InputError when it could leave the root."""
    # `portable` also refuses backslashes and control characters, which Windows clients and
    # object stores read differently; originals moved to failed/ keep their names as they are.
    text = str(key)
    problem = None
    if "\0" in text:
        problem = "contains a NUL character"
    elif portable and "\\" in text:
        problem = "contains a backslash"
    elif portable and CONTROL.search(text):
        problem = "contains a control character"
    elif text.startswith("/"):
        problem = "is absolute"
    parts = PurePosixPath(text).parts
    if problem is None and (not parts or any(part in (".", "..") for part in parts)):
        problem = "is empty or has a '..' component"
    if problem is not None:
        raise InputError(f"the output name {text!r} {problem}", stage="deliver")
    return list(parts)


def renamed(key: PurePosixPath) -> Iterator[PurePosixPath]:
    """key, then `stem-1.ext`, `stem-2.ext`, ... in the same folder."""
    yield key
    for n in range(1, MAX_RENAMES):
        yield key.with_name(f"{key.stem}-{n}{key.suffix}")


class KeyedSink(ABC):
    """A sink built from four primitives; `deliver` applies the shared conflict rules."""

    name: str

    @abstractmethod
    def location(self, key: PurePosixPath) -> str:
        """Where an object at key lives, as shown in sidecars and logs."""

    @abstractmethod
    def _digest(self, key: PurePosixPath) -> str | None:
        """SHA-256 of what is at key ('' for something unreadable), None when nothing is."""

    @abstractmethod
    def _create(self, key: PurePosixPath, data: bytes, media_type: str,
                metadata: Mapping[str, str]) -> bool:
        """Store data at key only if nothing is there; False when the key is taken."""

    @abstractmethod
    def _replace(self, key: PurePosixPath, data: bytes, media_type: str,
                 metadata: Mapping[str, str]) -> None:
        """Store data at key, replacing what is there."""

    def deliver(self, key: PurePosixPath, data: bytes, *, media_type: str,
                metadata: Mapping[str, str], on_conflict: str) -> str | None:
        """Store data atomically at key, resolving conflicts; idempotent by content."""
        if on_conflict not in ON_CONFLICT:
            raise ValueError(f"on_conflict must be one of {', '.join(ON_CONFLICT)}")
        key = PurePosixPath(*key_parts(key))
        digest = hashlib.sha256(data).hexdigest()
        if on_conflict == "overwrite":
            if self._digest(key) != digest:
                self._replace(key, data, media_type, metadata)
            return self.location(key)
        for candidate in renamed(key) if on_conflict == "rename" else [key]:
            existing = self._digest(candidate)
            if existing == digest:
                return self.location(candidate)
            if existing is None and self._create(candidate, data, media_type, metadata):
                return self.location(candidate)
        if on_conflict == "skip":
            return None
        raise Unavailable(f"cannot store {key}: {MAX_RENAMES} names like it are taken")


@dataclass
class Stored:
    """One object held by a MemorySink."""

    data: bytes
    media_type: str
    metadata: dict[str, str]


@dataclass
class MemorySink(KeyedSink):
    """Objects in a dict, with an availability switch; for tests."""

    objects: dict[PurePosixPath, Stored] = field(default_factory=dict)
    available: bool = True
    name: str = "memory"

    def location(self, key: PurePosixPath) -> str:
        """`memory://A/photo.png`."""
        return f"memory://{key}"

    def _check(self, key: PurePosixPath) -> None:
        if not self.available:
            raise Unavailable(f"cannot store {key}: the memory sink is switched off")

    def _digest(self, key: PurePosixPath) -> str | None:
        self._check(key)
        stored = self.objects.get(key)
        return None if stored is None else hashlib.sha256(stored.data).hexdigest()

    def _create(self, key: PurePosixPath, data: bytes, media_type: str,
                metadata: Mapping[str, str]) -> bool:
        if key in self.objects:
            return False
        self._replace(key, data, media_type, metadata)
        return True

    def _replace(self, key: PurePosixPath, data: bytes, media_type: str,
                 metadata: Mapping[str, str]) -> None:
        self._check(key)
        self.objects[key] = Stored(data, media_type, dict(metadata))
