"""The configuration file `hotfolder.yaml` (SPEC 5), as pydantic models."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hotfolder import memory, yamlfile
from hotfolder.errors import ConfigError
from hotfolder.formats import NAMES, FormatName

DEFAULT_CONFIG = Path("/etc/hotfolder/hotfolder.yaml")
ENV_PREFIX = "HOTFOLDER_"
# hotfolder's share of the machine's memory (MemoryMax= of the systemd unit), the part of it
# the service keeps for its own process, and the least a worker gets under worker_memory_mb auto.
MEMORY_SHARE_PERCENT = 75
SERVICE_MEMORY_MB = 512
AUTO_FLOOR_MB = 1024
MIN_WORKER_MEMORY_MB = 512
DEFAULT_IGNORE = [".*", "~$*", "*.tmp", "*.part", "*.crdownload", "Thumbs.db", "desktop.ini"]
RECIPE_FILE = "recipe.yaml"  # a folder's own recipe (SPEC 3): configuration, never an input


class Section(BaseModel):
    """Base of every configuration section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class WatchConfig(Section):
    mode: Literal["auto", "events", "polling"] = "auto"
    settle_seconds: float = Field(2.0, ge=0)
    rescan_seconds: float = Field(60.0, gt=0)
    ignore: list[str] = Field(default_factory=lambda: list(DEFAULT_IGNORE))


class LimitsConfig(Section):
    max_file_mb: float = Field(50.0, gt=0)
    max_pixels: int = Field(100_000_000, gt=0)
    job_timeout_seconds: float = Field(300.0, gt=0)
    worker_memory_mb: float | Literal["auto"] = "auto"
    formats: list[FormatName] = Field(default_factory=lambda: list(NAMES))

    @field_validator("worker_memory_mb")
    @classmethod
    def _enough_to_start(cls, value: float | str) -> float | str:
        if isinstance(value, float | int) and value < MIN_WORKER_MEMORY_MB:
            raise ValueError(f"must be at least {MIN_WORKER_MEMORY_MB} (MB), or auto: a worker"
                             " holds about 300 MB of libraries before its first job")
        return value

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    def worker_memory_bytes(self, workers: int) -> int:
        """The memory cap of one of `workers` worker processes.

        auto: hotfolder's share of the machine (the systemd unit's MemoryMax), less what
        the service keeps for itself, divided among the workers.
        """
        if self.worker_memory_mb != "auto":
            return int(self.worker_memory_mb * memory.MB)
        share = memory.machine_memory() * MEMORY_SHARE_PERCENT // 100
        each = (share - SERVICE_MEMORY_MB * memory.MB) // max(workers, 1)
        return max(each, AUTO_FLOOR_MB * memory.MB)


class RecipesConfig(Section):
    """How inbox folders choose their steps (SPEC 3)."""

    inline: Literal["allow", "deny"] = "allow"

    @property
    def inline_allowed(self) -> bool:
        return self.inline == "allow"


class ScannerConfig(Section):
    clamd: str = "unix:///run/clamav/clamd.ctl"
    on_unavailable: Literal["hold", "reject", "allow"] = "hold"
    timeout_seconds: float = Field(60.0, gt=0)

    @field_validator("clamd")
    @classmethod
    def _address(cls, value: str) -> str:
        if value == "off" or value.startswith(("unix://", "tcp://")):
            return value
        raise ValueError("must be off, unix:///path/to/socket or tcp://host:port")

    @property
    def enabled(self) -> bool:
        return self.clamd != "off"


class S3Config(Section):
    bucket: str = Field(min_length=3)
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    sse: Literal["AES256", "aws:kms"] | None = None
    kms_key_id: str | None = None
    keep_local: bool = False
    multipart_threshold_mb: float = Field(16.0, ge=5)


class QueueConfig(Section):
    url: str = "sqlite:///state/queue.db"
    workers: int | Literal["auto"] = "auto"

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if value.startswith(("sqlite://", "redis://", "rediss://", "memory://")):
            return value
        raise ValueError("must start with sqlite://, redis:// or memory://")

    @field_validator("workers")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 0:
            raise ValueError("must be a number of workers (0: watch only), or auto")
        return value

    @property
    def worker_count(self) -> int:
        if self.workers == "auto":
            return os.cpu_count() or 1
        return int(self.workers)


class OutputConfig(Section):
    s3: S3Config | None = None
    archive: bool = True
    archive_days: float | None = Field(30.0, ge=0)  # counted from the move into archive/
    on_conflict: Literal["rename", "overwrite", "skip"] = "rename"


class CacheConfig(Section):
    """Duplicate detection: results kept in state/cache/ by input content and recipe."""

    enabled: bool = True
    max_mb: float = Field(500.0, ge=0)

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb * 1024 * 1024)


def listen_address(value: str | None, example: str) -> str | None:
    """A `host:port` setting as given, or None for `off`."""
    if value is None or value == "off":
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"must be host:port, for example {example}, or off")
    return value


class MetricsConfig(Section):
    listen: str | None = "127.0.0.1:9464"

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        return listen_address(value, "127.0.0.1:9464")


def is_loopback(host: str) -> bool:
    """Whether a listen host is this machine only (127.0.0.0/8, ::1, localhost)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebConfig(Section):
    """The operator console and HTTP API (SPEC 11)."""

    listen: str | None = "127.0.0.1:8080"
    token: str | None = Field(None, min_length=16)
    max_files: int = Field(10, ge=1, le=1000)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        return listen_address(value, "127.0.0.1:8080")

    @model_validator(mode="after")
    def _token_off_loopback(self) -> WebConfig:
        if self.listen is not None and self.token is None:
            host = self.listen.rpartition(":")[0]
            if not is_loopback(host):
                raise ValueError(
                    f"web.listen {self.listen} is not a loopback address, so web.token must be"
                    " set (or HOTFOLDER_WEB__TOKEN): without one the console is served on"
                    " 127.0.0.1 only")
        return self


class PathsConfig(Section):
    """Where each folder lives; relative paths are relative to the root."""

    inbox: Path = Path("inbox")
    outbox: Path = Path("outbox")
    failed: Path = Path("failed")
    quarantine: Path = Path("quarantine")
    archive: Path = Path("archive")
    state: Path = Path("state")
    recipes: Path = Path("recipes")
    work: Path | None = None


@dataclass(frozen=True)
class Layout:
    """The absolute folders of a hot-folder root (SPEC 2)."""

    root: Path
    inbox: Path
    outbox: Path
    failed: Path
    quarantine: Path
    archive: Path
    state: Path
    recipes: Path
    work: Path


class Config(Section):
    root: Path = Path(".")
    default_recipe: str | None = None
    watch: WatchConfig = Field(default_factory=WatchConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    recipes: RecipesConfig = Field(default_factory=RecipesConfig)
    scanner: ScannerConfig = Field(default_factory=ScannerConfig)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    paths: PathsConfig = Field(default_factory=PathsConfig)

    @property
    def layout(self) -> Layout:
        """The folders, made absolute against the root."""
        root = self.root.resolve()

        def at(path: Path) -> Path:
            return path if path.is_absolute() else root / path

        inbox = at(self.paths.inbox)
        return Layout(
            root=root,
            inbox=inbox,
            outbox=at(self.paths.outbox),
            failed=at(self.paths.failed),
            quarantine=at(self.paths.quarantine),
            archive=at(self.paths.archive),
            state=at(self.paths.state),
            recipes=at(self.paths.recipes),
            work=at(self.paths.work) if self.paths.work else inbox / ".hotfolder",
        )


def env_settings(environ: Mapping[str, str]) -> dict[tuple[str, ...], str]:
    """The `HOTFOLDER_SECTION__KEY` variables, by the setting (section, key) they override."""
    return {
        tuple(name[len(ENV_PREFIX) :].lower().split("__")): name
        for name in environ
        if name.startswith(ENV_PREFIX) and name != "HOTFOLDER_CONFIG"
    }


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Nested settings from `HOTFOLDER_SECTION__KEY=value` variables (values read as YAML)."""
    tree: dict[str, Any] = {}
    for keys, name in env_settings(environ).items():
        raw = environ[name]
        node = tree
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        try:
            node[keys[-1]] = yamlfile.parse(raw, name).data if raw else None
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def config_path(explicit: str | Path | None, environ: Mapping[str, str] = os.environ) -> Path:
    """`-c` first, then `$HOTFOLDER_CONFIG`, then /etc/hotfolder/hotfolder.yaml."""
    if explicit:
        return Path(explicit)
    if environ.get("HOTFOLDER_CONFIG"):
        return Path(environ["HOTFOLDER_CONFIG"])
    return DEFAULT_CONFIG


def load_config(
    explicit: str | Path | None = None, environ: Mapping[str, str] = os.environ
) -> Config:
    """Read the configuration, apply environment overrides, and validate it."""
    path = config_path(explicit, environ)
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found")
    try:
        doc = yamlfile.load(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the configuration must be a mapping of settings")
    data = _merge(data, env_overrides(environ))
    root = Path(data.get("root") or ".")
    data["root"] = root if root.is_absolute() else path.parent.resolve() / root
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            doc.explain(exc, Config, elsewhere=env_settings(environ), data=data),
            detail=yamlfile.technical(yamlfile.problems(exc, data, Config)),
        ) from None
