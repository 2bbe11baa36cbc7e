"""remove_background scored against known masks: subjects cut from photographs, composited
onto plain, gradient, lightly noisy and photographed backgrounds (tests/background_scenes.py;
bench/bench_background.py prints the whole table at a larger size)."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from background_scenes import (
    BACKDROPS,
    SUBJECTS,
    TEXTURES,
    Layer,
    Size,
    backdrop,
    composite,
    drawn_alpha,
    iou,
    scene,
    target,
)
from conftest import RunCli
from helpers import encoded
from hotfolder.canvas import Canvas
from hotfolder.config import LimitsConfig
from hotfolder.engine import render
from hotfolder.errors import InputError, RecipeError
from hotfolder.ops.background import subject_alpha
from hotfolder.recipes import Plan, parse_chain
from ops_helpers import apply, pixels


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
    alpha = drawn_alpha(size, draw)
    colour = np.zeros((*alpha.shape, 3), np.float32)
    colour[:] = (20, 40, 120)
    return colour, alpha


def shapes(size: Size) -> Layer:
    """A red disc, a green triangle and a yellow bar."""
    def draw(d: ImageDraw.ImageDraw, w: float, h: float) -> None:
        d.ellipse((0.08 * w, 0.2 * h, 0.38 * w, 0.2 * h + 0.3 * w), fill=255)
        d.polygon([(0.5 * w, 0.15 * h), (0.7 * w, 0.8 * h), (0.42 * w, 0.7 * h)], fill=255)
        d.rectangle((0.74 * w, 0.3 * h, 0.92 * w, 0.75 * h), fill=255)
    alpha = drawn_alpha(size, draw)
    x = np.arange(size[0])[None, :].repeat(size[1], 0)
    colour = np.zeros((*alpha.shape, 3), np.float32)
    colour[x < 0.4 * size[0]] = (200, 30, 30)
    colour[(x >= 0.4 * size[0]) & (x < 0.72 * size[0])] = (30, 150, 40)
    colour[x >= 0.72 * size[0]] = (230, 190, 20)
    return colour, alpha


def cut_out(image: np.ndarray, step: object) -> np.ndarray:
    """The subject mask that a remove_background step leaves (alpha of at least half)."""
    result = apply(Image.fromarray(image, "RGB"), step).image
    assert result.mode == "RGBA"
    return pixels(result)[..., 3] >= 128


SIZE = (320, 240)
SCENE_SIZE = (320, 256)  # the bench's 1000x800 shape, small enough for a quick run
METHODS = ("auto", "grabcut", "watershed")
TARGETED = [(m, b) for m in METHODS for b in BACKDROPS if target(m, b) is not None]


@pytest.fixture(scope="module")
def scenes() -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """Every subject on every backdrop, built once for the module."""
    return {(s, b): scene(s, b, SCENE_SIZE) for s in SUBJECTS for b in BACKDROPS}


@pytest.mark.parametrize(("method", "kind"), TARGETED)
def test_every_subject_reaches_the_target_on_each_backdrop(
        scenes: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]], method: str,
        kind: str) -> None:
    goal = target(method, kind)
    assert goal is not None
    scores = {}
    for subject in SUBJECTS:
        image, truth = scenes[subject, kind]
        scores[subject] = round(iou(subject_alpha(image, method, feather=0) >= 128, truth), 3)
    assert min(scores.values()) >= goal, scores


def test_watershed_finds_the_logo_and_its_hole() -> None:
    image, truth = composite(logo(SIZE), "gradient", SIZE)
    found = cut_out(image, "remove_background=watershed,0")
    assert iou(found, truth) >= 0.95
    assert not found[120, 112]  # the middle of the ring's hole stays background


def test_large_pictures_are_worked_on_small_and_the_mask_scaled_up() -> None:
    image, truth = composite(shapes((1800, 1200)), "plain", (1800, 1200))  # > WORK_SIDE
    found = cut_out(image, "remove_background=auto,0")
    assert found.shape == truth.shape
    assert iou(found, truth) >= 0.97


def test_the_subject_keeps_its_pixels_and_the_rest_is_transparent() -> None:
    image, truth = composite(shapes(SIZE), "plain", SIZE)
    result = pixels(apply(Image.fromarray(image), "remove_background=auto,0").image)
    inside = truth & (np.abs(result[..., 3].astype(int) - 255) == 0)
    np.testing.assert_array_equal(result[inside][:, :3], image[inside])
    assert (result[~truth][:, 3] == 0).mean() > 0.99


def test_a_chosen_colour_replaces_the_background() -> None:
    image, truth = composite(logo(SIZE), "gradient", SIZE)
    result = apply(Image.fromarray(image), {"remove_background": {"background": "#ff00ff",
                                                                  "feather": 0}})
    assert result.image.mode == "RGB"
    out = pixels(result.image)
    assert (np.all(out[~truth] == (255, 0, 255), axis=1)).mean() > 0.99
    assert (np.all(out[truth] == (20, 40, 120), axis=1)).mean() > 0.95
    assert result.notes["remove_background"]["subject_share"] == pytest.approx(truth.mean(),
                                                                               abs=0.01)


def test_feather_softens_the_edge_over_about_its_width() -> None:
    image, _ = composite(shapes(SIZE), "plain", SIZE)
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


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", list(TEXTURES))
def test_a_photographed_texture_alone_has_no_subject(method: str, kind: str) -> None:
    texture = np.clip(backdrop(kind, SCENE_SIZE) + 0.5, 0, 255).astype(np.uint8)
    with pytest.raises(InputError, match="no subject that stands out"):
        apply(Image.fromarray(texture), f"remove_background={method}")


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
    image, truth = composite(logo(SIZE), "plain", SIZE)
    source = encoded(Image.fromarray(image), "JPEG", quality=95)
    plan = Plan(name="cutout", steps=parse_chain("remove_background+png").steps)
    rendered = render(source, "logo.jpg", plan, LimitsConfig())
    with Image.open(io.BytesIO(rendered.main.data)) as out:
        assert out.mode == "RGBA"
        assert iou(np.asarray(out)[..., 3] >= 128, truth) >= 0.95
    assert rendered.sidecar["remove_background"]["method"] == "auto"


def test_canvas_metadata_survives() -> None:
    image, _ = scene("horse", "plain", SIZE)
    result = apply(Canvas(Image.fromarray(image), dpi=(300.0, 300.0)), "remove_background")
    assert result.dpi == (300.0, 300.0)


# Soft edges: a furry subject whose alpha is known, scored in the band where it is soft.

def fur(size: Size) -> Layer:
    """A brown body with hundreds of thin curling strands (under a pixel wide) round its edge."""
    def draw(d: ImageDraw.ImageDraw, w: float, h: float) -> None:
        cx, cy, rx, ry = 0.5 * w, 0.55 * h, 0.28 * w, 0.3 * h
        d.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
        rng = np.random.default_rng(7)
        width = max(1, round(max(w, h) / 640))  # half a pixel of the picture
        for turn in rng.uniform(0, 2 * np.pi, 600):
            x, y = cx + 0.97 * rx * np.cos(turn), cy + 0.97 * ry * np.sin(turn)
            heading, curl = turn + rng.normal(0, 0.35), rng.normal(0, 0.5)
            segment = 0.09 * min(w, h) * rng.uniform(0.4, 1.0) / 6
            points = [(x, y)]
            for _ in range(6):
                heading += curl / 6
                x, y = x + segment * np.cos(heading), y + segment * np.sin(heading)
                points.append((x, y))
            d.line(points, fill=255, width=width)
    alpha = drawn_alpha(size, draw)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    colour = np.empty((h, w, 3), np.float32)
    for c, base in enumerate((110, 70, 40)):
        colour[..., c] = base + 30 * np.sin(x / w * 7 + c) * np.cos(y / h * 5)
    return colour, alpha


def fur_scene(size: Size, kind: str = "noisy") -> tuple[np.ndarray, np.ndarray]:
    """The furry subject on a backdrop (RGB uint8) and its true alpha (0-1)."""
    colour, alpha = fur(size)
    a = alpha[..., None]
    image = colour * a + backdrop(kind, size) * (1 - a)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), alpha


EDGE_GROWTH = 3  # pixels the band of soft true alpha is widened by on each side
EDGE_TARGET = 0.12  # mean alpha error in the band that matting must reach


def edge_error(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean absolute alpha error (0-1) where the true alpha is soft, a few pixels widened."""
    soft = ((truth > 0) & (truth < 1)).astype(np.uint8)
    band = cv2.dilate(soft, np.ones((2 * EDGE_GROWTH + 1,) * 2, np.uint8)) > 0
    return float(np.abs(found.astype(np.float32) / 255 - truth)[band].mean())


def alpha_of(image: np.ndarray, step: object) -> np.ndarray:
    """The alpha (0-255) that a remove_background step leaves."""
    return pixels(apply(Image.fromarray(image, "RGB"), step).image)[..., 3]


@pytest.mark.parametrize("method", ["auto", "grabcut", "watershed"])
def test_matting_follows_fur_that_a_hard_cut_loses(method: str) -> None:
    image, truth = fur_scene(SIZE)
    hard = edge_error(alpha_of(image, f"remove_background={method},0"), truth)
    matted = edge_error(alpha_of(image, f"remove_background={method},matting"), truth)
    assert hard > 0.18  # the strands are a real test: cut hard, they are lost
    assert matted <= EDGE_TARGET


def test_matting_follows_fur_on_a_lawn() -> None:
    image, truth = fur_scene(SIZE, "lawn")
    assert edge_error(alpha_of(image, "remove_background=auto,matting"), truth) <= EDGE_TARGET


def test_large_pictures_are_matted_small_and_the_detail_comes_back_full_size() -> None:
    image, truth = fur_scene((1600, 1200))  # four times MATTE_SIDE: strands finer than its pixels
    assert edge_error(alpha_of(image, "remove_background=auto,matting"), truth) <= EDGE_TARGET


def test_the_sidecar_says_matting_was_used() -> None:
    image, _ = fur_scene(SIZE)
    plan = Plan(name="fur", steps=parse_chain("remove_background=grabcut,matting+png").steps)
    rendered = render(encoded(Image.fromarray(image), "PNG"), "fur.png", plan, LimitsConfig())
    assert rendered.sidecar["remove_background"]["matting"] is True
    plan = Plan(name="fur", steps=parse_chain("remove_background=grabcut+png").steps)
    rendered = render(encoded(Image.fromarray(image), "PNG"), "fur.png", plan, LimitsConfig())
    assert rendered.sidecar["remove_background"]["matting"] is False


@pytest.mark.parametrize(("chain", "expected"), [
    ("remove_background=grabcut,matting", {"method": "grabcut", "matting": True}),
    ("remove_background=auto,,white,matting", {"method": "auto", "matting": True,
                                               "background": (255, 255, 255, 255)}),
    ("remove_background=watershed,,#000000,MATTING", {"method": "watershed", "matting": True,
                                                     "background": (0, 0, 0, 255)}),
    ("remove_background=auto,0,matting", {"method": "auto", "matting": True, "feather": 0}),
    ("remove_background=auto,2", {"method": "auto", "matting": False, "feather": 2}),
])
def test_the_inline_form_takes_matting_among_its_arguments(chain: str,
                                                           expected: dict[str, object]) -> None:
    (step,) = parse_chain(chain).steps
    assert {key: getattr(step.params, key) for key in expected} == expected


def test_a_recipe_mapping_turns_matting_on() -> None:
    image, truth = fur_scene(SIZE)
    found = alpha_of(image, {"remove_background": {"method": "grabcut", "matting": True}})
    assert edge_error(found, truth) <= EDGE_TARGET


def test_feather_with_matting_is_refused_with_the_reason() -> None:
    with pytest.raises(RecipeError, match="feather softens the hard cut only"):
        parse_chain("remove_background=auto,3,matting")


@pytest.mark.parametrize("method", ["auto", "grabcut", "watershed"])
def test_matting_a_one_colour_picture_is_explained(method: str) -> None:
    with pytest.raises(InputError, match="nothing to cut out: the picture is one colour"):
        apply(Image.new("RGB", (60, 40), (120, 80, 40)), f"remove_background={method},matting")


def test_matting_a_picture_without_a_subject_is_explained() -> None:
    gradient = np.clip(backdrop("gradient", (80, 60)), 0, 255).astype(np.uint8)
    with pytest.raises(InputError, match="no subject that stands out"):
        apply(Image.fromarray(gradient), "remove_background=grabcut,matting")


def test_matting_a_one_pixel_file_fails_it_with_the_reason(tmp_path: Path, cli: RunCli) -> None:
    Image.new("RGB", (1, 1), "red").save(tmp_path / "dot.png")
    code, out, err = cli(tmp_path, "process", "dot.png", "-s", "remove_background=auto,matting",
                         "-o", "out")
    assert code == 1
    assert err.splitlines() == ["dot.png: remove_background found nothing to cut out: "
                                "the picture is one colour"]
    assert out == "" and list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("size", [(2, 2), (3, 3), (9, 9)])
def test_matting_a_tiny_picture_cuts_out_its_dark_middle(tmp_path: Path, cli: RunCli,
                                                         size: Size) -> None:
    tiny = np.full((size[1], size[0], 3), 255, np.uint8)
    tiny[size[1] // 2, size[0] // 2] = (40, 20, 10)
    Image.fromarray(tiny).save(tmp_path / "tiny.png")
    code, _, err = cli(tmp_path, "process", "tiny.png", "-s",
                       "remove_background=grabcut,matting+png", "-o", "out")
    assert (code, err) == (0, "")
    with Image.open(tmp_path / "out" / "tiny.png") as out:
        alpha = np.asarray(out.convert("RGBA"))[..., 3]
    assert alpha.shape == (size[1], size[0])
    assert alpha[size[1] // 2, size[0] // 2] == 255
