"""Every input is upright before its first step (SPEC 7), in any folder, by its EXIF orientation.

The picture is asymmetric (four quadrants of different colours), so a turn or a flip that
is missing, wrong or done twice shows in the pixels of the output.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from clamd_server import Clamd
from conftest import RunCli
from helpers import drop, encoded, exif_with, opened, wait_until
from hotfolder import engine, imaging
from hotfolder.config import LimitsConfig
from hotfolder.recipes import combine, parse_chain
from service_helpers import Daemon, make_root, start

LIMITS = LimitsConfig()
UPRIGHT = (80, 60)
# Top-left, top-right, bottom-left, bottom-right of the picture as the photographer saw it.
QUADRANTS = [(230, 20, 20), (20, 200, 20), (20, 20, 230), (240, 240, 240)]
# How a camera stores the upright picture for each orientation (the inverse of the turn).
STORED = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
          4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
          6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
          8: Image.Transpose.ROTATE_270}


def upright_picture(size: tuple[int, int] = UPRIGHT) -> Image.Image:
    """Four coloured quadrants."""
    width, height = size
    image = Image.new("RGB", size)
    for index, colour in enumerate(QUADRANTS):
        left, top = (index % 2) * width // 2, (index // 2) * height // 2
        image.paste(colour, (left, top, left + width // 2, top + height // 2))
    return image


def phone_photo(orientation: int, size: tuple[int, int] = UPRIGHT) -> bytes:
    """A JPEG stored as a camera held that way stores it, with its EXIF orientation."""
    picture = upright_picture(size)
    turn = STORED[orientation]
    stored = picture if turn is None else picture.transpose(turn)
    return encoded(stored, "JPEG", quality=95, exif=exif_with(orientation))


def assert_upright(image: Image.Image, size: tuple[int, int] = UPRIGHT) -> None:
    """The image has the upright size and each quadrant its colour."""
    assert image.size == size
    width, height = size
    grid = np.asarray(image.convert("RGB"), np.int16)
    for index, colour in enumerate(QUADRANTS):
        x, y = (index % 2) * width // 2 + width // 4, (index // 2) * height // 2 + height // 4
        assert np.abs(grid[y, x] - colour).max() <= 12, (index, grid[y, x])


def render(data: bytes, chain: str, **output: object) -> engine.Rendered:
    """`data` through the inline chain, with output settings changed as given."""
    plan = combine([("test", "test", parse_chain(chain))])
    plan = dataclasses.replace(plan, output=plan.output.model_copy(update=output))
    return engine.render(data, "phone.jpg", plan, LIMITS)


@pytest.mark.parametrize("orientation", sorted(STORED))
def test_every_orientation_comes_out_upright_without_auto_orient(orientation: int) -> None:
    data = phone_photo(orientation)
    with Image.open(io.BytesIO(data)) as stored:  # Pillow's own reading agrees
        oracle = ImageOps.exif_transpose(stored)
        assert oracle is not None
        assert_upright(oracle)
    assert_upright(opened(render(data, "png")))


@pytest.mark.parametrize("orientation", [3, 6, 7])
def test_auto_orient_is_then_a_no_op(orientation: int) -> None:
    data = phone_photo(orientation)
    plain = np.asarray(opened(render(data, "png")))
    oriented = np.asarray(opened(render(data, "auto_orient+png")))
    twice = np.asarray(opened(render(data, "auto_orient+auto_orient+png")))
    assert np.array_equal(plain, oriented) and np.array_equal(plain, twice)


def test_the_tag_is_dropped_and_the_rest_of_the_exif_kept() -> None:
    rendered = render(phone_photo(6), "jpeg", metadata="keep")
    image = opened(rendered)
    assert_upright(image)
    exif = image.getexif()
    assert exif.get(0x0112, 1) == 1 and exif.get(0x010F) == "TestCam"
    assert rendered.sidecar["exif"]["orientation"] == 6  # what the input said


def test_a_sideways_jpeg_is_shrunk_on_decode_by_its_upright_size() -> None:
    """Stored 4000 x 1000 with orientation 6: upright it is 1000 x 4000."""
    data = phone_photo(6, size=(1000, 4000))
    tall = combine([("t", "t", parse_chain("resize=x800+png"))])
    hint = engine.size_hint(tall)
    assert hint is not None and hint((4000, 1000), 6) == (801, 201)
    assert imaging.decode(data, LIMITS, hint).canvas.image.size == (250, 1000)
    assert_upright(opened(render(data, "resize=x800+png")), (200, 800))
    # a width of 800 needs the upright width: decoding must not shrink to a quarter
    assert_upright(opened(render(data, "resize=800x+png")), (800, 3200))


def test_process_turns_a_phone_photo_upright(tmp_path: Path, cli: RunCli) -> None:
    (tmp_path / "phone.jpg").write_bytes(phone_photo(6))
    code, _, err = cli(tmp_path, "process", "phone.jpg", "-s", "png", "-o", "out")
    assert code == 0, err
    with Image.open(tmp_path / "out" / "phone.png") as image:
        assert_upright(image)


def test_a_phone_photo_dropped_in_a_png_folder_comes_out_upright(
        tmp_path: Path, clamd: Clamd, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", clamd.address)
    root = config.parent
    daemon = start(daemons, config)
    drop(root, "png/phone.jpg", phone_photo(6))
    output = root / "outbox" / "png" / "phone.png"
    wait_until(output.exists, 30, "the output")
    with Image.open(output) as image:
        assert_upright(image)
    assert daemon.stop() == 0
