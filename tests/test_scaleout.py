"""Scaling out over Redis: workers sharing one queue, one killed by SIGKILL; `check` of Redis."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from PIL import Image

from clamd_server import HeldClamd
from helpers import drop, image_bytes, wait_until
from hotfolder.cli import main
from hotfolder.journal.redis import RedisJournal
from redis_server import RedisServer
from server_process import free_port
from service_helpers import Daemon, alive, files_under, make_root, start

SLOW_FOLDER = "sharpen+equalize+png"  # bench_scaleout's workload: about 0.2 s per photo on one core
BATCH = 30


def worker_config(watcher_config: Path, folder: Path) -> Path:
    """A worker 'machine': the same root, a state folder of its own, one worker process."""
    settings = yaml.safe_load(watcher_config.read_text())
    settings["paths"] = {"state": str(folder / "state")}
    settings["queue"]["workers"] = 1
    settings["metrics"] = {"listen": f"127.0.0.1:{free_port()}"}
    folder.mkdir()
    path = folder / "hotfolder.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def test_two_workers_share_a_batch_and_a_killed_one_loses_nothing(
        redis_server: RedisServer, held_clamd: HeldClamd, tmp_path: Path,
        daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", held_clamd.address, scanner={"timeout_seconds": 120},
                       queue={"url": redis_server.url, "workers": 0})
    root = config.parent
    journal = RedisJournal(redis_server.url)
    watcher = start(daemons, config)
    workers = []
    for name in ("worker-a", "worker-b"):
        worker = Daemon(worker_config(config, tmp_path / name), "worker")
        daemons.append(worker)
        worker.start()
        workers.append(worker)
    victim, survivor = workers

    photos = {f"photo-{n:02d}": image_bytes("JPEG", (1000, 750), seed=n) for n in range(BATCH)}
    held_clamd.let_through(3)  # three scans answered, then each worker's job is held
    for stem, data in photos.items():
        drop(root, f"{SLOW_FOLDER}/{stem}.jpg", data)

    children = victim.children()
    wait_until(lambda: held_clamd.answered == 3 and held_clamd.holding >= 2
               and journal.counts().get("running") == 2, 60,
               "three scans answered, and each worker's job held (in its scan, or waiting for"
               " the one its verdict is scanned ahead in)")
    (lost,) = [job.id for job in journal.in_state("running") if job.pid in children]
    victim.kill()  # SIGKILL mid-job; its worker processes die with it
    held_clamd.let_through()

    wait_until(lambda: journal.counts() == {"done": BATCH}, 90,
               f"every job done (now {journal.counts()})")
    outputs = files_under(root / "outbox")
    assert [p.name for p in outputs] == [f"{stem}.png" for stem in sorted(photos)]
    for output in outputs:
        with Image.open(output) as image:
            assert (image.format, image.size) == ("PNG", (1000, 750))
    assert [p.name for p in files_under(root / "archive")] == [f"{s}.jpg" for s in sorted(photos)]
    assert files_under(root / "failed") == []
    assert files_under(root / "inbox") == []  # nothing left in the work folder
    assert not any(alive(pid) for pid in children)
    survivor_log = survivor.log.read_text()
    supervisors_log = watcher.log.read_text() + survivor_log
    # The victim's job, taken again once its lease ran out, and finished.
    assert f"job {lost}: its worker is gone, queued again" in supervisors_log
    assert re.search(rf"job {lost}: {re.escape(SLOW_FOLDER)}/photo-\d+\.jpg done -> ", survivor_log)
    journal.close()
    assert watcher.status()["jobs"] == {"done": BATCH}  # `hotfolder status` reads Redis
    assert survivor.stop() == 0
    assert watcher.stop() == 0


def test_hotfolder_check_tries_the_redis_queue(redis_server: RedisServer, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    config = make_root(tmp_path / "root", queue={"url": redis_server.url})

    assert main(["check", "-c", str(config)]) == 0
    assert f"ok    queue {redis_server.url}: Redis answers\n" in capsys.readouterr().out

    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    config.write_text(config.read_text().replace(redis_server.url, nowhere))
    assert main(["check", "-c", str(config)]) == 2
    assert f"FAIL  Redis at {nowhere} does not answer: " in capsys.readouterr().out


def test_readyz_says_not_ready_while_the_queue_redis_does_not_answer(
        redis_server: RedisServer, tmp_path: Path, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", queue={"url": redis_server.url, "workers": 1})
    service = start(daemons, config)  # waits for /readyz 200
    with redis_server.stopped():
        wait_until(lambda: service.get("/readyz")[0] == 503, 30,
                   "/readyz to answer 503 while Redis is stopped")
        assert service.get("/healthz")[0] == 200  # alive all the same
        log = service.log.read_text()
        assert f"not ready until it answers: Redis at {redis_server.url} does not answer" in log
        assert "the queue does not answer, this worker tries again: " in log
        assert "Traceback" not in log
    wait_until(lambda: service.get("/readyz")[0] == 200, 30,
               "/readyz to answer 200 once Redis is back")
    assert "the queue's Redis answers again" in service.log.read_text()
    drop(config.parent, "photo.jpg", image_bytes("JPEG", (64, 48)))
    wait_until(lambda: [p.name for p in files_under(config.parent / "outbox")] == ["photo.jpg"],
               30, "the photo dropped after Redis came back delivered")
    assert service.stop() == 0
