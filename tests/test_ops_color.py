"""Colour operations on small synthetic images: each mode's result stated and checked by pixels."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from helpers import ramp
from hotfolder.errors import RecipeError
from ops_helpers import apply, pixels


def _palette_with_transparency() -> Image.Image:
    """Left half red (index 0), right half transparent (index 1)."""
    image = Image.new("P", (4, 2), 1)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.info["transparency"] = 1
    image.paste(0, (0, 0, 2, 2))
    return image


# grayscale -----------------------------------------------------------------------


def test_grayscale_of_rgb_uses_luma_weights() -> None:
    """Pure red becomes 76 (ITU-R 601 luma: 0.299 x 255)."""
    out = apply(Image.new("RGB", (2, 2), (255, 0, 0)), "grayscale").image
    assert out.mode == "L"
    assert pixels(out)[0, 0] == 76


def test_grayscale_of_rgba_keeps_alpha_as_la() -> None:
    out = apply(Image.new("RGBA", (2, 2), (0, 0, 255, 100)), "grayscale").image
    assert out.mode == "LA"
    assert tuple(pixels(out)[0, 0]) == (29, 100)


def test_grayscale_of_a_palette_image_with_transparency_gives_la() -> None:
    out = apply(_palette_with_transparency(), "grayscale").image
    assert out.mode == "LA"
    assert tuple(pixels(out)[0, 0]) == (76, 255)
    assert pixels(out)[0, 3, 1] == 0


def test_grayscale_of_cmyk_gives_l() -> None:
    """CMYK black ink only (K=255) is black."""
    out = apply(Image.new("CMYK", (2, 2), (0, 0, 0, 255)), "grayscale").image
    assert out.mode == "L" and pixels(out)[0, 0] == 0


@pytest.mark.parametrize("mode", ["L", "LA", "1", "I;16"])
def test_grayscale_leaves_grey_images_as_they_are(mode: str) -> None:
    """Already grey: same mode, same pixels (16-bit precision is not thrown away)."""
    image = ramp((8, 2), "L").convert(mode) if mode != "I;16" else Image.fromarray(
        np.full((2, 8), 50000, np.uint16))
    out = apply(image, "grayscale").image
    assert out.mode == image.mode
    assert np.array_equal(pixels(out), pixels(image))


# autocontrast ----------------------------------------------------------------------


def test_autocontrast_stretches_a_dull_ramp_to_black_and_white() -> None:
    out = apply(ramp((64, 4), "L", low=100, high=150), "autocontrast").image
    assert pixels(out).min() == 0 and pixels(out).max() == 255


def test_autocontrast_cutoff_ignores_outliers() -> None:
    """One black and one white speck among mid greys: with a 1% cutoff the greys still spread."""
    values = np.tile(np.linspace(100, 150, 100).round().astype(np.uint8), (10, 1))
    values[0, 0], values[0, 1] = 0, 255
    image = Image.fromarray(values, "L")
    plain = pixels(apply(image, "autocontrast").image)
    cut = pixels(apply(image, "autocontrast=1").image)
    assert plain[5, 0] == 100  # specks already span 0-255: nothing to stretch
    assert cut[5, 0] == 0 and cut[5, -1] == 255


def test_autocontrast_keeps_alpha_untouched() -> None:
    image = ramp((64, 4), "RGBA", low=100, high=150)
    image.putalpha(Image.new("L", image.size, 77))
    out = apply(image, "autocontrast").image
    assert out.mode == "RGBA"
    assert (pixels(out)[..., 3] == 77).all()
    assert pixels(out)[..., 0].min() == 0 and pixels(out)[..., 0].max() == 255


def test_autocontrast_preserve_tone_keeps_hues() -> None:
    """With tone preserved a dull orange stays orange-ish (red above green above blue)."""
    image = Image.new("RGB", (4, 1), (150, 120, 100))
    image.putpixel((0, 0), (120, 100, 90))
    out = pixels(apply(image, {"autocontrast": {"preserve_tone": True}}).image)
    red, green, blue = (int(c) for c in out[0, 3])
    assert red > green > blue


@pytest.mark.parametrize(("mode", "expected"), [
    ("P", "RGBA"), ("1", "L"), ("CMYK", "RGB"), ("I;16", "L"), ("LA", "LA"),
])
def test_autocontrast_converts_awkward_modes(mode: str, expected: str) -> None:
    """Palette -> RGB(A), 1 -> L, CMYK -> RGB, 16-bit -> L scaled (not clipped to white)."""
    if mode == "P":
        image = _palette_with_transparency()
    elif mode == "I;16":
        image = Image.fromarray(np.linspace(10000, 20000, 32).astype(np.uint16).reshape(4, 8))
    else:
        image = ramp((8, 4), "L", low=60, high=200).convert(mode)
    out = apply(image, "autocontrast").image
    assert out.mode == expected
    if mode == "I;16":
        assert pixels(out)[0, 0] == 0 and pixels(out)[-1, -1] == 255


# invert ----------------------------------------------------------------------------


def test_invert_makes_a_negative_and_keeps_alpha() -> None:
    """Each colour level v becomes 255 - v; the alpha band is not a colour and stays."""
    image = Image.new("RGBA", (2, 2), (10, 200, 255, 90))
    out = apply(image, "invert").image
    assert out.mode == "RGBA"
    assert tuple(pixels(out)[0, 0]) == (245, 55, 0, 90)


def test_invert_of_la_keeps_alpha() -> None:
    out = apply(Image.new("LA", (2, 2), (40, 7)), "invert").image
    assert tuple(pixels(out)[0, 0]) == (215, 7)


def test_invert_of_a_bilevel_image_stays_bilevel() -> None:
    image = Image.new("1", (4, 1), 0)
    image.putpixel((0, 0), 255)
    out = apply(image, "invert").image
    assert out.mode == "1"
    assert [out.getpixel((x, 0)) for x in range(4)] == [0, 255, 255, 255]


def test_invert_of_a_palette_image_converts_to_rgba_first() -> None:
    """Inverting palette indexes would pick random colours: the colours themselves are inverted."""
    out = apply(_palette_with_transparency(), "invert").image
    assert out.mode == "RGBA"
    assert tuple(pixels(out)[0, 0]) == (0, 255, 255, 255)
    assert pixels(out)[0, 3, 3] == 0


def test_invert_of_cmyk_is_the_visible_negative_in_rgb() -> None:
    """Pure black ink (K=255) inverts to white, as the operator sees it on screen."""
    out = apply(Image.new("CMYK", (2, 2), (0, 0, 0, 255)), "invert").image
    assert out.mode == "RGB" and tuple(pixels(out)[0, 0]) == (255, 255, 255)


def test_invert_of_sixteen_bit_grey_gives_8_bit_l() -> None:
    """65535 (white) scales to 255 and inverts to 0; 0 inverts to 255."""
    image = Image.fromarray(np.array([[0, 65535]], np.uint16))
    out = apply(image, "invert").image
    assert out.mode == "L" and pixels(out).tolist() == [[255, 0]]


# adjust ------------------------------------------------------------------------------


def test_adjust_brightness_scales_levels() -> None:
    out = apply(Image.new("L", (2, 2), 100), "adjust=1.5").image
    assert pixels(out)[0, 0] == 150


def test_adjust_contrast_spreads_levels_around_the_mean() -> None:
    image = Image.fromarray(np.array([[100, 150]], np.uint8))
    out = apply(image, {"adjust": {"contrast": 2}}).image
    low, high = pixels(out)[0]
    assert low < 100 and high > 150


def test_adjust_saturation_zero_gives_grey_and_keeps_alpha() -> None:
    out = apply(Image.new("RGBA", (2, 2), (255, 0, 0, 128)), {"adjust": {"saturation": 0}}).image
    r, g, b, a = (int(c) for c in pixels(out)[0, 0])
    assert r == g == b and a == 128


def test_adjust_gamma_above_one_lightens_midtones_only() -> None:
    """Gamma 2: 64 becomes 128 (255 x (64/255)^(1/2)); black and white stay."""
    image = Image.fromarray(np.array([[0, 64, 255]], np.uint8))
    out = apply(image, {"adjust": {"gamma": 2}}).image
    assert pixels(out).tolist() == [[0, 128, 255]]


def test_adjust_of_a_grey_image_stays_grey() -> None:
    out = apply(Image.new("L", (2, 2), 100), {"adjust": {"saturation": 2, "gamma": 0.9}}).image
    assert out.mode == "L"


@pytest.mark.parametrize(("step", "message"), [
    ({"adjust": {"gamma": 0}}, "gamma"),
    ({"adjust": {"brightness": -1}}, "brightness"),
    ({"adjust": {"hue": 2}}, "unknown key"),
    ("adjust=1,2,3,4,5", "at most 4"),
])
def test_bad_adjustments_are_recipe_errors(step: object, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        apply(ramp(), step)


# levels and curve ------------------------------------------------------------------------

ALL_LEVELS = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16), "L")


def levels_of(image: Image.Image) -> list[int]:
    """The 256 levels 0-255 (ALL_LEVELS) as a step made them."""
    return [int(v) for v in pixels(image).ravel()]


def test_levels_by_hand() -> None:
    # black 16, white 240, gamma 2: 16 and below 0, 240 and above 255,
    # 128 -> 255 * ((128 - 16) / 224) ** 0.5 = 180.3.
    out = levels_of(apply(ALL_LEVELS, "levels=16,240,2").image)
    assert out[:17] == [0] * 17 and out[240:] == [255] * 16
    assert out[128] == 180
    assert all(a <= b for a, b in itertools.pairwise(out))


def test_levels_keep_alpha_and_colour_bands_alike() -> None:
    image = Image.new("RGBA", (2, 2), (100, 150, 200, 77))
    r, g, b, a = (int(v) for v in pixels(apply(image, {"levels": {"black": 100,
                                                                  "white": 200}}).image)[0, 0])
    assert (r, g, b, a) == (0, 128, 255, 77)


def test_default_levels_change_nothing() -> None:
    assert levels_of(apply(ALL_LEVELS, "levels").image) == list(range(256))


def test_curve_by_hand_through_its_points() -> None:
    # Monotone cubic (PCHIP) through 0:0, 128:96, 255:255. Slopes 0.75 and 1.252; tangents
    # 0.498 (end), 0.938 (harmonic mean, weights 382 and 383), 1.502 (end). Halfway
    # through the first span: 128 * 0.498 / 8 + 96 / 2 - 128 * 0.938 / 8 = 40.96.
    out = levels_of(apply(ALL_LEVELS, "curve=0:0,128:96,255:255").image)
    assert (out[0], out[128], out[255]) == (0, 96, 255)
    assert out[64] == 41 and out[192] == 167
    assert all(a <= b for a, b in itertools.pairwise(out))
    # The same points without colons, as a folder name on a Windows share must write them.
    assert levels_of(apply(ALL_LEVELS, "curve=0,0,128,96,255,255").image) == out


def test_curve_never_overshoots_between_steep_and_flat_parts() -> None:
    # An ordinary cubic spline would swing past 200 after the steep part; PCHIP does not.
    out = levels_of(apply(ALL_LEVELS, "curve=0:0,50:10,60:200,200:210,255:255").image)
    assert all(a <= b for a, b in itertools.pairwise(out))
    assert max(out[50:61]) == 200 and min(out[60:201]) == 200


def test_curve_of_two_points_is_a_line_and_keeps_the_ends_flat() -> None:
    out = levels_of(apply(ALL_LEVELS, {"curve": {"points": [[50, 0], [150, 200]]}}).image)
    assert out[:51] == [0] * 51 and out[150:] == [200] * 106  # beyond the points: flat
    assert out[100] == 100
    inverted = levels_of(apply(ALL_LEVELS, {"curve": "0:255,255:0"}).image)
    assert inverted == list(range(255, -1, -1))


def test_curve_keeps_alpha_and_1_bit_becomes_grey() -> None:
    image = Image.new("LA", (2, 2), (128, 50))
    assert tuple(int(v) for v in pixels(apply(image, "curve=0:0,128:96,255:255").image)[0, 0]) \
        == (96, 50)
    dots = apply(Image.new("1", (2, 2), 1), "curve=0:0,255:128").image
    assert dots.mode == "L" and pixels(dots).tolist() == [[128, 128], [128, 128]]


@pytest.mark.parametrize(("step", "message"), [
    ("curve=0:0,200:100,128:255", "increasing order of their input level: 128 comes after 200"),
    ("curve=0:0,128:50,128:200", "128 comes after 128"),
    ("curve=0:0", "at least 2"),
    ("curve=0:0,300:255", "at most 255"),
    ("curve=0:0,255", "'255' is not a point IN:OUT"),
    ("curve=0,0,255", r"levels in pairs IN,OUT \(such as curve=0,0,128,96,255,255\): 3 num"),
    ("curve", "points"),
    ("levels=200,100", r"the black point \(200\) must be below the white point \(100\)"),
    ("levels=128,128", "must be below"),
    ("levels=0,255,0", "gamma"),
    ("levels=0,300", "white"),
])
def test_bad_curves_and_levels_say_what_is_wrong(step: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        apply(ramp(), step)


# equalize -----------------------------------------------------------------------------


def _low_contrast_noise(mode: str = "L") -> Image.Image:
    values = np.random.default_rng(1).integers(110, 140, (64, 64)).astype(np.uint8)
    return Image.fromarray(values, "L").convert(mode)


def test_equalize_spreads_a_narrow_histogram() -> None:
    out = apply(_low_contrast_noise(), "equalize").image
    assert out.mode == "L"
    assert np.ptp(pixels(out)) > 2 * 30


def test_equalize_clip_limit_sets_the_strength() -> None:
    gentle = pixels(apply(_low_contrast_noise(), "equalize=1").image).std()
    strong = pixels(apply(_low_contrast_noise(), "equalize=8").image).std()
    assert strong > gentle


def test_equalize_of_colour_changes_lightness_not_hue_and_keeps_alpha() -> None:
    """CLAHE runs on the L channel of Lab: a grey image stays grey, alpha is untouched."""
    image = _low_contrast_noise("RGBA")
    image.putalpha(Image.new("L", image.size, 99))
    out = pixels(apply(image, {"equalize": {"clip_limit": 3, "tile": 4}}).image)
    assert (out[..., 3] == 99).all()
    assert np.abs(out[..., 0].astype(int) - out[..., 2]).max() <= 2
    assert np.ptp(out[..., 0]) > 60


# sharpen ------------------------------------------------------------------------------


def test_sharpen_overshoots_at_an_edge() -> None:
    """Unsharp mask: the dark side of an edge gets darker, the light side lighter."""
    image = Image.new("L", (20, 4), 100)
    image.paste(150, (10, 0, 20, 4))
    out = pixels(apply(image, "sharpen=2,2,0").image)
    assert out[2, 9] < 100 and out[2, 10] > 150
    assert out[2, 0] == 100


def test_sharpen_threshold_leaves_small_differences_alone() -> None:
    image = Image.new("L", (20, 4), 100)
    image.paste(104, (10, 0, 20, 4))
    out = pixels(apply(image, {"sharpen": {"threshold": 10}}).image)
    assert np.array_equal(out, pixels(image))


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "1", "CMYK", "I;16", "I"])
@pytest.mark.parametrize("op", ["invert", "adjust=1.2,1.1,1.3,0.9", "autocontrast", "equalize",
                                "sharpen", "grayscale"])
def test_colour_ops_give_the_documented_mode_and_keep_alpha(mode: str, op: str) -> None:
    """Every mode goes through every colour op; alpha comes out exactly as it went in.

    Colour ops work on L/LA/RGB/RGBA: P becomes RGB, 1 becomes L, CMYK becomes RGB,
    16/32-bit grey becomes L. Exceptions: grayscale leaves grey images (1, 16-bit)
    as they are and makes colour grey; invert keeps 1-bit images 1-bit.
    """
    base = ramp((16, 8), "L", low=40, high=220)
    if mode in ("I;16", "I"):
        image = Image.fromarray(np.asarray(base).astype(np.uint16) * 257).convert(mode)
    else:
        image = base.convert(mode)
    if mode in ("RGBA", "LA"):
        image.putalpha(Image.new("L", image.size, 123))
    out = apply(image, op).image
    expected = {"P": "RGB", "1": "L", "CMYK": "RGB", "I;16": "L", "I": "L"}.get(mode, mode)
    if op == "grayscale":
        expected = {"RGB": "L", "RGBA": "LA", "P": "L", "CMYK": "L"}.get(mode, mode)
    if op == "invert" and mode == "1":
        expected = "1"
    assert out.mode == expected
    assert out.size == image.size
    if mode in ("RGBA", "LA"):
        assert (pixels(out.getchannel("A")) == 123).all()


def test_a_palette_with_alpha_entries_counts_as_transparent() -> None:
    """An RGBA palette (half-transparent red) gives LA with that alpha, not an opaque L."""
    image = Image.new("P", (2, 2), 0)
    image.putpalette([255, 0, 0, 128], "RGBA")
    out = apply(image, "grayscale").image
    assert out.mode == "LA"
    assert tuple(pixels(out)[0, 0]) == (76, 128)
