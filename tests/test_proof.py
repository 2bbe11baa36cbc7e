"""Proof sheets through `hotfolder process`: one burn that shows several dither methods."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import RunCli
from helpers import photo_pixels
from hotfolder.ops import proof

DPI = 254
SIZE = "size=40mmx30mm,254+grayscale"  # 400 x 300 at 254 DPI from a 4:3 photo
METHODS = ["dither=atkinson", "dither=bayer,4", "threshold=140"]


pytestmark = pytest.mark.usefixtures("no_machine_config")


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(photo_pixels(800, 600)).save(path)
    return path


def process(cli: RunCli, cwd: Path, steps: str, out: str = "out",
            image: str = "photo.png") -> Path:
    """Run `hotfolder process` with `steps`; the output folder."""
    code, _, err = cli(cwd, "process", image, "-s", steps, "-o", out)
    assert code == 0, err
    return cwd / out


def opened(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image


def black_share(image: Image.Image) -> float:
    return float((np.asarray(image.convert("L")) < 128).mean())


def test_the_sheet_lies_beside_the_main_output_at_the_jobs_dpi(tmp_path: Path, photo: Path,
                                                               cli: RunCli) -> None:
    code, out, err = cli(tmp_path, "process", "photo.png", "-s",
                         f"{SIZE}+dither=jarvis+proof", "-o", "out")
    assert code == 0, err
    assert out == f"photo.png -> {Path('out/photo.png')}, {Path('out/photo_proof.png')}\n"
    main, sheet = opened(tmp_path / "out/photo.png"), opened(tmp_path / "out/photo_proof.png")
    assert main.size == (400, 300)
    assert sheet.mode == "1"
    assert sheet.info["dpi"] == pytest.approx(main.info["dpi"])
    assert main.info["dpi"] == pytest.approx((DPI, DPI))
    plan = proof.layout(main.size, DPI, 5)  # the recipe's own and four others by default
    assert sheet.size == plan.size
    columns = len({left for left, _ in plan.panels})
    rows = -(-5 // columns)
    assert sheet.width >= columns * main.width
    assert sheet.height >= rows * main.height + plan.wedge[0][3] - plan.wedge[0][1]


def test_each_panel_is_its_method_applied_alone(tmp_path: Path, photo: Path,
                                                cli: RunCli) -> None:
    chosen = ",".join(METHODS)  # a panel begins at each method's name
    out = process(cli, tmp_path, f"{SIZE}+dither=jarvis,serpentine+proof={chosen}")
    colons = ",".join(m.replace(",", ":") for m in METHODS)
    same = process(cli, tmp_path, f"{SIZE}+dither=jarvis,serpentine+proof={colons}", "colons")
    assert opened(same / "photo_proof.png").tobytes() == opened(out / "photo_proof.png").tobytes()
    main, sheet = opened(out / "photo.png"), opened(out / "photo_proof.png")
    plan = proof.layout(main.size, DPI, 1 + len(METHODS))
    assert sheet.size == plan.size
    alone = [main] + [opened(process(cli, tmp_path, f"{SIZE}+{m}", f"alone{i}") / "photo.png")
                      for i, m in enumerate(METHODS)]
    for (left, top), expected in zip(plan.panels, alone, strict=True):
        panel = sheet.crop((left, top, left + main.width, top + main.height))
        assert np.array_equal(np.asarray(panel), np.asarray(expected))
    assert len({np.asarray(image).tobytes() for image in alone}) == len(alone)  # all differ


def test_a_dot_width_after_the_dither_follows_every_method(tmp_path: Path, photo: Path,
                                                           cli: RunCli) -> None:
    out = process(cli, tmp_path, f"{SIZE}+dither=jarvis+dot_width=0.3mm+proof=atkinson")
    sheet = opened(out / "photo_proof.png")
    plan = proof.layout((400, 300), DPI, 2)
    alone = opened(process(cli, tmp_path, f"{SIZE}+dither=atkinson+dot_width=0.3mm", "alone")
                   / "photo.png")
    without = opened(process(cli, tmp_path, f"{SIZE}+dither=atkinson", "without") / "photo.png")
    left, top = plan.panels[1]
    panel = np.asarray(sheet.crop((left, top, left + 400, top + 300)))
    assert np.array_equal(panel, np.asarray(alone))
    assert not np.array_equal(panel, np.asarray(without))
    shares = [black_share(sheet.crop(box)) for box in plan.wedge]
    assert shares[-1] < 1 and shares[0] == 0  # the runs of the black patch are shorter too


def test_the_wedge_rises_from_white_to_black_in_eleven_patches(tmp_path: Path, photo: Path,
                                                               cli: RunCli) -> None:
    out = process(cli, tmp_path, f"{SIZE}+dither=jarvis+proof")
    sheet = opened(out / "photo_proof.png")
    plan = proof.layout((400, 300), DPI, 5)
    shares = [black_share(sheet.crop(box)) for box in plan.wedge]
    assert len(shares) == 11
    assert shares[0] == 0 and shares[-1] == 1
    assert shares == sorted(shares)
    assert shares == pytest.approx([step / 10 for step in range(11)], abs=0.03)


def test_every_panel_and_the_wedge_are_labelled(tmp_path: Path, photo: Path,
                                                cli: RunCli) -> None:
    out = process(cli, tmp_path, f"{SIZE}+dither=jarvis+proof")
    sheet = opened(out / "photo_proof.png")
    plan = proof.layout((400, 300), DPI, 5)
    for left, top in plan.panels:
        below = top + 300
        band = sheet.crop((left, below, left + plan.cell_width, below + plan.label_height))
        assert 0.005 < black_share(band) < 0.5  # text, not a filled box
    top = plan.wedge_label_top
    band = sheet.crop((0, top, sheet.width, top + plan.label_height))
    assert black_share(band) > 0.005


def test_the_default_others_differ_from_the_recipes_method(tmp_path: Path, photo: Path,
                                                           cli: RunCli) -> None:
    out = process(cli, tmp_path, f"{SIZE}+dither=halftone,6,45+proof")
    sheet = np.asarray(opened(out / "photo_proof.png"))
    plan = proof.layout((400, 300), DPI, 5)
    panels = {sheet[top:top + 300, left:left + 400].tobytes() for left, top in plan.panels}
    assert len(panels) == 5


def test_a_recipe_names_its_methods(tmp_path: Path, photo: Path, cli: RunCli) -> None:
    root = tmp_path / "hf"
    (root / "recipes").mkdir(parents=True)
    (root / "hotfolder.yaml").write_text("scanner: {clamd: 'off'}\nmetrics: {listen: 'off'}\n")
    (root / "recipes" / "wood-proof.yaml").write_text(
        "steps:\n  - size: {width: 40mm, height: 30mm, dpi: 254}\n  - grayscale\n"
        "  - dither: stucki\n  - proof: {methods: [atkinson, 'bayer,4']}\n"
        "output: {format: png}\nsidecar: true\n")
    code, _, err = cli(tmp_path, "process", "photo.png", "-c", root / "hotfolder.yaml",
                       "-r", "wood-proof", "-o", "out")
    assert code == 0, err
    assert opened(tmp_path / "out/photo_proof.png").size == proof.layout((400, 300), DPI, 3).size
    sidecar = json.loads((tmp_path / "out/photo.png.json").read_text())
    assert sidecar["steps"][-1] == {"proof": {"methods": ["dither=atkinson", "dither=bayer,4"]}}
    assert sidecar["extras"][0]["name"] == "photo_proof.png"


def test_ops_lists_proof(tmp_path: Path, cli: RunCli) -> None:
    code, out, _ = cli(tmp_path, "ops")
    assert code == 0
    assert "inline: proof | proof=METHOD[,ARG...]" in out.split("\nproof: ", 1)[1]


@pytest.mark.parametrize("steps", ["proof", "dpi=254+dither=atkinson+proof=otsu,halftone"])
def test_a_one_pixel_image_gives_a_sheet(tmp_path: Path, cli: RunCli, steps: str) -> None:
    Image.new("RGB", (1, 1), (200, 10, 10)).save(tmp_path / "dot.png")
    out = process(cli, tmp_path, steps, image="dot.png")
    sheet = opened(out / "dot_proof.png")
    assert sheet.width >= 11 and sheet.height >= 11
    top = proof.layout((1, 1), DPI, 3).wedge[-1][1]
    assert black_share(sheet.crop((0, 0, sheet.width, top))) > 0  # the labels


@pytest.mark.parametrize(("steps", "message"), [
    ("dither+proof=jarvsi", "did you mean 'jarvis'"),
    ("dither+proof=dither", "name a dither method"),
    ("dither+proof=threshold:300", "a grey level from 0 to 255"),
    ("dither+proof=bayer:3", "size"),
])
def test_bad_methods_are_named(tmp_path: Path, photo: Path, cli: RunCli, steps: str,
                               message: str) -> None:
    code, _, err = cli(tmp_path, "process", "photo.png", "-s", steps, "-o", "out")
    assert code != 0 and message in err and "Traceback" not in err
    assert not (tmp_path / "out" / "photo_proof.png").exists()


def test_the_pixel_budget_counts_the_sheet(tmp_path: Path, photo: Path, cli: RunCli) -> None:
    config = tmp_path / "hotfolder.yaml"
    config.write_text("scanner: {clamd: 'off'}\nmetrics: {listen: 'off'}\n"
                      "limits: {max_pixels: 1000000}\n")  # the photo fits, its sheet not
    code, _, err = cli(tmp_path, "process", "photo.png", "-c", config, "-s",
                       "dither+proof", "-o", "out")
    assert code != 0
    assert "step 2, proof: the result would be" in err
