"""Run a recipe's steps on a canvas: pure, no files, no service.

Before each step runs, the size its operation will make is checked against the pixel
budget, so that a step that would be too large is refused before it allocates. The frames of
an animation (or the pages of a document) each run through the steps on a canvas of their
own, and the budget counts all of them together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hotfolder.canvas import Canvas, pixels_over
from hotfolder.errors import InputError
from hotfolder.ops import lookup
from hotfolder.ops.registry import Params


@dataclass(frozen=True)
class Step:
    """One operation with its validated parameters, and its text when it was written inline."""

    op: str
    params: Params
    text: str = field(default="", compare=False)

    def describe(self) -> dict[str, Any]:
        """The step as the sidecar records it: `{op: {param: value}}`."""
        return {self.op: self.params.model_dump(mode="json", exclude_defaults=False)}

    def summary(self) -> str:
        """`op` or `op(key=value, ...)` with the parameters that differ from the defaults."""
        params = self.params.model_dump(mode="json", exclude_defaults=True)
        if not params:
            return self.op
        return f"{self.op}({', '.join(f'{k}={v}' for k, v in params.items())})"

    def label(self) -> str:
        """The step as written (`resize=800x600,fill`), else its summary."""
        return self.text or self.summary()


def run(canvas: Canvas, steps: list[Step], max_pixels: int | None = None,
        frames: int = 1) -> Canvas:
    """Apply `steps` to `canvas` in order; a step whose result, times the `frames` of the
    job that will each hold one, would exceed `max_pixels` is refused before it runs."""
    for number, step in enumerate(steps, 1):
        op = lookup(step.op)
        if max_pixels is not None:
            dpi = canvas.dpi[0] if canvas.dpi else None
            size = op.output_size(step.params, canvas.image.size, dpi)
            over = pixels_over(size, max_pixels, frames)
            if over:
                raise InputError(f"step {number}, {step.label()}: the result would be {over}",
                                 stage="process")
        canvas = op.func(canvas, step.params)
    return canvas
