"""The job task in this process, with the in-memory scanner and sink: waits, policies, retries."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from huey import MemoryHuey

from helpers import image_bytes
from hotfolder.cache import ResultCache
from hotfolder.config import Config
from hotfolder.intake import Intake
from hotfolder.journal import Job
from hotfolder.journal.sqlite import SqliteJournal
from hotfolder.metrics import Metrics
from hotfolder.parts import Parts, build_book, journal_file
from hotfolder.scanner import MemoryScanner, Verdict
from hotfolder.sinks import MemorySink
from hotfolder.sinks.originals import Originals
from hotfolder.tasks import retry_delay, run_job
from service_helpers import files_under


def setup(tmp_path: Path, policy: str = "hold") -> tuple[Parts, Intake]:
    cfg = Config(root=tmp_path, scanner={"on_unavailable": policy})
    layout = cfg.layout
    for folder in (layout.inbox, layout.state):
        folder.mkdir(parents=True)
    journal = SqliteJournal(journal_file(layout))
    ctx = Parts(cfg, journal, MemoryScanner(), MemorySink(), Originals.of(cfg), build_book(cfg),
                MemoryHuey("test"), Metrics())
    return ctx, Intake(layout, cfg.limits, journal)


def work_file(ctx: Parts, job: Job) -> Path:
    return ctx.work.file(job.id)


def claim(ctx: Parts, intake: Intake, rel: str, data: bytes) -> Job:
    path = ctx.layout.inbox / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    job = intake.offer(path)
    assert job is not None and job.state == "queued"
    return job


def state(ctx: Parts, job: Job) -> Job:
    current = ctx.journal.get(job.id)
    assert current is not None
    return current


def test_a_job_waits_while_its_destination_is_unavailable_then_completes(
        tmp_path: Path) -> None:
    ctx, intake = setup(tmp_path)
    assert isinstance(ctx.sink, MemorySink)
    job = claim(ctx, intake, "grayscale+png/a.jpg", image_bytes("JPEG", seed=1))
    ctx.sink.available = False
    run_job(ctx, job.id)
    waiting = state(ctx, job)
    assert (waiting.state, waiting.reason, waiting.waits) == ("waiting", "memory", 1)
    assert work_file(ctx, job).exists()  # never failed for it, nothing lost
    assert files_under(ctx.layout.failed) == []
    kept = ctx.layout.work / f"{job.id}.result"
    assert kept.exists()  # the result waits beside the file
    renders = ctx.metrics.registry.get_sample_value
    assert renders("hotfolder_stage_seconds_count", {"stage": "process"}) == 1
    ctx.sink.available = True
    assert [j.id for j in ctx.journal.wake("memory")] == [job.id]
    run_job(ctx, job.id)
    assert state(ctx, job).state == "done"
    assert renders("hotfolder_stage_seconds_count", {"stage": "process"}) == 1  # not again
    assert list(ctx.sink.objects) == [PurePosixPath("grayscale+png/a.png")]
    assert list(ctx.layout.work.iterdir()) == []  # file, path note and kept result gone
    archived = ctx.layout.archive / "grayscale+png" / "a.jpg"
    assert archived.read_bytes() == image_bytes("JPEG", seed=1)


@pytest.mark.parametrize("policy", ["hold", "reject", "allow"])
def test_scanner_unavailable_policies(tmp_path: Path, policy: str) -> None:
    ctx, intake = setup(tmp_path, policy)
    assert isinstance(ctx.scanner, MemoryScanner) and isinstance(ctx.sink, MemorySink)
    (ctx.layout.recipes).mkdir()
    (ctx.layout.recipes / "side.yaml").write_text("steps: [grayscale]\nsidecar: true\n")
    job = claim(ctx, intake, "side/a.jpg", image_bytes("JPEG", seed=2))
    ctx.scanner.available = False
    run_job(ctx, job.id)
    ended = state(ctx, job)
    if policy == "hold":
        assert (ended.state, ended.reason) == ("waiting", "scanner")
        assert ctx.sink.objects == {}
    elif policy == "reject":
        assert ended.state == "failed"
        report = json.loads((ctx.layout.failed / "side" / "a.jpg.error.json").read_text())
        assert "scanner.on_unavailable is reject" in report["message"]
        assert ctx.sink.objects == {}
    else:
        assert ended.state == "done"
        sidecar = json.loads(ctx.sink.objects[PurePosixPath("side/a.jpg.json")].data)
        assert sidecar["scan"]["scanner"] == "skipped (unavailable, allowed)"
    unscanned = ctx.metrics.registry.get_sample_value("hotfolder_files_unscanned_total")
    assert unscanned == (1.0 if policy == "allow" else 0.0)


def test_an_infected_file_is_quarantined_and_never_delivered(tmp_path: Path) -> None:
    ctx, intake = setup(tmp_path)
    assert isinstance(ctx.scanner, MemoryScanner) and isinstance(ctx.sink, MemorySink)
    ctx.scanner.sign(image_bytes("JPEG", seed=3), "Test-Signature")
    job = claim(ctx, intake, "grayscale+png/bad.jpg", image_bytes("JPEG", seed=3))
    run_job(ctx, job.id)
    assert state(ctx, job).state == "quarantined"
    report = json.loads(
        (ctx.layout.quarantine / "grayscale+png" / "bad.jpg.scan.json").read_text())
    assert report["signature"] == "Test-Signature"
    assert ctx.sink.objects == {}


def test_an_infected_file_in_a_folder_that_is_no_recipe_is_quarantined_not_failed(
        tmp_path: Path) -> None:
    ctx, intake = setup(tmp_path)
    assert isinstance(ctx.scanner, MemoryScanner) and isinstance(ctx.sink, MemorySink)
    ctx.scanner.sign(image_bytes("JPEG", seed=3), "Test-Signature")
    bad = claim(ctx, intake, "resize=huge/bad.jpg", image_bytes("JPEG", seed=3))
    clean = claim(ctx, intake, "resize=huge/good.jpg", image_bytes("JPEG", seed=4))
    run_job(ctx, bad.id)
    run_job(ctx, clean.id)
    assert state(ctx, bad).state == "quarantined"
    assert (ctx.layout.quarantine / "resize=huge" / "bad.jpg").exists()
    assert state(ctx, clean).state == "failed"
    report = json.loads((ctx.layout.failed / "resize=huge" / "good.jpg.error.json").read_text())
    assert report["message"].startswith("resize=huge/good.jpg: folder 'resize=huge' is not a"
                                        " recipe")
    assert ctx.sink.objects == {}


class OrderedScanner(MemoryScanner):
    """Notes when a scan begins and when its verdict is asked for."""

    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events

    @contextmanager
    def scanning(self, data: bytes, name: str) -> Iterator[Callable[[], Verdict]]:
        self.events.append("scan begun")

        def verdict() -> Verdict:
            self.events.append("verdict asked for")
            return self.scan(data, name)

        yield verdict


def test_the_recipe_and_the_result_cache_are_looked_at_while_the_file_is_scanned(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, intake = setup(tmp_path)
    events: list[str] = []
    ctx.scanner = OrderedScanner(events)
    ctx.cache = ResultCache(ctx.layout.state, 1 << 20)
    owners: list[tuple[object, str, str]] = [(ctx.book, "resolve", "recipe found"),
                                             (ctx.cache, "get", "result cache read")]
    for owner, name, event in owners:
        original = getattr(owner, name)

        def noted(*args: object, original: Any = original, event: str = event) -> Any:
            events.append(event)
            return original(*args)

        monkeypatch.setattr(owner, name, noted)
    job = claim(ctx, intake, "grayscale+png/a.jpg", image_bytes("JPEG", seed=5))
    run_job(ctx, job.id)
    assert events == ["scan begun", "recipe found", "result cache read", "verdict asked for"]
    assert state(ctx, job).state == "done"
    assert isinstance(ctx.sink, MemorySink)
    assert list(ctx.sink.objects) == [PurePosixPath("grayscale+png/a.png")]


def test_a_repeated_job_after_a_crash_delivers_nothing_twice(tmp_path: Path) -> None:
    ctx, intake = setup(tmp_path)
    assert isinstance(ctx.sink, MemorySink)
    job = claim(ctx, intake, "grayscale+png/a.jpg", image_bytes("JPEG", seed=4))
    run_job(ctx, job.id)
    first = dict(ctx.sink.objects)
    # As if the worker died after delivering but before the journal said so:
    ctx.journal._db.get().execute(
        "update jobs set state = 'queued', outputs = null where id = ?", (job.id,))
    archived = ctx.layout.archive / "grayscale+png" / "a.jpg"
    archived.rename(work_file(ctx, job))
    run_job(ctx, job.id)
    assert state(ctx, job).state == "done"
    assert ctx.sink.objects.keys() == first.keys()  # no a-1.png
    assert files_under(ctx.layout.archive) == [archived]


def test_a_duplicate_task_for_a_finished_job_does_nothing(tmp_path: Path) -> None:
    ctx, intake = setup(tmp_path)
    job = claim(ctx, intake, "grayscale+png/a.jpg", image_bytes("JPEG", seed=5))
    run_job(ctx, job.id)
    run_job(ctx, job.id)
    assert state(ctx, job).attempts == 1


def test_retry_delays_grow_and_stop_growing() -> None:
    assert [retry_delay(n) for n in (0, 1, 2)] == [5, 10, 20]
    assert retry_delay(50) == 300
