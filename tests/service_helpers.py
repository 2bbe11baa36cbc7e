"""Helpers for end-to-end tests: a hot-folder root and the service as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from helpers import wait_until
from server_process import free_port

READY_SECONDS = 30.0


def files_under(folder: Path) -> list[Path]:
    """Every file (not folder) under folder, sorted."""
    return sorted(p for p in folder.rglob("*") if not p.is_dir()) if folder.exists() else []


def make_root(root: Path, clamd_address: str = "off", **overrides: Any) -> Path:
    """Write a test configuration (fast settle and rescan, 2 workers, free ports); its path."""
    config: dict[str, Any] = {
        "root": str(root),
        "watch": {"settle_seconds": 0.3, "rescan_seconds": 2},
        "scanner": {"clamd": clamd_address, "timeout_seconds": 5},
        # Below the test clamd's MaxFileSize, so that it passes the scan-limit probe.
        "limits": {"max_file_mb": 3},
        "queue": {"workers": 2},
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
        "web": {"listen": f"127.0.0.1:{free_port()}"},
    }
    for section, values in overrides.items():
        if isinstance(values, dict):
            config.setdefault(section, {}).update(values)
        else:
            config[section] = values
    root.mkdir(parents=True, exist_ok=True)
    for folder in ("inbox", "recipes"):
        (root / folder).mkdir(exist_ok=True)
    path = root / "hotfolder.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Daemon:
    """`hotfolder run` (or `worker`) on a root, as a subprocess, told apart by its NOTIFY_SOCKET."""

    def __init__(self, config: Path, command: str = "run") -> None:
        self.config = config
        self.command = command
        self.root = config.parent
        self.log = self.root / "service.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.notify_path = self.root / "notify.sock"
        self.notify: socket.socket | None = None
        cfg = yaml.safe_load(config.read_text())
        self.metrics_url = f"http://{cfg['metrics']['listen']}"

    def start(self, *, wait_ready: bool = True) -> None:
        """Start the service and wait for its READY=1 notification."""
        self.notify_path.unlink(missing_ok=True)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        env = {**os.environ, "NOTIFY_SOCKET": str(self.notify_path), "WATCHDOG_USEC": "5000000"}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hotfolder.cli", self.command, "-c", str(self.config)],
                stdout=out, stderr=subprocess.STDOUT, env=env)
        if wait_ready:
            wait_until(lambda: "READY=1" in self.notifications(), READY_SECONDS,
                       f"READY=1 from the service (log: {self.tail()})")

    def notifications(self, timeout: float = 0.05) -> str:
        """The sd_notify messages received since the last call."""
        assert self.notify is not None
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the service exited with {self.process.returncode}:"
                                 f" {self.tail()}")
        messages = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.notify.settimeout(left)
            try:
                messages.append(self.notify.recv(4096).decode())
            except TimeoutError:
                break
        return "\n".join(messages)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        finally:
            self._close()
        return code

    def kill(self) -> None:
        """SIGKILL the service's main process, as a power cut or OOM kill would."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self._close()

    def _close(self) -> None:
        if self.notify is not None:
            self.notify.close()
            self.notify = None
        self.process = None

    def children(self) -> list[int]:
        """Process ids whose parent is the service."""
        assert self.process is not None
        return children_of(self.process.pid)

    def get(self, path: str) -> tuple[int, str]:
        """(status, body) of a GET on the metrics server."""
        try:
            with urllib.request.urlopen(self.metrics_url + path, timeout=5) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample's value from /metrics, or None when absent."""
        _, body = self.get("/metrics")
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v
                                               for k, v in labels.items()):
                    return float(sample.value)
        return None

    def status(self) -> dict[str, Any]:
        """`hotfolder status --json` for this root."""
        out = subprocess.run(
            [sys.executable, "-m", "hotfolder.cli", "status", "--json", "-c", str(self.config)],
            capture_output=True, check=True)
        result: dict[str, Any] = json.loads(out.stdout)
        return result


def children_of(pid: int) -> list[int]:
    """Process ids whose parent is pid (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """True while a (non-zombie) process with this id exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def start(daemons: list[Daemon], config: Path) -> Daemon:
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.start()
    return daemon

