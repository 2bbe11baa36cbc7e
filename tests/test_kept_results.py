"""A job waiting for its destination keeps its result (SPEC 10): the outbox on a real tmpfs.

The outbox is a 3 MB tmpfs that is full, then gets room; then it is remounted
read-only, then writable. The jobs wait meanwhile and are retried; each is rendered
once (the process stage counts one per job), and is delivered complete, with no
temporary or partial file ever left in the outbox.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from helpers import drop, image_bytes, wait_until
from service_helpers import Daemon, files_under, make_root, start

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")

RECIPE = "steps: [grayscale]\noutput: {format: png}\nsidecar: true\n"
SIZE = (300, 200)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 3 MB tmpfs, unmounted afterwards."""
    mount = tmp_path / "outbox"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(folder: Path) -> Path:
    """A file that takes every free byte of folder's filesystem."""
    filler = folder / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def remount(folder: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(folder)], check=True)


def waits(root: Path) -> list[int]:
    """How often each unfinished job has waited so far."""
    with sqlite3.connect(root / "state" / "journal.db") as db:
        return [n for (n,) in db.execute("select waits from jobs where state != 'done'")]


def renders(daemon: Daemon) -> float:
    return daemon.metric("hotfolder_stage_seconds_count", stage="process") or 0.0


def delivered(outbox: Path, names: list[str]) -> bool:
    return all((outbox / "gray" / f"{name}.png.json").exists() for name in names)


def check_outbox(outbox: Path, names: list[str]) -> None:
    """Only whole results in the outbox: each output a complete image beside its sidecar."""
    found = sorted(p.name for p in files_under(outbox / "gray"))
    assert found == sorted([f"{n}.png" for n in names] + [f"{n}.png.json" for n in names])
    for name in names:
        with Image.open(outbox / "gray" / f"{name}.png") as image:
            image.load()
            assert (image.mode, image.size) == ("L", SIZE)


def wait_for_retries(daemon: Daemon, jobs: int) -> None:
    """Until `jobs` jobs wait for the outbox and each has been tried again at least once."""
    wait_until(lambda: daemon.metric("hotfolder_waiting_jobs", reason="outbox") == jobs, 30,
               f"{jobs} jobs waiting for the outbox")
    wait_until(lambda: len(waits(daemon.root)) == jobs and min(waits(daemon.root)) >= 2, 40,
               "a second try of each waiting job")


def test_a_full_then_read_only_outbox_delays_jobs_that_are_rendered_once(
        tmp_path: Path, small_disk: Path, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", paths={"outbox": str(small_disk)},
                       cache={"enabled": False})  # no result cache to hide a second render
    root = config.parent
    (root / "recipes" / "gray.yaml").write_text(RECIPE)
    daemon = start(daemons, config)

    filler = fill(small_disk)
    first = [f"full{n}" for n in range(3)]
    for n, name in enumerate(first):
        drop(root, f"gray/{name}.jpg", image_bytes("JPEG", SIZE, seed=n))
    wait_for_retries(daemon, len(first))
    assert renders(daemon) == len(first)
    assert files_under(small_disk) == [filler]  # nothing partial, no temporary name
    filler.unlink()
    wait_until(lambda: delivered(small_disk, first), 40, "the results once there is room")
    check_outbox(small_disk, first)
    assert renders(daemon) == len(first)  # delivered as kept, not rendered again

    remount(small_disk, "ro")
    second = [f"readonly{n}" for n in range(2)]
    for n, name in enumerate(second):
        drop(root, f"gray/{name}.jpg", image_bytes("JPEG", SIZE, seed=10 + n))
    wait_for_retries(daemon, len(second))
    remount(small_disk, "rw")
    wait_until(lambda: delivered(small_disk, second), 40, "the results once writable")
    check_outbox(small_disk, first + second)
    assert renders(daemon) == len(first) + len(second)

    wait_until(lambda: files_under(root / "inbox") == [], 10, "an empty work folder")
    assert sorted(p.name for p in files_under(root / "archive" / "gray")) == sorted(
        f"{name}.jpg" for name in first + second)
    assert files_under(root / "failed") == []
    assert "Traceback" not in daemon.log.read_text()
    assert daemon.stop() == 0
