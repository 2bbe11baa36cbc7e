"""Run a recipe's steps on a canvas: pure, no files, no service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hotfolder.canvas import Canvas
from hotfolder.ops import lookup
from hotfolder.ops.registry import Params


@dataclass(frozen=True)
class Step:
    """One operation with its validated parameters."""

    op: str
    params: Params

    def describe(self) -> dict[str, Any]:
        """The step as the sidecar records it: `{op: {param: value}}`."""
        return {self.op: self.params.model_dump(mode="json", exclude_defaults=False)}


def run(canvas: Canvas, steps: list[Step]) -> Canvas:
    """Apply `steps` to `canvas` in order and return the result."""
    for step in steps:
        canvas = lookup(step.op).func(canvas, step.params)
    return canvas
