"""One file through one plan: decode, run the steps, encode; no folders, no queue.

`render` is what both `hotfolder process` and the service's workers call. It returns
the encoded outputs (main first, then extras such as thumbnails) with their final
names, and the sidecar record of what was done. The steps run on the first frame of an
animation (or page of a document); when the output format holds frames, each later frame
then runs through the same steps, else the sidecar says how many were left out.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2

from hotfolder import imaging, memory, pipeline
from hotfolder.canvas import Canvas
from hotfolder.config import LimitsConfig
from hotfolder.errors import InputError
from hotfolder.exif import SIDEWAYS
from hotfolder.formats import FORMATS
from hotfolder.lengths import to_pixels
from hotfolder.modes import TRANSPARENT
from hotfolder.names import readable
from hotfolder.ops.geometry import ResizeParams, pad
from hotfolder.pipeline import Step
from hotfolder.recipes import OutputSpec, Plan

# Operations whose result does not depend on the resolution (pixel values, mirroring):
# decoding may shrink across them.
SCALE_FREE = {"auto_orient", "grayscale", "invert", "autocontrast", "adjust", "levels", "curve",
              "format", "optimize", "metadata", "dpi", "flip", "mirror"}
# Operations after which converting to grey gives the same result as converting before.
GREY_COMMUTES = {"auto_orient", "resize", "size", "crop", "rotate", "flip", "mirror", "format",
                 "optimize", "metadata", "dpi"}
UNSAFE_NAME = re.compile(r"[/\\\x00-\x1f]")
NAME_BYTES = 240  # file systems allow 255; room for a conflict suffix such as "-2"


@dataclass(frozen=True)
class Output:
    """One encoded file of a job, with its final name."""

    name: str
    data: bytes
    media_type: str


@dataclass(frozen=True)
class Rendered:
    """The result of a job: outputs (main first) and the sidecar record."""

    outputs: list[Output]
    sidecar: dict[str, Any]

    @property
    def main(self) -> Output:
        """The main output."""
        return self.outputs[0]


def render(data: bytes, name: str, plan: Plan, limits: LimitsConfig,
           sha256: str | None = None) -> Rendered:
    """Decode `data` (the file `name`, of SHA-256 `sha256` when the caller has it), apply
    `plan`, and encode the outputs."""
    with memory_errors_in_words():
        return _render(data, name, plan, limits, sha256 or hashlib.sha256(data).hexdigest())


@contextmanager
def memory_errors_in_words() -> Iterator[None]:
    """Running out of memory (limits.worker_memory_mb) as an InputError that says so,
    whichever library ran out."""
    try:
        yield
    except MemoryError:
        raise InputError(memory.not_enough_memory(), stage="process") from None
    except cv2.error as exc:
        if exc.code != cv2.Error.StsNoMem:
            raise
        raise InputError(memory.not_enough_memory(), stage="process", detail=str(exc)) from None


def _render(data: bytes, name: str, plan: Plan, limits: LimitsConfig, sha256: str) -> Rendered:
    imaging.check_size(len(data), limits)
    started = time.perf_counter()
    decoded = imaging.decode(data, limits, size_hint(plan), grey=greys_early(plan))
    decoded_at = time.perf_counter()
    canvas = pipeline.run(decoded.canvas, plan.steps, limits.max_pixels)
    settings = output_settings(plan.output, canvas, decoded.canvas.dpi)
    fmt = str(settings.get("format") or ("png" if decoded.kind == "svg" else decoded.kind))
    frames = [imaging.Frame(canvas.image, decoded.duration)]
    if FORMATS[fmt].frames:
        frames += later_frames(decoded, plan.steps, limits)
    if FORMATS[fmt].frames == "animation":
        frames = one_size(frames)
    processed_at = time.perf_counter()

    main_data = imaging.encode(canvas, fmt, settings, frames, decoded.loop)
    width, height = canvas.image.size
    main_name = output_name(
        plan.output.name if "name" not in canvas.output else str(canvas.output["name"]),
        stem=Path(name).stem, ext=FORMATS[fmt].extension, recipe=plan.name,
        sha8=sha256[:8], width=width, height=height,
    )
    outputs = [Output(main_name, main_data, FORMATS[fmt].media_type)]
    extras = []
    for extra in canvas.extras:
        extra_data = imaging.encode(canvas.with_image(extra.image), extra.format, settings)
        extra_format = FORMATS[extra.format]
        extra_name = f"{Path(main_name).stem}{extra.suffix}.{extra_format.extension}"
        outputs.append(Output(extra_name, extra_data, extra_format.media_type))
        extras.append({"name": extra_name, "format": extra.format, "size": len(extra_data),
                       "width": extra.image.width, "height": extra.image.height})
    encoded_at = time.perf_counter()

    dpi = settings["dpi"]
    sidecar: dict[str, Any] = {
        **canvas.notes,
        "input": {"name": name, "size": len(data), "sha256": sha256, "type": decoded.kind,
                  "width": decoded.size[0], "height": decoded.size[1]},
        "exif": canvas.notes.get("exif", decoded.exif),
        "recipe": plan.name,
        "steps": plan.describe(),
        "output": {"name": main_name, "format": fmt, "size": len(main_data),
                   "width": width, "height": height,
                   "dpi": round(float(dpi), 3) if dpi and FORMATS[fmt].dpi else None},
        "timings": {"decode": round(decoded_at - started, 4),
                    "process": round(processed_at - decoded_at, 4),
                    "encode": round(encoded_at - processed_at, 4)},
    }
    if extras:
        sidecar["extras"] = extras
    if decoded.frames > 1:
        sidecar["frames"] = {"input": decoded.frames, "output": len(frames),
                             "left_out": decoded.frames - len(frames)}
    return Rendered(outputs, sidecar)


def later_frames(decoded: imaging.Decoded, steps: list[Step],
                 limits: LimitsConfig) -> list[imaging.Frame]:
    """The frames after the first, each through the steps on the first frame's canvas; the
    pixel budget counts every frame of the input."""
    return [imaging.Frame(pipeline.run(decoded.canvas.with_image(frame.image), steps,
                                       limits.max_pixels, decoded.frames).image, frame.duration)
            for frame in decoded.later()]


def one_size(frames: list[imaging.Frame]) -> list[imaging.Frame]:
    """The frames of an animation at the first one's size: a step that sized each frame by its
    content (trim) leaves others fitted, centred, on a transparent frame of that size."""
    size = frames[0].image.size
    return [frame if frame.image.size == size
            else imaging.Frame(pad(frame.image, size, TRANSPARENT), frame.duration)
            for frame in frames]


def output_settings(
    spec: OutputSpec, canvas: Canvas, input_dpi: tuple[float, float] | None
) -> dict[str, Any]:
    """The recipe's output settings with the overrides that steps made (format, quality...).

    The DPI written is the one a step set, else the recipe's `output.dpi`, else the input's.
    """
    settings = spec.model_dump()
    settings.update({k: v for k, v in canvas.output.items() if k in settings})
    if "dpi" not in canvas.output:
        step_dpi = canvas.dpi[0] if canvas.dpi and canvas.dpi != input_dpi else None
        settings["dpi"] = step_dpi or spec.dpi or (canvas.dpi[0] if canvas.dpi else None)
    return settings


def output_name(template: str, *, stem: str, ext: str, recipe: str, sha8: str, width: int,
                height: int) -> str:
    """The output file name from the plan's template; always one plain name, never a path."""
    text = template.format(
        stem=stem, ext=ext, recipe=recipe.replace("/", "-"), sha8=sha8, width=width,
        height=height, date=datetime.now(UTC).strftime("%Y-%m-%d"),
    )
    text = UNSAFE_NAME.sub("_", text).lstrip(". ")
    if len(os.fsencode(text)) > NAME_BYTES:
        stem_part, dot, suffix = text.rpartition(".")
        text = cut_to_bytes(stem_part, NAME_BYTES - len(os.fsencode(dot + suffix))) + dot + suffix
    return text or f"output.{ext}"


def cut_to_bytes(text: str, limit: int) -> str:
    """The longest start of `text` whose file-system bytes fit in `limit`, whole characters."""
    size = 0
    for end, char in enumerate(text):
        size += len(os.fsencode(char))
        if size > limit:
            return text[:end]
    return text


def sidecar_output(record: dict[str, Any], *, beside: str) -> Output:
    """The sidecar JSON written beside the output named `beside` (`photo.png.json`)."""
    text = json.dumps(readable(record), indent=2, ensure_ascii=False, default=str) + "\n"
    return Output(f"{beside}.json", text.encode(), "application/json")


def size_hint(plan: Plan) -> imaging.SizeHint | None:
    """How small decoding may make the image and still give the plan all the pixels it needs."""
    steps = plan.steps

    def hint(size: tuple[int, int], orientation: int) -> tuple[int, int] | None:
        swapped = orientation in SIDEWAYS  # decoding turns the image upright
        for step in steps:
            if isinstance(step.params, ResizeParams):  # resize, and size built on it
                need = resize_need(step, (size[1], size[0]) if swapped else size)
                if need is None:
                    return None
                return (need[1], need[0]) if swapped else need
            if step.op not in SCALE_FREE:
                return None
        return None

    return hint if any(isinstance(step.params, ResizeParams) for step in steps) else None


def greys_early(plan: Plan) -> bool:
    """True when the plan turns the image grey before anything that needs its colours."""
    for step in plan.steps:
        if step.op == "grayscale":
            return True
        if step.op not in GREY_COMMUTES:
            return False
    return False


def resize_need(step: Step, size: tuple[int, int]) -> tuple[int, int] | None:
    """The smallest source size (same aspect) from which a resize step gives the same result.

    It can be larger than `size`: an SVG is then drawn at that size, a JPEG decoded in full.
    """
    params = step.params
    assert isinstance(params, ResizeParams)
    try:
        box = [to_pixels(length, params.dpi) if length else None
               for length in (params.width, params.height)]
    except ValueError:  # a physical length with the image's own DPI: not known yet
        return None
    scales = [target / have for target, have in zip(box, size, strict=True) if target]
    scale = min(scales) if params.mode in ("fit", "pad") else max(scales)
    return int(size[0] * scale) + 1, int(size[1] * scale) + 1
