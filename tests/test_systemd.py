"""The systemd unit, sysusers and tmpfiles files, checked with systemd's own tools offline."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from hotfolder.config import (
    AUTO_FLOOR_MB,
    DEFAULT_CONFIG,
    MEMORY_SHARE_PERCENT,
    SERVICE_MEMORY_MB,
    LimitsConfig,
)
from hotfolder.memory import machine_memory

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
UNIT = SYSTEMD / "hotfolder.service"
MAX_EXPOSURE = 2.0

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is missing (Debian package systemd)")
needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="creating files owned by another user needs root")


def directives(path: Path) -> dict[str, list[str]]:
    """Every `Key=value` of a unit file; keys may repeat."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def unit_with_real_command(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at the installed command (verify wants it to exist)."""
    command = shutil.which("hotfolder")
    if command is None:
        pytest.skip("the hotfolder command is not installed (pip install -e .)")
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace("/usr/local/bin/hotfolder", command))
    return copy


@needs_analyze
def test_exposure_rating_is_at_most_2() -> None:
    done = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(UNIT)],
                          capture_output=True, text=True, check=False)
    match = re.search(r"Overall exposure level for hotfolder\.service: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE


@needs_analyze
def test_unit_verifies_without_complaints(tmp_path: Path) -> None:
    unit = unit_with_real_command(tmp_path)
    done = subprocess.run(["systemd-analyze", "verify", str(unit)],
                          capture_output=True, text=True, check=False)
    complaints = [line for line in (done.stdout + done.stderr).splitlines()
                  if unit.name in line]
    assert done.returncode == 0
    assert complaints == []


@needs_analyze
def test_verify_does_catch_mistakes(tmp_path: Path) -> None:
    unit = unit_with_real_command(tmp_path)
    unit.write_text(unit.read_text().replace("KillMode=mixed", "KillMod=mixed"))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)],
                          capture_output=True, text=True, check=False)
    assert "Unknown key 'KillMod'" in done.stderr


def test_unit_stops_gracefully_and_notifies() -> None:
    unit = directives(UNIT)
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    assert unit["KillSignal"] == ["SIGTERM"]
    assert unit["KillMode"] == ["mixed"]
    assert float(unit["TimeoutStopSec"][0]) > LimitsConfig().job_timeout_seconds
    assert float(unit["WatchdogSec"][0]) > 0
    assert unit["ExecStart"] == [f"/usr/local/bin/hotfolder run -c {DEFAULT_CONFIG}"]
    assert "clamav-daemon.service" in unit["After"][0].split()
    assert "clamav-daemon.service" in unit["Wants"][0].split()
    assert "MemoryDenyWriteExecute" not in unit  # numba's JIT needs W+X memory


def test_memory_max_holds_every_worker_cap_and_the_service() -> None:
    """MemoryMax is hotfolder's share of the machine, which worker_memory_mb auto divides."""
    assert directives(UNIT)["MemoryMax"] == [f"{MEMORY_SHARE_PERCENT}%"]
    memory_max = machine_memory() * MEMORY_SHARE_PERCENT // 100
    service = SERVICE_MEMORY_MB * 2**20
    for workers in (1, 2, 8):
        cap = LimitsConfig().worker_memory_bytes(workers)
        if cap > AUTO_FLOOR_MB * 2**20:  # not the floor that a very small machine gets
            assert 0 <= memory_max - (cap * workers + service) < workers


def test_unit_can_write_every_folder_it_creates() -> None:
    unit = directives(UNIT)
    writable = [Path(p) for p in unit["ReadWritePaths"][0].split()]
    made = [Path(line.split()[1]) for line in (SYSTEMD / "hotfolder.tmpfiles").read_text()
            .splitlines() if line.startswith("d ")]
    numba_cache = Path(dict(v.split("=", 1) for v in unit["Environment"])["NUMBA_CACHE_DIR"])
    for folder in [*made, numba_cache]:
        assert any(folder.is_relative_to(root) for root in writable), folder
    assert unit["User"] == unit["Group"] == ["hotfolder"]


@needs_root
def test_sysusers_and_tmpfiles_build_the_tree(tmp_path: Path) -> None:
    for tool in ("systemd-sysusers", "systemd-tmpfiles"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is missing (Debian package systemd)")
    (tmp_path / "etc").mkdir()
    for kind in ("sysusers", "tmpfiles"):
        conf = tmp_path / f"usr/lib/{kind}.d/hotfolder.conf"
        conf.parent.mkdir(parents=True)
        shutil.copy(SYSTEMD / f"hotfolder.{kind}", conf)
    subprocess.run(["systemd-sysusers", f"--root={tmp_path}"], check=True, capture_output=True)
    passwd = (tmp_path / "etc/passwd").read_text()
    user = next(line.split(":") for line in passwd.splitlines() if line.startswith("hotfolder:"))
    assert user[5:] == ["/srv/hotfolder", "/usr/sbin/nologin"]
    subprocess.run(["systemd-tmpfiles", "--create", f"--root={tmp_path}"], check=True,
                   capture_output=True)
    root = tmp_path / "srv/hotfolder"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in root.iterdir()}
    assert modes == {"inbox": 0o2775, "outbox": 0o2755, "failed": 0o2775, "quarantine": 0o700,
                     "archive": 0o750, "state": 0o750, "recipes": 0o755}
    assert {p.stat().st_uid for p in root.iterdir()} == {int(user[2])}
    assert (tmp_path / "var/cache/hotfolder/numba").is_dir()
