"""The image formats hotfolder reads and writes: one record each, all else derived from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

FormatName = Literal["jpeg", "png", "gif", "bmp", "tiff", "webp", "svg"]


@dataclass(frozen=True)
class Format:
    """What hotfolder knows of one format, by the name used in recipes and sidecars."""

    name: FormatName
    extension: str  # written in output names
    words: tuple[str, ...]  # what a recipe may write for it: `+png`, `format: jpg`
    media_types: tuple[str, ...]  # as libmagic names them; the first is the one written
    pillow: str | None  # Pillow's format name; None for vectors
    alpha: bool  # keeps transparency; the others are flattened on output.background
    modes: frozenset[str]  # Pillow modes its encoder writes as they are
    dpi: bool  # stores a resolution
    exif: bool  # can carry EXIF (`metadata: keep`)
    # Several frames, read and written: an animation (timed frames of one size) or pages
    # (each of its own size); None: one image only.
    frames: Literal["animation", "pages"] | None

    @property
    def media_type(self) -> str:
        """The media type written for it (`image/png`)."""
        return self.media_types[0]


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("jpeg", "jpg", ("jpeg", "jpg"), ("image/jpeg",), "JPEG", alpha=False,
           modes=frozenset({"L", "RGB"}), dpi=True, exif=True,
           frames=None),
    Format("png", "png", ("png",), ("image/png",), "PNG", alpha=True,
           modes=frozenset({"1", "L", "LA", "P", "RGB", "RGBA"}), dpi=True, exif=True,
           frames=None),
    # Pillow's GIF encoder keeps RGBA transparency itself.
    Format("gif", "gif", ("gif",), ("image/gif",), "GIF", alpha=True,
           modes=frozenset({"1", "L", "P", "RGB", "RGBA"}), dpi=False, exif=False,
           frames="animation"),
    Format("bmp", "bmp", ("bmp",), ("image/bmp", "image/x-ms-bmp"), "BMP", alpha=False,
           modes=frozenset({"1", "L", "P", "RGB"}), dpi=True, exif=False,
           frames=None),
    Format("tiff", "tif", ("tiff", "tif"), ("image/tiff",), "TIFF", alpha=True,
           modes=frozenset({"1", "L", "LA", "P", "RGB", "RGBA"}), dpi=True, exif=True,
           frames="pages"),
    Format("webp", "webp", ("webp",), ("image/webp",), "WEBP", alpha=True,
           modes=frozenset({"RGB", "RGBA"}), dpi=False, exif=True,
           frames="animation"),
    Format("svg", "svg", ("svg",), ("image/svg+xml",), None, alpha=True,
           modes=frozenset(), dpi=False, exif=False,
           frames=None),
)}
NAMES: tuple[FormatName, ...] = get_args(FormatName)
# A word of a recipe (`jpg`, `tif`, `png`...) -> the format's name.
WORDS: dict[str, FormatName] = {word: f.name for f in FORMATS.values() for word in f.words}
# A media type as libmagic names it -> the format's name.
BY_MEDIA_TYPE: dict[str, FormatName] = {
    media: f.name for f in FORMATS.values() for media in f.media_types
}

