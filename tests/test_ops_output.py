"""Output steps: format/optimize settings, thumbnails as extra outputs, EXIF summaries."""

from __future__ import annotations

import pytest
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

from helpers import ramp
from hotfolder.canvas import Canvas
from hotfolder.errors import RecipeError
from ops_helpers import apply, pixels


def test_format_and_quality_become_output_settings() -> None:
    out = apply(ramp(), "jpeg=85")
    assert out.output == {"format": "jpeg", "quality": 85}
    assert apply(ramp(), "png").output == {"format": "png"}


def test_optimize_sets_encoder_settings() -> None:
    out = apply(ramp(), {"optimize": {"quality": 70, "progressive": True, "strip": False}})
    assert out.output == {"metadata": "keep", "quality": 70, "progressive": True}


# thumbnail -----------------------------------------------------------------------


def test_thumbnail_is_an_extra_output_and_leaves_the_main_image_alone() -> None:
    image = ramp((400, 200))
    out = apply(image, "thumbnail=100")
    assert out.image.size == (400, 200)
    assert (pixels(out.image) == pixels(image)).all()
    (extra,) = out.extras
    assert extra.suffix == "_thumb" and extra.format == "jpeg"
    assert extra.image.size == (100, 50)


def test_thumbnail_size_box_and_format() -> None:
    out = apply(ramp((400, 400)), "thumbnail=80x40,webp")
    assert out.extras[0].image.size == (40, 40)
    assert out.extras[0].format == "webp"


def test_thumbnail_default_is_256_and_never_enlarges() -> None:
    assert apply(ramp((1000, 500)), "thumbnail").extras[0].image.size == (256, 128)
    assert apply(ramp((100, 50)), "thumbnail").extras[0].image.size == (100, 50)


def test_thumbnail_of_a_transparent_image_is_png_with_alpha() -> None:
    out = apply(Image.new("RGBA", (64, 64), (255, 0, 0, 0)), "thumbnail=32")
    extra = out.extras[0]
    assert extra.format == "png" and extra.image.mode == "RGBA"
    assert pixels(extra.image)[0, 0, 3] == 0


@pytest.mark.parametrize(("mode", "expected"), [
    ("1", "L"), ("CMYK", "RGB"), ("I;16", "L"), ("P", "RGB"), ("LA", "LA"),
])
def test_thumbnail_of_awkward_modes_is_a_plain_preview(mode: str, expected: str) -> None:
    """Previews are L, LA, RGB or RGBA, so every viewer shows them."""
    out = apply(ramp((64, 32), "L").convert(mode), "thumbnail=16")
    assert out.extras[0].image.mode == expected
    assert out.extras[0].image.size == (16, 8)


def test_two_thumbnails_with_their_own_suffixes() -> None:
    out = apply(apply(ramp((400, 400)), "thumbnail=100"),
                {"thumbnail": {"width": 32, "suffix": "_icon"}})
    assert [(e.suffix, e.image.size) for e in out.extras] == [("_thumb", (100, 100)),
                                                              ("_icon", (32, 32))]


@pytest.mark.parametrize(("step", "message"), [
    ({"thumbnail": {"suffix": "../evil"}}, "suffix"),
    ("thumbnail=2", "width"),
    ({"thumbnail": {"format": "svg"}}, "format"),
])
def test_bad_thumbnails_are_recipe_errors(step: object, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        apply(ramp(), step)


# metadata ------------------------------------------------------------------------


def _camera_exif(gps: bool = True) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Canon"
    exif[ExifTags.Base.Model] = "EOS 5D"
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Software] = "Shop 2.1"
    photo = exif.get_ifd(ExifTags.IFD.Exif)
    photo[ExifTags.Base.DateTimeOriginal] = "2024:05:01 10:00:00"
    photo[ExifTags.Base.FNumber] = IFDRational(28, 10)
    photo[ExifTags.Base.ExposureTime] = IFDRational(1, 250)
    photo[ExifTags.Base.ISOSpeedRatings] = 400
    if gps:
        exif.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitudeRef] = "N"
    return exif.tobytes()


def test_metadata_puts_an_exif_summary_into_the_sidecar_notes() -> None:
    canvas = Canvas(ramp((40, 30)), exif=_camera_exif(), dpi=(300, 300))
    out = apply(canvas, "metadata")
    assert out.image is canvas.image
    assert out.notes["exif"] == {
        "make": "Canon", "model": "EOS 5D", "software": "Shop 2.1", "orientation": 6,
        "taken": "2024:05:01 10:00:00", "gps": True, "exposure_seconds": 0.004,
        "f_number": 2.8, "iso": 400, "width": 40, "height": 30, "dpi": [300.0, 300.0],
    }


def test_metadata_says_no_gps_and_reads_the_image_when_the_canvas_has_no_exif() -> None:
    image = ramp((20, 10))
    image.info["exif"] = _camera_exif(gps=False)
    summary = apply(image, "metadata").notes["exif"]
    assert summary["gps"] is False
    assert summary["model"] == "EOS 5D"


def test_metadata_of_an_image_without_exif_gives_its_size_only() -> None:
    assert apply(ramp((20, 10)), "metadata").notes["exif"] == {"gps": False, "width": 20,
                                                                "height": 10}


def test_metadata_after_auto_orient_reports_the_upright_image() -> None:
    """auto_orient resets the tag, so the summary shows no turn left to do and the new size."""
    canvas = Canvas(ramp((40, 30)), exif=_camera_exif())
    summary = apply(apply(canvas, "auto_orient"), "metadata").notes["exif"]
    assert summary.get("orientation", 1) == 1
    assert (summary["width"], summary["height"]) == (30, 40)
    assert summary["make"] == "Canon"
