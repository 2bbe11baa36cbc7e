"""The service end to end: `hotfolder run` as a subprocess on a temporary root, real clamd."""

from __future__ import annotations

import io
import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clamd_server import EICAR_SIGNATURE, IMAGE_SIGNATURE, Clamd
from service_helpers import Daemon, files_under, jpeg, make_root, wait_until

GRAY_RECIPE = """\
steps:
  - grayscale
output: {format: png, dpi: 300}
sidecar: true
"""


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Services started by a test; any still running at the end are killed."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        if daemon.process is not None:
            daemon.kill()


def start(daemons: list[Daemon], config: Path) -> Daemon:
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.start()
    return daemon


def drop(root: Path, rel: str, data: bytes) -> Path:
    """Write a file into the inbox the way a copy does: under a temporary name, then renamed."""
    target = root / "inbox" / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.part")
    temp.write_bytes(data)
    temp.rename(target)
    return target


def slow_image(size: int = 1400) -> bytes:
    noise = np.random.default_rng(7).integers(0, 255, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(noise).save(out, "PNG", compress_level=1)
    return out.getvalue()


SLOW_FOLDER = "equalize+equalize+equalize+equalize+equalize+equalize+grayscale+png"


def test_a_dropped_file_is_scanned_processed_delivered_and_archived(
        tmp_path: Path, clamd: Clamd, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", clamd.address)
    root = config.parent
    (root / "recipes" / "gray.yaml").write_text(GRAY_RECIPE)
    daemon = start(daemons, config)
    assert daemon.get("/healthz")[0] == 200
    wait_until(lambda: daemon.get("/readyz")[0] == 200, 10, "/readyz to answer 200")

    drop(root, "Gray/dpi=300/photo.jpg", jpeg(1, (300, 200)))
    output = root / "outbox" / "Gray" / "dpi=300" / "photo.png"
    wait_until((root / "archive" / "Gray" / "dpi=300" / "photo.jpg").exists, 20,
               "the original in archive/")
    with Image.open(output) as image:
        assert (image.mode, image.size) == ("L", (300, 200))
        assert image.info["dpi"] == pytest.approx((300, 300), abs=0.01)
    sidecar = json.loads(output.with_name("photo.png.json").read_text())
    assert sidecar["scan"] == {"clean": True, "signature": None, "scanner": "clamd"}
    assert sidecar["input"]["name"] == "photo.jpg"
    assert sidecar["output"]["width"] == 300
    assert set(sidecar["timings"]) >= {"scan", "decode", "process", "encode", "deliver"}
    wait_until(lambda: files_under(root / "inbox") == [], 5, "an empty work folder")
    wait_until(lambda: daemon.metric("hotfolder_jobs_total", recipe="gray/dpi=300",
                                     outcome="done") == 1, 5, "the jobs_total metric")
    assert daemon.metric("hotfolder_files_detected_total") == 1
    assert daemon.metric("hotfolder_scanner_up") == 1
    assert "STATUS=" in daemon.notifications(1.5)
    assert daemon.stop() == 0


def test_a_file_written_slowly_in_chunks_is_taken_only_when_complete(
        tmp_path: Path, clamd: Clamd, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", clamd.address)
    root = config.parent
    daemon = start(daemons, config)
    data = jpeg(3, (400, 300))
    target = root / "inbox" / "grayscale+png" / "slow.jpg"
    target.parent.mkdir(parents=True)
    with target.open("wb") as out:
        for start_at in range(0, len(data), 512):
            out.write(data[start_at:start_at + 512])
            out.flush()
            time.sleep(0.02)
    output = root / "outbox" / "grayscale+png" / "slow.png"
    wait_until(output.exists, 20, "the output of the slowly written file")
    with Image.open(output) as image:
        assert image.size == (400, 300)
    assert files_under(root / "failed") == []
    assert daemon.stop() == 0


def test_infected_files_are_quarantined_with_a_report_and_not_processed(
        tmp_path: Path, clamd: Clamd, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", clamd.address)
    root = config.parent
    daemon = start(daemons, config)
    drop(root, "grayscale+png/eicar.jpg", clamd.eicar)
    drop(root, "grayscale+png/signed.png", clamd.signed_image.read_bytes())
    quarantine = root / "quarantine" / "grayscale+png"
    wait_until(lambda: len(files_under(quarantine)) == 4, 20, "two files and two reports")
    signed = json.loads((quarantine / "signed.png.scan.json").read_text())
    assert signed["signature"].startswith(IMAGE_SIGNATURE)
    assert signed["original"] == str(root / "inbox" / "grayscale+png" / "signed.png")
    eicar = json.loads((quarantine / "eicar.jpg.scan.json").read_text())
    assert eicar["signature"].startswith(EICAR_SIGNATURE)  # not an image, but scanned first
    assert (quarantine / "eicar.jpg").read_bytes() == clamd.eicar
    for path in files_under(root / "quarantine"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(quarantine.stat().st_mode) == 0o700
    assert files_under(root / "outbox") == []
    wait_until(lambda: daemon.metric("hotfolder_jobs_total", recipe="unknown",
                                     outcome="quarantined"), 5, "the quarantine metric")
    assert daemon.stop() == 0
