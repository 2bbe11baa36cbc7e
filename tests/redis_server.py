"""A real Redis for the tests: Debian's redis-server on its own port in a temporary folder.

Nothing is persisted (`--save "" --appendonly no`); `flush()` empties it between tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from server_process import ServerProcess, free_port, serving


class RedisServer(ServerProcess):
    """redis-server bound to 127.0.0.1; `url` is what `queue.url` takes."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        super().__init__(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(directory), "--save", "", "--appendonly", "no"],
            directory / "redis.log", self.answers,
        )

    def answers(self) -> bool:
        """True when the server answers PING."""
        try:
            with redis.Redis(port=self.port, socket_timeout=1) as conn:
                return bool(conn.ping())
        except redis.RedisError:
            return False

    def flush(self) -> None:
        """Empty every database."""
        with redis.Redis(port=self.port) as conn:
            conn.flushall()


@pytest.fixture(scope="session")
def redis_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A running redis-server for the whole session."""
    with serving(lambda: RedisServer(tmp_path_factory.mktemp("redis")),
                 "Debian package redis-server") as server:
        yield server


@pytest.fixture
def redis_server(redis_session: RedisServer) -> RedisServer:
    """The session's redis-server, running and empty."""
    redis_session.start()
    redis_session.flush()
    return redis_session
