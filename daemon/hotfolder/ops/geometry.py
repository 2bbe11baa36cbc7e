"""Geometry operations: auto_orient, resize, crop, trim, rotate, flip, mirror.

Sizes are lengths in px, mm, cm or in (`hotfolder.lengths`). Geometry keeps the
image's mode where Pillow can resample it (16-bit grey included); palette images
become RGB(A) first (resampling palette indexes would be meaningless) and 1-bit
images become L when resampled, so edges stay smooth rather than jagged.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Annotated, Any, Literal

from PIL import Image, ImageChops
from pydantic import BeforeValidator, Field, WithJsonSchema, model_validator

from hotfolder.canvas import Canvas
from hotfolder.errors import RecipeError
from hotfolder.exif import orientation, read_exif, swapped_dpi, upright
from hotfolder.lengths import LengthField, to_pixels
from hotfolder.modes import (
    RGBA,
    Color,
    colour_ready,
    fill_for,
    has_alpha,
    is_sixteen_bit,
    parse_color,
    unpalette,
)
from hotfolder.ops.registry import NoParams, Params, operation

RESAMPLE = Image.Resampling.LANCZOS
REDUCING_GAP = 3.0  # shrink by whole factors first: faster, indistinguishable at 3

Gravity = Literal["center", "north", "south", "east", "west",
                  "northeast", "northwest", "southeast", "southwest"]
GRAVITIES: tuple[str, ...] = Gravity.__args__  # type: ignore[attr-defined]


def _anchor(gravity: str) -> tuple[float, float]:
    """Where the kept or placed part sits, as fractions (0 left/top, 1 right/bottom)."""
    x = 1.0 if "east" in gravity else 0.0 if "west" in gravity else 0.5
    y = 0.0 if "north" in gravity else 1.0 if "south" in gravity else 0.5
    return x, y


def _dpi_of(canvas: Canvas, dpi: float | None) -> float | None:
    if dpi:
        return dpi
    return canvas.dpi[0] if canvas.dpi else None


# auto_orient ---------------------------------------------------------------


@operation("auto_orient")
def auto_orient(canvas: Canvas, p: NoParams) -> Canvas:
    """Turn the image upright as its EXIF orientation says, and reset that tag.

    Decoding already does this for every input, so in a recipe it changes nothing.
    """
    return upright(canvas, orientation(read_exif(canvas.image, canvas.exif)))


# resize --------------------------------------------------------------------

ResizeMode = Literal["fit", "fill", "stretch", "pad"]
RESIZE_MODES: tuple[str, ...] = ResizeMode.__args__  # type: ignore[attr-defined]
_SIZE_RE = re.compile(r"^([^x]*)x([^x]*)$")


def parse_resize(args: list[str]) -> dict[str, Any]:
    """`800x600,fill`, `1200` (1200x1200), `800x`, `100mmx50mm,fit,300`, then any order."""
    # after the size: a mode, `upscale`, a gravity, a DPI number and a pad colour
    if not args or not args[0].strip():
        raise ValueError("give a size, for example resize=800x600 or resize=1200")
    size, *rest = (a.strip() for a in args)
    out: dict[str, Any] = {}
    match = _SIZE_RE.match(size.lower())
    if match:
        if match.group(1):
            out["width"] = match.group(1)
        if match.group(2):
            out["height"] = match.group(2)
    else:
        out["width"] = out["height"] = size
    for word in rest:
        low = word.lower().removesuffix("dpi")
        if low in RESIZE_MODES:
            out["mode"] = low
        elif low == "upscale":
            out["upscale"] = True
        elif low in GRAVITIES:
            out["gravity"] = low
        elif re.fullmatch(r"\d+(\.\d*)?", low):
            out["dpi"] = low
        else:
            out["fill"] = _colour_word(
                word, "a mode (fit, fill, stretch, pad), a gravity (north...), a DPI, upscale"
            )
    return out


def _colour_word(word: str, others: str) -> str:
    """`word` if it names a colour, else a ValueError listing what else it could have been."""
    try:
        parse_color(word)
    except ValueError:
        raise ValueError(f"{word!r} is not {others} or a colour") from None
    return word


class ResizeParams(Params):
    """Target size (px, mm, cm, in), how to get there, and the DPI."""

    width: LengthField | None = Field(None, description="target width: px, mm, cm or in")
    height: LengthField | None = Field(None, description="target height: px, mm, cm or in")
    mode: ResizeMode = Field(
        "fit",
        description="fit: within the box; fill: cover it and crop; stretch: exactly; "
        "pad: fit, then fill the rest of the box",
    )
    dpi: float | None = Field(
        None, gt=0, description="for mm/cm/in, and written to the output; default: the image's"
    )
    upscale: bool = Field(False, description="allow enlarging smaller images")
    gravity: Gravity = Field("center", description="what fill keeps, where pad places the image")
    fill: Color | None = Field(
        None, description="pad colour; default white, or transparent when the image has alpha"
    )

    @model_validator(mode="after")
    def _check(self) -> ResizeParams:
        if self.width is None and self.height is None:
            raise ValueError("give a width, a height, or both")
        if self.mode != "fit" and (self.width is None or self.height is None):
            raise ValueError(f"mode {self.mode} needs both a width and a height")
        return self


def _fit_size(size: tuple[int, int], box: tuple[int | None, int | None],
              upscale: bool) -> tuple[int, int]:
    """The largest size of the same aspect ratio within `box` (None: unbounded)."""
    w, h = size
    scales = [b / s for b, s in ((box[0], w), (box[1], h)) if b is not None]
    scale = min(scales)
    if not upscale:
        scale = min(scale, 1.0)
    return max(1, round(w * scale)), max(1, round(h * scale))


def aspect_box(size: tuple[int, int], ratio: float,
               gravity: str) -> tuple[int, int, int, int]:
    """The largest (left, top, right, bottom) box of aspect `ratio` (w/h) in `size`."""
    w, h = size
    cw, ch = (w, max(1, round(w / ratio))) if w / h < ratio else (max(1, round(h * ratio)), h)
    cw, ch = min(cw, w), min(ch, h)
    ax, ay = _anchor(gravity)
    left, top = round((w - cw) * ax), round((h - ch) * ay)
    return left, top, left + cw, top + ch


def _resample(image: Image.Image, size: tuple[int, int],
              box: tuple[int, int, int, int] | None = None) -> Image.Image:
    """`image` (or its `box`) resampled to `size` with Lanczos; 1-bit images become L if scaled."""
    box = box or (0, 0, *image.size)
    if size == (box[2] - box[0], box[3] - box[1]):
        return image.crop(box)  # nothing to scale: the pixels and mode as they are
    if image.mode == "1":
        image = image.convert("L")
    return image.resize(size, RESAMPLE, box=box, reducing_gap=REDUCING_GAP)


def fit(image: Image.Image, box: tuple[int | None, int | None],
        upscale: bool = False) -> Image.Image:
    """The image scaled to fit within `box`, aspect ratio kept."""
    return _resample(image, _fit_size(image.size, box, upscale))


def pad(image: Image.Image, size: tuple[int, int], color: RGBA | None, gravity: str = "center",
        upscale: bool = False) -> Image.Image:
    """The image fitted within `size`, then placed on a `size` background of `color`."""
    image, value = fill_for(image, color)
    fitted = fit(image, size, upscale)
    background = Image.new(fitted.mode, size, value)
    ax, ay = _anchor(gravity)
    background.paste(fitted, (round((size[0] - fitted.width) * ax),
                              round((size[1] - fitted.height) * ay)))
    return background


def _fill_crop(image_size: tuple[int, int], size: tuple[int, int], gravity: str,
               upscale: bool) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """The part of the image that fill keeps, and the size it is scaled to."""
    box = aspect_box(image_size, size[0] / size[1], gravity)
    crop_size = (box[2] - box[0], box[3] - box[1])
    return box, size if upscale else _fit_size(size, crop_size, upscale=False)


def _stretch_size(image_size: tuple[int, int], size: tuple[int, int],
                  upscale: bool) -> tuple[int, int]:
    """Exactly `size`, or without upscale that shape at most the image's size."""
    return size if upscale else _fit_size(size, image_size, upscale=False)


def fill(image: Image.Image, size: tuple[int, int], gravity: str = "center",
         upscale: bool = False) -> Image.Image:
    """The image cropped to the aspect ratio of `size` (by gravity), then scaled to cover it."""
    box, target = _fill_crop(image.size, size, gravity, upscale)
    return _resample(image, target, box)


def stretch(image: Image.Image, size: tuple[int, int], upscale: bool = False) -> Image.Image:
    """The image scaled to exactly `size` (or, without upscale, that shape at most its size)."""
    return _resample(image, _stretch_size(image.size, size, upscale))


def resize_box(p: ResizeParams, dpi: float | None) -> tuple[int | None, int | None]:
    """The target width and height in pixels (None: not given) at the image's `dpi`."""
    dpi = p.dpi or dpi
    try:
        return (to_pixels(p.width, dpi) if p.width else None,
                to_pixels(p.height, dpi) if p.height else None)
    except ValueError as exc:
        raise RecipeError(f"resize: {exc}; the image has no DPI of its own") from None


def resized_size(p: ResizeParams, size: tuple[int, int], dpi: float | None) -> tuple[int, int]:
    """The size of the image that resize makes from one of `size` at `dpi`."""
    width, height = resize_box(p, dpi)
    if p.mode == "fit":
        return _fit_size(size, (width, height), p.upscale)
    assert width is not None and height is not None
    if p.mode == "pad":
        return width, height
    if p.mode == "fill":
        return _fill_crop(size, (width, height), p.gravity, p.upscale)[1]
    return _stretch_size(size, (width, height), p.upscale)


@operation("resize", ResizeParams, inline=parse_resize,
           inline_form="resize=WxH[,fit|fill|stretch|pad][,DPI][,upscale][,GRAVITY][,COLOUR]",
           output_size=resized_size)
def resize(canvas: Canvas, p: ResizeParams) -> Canvas:
    """Scale the image: fit within, fill (crop), stretch or pad to a size in px, mm or in."""
    dpi = _dpi_of(canvas, p.dpi)
    width, height = resize_box(p, dpi)
    image = unpalette(canvas.image)
    if p.mode == "fit":
        result = fit(image, (width, height), p.upscale)
    else:
        assert width is not None and height is not None
        if p.mode == "pad":
            result = pad(image, (width, height), p.fill, p.gravity, p.upscale)
        elif p.mode == "fill":
            result = fill(image, (width, height), p.gravity, p.upscale)
        else:
            result = stretch(image, (width, height), p.upscale)
    physical = any(length and length.unit != "px" for length in (p.width, p.height))
    new_dpi = (dpi, dpi) if dpi and (p.dpi or physical) else canvas.dpi
    return dataclasses.replace(canvas, image=result, dpi=new_dpi)


# crop and trim -----------------------------------------------------------------

_RATIO_RE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*[x:/]\s*(\d+(?:\.\d*)?)\s*$", re.IGNORECASE)


def parse_ratio(value: Any) -> float:
    """An aspect ratio (width / height) from `"16x9"` (a folder name Windows accepts),
    `"16:9"`, `"4/3"` or a number such as 1.5."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        ratio = float(value)
    else:
        match = _RATIO_RE.match(str(value))
        try:
            ratio = float(match.group(1)) / float(match.group(2)) if match else float(value)
        except (ValueError, ZeroDivisionError):
            raise ValueError(
                f"{value!r} is not an aspect ratio (write 16x9, 16:9 or 1.5)") from None
    if not ratio > 0:
        raise ValueError(f"{value!r}: an aspect ratio must be more than zero")
    return ratio


Ratio = Annotated[
    float,
    BeforeValidator(parse_ratio),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "number"}],
                    "description": "width:height, for example 16:9, or a number"}),
]


class CropParams(Params):
    """A box in pixels, or an aspect ratio and the gravity of the part kept."""

    box: tuple[int, int, int, int] | None = Field(
        None, description="x, y, width, height in pixels from the top-left corner"
    )
    aspect: Ratio | None = Field(None, description="keep the largest part of this aspect ratio")
    gravity: Gravity = Field("center", description="which part an aspect crop keeps")

    @model_validator(mode="after")
    def _one_way(self) -> CropParams:
        if (self.box is None) == (self.aspect is None):
            raise ValueError("give either a box (x,y,width,height) or an aspect ratio (16:9)")
        if self.box is not None and (self.box[2] <= 0 or self.box[3] <= 0 or min(self.box) < 0):
            raise ValueError("the box needs x, y of 0 or more and a width and height above 0")
        return self


def parse_crop(args: list[str]) -> dict[str, Any]:
    """`crop=16x9` (or 16:9), `crop=16x9,north`, `crop=X,Y,W,H`."""
    words = [a.strip().lower() for a in args]
    if len(words) == 4:
        return {"box": words}
    gravity = [w for w in words if w in GRAVITIES]
    aspect = [w for w in words if w not in GRAVITIES]
    if len(aspect) > 1 or len(gravity) > 1:
        raise ValueError("write crop=X,Y,WIDTH,HEIGHT or crop=RATIO,GRAVITY (crop=16x9,north)")
    return {"aspect": aspect[0] if aspect else None, "gravity": gravity[0] if gravity else "center"}


@operation("crop", CropParams, inline=parse_crop, inline_form="crop=X,Y,W,H | crop=16x9[,GRAVITY]")
def crop(canvas: Canvas, p: CropParams) -> Canvas:
    """Cut out a box in pixels, or the largest part of an aspect ratio placed by gravity."""
    image = canvas.image
    if p.aspect is not None:
        return canvas.with_image(image.crop(aspect_box(image.size, p.aspect, p.gravity)))
    assert p.box is not None
    x, y, w, h = p.box
    right, bottom = min(x + w, image.width), min(y + h, image.height)
    if x >= image.width or y >= image.height:
        raise RecipeError(
            f"crop: the box {x},{y},{w},{h} lies outside the {image.width} x {image.height} image"
        )
    return canvas.with_image(image.crop((x, y, right, bottom)))


class TrimParams(Params):
    """How different from the corner colour a pixel must be to count as content."""

    fuzz: float = Field(
        5.0, ge=0, le=100, description="percent a border pixel may differ from the corner colour"
    )


@operation("trim", TrimParams, inline_form="trim[=FUZZ%]")
def trim(canvas: Canvas, p: TrimParams) -> Canvas:
    """Cut away uniform borders: the colour of the top-left corner, within `fuzz` percent."""
    image = canvas.image
    work = colour_ready(image)
    corner = work.getpixel((0, 0))
    bands = ImageChops.difference(work, Image.new(work.mode, work.size, corner)).split()
    if isinstance(corner, tuple) and has_alpha(work) and corner[-1] == 0:
        bands = bands[-1:]  # a transparent border: only opacity tells content from border
    difference = functools.reduce(ImageChops.lighter, bands)
    limit = round(p.fuzz * 255 / 100)
    box = difference.point(lambda v: 255 if v > limit else 0).getbbox()
    if box is None:  # all border: nothing to keep but the image itself
        return canvas
    return canvas.with_image(image.crop(box))


# rotate, flip, mirror --------------------------------------------------------------

_QUARTER_TURNS = {90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180,
                  270: Image.Transpose.ROTATE_90}


class RotateParams(Params):
    """Angle clockwise, whether the image grows to keep its corners, and the fill colour."""

    angle: float = Field(description="degrees clockwise")
    expand: bool = Field(True, description="grow the image so no corner is cut off")
    fill: Color | None = Field(
        None, description="colour of the uncovered corners; default white, or transparent "
        "when the image has alpha"
    )


def parse_rotate(args: list[str]) -> dict[str, Any]:
    """`rotate=90`, `rotate=-12.5,black`, `rotate=30,crop` (keep the size, cut the corners)."""
    if not args or not args[0].strip():
        raise ValueError("give an angle in degrees, for example rotate=90")
    angle, *rest = (a.strip() for a in args)
    out: dict[str, Any] = {"angle": angle}
    for word in rest:
        if word.lower() in ("crop", "noexpand"):
            out["expand"] = False
        elif word.lower() == "expand":
            out["expand"] = True
        else:
            out["fill"] = _colour_word(word, "crop, expand")
    return out


def _is_quarter_turn(angle: float, p: RotateParams, size: tuple[int, int]) -> bool:
    """True when the turn is a lossless transpose (90, 180 or 270 degrees, all pixels kept)."""
    return angle in _QUARTER_TURNS and (p.expand or angle == 180 or size[0] == size[1])


def rotated_size(p: RotateParams, size: tuple[int, int], dpi: float | None) -> tuple[int, int]:
    """The size of the image that rotate makes from one of `size` (as Pillow computes it)."""
    angle = p.angle % 360
    width, height = size
    if _is_quarter_turn(angle, p, size):
        return size if angle == 180 else (height, width)
    if not p.expand or angle == 0:
        return size
    radians = math.radians(angle)
    cos, sin = round(math.cos(radians), 15), round(math.sin(radians), 15)
    xs, ys = [], []
    for x, y in ((0, 0), (width, 0), (width, height), (0, height)):
        dx, dy = x - width / 2, y - height / 2
        xs.append(cos * dx + sin * dy + width / 2)
        ys.append(-sin * dx + cos * dy + height / 2)
    return (math.ceil(max(xs)) - math.floor(min(xs)),
            math.ceil(max(ys)) - math.floor(min(ys)))


@operation("rotate", RotateParams, inline=parse_rotate,
           inline_form="rotate=DEGREES[,crop][,COLOUR]", output_size=rotated_size)
def rotate(canvas: Canvas, p: RotateParams) -> Canvas:
    """Turn the image clockwise by any angle; the uncovered corners get the fill colour."""
    angle = p.angle % 360
    image = canvas.image
    if angle == 0:
        return canvas
    if _is_quarter_turn(angle, p, image.size):
        turned = image.transpose(_QUARTER_TURNS[int(angle)])
        return dataclasses.replace(
            canvas, image=turned, dpi=canvas.dpi if angle == 180 else swapped_dpi(canvas)
        )
    image, value = fill_for(image, p.fill)
    mode = image.mode
    if is_sixteen_bit(image):  # Pillow interpolates I;16 as bytes: rotate as 32-bit I
        image = image.convert("I")
    turned = image.rotate(-angle, Image.Resampling.BICUBIC, expand=p.expand, fillcolor=value)
    return canvas.with_image(turned.convert(mode) if turned.mode != mode else turned)


@operation("flip")
def flip(canvas: Canvas, p: NoParams) -> Canvas:
    """Turn the image upside down (top to bottom)."""
    return canvas.with_image(canvas.image.transpose(Image.Transpose.FLIP_TOP_BOTTOM))


@operation("mirror")
def mirror(canvas: Canvas, p: NoParams) -> Canvas:
    """Swap left and right, as in a mirror (for engraving on the back of glass)."""
    return canvas.with_image(canvas.image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
