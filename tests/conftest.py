"""Shared fixtures: the test servers, a web server, the command line, started services."""

from __future__ import annotations

import http.server
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import image_bytes
from service_helpers import Daemon

pytest_plugins = ["clamd_server", "moto_server", "redis_server"]

RunCli = Callable[..., tuple[int, str, str]]
MountTmpfs = Callable[..., Path]

# A recipe of nine lists of nine, nested: 220 bytes that stand for 9^6 (531441) values.
YAML_BOMB = "".join(
    f"{name}: &{name} [{', '.join([item] * 9)}]\n"
    for name, item in zip("abcde", ['"x"', "*a", "*b", "*c", "*d"], strict=True)
) + f"steps: [{', '.join(['*e'] * 9)}]\n"


class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every GET with a small PNG and remembers the path asked for."""

    hits: list[str] = []  # noqa: RUF012

    def do_GET(self) -> None:
        Recorder.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        self.wfile.write(image_bytes("PNG", (10, 10)))

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def web() -> Iterator[str]:
    """A local web server that records every request in `Recorder.hits`; yields its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    Recorder.hits.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def no_machine_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No configuration of this machine applies, and no virus scanner is asked."""
    monkeypatch.setenv("HOTFOLDER_CONFIG", str(tmp_path / "no-such-config.yaml"))
    monkeypatch.setenv("HOTFOLDER_SCANNER__CLAMD", "off")


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> RunCli:
    """Run `hotfolder ARGS...` in this process from folder `cwd`: (exit code, stdout, stderr)."""
    from hotfolder.cli import main  # noqa: PLC0415  (only the tests that use it import it)

    def run(cwd: Path, *args: str | Path) -> tuple[int, str, str]:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(cwd)
            code = main([str(arg) for arg in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[MountTmpfs]:
    """`tmpfs(name, size="3m")`: a real tmpfs mounted at tmp_path/name (root only), unmounted
    afterwards; a small, separate filesystem for full-disk and cross-filesystem cases."""
    mounted: list[Path] = []

    def mount(name: str, size: str = "3m") -> Path:
        folder = tmp_path / name
        folder.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                       check=True)
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Services started by a test; any still running at the end are killed."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        if daemon.process is not None:
            daemon.kill()
