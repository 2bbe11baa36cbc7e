"""Scenes with known masks for scoring remove_background: subjects cut from real photographs,
composited onto plain, gradient and lightly noisy backdrops and onto photographed textures.

Everything is built at run time from installed packages, the same at every size and run:
- scikit-image's bundled data (no download): `horse` (silhouette, CC0, openclipart),
  `chelsea` (cat, CC0, Stefan van der Walt), `coffee` (CC0, Rachel Michetti),
  `astronaut` (public domain, NASA), `grass` (CC0, DeviantArt linolafett), `gravel` and
  `brick` (CC0, CC0Textures);
- Debian's gimp-data patterns (GPL-3+, the GIMP authors, /usr/share/doc/gimp-data/copyright):
  Wood/wood1 (wood grain), Fabric/burlap (woven fabric), Wood/parque1 (parquet floor tiles).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw
from skimage import data

Size = tuple[int, int]
Layer = tuple[np.ndarray, np.ndarray]  # colour (h, w, 3) float, alpha (h, w) 0..1
Draw = Callable[[ImageDraw.ImageDraw, float, float], None]

GIMP_PATTERNS = Path("/usr/share/gimp/2.0/patterns")
DESIGN_WIDTH = 500  # textures are scaled as if the scene were this wide, so sizes agree


def drawn_alpha(size: Size, draw: Draw) -> np.ndarray:
    """An anti-aliased alpha: drawn at four times the size (coordinates as fractions), averaged."""
    w, h = size
    big = Image.new("L", (w * 4, h * 4), 0)
    draw(ImageDraw.Draw(big), w * 4, h * 4)
    return np.asarray(big.resize(size, Image.Resampling.BOX), np.float32) / 255


def cover(picture: np.ndarray, size: Size) -> np.ndarray:
    """The picture scaled to cover `size` and cut to it from the middle (float RGB)."""
    w, h = size
    ph, pw = picture.shape[:2]
    scale = max(w / pw, h / ph)
    scaled = cv2.resize(picture, (max(w, round(pw * scale)), max(h, round(ph * scale))),
                        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    top, left = (scaled.shape[0] - h) // 2, (scaled.shape[1] - w) // 2
    return scaled[top:top + h, left:left + w].astype(np.float32)


def horse(size: Size) -> Layer:
    """The horse silhouette (thin legs, tail, ears) filled with a cat's fur."""
    w, h = size
    silhouette = (~data.horse()).astype(np.float32)  # True is background in the data set
    sh, sw = silhouette.shape
    scale = min(0.8 * w / sw, 0.85 * h / sh)
    small = cv2.resize(silhouette, (round(sw * scale), round(sh * scale)),
                       interpolation=cv2.INTER_LINEAR)
    alpha = np.zeros((h, w), np.float32)
    top, left = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
    alpha[top:top + small.shape[0], left:left + small.shape[1]] = small
    fur = cover(data.chelsea()[40:260, 120:330], size)
    return fur, np.clip(alpha, 0, 1)


def wheel(size: Size) -> Layer:
    """A rim with six thin spokes and a hub (six holes), in coffee-and-wood colours."""
    def draw(d: ImageDraw.ImageDraw, w: float, h: float) -> None:
        cx, cy, r = 0.5 * w, 0.5 * h, 0.4 * h
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        d.ellipse((cx - 0.82 * r, cy - 0.82 * r, cx + 0.82 * r, cy + 0.82 * r), fill=0)
        for k in range(6):
            angle = k * np.pi / 3 + 0.3
            d.line((cx, cy, cx + r * np.cos(angle), cy + r * np.sin(angle)), fill=255,
                   width=round(0.018 * h))
        d.ellipse((cx - 0.15 * r, cy - 0.15 * r, cx + 0.15 * r, cy + 0.15 * r), fill=255)
    return cover(data.coffee(), size), drawn_alpha(size, draw)


def lamb(size: Size) -> Layer:
    """A near-white woolly body (light on light backgrounds) with a darker head and legs."""
    def draw(d: ImageDraw.ImageDraw, w: float, h: float) -> None:
        for x, y, r in [(0.35, 0.45, 0.12), (0.47, 0.4, 0.13), (0.58, 0.44, 0.12),
                        (0.42, 0.56, 0.12), (0.55, 0.56, 0.12), (0.66, 0.5, 0.09)]:
            d.ellipse(((x - r) * w, (y - r * 1.25) * h, (x + r) * w, (y + r * 1.25) * h),
                      fill=255)
        d.ellipse((0.68 * w, 0.3 * h, 0.8 * w, 0.5 * h), fill=255)  # head
        for x in (0.38, 0.45, 0.55, 0.62):
            d.rectangle((x * w, 0.6 * h, (x + 0.025) * w, 0.85 * h), fill=255)
    alpha = drawn_alpha(size, draw)
    wool = cover(data.chelsea()[30:230, 150:330], size)
    wool = 255 - (255 - wool) * 0.3  # a pale fleece, 180-255
    dark = cover(data.chelsea()[150:300, 0:150], size) * 0.8
    x = np.arange(size[0])[None, :] / size[0]
    y = np.arange(size[1])[:, None] / size[1]
    dark_part = ((x > 0.67) & (y < 0.52)) | (y > 0.66)
    return np.where(dark_part[..., None], dark, wool), alpha


def portrait(size: Size) -> Layer:
    """Head and shoulders cut off by the bottom edge, filled from a portrait photograph."""
    def draw(d: ImageDraw.ImageDraw, w: float, h: float) -> None:
        d.ellipse((0.4 * w, 0.1 * h, 0.6 * w, 0.52 * h), fill=255)
        d.rectangle((0.46 * w, 0.45 * h, 0.54 * w, 0.62 * h), fill=255)
        d.ellipse((0.18 * w, 0.55 * h, 0.82 * w, 1.5 * h), fill=255)
    return cover(data.astronaut(), size), drawn_alpha(size, draw)


SUBJECTS: dict[str, Callable[[Size], Layer]] = {"horse": horse, "wheel": wheel, "lamb": lamb,
                                                 "portrait": portrait}


def gimp_pattern(name: str) -> np.ndarray:
    """A GIMP pattern file (.pat: a big-endian header, then the raw pixels) as RGB."""
    raw = (GIMP_PATTERNS / f"{name}.pat").read_bytes()
    header, _, width, height, depth = struct.unpack(">5I", raw[:20])
    pixels = np.frombuffer(raw[header:header + width * height * depth], np.uint8)
    pixels = pixels.reshape(height, width, depth)
    return np.repeat(pixels, 3, axis=2) if depth == 1 else pixels[..., :3]


def tinted(grey: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """A grey photograph coloured: its light parts take `colour`, its dark parts go black."""
    return grey[..., None].astype(np.float32) / 255 * np.array(colour, np.float32) * 1.25


TEXTURES: dict[str, Callable[[], np.ndarray]] = {
    "lawn": lambda: tinted(data.grass(), (95, 160, 60)),
    "gravel": lambda: tinted(data.gravel(), (190, 180, 165)),
    "brick": lambda: tinted(data.brick(), (200, 110, 80)),
    "wood": lambda: gimp_pattern("Wood/wood1"),
    "fabric": lambda: gimp_pattern("Fabric/burlap"),
    "tiles": lambda: gimp_pattern("Wood/parque1"),
}


def textured(name: str, size: Size) -> np.ndarray:
    """A photographed texture repeated to fill `size`, at a scale that follows the scene's."""
    w, h = size
    tile = TEXTURES[name]().astype(np.float32)
    scale = w / DESIGN_WIDTH * (2.0 if tile.shape[1] < 200 else 1.0)  # small tiles drawn larger
    tile = cv2.resize(tile, (max(1, round(tile.shape[1] * scale)),
                             max(1, round(tile.shape[0] * scale))), interpolation=cv2.INTER_AREA
                      if scale < 1 else cv2.INTER_CUBIC)
    reps = (h // tile.shape[0] + 1, w // tile.shape[1] + 1, 1)
    return np.tile(tile, reps)[:h, :w]


def backdrop(kind: str, size: Size) -> np.ndarray:
    """A plain light grey, a diagonal gradient, a lightly noisy paper, or a real texture."""
    if kind in TEXTURES:
        return textured(kind, size)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "plain":
        return np.broadcast_to(np.array((236, 236, 232), np.float32), (h, w, 3))
    if kind == "gradient":
        t = ((x / w + y / h) / 2)[..., None]
        return (1 - t) * np.array((250, 248, 240), np.float32) + t * np.array(
            (165, 175, 200), np.float32)
    rng = np.random.default_rng(5)
    grain = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0),
                             max(1.0, w / 400))
    grain /= grain.std()
    stripes = np.sin(y / h * 60 + 3 * np.sin(x / w * 5))
    out = np.empty((h, w, 3), np.float32)
    for c, base in enumerate((222, 205, 180)):
        out[..., c] = base + 6 * grain + 5 * stripes + rng.normal(0, 3, (h, w))
    return out


PLAIN_BACKDROPS = ("plain", "gradient", "noisy")
BACKDROPS = PLAIN_BACKDROPS + tuple(TEXTURES)


def target(method: str, kind: str) -> float | None:
    """The IoU a method must reach on every subject on a backdrop, or None where none is set."""
    if kind in ("plain", "gradient"):
        return 0.95 if method in ("auto", "grabcut") else None
    if kind in PLAIN_BACKDROPS:
        return None
    return 0.85 if method == "grabcut" else 0.70


def composite(layer: Layer, kind: str, size: Size) -> tuple[np.ndarray, np.ndarray]:
    """A layer composited onto a backdrop (RGB uint8) and its known mask (alpha >= 0.5)."""
    colour, alpha = layer
    a = alpha[..., None]
    image = colour * a + backdrop(kind, size) * (1 - a)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), alpha >= 0.5


def scene(subject: str, kind: str, size: Size) -> tuple[np.ndarray, np.ndarray]:
    """A subject of the set composited onto a backdrop, and its known mask."""
    return composite(SUBJECTS[subject](size), kind, size)


def iou(found: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two masks."""
    return float((found & truth).sum() / max(1, (found | truth).sum()))
