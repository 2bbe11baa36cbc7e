"""Scanning ahead: verdicts made for waiting jobs, used only for the bytes they were made for."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

from helpers import image_bytes
from hotfolder.parts import Parts
from hotfolder.scanahead import ScanAhead, scan_ahead, verdict_left
from hotfolder.scanner import MemoryScanner, Verdict
from hotfolder.sinks import MemorySink
from hotfolder.tasks import run_job
from service_helpers import files_under, wait_until
from test_tasks import claim, setup, state


def scanner_of(ctx: Parts) -> MemoryScanner:
    assert isinstance(ctx.scanner, MemoryScanner)
    return ctx.scanner


def made(path: Path) -> bool:
    """A verdict file written whole (an empty one is still being made)."""
    return path.exists() and path.stat().st_size > 0


def test_waiting_jobs_are_scanned_ahead_and_each_file_once(tmp_path: Path) -> None:
    ctx, intake = setup(tmp_path)
    jobs = [claim(ctx, intake, f"grayscale+png/{name}.jpg", image_bytes("JPEG", seed=n))
            for n, name in enumerate("abc")]
    ahead = ScanAhead(scanner_of(ctx), ctx.work, ctx.cfg.limits,
                      lambda: [job.id for job in jobs[1:]], smallest=0)
    ahead.look()  # the first job starts: the next two are scanned meanwhile
    wait_until(lambda: all(made(ctx.work.verdict(job.id)) for job in jobs[1:]), 10,
               "the verdicts of the waiting jobs")
    ahead.rest()
    assert scanner_of(ctx).scanned == ["b.jpg", "c.jpg"]
    for job in jobs:
        run_job(ctx, job.id)
        assert state(ctx, job).state == "done"
    assert sorted(scanner_of(ctx).scanned) == ["a.jpg", "b.jpg", "c.jpg"]  # none twice
    assert isinstance(ctx.sink, MemorySink)
    assert sorted(map(str, ctx.sink.objects)) == [f"grayscale+png/{n}.png" for n in "abc"]
    assert list(ctx.layout.work.iterdir()) == []  # the verdicts leave with their jobs


def test_an_infected_file_scanned_ahead_goes_to_quarantine(tmp_path: Path) -> None:
    ctx, intake = setup(tmp_path)
    data = image_bytes("JPEG", seed=3)
    scanner_of(ctx).sign(data, "Test-Signature")
    job = claim(ctx, intake, "grayscale+png/bad.jpg", data)
    assert scan_ahead(scanner_of(ctx), ctx.work, job.id, ctx.cfg.limits, smallest=0)
    run_job(ctx, job.id)
    assert state(ctx, job).state == "quarantined"
    assert (ctx.layout.quarantine / "grayscale+png" / "bad.jpg").read_bytes() == data
    assert scanner_of(ctx).scanned == ["bad.jpg"]
    assert files_under(ctx.layout.outbox) == []


def test_a_verdict_is_used_only_for_the_bytes_it_was_made_for(tmp_path: Path) -> None:
    ctx, intake = setup(tmp_path)
    job = claim(ctx, intake, "grayscale+png/a.jpg", image_bytes("JPEG", seed=1))
    assert scan_ahead(scanner_of(ctx), ctx.work, job.id, ctx.cfg.limits, smallest=0)
    other = image_bytes("JPEG", seed=2)
    scanner_of(ctx).sign(other, "Test-Signature")
    ctx.work.file(job.id).write_bytes(other)  # what the job reads is not what was scanned
    run_job(ctx, job.id)
    assert state(ctx, job).state == "quarantined"  # scanned again, and found
    assert scanner_of(ctx).scanned == ["a.jpg", "a.jpg"]


def test_a_scan_ahead_that_fails_leaves_the_job_to_scan_itself(tmp_path: Path) -> None:
    ctx, intake = setup(tmp_path)
    job = claim(ctx, intake, "grayscale+png/a.jpg", image_bytes("JPEG", seed=1))
    scanner_of(ctx).available = False
    assert scan_ahead(scanner_of(ctx), ctx.work, job.id, ctx.cfg.limits, smallest=0)
    assert not ctx.work.verdict(job.id).exists()
    run_job(ctx, job.id)
    assert (state(ctx, job).state, state(ctx, job).reason) == ("waiting", "scanner")
    scanner_of(ctx).available = True
    run_job(ctx, job.id)
    assert state(ctx, job).state == "done"
    assert scanner_of(ctx).scanned == ["a.jpg"]


def test_a_file_not_yet_private_is_left_to_its_job(tmp_path: Path) -> None:
    ctx, intake = setup(tmp_path)
    job = claim(ctx, intake, "grayscale+png/a.jpg", image_bytes("JPEG", seed=1))
    os.chmod(ctx.work.file(job.id), 0o644)  # as a claim cut short leaves it
    assert scan_ahead(scanner_of(ctx), ctx.work, job.id, ctx.cfg.limits, smallest=0)
    assert not ctx.work.verdict(job.id).exists()
    assert scanner_of(ctx).scanned == []


class HeldScanner(MemoryScanner):
    """Holds every scan until `go` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()
        self.calls = 0

    def scan(self, data: bytes, name: str) -> Verdict:
        self.calls += 1
        assert self.go.wait(30)
        return super().scan(data, name)


def test_a_job_waits_for_the_verdict_being_made_instead_of_scanning_twice(
        tmp_path: Path) -> None:
    ctx, intake = setup(tmp_path)
    held = ctx.scanner = HeldScanner()
    job = claim(ctx, intake, "grayscale+png/a.jpg", image_bytes("JPEG", seed=1))
    scanning = threading.Thread(target=scan_ahead, args=(held, ctx.work, job.id, ctx.cfg.limits),
                                kwargs={"smallest": 0})
    scanning.start()
    wait_until(lambda: held.calls == 1, 10, "the scan ahead under way")
    running = threading.Thread(target=run_job, args=(ctx, job.id))
    running.start()
    wait_until(lambda: state(ctx, job).state == "running", 10, "the job started")
    held.go.set()
    scanning.join(30)
    running.join(30)
    assert state(ctx, job).state == "done"
    assert held.calls == 1 and held.scanned == ["a.jpg"]


def test_a_verdict_names_what_the_scanner_said(tmp_path: Path) -> None:
    ctx, intake = setup(tmp_path)
    data = image_bytes("JPEG", seed=1)
    job = claim(ctx, intake, "grayscale+png/a.jpg", data)
    assert scan_ahead(scanner_of(ctx), ctx.work, job.id, ctx.cfg.limits, smallest=0)
    digest = hashlib.sha256(data).hexdigest()
    assert verdict_left(ctx.work, job.id, digest) == Verdict(True, None, "memory")
    assert verdict_left(ctx.work, job.id, "0" * 64) is None


def test_a_small_file_is_left_to_its_job_to_scan(tmp_path: Path) -> None:
    ctx, intake = setup(tmp_path)
    small = claim(ctx, intake, "grayscale+png/a.jpg", image_bytes("JPEG", seed=1))
    size = ctx.work.file(small.id).stat().st_size
    assert not scan_ahead(scanner_of(ctx), ctx.work, small.id, ctx.cfg.limits,
                          smallest=size + 1)
    assert not ctx.work.verdict(small.id).exists()
    assert scanner_of(ctx).scanned == []
    assert scan_ahead(scanner_of(ctx), ctx.work, small.id, ctx.cfg.limits, smallest=size)
    assert made(ctx.work.verdict(small.id))


def test_jobs_starting_in_quick_succession_do_not_each_make_a_look_at_the_queue(
        tmp_path: Path) -> None:
    ctx, _ = setup(tmp_path)
    looks: list[float] = []

    def waiting() -> list[str]:
        looks.append(time.monotonic())
        return []

    ahead = ScanAhead(scanner_of(ctx), ctx.work, ctx.cfg.limits, waiting)
    started = time.monotonic()
    for _ in range(50):  # jobs of small files, a millisecond or two each
        ahead.look()
        time.sleep(0.001)
        ahead.rest()
    ahead.look()
    wait_until(lambda: len(looks) >= 1, 10, "the thread's first look at the queue")
    ahead.rest()
    elapsed = time.monotonic() - started
    # The thread looks when it starts, then once per POLL_SECONDS while the jobs run.
    assert len(looks) <= 2 + elapsed / ScanAhead.POLL_SECONDS + 1, (len(looks), elapsed)
