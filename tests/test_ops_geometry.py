"""Geometry operations on small synthetic images: sizes, pixels and DPI as the user gets them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from helpers import exif_with, photo_pixels, ramp
from hotfolder.canvas import Canvas
from hotfolder.errors import InputError, RecipeError
from hotfolder.lengths import Length, parse_length, to_pixels
from hotfolder.pipeline import run
from hotfolder.recipes import parse_chain, parse_step
from ops_helpers import apply, pixels

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
    ("resize=800x600,fil", r"'fil' is not a mode \(fit, fill, stretch, pad\), a gravity"),
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


def test_resize_that_scales_nothing_keeps_a_bilevel_image_bilevel() -> None:
    """Without upscaling a small 1-bit image is left as it is: still 1-bit, same pixels."""
    image = Image.new("1", (40, 20), 0)
    image.paste(255, (0, 0, 20, 20))
    out = apply(image, "resize=1200").image
    assert out.mode == "1" and out.size == (40, 20)
    assert np.array_equal(pixels(out), pixels(image))


def test_resize_keeps_sixteen_bit_precision() -> None:
    """I;16 stays I;16: values above 255 survive the resample."""
    image = Image.fromarray(np.full((20, 20), 40000, np.uint16))
    assert image.mode == "I;16"
    out = apply(image, "resize=10").image
    assert out.mode == "I;16" and out.size == (10, 10)
    assert abs(int(pixels(out)[5, 5]) - 40000) <= 1


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "CMYK", "I", "F"])
def test_resize_keeps_other_modes(mode: str) -> None:
    """Modes Pillow resamples well stay as they are, CMYK and 32-bit I/F included."""
    out = apply(ramp((40, 20), mode), "resize=20x20,pad").image
    assert out.mode == mode and out.size == (20, 20)


# auto_orient --------------------------------------------------------------------


def _red_left_column() -> Image.Image:
    image = Image.new("RGB", (4, 2), "white")
    image.paste((255, 0, 0), (0, 0, 1, 2))
    return image


def test_auto_orient_turns_the_image_upright_and_resets_the_tag() -> None:
    """Orientation 6 (camera turned right): the stored left column is the top of the picture."""
    canvas = Canvas(_red_left_column(), exif=exif_with(6), dpi=(300, 150))
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
    image.info["exif"] = exif_with(3)
    out = apply(image, "auto_orient")
    assert out.image.size == (4, 2)
    assert tuple(pixels(out.image)[0, 3]) == (255, 0, 0)


def test_auto_orient_leaves_upright_images_alone() -> None:
    canvas = Canvas(_red_left_column(), exif=exif_with(1))
    assert apply(canvas, "auto_orient") is canvas
    plain = Canvas(_red_left_column())
    assert apply(plain, "auto_orient") is plain


# crop ----------------------------------------------------------------------------


def _quadrants() -> Image.Image:
    """A 40x20 image: red top-left, green top-right, blue bottom-left, white bottom-right."""
    image = Image.new("RGB", (40, 20), "white")
    image.paste((255, 0, 0), (0, 0, 20, 10))
    image.paste((0, 255, 0), (20, 0, 40, 10))
    image.paste((0, 0, 255), (0, 10, 20, 20))
    return image


def test_crop_box_is_x_y_width_height() -> None:
    out = apply(_quadrants(), "crop=20,0,20,10").image
    assert out.size == (20, 10)
    assert {tuple(c) for c in pixels(out).reshape(-1, 3)} == {(0, 255, 0)}


def test_crop_box_past_the_edge_is_cut_at_the_edge() -> None:
    assert apply(_quadrants(), {"crop": {"box": [30, 15, 100, 100]}}).image.size == (10, 5)


def test_crop_box_outside_the_image_is_a_recipe_error() -> None:
    with pytest.raises(RecipeError, match=r"crop: the box 50,0,10,10 lies outside the 40 x 20"):
        apply(_quadrants(), "crop=50,0,10,10")


@pytest.mark.parametrize(("step", "size", "corner"), [
    ("crop=1:1", (20, 20), (255, 0, 0)),  # centre: columns 10-30, starting in red
    ("crop=1:1,west", (20, 20), (255, 0, 0)),
    ("crop=1:1,east", (20, 20), (0, 255, 0)),
    ("crop=4:1,south", (40, 10), (0, 0, 255)),
    ("crop=4:1,north", (40, 10), (255, 0, 0)),
])
def test_crop_to_an_aspect_ratio_keeps_the_part_the_gravity_names(
        step: str, size: tuple[int, int], corner: tuple[int, int, int]) -> None:
    """The top-left pixel of the result shows which part was kept."""
    out = apply(_quadrants(), step).image
    assert out.size == size
    assert tuple(pixels(out)[0, 0]) == corner


def test_crop_to_an_aspect_ratio_from_yaml() -> None:
    """`aspect: "16:9"`, `aspect: 1.5` and `aspect: 4/3` are all ratios."""
    image = ramp((160, 160))
    assert apply(image, {"crop": {"aspect": "16:9"}}).image.size == (160, 90)
    assert apply(image, {"crop": {"aspect": 2}}).image.size == (160, 80)
    assert apply(image, {"crop": {"aspect": "4/3", "gravity": "north"}}).image.size == (160, 120)
    assert apply(image, "crop=16x9").image.size == (160, 90)  # a name Windows accepts
    assert apply(image, "crop=16X9,north").image.size == (160, 90)


@pytest.mark.parametrize(("step", "message"), [
    ("crop", "either a box"),
    ("crop=16:0", "not an aspect ratio"),
    ("crop=1,2,0,5", "width and height above 0"),
    ({"crop": {"aspect": "16:9", "box": [0, 0, 1, 1]}}, "either a box"),
    ("crop=16,9", r"crop=X,Y,WIDTH,HEIGHT or crop=RATIO,GRAVITY"),
])
def test_bad_crops_are_recipe_errors(step: object, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        apply(ramp(), step)


# trim ------------------------------------------------------------------------------


def test_trim_cuts_a_uniform_border() -> None:
    image = Image.new("RGB", (50, 40), "white")
    image.paste((200, 30, 30), (10, 5, 30, 25))
    out = apply(image, "trim").image
    assert out.size == (20, 20)
    assert tuple(pixels(out)[0, 0]) == (200, 30, 30)


def test_trim_fuzz_tolerates_noise_in_the_border() -> None:
    """A scanned border a few levels off white is border with the default 5% fuzz, not at 0."""
    image = Image.new("L", (50, 40), 255)
    image.putpixel((2, 2), 245)
    image.paste(0, (10, 5, 30, 25))
    assert apply(image, "trim").image.size == (20, 20)
    assert apply(image, "trim=0").image.size == (28, 23)


def test_trim_of_transparent_borders_keeps_the_mode() -> None:
    """Fully transparent pixels are border whatever colour they hold; RGBA stays RGBA."""
    image = Image.new("RGBA", (30, 30), (0, 0, 0, 0))
    image.putpixel((1, 1), (255, 255, 255, 0))
    image.paste((0, 0, 0, 255), (10, 10, 20, 15))
    out = apply(image, "trim").image
    assert out.mode == "RGBA" and out.size == (10, 5)


def test_trim_of_a_uniform_image_leaves_it_alone() -> None:
    image = Image.new("RGB", (10, 10), "white")
    assert apply(image, "trim").image.size == (10, 10)


@pytest.mark.parametrize("mode", ["P", "1", "CMYK", "I;16", "LA"])
def test_trim_works_in_every_mode_and_keeps_it(mode: str) -> None:
    """Borders are measured on an 8-bit view, but the crop is of the image as it is."""
    image = Image.new("L", (30, 20), 255)
    image.paste(0, (5, 5, 15, 10))
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image).astype(np.uint16) * 257)
    else:
        image = image.convert(mode)
    out = apply(image, "trim").image
    assert out.mode == image.mode and out.size == (10, 5)


# rotate, flip, mirror ------------------------------------------------------------------


def test_rotate_by_quarter_turns_is_exact_and_clockwise() -> None:
    """90 degrees clockwise: the red top-left quadrant ends up top-right; size swaps, DPI too."""
    canvas = Canvas(_quadrants(), dpi=(300, 100))
    out = apply(canvas, "rotate=90")
    assert out.image.size == (20, 40)
    assert tuple(pixels(out.image)[0, -1]) == (255, 0, 0)
    assert out.dpi == (100, 300)
    assert tuple(pixels(apply(canvas, "rotate=-90").image)[-1, 0]) == (255, 0, 0)
    assert tuple(pixels(apply(canvas, "rotate=180").image)[-1, -1]) == (255, 0, 0)


def test_rotate_any_angle_expands_and_fills_corners_with_white() -> None:
    out = apply(Image.new("RGB", (40, 40), "black"), "rotate=45").image
    assert out.size == (58, 58)  # 40 x sqrt(2), rounded up to whole pixels
    assert tuple(pixels(out)[0, 0]) == (255, 255, 255)
    assert tuple(pixels(out)[28, 28]) == (0, 0, 0)


def test_rotate_without_expand_keeps_the_size() -> None:
    out = apply(Image.new("RGB", (40, 20), "black"), "rotate=30,crop,red").image
    assert out.size == (40, 20)
    assert tuple(pixels(out)[0, 0]) == (255, 0, 0)


def test_rotate_fills_transparent_for_alpha_and_adds_alpha_when_asked() -> None:
    rgba = apply(Image.new("RGBA", (20, 20), (0, 0, 0, 255)), "rotate=45").image
    assert rgba.mode == "RGBA" and pixels(rgba)[0, 0, 3] == 0
    grey = apply(Image.new("L", (20, 20), 0), "rotate=45,transparent").image
    assert grey.mode == "LA" and tuple(pixels(grey)[0, 0]) == (255, 0)
    assert tuple(pixels(grey)[14, 14]) == (0, 255)


@pytest.mark.parametrize(("mode", "expected", "corner"), [
    ("1", "1", 255),
    ("P", "RGB", (255, 255, 255)),
    ("CMYK", "CMYK", (0, 0, 0, 0)),
    ("I;16", "I;16", 65535),
])
def test_rotate_fills_each_mode_with_its_own_white(mode: str, expected: str,
                                                   corner: object) -> None:
    """White in CMYK is no ink; in 16-bit, 65535; 1-bit stays 1-bit; palette becomes RGB."""
    image = (Image.fromarray(np.zeros((20, 20), np.uint16)) if mode == "I;16"
             else Image.new("L", (20, 20), 0).convert(mode))
    out = apply(image, "rotate=30").image
    assert out.mode == expected
    assert out.getpixel((0, 0)) == corner
    assert out.getpixel((14, 14)) in (0, (0, 0, 0), (0, 0, 0, 255))


def test_flip_and_mirror() -> None:
    flipped = apply(_quadrants(), "flip").image
    mirrored = apply(_quadrants(), "mirror").image
    assert tuple(pixels(flipped)[0, 0]) == (0, 0, 255)
    assert tuple(pixels(mirrored)[0, 0]) == (0, 255, 0)
    assert flipped.size == mirrored.size == (40, 20)


@pytest.mark.parametrize(("step", "message"), [
    ("rotate", "angle: is required"),
    ("rotate=abc", "angle: must be a number"),
    ("rotate=10,expnd", "'expnd' is not crop, expand or a colour"),
    ({"rotate": {"angle": 5, "fill": "x"}}, "fill: 'x' is not a colour"),
])
def test_bad_rotations_are_recipe_errors(step: object, message: str) -> None:
    with pytest.raises(RecipeError, match=f"^rotate: .*{message}"):
        apply(ramp(), step)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "1", "CMYK", "I;16", "I", "F"])
@pytest.mark.parametrize("step", ["crop=2,1,5,3", "flip", "mirror", "crop=1:1,east"])
def test_crops_and_flips_keep_every_mode_and_its_pixels(mode: str, step: str) -> None:
    """No resampling: the same mode (even palette and 16-bit) and exactly the moved pixels."""
    base = ramp((8, 4), "L", low=0, high=255)
    image = (Image.fromarray(np.asarray(base).astype(np.uint16) * 257) if mode == "I;16"
             else base.convert(mode))
    grid = pixels(image)
    expected = {"crop=2,1,5,3": grid[1:4, 2:7], "flip": grid[::-1], "mirror": grid[:, ::-1],
                "crop=1:1,east": grid[:, 4:]}[step]
    out = apply(image, step).image
    assert out.mode == image.mode
    assert np.array_equal(pixels(out), expected)


def test_rotate_of_a_palette_image_with_transparency_gives_rgba_with_clear_corners() -> None:
    """A transparent palette entry means the image has alpha: corners are transparent, not white."""
    image = Image.new("P", (20, 20), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.info["transparency"] = 1
    out = apply(image, "rotate=45").image
    assert out.mode == "RGBA"
    assert pixels(out)[0, 0, 3] == 0
    assert tuple(pixels(out)[14, 14]) == (255, 0, 0, 255)


# the pixel budget ------------------------------------------------------------------

# One step of every operation, on a 120 x 90 photo at 100 DPI: the size each one states
# before it runs must be the size of what it makes (or, for those that state none, at least
# as large), or the budget check could let a bomb through.
STATED_SIZES = [
    "auto_orient", "resize=300x200", "resize=300x200,fill,upscale", "resize=300x200,fill",
    "resize=300x200,stretch,upscale", "resize=300x200,pad,upscale", "resize=50mm,upscale",
    "crop=10,10,500,500", "crop=16:9", "trim", "rotate=33", "rotate=33,crop", "rotate=90",
    "rotate=270,crop", "rotate=-0.5", "flip", "mirror", "dither=jarvis", "dither=halftone,6,45",
    "threshold=otsu", "dpi=300", "size=80mmx,300", "size=60mmx20mm,300,stretch",
    "remove_background", "grayscale", "autocontrast", "invert", "adjust=1.1,1.2,0.9,0.8",
    "equalize", "sharpen", "png", "optimize", "thumbnail=64", "metadata", "trace",
    "levels=10,240,1.2", "curve=0:0,128:96,255:255", "dot_width=0.1mm", "proof",
]


def test_every_operation_is_in_the_stated_size_check() -> None:
    from hotfolder.ops import REGISTRY  # noqa: PLC0415  (the full registry, once loaded)

    covered = {parse_step(step).op for step in STATED_SIZES}
    assert covered == set(REGISTRY)


@pytest.mark.parametrize("text", STATED_SIZES)
def test_the_size_an_operation_states_is_the_size_it_makes(text: str) -> None:
    from hotfolder.ops import lookup  # noqa: PLC0415

    step = parse_step(text)
    canvas = Canvas(Image.fromarray(photo_pixels(120, 90, seed=3)), dpi=(100.0, 100.0))
    if step.op == "dot_width":  # it takes black-and-white dots
        canvas = canvas.with_image(canvas.image.convert("1"))
    stated = lookup(step.op).output_size(step.params, canvas.image.size, 100.0)
    made = run(canvas, [step]).image.size
    if step.op in ("resize", "size", "rotate"):
        assert made == stated
    else:
        assert made[0] <= stated[0] and made[1] <= stated[1]


@pytest.mark.parametrize(("chain", "size"), [
    ("resize=40000x40000,upscale", "40000 x 30000 pixels (1200 megapixels)"),
    ("resize=30000x30000,fill,upscale", "30000 x 30000 pixels (900 megapixels)"),
    ("resize=30000x30000,stretch,upscale", "30000 x 30000 pixels (900 megapixels)"),
    ("resize=20000x20000,pad,upscale", "20000 x 20000 pixels (400 megapixels)"),
    ("resize=20000mmx,300,upscale", "236220 x 177165 pixels (41850 megapixels)"),
    ("size=3000mmx,1200", "141732 x 106299 pixels (15066 megapixels)"),
])
def test_a_step_over_the_pixel_budget_is_refused_before_it_runs(chain: str, size: str) -> None:
    """The 64 x 48 picture never grows: the refusal comes from the stated size alone."""
    image = ramp((64, 48), "RGB")
    with pytest.raises(InputError) as caught:
        run(Canvas(image), parse_chain(chain + "+png").steps, max_pixels=100_000_000)
    assert caught.value.message == (f"step 1, {chain}: the result would be {size}, over the"
                                    " limit of 100 megapixels (limits.max_pixels)")
    assert caught.value.stage == "process"


def test_a_rotation_over_the_budget_is_refused_by_its_step_number() -> None:
    """Padding to 900 x 900 fits one megapixel; turning that by 33 degrees does not."""
    steps = parse_chain("resize=900x900,pad,upscale+rotate=33+png").steps
    with pytest.raises(InputError, match=r"^step 2, rotate=33: the result would be 1246 x 1246 "
                       r"pixels \(1.6 megapixels\), over the limit of 1 megapixels"):
        run(Canvas(ramp((64, 48))), steps, max_pixels=1_000_000)
    assert run(Canvas(ramp((64, 48))), steps[:1], max_pixels=1_000_000).image.size == (900, 900)


def test_steps_within_the_budget_run_and_yaml_steps_are_named_by_their_parameters() -> None:
    canvas = Canvas(ramp((64, 48)))
    assert run(canvas, [parse_step("resize=1000x1000,upscale")], 1_000_000).image.size == (
        1000, 750)
    step = parse_step({"resize": {"width": 2000, "height": 2000, "upscale": True}})
    with pytest.raises(InputError, match=r"^step 1, resize\(width=2000, height=2000, "
                       r"upscale=True\): the result would be 2000 x 1500 pixels"):
        run(canvas, [step], max_pixels=1_000_000)
