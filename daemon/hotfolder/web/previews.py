"""Previews: small images made from decoded pixels of scanned files, never the files themselves.

`before` is a done job's archived original: scanned clean and already decoded by a
worker without harm. `after` is its main output. Both are decoded with the service's
safe decoder (an SVG is drawn into pixels) and encoded anew, as JPEG or, with
transparency or few levels, as PNG. A quarantined file has none, and neither has a
file that failed: it may be what made a worker fail.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from PIL import Image

from hotfolder import imaging
from hotfolder.errors import HotfolderError
from hotfolder.formats import NAMES
from hotfolder.journal import Job
from hotfolder.web.console import Backend, Refused, job_files, open_under

PREVIEW_PIXELS = 360  # the longer side
CACHED = 256  # previews kept in memory
SIDES = ("before", "after")


@dataclass(frozen=True)
class Preview:
    """An encoded preview image."""

    data: bytes
    media_type: str


def shrink_hint(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """Decode no larger than twice the preview needs."""
    scale = min(1.0, 2 * PREVIEW_PIXELS / max(size))
    return max(1, int(size[0] * scale)), max(1, int(size[1] * scale))


def render(data: bytes, backend: Backend) -> Preview:
    """A preview of one image file's pixels."""
    limits = backend.cfg.limits.model_copy(update={"formats": list(NAMES)})
    decoded = imaging.decode(data, limits, shrink_hint)
    image = decoded.canvas.image
    image.thumbnail((PREVIEW_PIXELS, PREVIEW_PIXELS), Image.Resampling.LANCZOS)
    if image.mode in ("RGBA", "LA", "PA", "1", "P"):
        return Preview(imaging.encode(decoded.canvas.with_image(image.convert("RGBA")),
                                      "png", {}), "image/png")
    return Preview(imaging.encode(decoded.canvas.with_image(image), "jpeg",
                                  {"quality": 82, "metadata": "strip"}), "image/jpeg")


class Previews:
    """Makes previews on request, one at a time, and keeps the latest ones."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._made: OrderedDict[tuple[str, str], Preview] = OrderedDict()
        self._lock = threading.Lock()

    def of(self, job: Job, side: str) -> Preview:
        """The preview of one side of a job; Refused when it has none."""
        if side not in SIDES:
            raise Refused(400, "side must be before or after")
        if job.state != "done":
            why = {"quarantined": "a quarantined file is never shown",
                   "failed": "a file that failed is not shown"}.get(
                       job.state, "the file has not been processed yet")
            raise Refused(404, f"no preview: {why}")
        key = (job.id, side)
        with self._lock:
            if key in self._made:
                self._made.move_to_end(key)
                return self._made[key]
            preview = self._make(job, side)
            self._made[key] = preview
            while len(self._made) > CACHED:
                self._made.popitem(last=False)
            return preview

    def forget(self, job_id: str) -> None:
        """Drop the previews of a deleted job."""
        with self._lock:
            for side in SIDES:
                self._made.pop((job_id, side), None)

    def _make(self, job: Job, side: str) -> Preview:
        layout = self.backend.layout
        files = job_files(self.backend, job)
        if side == "before":
            root, path = layout.archive, files.original
        else:
            outputs = files.results()
            root, path = layout.outbox, (outputs[0] if outputs else None)
        src = open_under(root, path) if path is not None else None
        if src is None:
            where = "archive/" if side == "before" else "the outbox"
            raise Refused(404, f"no preview: the file is no longer in {where}")
        with src:
            data = src.read()
        try:
            return render(data, self.backend)
        except HotfolderError as exc:
            raise Refused(404, f"no preview: {exc.message}") from None

