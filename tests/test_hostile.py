"""Hostile input, one table of kinds: each ends in its place with a reason, and nothing is lost.

Each kind is a file (and the folder name or steps it meets) with the place it must end in:
failed (with a reason that names the file, the step or setting and the limit), quarantine,
or outbox when the input is merely odd. `hotfolder process` runs once for each set of steps
over all the files of that set, under a data limit far below what any bomb would allocate;
the service runs once for all its kinds, each in a folder of its own; the check-then-claim
races drive intake directly, with a hook between its look at the file and its claim.

Kinds through `hotfolder process`:
 1-7.  pixel bombs by folder name, one for each geometry operation that can enlarge
       (resize fit, fill, stretch, pad; size in mm; rotate; resize after rotate)
 8.    a frame bomb: 400 frames on a 4000 x 4000 GIF screen
 9.    a GIF with a huge logical screen
 10.   a zero-byte file
 11.   a PNG whose header claims 4295 megapixels
 12.   a PNG decompression bomb under twice the pixel limit
 13.   plain text named .jpg
 14.   an EPS file named .jpg (never decoded)
 15.   a PNG named .jpg (merely odd: the content decides)
 16.   an SVG that refers to an image on the network
 17.   an SVG that declares an entity
 18-24. truncated JPEG, PNG, GIF, BMP, TIFF, WebP, SVG
 25-31. corrupted JPEG, PNG, GIF, BMP, TIFF, WebP, SVG
 32.   a TIFF of 20001 strips of one row
 33.   a TIFF of strips of 7 rows and 301 columns
 34.   a TIFF of tiles of 17 x 13 pixels (outside the standard's multiples of 16)
 35.   a PNG with a zTXt chunk inflating to 200 MB
 36.   a PNG with an iTXt chunk inflating to 200 MB
 37.   a PNG with an iCCP (colour profile) chunk inflating to 200 MB
 38.   a PNG of 3 kB with 900 kB of compressed text (within the limit)
 39.   a progressive JPEG of 5010 scans of a few bytes each
 40.   an SVG of nested <use> references (billion laughs without entities)
 41.   an SVG claiming 1000000 x 1000000 pixels
 42.   an SVG with a script and an event handler
 43.   an SVG with groups nested 100000 deep
 44.   an SVG embedding a PNG of 400 megapixels
 45.   a polyglot: a JPEG with a ZIP archive appended
Kinds through the running service:
 46.   a name with control characters (tab, escape, bell)
 47.   a name with a newline
 48.   a name of 255 bytes
 49.   the EICAR test file named .jpg
 50.   a file over limits.max_file_mb
 51.   a FIFO
 52.   a hard link
 53.   a symbolic link to a file outside the inbox
Kinds through intake, with a hook between check and claim:
 54.   a file that vanishes between check and claim
 55.   a file replaced by a symbolic link between check and claim
 56.   a file still being appended to after its claim
Kinds of recipe given to `hotfolder process` (a usage error, exit code 2, nothing made):
 57.   a recipe file that is a YAML bomb (anchors and aliases)
 58.   a recipe file of 10001 steps
 59.   a chain of 300 steps
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import hostile_inputs as hostile
from clamd_server import EICAR, EICAR_SIGNATURE, Clamd
from conftest import YAML_BOMB
from helpers import image_bytes, png_file, wait_until
from hotfolder.intake import Intake
from hotfolder.journal import Job
from hotfolder.tasks import run_job
from service_helpers import Daemon, files_under, make_root
from test_imaging import svg_with_image
from test_limits import FRAME_BOMBS, GEOMETRY_BOMBS, LIMIT, limit_data
from test_recipe_files import HUGE_RECIPE
from test_tasks import setup

FORMATS = ["jpeg", "png", "gif", "bmp", "tiff", "webp", "svg"]
EXTENSIONS = {"jpeg": "jpg", "png": "png", "gif": "gif", "bmp": "bmp", "tiff": "tif",
              "webp": "webp", "svg": "svg"}
# The outcome of a corrupted file: a decoder that resynchronises gives a picture.
CORRUPTED = {"jpeg": None, "png": None, "gif": "the gif file is damaged or not a valid image",
             "bmp": None, "tiff": None, "webp": None, "svg": "the SVG is not well-formed XML"}
TRUNCATED = {**{fmt: f"the {fmt} file is truncated" for fmt in FORMATS},
             "webp": "the webp file is damaged or not a valid image",
             "svg": "the SVG is not well-formed XML"}
CHUNK_BOMB = ("the png file holds a text or colour-profile chunk that decompresses to more than"
              " 1 MB, the limit for metadata; refused as a decompression bomb")


@dataclass(frozen=True)
class Kind:
    """A hostile input: its file name, content, the steps (or folder) it meets, its place.

    `reason` is a fragment of the failure message (None for outbox or quarantine); `check`
    looks at the output of a kind that lands in outbox.
    """

    name: str
    make: Callable[[], bytes]
    steps: str = "png"
    reason: str | None = None
    check: Callable[[bytes], None] | None = None


def lacks(*marks: bytes) -> Callable[[bytes], None]:
    """A check that the output holds none of `marks`."""
    def check(data: bytes) -> None:
        for mark in marks:
            assert mark not in data
    return check


PROCESS_KINDS = [
    *(Kind(f"bomb{n}.jpg", lambda: image_bytes("JPEG", seed=1), folder,
           f"{GEOMETRY_BOMBS[folder]}, {LIMIT}")
      for n, folder in enumerate(sorted(GEOMETRY_BOMBS))),
    *(Kind(name, lambda data=data: data, "resize=32+gif", f"{reason}, {LIMIT}")
      for name, (data, reason) in sorted(FRAME_BOMBS.items())),
    Kind("empty.jpg", lambda: b"", reason="the file is empty (0 bytes)"),
    Kind("huge.png", lambda: png_file(65535, 65535, rows=0),
         reason="the image claims 4295 megapixels, over the limit of 100 megapixels"
                " (limits.max_pixels)"),
    Kind("bomb.png", lambda: png_file(12000, 12000, bit_depth=1),
         reason="refused before decoding as a decompression bomb"),
    Kind("notes.jpg", lambda: b"Dear customer,\nplease engrave this.\n",
         reason="the file is an ASCII text (text/plain), not an image type hotfolder accepts"),
    Kind("drawing.jpg", lambda: hostile.EPS,
         reason="a PostScript document text conforming DSC level 3.0 (application/postscript),"
                " not an image type"),
    Kind("photo.jpg", lambda: image_bytes("PNG", (60, 40), seed=2)),
    Kind("remote.svg", lambda: svg_with_image("http://127.0.0.1:9/pixel.png"),
         reason="the SVG refers to an outside resource (http://127.0.0.1:9/pixel.png), which"
                " hotfolder never loads"),
    Kind("entity.svg", lambda: (b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x "x">]>'
                                b'<svg xmlns="http://www.w3.org/2000/svg"><text>&x;</text></svg>'),
         reason="the SVG declares XML entities, which hotfolder never expands"),
    *(Kind(f"cut-{fmt}.{EXTENSIONS[fmt]}", lambda fmt=fmt: hostile.truncated(fmt),
           reason=TRUNCATED[fmt]) for fmt in FORMATS),
    *(Kind(f"damaged-{fmt}.{EXTENSIONS[fmt]}", lambda fmt=fmt: hostile.corrupted(fmt),
           reason=CORRUPTED[fmt]) for fmt in FORMATS),
    Kind("strips.tif", lambda: hostile.tiff_file(7, 20001, rows_per_strip=1)),
    Kind("odd-strips.tif", lambda: hostile.tiff_file(301, 997, rows_per_strip=7)),
    Kind("odd-tiles.tif", lambda: hostile.tiff_file(1001, 999, tile=(17, 13))),
    Kind("ztxt.png", hostile.ztxt_bomb, reason=CHUNK_BOMB),
    Kind("itxt.png", hostile.itxt_bomb, reason=CHUNK_BOMB),
    Kind("icc.png", hostile.icc_bomb, reason=CHUNK_BOMB),
    Kind("text.png", hostile.large_text, check=lacks(hostile.TEXT_MARK)),
    Kind("scans.jpg", lambda: hostile.many_scans(5000),
         reason="the jpeg file has more than 100 scans, the limit for a progressive JPEG"),
    Kind("laughs.svg", hostile.use_bomb,
         reason="its <use> references expand to more than 1,000,000 elements, the renderer's"
                " limit"),
    Kind("wide.svg", hostile.huge_svg,
         reason="the image is 1000000 x 1000000 pixels (1000000 megapixels), over the limit of"
                " 100 megapixels (limits.max_pixels)"),
    Kind("script.svg", hostile.svg_with_script, "trace",  # traced: an SVG comes out
         check=lacks(hostile.SCRIPT_MARK.encode(), b"<script", b"onload")),
    Kind("deep.svg", hostile.deep_svg, reason="the SVG nests its elements"),
    Kind("inner.svg", hostile.svg_with_large_raster,
         reason="an image embedded in the SVG is refused: the image claims 400 megapixels"),
    Kind("polyglot.jpg", hostile.jpeg_with_zip, "jpeg", check=lacks(b"PK\x03\x04", b"payload")),
]


@dataclass(frozen=True)
class Processed:
    """What one `hotfolder process` run over a set of files gave: its exit code, the lines
    of stderr, and the files it wrote."""

    code: int
    lines: list[str]
    outputs: dict[str, bytes]


def process_group(folder: Path, steps: str, kinds: list[Kind]) -> Processed:
    """`hotfolder process` over the files of `kinds` (written into folder) with `steps`."""
    folder.mkdir()
    for kind in kinds:
        (folder / kind.name).write_bytes(kind.make())
    done = subprocess.run(
        [sys.executable, "-m", "hotfolder.cli", "process", *(k.name for k in kinds), "-s", steps,
         "-o", "out"], cwd=folder, capture_output=True, text=True, timeout=300, check=False,
        preexec_fn=limit_data, env={**os.environ, "HOTFOLDER_CONFIG": str(folder / "none.yaml")})
    out = folder / "out"
    return Processed(done.returncode, done.stderr.splitlines(),
                     {p.name: p.read_bytes() for p in out.iterdir()} if out.is_dir() else {})


@pytest.fixture(scope="module")
def processed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Processed]:
    """Each set of steps of the table run once over its files: steps -> what it gave."""
    groups: dict[str, list[Kind]] = defaultdict(list)
    for kind in PROCESS_KINDS:
        groups[kind.steps].append(kind)
    base = tmp_path_factory.mktemp("process")
    with ThreadPoolExecutor(2) as pool:  # the machine's two cores
        runs = pool.map(lambda item: process_group(base / f"set{item[0]}", *item[1]),
                        enumerate(groups.items()))
        return dict(zip(groups, runs, strict=True))


@pytest.mark.parametrize("kind", [pytest.param(kind, id=kind.name) for kind in PROCESS_KINDS])
def test_process_gives_each_kind_its_place_and_reason(
        kind: Kind, processed: dict[str, Processed]) -> None:
    run = processed[kind.steps]
    mine = [line for line in run.lines if line.startswith(f"{kind.name}: ")]
    stem = kind.name.rsplit(".", 1)[0]
    written = {name: data for name, data in run.outputs.items() if name.startswith(f"{stem}.")}
    assert not any("Traceback" in line for line in run.lines)
    if kind.reason is not None:
        assert run.code == 1
        assert len(mine) == 1, run.lines
        assert kind.reason in mine[0]
        assert "unexpectedly" not in mine[0]
        assert written == {}
    else:
        assert mine == [], mine
        assert len(written) == 1, run.outputs.keys()
        name, data = next(iter(written.items()))
        if name.endswith(".svg"):
            assert b"<svg" in data
        else:
            with Image.open(io.BytesIO(data)) as image:
                image.load()  # a whole picture, not a copy of the odd input
        if kind.check is not None:
            kind.check(data)


def test_process_ends_with_a_count_of_the_failed_files(processed: dict[str, Processed]) -> None:
    for steps, run in processed.items():
        kinds = [kind for kind in PROCESS_KINDS if kind.steps == steps]
        failed = sum(1 for kind in kinds if kind.reason is not None)
        if len(kinds) > 1:
            assert run.lines[-1] == (f"{len(kinds) - failed} of {len(kinds)} files processed,"
                                     f" {failed} failed"), run.lines
            assert len(run.lines) == failed + 1


# -- recipes that are bombs, for hotfolder process ----------------------------------------------

VALUES = "the limit for a configuration or recipe file"
CHAIN = "+".join(["grayscale"] * 300)
RECIPE_KINDS = {
    "yaml-bomb": (["-r", "recipe.yaml"], YAML_BOMB, "recipe.yaml, line 5: refused: it holds"
                  f" more than 10000 values once its aliases are expanded, {VALUES}"),
    "many-steps": (["-r", "recipe.yaml"], HUGE_RECIPE,
                   f"recipe.yaml, line 10001: refused: it holds more than 10000 values, {VALUES}"),
    "long-chain": (["-s", CHAIN], None,
                   f"-s {CHAIN!r}: 300 steps, more than the limit of 50 steps per job"),
}


@pytest.mark.parametrize("name", sorted(RECIPE_KINDS))
def test_process_refuses_a_recipe_bomb_in_one_line(tmp_path: Path, name: str) -> None:
    args, recipe, reason = RECIPE_KINDS[name]
    if recipe is not None:
        (tmp_path / "recipe.yaml").write_text(recipe)
    (tmp_path / "photo.jpg").write_bytes(image_bytes("JPEG", seed=7))
    done = subprocess.run(
        [sys.executable, "-m", "hotfolder.cli", "process", "photo.jpg", *args, "-o", "out"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        preexec_fn=limit_data, env={**os.environ, "HOTFOLDER_CONFIG": str(tmp_path / "none")})
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"hotfolder: {reason}\n"
    assert not (tmp_path / "out").exists()


# -- the running service ---------------------------------------------------------------------

RECIPE = "steps: [grayscale]\noutput: {format: png}\n"
CONTROL = "tab\there\x1b[31mbell\x07.jpg"
NEWLINE = "first line\nsecond line.jpg"
LONG = "x" * 251 + ".jpg"


@dataclass(frozen=True)
class Dropped:
    """A hostile file for the service: how to put it into the inbox, and where it must end."""

    name: str
    put: Callable[[Path, Path], None]  # (root, the file's path in the inbox)
    place: str
    reason: str | None = None
    output: str | None = None  # the result's name, when not the stem with .png


def dropped(make: Callable[[], bytes]) -> Callable[[Path, Path], None]:
    """Put what `make` gives at the path: written under a short hidden name, then renamed, as
    a copy does (the hidden name of `helpers.drop` is too long beside a name of 255 bytes)."""
    def put(root: Path, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(".copying.part")
        temp.write_bytes(make())
        temp.rename(path)
    return put


def fifo(root: Path, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)


def hard_link(root: Path, path: Path) -> None:
    kept = root / "kept.jpg"
    kept.write_bytes(image_bytes("JPEG", seed=5))
    path.parent.mkdir(parents=True, exist_ok=True)
    os.link(kept, path)


def symbolic_link(root: Path, path: Path) -> None:
    secret = root / "secret.jpg"
    secret.write_bytes(image_bytes("JPEG", seed=6))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(secret)


SERVICE_KINDS = [
    # Output names have control characters replaced; the original keeps its name.
    Dropped(CONTROL, dropped(lambda: image_bytes("JPEG", seed=2)), "outbox",
            output="tab_here_[31mbell_.png"),
    Dropped(NEWLINE, dropped(lambda: image_bytes("JPEG", seed=3)), "outbox",
            output="first line_second line.png"),
    Dropped(LONG, dropped(lambda: image_bytes("JPEG", seed=4)), "outbox",
            output="x" * 236 + ".png"),  # cut to leave room for a conflict suffix
    Dropped("virus.jpg", dropped(lambda: EICAR), "quarantine"),
    Dropped("large.jpg", dropped(lambda: image_bytes("JPEG", seed=7) + b"\0" * 3_200_000),
            "failed", "is 3.1 MB, over the limit of 3 MB (limits.max_file_mb)"),
    Dropped("pipe.jpg", fifo, "failed", "refused, it is a FIFO (named pipe)"),
    Dropped("twice.jpg", hard_link, "failed", "refused, it has 2 hard links"),
    Dropped("link.jpg", symbolic_link, "failed", "refused, it is a symbolic link"),
    # The kinds of the table above that the service meets on its own path.
    Dropped("drawing.jpg", dropped(lambda: hostile.EPS), "failed", "PostScript"),
    Dropped("empty.jpg", dropped(lambda: b""), "failed", "the file is empty (0 bytes)"),
    Dropped("scans.jpg", dropped(lambda: hostile.many_scans(5000)), "failed",
            "more than 100 scans"),
    Dropped("ztxt.png", dropped(hostile.ztxt_bomb), "failed", CHUNK_BOMB),
    Dropped("deep.svg", dropped(hostile.deep_svg), "failed", "the SVG nests its elements"),
]
PLACES = ("inbox", "archive", "failed", "quarantine")


def folder_of(index: int) -> str:
    """Each kind's own folder (a named recipe: grayscale, PNG), so that names never meet."""
    return f"kind-{index}"


def places_of(root: Path, rel: str) -> list[str]:
    """The places where the dropped file at inbox/rel is now (by name, links not followed)."""
    name = rel.rsplit("/", 1)[-1]
    found = [place for place in PLACES
             if os.path.lexists(root / place / rel) and place != "inbox"]
    if os.path.lexists(root / "inbox" / rel):
        found.append("inbox")
    work = root / "inbox" / ".hotfolder"
    if work.is_dir():
        found += ["work" for entry in work.iterdir() if entry.name.endswith(name)]
    return found


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, clamd: Clamd) -> Iterator[Daemon]:
    """One service, every kind of SERVICE_KINDS dropped at once; yields once all have ended."""
    config = make_root(tmp_path_factory.mktemp("service") / "root", clamd.address)
    root = config.parent
    for index in range(len(SERVICE_KINDS)):
        (root / "recipes" / f"{folder_of(index)}.yaml").write_text(RECIPE)
    daemon = Daemon(config)
    daemon.start()
    try:
        for index, kind in enumerate(SERVICE_KINDS):
            kind.put(root, root / "inbox" / folder_of(index) / kind.name)
        def ended() -> bool:
            return all(places_of(root, f"{folder_of(i)}/{k.name}") not in ([], ["inbox"], ["work"])
                       for i, k in enumerate(SERVICE_KINDS))
        wait_until(ended, 60, f"every dropped kind in its place (log: {daemon.tail()})")
        yield daemon
    finally:
        daemon.kill()


@pytest.mark.parametrize("index", [
    pytest.param(i, id=kind.name.encode("unicode_escape").decode()[:40])
    for i, kind in enumerate(SERVICE_KINDS)])
def test_the_service_gives_each_kind_its_place_and_loses_nothing(
        index: int, service: Daemon) -> None:
    kind, root = SERVICE_KINDS[index], service.root
    rel = f"{folder_of(index)}/{kind.name}"
    expected = {"outbox": ["archive"], "failed": ["failed"], "quarantine": ["quarantine"]}
    assert places_of(root, rel) == expected[kind.place]
    if kind.place == "outbox":
        output = kind.output or kind.name.rsplit(".", 1)[0] + ".png"
        assert files_under(root / "outbox" / folder_of(index)) == [
            root / "outbox" / folder_of(index) / output]
        with Image.open(root / "outbox" / folder_of(index) / output) as image:
            assert (image.format, image.mode) == ("PNG", "L")
    elif kind.place == "quarantine":
        report = json.loads((root / "quarantine" / f"{rel}.scan.json").read_text())
        assert report["signature"].startswith(EICAR_SIGNATURE)
    else:
        assert kind.reason is not None
        message = json.loads((root / "failed" / f"{rel}.error.json").read_text())["message"]
        assert message.startswith(f"{rel}: ") and kind.reason in message
        assert "unexpectedly" not in message
    assert service.get("/readyz")[0] == 200


def test_after_the_batch_the_service_runs_and_nothing_is_left_waiting(service: Daemon) -> None:
    root = service.root
    assert service.get("/readyz")[0] == 200
    left = [p for p in files_under(root / "inbox") if ".hotfolder" not in p.parts]
    assert left == []
    assert service.process is not None and service.process.poll() is None


# -- races between the check and the claim, driven through intake ---------------------------


def hooked(intake: Intake, between: Callable[[Path], None],
           monkeypatch: pytest.MonkeyPatch) -> None:
    """Run `between(path)` after intake has looked at a file and before it renames it."""
    claim = intake._claim
    pending = [between]

    def late_claim(file: Any, *args: Any) -> Job | None:
        while pending:
            pending.pop()(file.source.path)
        return claim(file, *args)

    monkeypatch.setattr(intake, "_claim", late_claim)


def test_a_file_that_vanishes_before_its_claim_is_let_go(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts, intake = setup(tmp_path)
    path = parts.layout.inbox / "gone.jpg"
    path.write_bytes(image_bytes("JPEG", seed=8))
    hooked(intake, Path.unlink, monkeypatch)
    assert intake.offer(path) is None
    assert files_under(tmp_path / "inbox") == files_under(tmp_path / "failed") == []
    assert parts.journal.ids() == set()


def test_a_file_replaced_by_a_link_before_its_claim_goes_to_failed_unread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts, intake = setup(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2")
    path = parts.layout.inbox / "swap.jpg"
    path.write_bytes(image_bytes("JPEG", seed=9))

    def swap(path: Path) -> None:
        link = path.with_name(".swap")
        link.symlink_to(secret)
        link.replace(path)

    hooked(intake, swap, monkeypatch)
    job = intake.offer(path)
    assert job is not None and job.state == "failed"
    assert job.reason == "swap.jpg: the file was replaced while it was being checked"
    failed = tmp_path / "failed" / "swap.jpg"
    assert failed.is_symlink() and os.readlink(failed) == str(secret)
    assert json.loads((tmp_path / "failed" / "swap.jpg.error.json").read_text())[
        "message"] == job.reason
    assert files_under(parts.layout.work) == []
    assert secret.read_text() == "hunter2"


def test_bytes_appended_after_the_claim_are_never_processed(tmp_path: Path) -> None:
    parts, intake = setup(tmp_path)
    data = image_bytes("JPEG", (300, 200), seed=10)
    path = parts.layout.inbox / "growing.jpg"
    with path.open("wb") as writer:
        writer.write(data[: len(data) // 2])
        writer.flush()
        job = intake.offer(path)
        assert job is not None and job.state == "queued"
        writer.write(data[len(data) // 2:])  # the writer goes on, into the claimed file
    run_job(parts, job.id)
    ended = parts.journal.get(job.id)
    assert ended is not None and ended.state == "failed"
    assert ended.reason == "growing.jpg: the jpeg file is truncated"
    failed = tmp_path / "failed" / "growing.jpg"
    assert files_under(tmp_path / "failed") == [failed, failed.with_name("growing.jpg.error.json")]
    assert failed.read_bytes() == data[: len(data) // 2]  # the bytes claimed, as scanned
