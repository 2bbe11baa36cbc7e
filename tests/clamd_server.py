"""A real clamd for the tests: Debian's clamd in the foreground, on its own sockets, with a test DB.

It listens on a unix socket (`address`) and on a free TCP port of 127.0.0.1 (`tcp_address`).
The signature database is a hash file (`MD5:SIZE:Name`) with EICAR and a
harmless PNG made here, so clamd starts offline in well under a second.
`StreamMaxLength` (`STREAM_MAX_BYTES`) and `MaxFileSize` (`FILE_MAX_BYTES`) are
small so that clamd's size-limit reply and its limit alert can be provoked
without huge files; clamd writes each stream to `temp_dir` before scanning it.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

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
AlertExceedsMax yes
SelfCheck 0
"""


def png(size: tuple[int, int], seed: int) -> bytes:
    """A small deterministic PNG; different seeds give different bytes."""
    image = Image.new("RGB", size)
    image.putdata([((x * 7 + seed) % 256, (x * 3) % 256, seed % 256)
                   for x in range(size[0] * size[1])])
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


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

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.socket = directory / "clamd.sock"
        self.address = f"unix://{self.socket}"
        self.port = free_port()
        self.tcp_address = f"tcp://127.0.0.1:{self.port}"
        self.eicar = EICAR
        self.stream_max_bytes = STREAM_MAX_BYTES
        self.file_max_bytes = FILE_MAX_BYTES
        self.temp_dir = directory / "tmp"
        self.temp_dir.mkdir(exist_ok=True)
        self.signed_image = directory / "signed.png"
        self.clean_image = directory / "clean.png"
        self.signed_image.write_bytes(png((32, 32), seed=1))
        self.clean_image.write_bytes(png((32, 32), seed=2))
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
            file_max=FILE_MAX_BYTES, scan_max=4 * STREAM_MAX_BYTES))
        super().__init__(["clamd", "-c", str(self.config)], directory / "clamd.out",
                         lambda: ping(self.socket))

    def stop(self) -> None:
        """Stop clamd; its socket is gone afterwards."""
        super().stop()
        self.socket.unlink(missing_ok=True)

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """clamd is suspended (SIGSTOP) inside the block: it accepts connections, answers none."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.process.pid, signal.SIGCONT)


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
