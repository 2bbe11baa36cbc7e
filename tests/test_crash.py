"""kill -9 of the service in the middle of a batch, then restarts: nothing lost, nothing twice."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from clamd_server import Clamd
from helpers import drop, image_bytes, wait_until
from service_helpers import Daemon, alive, files_under, make_root

BATCH = 100
RECIPE = """\
steps: [grayscale]
output: {format: png}
sidecar: true
"""


@pytest.fixture
def daemon(tmp_path: Path, clamd: Clamd) -> Iterator[Daemon]:
    config = make_root(tmp_path / "root", clamd.address)
    (config.parent / "recipes" / "gray.yaml").write_text(RECIPE)
    service = Daemon(config)
    yield service
    if service.process is not None:
        service.kill()


def outputs(root: Path) -> list[Path]:
    return [p for p in files_under(root / "outbox") if p.suffix == ".png"]


def job_states(root: Path) -> dict[str, int]:
    with sqlite3.connect(root / "state" / "journal.db") as db:
        return dict(db.execute("select state, count(*) from jobs group by state").fetchall())


def kill_and_restart(daemon: Daemon) -> None:
    """SIGKILL the service, check that its workers die with it, start it again."""
    workers = daemon.children()
    daemon.kill()
    wait_until(lambda: not any(alive(pid) for pid in workers), 10, "the workers to die")
    daemon.start()


def test_kill_9_at_several_points_of_a_batch_loses_nothing_and_doubles_nothing(
        daemon: Daemon) -> None:
    root = daemon.root
    originals = {}
    for n in range(BATCH):
        data = image_bytes("JPEG", (96, 64), seed=n)
        path = drop(root, f"Gray/p{n:03d}.jpg", data)
        originals[path.name] = hashlib.sha256(data).hexdigest()

    daemon.start()  # the start-up scan claims the batch; kill it while it does
    wait_until(lambda: files_under(root / "inbox" / ".hotfolder"), 20, "the first claims")
    kill_and_restart(daemon)
    for done in (30, 60):
        wait_until(lambda d=done: len(outputs(root)) >= d, 60, f"{done} outputs")
        kill_and_restart(daemon)
    wait_until(lambda: job_states(root) == {"done": BATCH}, 90, "every job done")

    assert files_under(root / "failed") == []
    assert files_under(root / "quarantine") == []
    assert list((root / "inbox" / ".hotfolder").iterdir()) == []
    archived = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                for p in files_under(root / "archive")}
    assert archived == originals  # every original exactly once, unchanged
    names = sorted(p.name for p in files_under(root / "outbox" / "Gray"))
    expected = sorted([f"p{n:03d}.png" for n in range(BATCH)]
                      + [f"p{n:03d}.png.json" for n in range(BATCH)])
    assert names == expected  # one output and one sidecar per input, no photo-1.png
    for path in outputs(root):
        with Image.open(path) as image:
            image.load()  # complete, not truncated
            assert (image.mode, image.size) == ("L", (96, 64))
    assert [p for p in root.rglob(".hf-*") if p.is_file()] == []
    assert daemon.stop() == 0
