"""Engraving operations: `dither`, `threshold`, `dot_width`, `dpi`, `size`; 1-bit results.

A laser burns a dot or it does not, so photos become black-and-white dot patterns:
- error diffusion (floyd-steinberg, atkinson, jarvis, stucki, sierra, sierra-2,
  sierra-lite, burkes, stevenson-arce) spreads each pixel's rounding error onto its
  unvisited neighbours with the published weights (`KERNELS`), optionally along
  serpentine rows;
- ordered dithering compares with a threshold matrix: Bayer's of 2, 4 or 8, or a
  64x64 blue-noise mask made by Ulichney's void-and-cluster method;
- halftone draws round dots on a grid of a given cell size and angle.
With `linear` every method works on light (sRGB decoded to linear) rather than on
grey levels, so the share of black dots is the share of light the pixel lacks: sRGB
mid-grey (128) is only 22% of white's light and gives 78% black.

Error diffusion is sequential along a row, so a per-pixel Python loop would take
minutes on a 24-megapixel photo. The loop is compiled with numba on the first
dither of a process: numba is imported then (0.3 s), and the loop is compiled
(about 3 s, once per machine) or loaded from numba's on-disk cache (about 0.7 s).
The cache lives beside this file or in NUMBA_CACHE_DIR; with neither writable the
loop is compiled in memory by each process. Only the within-row part is sequential:
the error arriving from the rows above is added a whole row at a time, which keeps
the sequential part to two taps; Jarvis on 24 megapixels takes about 0.5 s.

The blue-noise mask is made on the first blue-noise dither of a process (about 0.1 s)
and kept in memory rather than shipped as a file: the code is its only source, and it
is the same on every machine (a fixed seed from numpy's frozen legacy generator, and
energies in whole numbers, so no rounding can change which pixel comes next).
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

# Error-diffusion kernels as published: rows from the current one down, an odd number of
# columns centred on the current pixel (the top row has weights at most two to the right
# of centre: the loop's sequential part takes those two taps).
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
    "sierra-2": (16, ((0, 0, 0, 4, 3),  # Frankie Sierra's two-row filter
                      (1, 2, 3, 2, 1))),
    "sierra-lite": (4, ((0, 0, 0, 2, 0),  # his "filter lite"
                        (0, 1, 1, 0, 0))),
    "burkes": (32, ((0, 0, 0, 8, 4),
                    (2, 4, 8, 4, 2))),
    # Stevenson and Arce, "Binary display of hexagonally sampled continuous-tone images",
    # JOSA A 2(7), 1985: made for a hexagonal grid, and used on a square one with every
    # other column empty, as in common implementations (ImageSharp, AForge.NET).
    "stevenson-arce": (200, ((0, 0, 0, 0, 0, 32, 0),
                             (12, 0, 26, 0, 30, 0, 16),
                             (0, 12, 0, 26, 0, 12, 0),
                             (5, 0, 12, 0, 12, 0, 5))),
}
DitherMethod = Literal["floyd-steinberg", "atkinson", "jarvis", "stucki", "sierra", "sierra-2",
                       "sierra-lite", "burkes", "stevenson-arce", "bayer", "blue-noise",
                       "halftone"]
METHODS: tuple[str, ...] = DitherMethod.__args__  # type: ignore[attr-defined]
ALIASES = {"fs": "floyd-steinberg", "floyd": "floyd-steinberg", "jjn": "jarvis",
           "jarvis-judice-ninke": "jarvis", "ordered": "bayer", "sierra-3": "sierra",
           "sierra2": "sierra-2", "two-row-sierra": "sierra-2", "sierra-two-row": "sierra-2",
           "sierralite": "sierra-lite", "filter-lite": "sierra-lite", "stevenson": "stevenson-arce",
           "bluenoise": "blue-noise", "void-and-cluster": "blue-noise"}
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


def tone_levels(linear: bool) -> npt.NDArray[np.float32]:
    """For each grey level 0-255: the level it is dithered as, its light when `linear`."""
    share = np.arange(256, dtype=np.float64) / 255
    if linear:  # the sRGB transfer function, decoded
        share = np.where(share <= 0.04045, share / 12.92, ((share + 0.055) / 1.055) ** 2.4)
    return (share * 255).astype(np.float32)


# Error diffusion --------------------------------------------------------------

def _diffuse(grey: Grey, tone: npt.NDArray[np.float32], weights: npt.NDArray[np.float32],
             serpentine: bool) -> Mask:
    """Error diffusion of `tone[grey]` with `weights` (rows x odd columns, centred); numba."""
    height, width = grey.shape
    rows, span = weights.shape
    centre = span // 2
    errors = np.zeros((rows, width + 2 * centre), np.float32)  # a ring of recent rows
    level = np.empty(width, np.float32)
    white = np.empty((height, width), np.bool_)
    right1, right2 = weights[0, centre + 1], weights[0, centre + 2]
    for y in range(height):
        for x in range(width):
            level[x] = tone[grey[y, x]]
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


Diffuser = Callable[[Grey, npt.NDArray[np.float32], npt.NDArray[np.float32], bool], Mask]


@functools.cache
def _compiled() -> Diffuser:
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
        kernel(np.zeros((2, 2), np.uint8), tone_levels(False), kernel_weights("floyd-steinberg"),
               False)
    return kernel


def kernel_weights(method: str) -> npt.NDArray[np.float32]:
    """The kernel of `method` as fractions of the error, rows x columns."""
    divisor, rows = KERNELS[method]
    return np.array(rows, np.float32) / np.float32(divisor)


def error_diffusion(grey: Grey, method: str, serpentine: bool = False,
                    linear: bool = False) -> Mask:
    """White pixels of `grey` dithered by the error-diffusion `method`, in light if `linear`."""
    return _compiled()(np.ascontiguousarray(grey), tone_levels(linear), kernel_weights(method),
                       serpentine)


# Ordered dithering and halftone ----------------------------------------------

def bayer_matrix(size: int) -> npt.NDArray[np.int64]:
    """The Bayer index matrix of `size` (a power of two): 0 .. size*size-1."""
    matrix = np.zeros((1, 1), np.int64)
    while matrix.shape[0] < size:
        matrix = np.block([[4 * matrix, 4 * matrix + 2], [4 * matrix + 3, 4 * matrix + 1]])
    return matrix


BLUE_NOISE_SIZE = 64
BLUE_NOISE_SIGMA = 1.5  # Ulichney's choice for the energy filter
BLUE_NOISE_SEED = 1
ENERGY_SCALE = 2**20  # the filter in whole numbers: sums are exact on every machine


@functools.cache
def blue_noise_matrix() -> npt.NDArray[np.int64]:
    """A 64x64 blue-noise index matrix (0 .. 4095) by void-and-cluster (Ulichney, 1993).

    Every pixel's energy is the sum of a Gaussian (on a torus) centred on each dot. From a
    random tenth of dots, the tightest cluster moves to the largest void until it stays;
    then dots are taken away from the tightest clusters (ranks below the start) and added
    in the largest voids (ranks above), so the dots of every rank below k are evenly spread.
    """
    size = BLUE_NOISE_SIZE
    count = size * size
    offset = np.minimum(np.arange(size), size - np.arange(size)).astype(np.float64)
    gauss = np.exp(-(offset[:, None] ** 2 + offset[None, :] ** 2) / (2 * BLUE_NOISE_SIGMA**2))
    tiled = np.tile(np.round(gauss * ENERGY_SCALE).astype(np.int64), (2, 2))

    def spread(pixel: int) -> npt.NDArray[np.int64]:
        y, x = divmod(pixel, size)
        return tiled[size - y:2 * size - y, size - x:2 * size - x].ravel()

    def tightest(energy: npt.NDArray[np.int64], dots: Mask) -> int:
        return int(np.argmax(np.where(dots, energy, -1)))

    def largest_void(energy: npt.NDArray[np.int64], dots: Mask) -> int:
        return int(np.argmin(np.where(dots, np.iinfo(np.int64).max, energy)))

    dots = np.zeros(count, np.bool_)
    dots[np.random.RandomState(BLUE_NOISE_SEED).permutation(count)[:count // 10]] = True
    energy = np.zeros(count, np.int64)
    for pixel in np.flatnonzero(dots).tolist():
        energy += spread(pixel)
    while True:
        cluster = tightest(energy, dots)
        dots[cluster] = False
        energy -= spread(cluster)
        void = largest_void(energy, dots)
        dots[void] = True
        energy += spread(void)
        if void == cluster:
            break
    ranks = np.empty(count, np.int64)
    fewer, fewer_energy = dots.copy(), energy.copy()
    for rank in range(int(dots.sum()) - 1, -1, -1):
        cluster = tightest(fewer_energy, fewer)
        fewer[cluster] = False
        fewer_energy -= spread(cluster)
        ranks[cluster] = rank
    for rank in range(int(dots.sum()), count):
        void = largest_void(energy, dots)
        dots[void] = True
        energy += spread(void)
        ranks[void] = rank
    return ranks.reshape(size, size)


def ordered(grey: Grey, matrix: npt.NDArray[np.int64], linear: bool = False) -> Mask:
    """White pixels of `grey` by ordered dithering with an index `matrix`, in light if `linear`."""
    thresholds = (matrix + 0.5) * (255.0 / matrix.size)
    # the darkest grey level that is dithered as more than each threshold: white from it up
    lowest_white = np.searchsorted(tone_levels(linear), thresholds, side="right").astype(np.int16)
    height, width = grey.shape
    rows, columns = matrix.shape
    reps = (-(-height // rows), -(-width // columns))
    return grey >= np.tile(lowest_white, reps)[:height, :width]


@functools.cache
def _spot_ranks(bins: int = 4096) -> npt.NDArray[np.float32]:
    """For a round-dot spot value (-1..1, in `bins` steps): the share of a cell below it."""
    u = (np.arange(512, dtype=np.float64) + 0.5) / 512
    spot = (np.cos(2 * np.pi * u)[:, None] + np.cos(2 * np.pi * u)[None, :]) / 2
    counts = np.bincount(((spot.ravel() + 1) / 2 * (bins - 1)).round().astype(np.int64),
                         minlength=bins)
    return (np.cumsum(counts) / spot.size).astype(np.float32)


def halftone(grey: Grey, cell: float, angle: float, linear: bool = False) -> Mask:
    """White pixels of `grey` as round black dots on a grid of `cell` pixels turned by `angle`."""
    height, width = grey.shape
    theta = math.radians(angle)
    freq = np.float32(2 * math.pi / cell)
    cos, sin = np.float32(math.cos(theta)), np.float32(math.sin(theta))
    ranks = _spot_ranks()
    shares = tone_levels(linear) / np.float32(255)
    x = (np.arange(width, dtype=np.float32) + 0.5)[None, :]
    white = np.empty((height, width), bool)
    for top in range(0, height, HALFTONE_ROWS):  # in bands: a few MB at a time
        band = slice(top, min(top + HALFTONE_ROWS, height))
        y = (np.arange(band.start, band.stop, dtype=np.float32) + 0.5)[:, None]
        spot = -np.cos(freq * (x * cos + y * sin))  # peaks (dot centres) in the middle of cells
        spot -= np.cos(freq * (y * cos - x * sin))
        index = ((spot + 2) * ((len(ranks) - 1) / 4)).round().astype(np.int32)
        # The darkest share (1 - level/255) of each cell, around its centre, is black.
        white[band] = ranks[index] <= shares[grey[band]]
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
        + "; or ordered: bayer, blue-noise; or halftone",
    )
    serpentine: bool = Field(
        False, description="error diffusion: scan every other row right to left (less worming)"
    )
    linear: bool = Field(
        False, description="dither light rather than grey levels (sRGB decoded to linear): "
        "darker midtones, sRGB 128 gives 78% black"
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


FLAGS = ("serpentine", "linear")


def parse_dither(args: list[str]) -> dict[str, Any]:
    """`jarvis`, `jarvis,serpentine,linear`, `bayer,4`, `halftone,6,45` (cell, angle)."""
    method, *rest = (word.strip() for arg in args for word in arg.split(","))
    out: dict[str, Any] = {"method": method}
    numbers: list[float | int] = []
    for word in rest:
        if word.lower() in FLAGS:
            out[word.lower()] = True
            continue
        try:
            number = float(word)
        except ValueError:
            raise ValueError(f"{word!r} is neither {' nor '.join(FLAGS)} nor a number") from None
        numbers.append(int(number) if number.is_integer() else number)
    if numbers:
        fields = ["cell", "angle"] if ALIASES.get(method, method) == "halftone" else ["size"]
        if len(numbers) > len(fields):
            raise ValueError(f"{method} takes at most {len(fields)} number(s): {', '.join(fields)}")
        out.update(zip(fields, numbers, strict=False))
    return out


@operation("dither", DitherParams, inline=parse_dither,
           inline_form="dither=METHOD[,serpentine][,linear] | dither=bayer,2|4|8 | "
           "dither=blue-noise | dither=halftone,CELL,ANGLE")
def dither(canvas: Canvas, p: DitherParams) -> Canvas:
    """Turn the image into black and white dots (1-bit): error diffusion, ordered or halftone."""
    grey = grey_levels(canvas.image)
    if p.method == "bayer":
        white = ordered(grey, bayer_matrix(p.size), p.linear)
    elif p.method == "blue-noise":
        white = ordered(grey, blue_noise_matrix(), p.linear)
    elif p.method == "halftone":
        white = halftone(grey, p.cell, p.angle, p.linear)
    else:
        white = error_diffusion(grey, p.method, p.serpentine, p.linear)
    return canvas.with_dots(one_bit(white), "dither", p)


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
    return canvas.with_dots(one_bit(white), "threshold", p).with_notes(threshold_level=level)


# dot_width ----------------------------------------------------------------------

def shorten_dark_runs(white: Mask, by: int) -> Mask:
    """`white` with every dark run along a row `by` pixels shorter, half from each end (the
    odd pixel from its end); a run of `by` pixels or fewer keeps one pixel, its middle one."""
    if by <= 0:
        return white
    height, width = white.shape
    dark = np.zeros((height, width + 2), np.bool_)  # a light pixel each side ends every run
    dark[:, 1:-1] = ~white
    flat = dark.ravel()
    change = np.diff(flat.view(np.int8))
    index: type[np.signedinteger[Any]] = np.int32 if flat.size < 2**31 else np.int64
    starts = np.flatnonzero(change == 1).astype(index) + 1  # int32 where it fits: twice as fast
    ends = np.flatnonzero(change == -1).astype(index) + 1  # one past the run's last pixel
    cut = np.minimum(by, ends - starts - 1)
    marks = np.zeros(flat.size, np.int8)
    marks[starts + cut // 2] = 1
    marks[ends - (cut - cut // 2)] = -1
    shortened = np.cumsum(marks, dtype=np.int8).astype(np.bool_).reshape(height, width + 2)
    return ~shortened[:, 1:-1]


class DotWidthParams(Params):
    width: LengthField = Field(description="the laser's dot width in mm (or cm, in), such as "
                               "0.1mm; rounded to whole pixels at the image's DPI")

    @model_validator(mode="after")
    def _physical(self) -> DotWidthParams:
        if self.width.unit == "px":
            raise ValueError(f"dot_width takes a width in mm, cm or in (such as 0.1mm), "
                             f"not {self.width}")
        return self


@operation("dot_width", DotWidthParams, inline_form="dot_width=WIDTH (dot_width=0.1mm)")
def dot_width(canvas: Canvas, p: DotWidthParams) -> Canvas:
    """Shorten each dark run along the rows by the laser's dot width (after dither/threshold)."""
    if canvas.image.mode != "1":
        raise RecipeError("dot_width works on black-and-white dots: put it after dither or "
                          "threshold")
    if not canvas.dpi:
        raise RecipeError(f"dot_width: the image has no DPI to turn {p.width} into pixels; "
                          "put a size or dpi step before it")
    pixels = math.floor(p.width.pixels(canvas.dpi[0]) + 0.5)
    white = shorten_dark_runs(np.asarray(canvas.image), pixels)
    return canvas.with_dots_changed(one_bit(white), "dot_width", p).with_notes(
        dot_width_pixels=pixels)


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
