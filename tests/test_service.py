"""The service end to end: `hotfolder run` as a subprocess on a temporary root, real clamd."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from clamd_server import EICAR_SIGNATURE, IMAGE_SIGNATURE, Clamd, HeldClamd
from helpers import drop, image_bytes, wait_until
from hotfolder.queue import WORKER_NICE
from service_helpers import Daemon, alive, files_under, make_root, start

GRAY_RECIPE = """\
steps:
  - grayscale
output: {format: png, dpi: 300}
sidecar: true
"""


# Longer than any test waits: a scan held by HeldClamd ends only when the test lets it.
HELD_SCAN_TIMEOUT = {"timeout_seconds": 120}
# Ample for a small job on a busy machine (the file after the overdue one must finish in it).
JOB_LIMIT = 5.0


def test_a_dropped_file_is_scanned_processed_delivered_and_archived(
        tmp_path: Path, clamd: Clamd, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", clamd.address)
    root = config.parent
    (root / "recipes" / "gray.yaml").write_text(GRAY_RECIPE)
    daemon = start(daemons, config)
    assert daemon.get("/healthz")[0] == 200
    wait_until(lambda: daemon.get("/readyz")[0] == 200, 10, "/readyz to answer 200")

    drop(root, "Gray/dpi=300/photo.jpg", image_bytes("JPEG", (300, 200), seed=1))
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
    wait_until(lambda: daemon.metric("hotfolder_jobs_total", recipe="gray/inline",
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
    drop(root, "grayscale+png/slow.jpg", image_bytes("JPEG", (400, 300), seed=3),
         chunk_bytes=512, pause=0.02)
    output = root / "outbox" / "grayscale+png" / "slow.png"
    wait_until(output.exists, 20, "the output of the slowly written file")
    with Image.open(output) as image:
        assert image.size == (400, 300)
    assert files_under(root / "failed") == []
    assert daemon.stop() == 0


@pytest.mark.parametrize("passed", [True, False], ids=["fildes", "instream"])
def test_infected_files_are_quarantined_with_a_report_and_not_processed(
        tmp_path: Path, clamd: Clamd, daemons: list[Daemon], passed: bool) -> None:
    # On the unix socket clamd gets each file's descriptor, over TCP its bytes streamed.
    config = make_root(tmp_path / "root", clamd.address if passed else clamd.tcp_address)
    root = config.parent
    daemon = start(daemons, config)
    drop(root, "grayscale+png/eicar.jpg", clamd.eicar)
    drop(root, "grayscale+png/signed.png", clamd.signed_image.read_bytes())
    drop(root, "grayscale+png/clean.png", clamd.clean_image.read_bytes())
    wait_until((root / "outbox" / "grayscale+png" / "clean.png").exists, 20, "the clean file")
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
    assert files_under(root / "outbox") == [root / "outbox" / "grayscale+png" / "clean.png"]
    wait_until(lambda: daemon.metric("hotfolder_jobs_total", recipe="unknown",
                                     outcome="quarantined"), 5, "the quarantine metric")
    assert daemon.stop() == 0


def test_bad_files_fail_with_a_reason_and_retry_brings_them_back(
        tmp_path: Path, clamd: Clamd, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", clamd.address)
    root = config.parent
    daemon = start(daemons, config)
    drop(root, "grayscale+png/notes.jpg", b"not a picture at all\n" * 20)
    drop(root, "Wood Burn/photo.jpg", image_bytes("JPEG", seed=5))
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
    # clamd goes away only once the service trusts it: not in the middle of its first probe.
    wait_until(lambda: daemon.metric("hotfolder_scanner_up") == 1, 10, "scanner_up 1 at start")
    with clamd.stopped():
        for n in range(10):
            drop(root, f"grayscale+png/p{n}.jpg", image_bytes("JPEG", seed=n))
        wait_until(lambda: daemon.metric("hotfolder_waiting_jobs", reason="scanner") == 10, 30,
                   "ten jobs waiting for the scanner")
        wait_until(lambda: daemon.metric("hotfolder_scanner_up") == 0, 10, "scanner_up 0")
        assert daemon.get("/readyz")[0] == 503
        assert files_under(outbox) == []
        claimed = [p for p in files_under(root / "inbox" / ".hotfolder") if not p.suffix]
        assert len(claimed) == 10
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
        drop(root, f"grayscale+png/p{n}.jpg", image_bytes("JPEG", seed=n))
    wait_until(lambda: len(files_under(root / "archive")) == 3, 30, "three files via polling")
    assert len(files_under(root / "outbox")) == 3
    assert (daemon.metric("hotfolder_watcher_poll_seconds") or 0) > 0  # a pass took this long
    assert daemon.stop() == 0


def running_job(daemon: Daemon) -> dict[str, object]:
    """The id and worker pid of the job running now, from the journal."""
    with sqlite3.connect(daemon.root / "state" / "journal.db") as db:
        row = db.execute("select id, pid, attempts from jobs where state = 'running'").fetchone()
    return {"id": row[0], "pid": row[1], "attempts": row[2]} if row else {}


def test_a_job_that_kills_its_worker_is_retried_then_failed(
        tmp_path: Path, held_clamd: HeldClamd, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", held_clamd.address, scanner=HELD_SCAN_TIMEOUT,
                       queue={"workers": 1})
    root = config.parent
    daemon = start(daemons, config)
    drop(root, "grayscale+png/crash.jpg", image_bytes("JPEG"))
    for attempt in (1, 2, 3):  # each attempt is held in its scan until its worker is killed
        job = wait_until(lambda a=attempt: (j := running_job(daemon)) and j["attempts"] == a
                         and held_clamd.holding == 1 and j, 30, f"attempt {attempt} running")
        os.kill(int(str(job["pid"])), signal.SIGSEGV)  # as a crashing decoder would
    report = root / "failed" / "grayscale+png" / "crash.jpg.error.json"
    wait_until(report.exists, 20, "the crashed job in failed/")
    message = json.loads(report.read_text())["message"]
    assert "processing crashed 3 times (worker killed: signal 11 (SIGSEGV))" in message
    assert held_clamd.answered == 0
    held_clamd.let_through()
    drop(root, "grayscale+png/after.jpg", image_bytes("JPEG", seed=9))  # a replaced worker
    wait_until((root / "outbox" / "grayscale+png" / "after.png").exists, 20, "a later job")
    assert files_under(root / "outbox" / "grayscale+png") == [
        root / "outbox" / "grayscale+png" / "after.png"]
    assert daemon.stop() == 0


def job_states(daemon: Daemon) -> dict[str, int]:
    """How many jobs the journal holds in each state."""
    with sqlite3.connect(daemon.root / "state" / "journal.db") as db:
        return dict(db.execute("select state, count(*) from jobs group by state").fetchall())


def test_a_worker_killed_as_small_jobs_end_leaves_one_copy_of_each(
        tmp_path: Path, held_clamd: HeldClamd, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", held_clamd.address, scanner=HELD_SCAN_TIMEOUT,
                       queue={"workers": 1})
    root = config.parent
    daemon = start(daemons, config)
    for n in range(5):
        drop(root, f"grayscale+png/s{n}.jpg", image_bytes("JPEG", seed=n))
    wait_until(lambda: sum(job_states(daemon).values()) == 5, 30, "five jobs claimed")
    held_clamd.let_through(3)
    outbox, archive = root / "outbox" / "grayscale+png", root / "archive" / "grayscale+png"
    wait_until(lambda: len(files_under(outbox)) == 3 and held_clamd.holding == 1, 30,
               "three delivered and the fourth held in its scan")
    # Killed whether or not the three have ended yet (they end together, within 0.1 s): those
    # that had not run again and find their outputs and archive copies in place.
    os.kill(int(str(running_job(daemon)["pid"])), signal.SIGKILL)
    held_clamd.let_through()
    wait_until(lambda: job_states(daemon) == {"done": 5}, 60, "all five done after the kill")
    names = [f"s{n}" for n in range(5)]
    assert [p.name for p in files_under(outbox)] == [f"{name}.png" for name in names]
    assert [p.read_bytes() for p in files_under(archive)] == [
        image_bytes("JPEG", seed=n) for n in range(5)]
    assert files_under(root / "inbox" / ".hotfolder") == []
    assert files_under(root / "failed") == []
    assert daemon.stop() == 0


def test_a_small_job_ends_soon_when_its_worker_goes_on_to_a_held_one(
        tmp_path: Path, held_clamd: HeldClamd, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", held_clamd.address, scanner=HELD_SCAN_TIMEOUT)
    root = config.parent
    daemon = start(daemons, config)
    for n in range(3):
        drop(root, f"grayscale+png/t{n}.jpg", image_bytes("JPEG", seed=n))
    wait_until(lambda: held_clamd.holding == 2, 30, "both workers held in a scan")
    # One scan answered: its job is done while a third is still queued, so its worker takes
    # that one (held) with no later job to end the first with; the first ends all the same.
    held_clamd.let_through(1)
    wait_until(lambda: held_clamd.holding == 2 and job_states(daemon) == {"done": 1,
                                                                         "running": 2},
               10, "the answered job done while both workers are held again")
    held_clamd.let_through()
    wait_until(lambda: job_states(daemon) == {"done": 3}, 30, "all three done")
    assert len(files_under(root / "outbox" / "grayscale+png")) == 3
    assert daemon.stop() == 0


def test_a_job_over_the_time_limit_is_stopped_and_failed(
        tmp_path: Path, held_clamd: HeldClamd, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", held_clamd.address, scanner=HELD_SCAN_TIMEOUT,
                       limits={"job_timeout_seconds": JOB_LIMIT})
    root = config.parent
    daemon = start(daemons, config)
    drop(root, "grayscale+png/slow.jpg", image_bytes("JPEG"))  # its scan never ends by itself
    failed = root / "failed" / "grayscale+png" / "slow.jpg"
    report = failed.with_name("slow.jpg.error.json")
    wait_until(lambda: report.exists() and failed.exists(), 30, "the overdue job in failed/")
    assert f"took longer than {JOB_LIMIT:g} s (limits.job_timeout_seconds)" in json.loads(
        report.read_text())["message"]
    assert failed.read_bytes() == image_bytes("JPEG")
    assert held_clamd.answered == 0 and files_under(root / "outbox") == []

    held_clamd.let_through()  # the service goes on serving: the next file is done
    drop(root, "grayscale+png/next.jpg", image_bytes("JPEG", seed=1))
    wait_until((root / "outbox" / "grayscale+png" / "next.png").exists, 20, "the next file")
    assert daemon.stop() == 0


def test_workers_die_with_the_service_and_a_restart_finishes_the_work(
        tmp_path: Path, held_clamd: HeldClamd, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", held_clamd.address, scanner=HELD_SCAN_TIMEOUT)
    root = config.parent
    daemon = start(daemons, config)
    workers = daemon.children()
    assert len(workers) == 2  # the workers alone: no scheduler process
    assert daemon.process is not None
    service = os.getpriority(os.PRIO_PROCESS, daemon.process.pid)
    wait_until(lambda: all(os.getpriority(os.PRIO_PROCESS, pid) == service + WORKER_NICE
                           for pid in workers), 10, "the workers to yield to the service")
    drop(root, "grayscale+png/big.jpg", image_bytes("JPEG"))
    wait_until(lambda: running_job(daemon) and held_clamd.holding == 1, 30, "the job running")
    daemon.kill()
    wait_until(lambda: not any(alive(pid) for pid in workers), 10, "the workers to die too")
    assert files_under(root / "outbox") == []
    held_clamd.let_through()
    daemon.start()
    wait_until((root / "outbox" / "grayscale+png" / "big.png").exists, 60,
               "the job after restart")
    assert held_clamd.answered == 1
    assert daemon.stop() == 0


@pytest.mark.slow
def test_a_burst_of_2000_files(tmp_path: Path, clamd: Clamd, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", clamd.address)
    root = config.parent
    daemon = start(daemons, config)
    started = time.monotonic()
    for n in range(2000):
        drop(root, f"grayscale+png/dpi=300/p{n:04d}.jpg", image_bytes("JPEG", (32, 24), seed=n))
    wait_until(lambda: len(files_under(root / "archive")) == 2000, 120, "2000 files archived")
    elapsed = time.monotonic() - started
    assert len(files_under(root / "outbox")) == 2000
    assert files_under(root / "failed") == []
    wait_until(lambda: daemon.metric("hotfolder_jobs_total", recipe="inline/inline",
                                     outcome="done") == 2000, 10, "the metrics")
    print(f"2000 files in {elapsed:.1f} s")
    assert daemon.stop() == 0
