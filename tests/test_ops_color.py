"""Colour operations on small synthetic images: each mode's result stated and checked by pixels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ops_helpers import apply, pixels, ramp


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
