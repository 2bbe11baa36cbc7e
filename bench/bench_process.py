"""Speed and memory of `hotfolder process` against ImageMagick and a plain Pillow loop.

Run by hand: `python bench/bench_process.py [--count 20]`. It makes photo-like 12-megapixel
JPEGs (a quarter of them stored sideways with an EXIF orientation), then runs the recipe
`auto_orient, resize to fit 1200 px, grayscale, autocontrast, PNG at 300 DPI` three ways,
each in a fresh process, and prints the times and ratios measured in this one run:

- `hotfolder process` (one process per core);
- a shell loop calling ImageMagick's `/usr/bin/convert` with the same operations (target:
  hotfolder at least 6x faster);
- a hand-written single-process Pillow loop (target: hotfolder at least 1.6x faster).

Then it fits a 96-megapixel JPEG (12000 x 8000) to 1200 px with `hotfolder process` and
prints that process's peak resident memory (target: under 300 MB).
Exit code 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CONVERT = "/usr/bin/convert"  # the real ImageMagick (a stand-in may sit earlier on PATH)
RECIPE = """\
steps:
  - auto_orient
  - resize: {width: 1200, height: 1200, mode: fit}
  - grayscale
  - autocontrast
output:
  format: png
  dpi: 300
"""
PILLOW_LOOP = """
import sys
from pathlib import Path
from PIL import Image, ImageOps
out = Path(sys.argv[1])
for name in sys.argv[2:]:
    with Image.open(name) as image:
        image = ImageOps.exif_transpose(image)
        image = ImageOps.contain(image, (1200, 1200), Image.Resampling.LANCZOS)
        image = ImageOps.autocontrast(image.convert("L"))
        image.save(out / (Path(name).stem + ".png"), dpi=(300, 300))
"""
MAGICK_LOOP = """
for f in "$@"; do
  base=$(basename "$f" .jpg)
  {convert} "$f" -auto-orient -resize '1200x1200>' -colorspace Gray -auto-level \\
    -units PixelsPerInch -density 300 "$OUT/$base.png"
done
"""
TARGET_MAGICK = 6.0
TARGET_PILLOW = 1.6
TARGET_PEAK_MB = 300


def photo(width: int, height: int, seed: int) -> Image.Image:
    """A photo-like picture: soft light, shapes with edges, a little blur, sensor grain."""
    rng = np.random.default_rng(seed)
    field = np.zeros((height // 16, width // 16, 3), np.float32)
    for octave in (2, 4, 8):
        coarse = rng.uniform(0, 255, (octave * 3, octave * 4, 3)).astype(np.float32)
        layer = Image.fromarray(coarse.astype(np.uint8), "RGB").resize(
            (field.shape[1], field.shape[0]), Image.Resampling.BICUBIC)
        field += np.asarray(layer, np.float32) / octave
    field = field / field.max() * 230
    image = Image.fromarray(field.astype(np.uint8), "RGB").resize(
        (width, height), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x, y = rng.integers(0, width), rng.integers(0, height)
        r = int(rng.integers(width // 60, width // 8))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        else:
            draw.line((x, y, x + r * 3, y + r), fill=colour, width=max(2, r // 10))
    image = image.filter(ImageFilter.BoxBlur(1))
    grain = rng.integers(-10, 11, (height, width, 3), dtype=np.int16)
    noisy = np.clip(np.asarray(image, np.int16) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(noisy, "RGB")


def exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def save_photo(path: Path, width: int, height: int, seed: int, orientation: int) -> Path:
    """Make and save one photo (run in a worker process, so this one stays small)."""
    photo(width, height, seed).save(path, quality=90, exif=exif_orientation(orientation))
    return path


def make_inputs(folder: Path, count: int) -> list[Path]:
    """`count` 12-megapixel JPEGs; every fourth is stored sideways (EXIF orientation 6)."""
    folder.mkdir(parents=True)
    with ProcessPoolExecutor(mp_context=get_context("spawn")) as pool:
        jobs = [pool.submit(save_photo, folder / f"photo{i:02d}.jpg",
                            *((3000, 4000) if i % 4 == 3 else (4000, 3000)), i,
                            6 if i % 4 == 3 else 1)
                for i in range(count)]
        return [job.result() for job in jobs]


def make_big(path: Path) -> None:
    """The 96-MP JPEG, made in a process of its own: memory measured later is not ours."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        pool.submit(save_photo, path, 12000, 8000, 99, 1).result()


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Wall time of a command and its peak resident memory in MB."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(command[:4])} ...")
    return elapsed, usage.ru_maxrss // 1024


def check_outputs(folder: Path, count: int) -> None:
    outputs = sorted(folder.glob("*.png"))
    if len(outputs) != count:
        raise SystemExit(f"{folder}: {len(outputs)} outputs, expected {count}")
    with Image.open(outputs[-1]) as image:
        if max(image.size) != 1200 or image.mode != "L":
            raise SystemExit(f"{outputs[-1]}: {image.size} {image.mode}, expected 1200 px grey")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20, help="number of 12-MP JPEGs")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    if not Path(CONVERT).is_file():
        raise SystemExit(f"{CONVERT} is missing: apt-get install imagemagick")
    hotfolder = shutil.which("hotfolder") or "hotfolder"
    work = Path(tempfile.mkdtemp(prefix="bench-process-"))
    env = {**os.environ, "HOTFOLDER_CONFIG": str(work / "none.yaml")}
    try:
        print(f"making {args.count} photo-like JPEGs of 4000 x 3000 in {work} ...", flush=True)
        inputs = [str(p) for p in make_inputs(work / "in", args.count)]
        recipe = work / "bench.yaml"
        recipe.write_text(RECIPE)
        for name in ("hotfolder", "magick", "pillow"):
            (work / name).mkdir()

        cores = len(os.sched_getaffinity(0))
        ours, _ = timed([hotfolder, "process", *inputs, "-r", str(recipe),
                         "-o", str(work / "hotfolder")], env)
        check_outputs(work / "hotfolder", args.count)
        script = textwrap.dedent(MAGICK_LOOP.format(convert=CONVERT))
        magick, _ = timed(["bash", "-c", script, "loop", *inputs],
                          {**env, "OUT": str(work / "magick")})
        check_outputs(work / "magick", args.count)
        pillow, _ = timed([sys.executable, "-c", PILLOW_LOOP, str(work / "pillow"), *inputs])
        check_outputs(work / "pillow", args.count)

        print(f"\nrecipe: auto_orient, resize fit 1200 px, grayscale, autocontrast, PNG 300 DPI;"
              f" {args.count} JPEGs of 12 MP; {cores} cores")
        rows = [(f"hotfolder process ({cores} processes)", ours, None, None),
                ("ImageMagick convert, shell loop", magick, magick / ours, TARGET_MAGICK),
                ("Pillow loop, one process", pillow, pillow / ours, TARGET_PILLOW)]
        ok = True
        for label, seconds, ratio, target in rows:
            line = f"  {label:<36} {seconds:7.2f} s  {seconds / args.count:6.3f} s/file"
            if ratio is not None and target is not None:
                met = ratio >= target
                ok &= met
                line += (f"   hotfolder {ratio:4.1f}x faster (target >= {target:g}x:"
                         f" {'met' if met else 'MISSED'})")
            print(line)

        print("\nmaking a 96-MP JPEG (12000 x 8000) ...", flush=True)
        big = work / "big.jpg"
        make_big(big)
        (work / "big").mkdir()
        seconds, peak = timed([hotfolder, "process", str(big), "-r", str(recipe),
                               "-o", str(work / "big")], env)
        check_outputs(work / "big", 1)
        met = peak < TARGET_PEAK_MB
        ok &= met
        print(f"  96 MP JPEG fitted to 1200 px: {seconds:.2f} s, peak RSS {peak} MB"
              f" (target < {TARGET_PEAK_MB} MB: {'met' if met else 'MISSED'})")
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
