"""`proof`: an extra output, one sheet to burn once and choose a dither method from.

The sheet holds the image at the job's size and DPI several times side by side: first the
recipe's own result, then the image its dither (or threshold) started from, dithered by
other methods. Each panel is labelled with its step as a recipe writes it
(`dither=jarvis,serpentine`), and under the panels a step wedge of eleven patches, 0% to
100% black in 10% steps, is dithered by the first dithering method of the sheet, so the
burn shows how the material takes each share of dots. Without a chosen list, the other
four methods are near the recipe's choice, which was made for its material: other
error-diffusion kernels (and the same one in linear light) beside an error diffusion,
other matrices beside an ordered dither, finer and coarser cells beside a halftone, other
levels beside a threshold.

A step after the dither that changes its dots (`dot_width`) follows every method on the
sheet, the wedge's too; other steps after it are in the recipe's panel only. Sizes on the
sheet (margins, gaps, the wedge, the labels) are in millimetres at the job's DPI, or at
300 DPI for an image without one; the label text is Pillow's own scalable font.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any

from PIL import Image, ImageDraw, ImageFont
from pydantic import BeforeValidator, Field

from hotfolder.canvas import Canvas, Extra
from hotfolder.errors import RecipeError
from hotfolder.ops.engrave import KERNELS, METHODS, DitherParams, ThresholdParams, flatten
from hotfolder.ops.registry import Params, Size, lookup, operation

SUFFIX = "_proof"
LAYOUT_DPI = 300.0  # for an image without a DPI of its own
MARGIN_MM = 4.0
GAP_MM = 4.0
MIN_CELL_MM = 45.0
MIN_CELL_PX = 320  # room for the longest label at the smallest font
LABEL_MM = 3.0  # the font's size (about its line height)
MIN_FONT_PX = 10
WEDGE_STEPS = 11  # 0%, 10% ... 100% black
WEDGE_MM = 10.0
MIN_PATCH_MM = 8.0
OTHERS = 4  # methods beside the recipe's own when none are chosen

Panel = tuple[str, Params]  # "dither" or "threshold", and its parameters


def panel_from_text(text: str) -> Panel:
    """A panel from `jarvis`, `jarvis,serpentine`, `bayer:4`, `dither=halftone,6,30`,
    `threshold`, `threshold=140` or `otsu`; a RecipeError in words otherwise."""
    head, equals, rest = str(text).strip().partition("=")
    words = [word.strip() for word in re.split(r"[,:]", f"{head},{rest}" if equals else head)
             if word.strip()]
    if not words:
        raise RecipeError("a proof method is empty; name one, such as jarvis")
    first = words[0].lower()
    if first == "otsu" and len(words) == 1:
        return "threshold", ThresholdParams(level="otsu")
    if first in ("dither", "threshold"):
        op, args = first, words[1:]
    else:
        op, args = "dither", words
    if op == "dither" and not args:
        raise RecipeError(f"{text!r}: name a dither method, such as jarvis")
    return op, lookup(op).parse(args or None)


def step_text(panel: Panel) -> str:
    """The panel as a recipe step: `dither=jarvis,serpentine`, `threshold=140`."""
    op, params = panel
    if isinstance(params, ThresholdParams):
        return f"threshold={params.level}"
    if not isinstance(params, DitherParams):  # a step after the dither, such as dot_width
        values = [str(v) for v in params.model_dump(mode="json").values() if v is not None]
        return f"{op}={','.join(values)}" if values else op
    words: list[str] = [params.method]
    words += [flag for flag in ("serpentine", "linear") if getattr(params, flag)]
    if params.method == "bayer":
        words.append(str(params.size))
    if params.method == "halftone":
        words += [f"{params.cell:g}", f"{params.angle:g}"]
    return "dither=" + ",".join(words)


def _panel(value: Any) -> str:
    """A panel's text, checked, in the form its label shows."""
    try:
        return step_text(panel_from_text(str(value)))
    except RecipeError as exc:
        raise ValueError(exc.message) from None


PanelText = Annotated[str, BeforeValidator(_panel)]


class ProofParams(Params):
    """The methods shown beside the recipe's own result."""

    methods: tuple[PanelText, ...] | None = Field(
        None, min_length=1, max_length=15,
        description="dither methods or thresholds, such as jarvis, 'bayer,4', 'halftone,6,30', "
        "'threshold,140', otsu; default: four near the recipe's own",
    )


PANEL_STARTS = frozenset((*METHODS, "dither", "threshold", "otsu"))


def parse_proof(args: list[str]) -> dict[str, Any]:
    """`proof`, `proof=atkinson,bayer,4,halftone,6,30,threshold,140` (a panel begins at each
    method's name: a folder name Windows accepts has no colon) or `bayer:4,...`."""
    panels: list[list[str]] = []
    for arg in (arg.strip() for arg in args):
        if not arg:
            continue
        starts = ":" in arg or arg.lower().partition("=")[0] in PANEL_STARTS
        if not panels or (starts and panels[-1] != ["dither"]):
            panels.append([arg])
        else:  # a number or an option of the panel before: `bayer,4`, `jarvis,linear`
            panels[-1].append(arg)
    return {"methods": [",".join(words) for words in panels]} if panels else {}


# Which methods to show ------------------------------------------------------------------

def suited(own: Panel | None) -> list[Panel]:
    """Four panels near the recipe's own method (which it chose for its material)."""
    if own is None:
        texts = ["jarvis", "atkinson", "blue-noise", "halftone"]
    elif isinstance(own[1], ThresholdParams):
        level = own[1].level
        texts = (["threshold=96", "threshold=160"] if level == "otsu"
                 else [f"threshold={max(0, level - 32)}", f"threshold={min(255, level + 32)}",
                       "otsu"]) + ["jarvis", "atkinson"]
    else:
        p = own[1]
        assert isinstance(p, DitherParams)
        if p.method in KERNELS:
            same = step_text(own)  # and the same in linear light, or out of it
            texts = [same.replace(",linear", "") if p.linear else f"{same},linear",
                     "jarvis", "stucki", "atkinson", "blue-noise", "floyd-steinberg"]
        elif p.method == "halftone":
            texts = [f"halftone,{cell:g},{p.angle:g}" for cell in
                     (p.cell * 0.75, p.cell * 1.5, p.cell * 2) if 2 <= cell <= 256]
            texts += ["jarvis", "atkinson", "blue-noise"]
        else:
            texts = ["bayer,4", "bayer,8", "blue-noise", "atkinson", "jarvis"]
    seen = {step_text(own)} if own else set()
    panels = []
    for text in texts:
        panel = panel_from_text(text)
        if step_text(panel) not in seen:
            seen.add(step_text(panel))
            panels.append(panel)
    return panels[:OTHERS]


def panel_count(p: ProofParams) -> int:
    """Panels on the sheet: the recipe's own and the others."""
    return 1 + (len(p.methods) if p.methods else OTHERS)


# Layout ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    """Where everything goes on the sheet, in pixels."""

    size: Size
    panels: list[tuple[int, int]]  # top-left corner of each panel
    cell_width: int  # a panel and its label: at least wide enough for the label
    label_height: int  # the band under each panel
    font_px: int
    wedge: list[tuple[int, int, int, int]]  # each patch's box, 0% black first
    wedge_label_top: int


def layout(panel_size: Size, dpi: float | None, count: int) -> Layout:
    """The sheet for `count` panels of `panel_size` at `dpi`, columns chosen to keep its
    longer side short (a laser's bed), with the wedge under them."""
    per_mm = (dpi or LAYOUT_DPI) / 25.4

    def mm(length: float) -> int:
        return max(1, round(length * per_mm))

    margin, gap = mm(MARGIN_MM), mm(GAP_MM)
    font_px = max(MIN_FONT_PX, mm(LABEL_MM))
    label_height = round(font_px * 2.8)  # two lines
    width, height = panel_size
    cell_width = max(width, mm(MIN_CELL_MM), MIN_CELL_PX)
    cell_height = height + label_height
    patch_width = mm(MIN_PATCH_MM)
    wedge_height = mm(WEDGE_MM)

    def sheet(columns: int) -> Size:
        rows = -(-count // columns)
        inner = max(columns * cell_width + (columns - 1) * gap, WEDGE_STEPS * patch_width)
        return (2 * margin + inner,
                2 * margin + rows * cell_height + rows * gap + wedge_height + label_height)

    columns = min(range(1, count + 1), key=lambda c: (max(sheet(c)), c))
    size = sheet(columns)
    panels = [(margin + (i % columns) * (cell_width + gap),
               margin + (i // columns) * (cell_height + gap)) for i in range(count)]
    patch_width = (size[0] - 2 * margin) // WEDGE_STEPS
    top = size[1] - margin - label_height - wedge_height
    wedge = [(margin + i * patch_width, top, margin + (i + 1) * patch_width, top + wedge_height)
             for i in range(WEDGE_STEPS)]
    return Layout(size, panels, cell_width, label_height, font_px, wedge, top + wedge_height)


def proof_size(p: ProofParams, size: Size, dpi: float | None) -> Size:
    """The size of the sheet: the panels, their labels and the wedge."""
    return layout(size, dpi, panel_count(p)).size


# Drawing ---------------------------------------------------------------------------------

def fitted_font(text: str, width: int, size: int) -> ImageFont.FreeTypeFont:
    """Pillow's scalable font at `size`, smaller if needed for `text` to fit `width`."""
    font = ImageFont.load_default(size=size)
    assert isinstance(font, ImageFont.FreeTypeFont)  # Pillow built with FreeType
    length = font.getlength(text)
    if length > width:
        font = font.font_variant(size=max(MIN_FONT_PX, math.floor(size * width / length)))
    return font


def dotted(steps: list[Panel], image: Image.Image, dpi: tuple[float, float] | None
           ) -> Image.Image:
    """`image` at `dpi` through `steps` alone."""
    canvas = Canvas(image, dpi=dpi)
    for op, params in steps:
        canvas = lookup(op).func(canvas, params)
    return canvas.image


def chain_text(steps: list[Panel]) -> str:
    """Steps as an inline chain: `dither=jarvis+dot_width=0.08mm`."""
    return "+".join(step_text(step) for step in steps)


@operation("proof", ProofParams, inline=parse_proof, output_size=proof_size,
           inline_form="proof | proof=METHOD[,ARG...],... (proof=atkinson,bayer,4,threshold,140)")
def proof(canvas: Canvas, p: ProofParams) -> Canvas:
    """Add a proof sheet (NAME_proof.png): the result beside other dither methods, labelled,
    with a 0-100% step wedge; the main image is unchanged."""
    image = canvas.image
    dots = canvas.dots
    own = (dots.op, dots.params) if dots else None
    source = image if dots is None else dots.source
    if source.size != image.size:  # a step after the dither changed the size
        source = source.resize(image.size, Image.Resampling.LANCZOS)
    after = list(dots.after) if dots else []
    others = [panel_from_text(text) for text in p.methods] if p.methods else suited(own)
    shown = [image if image.mode == "1" else flatten(image).convert("L")]
    shown += [dotted([panel, *after], source, canvas.dpi) for panel in others]
    labels = [("the recipe's own", chain_text([own, *after]) if own else "no dither")]
    labels += [(f"option {number}", chain_text([panel, *after]))
               for number, panel in enumerate(others, 2)]

    plan = layout(image.size, canvas.dpi[0] if canvas.dpi else None, len(shown))
    mode = "1" if all(panel.mode == "1" for panel in shown) else "L"
    sheet = Image.new(mode, plan.size, 255)
    draw = ImageDraw.Draw(sheet)
    line = plan.label_height // 2
    for (left, top), panel, (title, text) in zip(plan.panels, shown, labels, strict=True):
        sheet.paste(panel, (left, top))
        below = top + panel.height + line // 4
        for row, words in enumerate((title, text)):
            font = fitted_font(words, plan.cell_width, plan.font_px)
            draw.text((left, below + row * line), words, fill=0, font=font)

    wedge_by = next((panel for panel in [*([own] if own else []), *others]
                     if panel[0] == "dither"), panel_from_text("floyd-steinberg"))
    for step, (left, top, right, bottom) in enumerate(plan.wedge):
        level = round(255 * (1 - step / (WEDGE_STEPS - 1)))
        patch = dotted([wedge_by, *after], Image.new("L", (right - left, bottom - top), level),
                       canvas.dpi)
        sheet.paste(patch, (left, top))
        words = f"{10 * step}%"
        font = fitted_font(words, right - left, plan.font_px)
        draw.text((left, plan.wedge_label_top + line // 4), words, fill=0, font=font)
    first, last = plan.wedge[0], plan.wedge[-1]
    draw.rectangle((first[0] - 2, first[1] - 2, last[2] + 1, last[3] + 1), outline=0)  # 0% shows
    words = f"step wedge, black share, by {chain_text([wedge_by, *after])}"
    left = plan.wedge[0][0]
    font = fitted_font(words, plan.size[0] - 2 * left, plan.font_px)
    draw.text((left, plan.wedge_label_top + line + line // 4), words, fill=0, font=font)
    return canvas.with_extra(Extra(suffix=SUFFIX, image=sheet, format="png"))
