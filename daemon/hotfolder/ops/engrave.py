"""Engraving operations: `dither`, `threshold`, `dpi` and `size`; their results are 1-bit images.

A laser burns a dot or it does not, so photos become black-and-white dot patterns:
- error diffusion (floyd-steinberg, atkinson, jarvis, stucki, sierra, burkes) spreads
  each pixel's rounding error onto its unvisited neighbours with the published
  weights (`KERNELS`), optionally along serpentine rows;
- ordered dithering compares with a Bayer matrix of 2, 4 or 8;
- halftone draws round dots on a grid of a given cell size and angle.

Error diffusion is sequential along a row, so a per-pixel Python loop would take
minutes on a 24-megapixel photo. The loop is compiled with numba on the first
dither of a process: numba is imported then (0.3 s), and the loop is compiled
(about 3 s, once per machine) or loaded from numba's on-disk cache (about 0.7 s).
The cache lives beside this file or in NUMBA_CACHE_DIR; with neither writable the
loop is compiled in memory by each process. Only the within-row part is sequential:
the error arriving from the rows above is added a whole row at a time, which keeps
the sequential part to two taps; Jarvis on 24 megapixels takes about 0.5 s.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
from collections.abc import Callable
from typing import Annotated, Any, Literal

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image
from pydantic import BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from hotfolder import memory
from hotfolder.canvas import Canvas
from hotfolder.errors import RecipeError
from hotfolder.lengths import LengthField
from hotfolder.modes import colour_ready, has_alpha
from hotfolder.ops.geometry import ResizeParams, parse_resize, resize, resized_size
from hotfolder.ops.registry import Params, operation

Grey = npt.NDArray[np.uint8]
Mask = npt.NDArray[np.bool_]

# Error-diffusion kernels as published: rows from the current one down, five columns
# centred on the current pixel (the first three entries of the top row are always 0).
KERNELS: dict[str, tuple[int, tuple[tuple[int, ...], ...]]] = {
    "floyd-steinberg": (16, ((0, 0, 0, 7, 0),
                             (0, 3, 5, 1, 0))),
    "atkinson": (8, ((0, 0, 0, 1, 1),  # diffuses 6/8 of the error on purpose
                     (0, 1, 1, 1, 0),
                     (0, 0, 1, 0, 0))),
    "jarvis": (48, ((0, 0, 0, 7, 5),
                    (3, 5, 7, 5, 3),
                    (1, 3, 5, 3, 1))),
    "stucki": (42, ((0, 0, 0, 8, 4),
                    (2, 4, 8, 4, 2),
                    (1, 2, 4, 2, 1))),
    "sierra": (32, ((0, 0, 0, 5, 3),
                    (2, 4, 5, 4, 2),
                    (0, 2, 3, 2, 0))),
    "burkes": (32, ((0, 0, 0, 8, 4),
                    (2, 4, 8, 4, 2))),
}
DitherMethod = Literal["floyd-steinberg", "atkinson", "jarvis", "stucki", "sierra", "burkes",
                       "bayer", "halftone"]
METHODS: tuple[str, ...] = DitherMethod.__args__  # type: ignore[attr-defined]
ALIASES = {"fs": "floyd-steinberg", "floyd": "floyd-steinberg", "jjn": "jarvis",
           "jarvis-judice-ninke": "jarvis", "ordered": "bayer"}
MID = 127.5  # levels above it round to white
HALFTONE_ROWS = 256


# Grey levels and 1-bit images ----------------------------------------------

def flatten(image: Image.Image, color: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """The image placed on a solid `color` where it is transparent (L or RGB, no alpha)."""
    image = colour_ready(image)
    if not has_alpha(image):
        return image
    base_mode = image.mode[:-1]
    background = Image.new("RGB", image.size, color).convert(base_mode)
    background.paste(image.convert(base_mode), mask=image.getchannel("A"))
    return background


def grey_levels(image: Image.Image) -> Grey:
    """The image as an array of 8-bit grey levels; transparent parts count as white."""
    return np.asarray(flatten(image).convert("L"))


def one_bit(white: Mask) -> Image.Image:
    """A true 1-bit image (mode "1") from a mask of white pixels."""
    return Image.fromarray(np.ascontiguousarray(white))


# Error diffusion --------------------------------------------------------------

def _diffuse(grey: Grey, weights: npt.NDArray[np.float32], serpentine: bool) -> Mask:
    """Error diffusion of `grey` with `weights` (rows x 5, centred); compiled by numba."""
    height, width = grey.shape
    rows, span = weights.shape
    centre = span // 2
    errors = np.zeros((rows, width + 2 * centre), np.float32)  # a ring of recent rows
    level = np.empty(width, np.float32)
    white = np.empty((height, width), np.bool_)
    right1, right2 = weights[0, centre + 1], weights[0, centre + 2]
    for y in range(height):
        for x in range(width):
            level[x] = grey[y, x]
        for dy in range(1, min(rows, y + 1)):  # error arriving from the rows above, whole rows
            source = y - dy
            src = errors[source % rows]
            flip = serpentine and source % 2 == 1
            for i in range(span):
                weight = weights[dy, i]
                if weight != 0:
                    start = centre + (i - centre if flip else centre - i)
                    for x in range(width):
                        level[x] += weight * src[start + x]
        cur = errors[y % rows]
        step = -1 if serpentine and y % 2 == 1 else 1
        x = width - 1 if step < 0 else 0
        last = np.float32(0.0)
        before = np.float32(0.0)
        for _ in range(width):  # within the row: sequential
            value = level[x] + right1 * last + right2 * before
            on = value > MID
            white[y, x] = on
            error = value - np.float32(255.0) if on else value
            cur[centre + x] = error
            before = last
            last = error
            x += step
    return white


@functools.cache
def _compiled() -> Callable[[Grey, npt.NDArray[np.float32], bool], Mask]:
    """The error-diffusion loop compiled by numba, cached on disk when a folder allows.

    It is loaded and compiled outside the worker's memory cap: numba loads a BLAS library
    that retries a failed allocation for ever, which under the cap would hang the job.
    """
    with memory.uncapped():
        import numba  # noqa: PLC0415  (0.3 s to import: only when a dither needs it)

        try:
            kernel = numba.njit(cache=True, nogil=True)(_diffuse)
        except RuntimeError:  # no writable cache folder: compile in memory (about 1 s per start)
            kernel = numba.njit(nogil=True)(_diffuse)
        kernel(np.zeros((2, 2), np.uint8), kernel_weights("floyd-steinberg"), False)
    return kernel


def kernel_weights(method: str) -> npt.NDArray[np.float32]:
    """The kernel of `method` as fractions of the error, rows x 5."""
    divisor, rows = KERNELS[method]
    return np.array(rows, np.float32) / np.float32(divisor)


def error_diffusion(grey: Grey, method: str, serpentine: bool = False) -> Mask:
    """White pixels of `grey` dithered by the error-diffusion `method`."""
    return _compiled()(np.ascontiguousarray(grey), kernel_weights(method), serpentine)


# Ordered dithering and halftone ----------------------------------------------

def bayer_matrix(size: int) -> npt.NDArray[np.int64]:
    """The Bayer index matrix of `size` (a power of two): 0 .. size*size-1."""
    matrix = np.zeros((1, 1), np.int64)
    while matrix.shape[0] < size:
        matrix = np.block([[4 * matrix, 4 * matrix + 2], [4 * matrix + 3, 4 * matrix + 1]])
    return matrix


def bayer(grey: Grey, size: int) -> Mask:
    """White pixels of `grey` by ordered dithering with the Bayer matrix of `size`."""
    levels = ((bayer_matrix(size) + 0.5) * (255.0 / size**2)).astype(np.float32)
    height, width = grey.shape
    reps = (-(-height // size), -(-width // size))
    return grey > np.tile(levels, reps)[:height, :width]


@functools.cache
def _spot_ranks(bins: int = 4096) -> npt.NDArray[np.float32]:
    """For a round-dot spot value (-1..1, in `bins` steps): the share of a cell below it."""
    u = (np.arange(512, dtype=np.float64) + 0.5) / 512
    spot = (np.cos(2 * np.pi * u)[:, None] + np.cos(2 * np.pi * u)[None, :]) / 2
    counts = np.bincount(((spot.ravel() + 1) / 2 * (bins - 1)).round().astype(np.int64),
                         minlength=bins)
    return (np.cumsum(counts) / spot.size).astype(np.float32)


def halftone(grey: Grey, cell: float, angle: float) -> Mask:
    """White pixels of `grey` as round black dots on a grid of `cell` pixels turned by `angle`."""
    height, width = grey.shape
    theta = math.radians(angle)
    freq = np.float32(2 * math.pi / cell)
    cos, sin = np.float32(math.cos(theta)), np.float32(math.sin(theta))
    ranks = _spot_ranks()
    x = (np.arange(width, dtype=np.float32) + 0.5)[None, :]
    white = np.empty((height, width), bool)
    for top in range(0, height, HALFTONE_ROWS):  # in bands: a few MB at a time
        band = slice(top, min(top + HALFTONE_ROWS, height))
        y = (np.arange(band.start, band.stop, dtype=np.float32) + 0.5)[:, None]
        spot = -np.cos(freq * (x * cos + y * sin))  # peaks (dot centres) in the middle of cells
        spot -= np.cos(freq * (y * cos - x * sin))
        index = ((spot + 2) * ((len(ranks) - 1) / 4)).round().astype(np.int32)
        # The darkest share (1 - grey/255) of each cell, around its centre, is black.
        white[band] = ranks[index] <= grey[band].astype(np.float32) / 255
    return white


# dither -------------------------------------------------------------------------

def _method(value: Any) -> Any:
    """A dither method from its name, its aliases or a near spelling; else a plain error."""
    word = str(value).strip().lower().replace("_", "-").replace(" ", "-")
    word = ALIASES.get(word, word)
    if word in METHODS:
        return word
    close = difflib.get_close_matches(word, METHODS, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise PydanticCustomError(
        "dither_method",
        "unknown dither method {method}{hint}; known: {known}",
        {"method": repr(value), "hint": hint, "known": ", ".join(METHODS)},
    )


class DitherParams(Params):
    method: Annotated[DitherMethod, BeforeValidator(_method)] = Field(
        "floyd-steinberg", description="error diffusion: " + ", ".join(KERNELS)
        + "; or bayer (ordered) or halftone",
    )
    serpentine: bool = Field(
        False, description="error diffusion: scan every other row right to left (less worming)"
    )
    size: Literal[2, 4, 8] = Field(8, description="bayer: matrix size 2, 4 or 8")
    cell: float = Field(8.0, ge=2, le=256, description="halftone: dot spacing in pixels")
    angle: float = Field(45.0, ge=-360, le=360, description="halftone: screen angle in degrees")

    @model_validator(mode="after")
    def _applies(self) -> DitherParams:
        given = self.model_fields_set
        for key, methods in (("serpentine", tuple(KERNELS)), ("size", ("bayer",)),
                             ("cell", ("halftone",)), ("angle", ("halftone",))):
            if key in given and self.method not in methods:
                raise ValueError(f"{key} does not apply to {self.method}")
        return self


def parse_dither(args: list[str]) -> dict[str, Any]:
    """`jarvis`, `jarvis,serpentine`, `bayer,4`, `halftone,6,45` (cell, angle)."""
    method, *rest = (word.strip() for arg in args for word in arg.split(","))
    out: dict[str, Any] = {"method": method}
    numbers: list[float | int] = []
    for word in rest:
        if word.lower() == "serpentine":
            out["serpentine"] = True
            continue
        try:
            number = float(word)
        except ValueError:
            raise ValueError(f"{word!r} is neither serpentine nor a number") from None
        numbers.append(int(number) if number.is_integer() else number)
    if numbers:
        fields = ["cell", "angle"] if ALIASES.get(method, method) == "halftone" else ["size"]
        if len(numbers) > len(fields):
            raise ValueError(f"{method} takes at most {len(fields)} number(s): {', '.join(fields)}")
        out.update(zip(fields, numbers, strict=False))
    return out


@operation("dither", DitherParams, inline=parse_dither,
           inline_form="dither=METHOD[,serpentine] | dither=bayer,2|4|8 | "
           "dither=halftone,CELL,ANGLE")
def dither(canvas: Canvas, p: DitherParams) -> Canvas:
    """Turn the image into black and white dots (1-bit): error diffusion, Bayer or halftone."""
    grey = grey_levels(canvas.image)
    if p.method == "bayer":
        white = bayer(grey, p.size)
    elif p.method == "halftone":
        white = halftone(grey, p.cell, p.angle)
    else:
        white = error_diffusion(grey, p.method, p.serpentine)
    return canvas.with_image(one_bit(white))


# threshold ----------------------------------------------------------------------

Level = int | Literal["otsu"]


def _level(value: Any) -> Any:
    """`otsu` (any case) or a whole grey level 0-255; else a plain error."""
    word = str(value).strip().lower()
    if word == "otsu":
        return word
    if word.isdigit() and int(word) <= 255:
        return int(word)
    raise PydanticCustomError(
        "threshold_level", "a threshold level is a grey level from 0 to 255, or otsu; not {value}",
        {"value": repr(value)},
    )


LevelField = Annotated[Level, BeforeValidator(_level), Field(
    description="grey level 0-255 above which a pixel is white, or otsu (chosen from the image)",
)]


def otsu_level(grey: Grey) -> int:
    """The grey level that best separates dark from light (Otsu's method)."""
    level, _ = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return int(level)


def binarize(grey: Grey, level: Level) -> tuple[Mask, int]:
    """White pixels of `grey` above `level` (or Otsu's level), and the level used."""
    value = otsu_level(grey) if level == "otsu" else level
    return grey > value, value


class ThresholdParams(Params):
    level: LevelField = "otsu"


@operation("threshold", ThresholdParams, inline_form="threshold | threshold=LEVEL | threshold=otsu")
def threshold(canvas: Canvas, p: ThresholdParams) -> Canvas:
    """Make the image black and white (1-bit) at a fixed grey level or Otsu's."""
    white, level = binarize(grey_levels(canvas.image), p.level)
    return canvas.with_image(one_bit(white)).with_notes(threshold_level=level)


# dpi and size ---------------------------------------------------------------------

MAX_DPI = 100_000


def _dpi(value: Any) -> float:
    """Dots per inch from `300`, `"300"` or `"300dpi"`; above zero, else a plain error."""
    text = str(value).strip().lower().removesuffix("dpi").strip()
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if isinstance(value, bool) or not 0 < number <= MAX_DPI:
        raise PydanticCustomError(
            "dpi", "a DPI is a number of dots per inch above 0 (such as 300), not {value}",
            {"value": repr(value)},
        )
    return number


class DpiParams(Params):
    dpi: Annotated[float, BeforeValidator(_dpi)] = Field(
        description="dots per inch written into the file"
    )


@operation("dpi", DpiParams, inline_form="dpi=300")
def set_dpi(canvas: Canvas, p: DpiParams) -> Canvas:
    """Set the resolution written into the file; the pixels stay as they are."""
    return dataclasses.replace(canvas, dpi=(p.dpi, p.dpi))


class SizeParams(ResizeParams):
    width: LengthField | None = Field(None, description="target width in mm, cm or in")
    height: LengthField | None = Field(None, description="target height in mm, cm or in")
    upscale: bool = Field(True, description="enlarge smaller images to reach the size")

    @model_validator(mode="after")
    def _physical(self) -> SizeParams:
        for length in (self.width, self.height):
            if length is not None and length.unit == "px":
                raise ValueError(
                    f"size takes lengths in mm, cm or in (not {length}); for pixels use resize"
                )
        return self


def _need_dpi(p: SizeParams, dpi: object) -> None:
    """A RecipeError when neither the step nor the image gives a DPI."""
    if not p.dpi and not dpi:
        raise RecipeError("size: give a dpi (for example size: {width: 80mm, dpi: 300}); "
                          "the image has no DPI of its own")


def sized_size(p: SizeParams, image_size: tuple[int, int], dpi: float | None) -> tuple[int, int]:
    """The size of the image that size makes from one of `image_size` at `dpi`."""
    _need_dpi(p, dpi)
    return resized_size(p, image_size, dpi)


@operation("size", SizeParams, inline=parse_resize,
           inline_form="size=WIDTHxHEIGHT,DPI (80mmx60mm,300; 80mmx,318 for a width only)",
           output_size=sized_size)
def size(canvas: Canvas, p: SizeParams) -> Canvas:
    """Scale to a physical size in mm, cm or in at a DPI (enlarging if needed), and set that DPI."""
    _need_dpi(p, canvas.dpi)
    return resize(canvas, p)
