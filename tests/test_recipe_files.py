"""Recipe files and folder names in the inbox are untrusted configuration (SPEC 3, 10).

Through the running service, `hotfolder process` and `hotfolder check`: a recipe.yaml is never
taken as an input, a new or changed one chooses the steps of the files dropped after it, and
YAML bombs, recipes of too many values and chains of too many steps fail with a reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import YAML_BOMB, RunCli
from helpers import drop, encoded, image_bytes, wait_until
from service_helpers import Daemon, files_under, make_root, start

WAIT = 30.0
FIRST_RECIPE = """\
steps:
  - resize: {width: 32, height: 24, mode: stretch}
  - grayscale
output: {format: png}
"""
SECOND_RECIPE = """\
steps:
  - resize: {width: 20, height: 10, mode: stretch}
  - invert
output: {format: bmp}
"""
# 10,001 steps in 140 kB: under the size limit for recipe files, over the limit of values.
HUGE_RECIPE = "steps:\n" + "  - invert\n" * 10_001
LONG_CHAIN = "+".join(["png"] * 63)  # 251 bytes: a name the file system takes
VALUES_LIMIT = "it holds more than 10000 values"


def reason(root: Path, rel: str) -> str:
    """The message of a failed file's report."""
    report = root / "failed" / f"{rel}.error.json"
    wait_until(report.exists, WAIT, f"failed/{rel}.error.json")
    message: str = json.loads(report.read_text())["message"]
    return message


def test_a_recipe_yaml_written_while_running_chooses_the_steps_of_later_files(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root")
    root = config.parent
    daemon = start(daemons, config)
    recipe = root / "inbox" / "Fresh" / "recipe.yaml"
    recipe.parent.mkdir()
    recipe.write_text(FIRST_RECIPE)  # saved in place, as an editor or a copy does
    drop(root, "Fresh/photo.jpg", image_bytes("JPEG", (300, 200), seed=1))
    first = root / "outbox" / "Fresh" / "photo.png"
    wait_until(first.exists, WAIT, "outbox/Fresh/photo.png")
    with Image.open(first) as image:
        assert (image.mode, image.size) == ("L", (32, 24))

    recipe.write_text(SECOND_RECIPE)
    flat = Image.new("RGB", (300, 200), (40, 90, 200))  # one colour: any pixel of it tells
    drop(root, "Fresh/again.jpg", encoded(flat, "JPEG"))
    second = root / "outbox" / "Fresh" / "again.bmp"
    wait_until(second.exists, WAIT, "outbox/Fresh/again.bmp")
    with Image.open(second) as image:
        assert image.size == (20, 10)
        pixels = np.asarray(image.convert("RGB"), np.int16)
    archived = root / "archive" / "Fresh" / "again.jpg"  # moved there after the delivery
    wait_until(archived.exists, WAIT, "archive/Fresh/again.jpg")
    with Image.open(archived) as original:
        colour = np.asarray(original.convert("RGB"), np.int16)[100, 150]
    assert np.abs(pixels[5, 10] - (255 - colour)).max() <= 8  # inverted

    scans = daemon.metric("hotfolder_watcher_last_scan_timestamp_seconds")
    wait_until(lambda: daemon.metric("hotfolder_watcher_last_scan_timestamp_seconds") != scans,
               WAIT, "another rescan of the inbox")
    assert recipe.read_text() == SECOND_RECIPE
    assert files_under(root / "inbox") == [recipe]
    assert files_under(root / "failed") == []
    assert daemon.metric("hotfolder_files_detected_total") == 2
    assert daemon.stop() == 0


def test_hostile_recipe_files_and_chains_fail_with_the_reason(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root")
    root = config.parent
    inbox = root / "inbox"
    (root / "recipes" / "many.yaml").write_text("steps:\n" + "  - invert\n" * 40)
    daemon = start(daemons, config)
    for folder, text in {"Bomb": YAML_BOMB, "Huge": HUGE_RECIPE}.items():
        (inbox / folder).mkdir()
        (inbox / folder / "recipe.yaml").write_text(text)
    deep = "Many/Many/Many/Many/Many"  # 40 steps from each: 200 in all
    for rel in ("Bomb/photo.jpg", "Huge/photo.jpg", f"{deep}/photo.jpg"):
        drop(root, rel, image_bytes("JPEG", seed=3))

    bomb = reason(root, "Bomb/photo.jpg")
    assert bomb == (f"Bomb/photo.jpg: {inbox / 'Bomb' / 'recipe.yaml'}, line 5: refused: it"
                    " holds more than 10000 values once its aliases are expanded, the limit for"
                    " a configuration or recipe file")
    huge = reason(root, "Huge/photo.jpg")
    assert huge.startswith(f"Huge/photo.jpg: {inbox / 'Huge' / 'recipe.yaml'}, line ")
    assert VALUES_LIMIT in huge
    assert reason(root, f"{deep}/photo.jpg") == (
        f"{deep}/photo.jpg: many/many/many/many/many: 200 steps, more than the limit of 50 steps"
        " per job")

    assert (inbox / "Bomb" / "recipe.yaml").read_text() == YAML_BOMB
    assert (inbox / "Huge" / "recipe.yaml").read_text() == HUGE_RECIPE
    assert daemon.get("/readyz")[0] == 200
    assert daemon.stop() == 0


def test_with_inline_names_denied_only_recipe_files_choose_steps(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root", recipes={"inline": "deny"})
    root = config.parent
    (root / "recipes" / "engrave-wood.yaml").write_text("steps: [grayscale]\n")
    daemon = start(daemons, config)
    drop(root, "grayscale+png/photo.jpg", image_bytes("JPEG", seed=4))
    drop(root, "Engrave Wood/photo.jpg", image_bytes("JPEG", seed=5))
    (root / "inbox" / "Own").mkdir()
    (root / "inbox" / "Own" / "recipe.yaml").write_text(FIRST_RECIPE)
    drop(root, "Own/photo.jpg", image_bytes("JPEG", seed=6))

    assert reason(root, "grayscale+png/photo.jpg") == (
        "grayscale+png/photo.jpg: folder 'grayscale+png' is not a recipe: it has no recipe.yaml,"
        " there is no recipes/grayscale+png.yaml, and inline folder names are turned off"
        " (recipes.inline: deny)")
    wait_until((root / "outbox" / "Engrave Wood" / "photo.jpg").exists, WAIT, "the named recipe")
    own = root / "outbox" / "Own" / "photo.png"
    wait_until(own.exists, WAIT, "the folder's own recipe")
    with Image.open(own) as image:
        assert (image.mode, image.size) == ("L", (32, 24))
    assert daemon.stop() == 0


# -- hotfolder check (the same files given to hotfolder process are kinds of test_hostile.py) --


def test_check_names_hostile_recipe_files_and_shows_the_inline_setting(
        tmp_path: Path, cli: RunCli) -> None:
    config = make_root(tmp_path / "root")
    inbox = config.parent / "inbox"
    for folder, text in {"Bomb": YAML_BOMB, "Huge": HUGE_RECIPE}.items():
        (inbox / folder).mkdir()
        (inbox / folder / "recipe.yaml").write_text(text)
    (inbox / LONG_CHAIN).mkdir()
    code, out, _ = cli(tmp_path, "check", "-c", config)
    assert code == 2
    lines = out.splitlines()
    assert "ok    inline folder names: allowed (recipes.inline: allow)" in lines
    assert (f"FAIL  inbox/Bomb/: {inbox / 'Bomb' / 'recipe.yaml'}, line 5: refused: it holds more"
            " than 10000 values once its aliases are expanded, the limit for a configuration or"
            " recipe file") in lines
    assert any(line.startswith("FAIL  inbox/Huge/: ") and VALUES_LIMIT in line for line in lines)
    assert (f"FAIL  inbox/{LONG_CHAIN}/: folder {LONG_CHAIN!r} is not a recipe: 63 steps, more"
            " than the limit of 50 steps per job") in lines

    denied = make_root(tmp_path / "denied", recipes={"inline": "deny"})
    code, out, _ = cli(tmp_path, "check", "-c", denied)
    assert code == 0
    assert "ok    inline folder names: turned off (recipes.inline: deny)" in out.splitlines()
