"""Colour operations: grayscale, invert, autocontrast, equalize (CLAHE), adjust, sharpen.

All of them leave alpha untouched and work on L or RGB (see `modes.colour_ready`):
palette images become RGB(A), 1-bit images L, CMYK RGB, and 16-bit grey 8-bit L
(scaled). Grey images stay grey.
"""

from __future__ import annotations

from typing import Any

from PIL import ImageOps
from pydantic import Field

from hotfolder.canvas import Canvas
from hotfolder.ops.modes import has_alpha, is_grey, on_colour, unpalette
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
