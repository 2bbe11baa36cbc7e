"""The picture that flows through a pipeline: pixels plus what travels with them."""

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

    def with_image(self, image: Image.Image) -> Canvas:
        """The same canvas holding other pixels."""
        return dataclasses.replace(self, image=image)

    def with_output(self, **settings: Any) -> Canvas:
        """The same canvas with output settings (format, quality...) overridden."""
        return dataclasses.replace(self, output={**self.output, **settings})

    def with_notes(self, **notes: Any) -> Canvas:
        """The same canvas with fields added to the sidecar."""
        return dataclasses.replace(self, notes={**self.notes, **notes})

    def with_extra(self, extra: Extra) -> Canvas:
        """The same canvas with one more side output."""
        return dataclasses.replace(self, extras=(*self.extras, extra))
