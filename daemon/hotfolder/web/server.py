"""uvicorn in a thread of the service: started after the workers, stopped before them."""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn

from hotfolder.errors import ConfigError
from hotfolder.metrics import parse_listen
from hotfolder.web.app import create_app
from hotfolder.web.console import Backend, remove_temporary
from hotfolder.web.events import Hub

log = logging.getLogger("hotfolder.web")

START_SECONDS = 10.0
STOP_SECONDS = 5


def bind(listen: str) -> socket.socket:
    """A listening socket on `host:port`; ConfigError in plain words when it cannot be had."""
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"web.listen {listen}: cannot listen there"
                          f" ({exc.strerror or exc})") from None
    sock.listen(128)
    return sock


class WebServer:
    """The console of one service on `web.listen`."""

    def __init__(self, backend: Backend) -> None:
        assert backend.cfg.web.listen is not None
        self.listen = backend.cfg.web.listen
        self.hub = Hub(backend.journal)
        self.work = backend.layout.work
        config = uvicorn.Config(create_app(backend, self.hub), log_config=None,
                                log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=STOP_SECONDS)
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen, serve from a thread, and return once requests are answered."""
        removed = remove_temporary(self.work)
        if removed:
            log.info("removed %d upload(s) cut off by the last stop", removed)
        sock = bind(self.listen)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       name="web", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + START_SECONDS
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"web.listen {self.listen}: the console did not start")
            time.sleep(0.01)
        log.info("console on http://%s/", self.listen)

    def stop(self) -> None:
        """End the event streams, let requests in progress finish, and stop."""
        self.hub.close()
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(STOP_SECONDS * 2)
