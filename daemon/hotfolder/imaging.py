"""Safe decoding and encoding: the only place where untrusted bytes become pixels (SPEC 8.5).

Decoding trusts the content, never the file name: libmagic names the type, and only
allow-listed types reach a decoder, which is told the one format it may use. The pixel
count is checked before any pixel is decoded, a truncated file is an error, and an SVG
is checked with defusedxml and refused when it refers to anything outside itself. Every
decoded image is turned upright by its EXIF orientation, and the tag is dropped.
An animation or a multi-page file is counted whole before its first pixel is decoded (all
frames together must fit the pixel budget); its later frames are decoded one at a time, on
demand, only for an output format that holds them.
Encoding always rebuilds the file from pixels, so data hidden after the image is gone,
and writes metadata only when asked to keep it.
"""

from __future__ import annotations

import base64
import io
import math
import re
import urllib.parse
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element, ParseError, tostring

import magic
import resvg_py
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from PIL import Image

from hotfolder import memory
from hotfolder.canvas import Canvas, megapixels, pixels_over
from hotfolder.config import LimitsConfig
from hotfolder.errors import InputError, RecipeError
from hotfolder.exif import exif_summary, orientation, read_exif, upright
from hotfolder.formats import BY_MEDIA_TYPE, FORMATS, NAMES, FormatName
from hotfolder.lengths import CSS_DPI, read_length
from hotfolder.modes import to_working_mode

PNG_FAST_LEVEL = 1
# At the fast level, zlib's run-length strategy (Z_RLE) makes a photograph's PNG about a tenth
# smaller, and quicker, than the level's own matching, which text and line art need instead:
# an 8-bit image is taken for a photograph when each colour band holds at least this many
# values, each on a thousandth of the pixels or more.
PNG_RUNS = 3
PHOTO_TONES = 64
SNIFF_BYTES = 8192
# Starts that libmagic names as these types whatever follows (the tests hold it to that), so
# that the photos of a backlog are named without it: libmagic reads its whole database for
# each. A JPEG's start of image and a marker's first byte, with a byte of that marker after
# them; a PNG's signature and the length and name of its header chunk.
KNOWN_STARTS: tuple[tuple[bytes, FormatName], ...] = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", "png"),
)
# Encoders write about a dozen scans; each scan is a pass over every coefficient of the image,
# so a few bytes a scan can make a small progressive JPEG take hours to decode.
MAX_JPEG_SCANS = 100
# Pillow refuses PNG text and colour-profile chunks that decompress to more than this.
MAX_PNG_CHUNK_MB = 1
# The renderer (resvg) stops expanding an SVG at this many elements.
SVG_MAX_NODES = 1_000_000

SizeHint = Callable[[tuple[int, int], int], tuple[int, int] | None]
"""Given a stored size and EXIF orientation, the smallest stored size the recipe needs."""


def sniff(data: bytes, formats: Sequence[str] = NAMES) -> str:
    """The type of `data` by its content ('jpeg', 'png', ...); InputError unless in `formats`."""
    if not data:
        raise InputError("the file is empty (0 bytes)")
    head = data[:SNIFF_BYTES]
    kind: str | None = next((known for start, known in KNOWN_STARTS
                             if len(head) > len(start) and head.startswith(start)), None)
    if kind is None:
        kind = _named_by_libmagic(head)
    if kind not in formats:
        raise InputError(
            f"{kind} files are not accepted here (limits.formats: {', '.join(formats)})"
        )
    return kind


def _named_by_libmagic(head: bytes) -> str:
    """The accepted format libmagic names for these first bytes; InputError for any other."""
    media = magic.from_buffer(head, mime=True)
    kind: str | None = BY_MEDIA_TYPE.get(media)
    if kind is None and media in ("text/xml", "application/xml", "text/plain", "text/html"):
        kind = "svg" if b"<svg" in head else None
    if kind is None:
        what = magic.from_buffer(head).split(",")[0]
        raise InputError(
            f"the file is {_article(what)} {what} ({media}), not an image type hotfolder accepts"
            f" ({', '.join(sorted(FORMATS))})",
            detail=f"libmagic: {media}",
        )
    return kind


def _article(what: str) -> str:
    return "an" if what[:1].lower() in "aeiou" else "a"


@dataclass(frozen=True)
class Frame:
    """One frame of an animation, or one page of a document, and how long it is shown."""

    image: Image.Image
    duration: int | None = None  # milliseconds; None for a page or an untimed frame


def _no_frames() -> Iterator[Frame]:
    return iter(())


@dataclass(frozen=True)
class Decoded:
    """A decoded input: the canvas (its first frame), its detected type, its stored size, an
    EXIF summary, and for an animation or a multi-page file the count, timing and later frames.
    """

    canvas: Canvas
    kind: str
    size: tuple[int, int]
    exif: dict[str, Any]
    frames: int = 1
    duration: int | None = None  # of the first frame, in milliseconds
    loop: int | None = None  # times an animation is played again; 0: for ever; None: once
    later: Callable[[], Iterator[Frame]] = field(default=_no_frames, compare=False)
    """Decodes the frames after the first, one at a time, upright and in a working mode."""


def decode(
    data: bytes, limits: LimitsConfig, hint: SizeHint | None = None, grey: bool = False
) -> Decoded:
    """Pixels from untrusted bytes, within `limits`.

    `hint` lets decoding shrink early; `grey` says that only the grey levels will be used,
    which a JPEG decoder gives without computing colours.
    """
    kind = sniff(data, limits.formats)
    if kind == "svg":
        data = rasterise_svg(data, limits, hint)
        decoded = _decode_raster(data, "png", limits, None)
        return Decoded(decoded.canvas, "svg", decoded.size, {})
    return _decode_raster(data, kind, limits, hint, grey)


@contextmanager
def _decoding(kind: str, limits: LimitsConfig, frame: str = "") -> Iterator[None]:
    """Pillow's errors and bomb warnings while decoding, as InputErrors in plain words.

    `frame` (`frame 3 of 5`) names the frame being decoded in the message.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Corrupt EXIF data": the pixels may be fine
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = limits.max_pixels  # Pillow's own check, at our limit
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        size_text = f"{int(claimed.group(1)) / 1e6:.0f} megapixels" if claimed else "more pixels"
        raise InputError(
            f"the image claims {size_text}, over the limit of {limits.max_pixels / 1e6:.0f}"
            " megapixels (limits.max_pixels); refused before decoding as a decompression bomb",
            detail=str(exc),
        ) from None
    except InputError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        text = str(exc)
        if "Decompressed data too large" in text:
            raise InputError(
                f"the {kind} file holds a text or colour-profile chunk that decompresses to more"
                f" than {MAX_PNG_CHUNK_MB} MB, the limit for metadata; refused as a"
                " decompression bomb", detail=f"{type(exc).__name__}: {text}",
            ) from None
        reason = "truncated" if "truncated" in text else "damaged or not a valid image"
        where = f" ({frame} could not be decoded)" if frame else ""
        raise InputError(
            f"the {kind} file is {reason}{where}", detail=f"{type(exc).__name__}: {text}"
        ) from None


def _decode_raster(
    data: bytes, kind: str, limits: LimitsConfig, hint: SizeHint | None, grey: bool = False
) -> Decoded:
    pillow = FORMATS[kind].pillow
    assert pillow is not None  # an SVG is drawn as a PNG first
    if kind == "jpeg":
        check_scans(data)
    with _decoding(kind, limits):
        im = Image.open(io.BytesIO(data), formats=[pillow])
        size = im.size
        check_pixels(size, limits)
        frames = count_frames(im, kind, limits) if FORMATS[kind].frames else 1
        exif = read_exif(im)
        turn = orientation(exif)
        if kind == "jpeg":
            need = hint(size, turn) if hint is not None else None
            if need is not None and not (need[0] < size[0] and need[1] < size[1]):
                need = None
            if need is not None or grey:
                im.draft("L" if grey else None, need)
        im.load()
    info = im.info
    dpi = info.get("dpi")
    first = to_working_mode(im)
    canvas = Canvas(
        image=first.copy() if frames > 1 and first is im else first,  # `im` moves on
        dpi=(float(dpi[0]), float(dpi[1])) if dpi and dpi[0] and dpi[1] else None,
        exif=info.get("exif") if exif is not None and info.get("exif") else None,
        icc_profile=None if im.mode == "CMYK" else info.get("icc_profile") or None,
    )

    def later() -> Iterator[Frame]:
        for number in range(1, frames):
            with _decoding(kind, limits, f"frame {number + 1} of {frames}"):
                im.seek(number)
                check_pixels(im.size, limits, frames)  # a GIF frame may enlarge the screen
                im.load()
            image = to_working_mode(im)
            image = upright(Canvas(image.copy() if image is im else image), turn).image
            yield Frame(image, im.info.get("duration"))

    return Decoded(upright(canvas, turn), kind, size,
                   exif_summary(exif) if exif is not None else {}, frames=frames,
                   duration=info.get("duration"), loop=info.get("loop"), later=later)


def jpeg_scans(data: bytes, up_to: int | None = None) -> int:
    """The scans (SOS segments) of a JPEG, counted from its markers without decoding; at most
    `up_to` of them are counted."""
    scans, at = 0, 2
    while at + 4 <= len(data) and scans != up_to:
        if data[at] != 0xFF:
            break  # damaged: the decoder says so
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0xD9:  # end of image
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            at += 2
            continue
        at += 2 + int.from_bytes(data[at + 2:at + 4], "big")
        if marker == 0xDA:
            scans += 1
            at = _end_of_entropy_data(data, at)
    return scans


# A marker inside entropy-coded data: 0xFF followed by neither a stuffed zero nor a restart.
ENTROPY_END = re.compile(rb"\xff[^\x00\xd0-\xd7]")


def _end_of_entropy_data(data: bytes, at: int) -> int:
    """Where the entropy-coded data that starts at `at` ends: at its next marker."""
    found = ENTROPY_END.search(data, at)
    return found.start() if found else len(data)


def check_scans(data: bytes) -> None:
    """InputError when a JPEG has more scans than MAX_JPEG_SCANS."""
    if jpeg_scans(data, up_to=MAX_JPEG_SCANS + 1) > MAX_JPEG_SCANS:
        raise InputError(
            f"the jpeg file has more than {MAX_JPEG_SCANS} scans, the limit for a progressive"
            " JPEG; refused before decoding, as each scan is a pass over the whole image")


def count_frames(im: Image.Image, kind: str, limits: LimitsConfig) -> int:
    """The frames (or pages) of an opened file, read from its headers; InputError when all of
    them together are over limits.max_pixels."""
    frames: int = getattr(im, "n_frames", 1)
    if frames == 1:
        return 1
    sizes = [im.size] * frames
    if FORMATS[kind].frames == "pages":  # each may have its own size, read from its header
        for number in range(1, frames):
            im.seek(number)
            sizes[number] = im.size
        im.seek(0)
    largest = max(sizes, key=lambda size: size[0] * size[1])
    check_pixels(largest, limits, frames, sum(width * height for width, height in sizes))
    return frames


def check_size(size: int, limits: LimitsConfig) -> None:
    """InputError when a file of `size` bytes is over limits.max_file_mb."""
    if size > limits.max_file_bytes:
        raise InputError(
            f"the file is {size / 2**20:.1f} MB, over the limit of {limits.max_file_mb:g} MB"
            " (limits.max_file_mb)"
        )


def check_pixels(size: tuple[int, int], limits: LimitsConfig, frames: int = 1,
                 total: int | None = None) -> None:
    """InputError when `frames` images of `size` (or `total` pixels) are over limits.max_pixels."""
    width, height = size
    if width <= 0 or height <= 0:
        raise InputError(f"the image claims an impossible size of {width} x {height} pixels")
    over = pixels_over(size, limits.max_pixels, frames, total)
    if over:
        raise InputError(f"the image {'has' if frames > 1 else 'is'} {over}")


# --- SVG -----------------------------------------------------------------------------

SVG_BYTES_PER_PIXEL = 12  # RGBA canvas, then at most as much again for the PNG, twice
URL_REF = re.compile(r"url\(\s*['\"]?\s*([^)'\"\s]*)", re.IGNORECASE)
SAFE_DATA = re.compile(r"data:image/(png|jpeg|gif|webp)[;,]", re.IGNORECASE)
EMBEDDED_FORMATS = ["PNG", "JPEG", "GIF", "WEBP"]
# The renderer crashes on elements nested about 250 deep, and serialising recurses per level.
MAX_SVG_DEPTH = 128


def rasterise_svg(data: bytes, limits: LimitsConfig, hint: SizeHint | None = None) -> bytes:
    """PNG bytes of a self-contained SVG; InputError for entities or outside references."""
    try:
        root = fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise InputError(
            "the SVG declares XML entities, which hotfolder never expands",
            detail=f"{type(exc).__name__}: {exc}",
        ) from None
    except ParseError as exc:
        raise InputError("the SVG is not well-formed XML", detail=str(exc)) from None
    if not root.tag.endswith("svg"):
        raise InputError(f"the file is XML but its root element is {root.tag!r}, not an svg")
    depth = svg_depth(root)
    if depth > MAX_SVG_DEPTH:
        raise InputError(f"the SVG nests its elements {depth} levels deep, more than the"
                         f" {MAX_SVG_DEPTH} levels hotfolder draws")
    refs = list(references(root))
    outside = next((ref for ref in refs if not _internal(ref)), None)
    if outside is not None:
        raise InputError(
            f"the SVG refers to an outside resource ({outside[:80]}), which hotfolder never"
            " loads; embed images in the SVG instead",
            detail=outside,
        )
    check_embedded([ref for ref in refs if SAFE_DATA.match(ref.strip())], limits)
    width, height = svg_size(root)
    zoom = 1.0
    if hint is not None:
        need = hint((round(width), round(height)), 1)
        if need is not None:
            zoom = max(need[0] / width, need[1] / height)
    if pixels_over((round(width * zoom), round(height * zoom)), limits.max_pixels):
        zoom = 1.0  # drawn at its own size; the step that asked for more is refused by name
    check_pixels((round(width), round(height)), limits)
    root.set("width", f"{width:.4f}")  # the renderer reads plain pixel lengths only
    root.set("height", f"{height:.4f}")
    text = tostring(root, encoding="unicode")
    # The renderer ends the process when an allocation fails: its canvas, the PNG it encodes
    # and our copy of that must fit under the worker's memory cap beforehand.
    memory.reserve(SVG_BYTES_PER_PIXEL * round(width * zoom) * round(height * zoom))
    try:
        png = resvg_py.svg_to_bytes(
            svg_string=text, zoom=zoom, skip_system_fonts=False, resources_dir=None
        )
    except ValueError as exc:
        if "nodes limit reached" in str(exc):
            raise InputError(
                "the SVG could not be drawn: its <use> references expand to more than"
                f" {SVG_MAX_NODES:,} elements, the renderer's limit", detail=str(exc)) from None
        raise InputError("the SVG could not be drawn", detail=str(exc)) from None
    except BaseException as exc:  # a panic in the renderer arrives as pyo3's PanicException
        if type(exc).__name__ != "PanicException":
            raise
        raise InputError("the SVG could not be drawn", detail=f"renderer panic: {exc}") from None
    return bytes(png)


def svg_depth(root: Element) -> int:
    """How deep the SVG's elements nest (the root alone is 1), counted without recursion."""
    deepest, level = 0, [(root, 1)]
    while level:
        element, depth = level.pop()
        deepest = max(deepest, depth)
        level.extend((child, depth + 1) for child in element)
    return deepest


def references(root: Element) -> Iterator[str]:
    """Every reference in the SVG that a renderer would load, in document order.

    Links (`<a href>`) are not loaded by a renderer and are left out; scripts never run;
    `@import` and `xml:base` come as text that is never internal.
    """
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1].lower()
        if tag == "style" and element.text:
            if "@import" in element.text.lower():
                yield "@import in <style>"
            yield from URL_REF.findall(element.text)
        for name, raw in element.attrib.items():
            local = name.rsplit("}", 1)[-1].lower()
            value = str(raw)
            if local in ("href", "src"):
                if tag != "a":
                    yield value
            elif local == "base":
                yield f"xml:base {value}"
            else:
                yield from URL_REF.findall(value)


def check_embedded(uris: Sequence[str], limits: LimitsConfig) -> None:
    """InputError unless the images embedded as data: URIs, all together, fit limits.max_pixels.

    Each one's size is read from its header; none is decoded here.
    """
    sizes = [embedded_size(uri, limits) for uri in uris]
    total = sum(width * height for width, height in sizes)
    if total > limits.max_pixels:
        largest = max(sizes, key=lambda size: size[0] * size[1])
        raise InputError(
            f"the SVG embeds {len(sizes)} images of {megapixels(total)} megapixels in all (the"
            f" largest {largest[0]} x {largest[1]} pixels), over the limit of"
            f" {megapixels(limits.max_pixels)} megapixels (limits.max_pixels)")


def embedded_size(uri: str, limits: LimitsConfig) -> tuple[int, int]:
    """The pixel size of an image embedded as a data: URI, read from its header; InputError
    when it is damaged or alone over limits.max_pixels."""
    header, _, payload = uri.strip().partition(",")
    try:
        with _decoding("embedded", limits):
            if header.lower().endswith(";base64"):
                data = base64.b64decode(re.sub(r"\s+", "", payload), validate=True)
            else:
                data = urllib.parse.unquote_to_bytes(payload)
            with Image.open(io.BytesIO(data), formats=EMBEDDED_FORMATS) as im:
                check_pixels(im.size, limits)
                return im.size
    except InputError as exc:
        raise InputError(f"an image embedded in the SVG is refused: {exc.message}",
                         detail=exc.detail) from None


def _internal(ref: str) -> bool:
    ref = ref.strip()
    return ref.startswith("#") or bool(SAFE_DATA.match(ref))


def svg_size(root: Element) -> tuple[float, float]:
    """The drawing size in CSS pixels from width/height or the viewBox (100 x 100 otherwise)."""
    box = _numbers(root.get("viewBox", ""))
    sizes = []
    for attr, index in (("width", 2), ("height", 3)):
        length = read_length(root.get(attr, ""))
        if length is not None:
            sizes.append(length.pixels(CSS_DPI))
        elif box is not None and len(box) == 4:
            sizes.append(box[index])
        else:
            sizes.append(100.0)
    width, height = sizes
    if not (math.isfinite(width) and math.isfinite(height) and width >= 1 and height >= 1):
        raise InputError(f"the SVG has no drawable size ({width:g} x {height:g} pixels)")
    return width, height


def _numbers(text: str) -> list[float] | None:
    """The numbers of an attribute such as viewBox, or None when it is not a list of numbers."""
    try:
        return [float(v) for v in re.split(r"[\s,]+", text.strip()) if v] or None
    except ValueError:
        return None


# --- encoding ------------------------------------------------------------------------


def encode(canvas: Canvas, fmt: str, settings: dict[str, Any], frames: Sequence[Frame] = (),
           loop: int | None = None) -> bytes:
    """The canvas as a file of format `fmt`, rebuilt from pixels; `settings` as in OutputSpec.

    `frames`, when more than one, are written as an animation played `loop` more times (GIF,
    WebP) or as pages (TIFF); the first of them is the canvas's image.
    """
    if fmt == "svg":
        if canvas.vector is None:
            raise RecipeError("SVG output needs a step that makes vectors (trace)")
        return canvas.vector.encode("utf-8")
    background = settings.get("background") or "white"
    image = for_format(canvas.image, fmt, background)
    options: dict[str, Any] = {}
    dpi = settings.get("dpi") or canvas.dpi
    if dpi and FORMATS[fmt].dpi:
        options["dpi"] = (dpi, dpi) if isinstance(dpi, int | float) else tuple(dpi)
    keep = settings.get("metadata") == "keep"
    if keep and canvas.exif and FORMATS[fmt].exif:
        options["exif"] = canvas.exif
    if canvas.icc_profile and _icc_fits(canvas.icc_profile, image.mode):
        options["icc_profile"] = canvas.icc_profile
    quality = int(settings.get("quality") or 90)
    if fmt == "jpeg":
        options.update(quality=quality, progressive=bool(settings.get("progressive")))
    elif fmt == "png":
        level = settings.get("compression")
        options["compress_level"] = PNG_FAST_LEVEL if level is None else int(level)
        if level is None and continuous_tone(image):
            options["compress_type"] = PNG_RUNS
    elif fmt == "webp":
        options.update(quality=quality, lossless=bool(settings.get("lossless")), method=4)
    elif fmt == "tiff":
        options["compression"] = "tiff_lzw"
    if len(frames) > 1:
        options.update(_frame_options(frames, fmt, loop, background))
    out = io.BytesIO()
    image.save(out, FORMATS[fmt].pillow, **options)
    return out.getvalue()


def continuous_tone(image: Image.Image) -> bool:
    """Whether an 8-bit image looks like a photograph (see PHOTO_TONES), not drawn art."""
    if image.mode not in ("L", "LA", "RGB", "RGBA"):
        return False
    histogram, least = image.histogram(), image.width * image.height / 1000
    colours = len(image.getbands()) - image.mode.endswith("A")
    return all(sum(count >= least for count in histogram[band * 256:(band + 1) * 256])
               >= PHOTO_TONES for band in range(colours))


def _frame_options(frames: Sequence[Frame], fmt: str, loop: int | None,
                   background: str) -> dict[str, Any]:
    """Pillow's options that write the frames after the first, with their timing."""
    later = [for_format(frame.image, fmt, background) for frame in frames[1:]]
    options: dict[str, Any] = {"save_all": True, "append_images": later}
    if FORMATS[fmt].frames == "pages":
        return options
    durations = [frame.duration for frame in frames]
    if any(duration is not None for duration in durations):
        options["duration"] = [duration or 0 for duration in durations]
    if loop is not None:
        options["loop"] = loop
    elif fmt == "webp":
        options["loop"] = 1  # played once, as a GIF without a loop count
    if fmt == "gif" and any(frame.image.has_transparency_data for frame in frames):
        options["disposal"] = 2  # each frame drawn on a cleared screen, not over the last
    return options


def for_format(image: Image.Image, fmt: str, background: str = "white") -> Image.Image:
    """The image in a mode `fmt` can store; transparency is flattened on `background` where lost."""
    grey = Image.getmodebase(image.mode) == "L"
    alpha = image.has_transparency_data
    if alpha and not FORMATS[fmt].alpha:
        rgba = image.convert("LA" if grey else "RGBA")
        image = Image.new(rgba.mode[:-1], image.size, background)
        image.paste(rgba.convert(image.mode), mask=rgba.getchannel("A"))
        alpha = False
    modes = FORMATS[fmt].modes
    if image.mode in modes:
        return image
    if alpha:
        return image.convert("LA" if grey and "LA" in modes else "RGBA")
    return image.convert("L" if grey and "L" in modes else "RGB")


def _icc_fits(profile: bytes, mode: str) -> bool:
    """True when the ICC profile's colour space matches the image mode (RGB or grey)."""
    space = profile[16:20]
    return (space == b"RGB " and mode in ("RGB", "RGBA")) or (
        space == b"GRAY" and mode in ("L", "LA")
    )
