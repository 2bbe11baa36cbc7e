"""Output steps: `format` (also the bare words `png`, `jpeg=85`...), `optimize`, `thumbnail`
(an extra small output beside the main one) and `metadata` (an EXIF summary for the sidecar).
"""

from __future__ import annotations

import re
from typing import Any, Literal, get_args

from PIL import ExifTags, Image
from pydantic import Field, field_validator

from hotfolder.canvas import Canvas, Extra
from hotfolder.exif import exif_summary, read_exif
from hotfolder.formats import WORDS, FormatName
from hotfolder.modes import colour_ready, has_alpha
from hotfolder.ops.geometry import fit
from hotfolder.ops.registry import NoParams, Params, operation


class FormatParams(Params):
    format: FormatName
    quality: int | None = Field(None, ge=1, le=100)


@operation("format", FormatParams, inline_form="format=png | png | jpeg=QUALITY | webp=QUALITY")
def to_format(canvas: Canvas, p: FormatParams) -> Canvas:
    """Write the result in another format (and quality for JPEG/WebP)."""
    settings: dict[str, object] = {"format": p.format}
    if p.quality is not None:
        settings["quality"] = p.quality
    return canvas.with_output(**settings)


class OptimizeParams(Params):
    """Encoder settings: each one given replaces the recipe's `output:` value."""

    quality: int | None = Field(None, ge=1, le=100, description="JPEG/WebP quality")
    progressive: bool | None = Field(None, description="progressive JPEG")
    compression: int | None = Field(None, ge=0, le=9, description="PNG zlib level")
    strip: bool | None = Field(
        None, description="true: output.metadata strip, false: keep; unset: output.metadata"
    )


@operation("optimize", OptimizeParams)
def optimize(canvas: Canvas, p: OptimizeParams) -> Canvas:
    """Tune the encoder: quality, progressive JPEG, PNG compression level, metadata strip."""
    settings: dict[str, object] = {
        key: value for key in ("quality", "progressive", "compression")
        if (value := getattr(p, key)) is not None
    }
    if p.strip is not None:
        settings["metadata"] = "strip" if p.strip else "keep"
    return canvas.with_output(**settings)


ThumbnailFormat = Literal["jpeg", "png", "webp", "gif"]
THUMBNAIL_FORMATS: tuple[str, ...] = get_args(ThumbnailFormat)


class ThumbnailParams(Params):
    """Largest size, format and name suffix of the thumbnail."""

    width: int = Field(256, ge=8, le=4096, description="largest width in pixels")
    height: int | None = Field(None, ge=8, le=4096, description="largest height; default: width")
    format: ThumbnailFormat | None = Field(
        None, description="default: png for images with transparency, else jpeg"
    )
    suffix: str = Field("_thumb", description="added to the output's name: photo_thumb.jpg")

    @field_validator("suffix")
    @classmethod
    def _safe_suffix(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", value):
            raise ValueError("use 1 to 40 letters, digits, '_', '-' or '.'")
        return value


def parse_thumbnail(args: list[str]) -> dict[str, Any]:
    """`thumbnail=256`, `thumbnail=320x240`, `thumbnail=256,png`."""
    out: dict[str, Any] = {}
    for word in (a.strip().lower() for a in args if a.strip()):
        if WORDS.get(word) in THUMBNAIL_FORMATS:
            out["format"] = WORDS[word]
        elif "x" in word:
            out["width"], _, out["height"] = word.partition("x")
        else:
            out["width"] = word
    return out


@operation("thumbnail", ThumbnailParams, inline=parse_thumbnail,
           inline_form="thumbnail[=SIZE|WxH][,jpeg|png|webp|gif]")
def thumbnail(canvas: Canvas, p: ThumbnailParams) -> Canvas:
    """Add a small copy as an extra output (NAME_thumb.jpg); the main image is unchanged."""
    image = fit(colour_ready(canvas.image), (p.width, p.height or p.width))
    fmt = p.format or ("png" if has_alpha(image) else "jpeg")
    return canvas.with_extra(Extra(suffix=p.suffix, image=image, format=fmt))


EXIF_DETAILS = {
    "lens": ExifTags.Base.LensModel,
    "exposure_seconds": ExifTags.Base.ExposureTime,
    "f_number": ExifTags.Base.FNumber,
    "iso": ExifTags.Base.ISOSpeedRatings,
    "focal_length_mm": ExifTags.Base.FocalLength,
}


def _plain(value: Any) -> Any:
    """An EXIF value as JSON: numbers as int/float, text without padding."""
    if isinstance(value, tuple):
        value = value[0] if value else None
    if value is None or isinstance(value, int):
        return value
    try:
        return round(float(value), 6)
    except (TypeError, ValueError, ZeroDivisionError):
        return str(value).strip("\x00 ") or None


def exif_details(canvas: Canvas) -> dict[str, Any]:
    """The EXIF summary of the canvas: camera, dates, orientation, GPS yes/no, exposure, size."""
    exif = read_exif(canvas.image, canvas.exif) or Image.Exif()
    summary = exif_summary(exif)
    summary["gps"] = bool(summary.get("gps"))
    photo = exif.get_ifd(ExifTags.IFD.Exif)
    for key, tag in EXIF_DETAILS.items():
        value = _plain(photo.get(tag))
        if value is not None:
            summary[key] = value
    summary["width"], summary["height"] = canvas.image.size
    if canvas.dpi:
        summary["dpi"] = [round(float(d), 3) for d in canvas.dpi]
    return summary


@operation("metadata", NoParams)
def metadata(canvas: Canvas, p: NoParams) -> Canvas:
    """Record an EXIF summary (camera, date taken, orientation, GPS yes/no...) in the sidecar."""
    return canvas.with_notes(exif=exif_details(canvas))
