"""Output settings as steps: `format` (also the bare words `png`, `jpeg=85`...) and `optimize`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hotfolder.canvas import Canvas
from hotfolder.ops.registry import Params, operation


class FormatParams(Params):
    format: Literal["jpeg", "png", "gif", "bmp", "tiff", "webp", "svg"]
    quality: int | None = Field(None, ge=1, le=100)


@operation("format", FormatParams, inline_form="format=png | png | jpeg=QUALITY | webp=QUALITY")
def to_format(canvas: Canvas, p: FormatParams) -> Canvas:
    """Write the result in another format (and quality for JPEG/WebP)."""
    settings: dict[str, object] = {"format": p.format}
    if p.quality is not None:
        settings["quality"] = p.quality
    return canvas.with_output(**settings)


class OptimizeParams(Params):
    quality: int | None = Field(None, ge=1, le=100)
    progressive: bool | None = None
    compression: int | None = Field(None, ge=0, le=9)
    strip: bool = True


@operation("optimize", OptimizeParams)
def optimize(canvas: Canvas, p: OptimizeParams) -> Canvas:
    """Tune the encoder: quality, progressive JPEG, PNG compression level, metadata strip."""
    settings: dict[str, object] = {"metadata": "strip" if p.strip else "keep"}
    for key in ("quality", "progressive", "compression"):
        if getattr(p, key) is not None:
            settings[key] = getattr(p, key)
    return canvas.with_output(**settings)
