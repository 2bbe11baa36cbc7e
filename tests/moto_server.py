"""A real S3 endpoint for the tests: moto's server over HTTP on its own port.

`moto_server -H 127.0.0.1 -p PORT` speaks the S3 API; boto3 reaches it with
`endpoint_url`. A stopped server comes back empty, so tests that stop it create
their bucket again (`S3Endpoint.bucket()`). `s3_limits` is moto with S3's limit on
object metadata (2 KB), which moto alone does not enforce (tests/moto_limits.py);
`S3Endpoint(..., metadata_limit=N)` is a store that takes less.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig

from server_process import ServerProcess, free_port, serving

REGION = "us-east-1"
S3_METADATA_BYTES = 2048  # what S3 takes of an object's user metadata, keys and values


class S3Endpoint(ServerProcess):
    """moto's S3 server; `client()` talks to it with test credentials."""

    def __init__(self, log_dir: Path, *, metadata_limit: int | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._client: Any = None
        limits = Path(__file__).with_name("moto_limits.py")
        argv = (["moto_server", "-H", "127.0.0.1", "-p", str(self.port)] if metadata_limit is None
                else [sys.executable, str(limits), str(self.port), str(metadata_limit)])
        super().__init__(argv, log_dir / "moto.log", self.answers)

    def answers(self) -> bool:
        """True when the server answers HTTP."""
        try:
            with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1):
                return True
        except (urllib.error.URLError, OSError):
            return False

    def reset(self) -> None:
        """Forget every bucket and object."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def client(self) -> Any:
        """A boto3 S3 client for this endpoint, with test credentials of its own."""
        if self._client is None:
            self._client = boto3.session.Session().client(
                "s3", endpoint_url=self.url, region_name=REGION,
                aws_access_key_id="testing", aws_secret_access_key="testing",
                config=BotoConfig(s3={"addressing_style": "path"}),
            )
        return self._client

    def bucket(self, name: str = "hotfolder-results") -> str:
        """Create `name` (again, after a restart) and return it."""
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """A running moto server for the whole session."""
    with serving(lambda: S3Endpoint(tmp_path_factory.mktemp("moto")), "pip moto[server]") as server:
        yield server


@pytest.fixture(scope="session")
def s3_limits_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """A running moto server with S3's metadata limit, for the whole session."""
    def make() -> S3Endpoint:
        return S3Endpoint(tmp_path_factory.mktemp("moto-limits"), metadata_limit=S3_METADATA_BYTES)

    with serving(make, "pip moto[server]") as server:
        yield server


@pytest.fixture
def s3(s3_endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch,
       tmp_path_factory: pytest.TempPathFactory) -> S3Endpoint:
    """The moto server, emptied, with test credentials in the standard AWS environment."""
    return ready(s3_endpoint, monkeypatch, tmp_path_factory)


@pytest.fixture
def s3_limits(s3_limits_endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch,
              tmp_path_factory: pytest.TempPathFactory) -> S3Endpoint:
    """`s3` with S3's limit on object metadata."""
    return ready(s3_limits_endpoint, monkeypatch, tmp_path_factory)


def ready(endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch,
          tmp_path_factory: pytest.TempPathFactory) -> S3Endpoint:
    """The endpoint running and emptied, with test credentials in the AWS environment."""
    home = tmp_path_factory.mktemp("aws")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    endpoint.start()
    endpoint.reset()
    return endpoint
