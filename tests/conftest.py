"""Shared fixtures: image files made on the fly, photo-like rather than flat."""

from __future__ import annotations

import http.server
import io
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from service_helpers import Daemon

pytest_plugins = ["clamd_server", "moto_server", "redis_server"]

MakeImage = Callable[..., bytes]
RunCli = Callable[..., tuple[int, str, str]]

# A recipe of nine lists of nine, nested: 220 bytes that stand for 9^6 (531441) values.
YAML_BOMB = "".join(
    f"{name}: &{name} [{', '.join([item] * 9)}]\n"
    for name, item in zip("abcde", ['"x"', "*a", "*b", "*c", "*d"], strict=True)
) + f"steps: [{', '.join(['*e'] * 9)}]\n"


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


class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every GET with a small PNG and remembers the path asked for."""

    hits: list[str] = []  # noqa: RUF012

    def do_GET(self) -> None:
        Recorder.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        self.wfile.write(image_bytes("PNG", (10, 10)))

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def web() -> Iterator[str]:
    """A local web server that records every request in `Recorder.hits`; yields its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    Recorder.hits.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> RunCli:
    """Run `hotfolder ARGS...` in this process from folder `cwd`: (exit code, stdout, stderr)."""
    from hotfolder.cli import main  # noqa: PLC0415  (only the tests that use it import it)

    def run(cwd: Path, *args: str | Path) -> tuple[int, str, str]:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(cwd)
            code = main([str(arg) for arg in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Services started by a test; any still running at the end are killed."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        if daemon.process is not None:
            daemon.kill()
