"""`hotfolder process` side by side with what a user would pick instead, on the same photos.

Run by hand after `make bench-deps` (libvips, GNU parallel, pyvips):
`python bench/bench_peers.py [--count 20] [--rounds 3]`. It makes photo-like 12-megapixel
JPEGs with bench_process's maker and runs the recipe `auto_orient, fit 1200 px, grey,
autocontrast, PNG at 300 DPI` through each of these, each in fresh processes:

- `hotfolder process` with two processes;
- libvips through pyvips in two processes: `Image.thumbnail` (shrink-on-load, EXIF
  rotation), Rec. 601 grey (the luma a JPEG stores, as hotfolder uses), a min-max stretch
  (autocontrast without cutoff), PNG at 300 DPI, once with libvips' PNG defaults and once at
  hotfolder's zlib level 1 with adaptive row filters;
- ImageMagick's `convert` with `-define jpeg:size=2400x2400` under GNU parallel -j2;
- the plain shell loop over `convert` (bench_process's).

Each runs `--rounds` times, in turns; the best time counts. It prints each time and its
ratio to hotfolder's, the least CPU time (user and system, all processes: steadier than
wall time on a loaded machine), the total bytes of each one's outputs, and the mean absolute pixel
difference (0-255) of each one's outputs against hotfolder's (mean and worst file; an
output a pixel off in size is resized to hotfolder's first). Then it profiles one
`hotfolder process -j 1` run: decode, resize, grey, autocontrast, PNG encode, the rest of
the job, and process start-up, with the import time by package.
Exit code 0 when hotfolder is faster than each pyvips configuration and its outputs are no
larger in total, 1 otherwise.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from bench_process import CONVERT, MAGICK_LOOP, RECIPE, check_outputs, make_inputs, timed

PARALLEL = "/usr/bin/parallel"
JOBS = 2
VIPS_LOOP = """
import os, sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
import pyvips

OUT, COMPRESSION, FILTER = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
LUMA_601 = [[0.299, 0.587, 0.114]]

def convert(name):
    image = pyvips.Image.thumbnail(name, 1200, height=1200, size="down")
    image = image.recomb(LUMA_601).cast("uchar").copy_memory()
    low, high = image.min(), image.max()
    image = ((image - low) * (255 / max(high - low, 1))).cast("uchar")
    image = image.copy(xres=300 / 25.4, yres=300 / 25.4)
    options = {} if FILTER == "default" else {"filter": FILTER}
    image.pngsave(str(OUT / (Path(name).stem + ".png")), compression=COMPRESSION, **options)

with ProcessPoolExecutor(int(os.environ["JOBS"]), mp_context=get_context("fork")) as pool:
    list(pool.map(convert, sys.argv[4:]))
"""
MAGICK_PARALLEL = ("{convert} -define jpeg:size=2400x2400 {{}} -auto-orient"
                   " -resize '1200x1200>' -colorspace Gray -auto-level"
                   " -units PixelsPerInch -density 300 {out}/{{/.}}.png")
STAGES = {  # profile entries (file ending, function) -> stage of the job
    ("hotfolder/imaging.py", "decode"): "decode (to grey, shrunk)",
    ("ops/geometry.py", "auto_orient"): "auto_orient",
    ("ops/geometry.py", "resize"): "resize (Lanczos)",
    ("ops/color.py", "grayscale"): "grayscale",
    ("ops/color.py", "autocontrast"): "autocontrast",
    ("hotfolder/imaging.py", "encode"): "PNG encode (zlib 1)",
}


@dataclass
class Peer:
    """One way of running the recipe: its name and the command for an output folder."""

    label: str
    command: Callable[[Path], tuple[list[str], dict[str, str]]]
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def hotfolder_script() -> str:
    """The `hotfolder` entry point of this Python (not a version manager's shim before it)."""
    beside = Path(sys.executable).with_name("hotfolder")
    return str(beside) if beside.is_file() else shutil.which("hotfolder") or "hotfolder"


def peers(inputs: list[str], recipe: Path, env: dict[str, str]) -> list[Peer]:
    """hotfolder first, then the others, each writing into the folder it is given."""
    hotfolder = hotfolder_script()
    magick_loop = textwrap.dedent(MAGICK_LOOP.format(convert=CONVERT))

    def ours(out: Path) -> tuple[list[str], dict[str, str]]:
        return [hotfolder, "process", *inputs, "-r", str(recipe), "-j", str(JOBS),
                "-o", str(out)], env

    def vips(compression: int, row_filter: str) -> Callable[[Path], tuple[list[str],
                                                                       dict[str, str]]]:
        def command(out: Path) -> tuple[list[str], dict[str, str]]:
            return ([sys.executable, "-c", VIPS_LOOP, str(out), str(compression), row_filter,
                     *inputs], {**env, "JOBS": str(JOBS), "VIPS_CONCURRENCY": "1"})
        return command

    def magick_parallel(out: Path) -> tuple[list[str], dict[str, str]]:
        line = MAGICK_PARALLEL.format(convert=CONVERT, out=shlex.quote(str(out)))
        return [PARALLEL, "--will-cite", f"-j{JOBS}", line, ":::", *inputs], env

    def magick_loop_command(out: Path) -> tuple[list[str], dict[str, str]]:
        return ["bash", "-c", magick_loop, "loop", *inputs], {**env, "OUT": str(out)}

    return [Peer(f"hotfolder process (-j {JOBS})", ours),
            Peer("pyvips x2, PNG defaults (zlib 6)", vips(6, "default")),
            Peer("pyvips x2, zlib 1, adaptive filter", vips(1, "all")),
            Peer("ImageMagick jpeg:size, parallel -j2", magick_parallel),
            Peer("ImageMagick convert, shell loop", magick_loop_command)]


def total_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.png"))


def grey_pixels(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """The grey levels of `path`, resized with Lanczos to `size` when given and different."""
    with Image.open(path) as image:
        grey = image.convert("L")
        if size is not None and grey.size != size:
            grey = grey.resize(size, Image.Resampling.LANCZOS)
        return np.asarray(grey, np.int16)


def differences(ours: Path, theirs: Path) -> tuple[float, float, int]:
    """Mean and worst per-file mean absolute difference, and how many files were resized."""
    means: list[float] = []
    resized = 0
    for reference in sorted(ours.glob("*.png")):
        expected = grey_pixels(reference)
        size = (expected.shape[1], expected.shape[0])
        other = grey_pixels(theirs / reference.name, size)
        with Image.open(theirs / reference.name) as image:
            resized += image.size != size
        means.append(float(np.abs(expected - other).mean()))
    return float(np.mean(means)), max(means), resized


def children_cpu() -> float:
    """CPU seconds (user and system) of all finished child processes and their children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_all(runners: list[Peer], work: Path, rounds: int, count: int) -> None:
    """Each peer `rounds` times in turns, into a fresh folder each time; the last is kept."""
    for round_number in range(rounds):
        for index, peer in enumerate(runners):
            out = work / f"peer{index}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            command, env = peer.command(out)
            before = children_cpu()
            seconds, _ = timed(command, env)
            peer.cpu.append(children_cpu() - before)
            check_outputs(out, count)
            peer.times.append(seconds)
        print(f"  round {round_number + 1}: "
              + ", ".join(f"{p.times[-1]:.2f}" for p in runners) + " s", flush=True)


def report(runners: list[Peer], work: Path) -> bool:
    """Print the table; True when hotfolder beats each pyvips row at no larger output."""
    ours = min(runners[0].times)
    our_bytes = total_bytes(work / "peer0")
    print(f"\n  {'':<38} {'best':>7} {'vs ours':>8} {'CPU':>7} {'output':>9}"
          f" {'pixels vs ours':>16}")
    ok = True
    for index, peer in enumerate(runners):
        best = min(peer.times)
        size = total_bytes(work / f"peer{index}")
        line = (f"  {peer.label:<38} {best:6.2f}s {best / ours:7.2f}x {min(peer.cpu):6.2f}s"
                f" {size / 1e6:7.2f}MB")
        if index:
            mean, worst, resized = differences(work / "peer0", work / f"peer{index}")
            line += f"  {mean:5.2f} (worst {worst:5.2f})"
            if resized:
                line += f", {resized} resized"
        print(line)
        if peer.label.startswith("pyvips"):
            faster, smaller = ours < best, our_bytes <= size
            ok &= faster and smaller
            print(f"  {'':<4}hotfolder {'faster' if faster else 'SLOWER'}"
                  f" ({best / ours:.2f}x) with outputs {our_bytes / size:.1%} of these:"
                  f" {'met' if faster and smaller else 'MISSED'}")
    return ok


def profile(inputs: list[str], recipe: Path, work: Path, env: dict[str, str]) -> None:
    """Where one `hotfolder process -j 1` run spends its time, stage by stage."""
    out, stats_file = work / "profiled", work / "process.prof"
    out.mkdir()
    command = [sys.executable, "-m", cProfile.__name__, "-o", str(stats_file),
               "-m", "hotfolder.cli", "process", *inputs, "-r", str(recipe), "-j", "1",
               "-o", str(out)]
    wall, _ = timed(command, env)
    stats = pstats.Stats(str(stats_file)).stats
    spent = dict.fromkeys(STAGES.values(), 0.0)
    job = 0.0
    for (filename, _, function), (_, _, _, cumulative, _) in stats.items():
        for (ending, name), stage in STAGES.items():
            if filename.endswith(ending) and function == name:
                spent[stage] += cumulative
        if filename.endswith("hotfolder/cli.py") and function == "cmd_process":
            job = cumulative
    spent["rest of the job (read, hash, write)"] = job - sum(spent.values())
    spent["start-up (interpreter, imports)"] = wall - job
    print(f"\nprofile of `hotfolder process -j 1` on {len(inputs)} files: {wall:.2f} s wall"
          " (cProfile adds a little to Python-heavy parts)")
    for stage, seconds in spent.items():
        per_file = "" if stage.startswith("start-up") else (
            f"  {seconds / len(inputs) * 1000:6.1f} ms/file")
        print(f"  {stage:<42} {seconds:6.2f} s  {seconds / wall:6.1%}{per_file}")
    imports = import_times(env)
    print(f"  importing hotfolder.cli alone: {sum(imports.values()):.2f} s, by package: "
          + ", ".join(f"{name} {seconds:.2f}" for name, seconds in imports.items()
                      if seconds >= 0.01))


def import_times(env: dict[str, str]) -> dict[str, float]:
    """Seconds spent importing `hotfolder.cli` by top-level package (own time, no overlap)."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "import hotfolder.cli"],
                            env=env, capture_output=True, text=True, check=True)
    seconds: dict[str, float] = {}
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)$", line)
        if match is None:
            continue
        package = match.group(2).split(".")[0]
        if package.lstrip("_") in sys.stdlib_module_names or package in sys.stdlib_module_names:
            package = "standard library"
        seconds[package] = seconds.get(package, 0.0) + int(match.group(1)) / 1e6
    return dict(sorted(seconds.items(), key=lambda item: -item[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20, help="number of 12-MP JPEGs")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each; the best counts")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    for tool, package in ((CONVERT, "imagemagick"), (PARALLEL, "parallel")):
        if not Path(tool).is_file():
            raise SystemExit(f"{tool} is missing: make bench-deps (apt-get install {package})")
    try:
        import pyvips  # noqa: F401, PLC0415  (only checks that the peer is installed)
    except ImportError as exc:
        raise SystemExit(f"pyvips cannot be imported ({exc}): make bench-deps") from None
    work = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    env = {**os.environ, "HOTFOLDER_CONFIG": str(work / "none.yaml")}
    try:
        print(f"making {args.count} photo-like JPEGs of 4000 x 3000 in {work} ...", flush=True)
        inputs = [str(p) for p in make_inputs(work / "in", args.count)]
        recipe = work / "bench.yaml"
        recipe.write_text(RECIPE)
        runners = peers(inputs, recipe, env)
        print(f"recipe: auto_orient, fit 1200 px, grey, autocontrast, PNG 300 DPI;"
              f" {args.count} JPEGs of 12 MP; {len(os.sched_getaffinity(0))} cores;"
              f" load average {' '.join(f'{n:.2f}' for n in os.getloadavg())}")
        print("  order: " + ", ".join(p.label for p in runners))
        run_all(runners, work, args.rounds, args.count)
        ok = report(runners, work)
        profile(inputs, recipe, work, env)
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
