"""remove_background scored against known masks: objects composited onto plain, gradient and
textured backgrounds (bench/bench_background.py prints the whole table at larger sizes)."""

from __future__ import annotations

import io
from collections.abc import Callable

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from helpers import encoded
from hotfolder.canvas import Canvas
from hotfolder.config import LimitsConfig
from hotfolder.engine import render
from hotfolder.errors import InputError, RecipeError
from hotfolder.recipes import Plan, parse_chain
from ops_helpers import apply, pixels

Size = tuple[int, int]
Layer = tuple[np.ndarray, np.ndarray]  # colour (h, w, 3) float, alpha (h, w) 0..1


Draw = Callable[[ImageDraw.ImageDraw, float, float], None]


def _drawn_alpha(size: Size, draw: Draw) -> np.ndarray:
    """An anti-aliased alpha: drawn at four times the size (coordinates as fractions), averaged."""
    w, h = size
    big = Image.new("L", (w * 4, h * 4), 0)
    draw(ImageDraw.Draw(big), w * 4, h * 4)
    return np.asarray(big.resize(size, Image.Resampling.BOX), np.float32) / 255


def logo(size: Size) -> Layer:
    """A dark blue ring (with its hole) and the letters H and F, as a logo with alpha."""
    def draw(d: ImageDraw.ImageDraw, w: float, h: float) -> None:
        cx, cy, r = 0.35 * w, 0.5 * h, 0.3 * h
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        d.ellipse((cx - 0.6 * r, cy - 0.6 * r, cx + 0.6 * r, cy + 0.6 * r), fill=0)
        for x0, y0, x1, y1 in [(0, 0, .04, .5), (.12, 0, .16, .5), (0, .22, .16, .28),
                               (.22, 0, .26, .5), (.22, 0, .34, .06), (.22, .22, .32, .28)]:
            d.rectangle(((0.62 + x0) * w, (0.25 + y0) * h, (0.62 + x1) * w, (0.25 + y1) * h),
                        fill=255)
    alpha = _drawn_alpha(size, draw)
    colour = np.zeros((*alpha.shape, 3), np.float32)
    colour[:] = (20, 40, 120)
    return colour, alpha


def shapes(size: Size) -> Layer:
    """A red disc, a green triangle and a yellow bar."""
    def draw(d: ImageDraw.ImageDraw, w: float, h: float) -> None:
        d.ellipse((0.08 * w, 0.2 * h, 0.38 * w, 0.2 * h + 0.3 * w), fill=255)
        d.polygon([(0.5 * w, 0.15 * h), (0.7 * w, 0.8 * h), (0.42 * w, 0.7 * h)], fill=255)
        d.rectangle((0.74 * w, 0.3 * h, 0.92 * w, 0.75 * h), fill=255)
    alpha = _drawn_alpha(size, draw)
    x = np.arange(size[0])[None, :].repeat(size[1], 0)
    colour = np.zeros((*alpha.shape, 3), np.float32)
    colour[x < 0.4 * size[0]] = (200, 30, 30)
    colour[(x >= 0.4 * size[0]) & (x < 0.72 * size[0])] = (30, 150, 40)
    colour[x >= 0.72 * size[0]] = (230, 190, 20)
    return colour, alpha


def photo(size: Size) -> Layer:
    """An oval cut from a photograph: shading in every colour, light and dark parts, grain."""
    def draw(d: ImageDraw.ImageDraw, w: float, h: float) -> None:
        d.ellipse((0.2 * w, 0.12 * h, 0.8 * w, 0.88 * h), fill=255)
    alpha = _drawn_alpha(size, draw)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    colour = np.empty((h, w, 3), np.float32)
    for c, base in enumerate((120, 90, 70)):
        colour[..., c] = (base + 50 * np.sin(x / w * 9 + c) * np.cos(y / h * 7)
                          + 25 * np.sin((x - y) / (w + h) * 30))
    colour += np.random.default_rng(3).normal(0, 8, colour.shape).astype(np.float32)
    return np.clip(colour, 0, 255), alpha


def portrait(size: Size) -> Layer:
    """Head and shoulders cut off by the bottom edge, coloured like the photo."""
    def draw(d: ImageDraw.ImageDraw, w: float, h: float) -> None:
        d.ellipse((0.4 * w, 0.12 * h, 0.6 * w, 0.5 * h), fill=255)
        d.ellipse((0.2 * w, 0.5 * h, 0.8 * w, 1.4 * h), fill=255)
    colour, _ = photo(size)
    return colour, _drawn_alpha(size, draw)


def backdrop(kind: str, size: Size) -> np.ndarray:
    """A plain light grey, a diagonal gradient, or a lightly textured (paper/wood) backdrop."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "plain":
        return np.broadcast_to(np.array((236, 236, 232), np.float32), (h, w, 3))
    if kind == "gradient":
        t = ((x / w + y / h) / 2)[..., None]
        return (1 - t) * np.array((250, 248, 240), np.float32) + t * np.array(
            (165, 175, 200), np.float32)
    rng = np.random.default_rng(5)
    grain = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0),
                             max(1.0, w / 400))
    grain /= grain.std()
    stripes = np.sin(y / h * 60 + 3 * np.sin(x / w * 5))
    out = np.empty((h, w, 3), np.float32)
    for c, base in enumerate((222, 205, 180)):
        out[..., c] = base + 6 * grain + 5 * stripes + rng.normal(0, 3, (h, w))
    return out


OBJECTS: dict[str, Callable[[Size], Layer]] = {"logo": logo, "shapes": shapes, "photo": photo,
                                                "portrait": portrait}
BACKDROPS = ("plain", "gradient", "textured")


def scene(obj: str, kind: str, size: Size) -> tuple[np.ndarray, np.ndarray]:
    """The object composited onto the backdrop (RGB uint8) and its known mask (alpha >= 0.5)."""
    colour, alpha = OBJECTS[obj](size)
    a = alpha[..., None]
    image = colour * a + backdrop(kind, size) * (1 - a)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), alpha >= 0.5


def iou(found: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two masks."""
    return float((found & truth).sum() / max(1, (found | truth).sum()))


def cut_out(image: np.ndarray, step: object) -> np.ndarray:
    """The subject mask that a remove_background step leaves (alpha of at least half)."""
    result = apply(Image.fromarray(image, "RGB"), step).image
    assert result.mode == "RGBA"
    return pixels(result)[..., 3] >= 128


SIZE = (320, 240)


@pytest.mark.parametrize("obj", list(OBJECTS))
@pytest.mark.parametrize("kind", ["plain", "gradient"])
def test_auto_finds_objects_on_plain_and_gradient_backdrops(obj: str, kind: str) -> None:
    image, truth = scene(obj, kind, SIZE)
    assert iou(cut_out(image, "remove_background"), truth) >= 0.95


@pytest.mark.parametrize("obj", list(OBJECTS))
def test_grabcut_finds_objects_on_a_textured_backdrop(obj: str) -> None:
    image, truth = scene(obj, "textured", SIZE)
    assert iou(cut_out(image, "remove_background=grabcut"), truth) >= 0.85


def test_watershed_finds_the_logo_and_its_hole() -> None:
    image, truth = scene("logo", "gradient", SIZE)
    found = cut_out(image, "remove_background=watershed,0")
    assert iou(found, truth) >= 0.95
    assert not found[120, 112]  # the middle of the ring's hole stays background


def test_large_pictures_are_worked_on_small_and_the_mask_scaled_up() -> None:
    image, truth = scene("shapes", "plain", (1800, 1200))  # more than WORK_SIDE pixels
    found = cut_out(image, "remove_background=auto,0")
    assert found.shape == truth.shape
    assert iou(found, truth) >= 0.97


def test_the_subject_keeps_its_pixels_and_the_rest_is_transparent() -> None:
    image, truth = scene("shapes", "plain", SIZE)
    result = pixels(apply(Image.fromarray(image), "remove_background=auto,0").image)
    inside = truth & (np.abs(result[..., 3].astype(int) - 255) == 0)
    np.testing.assert_array_equal(result[inside][:, :3], image[inside])
    assert (result[~truth][:, 3] == 0).mean() > 0.99


def test_a_chosen_colour_replaces_the_background() -> None:
    image, truth = scene("logo", "gradient", SIZE)
    result = apply(Image.fromarray(image), {"remove_background": {"background": "#ff00ff",
                                                                  "feather": 0}})
    assert result.image.mode == "RGB"
    out = pixels(result.image)
    assert (np.all(out[~truth] == (255, 0, 255), axis=1)).mean() > 0.99
    assert (np.all(out[truth] == (20, 40, 120), axis=1)).mean() > 0.95
    assert result.notes["remove_background"]["subject_share"] == pytest.approx(truth.mean(),
                                                                               abs=0.01)


def test_feather_softens_the_edge_over_about_its_width() -> None:
    image, _ = scene("shapes", "plain", SIZE)
    hard = pixels(apply(Image.fromarray(image), "remove_background=auto,0").image)[..., 3]
    soft = pixels(apply(Image.fromarray(image), "remove_background=auto,4").image)[..., 3]
    assert set(np.unique(hard).tolist()) == {0, 255}
    row = soft[150, 225:250].astype(int)  # across the left side of the yellow bar, x = 237
    assert row[0] == 0 and row[-1] == 255
    ramp = row[(row > 5) & (row < 250)]
    assert 5 <= ramp.size <= 16  # about +-2 sigma of 4 pixels
    assert np.all(np.diff(row) >= 0)


@pytest.mark.parametrize("method", ["auto", "grabcut", "watershed"])
@pytest.mark.parametrize("colour", [(255, 255, 255), (40, 90, 160)])
def test_a_one_colour_picture_is_explained_not_crashed_on(method: str,
                                                          colour: tuple[int, int, int]) -> None:
    with pytest.raises(InputError, match="nothing to cut out: the picture is one colour"):
        apply(Image.new("RGB", (60, 40), colour), f"remove_background={method}")


def test_a_one_colour_file_fails_its_job_with_the_reason() -> None:
    blank = encoded(Image.new("RGB", (60, 40), "white"), "PNG")
    plan = Plan(name="cutout", steps=parse_chain("remove_background").steps)
    with pytest.raises(InputError) as caught:
        render(blank, "blank.png", plan, LimitsConfig())
    assert caught.value.message == ("remove_background found nothing to cut out: "
                                    "the picture is one colour")
    assert caught.value.stage == "process"


def test_a_picture_without_a_subject_is_explained() -> None:
    gradient = np.clip(backdrop("gradient", (80, 60)), 0, 255).astype(np.uint8)
    with pytest.raises(InputError, match="no subject that stands out"):
        apply(Image.fromarray(gradient), "remove_background")


@pytest.mark.parametrize(("chain", "words"), [
    ("remove_background=magic", "method"),
    ("remove_background=auto,-1", "feather"),
    ("remove_background=auto,1,notacolour", "is not a colour"),
])
def test_bad_parameters_are_named(chain: str, words: str) -> None:
    with pytest.raises(RecipeError, match=words):
        parse_chain(chain)


def test_a_job_writes_a_transparent_png() -> None:
    image, truth = scene("logo", "plain", SIZE)
    source = encoded(Image.fromarray(image), "JPEG", quality=95)
    plan = Plan(name="cutout", steps=parse_chain("remove_background+png").steps)
    rendered = render(source, "logo.jpg", plan, LimitsConfig())
    with Image.open(io.BytesIO(rendered.main.data)) as out:
        assert out.mode == "RGBA"
        assert iou(np.asarray(out)[..., 3] >= 128, truth) >= 0.95
    assert rendered.sidecar["remove_background"]["method"] == "auto"


def test_canvas_metadata_survives() -> None:
    image, _ = scene("photo", "plain", SIZE)
    result = apply(Canvas(Image.fromarray(image), dpi=(300.0, 300.0)), "remove_background")
    assert result.dpi == (300.0, 300.0)
