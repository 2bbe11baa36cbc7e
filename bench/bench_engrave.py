"""Speed of the engraving operations on a 24-megapixel grey photo, and numba's costs.

Run by hand: `python bench/bench_engrave.py [--megapixels 24]`. Prints one line per
method with its time and the ratio to its target (error diffusion 1.5 s, ordered
(Bayer, blue noise) and threshold 0.3 s, dot width 0.5 s), each kernel also in linear
light, Pillow's built-in Floyd-Steinberg for comparison; a proof sheet of a 12-megapixel
JPEG (target 5 s): five panels at full size, and the engrave-wood-photo preset's 100 mm
at 318 DPI, each through the whole job (decode, steps, PNG encode of the result and the
sheet); then the engrave-wood-photo preset on `--preset-files` (20) 12-megapixel JPEGs,
decoded shrunk as its `size` step allows and in full (target: at least 2x); and what
numba costs: its install size, its import time and the first call with and without a
warm on-disk cache (each measured in a fresh process).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import io
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np
from PIL import Image

from bench_process import make_inputs
from hotfolder import engine
from hotfolder.cli import examples
from hotfolder.config import LimitsConfig
from hotfolder.ops import engrave
from hotfolder.recipes import Plan, RecipeBook, combine, parse_chain

TARGETS = {"diffusion": 1.5, "ordered": 0.3, "threshold": 0.3, "dot width": 0.5,
           "proof": 5.0}
TARGET_HINT_SPEEDUP = 2.0
PRESET = "engrave-wood-photo"
FIRST_CALL = """
import time
t0 = time.perf_counter()
import numpy as np
from hotfolder.ops import engrave
t1 = time.perf_counter()
engrave.error_diffusion(np.full((8, 8), 128, np.uint8), "jarvis")
t2 = time.perf_counter()
print(f"{t1 - t0:.3f} {t2 - t1:.3f}")
"""


def photo(width: int, height: int) -> np.ndarray:
    """Grey levels like a photograph: smooth shading, edges and grain."""
    rng = np.random.default_rng(1)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    grey = 128 + 90 * np.sin(7 * x + 2) * np.cos(5 * y) + 30 * (x + y > 1)
    grey = grey + rng.normal(0, 10, (height, width)).astype(np.float32)
    return np.clip(grey, 0, 255).astype(np.uint8)


def timed(func: Callable[[], object], repeat: int = 3) -> float:
    """The best of `repeat` runs, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def folder_mb(module: str) -> float:
    """Size on disk of an installed package's folder, in MB."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    root = Path(spec.origin).parent
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20


def first_call(cache_dir: str) -> tuple[float, float]:
    """(import seconds, first Jarvis call seconds) in a fresh process using `cache_dir`."""
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    out = subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1])


def proof_rows(megapixels: float = 12.0) -> list[tuple[str, str, float]]:
    """Whole jobs making a proof sheet of a photo of `megapixels`, as JPEG."""
    width = round((megapixels * 1e6 * 1.5) ** 0.5)
    grey = photo(width, round(width / 1.5))
    buffer = io.BytesIO()
    Image.fromarray(grey).convert("RGB").save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    preset = RecipeBook(examples() / "recipes").get("engrave-wood-photo")
    plans = {
        f"proof {megapixels:g} MP, 5 full-size panels": combine(
            [("steps", "bench", parse_chain("grayscale+dpi=318+dither=jarvis+proof+png"))]),
        "proof, engrave-wood-photo preset": dataclasses.replace(
            preset, steps=[*preset.steps, *parse_chain("proof").steps]),
    }
    limits = LimitsConfig(max_pixels=200_000_000)
    engine.render(data, "warm.jpg", plans["proof, engrave-wood-photo preset"], limits)
    return [(label, "proof", timed(lambda p=plan: engine.render(data, "photo.jpg", p, limits), 1))
            for label, plan in plans.items()]


def no_hint(plan: Plan) -> None:
    """No size hint: every JPEG decoded in full."""


def no_early_grey(plan: Plan) -> bool:
    """Every JPEG decoded in colour."""
    return False


def run_preset(files: list[Path], hinted: bool, grey: bool = True) -> float:
    """Seconds to render `files` through PRESET in this process, decoding shrunk if `hinted`
    and straight to grey if `grey` (as the engine does for this preset)."""
    plan = RecipeBook(examples() / "recipes").get(PRESET)
    limits = LimitsConfig()
    datas = [path.read_bytes() for path in files]
    hint = engine.size_hint if hinted else no_hint
    with (mock.patch.object(engine, "size_hint", hint),
          mock.patch.object(engine, "greys_early", engine.greys_early if grey else no_early_grey)):
        start = time.perf_counter()
        for data in datas:
            engine.render(data, "photo.jpg", plan, limits)
        return time.perf_counter() - start


def preset_with_and_without_hint(count: int) -> None:
    """PRESET on `count` 12-MP JPEGs, one core: decoded shrunk (the size hint) and in full."""
    with tempfile.TemporaryDirectory() as folder:
        files = make_inputs(Path(folder) / "in", count)
        run_preset(files[:1], True)  # numba loaded outside the timing
        full = run_preset(files, False)
        hinted = run_preset(files, True)
        colour = run_preset(files, False, grey=False)
    print(f"\n{PRESET} on {count} 12-MP JPEGs, one core")
    print(f"  decoded in full:     {full:6.2f} s ({full / count:.3f} s a file)")
    print(f"  decoded shrunk:      {hinted:6.2f} s ({hinted / count:.3f} s a file)")
    print(f"  speed-up: {full / hinted:.2f}x (target {TARGET_HINT_SPEEDUP:.0f}x)")
    print(f"  for comparison, decoded in full and in colour: {colour:6.2f} s "
          f"({colour / hinted:.2f}x the time of shrunk and grey)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megapixels", type=float, default=24.0)
    parser.add_argument("--preset-files", type=int, default=20,
                        help="12-MP JPEGs through the preset with and without the size hint")
    args = parser.parse_args()
    width = round((args.megapixels * 1e6 * 1.5) ** 0.5)
    height = round(width / 1.5)
    grey = photo(width, height)
    print(f"{width}x{height} grey ({width * height / 1e6:.1f} MP), best of 3, one core\n")

    engrave.error_diffusion(grey[:8, :8], "jarvis")  # compile (or load) outside the timing
    rows: list[tuple[str, str, float]] = []
    for method in engrave.KERNELS:
        for serpentine in (False, True):
            label = method + (" serpentine" if serpentine else "")
            seconds = timed(lambda m=method, s=serpentine: engrave.error_diffusion(grey, m, s))
            rows.append((label, "diffusion", seconds))
        rows.append((method + " linear", "diffusion",
                     timed(lambda m=method: engrave.error_diffusion(grey, m, linear=True))))
    for size in (2, 4, 8):
        matrix = engrave.bayer_matrix(size)
        rows.append((f"bayer {size}", "ordered",
                     timed(lambda m=matrix: engrave.ordered(grey, m))))
    rows.append(("blue-noise mask, made once", "", timed(engrave.blue_noise_matrix.__wrapped__)))
    blue = engrave.blue_noise_matrix()
    rows.append(("blue-noise", "ordered", timed(lambda: engrave.ordered(grey, blue))))
    rows.append(("blue-noise linear", "ordered",
                 timed(lambda: engrave.ordered(grey, blue, linear=True))))
    rows.append(("threshold 128", "threshold", timed(lambda: engrave.binarize(grey, 128))))
    rows.append(("threshold otsu", "threshold", timed(lambda: engrave.binarize(grey, "otsu"))))
    rows.append(("halftone 8 px 45 deg", "", timed(lambda: engrave.halftone(grey, 8, 45))))
    dots = engrave.error_diffusion(grey, "jarvis")
    for width in (1, 3):
        rows.append((f"dot width {width} px (Jarvis dots)", "dot width",
                     timed(lambda w=width: engrave.shorten_dark_runs(dots, w))))
    rows.append(("1-bit image from mask", "",
                 timed(lambda: engrave.one_bit(engrave.ordered(grey, engrave.bayer_matrix(8))))))
    image = Image.fromarray(grey, "L")
    rows.append(("Pillow convert('1') (FS)", "", timed(lambda: image.convert("1"))))
    rows += proof_rows()

    print(f"{'method':36} {'seconds':>8} {'target':>7} {'ratio':>6}")
    for label, kind, seconds in rows:
        target = TARGETS.get(kind)
        if target:
            print(f"{label:36} {seconds:8.3f} {target:7.1f} {seconds / target:6.2f}")
        else:
            print(f"{label:36} {seconds:8.3f}")

    if args.preset_files:
        preset_with_and_without_hint(args.preset_files)

    print("\nnumba's costs")
    print(f"  installed size: numba {folder_mb('numba'):.0f} MB, "
          f"llvmlite {folder_mb('llvmlite'):.0f} MB")
    with tempfile.TemporaryDirectory() as cache:
        cold_import, cold_call = first_call(cache)
        warm_import, warm_call = first_call(cache)
    print(f"  fresh process, empty cache: import {cold_import:.2f} s, first call {cold_call:.2f} s"
          " (numba import + compile)")
    print(f"  fresh process, warm cache:  import {warm_import:.2f} s, first call {warm_call:.2f} s"
          " (numba import + cache load)")


if __name__ == "__main__":
    main()
