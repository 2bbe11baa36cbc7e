"""trace: SVG outlines from real potrace runs, drawn back and measured in mm."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import resvg_py
from PIL import Image, ImageDraw

from helpers import encoded
from hotfolder.canvas import Canvas
from hotfolder.config import LimitsConfig
from hotfolder.engine import render
from hotfolder.errors import Unavailable
from hotfolder.ops import vector
from hotfolder.recipes import Plan, parse_chain
from ops_helpers import apply

SVG = "{http://www.w3.org/2000/svg}"


def shapes(size: tuple[int, int] = (200, 100), grey: int = 0) -> Image.Image:
    """A disc and a square of `grey` on white, with a 2x2 speck."""
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    draw.ellipse((10, 10, 90, 90), fill=grey)
    draw.rectangle((120, 20, 180, 80), fill=grey)
    draw.rectangle((100, 90, 101, 91), fill=grey)
    return image


def drawn(svg: str, size: tuple[int, int]) -> np.ndarray:
    """The dark pixels of the SVG drawn at `size` pixels (resvg wants pixel sizes)."""
    pixel_sized = re.sub(r'width="[0-9.]+mm" height="[0-9.]+mm"',
                         f'width="{size[0]}" height="{size[1]}"', svg)
    png = resvg_py.svg_to_bytes(svg_string=pixel_sized, background="#ffffff")
    return np.asarray(Image.open(io.BytesIO(bytes(png))).convert("L")) < 128


def root(svg: str) -> ET.Element:
    return ET.fromstring(svg.encode())


def test_outlines_match_the_shapes_and_open_at_the_physical_size() -> None:
    image = shapes()
    result = apply(Canvas(image, dpi=(254.0, 254.0)), "trace")
    assert result.vector is not None
    svg = root(result.vector)
    assert (svg.get("width"), svg.get("height")) == ("20.000mm", "10.000mm")  # 200 px at 254 DPI
    assert svg.get("viewBox", "").split() == ["0", "0", "200.000000", "100.000000"]
    assert result.output["format"] == "svg"
    original = np.asarray(image) < 128
    back = drawn(result.vector, image.size)
    iou = (original & back).sum() / (original | back).sum()
    assert iou > 0.97
    assert result.notes["trace"]["paths"] == 3


def test_threshold_chooses_which_greys_are_traced() -> None:
    image = shapes(grey=100)
    assert apply(image, "trace=50").notes["trace"]["paths"] == 0
    assert apply(image, "trace=150").notes["trace"]["paths"] == 3
    assert apply(image, "trace=otsu").notes["trace"]["paths"] == 3


def test_min_speck_drops_small_dots() -> None:
    assert apply(shapes(), {"trace": {"min_speck": 0}}).notes["trace"]["paths"] == 3
    assert apply(shapes(), {"trace": {"min_speck": 10}}).notes["trace"]["paths"] == 2


def test_smoothing_zero_keeps_straight_corners() -> None:
    sharp = apply(shapes(), {"trace": {"smoothing": 0}}).vector
    smooth = apply(shapes(), {"trace": {"smoothing": 1.3}}).vector
    assert sharp is not None and smooth is not None
    sharp_paths = [p.get("d", "") for p in root(sharp).iter(f"{SVG}path")]
    assert not any("c" in d for d in sharp_paths)  # polygons: line segments only
    assert any("c" in p.get("d", "") for p in root(smooth).iter(f"{SVG}path"))


def test_outline_mode_draws_hairlines_for_cutting() -> None:
    result = apply(Canvas(shapes(), dpi=(254.0, 254.0)), {"trace": {"outline": True}})
    assert result.vector is not None
    group = next(root(result.vector).iter(f"{SVG}g"))
    assert group.get("fill") == "none" and group.get("stroke") == "#000000"
    assert float(group.get("stroke-width", "0")) == pytest.approx(10.0)  # 0.1 mm = 1 px = 10


def test_an_all_white_image_gives_an_empty_svg_and_says_so() -> None:
    result = apply(Image.new("RGB", (50, 40), "white"), "trace")
    assert result.vector is not None
    svg = root(result.vector)
    assert list(svg.iter(f"{SVG}path")) == []
    assert "no dark shapes to trace" in " ".join(result.notes["trace"]["remarks"])
    assert "96 was assumed" in " ".join(result.notes["trace"]["remarks"])
    assert svg.get("width") == f"{50 / 96 * 25.4:.3f}mm"


def test_trace_in_a_job_writes_an_svg_file_with_the_sidecar() -> None:
    plan = Plan(name="cut", steps=parse_chain("trace").steps)
    rendered = render(encoded(shapes(), "PNG", dpi=(300, 300)), "logo.png", plan, LimitsConfig())
    assert rendered.main.name == "logo.svg"
    assert rendered.main.media_type == "image/svg+xml"
    svg = root(rendered.main.data.decode())
    assert svg.get("width") == f"{200 / 300 * 25.4:.3f}mm"
    assert rendered.sidecar["trace"]["paths"] == 3
    assert rendered.sidecar["output"]["format"] == "svg"


def test_without_potrace_the_job_waits_rather_than_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vector, "POTRACE", "potrace-not-installed-here")
    with pytest.raises(Unavailable, match="trace needs the potrace program"):
        apply(shapes(), "trace")
