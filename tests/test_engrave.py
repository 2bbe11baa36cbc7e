"""Engraving: dither kernels against their published weights, threshold, dpi, size, 1-bit files."""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from helpers import encoded, image_bytes, opened, photo_pixels, ramp
from hotfolder import engine, imaging
from hotfolder.canvas import Canvas
from hotfolder.config import LimitsConfig
from hotfolder.engine import render
from hotfolder.errors import RecipeError
from hotfolder.ops import engrave
from hotfolder.recipes import Plan, RecipeBook, load_recipe, parse_chain
from ops_helpers import apply, pixels

RECIPES = Path(__file__).resolve().parent.parent / "config" / "recipes"

# The kernels as their authors published them: {(dx, dy): weight}, and the divisor.
PUBLISHED = {
    "floyd-steinberg": (16, {(1, 0): 7, (-1, 1): 3, (0, 1): 5, (1, 1): 1}),
    "atkinson": (8, {(1, 0): 1, (2, 0): 1, (-1, 1): 1, (0, 1): 1, (1, 1): 1, (0, 2): 1}),
    "jarvis": (48, {(1, 0): 7, (2, 0): 5,
                    (-2, 1): 3, (-1, 1): 5, (0, 1): 7, (1, 1): 5, (2, 1): 3,
                    (-2, 2): 1, (-1, 2): 3, (0, 2): 5, (1, 2): 3, (2, 2): 1}),
    "stucki": (42, {(1, 0): 8, (2, 0): 4,
                    (-2, 1): 2, (-1, 1): 4, (0, 1): 8, (1, 1): 4, (2, 1): 2,
                    (-2, 2): 1, (-1, 2): 2, (0, 2): 4, (1, 2): 2, (2, 2): 1}),
    "sierra": (32, {(1, 0): 5, (2, 0): 3,
                    (-2, 1): 2, (-1, 1): 4, (0, 1): 5, (1, 1): 4, (2, 1): 2,
                    (-1, 2): 2, (0, 2): 3, (1, 2): 2}),
    "sierra-2": (16, {(1, 0): 4, (2, 0): 3,
                      (-2, 1): 1, (-1, 1): 2, (0, 1): 3, (1, 1): 2, (2, 1): 1}),
    "sierra-lite": (4, {(1, 0): 2, (-1, 1): 1, (0, 1): 1}),
    "burkes": (32, {(1, 0): 8, (2, 0): 4,
                    (-2, 1): 2, (-1, 1): 4, (0, 1): 8, (1, 1): 4, (2, 1): 2}),
    "stevenson-arce": (200, {(2, 0): 32,
                             (-3, 1): 12, (-1, 1): 26, (1, 1): 30, (3, 1): 16,
                             (-2, 2): 12, (0, 2): 26, (2, 2): 12,
                             (-3, 3): 5, (-1, 3): 12, (1, 3): 12, (3, 3): 5}),
}
LINEAR_MID_GREY_BLACK = 1 - ((128 / 255 + 0.055) / 1.055) ** 2.4  # 0.784


def reference(grey: np.ndarray, method: str, serpentine: bool = False) -> np.ndarray:
    """Textbook error diffusion, one pixel at a time, pushing the error forward (slow)."""
    divisor, taps = PUBLISHED[method]
    height, width = grey.shape
    work = grey.astype(np.float64)
    white = np.zeros((height, width), bool)
    for y in range(height):
        backwards = serpentine and y % 2 == 1
        for x in (range(width - 1, -1, -1) if backwards else range(width)):
            white[y, x] = work[y, x] > 127.5
            error = work[y, x] - (255.0 if white[y, x] else 0.0)
            for (dx, dy), weight in taps.items():
                tx = x - dx if backwards else x + dx
                if 0 <= tx < width and y + dy < height:
                    work[y + dy, tx] += error * weight / divisor
    return white


def flat(level: int, size: int = 64) -> np.ndarray:
    return np.full((size, size), level, np.uint8)


def black_by_band(white: np.ndarray, bands: int = 8) -> list[float]:
    """The share of black in each of `bands` vertical bands, left to right."""
    return [1 - float(band.mean()) for band in np.array_split(white, bands, axis=1)]


def horizontal_ramp(width: int = 256, height: int = 64) -> np.ndarray:
    """Grey levels from 0 on the left to 255 on the right."""
    return np.tile(np.linspace(0, 255, width).round().astype(np.uint8), (height, 1))


# Error diffusion ------------------------------------------------------------------

@pytest.mark.parametrize("method", list(PUBLISHED))
@pytest.mark.parametrize("serpentine", [False, True])
def test_error_diffusion_matches_the_published_kernel_pixel_for_pixel(
        method: str, serpentine: bool) -> None:
    grey = np.random.default_rng(7).integers(0, 256, (17, 23), dtype=np.uint8)
    result = engrave.error_diffusion(grey, method, serpentine)
    np.testing.assert_array_equal(result, reference(grey, method, serpentine))


def test_floyd_steinberg_by_hand() -> None:
    # 100 -> black, error 100: right +43.75, below +31.25, below-right +6.25.
    # 143.75 -> white, error -111.25: below-left -20.86, below -34.77.
    # Row 2: 110.39 -> black, error 110.39: right +48.30 -> 71.48 + 48.30 = 119.78 -> black.
    grey = np.full((2, 2), 100, np.uint8)
    assert engrave.error_diffusion(grey, "floyd-steinberg").tolist() == [[False, True],
                                                                         [False, False]]
    # Serpentine: row 2 runs right to left: 71.48 -> black, error 71.48: left +31.27 -> 141.66.
    assert engrave.error_diffusion(grey, "floyd-steinberg", serpentine=True).tolist() == [
        [False, True], [True, False]]
    # One row: 100 black; 143.75 white; 100 - 48.67 = 51.33 black; 100 + 22.46 = 122.46 black.
    assert engrave.error_diffusion(np.full((1, 4), 100, np.uint8), "floyd-steinberg").tolist() \
        == [[False, True, False, False]]


def test_jarvis_by_hand_shows_the_second_tap() -> None:
    # 101 -> black, error 101: next +7/48 (14.73), the one after +5/48 (10.52).
    # 115.73 -> black, error 115.73: next +7/48 (16.88) -> 101 + 10.52 + 16.88 = 128.40 -> white.
    assert engrave.error_diffusion(np.full((1, 3), 101, np.uint8), "jarvis").tolist() == [
        [False, False, True]]
    # From 100 the same sums give 127.13, just under the middle: black.
    assert not engrave.error_diffusion(np.full((1, 3), 100, np.uint8), "jarvis").any()


def test_kernels_are_the_published_ones() -> None:
    for method, (divisor, taps) in PUBLISHED.items():
        weights = engrave.kernel_weights(method)
        centre = weights.shape[1] // 2
        found = {(x - centre, y): round(float(w) * divisor) for (y, x), w in
                 np.ndenumerate(weights) if w}
        assert found == taps, method
        assert np.allclose(weights * divisor, np.round(weights * divisor)), method


def test_sierra_lite_by_hand() -> None:
    # 100 -> black, error 100: right +50, below +25. 150 -> white, error -105: below-left
    # -26.25, below -26.25. Row 2: 98.75 -> black, error 98.75: right +49.38 -> 123.13 black.
    assert engrave.error_diffusion(flat(100, 2), "sierra-lite").tolist() == [[False, True],
                                                                            [False, False]]
    # One row: 100 black; 150 white; 100 - 52.5 = 47.5 black.
    assert engrave.error_diffusion(np.full((1, 3), 100, np.uint8), "sierra-lite").tolist() == [
        [False, True, False]]


def test_sierra_2_by_hand_shows_the_second_tap() -> None:
    # 100 -> black, error 100: next +4/16 (25), the one after +3/16 (18.75).
    # 125 -> black, error 125: next +31.25 -> 100 + 18.75 + 31.25 = 150 -> white.
    assert engrave.error_diffusion(np.full((1, 3), 100, np.uint8), "sierra-2").tolist() == [
        [False, False, True]]
    # From 80: 100 black, then 80 + 15 + 25 = 120: black.
    assert not engrave.error_diffusion(np.full((1, 3), 80, np.uint8), "sierra-2").any()


def test_stevenson_arce_by_hand_skips_every_other_pixel() -> None:
    # Along the row only the pixel two on gets error: 120 black, 120 black (nothing from
    # its left neighbour), 120 + 32/200 * 120 = 139.2 white.
    assert engrave.error_diffusion(np.full((1, 3), 120, np.uint8), "stevenson-arce").tolist() \
        == [[False, False, True]]
    # 100 at the end of row 1 -> black, error 100: three left and one down +6, one left and
    # one down +13. Row 2 of 124: 130 white (error -125: two on -20); 124 black (error 124:
    # two on +19.84); 124 + 13 - 20 = 117 black; 124 + 19.84 = 143.84 white.
    grey = np.array([[255, 255, 255, 100], [124, 124, 124, 124]], np.uint8)
    assert engrave.error_diffusion(grey, "stevenson-arce").tolist() == [
        [True, True, True, False], [True, False, False, True]]


@pytest.mark.parametrize("method", list(PUBLISHED))
def test_flat_grey_keeps_its_tone(method: str) -> None:
    grey_fraction_black = {128: 127 / 255, 64: 191 / 255, 192: 63 / 255}
    levels = [128] if method == "atkinson" else list(grey_fraction_black)  # Atkinson drops 1/4
    for level in levels:
        black = 1 - engrave.error_diffusion(flat(level, 128), method).mean()
        assert black == pytest.approx(grey_fraction_black[level], abs=0.01), level


@pytest.mark.parametrize("method", [m for m in PUBLISHED if m != "atkinson"])
def test_linear_light_makes_mid_grey_mostly_black(method: str) -> None:
    black = 1 - engrave.error_diffusion(flat(128, 128), method, linear=True).mean()
    assert black == pytest.approx(LINEAR_MID_GREY_BLACK, abs=0.01)
    assert round(LINEAR_MID_GREY_BLACK, 3) == 0.784


@pytest.mark.parametrize("method", list(PUBLISHED))
@pytest.mark.parametrize("linear", [False, True])
def test_a_ramp_gets_lighter_band_by_band(method: str, linear: bool) -> None:
    grey = horizontal_ramp()
    black = black_by_band(engrave.error_diffusion(grey, method, linear=linear))
    assert all(left >= right for left, right in itertools.pairwise(black)), black
    assert black[0] > black[-1] + 0.7
    if method != "atkinson":  # the others keep each band's tone, in light when linear
        light = engrave.tone_levels(linear)[grey] / 255
        np.testing.assert_allclose(black, [1 - band.mean() for band in
                                           np.array_split(light, 8, axis=1)], atol=0.02)


def test_linear_light_darkens_the_midtones_of_a_ramp() -> None:
    grey = horizontal_ramp()
    plain = black_by_band(engrave.error_diffusion(grey, "sierra-2"))
    linear = black_by_band(engrave.error_diffusion(grey, "sierra-2", linear=True))
    assert all(dark > light for dark, light in zip(linear[1:-1], plain[1:-1], strict=True))


def test_atkinson_passes_on_three_quarters_of_the_error() -> None:
    assert engrave.kernel_weights("atkinson").sum() == pytest.approx(0.75)
    # Light grey loses its darkest dots: fewer black pixels than the tone asks for.
    assert 1 - engrave.error_diffusion(flat(230), "atkinson").mean() < 25 / 255 * 0.8


def test_pure_black_and_white_stay_pure() -> None:
    for method in PUBLISHED:
        assert not engrave.error_diffusion(flat(0, 16), method).any()
        assert engrave.error_diffusion(flat(255, 16), method).all()


def test_dither_works_when_no_cache_folder_is_writable(tmp_path: Path) -> None:
    # A hardened service may have a read-only package folder and no NUMBA_CACHE_DIR:
    # numba then finds no cache folder; the loop is compiled in memory instead.
    env = {**os.environ, "NUMBA_CACHE_LOCATOR_CLASSES": "UserProvidedCacheLocator",
           "NUMBA_CACHE_DIR": str(tmp_path / "not-a-folder" / "cache")}
    (tmp_path / "not-a-folder").write_text("a file, so no folder can be made under it")
    code = ("import numpy as np; from hotfolder.ops import engrave; "
            "print(int(engrave.error_diffusion(np.full((4, 4), 128, np.uint8), 'jarvis').sum()))")
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], check=False, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "8"


# Ordered and halftone -------------------------------------------------------------

def test_bayer_matrices_are_the_published_ones() -> None:
    assert engrave.bayer_matrix(2).tolist() == [[0, 2], [3, 1]]
    assert engrave.bayer_matrix(4).tolist() == [[0, 8, 2, 10], [12, 4, 14, 6],
                                                [3, 11, 1, 9], [15, 7, 13, 5]]
    assert sorted(engrave.bayer_matrix(8).ravel().tolist()) == list(range(64))


def test_bayer_by_hand_and_flat_tones() -> None:
    # Thresholds of the 2x2 matrix: (index + 0.5) * 255 / 4 = 31.9, 159.4 / 223.1, 95.6.
    two = engrave.bayer_matrix(2)
    assert engrave.ordered(np.full((2, 2), 100, np.uint8), two).tolist() == [[True, False],
                                                                            [False, True]]
    for size in (2, 4, 8):
        assert 1 - engrave.ordered(flat(128), engrave.bayer_matrix(size)).mean() == 0.5
    # 64 -> white where (index + 0.5) * 255 / 64 < 64: indexes 0..15 of 64.
    assert engrave.ordered(flat(64), engrave.bayer_matrix(8)).mean() == 16 / 64


BLUE_NOISE_SHA256 = "9b33fc6b889c01a3ce89fc16e57287d7229076df2ff29f2b097afcc414ef2a1d"


def test_the_blue_noise_mask_is_every_rank_once_and_always_the_same() -> None:
    mask = engrave.blue_noise_matrix()
    assert mask.shape == (64, 64)
    assert sorted(mask.ravel().tolist()) == list(range(64 * 64))
    made_again = engrave.blue_noise_matrix.__wrapped__()
    np.testing.assert_array_equal(made_again, mask)
    assert hashlib.sha256(mask.astype("<i8").tobytes()).hexdigest() == BLUE_NOISE_SHA256


def test_blue_noise_by_hand_and_flat_tones() -> None:
    mask = engrave.blue_noise_matrix()
    # White where (rank + 0.5) * 255 / 4096 < level: ranks 0..1027 for 64, 0..2055 for 128.
    assert engrave.ordered(flat(64), mask).sum() == 1028
    np.testing.assert_array_equal(engrave.ordered(flat(128), mask), mask < 2056)
    for level in (32, 64, 128, 192, 224):
        black = 1 - engrave.ordered(flat(level, 128), mask).mean()
        assert black == pytest.approx(1 - level / 255, abs=0.005), level
    assert 1 - engrave.ordered(flat(128, 128), mask, linear=True).mean() == pytest.approx(
        LINEAR_MID_GREY_BLACK, abs=0.01)


def test_blue_noise_spreads_sparse_dots_evenly() -> None:
    # One dot in sixteen: random dots would touch; void-and-cluster keeps them 2 px apart.
    ys, xs = np.nonzero(engrave.blue_noise_matrix() < 256)
    dy = np.abs(ys[:, None] - ys[None, :])
    dx = np.abs(xs[:, None] - xs[None, :])
    distance = np.hypot(np.minimum(dy, 64 - dy), np.minimum(dx, 64 - dx))  # the mask tiles
    np.fill_diagonal(distance, np.inf)
    assert distance.min() >= 2


@pytest.mark.parametrize("matrix", ["bayer", "blue-noise"])
@pytest.mark.parametrize("linear", [False, True])
def test_ordered_ramps_get_lighter_band_by_band(matrix: str, linear: bool) -> None:
    index = engrave.bayer_matrix(8) if matrix == "bayer" else engrave.blue_noise_matrix()
    black = black_by_band(engrave.ordered(horizontal_ramp(), index, linear))
    assert all(left > right for left, right in itertools.pairwise(black)), black


def test_linear_bayer_and_halftone_make_mid_grey_mostly_black() -> None:
    # Bayer 8: white where (index + 0.5) * 255 / 64 < 55.04 (the light of 128): 14 of 64.
    assert engrave.ordered(flat(128), engrave.bayer_matrix(8), linear=True).mean() == 14 / 64
    white = engrave.halftone(flat(128, 128), cell=8, angle=45, linear=True)
    assert 1 - white.mean() == pytest.approx(LINEAR_MID_GREY_BLACK, abs=0.02)


@pytest.mark.parametrize("level", [40, 128, 220])
def test_halftone_keeps_the_tone(level: int) -> None:
    white = engrave.halftone(flat(level, 128), cell=8, angle=45)
    assert 1 - white.mean() == pytest.approx(1 - level / 255, abs=0.02)


def test_halftone_draws_one_dot_per_cell_on_a_turned_grid() -> None:
    light = flat(225, 64)
    straight = engrave.halftone(light, cell=8, angle=0)
    dots, _ = cv2.connectedComponents((~straight).astype(np.uint8))
    assert dots - 1 == (64 // 8) ** 2  # one black dot in each 8x8 cell
    np.testing.assert_array_equal(straight[:, :-8], straight[:, 8:])  # period 8 along rows
    turned = engrave.halftone(light, cell=8, angle=45)
    assert not np.array_equal(turned[:, :-8], turned[:, 8:])


# The dither and threshold steps ---------------------------------------------------

@pytest.mark.parametrize("step", ["dither", "dither=jarvis,serpentine", "dither=bayer,4",
                                  "dither=halftone,6,30", "threshold", "threshold=100",
                                  "dither=sierra-2", "dither=sierra_lite,serpentine",
                                  "dither=stevenson-arce,linear", "dither=blue-noise",
                                  "dither=blue-noise,linear", "dither=halftone,6,30,linear"])
def test_steps_give_true_one_bit_images(step: str) -> None:
    result = apply(ramp((40, 30), "RGB"), step).image
    assert result.mode == "1"
    assert result.size == (40, 30)
    row = pixels(result.convert("L"))[15]
    assert row[0] == 0 and row[-1] == 255  # the dark end black, the light end white


@pytest.mark.parametrize("mode", ["1", "L", "LA", "RGB", "RGBA", "P", "CMYK", "I;16", "I", "F"])
def test_every_decoded_mode_can_be_dithered(mode: str) -> None:
    grey = ramp((40, 30), "L")
    image = (Image.fromarray(pixels(grey).astype(np.uint16) * 257) if mode == "I;16"
             else grey.convert(mode))  # 16-bit levels run to 65535
    result = apply(image, "dither=burkes").image
    assert result.mode == "1"
    row = pixels(result.convert("L"))[15]
    assert row[0] == 0 and row[-1] == 255


def test_transparent_parts_are_not_engraved() -> None:
    logo = Image.new("RGBA", (20, 10), (0, 0, 0, 0))
    logo.paste((0, 0, 0, 255), (0, 0, 10, 10))
    for step in ("dither=atkinson", "threshold"):
        white = pixels(apply(logo, step).image)
        assert not white[:, :10].any() and white[:, 10:].all()


def test_threshold_fixed_and_otsu() -> None:
    grey = Image.fromarray(np.array([[127, 128, 129, 30, 220]], np.uint8), "L")
    assert pixels(apply(grey, "threshold=128").image).tolist() == [[False, False, True,
                                                                    False, True]]
    two_tone = np.where(np.arange(100) < 60, 40, 200).astype(np.uint8).reshape(10, 10)
    result = apply(Image.fromarray(two_tone, "L"), "threshold=otsu")
    assert 40 <= result.notes["threshold_level"] < 200
    np.testing.assert_array_equal(pixels(result.image), two_tone == 200)


@pytest.mark.parametrize("colour", [0, 255])
def test_one_colour_images_stay_that_colour(colour: int) -> None:
    image = Image.new("L", (16, 16), colour)
    for step in ("threshold", "dither=jarvis", "dither=bayer", "dither=halftone"):
        assert pixels(apply(image, step).image).all() == bool(colour), step


@pytest.mark.parametrize(("chain", "words"), [
    ("dither=jarvs", ["unknown dither method 'jarvs'", "did you mean 'jarvis'"]),
    ("dither=halfton", ["did you mean 'halftone'"]),
    ("dither=bayer,3", ["size", "2, 4 or 8"]),
    ("dither=bayer,serpentine", ["serpentine does not apply to bayer"]),
    ("dither=blue-noise,4", ["size does not apply to blue-noise"]),
    ("dither=blue-noise,serpentine", ["serpentine does not apply to blue-noise"]),
    ("dither=sierra-4", ["unknown dither method", "did you mean 'sierra"]),
    ("dither=jarvis,lineer", ["'lineer' is neither serpentine nor linear nor a number"]),
    ("threshold=300", ["0 to 255, or otsu"]),
    ("threshold=-5", ["0 to 255, or otsu"]),
])
def test_bad_engraving_steps_say_what_is_wrong(chain: str, words: list[str]) -> None:
    with pytest.raises(RecipeError) as caught:
        parse_chain(chain)
    for word in words:
        assert word in caught.value.message


def test_a_folder_with_an_unknown_method_is_refused_with_the_closest(tmp_path: Path) -> None:
    folder = tmp_path / "inbox" / "dither=atkinsn"
    folder.mkdir(parents=True)
    with pytest.raises(RecipeError) as caught:
        RecipeBook(tmp_path / "recipes").folder(folder)
    assert "folder 'dither=atkinsn'" in caught.value.message
    assert "did you mean 'atkinson'" in caught.value.message


def test_unknown_method_in_a_recipe_file_names_the_line(tmp_path: Path) -> None:
    recipe = tmp_path / "photo.yaml"
    recipe.write_text("steps:\n  - grayscale\n  - dither: floyd\n  - dither: jarvis-ninke\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe)
    assert "line 4" in caught.value.message
    assert "did you mean 'jarvis'" in caught.value.message


# dot_width ---------------------------------------------------------------------------

def dots(*rows: str) -> Image.Image:
    """A 1-bit image from rows of `#` (black) and `.` (white)."""
    return engrave.one_bit(np.array([[c == "." for c in row] for row in rows]))


def drawn(image: Image.Image) -> list[str]:
    """The rows of a 1-bit image as `#` and `.`."""
    return ["".join("." if v else "#" for v in row) for row in pixels(image)]


def test_dot_width_by_hand() -> None:
    image = Canvas(dots("...####...##.", "#######.#...."), dpi=(254.0, 254.0))
    # 0.1 mm at 254 DPI is one pixel, taken from each run's end; a 1-pixel run stays.
    assert drawn(apply(image, "dot_width=0.1mm").image) == ["...###....#..",
                                                            "######..#...."]
    # Two pixels: one from each end; a 2-pixel run keeps its first pixel.
    assert drawn(apply(image, "dot_width=0.2mm").image) == ["....##....#..",
                                                            ".#####..#...."]
    # Wider than every run: each keeps one pixel, its middle one (the first of two).
    assert drawn(apply(image, "dot_width=5mm").image) == ["....#.....#..",
                                                          "...#....#...."]


def test_dot_width_rounds_to_whole_pixels_at_the_image_dpi() -> None:
    image = Canvas(dots("#####"), dpi=(300.0, 300.0))
    result = apply(image, "dot_width=0.1mm")  # 1.18 px
    assert drawn(result.image) == ["####."] and result.notes["dot_width_pixels"] == 1
    assert drawn(apply(image, "dot_width=0.15mm").image) == [".###."]  # 1.77 px
    unchanged = apply(image, "dot_width=0.03mm")  # 0.35 px
    assert drawn(unchanged.image) == ["#####"] and unchanged.notes["dot_width_pixels"] == 0


def test_dot_width_lightens_a_dithered_photo_by_one_pixel_per_long_run() -> None:
    white = engrave.error_diffusion(horizontal_ramp(), "jarvis")
    canvas = Canvas(engrave.one_bit(white), dpi=(254.0, 254.0))
    result = pixels(apply(canvas, "dot_width=0.1mm").image)
    assert result.shape == white.shape and (result >= white).all()  # only ever lighter
    runs = [len(run) for row in drawn(canvas.image) for run in row.split(".") if run]
    assert int((result & ~white).sum()) == sum(1 for n in runs if n > 1)


@pytest.mark.parametrize(("canvas", "step", "words"), [
    (Canvas(Image.new("1", (4, 4)), dpi=None), "dot_width=0.1mm", "no DPI to turn 0.1mm"),
    (Canvas(Image.new("L", (4, 4)), dpi=(254.0, 254.0)), "dot_width=0.1mm",
     "after dither or threshold"),
    (Canvas(Image.new("1", (4, 4)), dpi=(254.0, 254.0)), "dot_width=2px", "mm, cm or in"),
    (Canvas(Image.new("1", (4, 4)), dpi=(254.0, 254.0)), "dot_width=0.1", "mm, cm or in"),
    (Canvas(Image.new("1", (4, 4)), dpi=(254.0, 254.0)), "dot_width=0mm", "more than zero"),
    (Canvas(Image.new("1", (4, 4)), dpi=(254.0, 254.0)), "dot_width", "width"),
])
def test_bad_dot_widths_say_what_is_wrong(canvas: Canvas, step: str, words: str) -> None:
    with pytest.raises(RecipeError, match=words):
        apply(canvas, step)


def test_dot_width_in_a_recipe_after_size_and_dither() -> None:
    plan = Plan(name="t", steps=parse_chain(
        "size=20mmx,254+dither=jarvis+dot_width=0.1mm+png").steps)
    rendered = render(encoded(ramp((300, 100)), "PNG"), "photo.png", plan, LimitsConfig())
    with Image.open(io.BytesIO(rendered.main.data)) as out:
        assert out.mode == "1" and out.size == (200, 67)
    assert rendered.sidecar["dot_width_pixels"] == 1


# dpi and size -------------------------------------------------------------------------

def test_dpi_changes_only_the_resolution() -> None:
    image = ramp((30, 20), "L")
    result = apply(Canvas(image, dpi=(72.0, 72.0)), "dpi=318")
    assert result.dpi == (318.0, 318.0)
    assert result.image.tobytes() == image.tobytes()


@pytest.mark.parametrize("step", ["dpi=0", "dpi=-300", "dpi=abc", {"dpi": {"dpi": -1}}])
def test_dpi_must_be_positive(step: object) -> None:
    with pytest.raises(RecipeError, match="a DPI is a number of dots per inch above 0"):
        apply(ramp(), step)


def test_dpi_may_carry_its_unit() -> None:
    assert apply(ramp(), "dpi=254dpi").dpi == (254.0, 254.0)


def test_size_scales_to_millimetres_at_a_dpi_even_upwards() -> None:
    result = apply(ramp((500, 250)), {"size": {"width": "80mm", "dpi": 318}})
    assert result.image.size == (1002, 501)  # 80 / 25.4 * 318 = 1001.6
    assert result.dpi == (318.0, 318.0)
    inline = apply(Canvas(ramp((400, 300)), dpi=(300.0, 300.0)), "size=2inx2in")
    assert inline.image.size == (600, 450)


@pytest.mark.parametrize(("step", "words"), [
    ("size=0mmx,300", "a length must be more than zero"),
    ("size=800x,300", "size takes lengths in mm, cm or in"),
    ("size=80mmx", "give a dpi"),
])
def test_bad_sizes_are_explained(step: str, words: str) -> None:
    with pytest.raises(RecipeError, match=words):
        apply(ramp(), step)


# Files as the user gets them --------------------------------------------------------

@pytest.mark.parametrize("fmt", ["png", "bmp", "tiff", "jpeg"])
def test_dithered_files_are_one_bit_with_their_dpi(fmt: str) -> None:
    plan = Plan(name="t", steps=parse_chain(f"dither=stucki+dpi=318+{fmt}").steps)
    rendered = render(encoded(ramp((60, 40)), "PNG"), "photo.png", plan, LimitsConfig())
    with Image.open(io.BytesIO(rendered.main.data)) as out:
        assert out.format == fmt.upper()
        assert out.mode == ("L" if fmt == "jpeg" else "1")  # JPEG has no 1-bit form
        assert out.info["dpi"] == pytest.approx((318, 318), abs=0.01)
    assert rendered.sidecar["output"]["dpi"] == pytest.approx(318)


# Material presets ---------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_recipe_is_valid_and_makes_a_file(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.description and "\n" not in recipe.description.strip()
    plan = RecipeBook(RECIPES).get(path.stem)
    rendered = render(image_bytes("JPEG"), "photo.jpg", plan, LimitsConfig())
    if rendered.sidecar["output"]["format"] == "svg":
        assert rendered.main.data.startswith(b"<?xml") or b"<svg" in rendered.main.data[:200]
        return
    with Image.open(io.BytesIO(rendered.main.data)) as out:
        out.load()
    ops = [step.op for step in plan.steps]
    if {"dither", "threshold"} & set(ops):
        assert out.mode == "1"
    for step in plan.steps:
        if step.op == "size":
            params = step.params
            assert out.info["dpi"] == pytest.approx((params.dpi, params.dpi), abs=0.01)
            box_px = [round(length.value / 25.4 * params.dpi) for length in
                      (params.width, params.height) if length]
            assert max(out.size) == max(box_px)  # enlarged to the physical size


@functools.cache
def photo_jpeg() -> bytes:
    """A 6-megapixel photo-like JPEG."""
    return encoded(Image.fromarray(photo_pixels(3000, 2000, seed=5)), "JPEG", quality=92)


def test_a_size_step_lets_a_jpeg_be_decoded_shrunk() -> None:
    plan = RecipeBook(RECIPES).get("engrave-wood-photo")  # size: 100 mm x 100 mm at 318 DPI
    hint = engine.size_hint(plan)
    assert hint is not None
    assert hint((3000, 2000), 1) == (1253, 835)  # 100 mm at 318 DPI is 1252 pixels
    assert hint((2000, 3000), 6) == (835, 1253)  # stored sideways: the upright size counts
    shrunk = imaging.decode(photo_jpeg(), LimitsConfig(), hint, grey=True).canvas.image
    assert shrunk.size == (1500, 1000)  # decoded at half size, still above what size needs


def without_size_hint(data: bytes, plan: Plan, monkeypatch: pytest.MonkeyPatch) -> Image.Image:
    """The main output of `plan` when decoding may not shrink."""
    with monkeypatch.context() as patched:
        patched.setattr(engine, "size_hint", lambda plan: None)
        return opened(render(data, "photo.jpg", plan, LimitsConfig()))


def test_an_engraving_preset_gives_the_same_file_from_a_shrunk_decode(
        monkeypatch: pytest.MonkeyPatch) -> None:
    data = photo_jpeg()
    preset = RecipeBook(RECIPES).get("engrave-wood-photo")
    sized = Plan(name="sized", steps=preset.steps[:3])  # auto_orient, size, grayscale
    assert [step.op for step in sized.steps] == ["auto_orient", "size", "grayscale"]
    for plan in (preset, sized):
        hinted = opened(render(data, "photo.jpg", plan, LimitsConfig()))
        full = without_size_hint(data, plan, monkeypatch)
        assert hinted.size == full.size == (1252, 835)
        assert hinted.mode == full.mode == ("1" if plan is preset else "L")
        assert hinted.info["dpi"] == full.info["dpi"]
        assert hinted.info["dpi"] == pytest.approx((318, 318), abs=0.01)
        # the same tone everywhere: dots compared as 16 x 16 averages, grey levels directly
        block = 16 if plan is preset else 1
        ours, theirs = (np.asarray(image.convert("L").reduce(block), np.float32)
                        for image in (hinted, full))
        difference = np.abs(ours - theirs)
        assert difference.mean() < (4.5 if plan is preset else 1.5), plan.name
        assert abs(ours.mean() - theirs.mean()) < 1, plan.name
    assert difference.max() <= 8  # grey levels after size: at most a few levels apart
