"""EXIF, read one way everywhere: by the decoder, `auto_orient` and the `metadata` step.

`upright` turns a canvas as its EXIF orientation says, for the decoder and `auto_orient` alike.

EXIF is untrusted like the pixels: one that Pillow cannot parse cleanly (errors or
warnings) counts as absent, and the picture itself is still processed.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

from PIL import ExifTags, Image

from hotfolder.canvas import Canvas

# The few fields an operator cares about, by their name in the sidecar.
SUMMARY_FIELDS = {
    "make": ExifTags.Base.Make,
    "model": ExifTags.Base.Model,
    "software": ExifTags.Base.Software,
    "orientation": ExifTags.Base.Orientation,
    "datetime": ExifTags.Base.DateTime,
}


def read_exif(image: Image.Image, raw: bytes | None = None) -> Image.Exif | None:
    """The EXIF of `raw`, else the one `image` carries, parsed now; None when it is damaged."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if raw is None:
                carried = image.info.get("exif")
                raw = carried if isinstance(carried, bytes) else None
            if raw is None:
                exif = image.getexif()
            else:
                exif = Image.Exif()
                exif.load(raw)
            exif.get_ifd(ExifTags.IFD.Exif)
            exif.get_ifd(ExifTags.IFD.GPSInfo)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError):
        return None
    return None if caught else exif


def orientation(exif: Image.Exif | None) -> int:
    """The EXIF orientation (1 to 8); 1, upright, when there is none."""
    value = exif.get(ExifTags.Base.Orientation, 1) if exif else 1
    return value if isinstance(value, int) else 1


def without_orientation(raw: bytes) -> bytes:
    """EXIF bytes with the orientation tag removed (for pixels that are upright now)."""
    exif = Image.Exif()
    exif.load(raw)
    exif.pop(ExifTags.Base.Orientation, None)
    return exif.tobytes()


# EXIF orientation -> the turn that makes the stored pixels upright.
TURNS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}
SIDEWAYS = {5, 6, 7, 8}


def upright(canvas: Canvas, orientation: int) -> Canvas:
    """The canvas turned as EXIF `orientation` says, with that tag gone from its EXIF."""
    turn = TURNS.get(orientation)
    if turn is None:
        return canvas
    image = canvas.image.transpose(turn)
    carried = image.info.pop("exif", None)  # the stored orientation must not travel on
    raw = canvas.exif or carried
    exif = without_orientation(raw) if isinstance(raw, bytes) else None
    dpi = swapped_dpi(canvas) if orientation in SIDEWAYS else canvas.dpi
    return dataclasses.replace(canvas, image=image, exif=exif, dpi=dpi)


def swapped_dpi(canvas: Canvas) -> tuple[float, float] | None:
    """The canvas's DPI with the axes swapped, for an image turned on its side."""
    return (canvas.dpi[1], canvas.dpi[0]) if canvas.dpi else None


def exif_summary(exif: Image.Exif) -> dict[str, Any]:
    """The few EXIF fields an operator cares about, as plain JSON values."""
    out: dict[str, Any] = {}
    for key, tag in SUMMARY_FIELDS.items():
        value = exif.get(tag)
        if value not in (None, ""):
            out[key] = value if isinstance(value, int) else str(value).strip("\x00 ")
    taken = exif.get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.DateTimeOriginal)
    if taken:
        out["taken"] = str(taken).strip("\x00 ")
    if exif.get_ifd(ExifTags.IFD.GPSInfo):
        out["gps"] = True
    return out
