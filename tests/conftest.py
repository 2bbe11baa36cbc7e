"""Shared fixtures: image files made on the fly, photo-like rather than flat."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest_plugins = ["clamd_server", "moto_server", "redis_server"]

MakeImage = Callable[..., bytes]


def photo_pixels(width: int, height: int, seed: int = 0) -> np.ndarray:
    """RGB pixels with smooth gradients, blobs and grain, like a photograph."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((height, width, 3), np.float32)
    for c in range(3):
        fx, fy, phase = rng.uniform(1, 6, 2), rng.uniform(1, 6, 2), rng.uniform(0, 6, 2)
        out[..., c] = 128 + 60 * np.sin(x / width * fx[0] + phase[0]) * np.cos(
            y / height * fy[0] + phase[1]
        ) + 40 * np.sin((x + y) / (width + height) * fx[1] * 6)
    out += rng.normal(0, 12, out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def image_bytes(fmt: str = "JPEG", size: tuple[int, int] = (64, 48), mode: str = "RGB",
                seed: int = 0, **save: Any) -> bytes:
    """An encoded image of `size` in `mode` and format `fmt`; `save` goes to Image.save."""
    image = Image.fromarray(photo_pixels(*size, seed=seed), "RGB")
    if mode != "RGB":
        image = image.convert(mode)
    out = io.BytesIO()
    image.save(out, fmt, **save)
    return out.getvalue()


def exif_with(orientation: int) -> bytes:
    """EXIF bytes that carry an orientation tag."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"
    return exif.tobytes()


@pytest.fixture
def make_image() -> MakeImage:
    """Factory: `make_image("PNG", (w, h), mode="RGBA", dpi=(300, 300))` -> bytes."""
    return image_bytes


def png_file(width: int, height: int, *, rows: int | None = None, bit_depth: int = 8,
             colour: int = 0) -> bytes:
    """A PNG of `width` x `height` whose first `rows` rows are stored (all rows by default).

    Zero rows compress to almost nothing, so a huge image is a small file: a
    decompression bomb, or with `rows=0` a header that claims a size it does not hold.
    """
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    row = b"\0" * (1 + (width * channels * bit_depth + 7) // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(height if rows is None else rows))
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", body + packer.flush()) + chunk(b"IEND", b""))
