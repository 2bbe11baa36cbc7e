"""Image modes and colours: what each Pillow mode becomes before an operation, and fill colours.

Operations accept every mode a decoder can produce (RGB, RGBA, L, LA, P with or
without transparency, 1, CMYK, 16-bit I;16 and 32-bit I/F). Rather than each
operation guessing, they and the decoder use these conversions:
- `unpalette`: P/PA become RGB or RGBA (RGBA when the palette has transparency),
  so resampling and fill colours work on real colours, not palette indexes;
- `eight_bit`: high bit-depth grey (I;16, I, F) becomes L, scaled rather than
  clipped (Pillow's own conversion clips everything above 255 to white);
- `to_working_mode`: what every decoded image becomes: 1, L, LA, RGB or RGBA
  (CMYK through its ICC profile when it has one);
- `colour_ready`: what colour operations work on: the same, with 1 as L.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
from PIL import Image, ImageCms, ImageColor
from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F"})
WORKING_MODES = frozenset({"1", "L", "LA", "RGB", "RGBA"})

RGBA = tuple[int, int, int, int]


def is_sixteen_bit(image: Image.Image) -> bool:
    """True for the 16-bit grey modes (I;16, I;16B, I;16L...)."""
    return image.mode.startswith("I;16")


def is_grey(image: Image.Image) -> bool:
    """True when the image holds grey levels only (with or without alpha)."""
    return image.mode in GREY_MODES or is_sixteen_bit(image)


def has_alpha(image: Image.Image) -> bool:
    """True when the image has an alpha band or a transparent colour/palette entry."""
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        return True
    return image.mode == "P" and image.palette is not None and "A" in image.palette.mode


def unpalette(image: Image.Image) -> Image.Image:
    """Palette images (and L/RGB with a transparent colour) as L/LA/RGB/RGBA; others as they are."""
    if image.mode in ("P", "PA"):
        return image.convert("RGBA" if has_alpha(image) else "RGB")
    if image.mode in ("L", "RGB") and "transparency" in image.info:
        return image.convert("LA" if image.mode == "L" else "RGBA")
    return image


def grey_scale(image: Image.Image) -> float:
    """How many of the image's units make one 8-bit grey level (1 for 8-bit modes)."""
    # I;16 maps 0-65535 onto 0-255. I (32-bit integer, how some decoders hand over
    # 16-bit PNGs) is read as 16-bit when any value exceeds 255, else as 8-bit.
    # F is read as 0-1 when no value exceeds 1, else as 0-255.
    if is_sixteen_bit(image):
        return 257.0
    if image.mode in ("I", "F"):
        top = image.getextrema()[1]
        assert isinstance(top, (int, float))
        if image.mode == "I":
            return 257.0 if top > 255 else 1.0
        return 1.0 / 255.0 if top <= 1.0 else 1.0
    return 1.0


def eight_bit(image: Image.Image) -> Image.Image:
    """High bit-depth grey (I;16, I, F) as L, scaled (see `grey_scale`); other modes as they are."""
    if not (is_sixteen_bit(image) or image.mode in ("I", "F")):
        return image
    values = np.asarray(image, dtype=np.float32) / np.float32(grey_scale(image))
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")


def cmyk_to_rgb(image: Image.Image) -> Image.Image:
    """A CMYK image in sRGB, through its embedded ICC profile when it has one."""
    icc = image.info.get("icc_profile")
    if icc:
        try:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.createProfile("sRGB")
            converted = ImageCms.profileToProfile(image, profile, srgb, outputMode="RGB")
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError):
            pass  # a broken profile: fall back to the plain formula below
    return image.convert("RGB")


def to_working_mode(image: Image.Image) -> Image.Image:
    """The image in a mode every operation handles: 1, L, LA, RGB or RGBA."""
    if image.mode == "CMYK":
        return cmyk_to_rgb(image)
    image = eight_bit(unpalette(image))
    if image.mode in WORKING_MODES:
        return image
    if image.mode in ("La", "RGBa"):
        return image.convert(image.mode.upper())
    return image.convert("RGBA" if has_alpha(image) else "RGB")


def colour_ready(image: Image.Image) -> Image.Image:
    """The image as L, LA, RGB or RGBA: the modes colour operations work on."""
    image = to_working_mode(image)
    return image.convert("L") if image.mode == "1" else image


def on_colour(image: Image.Image, func: Callable[[Image.Image], Image.Image]) -> Image.Image:
    """Apply `func` to the colour (L or RGB) part of `image`, leaving alpha untouched."""
    image = colour_ready(image)
    if image.mode not in ("LA", "RGBA"):
        return func(image)
    *colour, alpha = image.split()
    base = Image.merge(image.mode[:-1], colour)
    result = func(base)
    return Image.merge(image.mode, [*result.split(), alpha])


def with_alpha(image: Image.Image) -> Image.Image:
    """The image with an alpha band: L/1/16-bit grey as LA, colour as RGBA."""
    image = unpalette(image)
    if image.mode in ("LA", "RGBA"):
        return image
    return eight_bit(image).convert("LA" if is_grey(image) else "RGBA")


# Colours -------------------------------------------------------------------

TRANSPARENT: RGBA = (255, 255, 255, 0)
WHITE: RGBA = (255, 255, 255, 255)
_HEX_RE = re.compile(r"^[0-9a-fA-F]{3,8}$")


def parse_color(value: Any) -> RGBA:
    """An RGBA tuple from a name, `#rrggbb[aa]`, `rrggbb`, `transparent` or [r, g, b(, a)]."""
    if isinstance(value, (list, tuple)):
        channels = [int(v) for v in value]
        if len(channels) not in (3, 4) or not all(0 <= c <= 255 for c in channels):
            raise ValueError("a colour list is [r, g, b] or [r, g, b, a] with values 0-255")
        return (channels[0], channels[1], channels[2], channels[3] if len(channels) == 4 else 255)
    text = str(value).strip().lower()
    if text in ("transparent", "none"):
        return TRANSPARENT
    if _HEX_RE.match(text) and len(text) in (3, 4, 6, 8):
        text = "#" + text
    try:
        rgba = ImageColor.getcolor(text, "RGBA")
    except ValueError:
        raise ValueError(
            f"{value!r} is not a colour (use a name such as white, #rrggbb or transparent)"
        ) from None
    assert isinstance(rgba, tuple)
    return (rgba[0], rgba[1], rgba[2], rgba[3])


def color_text(rgba: RGBA) -> str:
    """`#rrggbb`, or `#rrggbbaa` when not opaque."""
    return "#" + "".join(f"{c:02x}" for c in (rgba if rgba[3] != 255 else rgba[:3]))


Color = Annotated[
    RGBA,
    BeforeValidator(parse_color),
    PlainSerializer(color_text, return_type=str),
    WithJsonSchema({
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "integer"}}],
        "description": "a colour: name, #rrggbb[aa] or transparent",
    }),
]


def fill_for(image: Image.Image, color: RGBA | None) -> tuple[Image.Image, Any]:
    """The image (with alpha if `color` is see-through) and `color` as a pixel of its mode."""
    # Without a colour the fill is transparent for images with alpha, else white.
    # Palette images become RGB(A) first, so the fill is a colour and not an index.
    image = unpalette(image)
    if color is None:
        color = TRANSPARENT if has_alpha(image) else WHITE
    if color[3] < 255 and not has_alpha(image):
        image = with_alpha(image)
    if is_sixteen_bit(image) or image.mode in ("I", "F"):
        grey = (color[0] * 299 + color[1] * 587 + color[2] * 114) / 1000  # as Pillow's "L"
        value = grey * grey_scale(image)
        return image, value if image.mode == "F" else round(value)
    return image, Image.new("RGBA", (1, 1), color).convert(image.mode).getpixel((0, 0))

