"""Colour operations: grayscale, invert, autocontrast, equalize (CLAHE), adjust, sharpen.

All of them leave alpha untouched and work on L or RGB (see `modes.colour_ready`):
palette images become RGB(A), 1-bit images L, CMYK RGB, and 16-bit grey 8-bit L
(scaled). Grey images stay grey.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from pydantic import Field

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


def _gamma_table(gamma: float, bands: int) -> list[int]:
    table = [round(255 * (i / 255) ** (1 / gamma)) for i in range(256)]
    return table * bands


def _adjust(image: Image.Image, p: AdjustParams) -> Image.Image:
    if p.brightness != 1:
        image = ImageEnhance.Brightness(image).enhance(p.brightness)
    if p.contrast != 1:
        image = ImageEnhance.Contrast(image).enhance(p.contrast)
    if p.saturation != 1 and image.mode == "RGB":
        image = ImageEnhance.Color(image).enhance(p.saturation)
    if p.gamma != 1:
        image = image.point(_gamma_table(p.gamma, len(image.getbands())))
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
