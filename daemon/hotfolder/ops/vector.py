"""`trace`: raster to SVG outlines for cutting or vector engraving, sized in millimetres.

Tracing uses potrace (Debian's `potrace` program), not vtracer. The image is first
made black and white here (fixed or Otsu threshold), and potrace is the reference
tracer for exactly that case: Inkscape's Trace Bitmap and most laser software use it,
its curves are smooth with few nodes (a logo of 1200x800 pixels traced to 1.9 KB of
SVG in 12 ms, vtracer's binary mode gave 11 KB in 48 ms), and its speck and corner
options are the ones engravers know. It runs as a separate program fed a PBM that we
write ourselves, so no untrusted file reaches it. vtracer's strength, colour tracing,
is not needed for outlines.

The SVG's `viewBox` is in pixels and its `width`/`height` in mm (pixels at the
image's DPI), so LightBurn and Inkscape open it at its physical size.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess

import numpy as np
from pydantic import Field

from hotfolder.canvas import Canvas
from hotfolder.errors import InputError, Unavailable
from hotfolder.lengths import MM_PER_INCH
from hotfolder.ops.engrave import LevelField, binarize, grey_levels, one_bit
from hotfolder.ops.registry import Params, operation

POTRACE = "potrace"
TIMEOUT_SECONDS = 120
DEFAULT_DPI = 96.0  # what Inkscape and browsers assume for a pixel when nothing is said
_ROOT_SIZE = re.compile(r'width="[0-9.]+pt" height="[0-9.]+pt"')
_GROUP_STYLE = 'fill="#000000" stroke="none"'


class TraceParams(Params):
    threshold: LevelField = "otsu"
    smoothing: float = Field(
        1.0, ge=0, le=1.334, description="0 keeps sharp corners, 1.334 rounds every corner"
    )
    min_speck: int = Field(
        2, ge=0, description="dark specks of up to this many pixels are left out"
    )
    outline: bool = Field(
        False, description="hairline outlines (for cutting) instead of filled shapes"
    )


def pbm(black: np.ndarray) -> bytes:
    """A binary PBM (P4) of a mask of black pixels."""
    height, width = black.shape
    return f"P4\n{width} {height}\n".encode() + np.packbits(black, axis=1).tobytes()


def potrace_svg(black: np.ndarray, p: TraceParams) -> str:
    """The SVG that potrace draws around the black pixels (viewBox in pixels)."""
    command = [POTRACE, "--backend", "svg", "--resolution", "72",
               "--turdsize", str(p.min_speck), "--alphamax", str(p.smoothing),
               "--output", "-", "-"]
    try:
        done = subprocess.run(command, input=pbm(black), capture_output=True,
                              timeout=TIMEOUT_SECONDS, check=False)
    except FileNotFoundError:
        raise Unavailable("trace needs the potrace program, which is not installed "
                          "(Debian package potrace)") from None
    except subprocess.TimeoutExpired:
        raise InputError(f"tracing took more than {TIMEOUT_SECONDS} s: the image has too much "
                         "fine detail (raise min_speck, or threshold it first)",
                         stage="process") from None
    if done.returncode != 0:
        raise InputError("potrace could not trace the image", stage="process",
                         detail=done.stderr.decode(errors="replace"))
    return done.stdout.decode()


def physical_size(svg: str, size_mm: tuple[float, float], outline: float | None) -> str:
    """The SVG with its width/height in mm, and hairline outlines instead of fills if asked."""
    svg, count = _ROOT_SIZE.subn(f'width="{size_mm[0]:.3f}mm" height="{size_mm[1]:.3f}mm"',
                                 svg, count=1)
    if count != 1:
        raise InputError("potrace wrote an SVG of an unexpected form", stage="process",
                         detail=svg[:500])
    if outline is not None:  # a stroke width in the units of potrace's group (0.1 pixel)
        svg = svg.replace(_GROUP_STYLE, f'fill="none" stroke="#000000" '
                          f'stroke-width="{outline:.4f}"', 1)
    return svg


@operation("trace", TraceParams, inline_form="trace=THRESHOLD,SMOOTHING,MIN_SPECK,OUTLINE")
def trace(canvas: Canvas, p: TraceParams) -> Canvas:
    """Trace the dark shapes into SVG outlines sized in mm at the image's DPI; output is svg."""
    white, level = binarize(grey_levels(canvas.image), p.threshold)
    dpi = canvas.dpi[0] if canvas.dpi else DEFAULT_DPI
    width, height = canvas.image.size
    size_mm = (width / dpi * MM_PER_INCH, height / dpi * MM_PER_INCH)
    hairline = 0.1 / MM_PER_INCH * dpi * 10  # 0.1 mm in the group's units (tenths of a pixel)
    svg = physical_size(potrace_svg(~white, p), size_mm, hairline if p.outline else None)
    paths = svg.count("<path")
    info: dict[str, object] = {
        "paths": paths, "threshold_level": level, "dpi": dpi,
        "width_mm": round(size_mm[0], 3), "height_mm": round(size_mm[1], 3),
    }
    remarks = []
    if not canvas.dpi:
        remarks.append(f"the image has no DPI; {DEFAULT_DPI:g} was assumed")
    if paths == 0:
        remarks.append("no dark shapes to trace: the SVG is empty")
    if remarks:
        info["remarks"] = remarks
    traced = dataclasses.replace(canvas, image=one_bit(white), vector=svg)
    return traced.with_output(format="svg").with_notes(trace=info)
