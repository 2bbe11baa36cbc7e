"""SVGs within bounds: embedded images count against the pixel budget, nesting is bounded."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import pytest
from PIL import Image

from helpers import encoded, image_bytes, png_file, run_measured
from hotfolder import imaging
from hotfolder.config import LimitsConfig
from hotfolder.errors import InputError

ONE_MEGAPIXEL = LimitsConfig(max_pixels=1_000_000)
# Far below what drawing the embedded 16000 x 16000 image takes (256 MB for its grey
# pixels alone; 1.28 GB was measured), with room above the libraries a process loads.
SMALL_RSS_BYTES = 250 * 2**20


def svg_with_images(*images: bytes, media: str = "image/png") -> bytes:
    """A 100 x 100 SVG that draws each image, embedded as a base64 data: URI."""
    tags = "".join(f'<image width="100" height="100" href="data:{media};base64,'
                   f'{base64.b64encode(image).decode()}"/>' for image in images)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">{tags}</svg>'
            ).encode()


def nested_svg(levels: int) -> bytes:
    """A 100 x 100 SVG whose rectangle sits inside `levels` nested groups."""
    return (b'<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">'
            + b"<g>" * levels + b'<rect width="10" height="10"/>' + b"</g>" * levels + b"</svg>")


def test_process_refuses_an_embedded_huge_image_from_its_header_in_little_memory(
        tmp_path: Path) -> None:
    svg = tmp_path / "badge.svg"
    svg.write_bytes(svg_with_images(png_file(16000, 16000)))
    assert svg.stat().st_size < 512 * 1024  # a small file that stands for 256 megapixels
    config = tmp_path / "hotfolder.yaml"
    config.write_text("limits: {max_pixels: 1000000}\nscanner: {clamd: 'off'}\n"
                      "metrics: {listen: 'off'}\n")
    log = tmp_path / "process.log"
    with log.open("wb") as out:
        code, peak = run_measured(
            [sys.executable, "-m", "hotfolder.cli", "process", str(svg), "-s", "png", "-o",
             str(tmp_path / "out"), "-j", "1", "-c", str(config)], tmp_path / "peak",
            stdout=out, stderr=out)
    said = log.read_text()
    assert code == 1, said
    assert ("badge.svg: an image embedded in the SVG is refused: the image claims 256"
            " megapixels, over the limit of 1 megapixels (limits.max_pixels)") in said
    assert not (tmp_path / "out" / "badge.png").exists()
    print(f"peak RSS of hotfolder process: {peak / 2**20:.0f} MB")
    assert peak < SMALL_RSS_BYTES


def test_embedded_images_count_all_together() -> None:
    five = image_bytes("PNG", (500, 500))  # 0.25 megapixels each, 1.25 in all
    with pytest.raises(InputError) as info:
        imaging.decode(svg_with_images(*[five] * 5), ONE_MEGAPIXEL)
    assert info.value.message == (
        "the SVG embeds 5 images of 1.2 megapixels in all (the largest 500 x 500 pixels), over"
        " the limit of 1 megapixels (limits.max_pixels)")
    decoded = imaging.decode(svg_with_images(*[five] * 4), ONE_MEGAPIXEL)  # 1 megapixel: fits
    assert decoded.canvas.image.size == (100, 100)


def test_embedded_images_within_the_budget_are_drawn() -> None:
    red = encoded(Image.new("RGB", (40, 40), (255, 0, 0)), "PNG")
    decoded = imaging.decode(svg_with_images(red), ONE_MEGAPIXEL)
    assert decoded.canvas.image.convert("RGB").getpixel((50, 50)) == (255, 0, 0)


def test_a_damaged_embedded_image_is_refused_in_words() -> None:
    with pytest.raises(InputError, match="an image embedded in the SVG is refused: the embedded"
                                         " file is damaged or not a valid image"):
        imaging.decode(svg_with_images(b"\x89PNG not really"), ONE_MEGAPIXEL)


def test_a_deeply_nested_svg_is_refused_before_drawing() -> None:
    with pytest.raises(InputError) as info:
        imaging.decode(nested_svg(2000), ONE_MEGAPIXEL)
    assert info.value.message == ("the SVG nests its elements 2002 levels deep, more than the"
                                  " 128 levels hotfolder draws")
    assert imaging.decode(nested_svg(120), ONE_MEGAPIXEL).canvas.image.size == (100, 100)
