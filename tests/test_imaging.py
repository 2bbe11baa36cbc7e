"""Safe decoding and encoding, and the engine that joins them (imaging.py, engine.py)."""

from __future__ import annotations

import io
import random
import re
from pathlib import Path

import magic
import numpy as np
import pytest
import resvg_py
from PIL import Image

from conftest import Recorder
from helpers import encoded, exif_with, image_bytes, opened, png_file, zlib_level
from hotfolder import engine, imaging
from hotfolder.canvas import Canvas
from hotfolder.config import LimitsConfig
from hotfolder.engine import output_name, render
from hotfolder.errors import InputError, RecipeError
from hotfolder.formats import BY_MEDIA_TYPE
from hotfolder.recipes import Recipe, combine, parse_chain

LIMITS = LimitsConfig()


def plan_of(chain: str | None = None, **recipe: object):  # type: ignore[no-untyped-def]
    """A plan from an inline chain and/or recipe fields (output, sidecar)."""
    steps = parse_chain(chain).steps if chain else []
    return combine([("test", "test", Recipe.model_validate({"steps": steps, **recipe}))])


# --- type by content -------------------------------------------------------------------


@pytest.mark.parametrize("fmt,kind", [("JPEG", "jpeg"), ("PNG", "png"), ("GIF", "gif"),
                                      ("BMP", "bmp"), ("TIFF", "tiff"), ("WEBP", "webp")])
def test_sniff_names_each_allowed_type_by_content(fmt: str, kind: str) -> None:
    assert imaging.sniff(image_bytes(fmt)) == kind


@pytest.mark.parametrize("data,words", [
    (b"", "empty"),
    (b"just some notes\n", "ASCII text"),
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "PostScript"),
    (b"8BPS\x00\x01" + b"\0" * 40, "not an image type"),
])
def test_sniff_refuses_what_is_not_allowed(data: bytes, words: str) -> None:
    with pytest.raises(InputError, match=words):
        imaging.sniff(data)


def test_known_starts_are_named_as_libmagic_names_them() -> None:
    """A start that skips libmagic names what libmagic would: after each marker byte, after
    random bytes, and in real files."""
    rng = random.Random(7)
    for start, kind in imaging.KNOWN_STARTS:
        tails = [bytes([value]) for value in range(256)]
        tails += [rng.randbytes(rng.randrange(1, 64)) for _ in range(200)]
        for tail in tails:
            head = start + tail
            assert BY_MEDIA_TYPE.get(magic.from_buffer(head, mime=True)) == kind, head
            assert imaging.sniff(head) == kind
    for fmt, kind in (("JPEG", "jpeg"), ("PNG", "png")):
        data = image_bytes(fmt)
        assert BY_MEDIA_TYPE[magic.from_buffer(data, mime=True)] == imaging.sniff(data) == kind


def test_a_jpeg_start_alone_is_left_to_libmagic() -> None:
    """Three bytes that begin every JPEG are not yet one to libmagic (it reads them as
    text): neither are they to sniff."""
    with pytest.raises(InputError, match="not an image type"):
        imaging.sniff(b"\xff\xd8\xff")


def test_format_outside_configured_list_is_refused() -> None:
    limits = LimitsConfig(formats=["jpeg"])
    with pytest.raises(InputError, match="png files are not accepted"):
        imaging.decode(image_bytes("PNG"), limits)


# --- limits and damage -----------------------------------------------------------------


def test_pixel_limit_is_checked_before_pixels_are_decoded() -> None:
    # The header claims 65535 x 65535 but no row is stored: decoding would report a
    # truncated file, so a message about the size proves the check came first.
    with pytest.raises(InputError, match=r"claims 4295 megapixels, over the limit"):
        imaging.decode(png_file(65535, 65535, rows=0), LIMITS)


def test_decompression_bomb_warning_is_an_error() -> None:
    # 12000 x 12000 is over max_pixels but under twice it, where Pillow only warns.
    with pytest.raises(InputError, match="decompression bomb"):
        imaging.decode(png_file(12000, 12000, bit_depth=1), LIMITS)


def test_configured_pixel_limit_applies() -> None:
    limits = LimitsConfig(max_pixels=1000)
    with pytest.raises(InputError, match=r"limits\.max_pixels"):
        imaging.decode(image_bytes("PNG", (40, 30)), limits)


@pytest.mark.parametrize(("save", "scans"), [({}, 1), ({"progressive": True}, 10)])
def test_the_scans_of_a_jpeg_are_counted_from_its_markers(save: dict[str, bool],
                                                          scans: int) -> None:
    data = image_bytes("JPEG", (300, 200), **save)
    assert imaging.jpeg_scans(data) == scans
    assert imaging.jpeg_scans(data, up_to=1) == 1


def test_file_size_limit() -> None:
    with pytest.raises(InputError, match=r"over the limit of 0.01 MB"):
        render(image_bytes("PNG", (200, 150)), "a.png", plan_of(), LimitsConfig(max_file_mb=0.01))


# --- colour modes ----------------------------------------------------------------------


def test_cmyk_jpeg_becomes_correct_rgb() -> None:
    cyan = encoded(Image.new("CMYK", (32, 32), (255, 0, 0, 0)), "JPEG", quality=95)
    assert b"Adobe" in cyan  # Adobe's marker: the CMYK values are stored inverted
    canvas = imaging.decode(cyan, LIMITS).canvas
    assert canvas.image.mode == "RGB"
    r, g, b = canvas.image.getpixel((16, 16))  # type: ignore[misc]
    assert r < 20 and g > 235 and b > 235


CMYK_PROFILE = Path("/usr/share/color/icc/ghostscript/default_cmyk.icc")


@pytest.mark.skipif(not CMYK_PROFILE.is_file(), reason="no CMYK ICC profile on this machine")
def test_cmyk_jpeg_with_a_profile_is_converted_through_it() -> None:
    cyan = encoded(Image.new("CMYK", (16, 16), (255, 0, 0, 0)), "JPEG", quality=95,
                   icc_profile=CMYK_PROFILE.read_bytes())
    canvas = imaging.decode(cyan, LIMITS).canvas
    # Printed cyan is a lighter blue than the screen's pure (0, 255, 255).
    assert canvas.image.getpixel((8, 8)) == pytest.approx((0, 175, 239), abs=12)
    assert canvas.icc_profile is None  # the pixels are sRGB now


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    grey = encoded(Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16)), "PNG")
    image = imaging.decode(grey, LIMITS).canvas.image
    assert image.mode == "L"
    assert [image.getpixel((x, 0)) for x in range(3)] == [0, 128, 255]


def test_sixteen_bit_rgb_png_decodes_to_eight_bits() -> None:
    image = imaging.decode(png_file(8, 4, bit_depth=16, colour=2), LIMITS).canvas.image
    assert image.mode == "RGB" and image.size == (8, 4)


def transparent_palette_png() -> bytes:
    image = Image.new("RGBA", (20, 10), (255, 0, 0, 255))
    image.paste((0, 0, 0, 0), (10, 0, 20, 10))
    return encoded(image.convert("P"), "PNG")  # palette with a transparent entry


@pytest.mark.parametrize("fmt", ["png", "webp", "gif"])
def test_transparency_is_kept_where_the_format_has_it(fmt: str) -> None:
    result = opened(render(transparent_palette_png(), "p.png", plan_of(fmt), LIMITS))
    rgba = result.convert("RGBA")
    assert rgba.getpixel((15, 5))[3] == 0  # type: ignore[index]
    assert rgba.getpixel((5, 5))[:3] == pytest.approx((255, 0, 0), abs=8)  # type: ignore[index]


@pytest.mark.parametrize("fmt", ["jpeg", "bmp"])
def test_transparency_is_flattened_on_white_otherwise(fmt: str) -> None:
    result = opened(render(transparent_palette_png(), "p.png", plan_of(fmt), LIMITS))
    assert result.mode == "RGB"
    assert result.getpixel((15, 5)) == pytest.approx((255, 255, 255), abs=4)
    assert result.getpixel((5, 5)) == pytest.approx((255, 0, 0), abs=8)


@pytest.mark.parametrize(("fmt", "background", "expected"), [
    ("jpeg", "black", (0, 0, 0)), ("bmp", "#7f3f1f", (127, 63, 31)),
    ("jpeg", [0, 0, 255], (0, 0, 255)),
])
def test_transparency_is_flattened_on_the_recipes_background(
        fmt: str, background: object, expected: tuple[int, int, int]) -> None:
    plan = plan_of(fmt, output={"background": background})
    result = opened(render(transparent_palette_png(), "p.png", plan, LIMITS))
    assert result.getpixel((15, 5)) == pytest.approx(expected, abs=4)
    assert result.getpixel((5, 5)) == pytest.approx((255, 0, 0), abs=8)


def test_a_grey_image_is_flattened_on_the_grey_of_the_background() -> None:
    image = Image.new("LA", (4, 4), (200, 0))
    out = io.BytesIO()
    image.save(out, "PNG")
    result = opened(render(out.getvalue(), "g.png", plan_of("jpeg", output={
        "background": "#ff0000"}), LIMITS))
    assert result.mode == "L"
    assert result.getpixel((1, 1)) == pytest.approx(76, abs=3)  # the grey of pure red


# --- what is written -------------------------------------------------------------------


def test_appended_data_is_gone_from_the_output() -> None:
    hidden = b"PK\x03\x04" + b"secret.txt" + b"\0" * 64
    rendered = render(image_bytes("JPEG", (64, 48)) + hidden, "a.jpg", plan_of(), LIMITS)
    assert rendered.main.name == "a.jpg"
    assert b"secret.txt" not in rendered.main.data
    assert opened(rendered).size == (64, 48)


def test_exif_is_kept_for_operations_and_summarised() -> None:
    data = image_bytes("JPEG", (40, 30), exif=exif_with(6))
    decoded = imaging.decode(data, LIMITS)
    assert decoded.canvas.exif is not None
    assert decoded.exif == {"make": "TestCam", "orientation": 6}


@pytest.mark.parametrize("metadata,kept", [("strip", False), ("keep", True)])
def test_metadata_is_stripped_unless_kept(metadata: str, kept: bool) -> None:
    data = image_bytes("JPEG", (40, 30), exif=exif_with(1))
    rendered = render(data, "a.jpg", plan_of(output={"metadata": metadata}), LIMITS)
    assert (opened(rendered).getexif().get(0x010F) == "TestCam") is kept


@pytest.mark.parametrize("fmt", ["png", "jpeg", "tiff", "bmp"])
def test_dpi_is_written(fmt: str) -> None:
    rendered = render(image_bytes("PNG"), "a.png", plan_of(output={"format": fmt, "dpi": 300}),
                      LIMITS)
    assert opened(rendered).info["dpi"] == pytest.approx((300, 300), abs=0.1)
    assert rendered.sidecar["output"]["dpi"] == 300


def test_png_is_written_at_a_fast_level_unless_asked() -> None:
    data = image_bytes("PNG", (300, 200))
    fast = render(data, "a.png", plan_of(), LIMITS).main.data
    small = render(data, "a.png", plan_of(output={"compression": 9}), LIMITS).main.data
    assert (zlib_level(fast), zlib_level(small)) == (0, 3)


def test_svg_output_needs_vectors() -> None:
    with pytest.raises(RecipeError, match="SVG output"):
        render(image_bytes("PNG"), "a.png", plan_of("svg"), LIMITS)


def test_sidecar_and_name_template() -> None:
    data = image_bytes("JPEG", (400, 300), exif=exif_with(1))
    plan = plan_of("resize=200+png", output={"name": "{stem}-{width}x{height}-{sha8}.{ext}"})
    rendered = render(data, "photo.jpg", plan, LIMITS)
    side = rendered.sidecar
    assert rendered.main.name == f"photo-200x150-{side['input']['sha256'][:8]}.png"
    assert rendered.main.media_type == "image/png"
    assert side["input"]["name"] == "photo.jpg" and side["input"]["type"] == "jpeg"
    assert side["input"]["size"] == len(data)
    assert side["exif"]["make"] == "TestCam"
    assert [next(iter(step)) for step in side["steps"]] == ["resize", "format"]
    assert side["output"]["width"] == 200 and side["output"]["format"] == "png"
    assert side["output"]["size"] == len(rendered.main.data)
    assert set(side["timings"]) == {"decode", "process", "encode"}


def test_output_name_never_leaves_its_folder() -> None:
    name = output_name("{recipe}-{stem}.{ext}", stem="..", ext="png", recipe="a/b", sha8="0",
                       width=1, height=1)
    assert name == "a-b-...png"
    assert output_name("{stem}", stem="..", ext="png", recipe="r", sha8="0", width=1,
                       height=1) == "output.png"


# --- shrinking while decoding ------------------------------------------------------------


def test_jpeg_is_shrunk_while_decoding_when_a_resize_follows() -> None:
    data = image_bytes("JPEG", (2400, 1600))
    plan = plan_of("grayscale+resize=300")
    rendered = render(data, "a.jpg", plan, LIMITS)
    assert opened(rendered).size == (300, 200)
    assert imaging.decode(data, LIMITS, engine.size_hint(plan)).canvas.image.size == (600, 400)


def test_shrink_honours_auto_orient_swapping_axes() -> None:
    data = image_bytes("JPEG", (2400, 800), exif=exif_with(6))  # stored wide, upright tall
    rendered = render(data, "a.jpg", plan_of("auto_orient+resize=x400"), LIMITS)
    assert opened(rendered).size == (133, 400)


# --- SVG ---------------------------------------------------------------------------------

SVG = b"""<svg xmlns="http://www.w3.org/2000/svg" width="40mm" height="20mm" viewBox="0 0 40 20">
<rect width="20" height="20" fill="#ff0000"/></svg>"""


def test_svg_is_rasterised_with_transparency() -> None:
    rendered = render(SVG, "logo.svg", plan_of(), LIMITS)
    image = opened(rendered)
    assert rendered.main.name == "logo.png" and image.size == (151, 76)
    assert image.getpixel((10, 10)) == (255, 0, 0, 255)
    assert image.getpixel((140, 10))[3] == 0  # type: ignore[index]


def test_svg_is_drawn_at_the_size_the_recipe_needs() -> None:
    svg = SVG.replace(b'width="40mm" height="20mm"', b'width="40" height="20"')
    image = opened(render(svg, "logo.svg", plan_of("resize=1200"), LIMITS))
    assert image.size == (1200, 600)
    assert image.getpixel((590, 300)) == (255, 0, 0, 255)


def svg_with_image(href: str, attr: str = "href") -> bytes:
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'
        f' width="20" height="20"><image {attr}="{href}" width="20" height="20"/></svg>'
    ).encode()


def test_svg_reference_to_a_local_file_is_refused(tmp_path: Path) -> None:
    green = tmp_path / "green.png"
    Image.new("RGB", (20, 20), (0, 255, 0)).save(green)
    svg = svg_with_image(str(green))
    # Control: the renderer alone does load the file and draws its green pixels...
    drawn = Image.open(io.BytesIO(bytes(resvg_py.svg_to_bytes(svg_string=svg.decode()))))
    assert drawn.convert("RGB").getpixel((10, 10)) == (0, 255, 0)
    # ...so it is the check before rendering that keeps every form of reference out.
    for href, attr in ((str(green), "href"), (f"file://{green}", "xlink:href"),
                       ("green.png", "href")):
        with pytest.raises(InputError, match="outside resource"):
            render(svg_with_image(href, attr), "x.svg", plan_of(), LIMITS)


def test_svg_reference_to_a_url_loads_nothing(web: str) -> None:
    for svg in (svg_with_image(f"{web}/pixel.png"),
                f'<svg xmlns="http://www.w3.org/2000/svg"><style>@import url({web}/a.css);'
                "</style></svg>".encode(),
                f'<svg xmlns="http://www.w3.org/2000/svg"><rect width="5" height="5" '
                f'style="fill:url({web}/p.svg#g)"/></svg>'.encode()):
        with pytest.raises(InputError, match="outside resource"):
            render(svg, "x.svg", plan_of(), LIMITS)
    assert Recorder.hits == []


def test_svg_entities_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2")
    svg = (f'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file://{secret}">]>'
           '<svg xmlns="http://www.w3.org/2000/svg"><text>&x;</text></svg>').encode()
    with pytest.raises(InputError, match="entities"):
        render(svg, "x.svg", plan_of(), LIMITS)


def test_svg_internal_references_and_embedded_images_are_fine() -> None:
    svg = (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
           b'<defs><linearGradient id="g"><stop offset="0" stop-color="#00f"/></linearGradient>'
           b'</defs><rect width="10" height="10" fill="url(#g)"/></svg>')
    image = opened(render(svg, "x.svg", plan_of(), LIMITS))
    assert image.getpixel((5, 5)) == (0, 0, 255, 255)


@pytest.mark.parametrize("chain,grey", [
    ("auto_orient+resize=300+grayscale+autocontrast", True),
    ("grayscale", True),
    ("autocontrast+grayscale", False),  # autocontrast stretches each colour on its own
    ("thumbnail+grayscale", False),
    ("resize=300", False),
])
def test_jpeg_is_decoded_grey_only_when_colours_are_never_used(chain: str, grey: bool) -> None:
    plan = plan_of(chain)
    assert engine.greys_early(plan) is grey
    data = image_bytes("JPEG", (64, 48))
    assert imaging.decode(data, LIMITS, grey=engine.greys_early(plan)).canvas.image.mode == (
        "L" if grey else "RGB")
    # Grey from the decoder is the grey that grayscale would make.
    colour = imaging.decode(data, LIMITS).canvas.image.convert("L")
    direct = imaging.decode(data, LIMITS, grey=True).canvas.image
    diff = np.abs(np.asarray(colour, np.int16) - np.asarray(direct, np.int16))
    assert diff.max() <= 3


@pytest.mark.parametrize("fmt", ["jpeg", "png", "gif", "bmp", "tiff", "webp"])
@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA"])
def test_every_mode_can_be_written_in_every_format(fmt: str, mode: str) -> None:
    image = Image.new("RGBA", (16, 8), (255, 255, 255, 255))
    image.paste((0, 0, 0, 255), (0, 0, 8, 8))
    data = imaging.encode(Canvas(image.convert(mode)), fmt, {})
    with Image.open(io.BytesIO(data)) as result:
        grey = result.convert("RGBA").convert("L")
        assert grey.getpixel((2, 4)) < 40 and grey.getpixel((12, 4)) > 215


@pytest.mark.parametrize("chain,output,written", [
    (None, {}, 72),                         # the input's own DPI
    (None, {"dpi": 300}, 300),              # the recipe's output.dpi over the input's
    ("dpi=254", {"dpi": 300}, 254),         # a step (say a sub-folder's) over output.dpi
    ("resize=10mm,508", {"dpi": 300}, 508),  # physical sizing sets the DPI it sized with
])
def test_which_dpi_is_written(chain: str | None, output: dict[str, object], written: int) -> None:
    data = image_bytes("JPEG", (400, 300), dpi=(72, 72))
    rendered = render(data, "a.jpg", plan_of(chain, output={**output, "format": "png"}), LIMITS)
    assert opened(rendered).info["dpi"] == pytest.approx((written, written), abs=0.01)
    assert rendered.sidecar["output"]["dpi"] == written


def test_svg_links_and_scripts_are_not_outside_resources(web: str) -> None:
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
           f'<script>fetch("{web}/x")</script><a href="{web}/shop">'
           '<rect width="10" height="10" fill="#0f0"/></a></svg>').encode()
    image = opened(render(svg, "x.svg", plan_of(), LIMITS))
    assert image.getpixel((5, 5)) == (0, 255, 0, 255)
    assert Recorder.hits == []


def test_extras_come_after_the_main_output_with_their_own_names() -> None:
    data = image_bytes("JPEG", (400, 300))
    rendered = render(data, "a.jpg", plan_of("thumbnail+grayscale+png"), LIMITS)
    assert [(o.name, o.media_type) for o in rendered.outputs] == [
        ("a.png", "image/png"), ("a_thumb.jpg", "image/jpeg")]
    assert opened(rendered, 0).mode == "L"
    thumb = opened(rendered, 1)
    assert thumb.size == (256, 192) and thumb.mode == "RGB"  # made before grayscale
    assert rendered.sidecar["extras"] == [{"name": "a_thumb.jpg", "format": "jpeg",
                                           "size": len(rendered.outputs[1].data),
                                           "width": 256, "height": 192}]


@pytest.mark.parametrize("exif", [b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12",
                                  b"Exif\x00\x00II*\x00\xff\xff\xff\x7f", b"garbage"])
def test_damaged_exif_does_not_fail_the_picture(exif: bytes) -> None:
    data = image_bytes("JPEG", (40, 30), exif=exif)
    rendered = render(data, "a.jpg", plan_of("auto_orient+png"), LIMITS)
    assert opened(rendered).size == (40, 30)
    assert rendered.sidecar["exif"] == {}


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP"])
def test_damaged_files_give_an_input_error_or_a_picture_never_a_crash(fmt: str) -> None:
    rng = random.Random(fmt)
    original = image_bytes(fmt, (48, 32))
    plan = plan_of("auto_orient+resize=32+grayscale+png")
    outcomes = {"picture": 0, "refused": 0}
    for _ in range(150):
        data = bytearray(original)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        try:
            render(bytes(data), "x", plan, LIMITS)
            outcomes["picture"] += 1
        except InputError as exc:
            assert exc.message and "\n" not in exc.message
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0


def test_damaged_svgs_give_an_input_error_or_a_picture_never_a_crash() -> None:
    rng = random.Random("svg")
    original = (Path(__file__).parent.parent / "config" / "samples" / "badge.svg").read_bytes()
    spans = [m.span() for m in re.finditer(rb"\d+(\.\d+)?", original)]
    odd = [b"0", b"-5", b"1e309", b"nan", b"99999999", b"0.0000001", b"", b"1.2.3"]
    for _ in range(150):
        data = bytearray(original)
        if rng.random() < 0.5:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(32, 127)
        else:
            start, end = rng.choice(spans)
            data[start:end] = rng.choice(odd)
        try:
            render(bytes(data), "x.svg", plan_of("resize=64,upscale"), LIMITS)
        except InputError as exc:
            assert exc.message and "\n" not in exc.message


def test_output_name_fits_a_file_system() -> None:
    name = output_name("{stem}.{ext}", stem="é" * 200, ext="png", recipe="r", sha8="0",
                       width=1, height=1)
    assert name.endswith("é.png") and len(name.encode()) <= 240
