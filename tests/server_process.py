"""A server process for tests: started on demand, ready when a probe answers, stopped cleanly."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from helpers import wait_until

START_SECONDS = 60.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """One server started from `argv`, its output in `log`, ready when `probe()` is true."""

    def __init__(self, argv: list[str], log: Path, probe: Callable[[], bool]) -> None:
        self.argv = argv
        self.log = log
        self.probe = probe
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the server (if it is not running) and wait until the probe answers."""
        if self.running:
            return
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT)
        process = self.process
        try:
            wait_until(lambda: process.poll() is not None or self.probe(), START_SECONDS,
                       f"{self.argv[0]} to answer")
        except AssertionError as exc:
            raise self._failed(str(exc)) from None
        if process.poll() is not None:
            raise self._failed(f"it exited with {process.returncode}")

    def _failed(self, why: str) -> RuntimeError:
        """Stop the server; the error that says why it did not start, with its log's end."""
        self.stop()
        tail = self.log.read_text(errors="replace")[-2000:]
        return RuntimeError(f"{self.argv[0]} did not start, {why}:\n{tail}")

    def stop(self) -> None:
        """Stop the server and wait until it is gone."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    @contextmanager
    def stopped(self) -> Iterator[None]:
        """The server is stopped inside the block and running again after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()


Server = TypeVar("Server", bound=ServerProcess)


@contextmanager
def serving(make: Callable[[], Server], package: str) -> Iterator[Server]:
    """A server made by `make`, running inside the block; fails the test if not installed."""
    server = make()
    if shutil.which(server.argv[0]) is None:
        pytest.fail(f"{server.argv[0]} is not installed: run `make setup` ({package})")
    server.start()
    try:
        yield server
    finally:
        server.stop()
