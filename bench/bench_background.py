"""Quality and speed of remove_background on composited scenes with known masks.

Run by hand: `python bench/bench_background.py [--size 1200x900] [--megapixels 12]`.
Prints the intersection-over-union of every method on every object (logo with
alpha, shapes, photo region, portrait cut off by the bottom edge) and backdrop
(plain, gradient, textured), with the targets (auto >= 0.95 on plain and gradient,
grabcut >= 0.85 on textured); then the time of each method on a 12-megapixel
photo against the 3 s target. The scenes are the ones the tests use
(tests/test_background.py), at a larger size.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from hotfolder.canvas import Canvas
from hotfolder.ops import background
from hotfolder.ops.registry import lookup
from test_background import BACKDROPS, OBJECTS, iou, scene

TARGETS = {("auto", "plain"): 0.95, ("auto", "gradient"): 0.95, ("grabcut", "textured"): 0.85}
SECONDS = 3.0


def size_arg(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=size_arg, default=(1200, 900))
    parser.add_argument("--megapixels", type=float, default=12.0)
    args = parser.parse_args()
    methods = list(background.METHODS)

    print(f"IoU against the known mask, {args.size[0]}x{args.size[1]} scenes "
          "(* = below its target)\n")
    print(f"{'method':10} {'object':8} " + " ".join(f"{b:>9}" for b in BACKDROPS))
    scenes = {(o, b): scene(o, b, args.size) for o in OBJECTS for b in BACKDROPS}
    worst: dict[tuple[str, str], float] = {}
    for method in methods:
        for obj in OBJECTS:
            cells = []
            for kind in BACKDROPS:
                image, truth = scenes[obj, kind]
                alpha = background.subject_alpha(image, method, feather=0)
                score = iou(alpha >= 128, truth)
                target = TARGETS.get((method, kind))
                worst[method, kind] = min(worst.get((method, kind), 1.0), score)
                cells.append(f"{score:8.3f}{'*' if target and score < target else ' '}")
            print(f"{method:10} {obj:8} " + " ".join(cells))
    print("\ntargets: " + ", ".join(
        f"{m} on {k} >= {t} (worst {worst[m, k]:.3f}, ratio {worst[m, k] / t:.2f})"
        for (m, k), t in TARGETS.items()))

    width = round((args.megapixels * 1e6 * 4 / 3) ** 0.5)
    height = round(width * 3 / 4)
    image, truth = scene("photo", "textured", (width, height))
    canvas = Canvas(Image.fromarray(image, "RGB"))
    step = lookup("remove_background")
    print(f"\nwhole step on a {width}x{height} photo ({width * height / 1e6:.1f} MP), "
          f"target {SECONDS:g} s, best of 3")
    for method in methods:
        for feather in (0.0, 2.0):
            params = step.parse({"method": method, "feather": feather})
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                result = step.func(canvas, params)
                best = min(best, time.perf_counter() - start)
            score = iou(np.asarray(result.image)[..., 3] >= 128, truth)
            print(f"  {method:10} feather {feather:3g}: {best:6.2f} s, ratio "
                  f"{best / SECONDS:4.2f}, IoU {score:.3f}")


if __name__ == "__main__":
    main()
