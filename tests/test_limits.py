"""The limits of SPEC 10 against folder names: pixel bombs refused by step, memory per worker.

Every test here runs the real command line or the real service. A bomb is a small file in a
folder whose name asks for billions of pixels; it must fail with a reason that names the
step and the size without allocating them, so each command runs under a data limit far below
the bomb's size: a check that came too late would fail with "not enough memory" instead.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from clamd_server import Clamd
from helpers import drop, encoded, gif_file, image_bytes, wait_until
from hotfolder import engine, memory
from hotfolder.config import AUTO_FLOOR_MB, MEMORY_SHARE_PERCENT, SERVICE_MEMORY_MB, LimitsConfig
from hotfolder.errors import InputError
from service_helpers import Daemon, files_under, make_root, start

# Far below every bomb (a 1.2-gigapixel RGB canvas is 3.6 GB), well above a refused job.
COMMAND_DATA_LIMIT = 2 * 2**30
LIMIT = "over the limit of 100 megapixels (limits.max_pixels)"
# The four folder names of a shared inbox that once took the machine (on a 64 x 48 JPEG).
BOMBS = {
    "resize=40000x40000,upscale+png":
        "step 1, resize=40000x40000,upscale: the result would be 40000 x 30000 pixels"
        " (1200 megapixels)",
    "size=3000mmx,1200+png":
        "step 1, size=3000mmx,1200: the result would be 141732 x 106299 pixels"
        " (15066 megapixels)",
    "resize=30000x30000,stretch,upscale+jpeg":
        "step 1, resize=30000x30000,stretch,upscale: the result would be 30000 x 30000 pixels"
        " (900 megapixels)",
    "resize=20000x20000,pad,upscale+rotate=33+png":
        "step 1, resize=20000x20000,pad,upscale: the result would be 20000 x 20000 pixels"
        " (400 megapixels)",
}
# One bomb for each geometry operation that can make an image larger than its input.
GEOMETRY_BOMBS = {
    **BOMBS,
    "resize=30000x30000,fill,upscale+png":
        "step 1, resize=30000x30000,fill,upscale: the result would be 30000 x 30000 pixels"
        " (900 megapixels)",
    "resize=9000x9000,pad,upscale+rotate=45+png":
        "step 2, rotate=45: the result would be 12728 x 12728 pixels (162 megapixels)",
    "grayscale+rotate=89,white+resize=15000x15000,upscale+png":
        "step 3, resize=15000x15000,upscale: the result would be 11364 x 15000 pixels"
        " (170 megapixels)",
}


def limit_data() -> None:
    """In the child, before exec: cap its data segment."""
    resource.setrlimit(resource.RLIMIT_DATA, (COMMAND_DATA_LIMIT, COMMAND_DATA_LIMIT))


def process(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`hotfolder process ARGS` in a process of its own, under the data limit."""
    return subprocess.run(
        [sys.executable, "-m", "hotfolder.cli", "process", *map(str, args)], cwd=cwd,
        capture_output=True, text=True, timeout=120, check=False, preexec_fn=limit_data,
        env={**os.environ, "HOTFOLDER_CONFIG": str(cwd / "none.yaml")},
    )


def test_geometry_that_cannot_grow_an_image_is_not_a_bomb_whatever_its_numbers(
        tmp_path: Path) -> None:
    """A crop box, a trim, turns and a thumbnail larger than the picture keep its size."""
    (tmp_path / "photo.jpg").write_bytes(image_bytes("JPEG", seed=1))
    chain = ("crop=0,0,100000,100000+trim=0+auto_orient+flip+mirror+rotate=720+rotate=90,crop"
             "+thumbnail=4096+png")
    done = process("photo.jpg", "-s", chain, "-o", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for name in ("photo.png", "photo_thumb.jpg"):
        with Image.open(tmp_path / "out" / name) as image:
            assert image.size == (64, 48)


def test_the_four_folder_name_bombs_fail_at_once_in_the_service(
        tmp_path: Path, clamd: Clamd, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", clamd.address)
    root = config.parent
    daemon = start(daemons, config)
    for seed, folder in enumerate(BOMBS):
        drop(root, f"{folder}/bomb.jpg", image_bytes("JPEG", seed=seed))
    drop(root, "grayscale+png/fine.jpg", image_bytes("JPEG", seed=9))
    reports = [root / "failed" / folder / "bomb.jpg.error.json" for folder in BOMBS]
    wait_until(lambda: all(r.exists() for r in reports), 60, "four bombs in failed/")
    for report, (folder, reason) in zip(reports, BOMBS.items(), strict=True):
        error = json.loads(report.read_text())
        assert error["message"] == f"{folder}/bomb.jpg: {reason}, {LIMIT}"
        assert error["stage"] == "process"
    wait_until((root / "outbox" / "grayscale+png" / "fine.png").exists, 20, "the good file")
    assert [p.name for p in files_under(root / "outbox")] == ["fine.png"]
    assert daemon.get("/readyz")[0] == 200
    for pid in daemon.children():  # the bombs were refused, not allocated
        assert peak_kb(pid) < COMMAND_DATA_LIMIT // 1024, f"worker {pid} grew large"
    assert daemon.stop() == 0


def peak_kb(pid: int) -> int:
    """The peak resident memory of a process, in kB (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for process {pid}")


# Animations: the budget counts every frame, from the headers, before a frame is decoded
# (these, and the geometry bombs above, are kinds of test_hostile.py).
FRAME_BOMBS = {
    "frames.gif": (gif_file(4000, 4000, 400),  # 400 frames on a 4000 x 4000 screen: 9 kB
                   "the image has 400 frames of 4000 x 4000 pixels (6400 megapixels in all)"),
    "screen.gif": (gif_file(20000, 20000, 3),  # frames of one pixel, drawn on the screen
                   "the image claims 400 megapixels"),
    "screens.gif": (gif_file(6000, 6000, 3),  # each frame a whole screen within the limit
                    "the image has 3 frames of 6000 x 6000 pixels (108 megapixels in all)"),
}


def ten_frames() -> bytes:
    """A 10-frame animated GIF of 400 x 300 pixels."""
    first, *later = [Image.new("RGB", (400, 300), (25 * n, 0, 0)) for n in range(10)]
    return encoded(first, "GIF", save_all=True, append_images=later, duration=50)


def test_a_step_is_refused_for_all_the_frames_it_would_make(tmp_path: Path) -> None:
    (tmp_path / "anim.gif").write_bytes(ten_frames())
    done = process("anim.gif", "-s", "resize=4000x4000,upscale+gif", "-o", "out", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == (
        "anim.gif: step 1, resize=4000x4000,upscale: the result would be 10 frames of"
        f" 4000 x 3000 pixels (120 megapixels in all), {LIMIT}")
    assert list((tmp_path / "out").iterdir()) == []


def test_the_same_step_fits_when_only_the_first_frame_is_kept(tmp_path: Path) -> None:
    (tmp_path / "anim.gif").write_bytes(ten_frames())
    done = process("anim.gif", "-s", "resize=4000x4000,upscale+png", "-o", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "out" / "anim.png") as image:
        assert image.size == (4000, 3000)


# -- the memory cap of each worker -------------------------------------------------------------

# A worker holds about 300 MB of libraries before its first job: 700 MB leave a small job
# plenty of room, while padding to 9900 x 9900 on transparency holds a 392 MB canvas and the
# 294 MB picture placed on it at once. It stays within limits.max_pixels (98 megapixels).
WORKER_MEMORY_MB = 700
GREEDY = "resize=9900x9900,pad,upscale,transparent+png"
NOT_ENOUGH = (f"not enough memory to process it: it needs more than the {WORKER_MEMORY_MB} MB"
              " a worker may use (limits.worker_memory_mb)")


def test_a_job_over_the_worker_memory_fails_plainly_and_the_service_carries_on(
        tmp_path: Path, clamd: Clamd, daemons: list[Daemon],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))  # compiled under the cap
    config = make_root(tmp_path / "root", clamd.address, queue={"workers": 1},
                       limits={"worker_memory_mb": WORKER_MEMORY_MB})
    root = config.parent
    daemon = start(daemons, config)
    drop(root, f"{GREEDY}/big.jpg", image_bytes("JPEG", seed=1))
    drop(root, "grayscale+png/before.jpg", image_bytes("JPEG", seed=2))
    report = root / "failed" / GREEDY / "big.jpg.error.json"
    wait_until(report.exists, 60, "the greedy job in failed/")
    error = json.loads(report.read_text())
    assert error["message"] == f"{GREEDY}/big.jpg: {NOT_ENOUGH}"
    drop(root, "resize=800+dither=jarvis+png/after.jpg", image_bytes("JPEG", (1600, 1200)))
    outbox = root / "outbox"
    wait_until(lambda: len(files_under(outbox)) == 2, 60, "the other two jobs")
    assert sorted(p.name for p in files_under(outbox)) == ["after.png", "before.png"]
    assert daemon.get("/readyz")[0] == 200
    assert daemon.status()["jobs"]["failed"] == 1
    assert daemon.stop() == 0


def test_process_caps_each_of_its_workers(tmp_path: Path) -> None:
    (tmp_path / "hotfolder.yaml").write_text(
        f"limits:\n  worker_memory_mb: {WORKER_MEMORY_MB}\n")
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(image_bytes("JPEG", seed=3))
    for jobs in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-m", "hotfolder.cli", "process", "a.jpg", "b.jpg", "-s", GREEDY,
             "-o", f"out{jobs}", "-j", jobs, "-c", "hotfolder.yaml"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 1
        assert sorted(done.stderr.strip().splitlines()) == [
            "0 of 2 files processed, 2 failed", f"a.jpg: {NOT_ENOUGH}", f"b.jpg: {NOT_ENOUGH}"]
        assert list((tmp_path / f"out{jobs}").iterdir()) == []
    small = subprocess.run(
        [sys.executable, "-m", "hotfolder.cli", "process", "a.jpg", "-s", "resize=2000,upscale+png",
         "-o", "small", "-c", "hotfolder.yaml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert small.returncode == 0, small.stderr


def test_an_svg_too_large_for_the_worker_fails_plainly_instead_of_ending_it(
        tmp_path: Path) -> None:
    """The SVG renderer ends its process when an allocation fails: the room is checked first."""
    (tmp_path / "hotfolder.yaml").write_text(
        f"limits:\n  worker_memory_mb: {WORKER_MEMORY_MB}\n")
    (tmp_path / "wide.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="9000"'
                                       ' height="9000"><rect width="10" height="10"/></svg>')
    done = subprocess.run(
        [sys.executable, "-m", "hotfolder.cli", "process", "wide.svg", "-s", "png", "-o", "out",
         "-c", "hotfolder.yaml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert (done.returncode, done.stderr.strip()) == (1, f"wide.svg: {NOT_ENOUGH}")


@pytest.mark.parametrize(("allocate", "detail"), [
    (lambda: np.ones((12000, 12000, 3), np.uint8), ""),
    (lambda: Image.new("RGB", (12000, 12000)), ""),
    (lambda: cv2.resize(np.zeros((10, 10, 3), np.uint8), (12000, 12000)),
     "(-4:Insufficient memory)"),
], ids=["numpy", "pillow", "opencv"])
def test_each_library_running_out_of_memory_is_said_in_plain_words(
        allocate: Callable[[], object], detail: str) -> None:
    cap = memory.data_size() + 200 * 2**20
    with (pytest.raises(InputError) as caught, memory.capped(cap),
          engine.memory_errors_in_words()):
        allocate()
    assert caught.value.message == (f"not enough memory to process it: it needs more than the"
                                    f" {cap // 2**20} MB a worker may use"
                                    " (limits.worker_memory_mb)")
    assert detail in caught.value.detail
    assert resource.getrlimit(resource.RLIMIT_DATA)[0] != cap  # lifted again after the block


def test_worker_memory_is_the_machines_share_divided_among_the_workers() -> None:
    share = memory.machine_memory() * MEMORY_SHARE_PERCENT // 100 - SERVICE_MEMORY_MB * 2**20
    assert LimitsConfig().worker_memory_bytes(2) == max(share // 2, AUTO_FLOOR_MB * 2**20)
    assert LimitsConfig(worker_memory_mb=900).worker_memory_bytes(2) == 900 * 2**20
    with pytest.raises(ValidationError, match=r"at least 512 \(MB\), or auto"):
        LimitsConfig(worker_memory_mb=100)
