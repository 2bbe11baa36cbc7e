"""The service end to end: `hotfolder run` as a subprocess on a temporary root, real clamd."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clamd_server import EICAR_SIGNATURE, IMAGE_SIGNATURE, Clamd
from service_helpers import (
    Daemon,
    alive,
    drop,
    files_under,
    jpeg,
    make_root,
    start,
    wait_until,
)

GRAY_RECIPE = """\
steps:
  - grayscale
output: {format: png, dpi: 300}
sidecar: true
"""


def slow_image(size: int = 3000) -> bytes:
    """A small PNG (about 100 kB) of many pixels, which SLOW_FOLDER takes seconds to process."""
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    pixels = (np.add.outer(ramp, ramp) / 2).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(np.stack([pixels] * 3, axis=-1)).save(out, "PNG", compress_level=9)
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
    notes = daemon.notifications(1.5)
    assert "WATCHDOG=1" in notes
    assert "STATUS=" in notes
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


def test_bad_files_fail_with_a_reason_and_retry_brings_them_back(
        tmp_path: Path, clamd: Clamd, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", clamd.address)
    root = config.parent
    daemon = start(daemons, config)
    drop(root, "grayscale+png/notes.jpg", b"not a picture at all\n" * 20)
    drop(root, "Wood Burn/photo.jpg", jpeg(5))
    link = root / "inbox" / "grayscale+png" / "link.jpg"
    link.symlink_to(root / "hotfolder.yaml")
    failed = root / "failed"
    wait_until(lambda: len(files_under(failed)) == 6, 20, "three files and three reports")
    notes = json.loads((failed / "grayscale+png" / "notes.jpg.error.json").read_text())
    assert "not an image type hotfolder accepts" in notes["message"]
    wood = json.loads((failed / "Wood Burn" / "photo.jpg.error.json").read_text())
    assert wood["message"].startswith("Wood Burn/photo.jpg: folder 'Wood Burn' is not a recipe")
    assert (failed / "grayscale+png" / "link.jpg").is_symlink()
    assert "symbolic link" in json.loads(
        (failed / "grayscale+png" / "link.jpg.error.json").read_text())["message"]

    status = daemon.status()
    assert status["jobs"]["failed"] == 3
    assert {f["file"] for f in status["recent_failures"]} == {
        "grayscale+png/notes.jpg", "Wood Burn/photo.jpg", "grayscale+png/link.jpg"}

    (root / "recipes" / "wood-burn.yaml").write_text(GRAY_RECIPE)
    out = subprocess.run([sys.executable, "-m", "hotfolder.cli", "retry", "-c", str(config),
                          str(failed / "Wood Burn" / "photo.jpg")],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert not (failed / "Wood Burn" / "photo.jpg.error.json").exists()
    wait_until((root / "outbox" / "Wood Burn" / "photo.png").exists, 20, "the retried output")
    assert daemon.stop() == 0


def test_nothing_is_processed_unscanned_while_clamd_is_down(
        tmp_path: Path, clamd: Clamd, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", clamd.address)
    root = config.parent
    daemon = start(daemons, config)
    outbox = root / "outbox" / "grayscale+png"
    with clamd.stopped():
        for n in range(10):
            drop(root, f"grayscale+png/p{n}.jpg", jpeg(n))
        wait_until(lambda: daemon.metric("hotfolder_waiting_jobs", reason="scanner") == 10, 30,
                   "ten jobs waiting for the scanner")
        wait_until(lambda: daemon.metric("hotfolder_scanner_up") == 0, 10, "scanner_up 0")
        assert daemon.get("/readyz")[0] == 503
        assert files_under(outbox) == []
        assert len(files_under(root / "inbox" / ".hotfolder")) == 10
    wait_until(lambda: len(files_under(outbox)) == 10, 30, "all ten processed after clamd is back")
    wait_until(lambda: daemon.metric("hotfolder_scanner_up") == 1, 10, "scanner_up 1")
    assert files_under(root / "failed") == []
    assert daemon.stop() == 0


def test_polling_mode_takes_files_once_they_settle(
        tmp_path: Path, clamd: Clamd, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", clamd.address, watch={"mode": "polling"})
    root = config.parent
    daemon = start(daemons, config)
    for n in range(3):
        drop(root, f"grayscale+png/p{n}.jpg", jpeg(n))
    wait_until(lambda: len(files_under(root / "archive")) == 3, 30, "three files via polling")
    assert len(files_under(root / "outbox")) == 3
    assert daemon.stop() == 0


def running_job(daemon: Daemon) -> dict[str, object]:
    """The id and worker pid of the job running now, from the journal."""
    with sqlite3.connect(daemon.root / "state" / "journal.db") as db:
        row = db.execute("select id, pid, attempts from jobs where state = 'running'").fetchone()
    return {"id": row[0], "pid": row[1], "attempts": row[2]} if row else {}


def test_a_job_that_kills_its_worker_is_retried_then_failed(
        tmp_path: Path, clamd: Clamd, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", clamd.address, queue={"workers": 1})
    root = config.parent
    daemon = start(daemons, config)
    drop(root, f"{SLOW_FOLDER}/crash.png", slow_image())
    for attempt in (1, 2, 3):
        job = wait_until(lambda a=attempt: (j := running_job(daemon)) and j["attempts"] == a
                         and j, 30, f"attempt {attempt} running")
        os.kill(int(str(job["pid"])), signal.SIGSEGV)  # as a crashing decoder would
    report = root / "failed" / SLOW_FOLDER / "crash.png.error.json"
    wait_until(report.exists, 20, "the crashed job in failed/")
    message = json.loads(report.read_text())["message"]
    assert "processing crashed 3 times (worker killed: signal 11 (SIGSEGV))" in message
    drop(root, "grayscale+png/after.jpg", jpeg(9))  # the replaced worker takes new jobs
    wait_until((root / "outbox" / "grayscale+png" / "after.png").exists, 20, "a later job")
    assert daemon.stop() == 0


def test_a_job_over_the_time_limit_is_stopped_and_failed(
        tmp_path: Path, clamd: Clamd, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", clamd.address, limits={"job_timeout_seconds": 0.5})
    root = config.parent
    daemon = start(daemons, config)
    drop(root, f"{SLOW_FOLDER}/slow.png", slow_image())
    report = root / "failed" / SLOW_FOLDER / "slow.png.error.json"
    wait_until(report.exists, 30, "the overdue job in failed/")
    assert "took longer than 0.5 s (limits.job_timeout_seconds)" in json.loads(
        report.read_text())["message"]
    assert files_under(root / "outbox") == []
    assert daemon.stop() == 0


def test_workers_die_with_the_service_and_a_restart_finishes_the_work(
        tmp_path: Path, clamd: Clamd, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", clamd.address)
    root = config.parent
    daemon = start(daemons, config)
    workers = daemon.children()
    assert len(workers) >= 2
    drop(root, f"{SLOW_FOLDER}/big.png", slow_image())
    wait_until(lambda: running_job(daemon), 30, "the job running")
    daemon.kill()
    wait_until(lambda: not any(alive(pid) for pid in workers), 10, "the workers to die too")
    daemon.start()
    wait_until((root / "outbox" / SLOW_FOLDER / "big.png").exists, 60, "the job after restart")
    assert daemon.stop() == 0


@pytest.mark.slow
def test_a_burst_of_2000_files(tmp_path: Path, clamd: Clamd, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", clamd.address)
    root = config.parent
    daemon = start(daemons, config)
    started = time.monotonic()
    for n in range(2000):
        drop(root, f"grayscale+png/dpi=300/p{n:04d}.jpg", jpeg(n, (32, 24)))
    wait_until(lambda: len(files_under(root / "archive")) == 2000, 120, "2000 files archived")
    elapsed = time.monotonic() - started
    assert len(files_under(root / "outbox")) == 2000
    assert files_under(root / "failed") == []
    wait_until(lambda: daemon.metric("hotfolder_jobs_total", recipe="grayscale+png/dpi=300",
                                     outcome="done") == 2000, 10, "the metrics")
    print(f"2000 files in {elapsed:.1f} s")
    assert daemon.stop() == 0
