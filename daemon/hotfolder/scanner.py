"""Virus scanning: the Scanner seam, clamd through pyclamd, and an in-memory scanner for tests.

A verdict is clean only when clamd answered `OK` for the whole file. Every other
outcome that is not a signature raises `Unavailable` (the job waits, SPEC 8.3):
an `ERROR` reply, clamd's `INSTREAM size limit exceeded` (StreamMaxLength below
the file's size), a `Heuristics.Limits.Exceeded` alert (MaxFileSize/MaxScanSize
below the file's size: clamd stopped reading, so nothing was proved), a timeout,
and a refused or missing socket.

pyclamd sends each chunk with `socket.send`, which may send part of it, and
returns None both for `OK` and for a connection closed without a reply; the
connection is wrapped so that every chunk goes out whole and the reply is
kept, and only `stream: OK` counts as clean. pyclamd also retries
a failed receive five times, so each socket operation gets a fifth of the
configured timeout and a scan never waits longer than the timeout in total.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyclamd

from hotfolder.config import ScannerConfig
from hotfolder.errors import Unavailable

CHUNK_BYTES = 1 << 16
LIMIT_ALERT = "Heuristics.Limits.Exceeded"
SIZE_LIMIT_REPLY = "INSTREAM size limit exceeded"
CLEAN_REPLY = b"stream: OK"
# pyclamd retries a failed receive this many times before giving up.
RECEIVE_ATTEMPTS = 5


@dataclass(frozen=True)
class Verdict:
    """What the scanner said about one file."""

    clean: bool
    signature: str | None
    scanner: str


class Scanner(Protocol):
    """Scans files; raises `Unavailable` whenever it cannot prove a file clean or infected."""

    def scan(self, path: Path) -> Verdict: ...

    def ping(self) -> bool: ...


class _Connection:
    """pyclamd's socket, sending whole chunks and keeping what clamd answered."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.received = bytearray()

    def send(self, data: bytes) -> int:
        """Send every byte of data (pyclamd assumes send does)."""
        self._sock.sendall(data)
        return len(data)

    def recv(self, size: int) -> bytes:
        """Receive up to size bytes, and remember them."""
        data = self._sock.recv(size)
        self.received += data
        return data

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()


class _ConnectionMixin:
    """Wraps the socket pyclamd opens for each command."""

    clamd_socket: Any

    def _init_socket(self) -> None:
        try:
            super()._init_socket()  # type: ignore[misc]
        except OSError:
            self.clamd_socket.close()
            raise
        self.clamd_socket = _Connection(self.clamd_socket)

    def close(self) -> None:
        """Close the last connection (pyclamd leaves it open when a command fails)."""
        if hasattr(self, "clamd_socket"):
            self.clamd_socket.close()


class _UnixClient(_ConnectionMixin, pyclamd.ClamdUnixSocket):  # type: ignore[misc]
    """pyclamd's unix-socket client on a _Connection."""


class _NetworkClient(_ConnectionMixin, pyclamd.ClamdNetworkSocket):  # type: ignore[misc]
    """pyclamd's TCP client on a _Connection."""


def parse_address(address: str) -> str | tuple[str, int]:
    """`unix:///path` -> the socket's path; `tcp://host:port` -> (host, port)."""
    if address.startswith("unix://"):
        path = address[len("unix://") :]
        if path.startswith("/"):
            return path
    elif address.startswith("tcp://"):
        host, sep, port = address[len("tcp://") :].rpartition(":")
        if sep and host and port.isdigit():
            return host.strip("[]"), int(port)
    raise ValueError(f"{address!r} is not unix:///path/to/socket or tcp://host:port")


class ClamdScanner:
    """Scans with clamd's INSTREAM command over a unix or TCP socket."""

    name = "clamd"

    def __init__(self, address: str, timeout: float = 60.0) -> None:
        self.address = address
        self.timeout = timeout
        self._target = parse_address(address)

    def _client(self) -> Any:
        step_timeout = self.timeout / RECEIVE_ATTEMPTS
        if isinstance(self._target, str):
            return _UnixClient(self._target, timeout=step_timeout)
        host, port = self._target
        return _NetworkClient(host, port, timeout=step_timeout)

    def _unavailable(self, path: Path, why: str, detail: object = "") -> Unavailable:
        return Unavailable(
            f"{path.name} could not be scanned: {why}", detail=str(detail), stage="scan"
        )

    def scan(self, path: Path) -> Verdict:
        """Stream the file to clamd and return its verdict, or raise Unavailable."""
        # Opened first: a missing file is the caller's problem, not clamd's; a link is refused.
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as stream:
            client = None
            try:
                client = self._client()
                reply = client.scan_stream(stream, chunk_size=CHUNK_BYTES)
            except pyclamd.BufferTooLongError as exc:
                raise self._size_limit(path, exc) from None
            except OSError as exc:
                raise self._failure(path, client, exc) from None
            finally:
                if client is not None:
                    client.close()
        return self._verdict(path, reply, bytes(client.clamd_socket.received))

    def _failure(self, path: Path, client: Any, exc: OSError) -> Unavailable:
        """The plain reason a scan broke off: no clamd, a size limit, a timeout."""
        if client is None:
            return self._unavailable(
                path, f"clamd at {self.address} is not reachable (is clamd running?)", exc
            )
        pending = _pending_reply(client)
        if SIZE_LIMIT_REPLY in pending:
            return self._size_limit(path, pending)
        # pyclamd turns a failed receive into its own ConnectionError; the cause is its context.
        cause = exc.__context__ if isinstance(exc.__context__, OSError) else exc
        if isinstance(cause, TimeoutError):
            return self._unavailable(
                path, f"clamd at {self.address} did not answer within {self.timeout:g} s", exc
            )
        if isinstance(cause, BrokenPipeError | ConnectionResetError):
            return self._hung_up(path, exc)
        return self._unavailable(path, f"the connection to clamd at {self.address} failed", exc)

    def _hung_up(self, path: Path, detail: object) -> Unavailable:
        return self._unavailable(
            path, f"clamd at {self.address} closed the connection without a verdict "
            "(see its log)", detail)

    def _size_limit(self, path: Path, detail: object) -> Unavailable:
        return self._unavailable(
            path,
            f"clamd at {self.address} refused it as larger than its StreamMaxLength; "
            "raise StreamMaxLength in clamd.conf above limits.max_file_mb",
            detail,
        )

    def _verdict(self, path: Path, reply: Mapping[str, tuple[str, str]] | None,
                 received: bytes) -> Verdict:
        if not reply:
            # pyclamd also returns None when clamd hangs up without a word (it does when it
            # cannot write its temporary file): only an explicit OK is clean.
            if received.strip(b"\0\n ") == CLEAN_REPLY:
                return Verdict(clean=True, signature=None, scanner=self.name)
            raise self._hung_up(path, received.decode("utf-8", "replace"))
        status, reason = next(iter(reply.values()))
        if status == "FOUND" and reason.startswith(LIMIT_ALERT):
            raise self._unavailable(
                path,
                f"it is over a scanning limit of clamd at {self.address} ({reason}); "
                "raise MaxFileSize and MaxScanSize in clamd.conf above limits.max_file_mb",
                reason,
            )
        if status == "FOUND":
            return Verdict(clean=False, signature=reason, scanner=self.name)
        raise self._unavailable(path, f"clamd at {self.address} reported an error", reason)

    def ping(self) -> bool:
        """True when clamd answers PING."""
        client = None
        try:
            client = self._client()
            return bool(client.ping())
        except OSError:
            return False
        finally:
            if client is not None:
                client.close()


def _pending_reply(client: Any) -> str:
    """What clamd said before it closed a connection we were still sending on."""
    try:
        return bytes(client.clamd_socket.recv(4096)).decode("utf-8", "replace")
    except OSError:
        return ""


@dataclass
class MemoryScanner:
    """Signatures by SHA-256 of the content, and an availability switch; for tests."""

    signatures: dict[str, str] = field(default_factory=dict)
    available: bool = True
    scanned: list[Path] = field(default_factory=list)
    name: str = "memory"

    def sign(self, data: bytes, signature: str) -> None:
        """Make content with these bytes infected under this signature name."""
        self.signatures[hashlib.sha256(data).hexdigest()] = signature

    def scan(self, path: Path) -> Verdict:
        """The verdict for the file's content, or Unavailable when switched off."""
        if not self.available:
            raise Unavailable(
                f"{path.name} could not be scanned: the scanner is unavailable", stage="scan"
            )
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        self.scanned.append(path)
        signature = self.signatures.get(digest)
        return Verdict(clean=signature is None, signature=signature, scanner=self.name)

    def ping(self) -> bool:
        """True while switched on."""
        return self.available


def make_scanner(cfg: ScannerConfig) -> Scanner | None:
    """The scanner the configuration asks for, or None when `clamd: off`."""
    if not cfg.enabled:
        return None
    return ClamdScanner(cfg.clamd, timeout=cfg.timeout_seconds)
