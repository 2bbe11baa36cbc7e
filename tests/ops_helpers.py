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

