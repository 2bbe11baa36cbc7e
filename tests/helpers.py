"""What tests of every kind need: waiting on a condition, test images, dropping files."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from hotfolder.engine import Rendered

T = TypeVar("T")
POLL_SECONDS = 0.02
# Runs argv[2:], then writes the peak resident memory (KiB) of it and its children to argv[1].
_MEASURE = ("import resource, subprocess, sys\n"
            "code = subprocess.call(sys.argv[2:])\n"
            "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
            "open(sys.argv[1], 'w').write(str(peak))\n"
            "sys.exit(code)\n")


def run_measured(command: list[str], peak_file: Path, **popen: Any) -> tuple[int, int]:
    """Run `command`; its exit code and the peak resident memory of it and its children, in bytes.

    It runs below a small Python of its own: Linux carries a process's peak memory across
    exec, so a command started straight from a large test process reports the test's size.
    """
    code = subprocess.call([sys.executable, "-c", _MEASURE, str(peak_file), *command], **popen)
    return code, int(peak_file.read_text()) * 1024


def wait_until(condition: Callable[[], T], timeout: float, what: str) -> T:
    """Poll `condition` until it returns something true, and return that; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(POLL_SECONDS)


# -- images ---------------------------------------------------------------------------------


def photo_pixels(width: int, height: int, seed: int = 0) -> np.ndarray:
    """RGB pixels with smooth gradients, blobs and grain, like a photograph."""
    rng = np.random.default_rng(seed)
    small_w, small_h = max(2, width // 8), max(2, height // 8)
    y, x = np.mgrid[0:small_h, 0:small_w].astype(np.float32)
    base = np.empty((small_h, small_w, 3), np.float32)
    for c in range(3):
        fx, fy, phase = rng.uniform(1, 6, 2), rng.uniform(1, 6, 2), rng.uniform(0, 6, 2)
        base[..., c] = 128 + 60 * np.sin(x / small_w * fx[0] + phase[0]) * np.cos(
            y / small_h * fy[0] + phase[1]
        ) + 40 * np.sin((x + y) / (small_w + small_h) * fx[1] * 6)
    smooth = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB").resize(
        (width, height), Image.Resampling.BILINEAR)
    grain = rng.integers(-12, 13, (height, width, 3), dtype=np.int16)
    return np.clip(np.asarray(smooth, np.int16) + grain, 0, 255).astype(np.uint8)


def ramp(size: tuple[int, int] = (64, 48), mode: str = "RGB", low: int = 0,
         high: int = 255) -> Image.Image:
    """A left-to-right grey ramp from `low` to `high`, converted to `mode`."""
    row = np.linspace(low, high, size[0]).round().astype(np.uint8)
    return Image.fromarray(np.tile(row, (size[1], 1)), "L").convert(mode)


def encoded(image: Image.Image, fmt: str, **save: Any) -> bytes:
    """The image saved in format `fmt`; `save` goes to Image.save."""
    out = io.BytesIO()
    image.save(out, fmt, **save)
    return out.getvalue()


def opened(rendered: Rendered, index: int = 0) -> Image.Image:
    """Output `index` of a rendering (0: the main one), opened as an image."""
    return Image.open(io.BytesIO(rendered.outputs[index].data))


def image_bytes(fmt: str = "JPEG", size: tuple[int, int] = (64, 48), mode: str = "RGB",
                seed: int = 0, **save: Any) -> bytes:
    """A photo-like image of `size` in `mode` and format `fmt`; other seeds give other pixels."""
    image = Image.fromarray(photo_pixels(*size, seed=seed), "RGB")
    return encoded(image if mode == "RGB" else image.convert(mode), fmt, **save)


def exif_with(orientation: int) -> bytes:
    """EXIF bytes that carry an orientation tag."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"
    return exif.tobytes()



def zlib_level(png: bytes) -> int:
    """The compression level class a PNG's zlib stream records (0 fastest ... 3 maximum)."""
    at = png.index(b"IDAT") + 4
    return png[at + 1] >> 6

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


def gif_file(width: int, height: int, frames: int) -> bytes:
    """A GIF whose logical screen is `width` x `height`, with `frames` frames of one pixel.

    A decoder draws every frame on the whole screen, so a few bytes a frame stand for
    width x height pixels each: a frame bomb, or with one frame a huge screen.
    """
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0" * 2
    one_pixel = (b"\x21\xf9\x04\x00\x0a\x00\x00\x00"  # shown for 100 ms
                 + b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
                 + b"\x02\x02\x44\x01\x00")  # LZW: clear, index 0, end
    return screen + one_pixel * frames + b"\x3b"


# -- dropping files -------------------------------------------------------------------------


def drop(root: Path, rel: str, data: bytes, *, chunk_bytes: int = 0,
         pause: float = 0.0) -> Path:
    """Put a file into the inbox of hot folder `root` as a user would; returns its path.

    By default it is written under a hidden temporary name and renamed, as a copy does;
    with `chunk_bytes` it is written in place, that many bytes at a time, `pause` seconds
    apart, as a slow network copy does.
    """
    target = root / "inbox" / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if not chunk_bytes:
        temp = target.with_name(f".{target.name}.part")
        temp.write_bytes(data)
        temp.rename(target)
        return target
    with target.open("wb") as out:
        for start in range(0, len(data), chunk_bytes):
            out.write(data[start:start + chunk_bytes])
            out.flush()
            time.sleep(pause)  # a deliberately slow writer: the file stays open meanwhile
    return target
