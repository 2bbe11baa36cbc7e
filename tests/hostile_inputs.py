"""Hostile inputs made from scratch: odd TIFFs, PNG chunk bombs, JPEG scan bombs, SVG bombs."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from base64 import b64encode
from pathlib import Path

from PIL import Image

from helpers import encoded, image_bytes, png_file

SAMPLES = Path(__file__).parent.parent / "config" / "samples"
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto showpage\n"


def badge_svg() -> bytes:
    """The sample SVG of the repository: a small, well-formed drawing."""
    return (SAMPLES / "badge.svg").read_bytes()


def sample(fmt: str) -> bytes:
    """A photo-like image of 200 x 150 pixels in format `fmt` ('svg' gives the badge)."""
    return badge_svg() if fmt == "svg" else image_bytes(fmt.upper(), (200, 150), seed=7)


def truncated(fmt: str) -> bytes:
    """The first half of a file of format `fmt`, as a copy that broke off leaves it."""
    data = sample(fmt)
    return data[: len(data) // 2]


def corrupted(fmt: str) -> bytes:
    """A file of format `fmt` with 32 bytes in its middle overwritten, as a bad disk leaves it."""
    data = bytearray(sample(fmt))
    middle = len(data) // 2
    data[middle:middle + 32] = b"\xff\x00<&" * 8
    return bytes(data)


# -- TIFF ---------------------------------------------------------------------------------------


def tiff_file(width: int, height: int, *, rows_per_strip: int | None = None,
              tile: tuple[int, int] | None = None) -> bytes:
    """An uncompressed 8-bit grey TIFF cut into strips of `rows_per_strip` rows or into tiles.

    Every strip or tile points at one shared block of data, so that thousands of them fit in a
    small file; tile sizes that are not multiples of 16 are outside the TIFF standard.
    """
    if tile is not None:
        across, down = -(-width // tile[0]), -(-height // tile[1])
        pieces, piece_bytes = across * down, tile[0] * tile[1]
        layout = [(322, 3, tile[0]), (323, 3, tile[1])]
        offsets_tag, counts_tag = 324, 325
    else:
        rows = rows_per_strip or height
        pieces, piece_bytes = -(-height // rows), width * rows
        layout = [(278, 4, rows)]
        offsets_tag, counts_tag = 273, 279
    data_at = 8
    arrays_at = data_at + piece_bytes
    counts_at = arrays_at + 4 * pieces
    ifd_at = counts_at + 4 * pieces
    tags = sorted([(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1),
                   (277, 3, 1), *layout])
    entries = [struct.pack("<HHII", tag, kind, 1, value) if kind == 4
               else struct.pack("<HHIHH", tag, kind, 1, value, 0) for tag, kind, value in tags]
    entries += [struct.pack("<HHII", offsets_tag, 4, pieces, arrays_at),
                struct.pack("<HHII", counts_tag, 4, pieces, counts_at)]
    entries.sort(key=lambda entry: struct.unpack("<H", entry[:2])[0])
    block = bytes(range(256)) * (piece_bytes // 256) + bytes(range(piece_bytes % 256))
    return (b"II*\0" + struct.pack("<I", ifd_at) + block
            + struct.pack(f"<{pieces}I", *[data_at] * pieces)
            + struct.pack(f"<{pieces}I", *[piece_bytes] * pieces)
            + struct.pack("<H", len(entries)) + b"".join(entries) + b"\0\0\0\0")


# -- PNG ----------------------------------------------------------------------------------------


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk with its length and CRC."""
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


def png_with_chunk(kind: bytes, body: bytes) -> bytes:
    """A small PNG with one more chunk right after its header."""
    data = image_bytes("PNG", (32, 24), seed=8)
    header_end = 8 + 25  # signature, then IHDR's length, type, 13 bytes and CRC
    return data[:header_end] + png_chunk(kind, body) + data[header_end:]


def zeros_compressed(size: int) -> bytes:
    """`size` zero bytes, deflated: about a thousandth of that on disk."""
    return zlib.compress(b"\0" * size, 9)


BOMB_BYTES = 200 * 2**20  # what a chunk bomb decompresses to


def ztxt_bomb() -> bytes:
    """A PNG whose compressed text chunk inflates to 200 MB."""
    return png_with_chunk(b"zTXt", b"Comment\0\0" + zeros_compressed(BOMB_BYTES))


def itxt_bomb() -> bytes:
    """A PNG whose international text chunk inflates to 200 MB."""
    return png_with_chunk(b"iTXt", b"Comment\0\x01\0\0\0" + zeros_compressed(BOMB_BYTES))


def icc_bomb() -> bytes:
    """A PNG whose colour profile chunk inflates to 200 MB."""
    return png_with_chunk(b"iCCP", b"profile\0\0" + zeros_compressed(BOMB_BYTES))


TEXT_MARK = b"hidden-text-"


def large_text() -> bytes:
    """A PNG of 2 kB whose text chunk inflates to 900 kB: much more than the file, within limits."""
    return png_with_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(TEXT_MARK * 75_000, 9))


# -- JPEG ---------------------------------------------------------------------------------------


def last_scan(data: bytes) -> tuple[int, int]:
    """(start, end) of the last scan of a JPEG: its SOS segment and entropy-coded data."""
    start = data.rindex(b"\xff\xda")
    end = data.index(b"\xff\xd9", start)
    return start, end


def many_scans(extra: int) -> bytes:
    """A progressive JPEG of one flat colour (12 megapixels) with its last scan repeated
    `extra` more times: each repeat is a few bytes, and a pass over every coefficient."""
    data = encoded(Image.new("RGB", (4000, 3000), (120, 130, 140)), "JPEG", progressive=True)
    start, end = last_scan(data)
    return data[:end] + data[start:end] * extra + data[end:]


def jpeg_with_zip() -> bytes:
    """A JPEG with a ZIP archive appended: both programs read it."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("payload.txt", "hidden")
    return image_bytes("JPEG", (80, 60), seed=9) + archive.getvalue()


# -- SVG ----------------------------------------------------------------------------------------

SVG_OPEN = ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'
            ' width="{w}" height="{h}">')


def use_bomb(levels: int = 9, fan_out: int = 10) -> bytes:
    """Billion laughs without entities: each group uses the one before `fan_out` times."""
    groups = ['<g id="l0"><rect width="1" height="1"/></g>']
    groups += [f'<g id="l{n}">' + f'<use xlink:href="#l{n - 1}"/>' * fan_out + "</g>"
               for n in range(1, levels + 1)]
    return (SVG_OPEN.format(w=100, h=100) + "<defs>" + "".join(groups) + "</defs>"
            + f'<use xlink:href="#l{levels}"/></svg>').encode()


def huge_svg() -> bytes:
    """An SVG of 200 bytes that claims to be 10^6 x 10^6 pixels."""
    return (SVG_OPEN.format(w=1000000, h=1000000) + '<rect width="10" height="10"/></svg>').encode()


SCRIPT_MARK = "stolen-cookie"


def svg_with_script() -> bytes:
    """An SVG with a script and an event handler (neither may ever run)."""
    return (SVG_OPEN.format(w=40, h=30)
            + f'<script>fetch("http://127.0.0.1:9/{SCRIPT_MARK}")</script>'
            + f'<rect width="40" height="30" fill="red" onload="alert(\'{SCRIPT_MARK}\')"/>'
            + "</svg>").encode()


def deep_svg(depth: int = 100_000) -> bytes:
    """An SVG with groups nested `depth` deep."""
    return (SVG_OPEN.format(w=10, h=10) + "<g>" * depth + "</g>" * depth + "</svg>").encode()


def svg_with_large_raster() -> bytes:
    """An SVG of 10 x 10 that embeds a PNG of 20000 x 20000 pixels (400 megapixels)."""
    inner = b64encode(png_file(20000, 20000)).decode()
    return (SVG_OPEN.format(w=10, h=10) + f'<image width="10" height="10"'
            f' xlink:href="data:image/png;base64,{inner}"/></svg>').encode()
