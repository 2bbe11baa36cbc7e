"""Helpers for the operation tests: run one step as a recipe would, on small synthetic images."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from hotfolder.canvas import Canvas
from hotfolder.pipeline import run
from hotfolder.recipes import parse_step


def apply(image: Image.Image | Canvas, step: Any) -> Canvas:
    """Run one step (`"resize=800x600,fill"` or `{"resize": {...}}`) as a recipe would."""
    canvas = image if isinstance(image, Canvas) else Canvas(image)
    return run(canvas, [parse_step(step)])


def pixels(image: Image.Image) -> np.ndarray:
    """The pixels as a numpy array (rows, columns[, bands])."""
    return np.asarray(image)


def ramp(size: tuple[int, int] = (64, 48), mode: str = "RGB", low: int = 0,
         high: int = 255) -> Image.Image:
    """A left-to-right grey ramp from `low` to `high`, converted to `mode`."""
    row = np.linspace(low, high, size[0]).round().astype(np.uint8)
    return Image.fromarray(np.tile(row, (size[1], 1)), "L").convert(mode)
