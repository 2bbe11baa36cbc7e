"""Geometry operations on small synthetic images: sizes, pixels and DPI as the user gets them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hotfolder.canvas import Canvas
from hotfolder.errors import RecipeError
from hotfolder.ops.geometry import Length, parse_length, to_pixels
from ops_helpers import apply, pixels, ramp

# Lengths ---------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    (800, Length(800, "px")),
    ("800", Length(800, "px")),
    ("800px", Length(800, "px")),
    ("100mm", Length(100, "mm")),
    ("2.5 cm", Length(2.5, "cm")),
    ("4in", Length(4, "in")),
    ("4IN", Length(4, "in")),
])
def test_parse_length_reads_numbers_and_units(text: object, expected: Length) -> None:
    assert parse_length(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "10furlongs", "-5mm", "0", True])
def test_parse_length_refuses_nonsense_with_a_sentence(text: object) -> None:
    with pytest.raises(ValueError, match="length"):
        parse_length(text)


def test_to_pixels_converts_physical_units_at_the_dpi() -> None:
    assert to_pixels(Length(25.4, "mm"), 300) == 300
    assert to_pixels(Length(4, "in"), 300) == 1200
    assert to_pixels(Length(2.54, "cm"), 600) == 600
    assert to_pixels(Length(800, "px"), None) == 800


def test_to_pixels_needs_a_dpi_for_physical_units() -> None:
    with pytest.raises(ValueError, match="100mm needs a DPI"):
        to_pixels(Length(100, "mm"), None)


# resize ------------------------------------------------------------------------


def test_fit_keeps_aspect_ratio_within_the_box() -> None:
    out = apply(ramp((400, 200)), "resize=100x100")
    assert out.image.size == (100, 50)


def test_single_number_fits_within_a_square() -> None:
    assert apply(ramp((300, 600)), "resize=120").image.size == (60, 120)


def test_width_only_scales_height_by_the_aspect_ratio() -> None:
    assert apply(ramp((400, 200)), "resize=100x").image.size == (100, 50)
    assert apply(ramp((400, 200)), {"resize": {"height": 20}}).image.size == (40, 20)


def test_fit_does_not_upscale_unless_asked() -> None:
    small = ramp((40, 20))
    assert apply(small, "resize=100x100").image.size == (40, 20)
    assert apply(small, "resize=100x100,upscale").image.size == (100, 50)


def test_fill_covers_the_box_and_crops_by_gravity() -> None:
    """fill crops the overflow: with gravity west the left (dark) end of the ramp is kept."""
    image = ramp((400, 100))
    centre = apply(image, "resize=50x50,fill")
    west = apply(image, "resize=50x50,fill,west")
    assert centre.image.size == west.image.size == (50, 50)
    assert pixels(west.image)[25, 0, 0] < 10
    assert 100 < pixels(centre.image)[25, 25, 0] < 155


def test_fill_without_upscale_crops_to_the_aspect_but_does_not_enlarge() -> None:
    assert apply(ramp((40, 40)), "resize=800x600,fill").image.size == (40, 30)


def test_stretch_ignores_the_aspect_ratio() -> None:
    assert apply(ramp((400, 200)), "resize=50x50,stretch").image.size == (50, 50)


def test_pad_fits_then_fills_the_rest_with_white() -> None:
    """pad of an opaque image: the box size exactly, the image centred, white bars."""
    black = Image.new("RGB", (200, 100), "black")
    out = apply(black, "resize=100x100,pad").image
    assert out.size == (100, 100)
    assert tuple(pixels(out)[5, 50]) == (255, 255, 255)
    assert tuple(pixels(out)[50, 50]) == (0, 0, 0)
    assert tuple(pixels(out)[95, 50]) == (255, 255, 255)


def test_pad_is_transparent_for_images_with_alpha_and_takes_a_colour() -> None:
    rgba = Image.new("RGBA", (200, 100), (0, 0, 255, 255))
    assert pixels(apply(rgba, "resize=100x100,pad").image)[5, 50, 3] == 0
    red = apply(Image.new("RGB", (200, 100)), "resize=100x100,pad,red").image
    assert tuple(pixels(red)[5, 50]) == (255, 0, 0)


def test_pad_of_a_small_image_keeps_its_size_inside_the_full_box() -> None:
    out = apply(Image.new("L", (20, 10), 0), {"resize": {"width": 100, "height": 100,
                                                          "mode": "pad", "gravity": "north"}})
    assert out.image.size == (100, 100)
    grid = pixels(out.image)
    assert grid[0, 50] == 0 and grid[10, 50] == 255
    assert (grid == 0).sum() == 200


def test_millimetres_use_the_dpi_parameter_and_set_the_canvas_dpi() -> None:
    """100mm x 50mm at 300 DPI is 1181 x 591 px; the output says 300 DPI."""
    out = apply(ramp((2000, 1000)), "resize=100mmx50mm,fill,300")
    assert out.image.size == (1181, 591)
    assert out.dpi == (300, 300)


def test_millimetres_fall_back_to_the_image_dpi() -> None:
    out = apply(Canvas(ramp((1000, 1000)), dpi=(254, 254)), {"resize": {"width": "50mm"}})
    assert out.image.size == (500, 500)
    assert out.dpi == (254, 254)


def test_millimetres_without_any_dpi_is_a_recipe_error() -> None:
    with pytest.raises(RecipeError, match="resize: 100mm needs a DPI"):
        apply(ramp(), "resize=100mmx100mm")


def test_pixel_resize_keeps_the_dpi_unless_one_is_given() -> None:
    canvas = Canvas(ramp((400, 400)), dpi=(72, 72))
    assert apply(canvas, "resize=100").dpi == (72, 72)
    assert apply(canvas, "resize=100,600").dpi == (600, 600)


@pytest.mark.parametrize(("step", "message"), [
    ("resize", "give a width, a height, or both"),
    ("resize=axb", "not a length"),
    ({"resize": {"width": 10, "mode": "fill"}}, "needs both a width and a height"),
    ({"resize": {"width": 10, "fill": "no-such-colour"}}, "not a colour"),
    ({"resize": {"width": 10, "sizes": 3}}, "unknown key"),
])
def test_bad_resize_parameters_are_recipe_errors(step: object, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        apply(ramp(), step)


def test_resize_of_a_palette_image_with_transparency_gives_rgba() -> None:
    """Palette indexes can't be resampled: P with a transparent entry becomes RGBA, alpha kept."""
    image = Image.new("P", (40, 40), 1)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.info["transparency"] = 1
    image.paste(0, (0, 0, 20, 40))
    out = apply(image, "resize=20x20").image
    assert out.mode == "RGBA" and out.size == (20, 20)
    assert tuple(pixels(out)[10, 2]) == (255, 0, 0, 255)
    assert pixels(out)[10, 18, 3] == 0


def test_resize_of_a_bilevel_image_gives_smooth_grey() -> None:
    """1-bit images are resampled as L, so a half-and-half edge gives intermediate greys."""
    image = Image.new("1", (41, 10), 0)
    image.paste(255, (0, 0, 20, 10))
    out = apply(image, "resize=10x").image
    assert out.mode == "L" and out.size == (10, 2)
    row = pixels(out)[0]
    assert row[0] == 255 and row[-1] == 0
    assert ((row > 0) & (row < 255)).any()


def test_resize_keeps_sixteen_bit_precision() -> None:
    """I;16 stays I;16: values above 255 survive the resample."""
    image = Image.fromarray(np.full((20, 20), 40000, np.uint16))
    assert image.mode == "I;16"
    out = apply(image, "resize=10").image
    assert out.mode == "I;16" and out.size == (10, 10)
    assert abs(int(pixels(out)[5, 5]) - 40000) <= 1


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "CMYK", "I", "F"])
def test_resize_keeps_other_modes(mode: str) -> None:
    out = apply(ramp((40, 20), mode), "resize=20x20,pad").image
    assert out.mode == mode and out.size == (20, 20)


# auto_orient --------------------------------------------------------------------


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _red_left_column() -> Image.Image:
    image = Image.new("RGB", (4, 2), "white")
    image.paste((255, 0, 0), (0, 0, 1, 2))
    return image


def test_auto_orient_turns_the_image_upright_and_resets_the_tag() -> None:
    """Orientation 6 (camera turned right): the stored left column is the top of the picture."""
    canvas = Canvas(_red_left_column(), exif=_exif(6), dpi=(300, 150))
    out = apply(canvas, "auto_orient")
    assert out.image.size == (2, 4)
    assert tuple(pixels(out.image)[0, 1]) == (255, 0, 0)
    assert tuple(pixels(out.image)[3, 1]) == (255, 255, 255)
    assert out.dpi == (150, 300)
    assert out.exif is not None
    exif = Image.Exif()
    exif.load(out.exif)
    assert exif.get(0x0112, 1) == 1
    again = apply(out, "auto_orient")
    assert again.image.size == (2, 4)


def test_auto_orient_reads_the_orientation_from_the_image_when_the_canvas_has_none() -> None:
    image = _red_left_column()
    image.info["exif"] = _exif(3)
    out = apply(image, "auto_orient")
    assert out.image.size == (4, 2)
    assert tuple(pixels(out.image)[0, 3]) == (255, 0, 0)


def test_auto_orient_leaves_upright_images_alone() -> None:
    canvas = Canvas(_red_left_column(), exif=_exif(1))
    assert apply(canvas, "auto_orient") is canvas
    plain = Canvas(_red_left_column())
    assert apply(plain, "auto_orient") is plain
