"""The picture that flows through a pipeline (pixels and what travels with them), and its budget."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from PIL import Image


@dataclass(frozen=True)
class Extra:
    """An additional output of a job, such as a thumbnail, written beside the main one."""

    suffix: str
    image: Image.Image
    format: str


@dataclass(frozen=True)
class Dots:
    """How a 1-bit image was made: the image the step started from, the operation and its
    parameters, and the steps that changed the dots since (a proof sheet dithers that image
    again by other methods, each followed by the same steps)."""

    source: Image.Image
    op: str
    params: Any
    after: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Canvas:
    """An image with its resolution, metadata and side outputs; operations return new ones."""

    image: Image.Image
    dpi: tuple[float, float] | None = None
    exif: bytes | None = None
    icc_profile: bytes | None = None
    output: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    extras: tuple[Extra, ...] = ()
    vector: str | None = None
    dots: Dots | None = None

    def with_image(self, image: Image.Image) -> Canvas:
        """The same canvas holding other pixels."""
        return dataclasses.replace(self, image=image)

    def with_dots(self, image: Image.Image, op: str, params: Any) -> Canvas:
        """The canvas holding the 1-bit `image` that operation `op` made from this one."""
        return dataclasses.replace(self, image=image, dots=Dots(self.image, op, params))

    def with_dots_changed(self, image: Image.Image, op: str, params: Any) -> Canvas:
        """The canvas holding the 1-bit `image` that operation `op` made from its dots."""
        dots = self.dots and dataclasses.replace(self.dots, after=(*self.dots.after, (op, params)))
        return dataclasses.replace(self, image=image, dots=dots)

    def with_output(self, **settings: Any) -> Canvas:
        """The same canvas with output settings (format, quality...) overridden."""
        return dataclasses.replace(self, output={**self.output, **settings})

    def with_notes(self, **notes: Any) -> Canvas:
        """The same canvas with fields added to the sidecar."""
        return dataclasses.replace(self, notes={**self.notes, **notes})

    def with_extra(self, extra: Extra) -> Canvas:
        """The same canvas with one more side output."""
        return dataclasses.replace(self, extras=(*self.extras, extra))


def pixels_over(size: tuple[int, int], max_pixels: int, frames: int = 1,
                total: int | None = None) -> str | None:
    """`W x H pixels (N megapixels), over the limit of ...` when `frames` images of `size`
    (or `total` pixels, for pages of different sizes up to `size`) exceed `max_pixels`."""
    width, height = size
    pixels = width * height * frames if total is None else total
    if pixels <= max_pixels:
        return None
    shape = f"{width} x {height} pixels ({megapixels(pixels)} megapixels)"
    if frames > 1:
        up_to = "" if pixels == width * height * frames else "up to "
        shape = (f"{frames} frames of {up_to}{width} x {height} pixels"
                 f" ({megapixels(pixels)} megapixels in all)")
    return f"{shape}, over the limit of {megapixels(max_pixels)} megapixels (limits.max_pixels)"


def megapixels(pixels: int) -> str:
    """A pixel count in megapixels as an operator reads it: `1600`, `2.5`, `0.25`."""
    return f"{pixels / 1e6:.0f}" if pixels >= 10_000_000 else f"{pixels / 1e6:.2g}"
