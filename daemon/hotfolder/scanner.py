"""Virus scanning: the Scanner seam, clamd through pyclamd, and an in-memory scanner for tests.

A scanner is given the bytes the job read once, the same bytes that are then hashed,
decoded and archived; it never opens a file itself. A clamd on a unix socket gets them
in a memory file sealed against any change (memfd, F_SEAL_WRITE/SHRINK/GROW), its
descriptor passed over the socket (FILDES): clamd scans it where it is, without first
writing a stream down to a temporary file, and needs no access to the service's files,
so it may run as another user. Over TCP, and to a clamd that takes no descriptor (one
behind a relay, or kept from it by its confinement: it answers that it received none),
the bytes are streamed (INSTREAM); a refusal is remembered until clamd goes away, and
the stream's own limit (StreamMaxLength) is probed before the next file is taken as clean.

A verdict is clean only when clamd answered `OK` for the whole file and found the bare
EICAR test file scanned with it (passed alongside it over FILDES, so that clamd scans both
at once; streamed right after it over INSTREAM): clamd answers OK without scanning when it
cannot create the temporary folder of a scan, even for a file passed to it. A signature
is infected. A `Heuristics.Limits.Exceeded` alert (the file is past MaxFileSize,
MaxScanSize, MaxRecursion, MaxScanTime... of clamd: it stopped reading, so nothing was
proved) fails the file (`InputError`), whatever `on_unavailable` says. Every other
outcome raises `Unavailable` (the job waits, SPEC 8.3): an `ERROR` reply, a timeout, a
refused or missing socket, and `Untrusted`, a clamd that answers but would not see
all of a file hotfolder accepts: clamd's `INSTREAM size limit exceeded` (StreamMaxLength
below the file's size), an OK that the EICAR test file does not follow with a find, or
a probe that fails. Before its first scan (and whenever clamd comes back or was not
trusted), the scanner sends clamd a probe of `limits.max_file_mb` whose end holds the
EICAR test file inside a ZIP; unless clamd finds it, no file is taken as clean (clamd's
default `AlertExceedsMax no` answers `OK` for what it skipped).

pyclamd sends each chunk with `socket.send`, which may send part of it, reads a reply
with one `recv` (a reply that arrives in two pieces is parsed as two), and returns None
both for `OK` and for a connection closed without a reply; the connection is wrapped so
that every chunk goes out whole, every reply is read up to its end before pyclamd parses
it, and the reply is kept, so that only `stream: OK` counts as clean. pyclamd also
retries a failed receive five times, so each socket operation gets a fifth of the
configured timeout and a scan never waits longer than the timeout in total.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import logging
import os
import socket
import time
import zipfile
from array import array
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyclamd

from hotfolder.config import ScannerConfig
from hotfolder.errors import InputError, Unavailable

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 16
LIMIT_ALERT = "Heuristics.Limits.Exceeded"
SIZE_LIMIT_REPLY = "INSTREAM size limit exceeded"
CLEAN_REPLY = b"stream: OK"
# pyclamd retries a failed receive this many times before giving up.
RECEIVE_ATTEMPTS = 5
REPLY_END = b"\n"  # pyclamd sends its commands with the `n` prefix: replies end with a newline
# The EICAR test file (68 bytes), stored reversed so that neither this file nor its compiled
# form holds it (a call is not folded into a constant).
EICAR = bytes(reversed(b"*H+H$!ELIF-TSET-SURIVITNA-DRADNATS-RACIE$}7)CC7)^P(45XZP\\4[PA@%P!O5X"))
PROBE_NAME = "the EICAR probe"
CHECK_AGAIN_SECONDS = 60.0  # a clamd that failed the probe is probed again after this long
# clamd names a scanned descriptor `fd[N]` in its reply; any other reply refuses FILDES.
FD_REPLY_START = "fd["
SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL


@dataclass(frozen=True)
class Verdict:
    """What the scanner said about one file."""

    clean: bool
    signature: str | None
    scanner: str


class Scanner(Protocol):
    """Scans a file's bytes (those that are then decoded); raises `Unavailable` whenever it
    cannot prove them clean or infected."""

    def scan(self, data: bytes, name: str) -> Verdict: ...

    def scanning(self, data: bytes, name: str) -> AbstractContextManager[Callable[[], Verdict]]:
        """The scan of the bytes begun; its verdict (or what `scan` raises) comes from calling
        what this yields, so that the caller may do meanwhile what needs none."""

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
        """One whole reply (up to its newline, or all that came before clamd closed), kept."""
        reply = bytearray()
        timeout = self._sock.gettimeout()
        deadline = time.monotonic() + (timeout if timeout is not None else 0.0)
        try:
            while not reply.endswith(REPLY_END):
                if timeout is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError("clamd's reply did not end in time")
                    self._sock.settimeout(left)
                data = self._sock.recv(size)
                if not data:
                    break
                reply += data
        finally:
            self._sock.settimeout(timeout)
        self.received += reply
        return bytes(reply)

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


class Untrusted(Unavailable):
    """clamd answers but would not see all of a file hotfolder accepts: nothing is clean."""

    stage = "scan"


@contextmanager
def sealed_copy(data: bytes) -> Iterator[int]:
    """A descriptor of a memory file holding `data`, sealed: no one can change its bytes."""
    fd = os.memfd_create("hotfolder-scan", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        left = memoryview(data)
        while left:
            left = left[os.write(fd, left):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
        yield fd
    finally:
        os.close(fd)


def parse_fd_reply(reply: str) -> tuple[str, str] | None:
    """(status, reason) from clamd's reply to FILDES, or None when it refused the descriptor."""
    where, sep, said = reply.strip("\0\n ").partition(": ")
    if not sep or not where.startswith(FD_REPLY_START):
        return None
    if said == "OK":
        return "OK", ""
    status = said.rpartition(" ")[2]
    if status in ("FOUND", "ERROR"):
        return status, said.removesuffix(f" {status}")
    return "ERROR", said


def probe_bytes(size: int) -> bytes:
    """`size` bytes ending with a ZIP that holds the EICAR test file, for clamd to find."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zipped:
        zipped.writestr("eicar.com", EICAR)
    tail = archive.getvalue()
    return bytes(max(size - len(tail), 0)) + tail


class ClamdScanner:
    """Scans with clamd: by FILDES over a unix socket, by INSTREAM over TCP or when refused."""

    name = "clamd"

    def __init__(self, address: str, timeout: float = 60.0, max_bytes: int = 0) -> None:
        self.address = address
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._target = parse_address(address)
        self._trusted = False
        self._next_check = 0.0
        self.passes_fd = isinstance(self._target, str)  # until clamd refuses a descriptor
        self._ahead: tuple[ThreadPoolExecutor, Future[str | None]] | None = None

    def _client(self) -> Any:
        step_timeout = self.timeout / RECEIVE_ATTEMPTS
        if isinstance(self._target, str):
            return _UnixClient(self._target, timeout=step_timeout)
        host, port = self._target
        return _NetworkClient(host, port, timeout=step_timeout)

    def _unavailable(self, name: str, why: str, detail: object = "") -> Unavailable:
        return Unavailable(f"{name} could not be scanned: {why}", detail=str(detail), stage="scan")

    def scan(self, data: bytes, name: str) -> Verdict:
        """clamd's verdict on the bytes of the file `name`, or Unavailable."""
        with self.scanning(data, name) as verdict:
            return verdict()

    @contextmanager
    def scanning(self, data: bytes, name: str) -> Iterator[Callable[[], Verdict]]:
        """`scan`, the bytes and the EICAR test file passed to a trusted clamd that takes
        descriptors at once, its replies read when the verdict is asked for: clamd scans in a
        process of its own meanwhile."""
        with ExitStack() as stack:
            sent: list[_Connection] | Unavailable | None = None
            if self._trusted and self.passes_fd:  # else it all happens when asked for
                try:
                    sent = [self._fildes_send(stack, payload, name) for payload in (data, EICAR)]
                except Unavailable as exc:
                    sent = exc

            def verdict() -> Verdict:
                if isinstance(sent, Unavailable):
                    raise sent
                self._ensure_trusted(name)
                return self._judged(name, self._verdicts([data, EICAR], name, sent))

            yield verdict

    def _judged(self, name: str, said: list[tuple[str, str]]) -> Verdict:
        """The verdict from clamd's (status, reason) for a file and for the EICAR test file."""
        (status, reason), eicar = said
        if status == "FOUND" and reason.startswith(LIMIT_ALERT):
            raise InputError(
                f"{name} could not be scanned whole: it is over a scanning limit of clamd"
                f" at {self.address} ({reason}), so it is not taken as clean", detail=reason,
                stage="scan")
        if status == "FOUND":
            return Verdict(clean=False, signature=reason, scanner=self.name)
        if status == "OK":
            problem = self._blind(*eicar)
            if problem is not None:
                self._trusted = False
                raise Untrusted(f"{name} could not be scanned: {problem}", stage="scan")
            return Verdict(clean=True, signature=None, scanner=self.name)
        raise self._unavailable(name, f"clamd at {self.address} reported an error", reason)

    def _blindness(self, name: str) -> str | None:
        """None when clamd finds the bare EICAR test file, else why its OK proves nothing."""
        return self._blind(*self._verdict(EICAR, name))

    def _blind(self, status: str, reason: str) -> str | None:
        """None when clamd's verdict on the bare EICAR test file is that it found it, else why
        an OK of clamd's proves nothing.

        clamd answers OK without scanning when it cannot create the temporary folder of a
        scan (its TemporaryDirectory gone, unwritable or full), even for a file passed to it.
        """
        if status == "FOUND" and not reason.startswith(LIMIT_ALERT):
            return None
        said = "OK" if status == "OK" else f"{status} {reason}"
        return (f"clamd at {self.address} answered {said} for the EICAR test file, so its OK"
                " proves nothing: it answers so without scanning when it cannot create its"
                " temporary folder (check TemporaryDirectory in clamd.conf and the space there)")

    def _ensure_trusted(self, name: str) -> None:
        """Raise Untrusted unless clamd has found the probe since it last went away."""
        if self._trusted:
            return
        problem = self.check_limits(name)
        if problem is not None:
            raise Untrusted(f"{name} could not be scanned: {problem}", stage="scan")
        self._trusted = True

    def check_limits(self, name: str = PROBE_NAME) -> str | None:
        """None when clamd finds the probe of `max_bytes`, else why it cannot be trusted.

        Unavailable (named after `name`, the file waiting for it) when clamd does not answer.
        """
        try:
            status, reason = self._verdict(probe_bytes(self.max_bytes), name)
        except Untrusted as exc:
            return exc.message.removeprefix(f"{name} could not be scanned: ")
        size = f"{self.max_bytes / 1048576:g} MB (limits.max_file_mb)"
        if status == "FOUND" and not reason.startswith(LIMIT_ALERT):
            return None
        if status == "FOUND":
            return (f"clamd at {self.address} stops at its limits ({reason}) for a file of"
                    f" {size}: raise MaxFileSize and MaxScanSize in clamd.conf above it")
        if status == "OK":
            return self._blindness(name) or (
                f"clamd at {self.address} did not find the EICAR test file at the end of a"
                f" file of {size}, so it would answer OK for files it did not read whole:"
                " set AlertExceedsMax yes, ScanArchive yes, and StreamMaxLength, MaxFileSize"
                " and MaxScanSize above limits.max_file_mb in clamd.conf")
        return f"clamd at {self.address} reported an error for the probe: {reason}"

    def _verdict(self, data: bytes, name: str) -> tuple[str, str]:
        """clamd's (status, reason) for the bytes: OK, FOUND or ERROR; Unavailable when none."""
        return self._verdicts([data], name)[0]

    def _verdicts(self, payloads: Sequence[bytes], name: str,
                  sent: Sequence[_Connection] | None = None) -> list[tuple[str, str]]:
        """clamd's (status, reason) for each of the payloads (see `_verdict`), on the
        connections that `sent` them already when given.

        By FILDES while clamd takes descriptors, all of them sent before the first reply is
        read, so that clamd's threads scan them at once; once it refuses one, by INSTREAM,
        one after another, and this clamd is probed again first (its StreamMaxLength counts
        now) unless this is the probe.
        """
        if self.passes_fd:
            said = self._fildes(payloads, name) if sent is None else self._fildes_said(sent, name)
            if said is not None:
                return said
            log.info("clamd at %s takes no file descriptor (FILDES): files are streamed to it"
                     " (INSTREAM)", self.address)
            self.passes_fd = False
            if self._trusted:
                self._trusted = False
                self._ensure_trusted(name)
        return [self._instream(io.BytesIO(payload), name) for payload in payloads]

    def _forget(self) -> None:
        """clamd went away: it may come back with other limits, taking descriptors or not."""
        self._trusted = False
        self.passes_fd = isinstance(self._target, str)

    def _fildes(self, payloads: Sequence[bytes], name: str) -> list[tuple[str, str]] | None:
        """clamd's (status, reason) for each of the payloads, each passed in a sealed memory
        file on a connection of its own, or None when clamd refuses a descriptor."""
        with ExitStack() as stack:
            return self._fildes_said(
                [self._fildes_send(stack, payload, name) for payload in payloads], name)

    def _fildes_said(self, sent: Sequence[_Connection], name: str
                     ) -> list[tuple[str, str]] | None:
        """clamd's (status, reason) on each connection that sent a descriptor, or None when
        it refused one."""
        said = [parse_fd_reply(self._fildes_reply(connection, name)) for connection in sent]
        return None if None in said else [verdict for verdict in said if verdict is not None]

    def _fildes_send(self, stack: ExitStack, payload: bytes, name: str
                     ) -> _Connection:
        """A connection to clamd (closed with `stack`) that has sent the payload by FILDES."""
        fd = stack.enter_context(sealed_copy(payload))
        sock = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        connection = None
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._target)
            connection = _Connection(sock)
            connection.send(b"nFILDES\n")
            sock.sendmsg([b"\0"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array("i", [fd]))])
        except OSError as exc:
            self._forget()
            raise self._failure(name, connection, exc) from None
        return connection

    def _fildes_reply(self, connection: _Connection, name: str) -> str:
        """clamd's reply on a connection that sent a descriptor."""
        try:
            reply = connection.recv(4096).decode("utf-8", "replace")
        except OSError as exc:
            self._forget()
            raise self._failure(name, connection, exc) from None
        if not reply:
            raise self._hung_up(name, reply)
        return reply

    def _instream(self, stream: Any, name: str) -> tuple[str, str]:
        """clamd's (status, reason) for a stream: OK, FOUND or ERROR; Unavailable when none."""
        client = None
        try:
            client = self._client()
            reply = client.scan_stream(stream, chunk_size=CHUNK_BYTES)
        except pyclamd.BufferTooLongError as exc:
            raise self._size_limit(name, exc) from None
        except OSError as exc:
            self._forget()
            raise self._failure(name, None if client is None else client.clamd_socket,
                                exc) from None
        finally:
            if client is not None:
                client.close()
        if reply:
            status, reason = next(iter(reply.values()))
            return str(status), str(reason)
        # pyclamd also returns None when clamd hangs up without a word (it does when it
        # cannot write its temporary file): only an explicit OK is clean.
        received = bytes(client.clamd_socket.received)
        if received.strip(b"\0\n ") == CLEAN_REPLY:
            return "OK", ""
        raise self._hung_up(name, received.decode("utf-8", "replace"))

    def _failure(self, name: str, connection: Any, exc: OSError) -> Unavailable:
        """The plain reason a scan broke off (on `connection`, None when it was not made):
        no clamd, a size limit, a timeout."""
        if connection is None:
            return self._unavailable(
                name, f"clamd at {self.address} is not reachable (is clamd running?)", exc
            )
        # pyclamd turns a failed receive into its own ConnectionError; the cause is its context.
        cause = exc.__context__ if isinstance(exc.__context__, OSError) else exc
        if isinstance(cause, TimeoutError):
            return self._unavailable(
                name, f"clamd at {self.address} did not answer within {self.timeout:g} s", exc
            )
        pending = _pending_reply(connection)
        if SIZE_LIMIT_REPLY in pending:
            return self._size_limit(name, pending)
        if isinstance(cause, BrokenPipeError | ConnectionResetError):
            return self._hung_up(name, exc)
        return self._unavailable(name, f"the connection to clamd at {self.address} failed", exc)

    def _hung_up(self, name: str, detail: object) -> Unavailable:
        return self._unavailable(
            name, f"clamd at {self.address} closed the connection without a verdict "
            "(see its log)", detail)

    def _size_limit(self, name: str, detail: object) -> Untrusted:
        return Untrusted(
            f"{name} could not be scanned: clamd at {self.address} refused it as larger than"
            " its StreamMaxLength; raise StreamMaxLength in clamd.conf above limits.max_file_mb",
            detail=str(detail), stage="scan")

    def probe_ahead(self) -> None:
        """Have clamd read the limits probe now, in a thread, while the service starts (a
        file of max_bytes takes it a while): the next `ping` takes that finding."""
        pool = ThreadPoolExecutor(1, thread_name_prefix="scanner-probe")
        self._ahead = (pool, pool.submit(self.check_limits))

    def ping(self) -> bool:
        """True when clamd answers PING and has found the probe since it last went away."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead[0].shutdown(wait=True)  # no thread of it is left when the service forks
        client = None
        try:
            client = self._client()
            answers = bool(client.ping())
        except OSError:
            answers = False
        finally:
            if client is not None:
                client.close()
        if not answers:
            self._forget()
            self._next_check = 0.0  # probed again as soon as it is back
            return False
        if not self._trusted and time.monotonic() >= self._next_check:
            try:
                problem = self.check_limits() if ahead is None else ahead[1].result()
            except Unavailable:
                return False  # it broke off (clamd restarting): probed again at the next ping
            if problem is None:
                self._trusted = True
            else:
                self._next_check = time.monotonic() + CHECK_AGAIN_SECONDS
                log.error("the virus scanner cannot be trusted, files wait: %s", problem)
        return self._trusted


def _pending_reply(connection: Any) -> str:
    """What clamd said before it closed a connection we were still sending on."""
    try:
        return bytes(connection.recv(4096)).decode("utf-8", "replace")
    except OSError:
        return ""


@dataclass
class MemoryScanner:
    """Signatures by SHA-256 of the content, and an availability switch; for tests."""

    signatures: dict[str, str] = field(default_factory=dict)
    available: bool = True
    scanned: list[str] = field(default_factory=list)
    name: str = "memory"

    def sign(self, data: bytes, signature: str) -> None:
        """Make content with these bytes infected under this signature name."""
        self.signatures[hashlib.sha256(data).hexdigest()] = signature

    def scan(self, data: bytes, name: str) -> Verdict:
        """The verdict for these bytes, or Unavailable when switched off."""
        if not self.available:
            raise Unavailable(f"{name} could not be scanned: the scanner is unavailable",
                              stage="scan")
        digest = hashlib.sha256(data).hexdigest()
        self.scanned.append(name)
        signature = self.signatures.get(digest)
        return Verdict(clean=signature is None, signature=signature, scanner=self.name)

    @contextmanager
    def scanning(self, data: bytes, name: str) -> Iterator[Callable[[], Verdict]]:
        """`scan`, when the verdict is asked for."""
        yield lambda: self.scan(data, name)

    def ping(self) -> bool:
        """True while switched on."""
        return self.available


class ScannerWatch:
    """Whether a scanner answers, from its latest ping; logs each change."""

    def __init__(self, scanner: Scanner | None) -> None:
        self.scanner = scanner
        self.up = False  # until the first ping

    @property
    def down(self) -> bool:
        """A scanner is configured and did not answer the latest ping."""
        return self.scanner is not None and not self.up

    def ping(self) -> bool:
        """Ping the scanner; True when it answers again after not answering (or at first)."""
        if self.scanner is None:
            return False
        up = self.scanner.ping()
        if up != self.up:
            log.log(logging.INFO if up else logging.WARNING, "the virus scanner is %s",
                    "answering" if up else "not answering")
        came_back, self.up = up and not self.up, up
        return came_back


def make_scanner(cfg: ScannerConfig, max_bytes: int) -> ClamdScanner | None:
    """The scanner the configuration asks for (files up to max_bytes), or None when `clamd: off`."""
    if not cfg.enabled:
        return None
    return ClamdScanner(cfg.clamd, timeout=cfg.timeout_seconds, max_bytes=max_bytes)
