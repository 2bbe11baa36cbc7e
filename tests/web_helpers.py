"""Helpers for tests of the console: multipart bodies and plain HTTP to a running service."""

from __future__ import annotations

import contextlib
import http.client
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml


def web_address(config: Path) -> tuple[str, int]:
    """The console's (host, port) from a test configuration."""
    host, _, port = yaml.safe_load(config.read_text())["web"]["listen"].rpartition(":")
    return host, int(port)


def multipart(fields: dict[str, str], files: Sequence[tuple[str, bytes]],
              file_field: str = "files") -> tuple[bytes, str]:
    """A multipart/form-data body with `fields` first, then `files` (name, content)."""
    boundary = secrets.token_hex(16)
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
             f"{value}\r\n".encode() for name, value in fields.items()]
    for name, content in files:
        quoted = name.replace('"', "%22")
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}";'
                     f' filename="{quoted}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                     .encode() + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class Reply:
    """A response: status, headers (lower-case names), body."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.body[:300]!r})"


class Api:
    """Plain HTTP requests to one console."""

    def __init__(self, config: Path, headers: dict[str, str] | None = None) -> None:
        self.host, self.port = web_address(config)
        self.headers = headers or {}

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers={**self.headers, **(headers or {})})
            response = conn.getresponse()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()},
                         response.read())
        finally:
            conn.close()

    def get(self, path: str, **headers: str) -> Reply:
        return self.request("GET", path, headers=headers)

    def post_json(self, path: str, value: Any, **headers: str) -> Reply:
        return self.request("POST", path, json.dumps(value).encode(),
                            {"Content-Type": "application/json", **headers})

    def upload(self, folder: str, files: Sequence[tuple[str, bytes]], **headers: str) -> Reply:
        body, kind = multipart({"folder": folder}, files)
        return self.request("POST", "/api/v1/uploads", body, {"Content-Type": kind, **headers})

    def job(self, job_id: str) -> dict[str, Any]:
        reply = self.get(f"/api/v1/jobs/{job_id}")
        assert reply.status == 200, reply
        found: dict[str, Any] = reply.json()
        return found

    @contextmanager
    def events(self) -> Iterator[list[dict[str, Any]]]:
        """The `job` events of /api/v1/events, collected by a thread as they come.

        Each event's fields, plus `received`: the `time.perf_counter()` of its arrival.
        """
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        conn.request("GET", "/api/v1/events", headers=self.headers)
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("content-type", "").startswith("text/event-stream")
        assert response.readline().startswith(b"retry:")
        seen: list[dict[str, Any]] = []

        def read() -> None:
            kind = ""
            with contextlib.suppress(OSError, ValueError):
                while line := response.readline():
                    text = line.decode().rstrip("\n")
                    if text.startswith("event: "):
                        kind = text[len("event: "):]
                    elif text.startswith("data: ") and kind == "job":
                        seen.append({**json.loads(text[len("data: "):]),
                                     "received": time.perf_counter()})

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            yield seen
        finally:
            assert conn.sock is not None
            conn.sock.shutdown(socket.SHUT_RDWR)
            reader.join(10)
            conn.close()
