"""Animations and pages (SPEC 7): every frame through every step where the output holds them.

Each frame of the test animations is one solid colour, shown for its own time, so a result
read back with Pillow tells which frames came through, in which order, how long each is
shown, whether every step was applied to each, and how often the animation plays.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from conftest import RunCli
from helpers import drop, encoded, wait_until
from service_helpers import Daemon, files_under, make_root, start

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
DURATIONS = [100, 200, 300, 400, 500]
LOOP = 2


def solid_frames(size: tuple[int, int] = (64, 48)) -> list[Image.Image]:
    """One solid image per colour of COLOURS."""
    return [Image.new("RGB", size, colour) for colour in COLOURS]


def animation(fmt: str) -> bytes:
    """A 5-frame animated GIF or WebP of COLOURS, shown for DURATIONS, played LOOP more times."""
    first, *later = solid_frames()
    return encoded(first, fmt, save_all=True, append_images=later, duration=DURATIONS,
                   loop=LOOP, **({"lossless": True} if fmt == "WEBP" else {}))


def read_frames(path: Path) -> tuple[list[tuple[tuple[int, int], tuple[int, ...]]],
                                     list[int | None], int | None]:
    """Each frame's size and top-left colour, each frame's duration, and the loop count."""
    with Image.open(path) as image:
        frames, durations = [], []
        for number in range(getattr(image, "n_frames", 1)):
            image.seek(number)
            image.load()
            frames.append((image.size, image.convert("RGB").getpixel((0, 0))))
            durations.append(image.info.get("duration"))
        return frames, durations, image.info.get("loop")


def inverted(colour: tuple[int, int, int]) -> tuple[int, ...]:
    """The colour after `invert`."""
    return tuple(255 - channel for channel in colour)


@pytest.mark.parametrize("source", ["GIF", "WEBP"])
@pytest.mark.parametrize(("target", "ext"), [("gif", "gif"), ("webp", "webp")])
def test_an_animation_keeps_every_frame_its_timing_and_loop(
        tmp_path: Path, cli: RunCli, source: str, target: str, ext: str) -> None:
    (tmp_path / "anim.img").write_bytes(animation(source))
    code, _, err = cli(tmp_path, "process", "anim.img", "-s", f"resize=32+invert+{target}",
                       "-o", "out")
    assert code == 0, err
    frames, durations, loop = read_frames(tmp_path / "out" / f"anim.{ext}")
    lossy = 3 if target == "webp" else 0
    assert frames == [((32, 24), pytest.approx(inverted(colour), abs=lossy))
                      for colour in COLOURS]
    assert durations == DURATIONS
    assert loop == LOOP


@pytest.mark.parametrize(("steps", "output", "colours"), [
    ("resize=32+invert", "scan.tif", [inverted(colour) for colour in COLOURS[:3]]),
    ("resize=32+gif", "scan.gif", COLOURS[:3]),
], ids=["tiff-keeps-every-page", "pages-become-gif-frames"])
def test_every_page_of_a_multi_page_tiff_is_kept(tmp_path: Path, cli: RunCli, steps: str,
                                                  output: str,
                                                  colours: list[tuple[int, ...]]) -> None:
    first, *later = solid_frames((64, 48))[:3]
    (tmp_path / "scan.tif").write_bytes(encoded(first, "TIFF", save_all=True,
                                                append_images=later))
    code, _, err = cli(tmp_path, "process", "scan.tif", "-s", steps, "-o", "out")
    assert code == 0, err
    frames, _, _ = read_frames(tmp_path / "out" / output)
    assert frames == [((32, 24), colour) for colour in colours]


@pytest.mark.parametrize(("steps", "output"), [("resize=32", "anim.png"),
                                               ("resize=32+jpeg", "anim.jpg"),
                                               ("resize=32+bmp", "anim.bmp")])
def test_a_format_without_frames_gets_the_first_and_the_sidecar_counts_the_rest(
        tmp_path: Path, cli: RunCli, steps: str, output: str) -> None:
    (tmp_path / "anim.gif").write_bytes(animation("GIF"))
    recipe = tmp_path / "still.yaml"
    recipe.write_text(f"steps: [{', '.join(steps.split('+'))}]\noutput: {{format: png}}\n"
                      "sidecar: true\n")
    code, _, err = cli(tmp_path, "process", "anim.gif", "-r", recipe, "-o", "out")
    assert code == 0, err
    if output != "anim.png":  # a format step overrides the recipe's output format
        assert not (tmp_path / "out" / "anim.png").exists()
    frames, _, _ = read_frames(tmp_path / "out" / output)
    assert len(frames) == 1
    assert frames[0][0] == (32, 24)
    assert frames[0][1] == pytest.approx(COLOURS[0], abs=2)  # JPEG is lossy
    sidecar = json.loads((tmp_path / "out" / f"{output}.json").read_text())
    assert sidecar["frames"] == {"input": 5, "output": 1, "left_out": 4}


def test_an_animation_kept_whole_says_so_in_the_sidecar(tmp_path: Path, cli: RunCli) -> None:
    (tmp_path / "anim.gif").write_bytes(animation("GIF"))
    recipe = tmp_path / "anim.yaml"
    recipe.write_text("steps: [resize=32]\nsidecar: true\n")
    code, _, err = cli(tmp_path, "process", "anim.gif", "-r", recipe, "-o", "out")
    assert code == 0, err
    sidecar = json.loads((tmp_path / "out" / "anim.gif.json").read_text())
    assert sidecar["frames"] == {"input": 5, "output": 5, "left_out": 0}


def test_a_still_image_has_no_frame_count(tmp_path: Path, cli: RunCli) -> None:
    (tmp_path / "still.gif").write_bytes(encoded(solid_frames()[0], "GIF"))
    recipe = tmp_path / "still.yaml"
    recipe.write_text("steps: [resize=32]\nsidecar: true\n")
    code, _, err = cli(tmp_path, "process", "still.gif", "-r", recipe, "-o", "out")
    assert code == 0, err
    assert "frames" not in json.loads((tmp_path / "out" / "still.gif.json").read_text())


def corrupted_later_frame() -> bytes:
    """The 5-frame GIF with the image data of its fourth frame overwritten."""
    data = bytearray(animation("GIF"))
    with Image.open(io.BytesIO(bytes(data))) as image:
        image.seek(3)
        start = image.tile[0].offset  # where the fourth frame's data begins
    data[start + 2:start + 12] = b"\xff" * 10
    return bytes(data)


def test_a_corrupted_later_frame_is_a_plain_error(tmp_path: Path, cli: RunCli) -> None:
    (tmp_path / "anim.gif").write_bytes(corrupted_later_frame())
    code, out, err = cli(tmp_path, "process", "anim.gif", "-s", "resize=32+gif", "-o", "out")
    assert (code, out) == (1, "")
    assert err == ("anim.gif: the gif file is damaged or not a valid image"
                   " (frame 4 of 5 could not be decoded)\n")
    assert list((tmp_path / "out").iterdir()) == []


def test_a_corrupted_later_frame_is_not_read_for_a_still_output(
        tmp_path: Path, cli: RunCli) -> None:
    (tmp_path / "anim.gif").write_bytes(corrupted_later_frame())
    code, _, err = cli(tmp_path, "process", "anim.gif", "-s", "resize=32+png", "-o", "out")
    assert code == 0, err
    assert read_frames(tmp_path / "out" / "anim.png")[0] == [((32, 24), COLOURS[0])]


def test_the_service_keeps_every_frame(tmp_path: Path, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root")
    root = config.parent
    daemon = start(daemons, config)
    drop(root, "resize=32+gif/anim.gif", animation("GIF"))
    drop(root, "resize=32+gif/broken.gif", corrupted_later_frame())
    result = root / "outbox" / "resize=32+gif" / "anim.gif"
    report = root / "failed" / "resize=32+gif" / "broken.gif.error.json"
    wait_until(lambda: result.exists() and report.exists(), 30, "the animation and the report")
    frames, durations, loop = read_frames(result)
    assert frames == [((32, 24), colour) for colour in COLOURS]
    assert (durations, loop) == (DURATIONS, LOOP)
    error = json.loads(report.read_text())
    assert error["message"] == ("resize=32+gif/broken.gif: the gif file is damaged or not a"
                                " valid image (frame 4 of 5 could not be decoded)")
    assert [p.name for p in files_under(root / "outbox")] == ["anim.gif"]
    assert daemon.get("/readyz")[0] == 200
    assert daemon.stop() == 0


def test_frames_trimmed_to_other_sizes_are_centred_on_the_first_ones_size(
        tmp_path: Path, cli: RunCli) -> None:
    frames = []
    for side in (30, 20, 10):  # a red square on white, smaller in each frame
        frame = Image.new("RGB", (60, 60), "white")
        frame.paste((255, 0, 0), (15, 15, 15 + side, 15 + side))
        frames.append(frame)
    (tmp_path / "shrink.gif").write_bytes(encoded(frames[0], "GIF", save_all=True,
                                                  append_images=frames[1:], duration=100))
    code, _, err = cli(tmp_path, "process", "shrink.gif", "-s", "trim+webp", "-o", "out")
    assert code == 0, err  # WebP refuses frames of different sizes
    with Image.open(tmp_path / "out" / "shrink.webp") as image:
        squares = []
        for number in range(image.n_frames):
            image.seek(number)
            opaque = image.convert("RGBA").getchannel("A").point(lambda a: 255 * (a > 128))
            squares.append((image.size, opaque.getbbox()))
    assert squares == [((30, 30), (0, 0, 30, 30)), ((30, 30), (5, 5, 25, 25)),
                       ((30, 30), (10, 10, 20, 20))]
