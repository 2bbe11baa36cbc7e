"""Colour operations: grayscale, invert, autocontrast, equalize (CLAHE), adjust, levels, curve,
sharpen.

All of them leave alpha untouched and work on L or RGB (see `modes.colour_ready`):
palette images become RGB(A), 1-bit images L, CMYK RGB, and 16-bit grey 8-bit L
(scaled). Grey images stay grey.
"""

from __future__ import annotations

from typing import Annotated, Any

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from pydantic import BeforeValidator, Field, model_validator

from hotfolder.canvas import Canvas
from hotfolder.modes import has_alpha, is_grey, on_colour, unpalette
from hotfolder.ops.registry import NoParams, Params, operation


@operation("grayscale")
def grayscale(canvas: Canvas, p: NoParams) -> Canvas:
    """Convert to grey (L, or LA to keep alpha); grey images (1, L, 16-bit) stay as they are."""
    image = canvas.image
    if is_grey(image) and "transparency" not in image.info:
        return canvas
    image = unpalette(image)
    return canvas.with_image(image.convert("LA" if has_alpha(image) else "L"))


class AutocontrastParams(Params):
    """How much of the darkest and lightest to ignore, and whether hues are kept."""

    cutoff: float = Field(0.0, ge=0, lt=50, description="percent of darkest/lightest to ignore")
    preserve_tone: bool = Field(False, description="stretch lightness only, keep the hues")


def parse_autocontrast(args: list[str]) -> dict[str, Any]:
    """`autocontrast=2` (cutoff percent), `autocontrast=2,tone` (keep hues)."""
    out: dict[str, Any] = {}
    for word in (a.strip().lower() for a in args):
        if word in ("tone", "preserve_tone"):
            out["preserve_tone"] = True
        else:
            out["cutoff"] = word.removesuffix("%")
    return out


@operation("autocontrast", AutocontrastParams, inline=parse_autocontrast,
           inline_form="autocontrast[=CUTOFF%][,tone]")
def autocontrast(canvas: Canvas, p: AutocontrastParams) -> Canvas:
    """Stretch the levels so the darkest become black and the lightest white."""
    return canvas.with_image(on_colour(canvas.image, lambda im: ImageOps.autocontrast(
        im, cutoff=p.cutoff, preserve_tone=p.preserve_tone)))


@operation("invert")
def invert(canvas: Canvas, p: NoParams) -> Canvas:
    """Make a negative: black becomes white; alpha is kept, 1-bit images stay 1-bit."""
    image = canvas.image
    if image.mode == "1":
        return canvas.with_image(ImageOps.invert(image))
    return canvas.with_image(on_colour(image, ImageOps.invert))


class AdjustParams(Params):
    """Factors for brightness, contrast, saturation and gamma; 1 leaves each unchanged."""

    brightness: float = Field(1.0, ge=0, description="1 unchanged, 0 black, 2 twice as bright")
    contrast: float = Field(1.0, ge=0, description="1 unchanged, 0 flat grey, above 1 more")
    saturation: float = Field(1.0, ge=0, description="1 unchanged, 0 grey, above 1 more vivid")
    gamma: float = Field(1.0, gt=0, description="1 unchanged, above 1 lighter midtones")


def levels_table(black: float, white: float, gamma: float) -> npt.NDArray[np.uint8]:
    """For each level 0-255: `black` and below to 0, `white` and above to 255, `gamma` between."""
    share = np.clip((np.arange(256, dtype=np.float64) - black) / (white - black), 0.0, 1.0)
    return np.round(255 * np.power(share, 1 / gamma)).astype(np.uint8)


def through_table(image: Image.Image, table: npt.NDArray[np.uint8]) -> Image.Image:
    """Every band of an L or RGB image mapped through one 256-entry table."""
    return image.point(table.tolist() * len(image.getbands()))


def _adjust(image: Image.Image, p: AdjustParams) -> Image.Image:
    if p.brightness != 1:
        image = ImageEnhance.Brightness(image).enhance(p.brightness)
    if p.contrast != 1:
        image = ImageEnhance.Contrast(image).enhance(p.contrast)
    if p.saturation != 1 and image.mode == "RGB":
        image = ImageEnhance.Color(image).enhance(p.saturation)
    if p.gamma != 1:
        image = through_table(image, levels_table(0, 255, p.gamma))
    return image


@operation("adjust", AdjustParams, inline_form="adjust=BRIGHTNESS,CONTRAST,SATURATION,GAMMA")
def adjust(canvas: Canvas, p: AdjustParams) -> Canvas:
    """Change brightness, contrast, saturation and gamma (factors, 1 = unchanged)."""
    return canvas.with_image(on_colour(canvas.image, lambda im: _adjust(im, p)))


class EqualizeParams(Params):
    """CLAHE strength and the number of tiles across and down."""

    clip_limit: float = Field(2.0, gt=0, description="contrast limit; higher is stronger")
    tile: int = Field(8, ge=1, le=64, description="tiles across and down the image")


def _clahe(image: Image.Image, p: EqualizeParams) -> Image.Image:
    clahe = cv2.createCLAHE(clipLimit=p.clip_limit, tileGridSize=(p.tile, p.tile))
    values = np.asarray(image)
    if image.mode == "L":
        return Image.fromarray(clahe.apply(values), "L")
    lab = cv2.cvtColor(values, cv2.COLOR_RGB2LAB)
    lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
    return Image.fromarray(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB), "RGB")


@operation("equalize", EqualizeParams, inline_form="equalize=CLIP_LIMIT,TILE")
def equalize(canvas: Canvas, p: EqualizeParams) -> Canvas:
    """Bring out detail with local histogram equalisation (CLAHE) of the lightness."""
    return canvas.with_image(on_colour(canvas.image, lambda im: _clahe(im, p)))


class LevelsParams(Params):
    """Input black and white points and a gamma for the levels between them."""

    black: float = Field(0, ge=0, le=255, description="this level and darker become black")
    white: float = Field(255, ge=0, le=255, description="this level and lighter become white")
    gamma: float = Field(1.0, gt=0, le=10, description="1 unchanged, above 1 lighter midtones")

    @model_validator(mode="after")
    def _order(self) -> LevelsParams:
        if self.black >= self.white:
            raise ValueError(f"the black point ({self.black:g}) must be below the white point "
                             f"({self.white:g})")
        return self


@operation("levels", LevelsParams, inline_form="levels=BLACK,WHITE,GAMMA (levels=16,240,1.2)")
def levels(canvas: Canvas, p: LevelsParams) -> Canvas:
    """Set the black and white points and the midtones' gamma, as a material needs."""
    table = levels_table(p.black, p.white, p.gamma)
    return canvas.with_image(on_colour(canvas.image, lambda im: through_table(im, table)))


Point = tuple[float, float]


def _points(value: Any) -> Any:
    """Curve points from `"0:0,128:96,255:255"`, `["0:0", ...]` or `[[0, 0], ...]`."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        return value
    points = []
    for item in items:
        if isinstance(item, str):
            x, colon, y = item.partition(":")
            if not colon:
                raise ValueError(f"{item.strip()!r} is not a point IN:OUT (such as 128:96)")
            points.append((x.strip(), y.strip()))
        else:
            points.append(item)
    return points


def pchip_table(points: list[Point]) -> npt.NDArray[np.uint8]:
    """The curve through `points` at every level 0-255, by monotone cubic interpolation
    (Fritsch and Carlson, as PCHIP): it never overshoots, so a rising curve keeps rising.
    Levels before the first point take its value, after the last point the last's."""
    x, y = (np.array(column, np.float64) for column in zip(*points, strict=True))
    h = np.diff(x)
    slope = np.diff(y) / h
    tangent = np.zeros_like(x)
    if len(x) == 2:
        tangent[:] = slope[0]
    else:
        inner_w1, inner_w2 = 2 * h[1:] + h[:-1], h[1:] + 2 * h[:-1]
        same_sign = slope[:-1] * slope[1:] > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = (inner_w1 + inner_w2) / (inner_w1 / slope[:-1] + inner_w2 / slope[1:])
        tangent[1:-1] = np.where(same_sign, mean, 0)
        tangent[0] = _end_tangent(h[0], h[1], slope[0], slope[1])
        tangent[-1] = _end_tangent(h[-1], h[-2], slope[-1], slope[-2])
    level = np.clip(np.arange(256, dtype=np.float64), x[0], x[-1])
    k = np.clip(np.searchsorted(x, level, side="right") - 1, 0, len(x) - 2)
    t = (level - x[k]) / h[k]
    curve = (y[k] * (2 * t**3 - 3 * t**2 + 1) + h[k] * tangent[k] * (t**3 - 2 * t**2 + t)
             + y[k + 1] * (-2 * t**3 + 3 * t**2) + h[k] * tangent[k + 1] * (t**3 - t**2))
    return np.round(np.clip(curve, 0, 255)).astype(np.uint8)


def _end_tangent(h0: float, h1: float, slope0: float, slope1: float) -> float:
    """PCHIP's tangent at an end point: a three-point estimate kept from overshooting."""
    tangent = ((2 * h0 + h1) * slope0 - h0 * slope1) / (h0 + h1)
    if np.sign(tangent) != np.sign(slope0):
        return 0.0
    if np.sign(slope0) != np.sign(slope1) and abs(tangent) > abs(3 * slope0):
        return float(3 * slope0)
    return float(tangent)


class CurveParams(Params):
    """A tone curve by points IN:OUT (levels 0-255), increasing in IN."""

    points: Annotated[list[tuple[Annotated[float, Field(ge=0, le=255)],
                                 Annotated[float, Field(ge=0, le=255)]]],
                      BeforeValidator(_points)] = Field(
        min_length=2, description="IN:OUT levels 0-255, such as 0:0,128:96,255:255; "
        "levels between are interpolated smoothly without overshoot",
    )

    @model_validator(mode="after")
    def _increasing(self) -> CurveParams:
        for (x0, _), (x1, _) in zip(self.points, self.points[1:], strict=False):
            if x1 <= x0:
                raise ValueError(f"the points must be in increasing order of their input level: "
                                 f"{x1:g} comes after {x0:g}")
        return self


def parse_curve(args: list[str]) -> dict[str, Any]:
    """`curve=0:0,128:96,255:255`, or `curve=0,0,128,96,255,255` (a folder name Windows
    accepts has no colon): the points IN,OUT in increasing order of IN."""
    words = [word.strip() for arg in args for word in arg.split(",") if word.strip()]
    if words and not any(":" in word for word in words):
        if len(words) % 2:
            raise ValueError(f"curve takes levels in pairs IN,OUT (such as curve=0,0,128,96,"
                             f"255,255): {len(words)} numbers given")
        words = [f"{x}:{y}" for x, y in zip(words[::2], words[1::2], strict=True)]
    return {"points": words}


@operation("curve", CurveParams, inline=parse_curve,
           inline_form="curve=IN,OUT,IN,OUT,... (curve=0,0,128,96,255,255)")
def curve(canvas: Canvas, p: CurveParams) -> Canvas:
    """Map the levels through a smooth tone curve given by points, as a material needs."""
    table = pchip_table(p.points)
    return canvas.with_image(on_colour(canvas.image, lambda im: through_table(im, table)))


class SharpenParams(Params):
    """Unsharp mask: blur radius, strength and threshold."""

    radius: float = Field(2.0, gt=0, le=100, description="blur radius in pixels")
    amount: float = Field(1.5, ge=0, le=10, description="strength: 1.5 adds 150% of the edges")
    threshold: int = Field(3, ge=0, le=255, description="leave differences below this alone")


@operation("sharpen", SharpenParams, inline_form="sharpen=RADIUS,AMOUNT,THRESHOLD")
def sharpen(canvas: Canvas, p: SharpenParams) -> Canvas:
    """Sharpen edges with an unsharp mask (radius, amount, threshold)."""
    mask = ImageFilter.UnsharpMask(radius=p.radius, percent=round(p.amount * 100),
                                   threshold=p.threshold)
    return canvas.with_image(on_colour(canvas.image, lambda im: im.filter(mask)))
