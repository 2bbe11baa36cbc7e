"""Lengths with a unit, read one way everywhere: recipe sizes (`800`, `100mm`, `4in`) and SVG sizes.

A length is a number and a unit: `px`, or a physical unit (mm, cm, in; SVG also pt and
pc) that becomes pixels at a resolution. An SVG's pixels are CSS pixels, 96 to the inch.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

MM_PER_INCH = 25.4
CSS_DPI = 96.0
Unit = Literal["px", "mm", "cm", "in", "pt", "pc"]
PER_INCH: dict[str, float] = {"mm": MM_PER_INCH, "cm": MM_PER_INCH / 10, "in": 1.0,
                              "pt": 72.0, "pc": 6.0}
UNIT_WORDS: dict[str, Unit] = {"": "px", "px": "px", "mm": "mm", "cm": "cm", "in": "in",
                               "inch": "in", "inches": "in", '"': "in", "pt": "pt", "pc": "pc"}
RECIPE_UNITS = frozenset({"px", "mm", "cm", "in"})
_LENGTH_RE = re.compile(r"^\s*((?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)\s*([a-z\"]*)\s*$")


class Length(NamedTuple):
    """A length as written: a number and its unit."""

    value: float
    unit: Unit

    def __str__(self) -> str:
        return f"{self.value:.10g}{'' if self.unit == 'px' else self.unit}"

    def as_json(self) -> int | float | str:
        """Pixels as a number, physical lengths as text (`100mm`)."""
        if self.unit != "px":
            return str(self)
        return int(self.value) if self.value.is_integer() else self.value

    def pixels(self, dpi: float | None) -> float:
        """The length in pixels at `dpi`; physical units need one."""
        if self.unit == "px":
            return self.value
        if not dpi:
            raise ValueError(f"{self} needs a DPI: give dpi (for example dpi: 300)")
        return self.value / PER_INCH[self.unit] * dpi


def read_length(text: str) -> Length | None:
    """The Length written in `text` (`800`, `100mm`, `2.5 cm`, `12pt`), or None when it is none."""
    match = _LENGTH_RE.match(text.lower())
    if not match or match.group(2) not in UNIT_WORDS:
        return None
    return Length(float(match.group(1)), UNIT_WORDS[match.group(2)])


def parse_length(value: Any) -> Length:
    """A recipe's Length from `800`, `"800px"`, `"100mm"`, `"2.5cm"`, `"4in"` or a Length."""
    if isinstance(value, Length):
        return value
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a length")
    length = (Length(float(value), "px") if isinstance(value, (int, float))
              else read_length(str(value)))
    if length is None or length.unit not in RECIPE_UNITS:
        raise ValueError(f"{value!r} is not a length (write 800, 800px, 100mm, 2.5cm or 4in)")
    if length.value <= 0:
        raise ValueError(f"{value!r}: a length must be more than zero")
    return length


def to_pixels(length: Length, dpi: float | None) -> int:
    """The length in whole pixels (at least 1); physical units need a DPI."""
    return max(1, round(length.pixels(dpi)))


LengthField = Annotated[
    Length,
    BeforeValidator(parse_length),
    PlainSerializer(Length.as_json),
    WithJsonSchema({
        "anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string"}],
        "description": "pixels, or a length with unit: 800, 800px, 100mm, 2.5cm, 4in",
    }),
]
