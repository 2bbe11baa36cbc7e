"""A real clamd for the tests: Debian's clamd in the foreground, on its own sockets, with a test DB.

It listens on a unix socket (`address`) and on a free TCP port of 127.0.0.1 (`tcp_address`).
The signature database is a hash file (`MD5:SIZE:Name`) with EICAR and a
harmless PNG made here, so clamd starts offline in well under a second.
`StreamMaxLength` (`STREAM_MAX_BYTES`) and `MaxFileSize` (`FILE_MAX_BYTES`) are
small so that clamd's size-limit reply and its limit alert can be provoked
without huge files; clamd writes each stream (INSTREAM) to `temp_dir` before scanning
it, and scans a passed file (FILDES) where it is.

`HeldClamd` stands in for clamd where a test must decide when a scan ends: it
answers PING at once and holds every scan without a verdict until the test lets
scans through, so a job in its scan stays running however fast the machine is.
`small_clamd` is a second one as clamd is often left: a MaxFileSize of 1 MB and
AlertExceedsMax at its default (no), so it answers OK for what it skips.
`SplitReplies` relays a clamd's replies in two pieces, as a slow network may; like any
relay of bytes, it passes no file descriptor.
"""

from __future__ import annotations

import array
import contextlib
import hashlib
import io
import math
import os
import select
import shutil
import signal
import socket
import socketserver
import struct
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from helpers import image_bytes
from server_process import ServerProcess, free_port

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_SIGNATURE = "Eicar-Test-Signature"
IMAGE_SIGNATURE = "Hotfolder-Test-Image"
STREAM_MAX_BYTES = 8 * 1024 * 1024
FILE_MAX_BYTES = 4 * 1024 * 1024

CONFIG = """\
LocalSocket {socket}
TCPSocket {port}
TCPAddr 127.0.0.1
Foreground yes
DatabaseDirectory {db}
PidFile {dir}/clamd.pid
LogFile {dir}/clamd.log
TemporaryDirectory {dir}/tmp
StreamMaxLength {stream_max}
MaxFileSize {file_max}
MaxScanSize {scan_max}
SelfCheck 0
"""
SMALL_FILE_MAX_BYTES = 1024 * 1024


def image_then_zip_bomb() -> bytes:
    """A JPEG followed by a small ZIP that holds 40 MB of zeros (clamd's MaxScanSize is 32 MB)."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for index in range(10):
            zipped.writestr(f"part{index}.bin", bytes(4 * 1024 * 1024 - 64))
    return image_bytes("JPEG", (32, 24)) + archive.getvalue()


def ping(path: Path, timeout: float = 1.0) -> bool:
    """True when a clamd answers zPING on the unix socket at path."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(b"zPING\0")
            return sock.recv(16).startswith(b"PONG")
    except OSError:
        return False


class Clamd(ServerProcess):
    """One clamd process, started and stopped on demand."""

    def __init__(self, directory: Path, file_max_bytes: int = FILE_MAX_BYTES,
                 alert_exceeds_max: bool = True) -> None:
        self.dir = directory
        self.socket = directory / "clamd.sock"
        self.address = f"unix://{self.socket}"
        self.port = free_port()
        self.tcp_address = f"tcp://127.0.0.1:{self.port}"
        self.eicar = EICAR
        self.stream_max_bytes = STREAM_MAX_BYTES
        self.file_max_bytes = file_max_bytes
        self.temp_dir = directory / "tmp"
        self.temp_dir.mkdir(exist_ok=True)
        self.signed_image = directory / "signed.png"
        self.clean_image = directory / "clean.png"
        self.signed_image.write_bytes(image_bytes("PNG", (32, 32), seed=1))
        self.clean_image.write_bytes(image_bytes("PNG", (32, 32), seed=2))
        signed = self.signed_image.read_bytes()
        db = directory / "db"
        db.mkdir(exist_ok=True)
        (db / "hotfolder-test.hdb").write_text(
            f"{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:{EICAR_SIGNATURE}\n"
            f"{hashlib.md5(signed).hexdigest()}:{len(signed)}:{IMAGE_SIGNATURE}\n"
        )
        self.config = directory / "clamd.conf"
        self.config.write_text(CONFIG.format(
            socket=self.socket, port=self.port, db=db, dir=directory, stream_max=STREAM_MAX_BYTES,
            file_max=file_max_bytes, scan_max=4 * STREAM_MAX_BYTES)
            + ("AlertExceedsMax yes\n" if alert_exceeds_max else ""))
        super().__init__(["clamd", "-c", str(self.config)], directory / "clamd.out",
                         lambda: ping(self.socket))

    def stop(self) -> None:
        """Stop clamd; its socket is gone afterwards."""
        super().stop()
        self.socket.unlink(missing_ok=True)

    @contextmanager
    def temp_dir_away(self) -> Iterator[None]:
        """clamd's temporary folder is gone inside the block: it cannot write a stream down."""
        away = self.temp_dir.with_name("tmp.away")
        self.temp_dir.rename(away)
        try:
            yield
        finally:
            away.rename(self.temp_dir)

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """clamd is suspended (SIGSTOP) inside the block: it accepts connections, answers none."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.process.pid, signal.SIGCONT)


class HeldClamd:
    """A clamd on a unix socket that answers PING, and answers a scan only when let through.

    Every scan (INSTREAM read whole, or FILDES: the passed file read) is then held without
    a reply (its client waits, as on a clamd that hangs) until `let_through` allows it; a
    scan let through is clean. A file holding the EICAR test file (hotfolder's scan-limit
    probe, or the bare test file) is found at once, and counted (`found`).
    """

    def __init__(self, directory: Path) -> None:
        self.socket = directory / "held-clamd.sock"
        self.address = f"unix://{self.socket}"
        self.holding = 0  # scans read whole, waiting for a verdict, their client still there
        self.answered = 0
        self.found = 0  # scans of files holding the EICAR test file (answered at once)
        self.streams: list[bytes] = []  # what each scan got, in order (the probes left out)
        self._allowed = 0.0
        self._closed = False
        self._changed = threading.Condition()
        self._server = _HeldServer(str(self.socket), self)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop serving; scans still held end without a verdict."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self.socket.unlink(missing_ok=True)

    def let_through(self, scans: float = math.inf) -> None:
        """Answer `scans` more scans, the held ones first (by default every scan from now on)."""
        with self._changed:
            self._allowed += scans
            self._changed.notify_all()

    def hold(self, client: socket.socket) -> bool:
        """Wait until this scan may be answered (True) or its client has gone (False)."""
        with self._changed:
            self.holding += 1
        try:
            while not _gone(client):
                with self._changed:
                    if self._closed:
                        return False
                    if self._allowed > 0:
                        self._allowed -= 1
                        self.answered += 1
                        return True
                    self._changed.wait(0.05)
            return False
        finally:
            with self._changed:
                self.holding -= 1


def _gone(client: socket.socket) -> bool:
    """True when the peer has closed a connection on which it has nothing more to send."""
    readable, _, _ = select.select([client], [], [], 0)
    if not readable:
        return False
    try:
        return client.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class _HeldServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, clamd: HeldClamd) -> None:
        self.clamd = clamd
        super().__init__(path, _HeldRequest)


class _HeldRequest(socketserver.StreamRequestHandler):
    """One connection: `nPING` or `zPING` gets PONG; `nINSTREAM` and `nFILDES` are read and
    held."""

    server: _HeldServer

    def handle(self) -> None:
        command, passed = self._read_command()
        name = command.decode("ascii", "replace").lstrip("nz")
        # A client killed while its scan was held is gone by the time of the answer.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if name == "PING":
                self.wfile.write(b"PONG\n")
                return
            if name == "INSTREAM":
                where, scanned = "stream", self._read_stream()
            elif name == "FILDES":
                where, scanned = "fd[9]", self._read_passed(passed)
            else:
                return
            if scanned is None:
                return
            if EICAR in scanned:  # hotfolder's scan-limit probe: found at once, as clamd would
                self.server.clamd.found += 1
                self.wfile.write(f"{where}: {EICAR_SIGNATURE} FOUND\n".encode())
                return
            self.server.clamd.streams.append(scanned)
            if self.server.clamd.hold(self.request):
                self.wfile.write(f"{where}: OK\n".encode())

    def _read_command(self) -> tuple[bytes, list[int]]:
        """The command up to its terminator, and the descriptors passed with it, read from the
        socket itself (a buffered read would drop the descriptors)."""
        command, passed = bytearray(), []
        while True:
            byte, fds = self._receive()
            passed += fds
            if byte in (b"", b"\n", b"\0"):
                return bytes(command), passed
            command += byte

    def _receive(self) -> tuple[bytes, list[int]]:
        """One byte, and any descriptors that came with it."""
        byte, ancillary, _, _ = self.request.recvmsg(1, socket.CMSG_SPACE(16))
        fds = array.array("i")
        for level, kind, data in ancillary:
            if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS):
                fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
        return byte, list(fds)

    def _read_passed(self, passed: list[int]) -> bytes | None:
        """The content of the file passed after FILDES (with the byte that follows it)."""
        if not passed:
            _, passed = self._receive()
        if not passed:
            self.wfile.write(b"No file descriptor received. ERROR\n")
            return None
        try:
            return os.pread(passed[0], os.fstat(passed[0]).st_size, 0)
        finally:
            for fd in passed:
                os.close(fd)

    def _read_stream(self) -> bytes | None:
        """Read the chunks up to the empty one; None when the client hangs up first."""
        stream = bytearray()
        while len(head := self.rfile.read(4)) == 4:
            (size,) = struct.unpack("!L", head)
            if size == 0:
                return bytes(stream)
            chunk = self.rfile.read(size)
            if len(chunk) != size:
                return None
            stream += chunk
        return None


@pytest.fixture
def held_clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeldClamd]:
    """A clamd that holds every scan until the test calls `let_through`."""
    server = HeldClamd(tmp_path_factory.mktemp("held-clamd"))
    server.start()
    yield server  # pytest runs the rest when the test ends, passed or failed
    server.stop()


@pytest.fixture(scope="session")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clamd]:
    """A running clamd for the whole session (tests that stop it use `clamd.stopped()`)."""
    if shutil.which("clamd") is None:
        pytest.fail("clamd is not installed: run `make setup` (Debian package clamav-daemon)")
    server = Clamd(tmp_path_factory.mktemp("clamd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def small_clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clamd]:
    """A clamd with MaxFileSize 1 MB that answers OK for larger files (AlertExceedsMax no)."""
    if shutil.which("clamd") is None:
        pytest.fail("clamd is not installed: run `make setup` (Debian package clamav-daemon)")
    server = Clamd(tmp_path_factory.mktemp("small-clamd"), file_max_bytes=SMALL_FILE_MAX_BYTES,
                   alert_exceeds_max=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class SplitReplies:
    """A unix socket relaying to a clamd, its replies sent in two pieces a moment apart."""

    PAUSE_SECONDS = 0.2

    def __init__(self, clamd: Clamd, directory: Path) -> None:
        self.clamd = clamd
        self.socket = directory / "split.sock"
        self.address = f"unix://{self.socket}"
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self.socket))
        self._listener.listen()
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            thread = threading.Thread(target=self._relay, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _relay(self, client: socket.socket) -> None:
        with client, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as upstream:
            upstream.connect(str(self.clamd.socket))
            sending = threading.Thread(target=_forward, args=(client, upstream), daemon=True)
            sending.start()
            with contextlib.suppress(OSError):  # the client may hang up first (after a PONG)
                while reply := upstream.recv(4096):
                    half = max(len(reply) // 2, 1)
                    client.sendall(reply[:half])
                    time.sleep(self.PAUSE_SECONDS)  # the first piece is read on its own
                    client.sendall(reply[half:])
                client.shutdown(socket.SHUT_WR)  # clamd is done: so is the relay
            sending.join()

    def close(self) -> None:
        """Stop relaying and wait for the connections to end."""
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept
        self._listener.close()
        self._accepting.join()
        for thread in self._threads:
            thread.join()


def _forward(source: socket.socket, target: socket.socket) -> None:
    """Copy source to target until source ends, then end target's writing side."""
    with contextlib.suppress(OSError):
        while data := source.recv(1 << 16):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


@pytest.fixture
def split_clamd(clamd: Clamd, tmp_path: Path) -> Iterator[SplitReplies]:
    """The session clamd behind a relay that splits each of its replies in two."""
    relay = SplitReplies(clamd, tmp_path)
    try:
        yield relay
    finally:
        relay.close()
