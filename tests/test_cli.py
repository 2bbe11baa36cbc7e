"""The command line without the service: init, process, check, ops, schema."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import RunCli
from helpers import exif_with, image_bytes
from hotfolder.cli import examples
from hotfolder.config import load_config
from hotfolder.recipes import Recipe, load_recipe

EXAMPLE_RECIPES = sorted((examples() / "recipes").glob("*.yaml"))


@pytest.fixture(autouse=True)
def no_machine_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No configuration of this machine applies, and no virus scanner is asked."""
    monkeypatch.setenv("HOTFOLDER_CONFIG", str(tmp_path / "no-such-config.yaml"))
    monkeypatch.setenv("HOTFOLDER_SCANNER__CLAMD", "off")


@pytest.mark.parametrize("path", EXAMPLE_RECIPES, ids=lambda p: p.stem)
def test_every_example_recipe_is_valid(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.steps and recipe.description


def test_examples_include_the_demo_recipe_and_a_valid_config(tmp_path: Path) -> None:
    assert "engrave-wood" in [p.stem for p in EXAMPLE_RECIPES]
    config = tmp_path / "hotfolder.yaml"
    config.write_bytes((examples() / "hotfolder.yaml").read_bytes())
    assert load_config(config).layout.inbox == tmp_path / "inbox"


def test_init_creates_a_root_that_check_accepts(tmp_path: Path, cli: RunCli) -> None:
    root = tmp_path / "hf"
    code, out, _ = cli(tmp_path, "init", "hf")
    assert code == 0
    for name in ("inbox", "outbox", "failed", "quarantine", "archive", "state", "recipes"):
        assert (root / name).is_dir()
    assert (root / "quarantine").stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in (root / "recipes").iterdir()) == [p.name for p in EXAMPLE_RECIPES]
    assert (root / "inbox" / "engrave-wood").is_dir()
    assert f"hotfolder check -c {root / 'hotfolder.yaml'}" in out

    code, out, err = cli(tmp_path, "check", "-c", root / "hotfolder.yaml")
    assert code == 0, out + err
    assert "ok    inbox/engrave-wood/: auto_orient, resize(width=1200, height=1200), grayscale," \
        " autocontrast -> png 300 dpi [recipes/engrave-wood.yaml]" in out
    assert "ok    inbox/: delivered unchanged (no recipe)" in out


def test_init_leaves_an_existing_configuration_alone(tmp_path: Path, cli: RunCli) -> None:
    cli(tmp_path, "init", "hf")
    config = tmp_path / "hf" / "hotfolder.yaml"
    config.write_text("root: .\ndefault_recipe: engrave-wood\n")
    code, out, _ = cli(tmp_path, "init", "hf")
    assert code == 0 and "existing one left unchanged" in out
    assert config.read_text() == "root: .\ndefault_recipe: engrave-wood\n"


def test_check_reports_each_broken_recipe_and_folder(tmp_path: Path, cli: RunCli) -> None:
    cli(tmp_path, "init", "hf")
    root = tmp_path / "hf"
    (root / "recipes" / "broken.yaml").write_text("steps:\n  - blur\n")
    (root / "inbox" / "resize=800+grayscal").mkdir()
    code, out, err = cli(tmp_path, "check", "-c", root / "hotfolder.yaml")
    assert code == 2
    fails = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 2, out
    assert f"{root / 'recipes' / 'broken.yaml'}, line 2, key steps.0" in fails[0]
    assert "unknown operation 'blur'" in fails[0]
    assert "folder 'resize=800+grayscal' is not a recipe: unknown operation 'grayscal'" \
        " (did you mean 'grayscale'?)" in fails[1]
    assert err == "2 problem(s) found\n"


def test_check_without_a_configuration(tmp_path: Path, cli: RunCli) -> None:
    code, out, err = cli(tmp_path, "check", "-c", "missing.yaml")
    assert (code, out) == (2, "")
    assert err == "hotfolder: missing.yaml: configuration file not found\n"


def test_process_with_the_demo_recipe(tmp_path: Path, cli: RunCli) -> None:
    (tmp_path / "photo.jpg").write_bytes(
        image_bytes("JPEG", (1800, 1200), exif=exif_with(6)))  # upright: 1200 x 1800
    code, out, err = cli(tmp_path, "process", "photo.jpg", "-r", "engrave-wood", "-o", "out")
    assert code == 0, err
    assert out == f"photo.jpg -> {Path('out/photo.png')}, {Path('out/photo.png.json')}\n"
    with Image.open(tmp_path / "out" / "photo.png") as image:
        assert image.size == (800, 1200) and image.mode == "L"
        assert image.info["dpi"] == pytest.approx((300, 300), abs=0.01)
        assert image.getextrema() == (0, 255)
    sidecar = json.loads((tmp_path / "out" / "photo.png.json").read_text())
    assert sidecar["input"]["type"] == "jpeg" and sidecar["exif"]["orientation"] == 6
    assert sidecar["output"] == {"name": "photo.png", "format": "png", "width": 800,
                                 "height": 1200, "dpi": 300.0,
                                 "size": (tmp_path / "out" / "photo.png").stat().st_size}


def test_process_scales_sixteen_bit_grey_to_the_nearest_eight_bit_level(tmp_path: Path,
                                                                        cli: RunCli) -> None:
    levels = [0, 128, 129, 385, 386, 32767, 32896, 65535]
    Image.fromarray(np.array([levels], dtype=np.uint16)).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as stored:
        assert stored.mode == "I;16"
    code, _, err = cli(tmp_path, "process", "deep.png", "-s", "png", "-o", "out")
    assert code == 0, err
    with Image.open(tmp_path / "out" / "deep.png") as image:
        assert image.mode == "L"
        # 65535 is white (255), not clipped: each level is v * 255 / 65535 rounded to nearest.
        assert [image.getpixel((x, 0)) for x in range(len(levels))] == [
            0, 0, 1, 1, 2, 127, 128, 255]


def test_process_refuses_to_overwrite_its_input(tmp_path: Path, cli: RunCli) -> None:
    (tmp_path / "a.png").write_bytes(image_bytes("PNG"))
    before = (tmp_path / "a.png").read_bytes()
    code, _, err = cli(tmp_path, "process", "a.png", "-s", "grayscale")
    assert code == 1
    assert err == "a.png: the output would overwrite the input; choose another output folder" \
        " with -o\n"
    assert (tmp_path / "a.png").read_bytes() == before


def test_process_many_files_in_parallel_processes(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        (photos / f"p{i}.jpg").write_bytes(image_bytes("JPEG", (320, 240), seed=i))
    result = subprocess.run(
        [sys.executable, "-m", "hotfolder.cli", "process", str(photos), "-s",
         "resize=100+grayscale+png", "-o", str(tmp_path / "out"), "-j", "2"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "HOTFOLDER_CONFIG": str(tmp_path / "none.yaml")},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "6 of 6 files processed\n"
    assert len(result.stdout.splitlines()) == 6
    outputs = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in outputs] == [f"p{i}.png" for i in range(6)]
    for path in outputs:
        with Image.open(path) as image:
            assert image.size == (100, 75) and image.mode == "L"


def test_ops_lists_operations_with_inline_forms(tmp_path: Path, cli: RunCli) -> None:
    code, out, _ = cli(tmp_path, "ops")
    assert code == 0
    block = out.split("resize: ", 1)[1].split("\n\n", 1)[0]
    assert "inline: resize=WxH[,fit|fill|stretch|pad]" in block
    assert "    mode: fit|fill|stretch|pad = \"fit\"" in block
    assert "\ngrayscale: " in out


def test_schema_describes_the_recipe_format(tmp_path: Path, cli: RunCli) -> None:
    code, out, _ = cli(tmp_path, "schema")
    schema = json.loads(out)
    assert code == 0
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(Recipe.model_fields)
    step_names = schema["properties"]["steps"]["items"]["anyOf"][0]["enum"]
    assert {"resize", "grayscale", "png"} <= set(step_names)


def test_usage_error_exit_code(tmp_path: Path, cli: RunCli) -> None:
    with pytest.raises(SystemExit) as exc:
        cli(tmp_path, "process", "a.jpg")  # neither -r nor -s
    assert exc.value.code == 2


def test_process_names_missing_and_special_files(tmp_path: Path, cli: RunCli) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")
    code, _, err = cli(tmp_path, "process", "nothere.jpg", "pipe.jpg", "-s", "png", "-o", "out",
                       "-j", "1")
    assert code == 1
    assert err.splitlines() == ["nothere.jpg: does not exist", "pipe.jpg: is not a regular file",
                                "0 of 2 files processed, 2 failed"]


def test_two_inputs_never_replace_each_other(tmp_path: Path, cli: RunCli) -> None:
    (tmp_path / "a.jpg").write_bytes(image_bytes("JPEG", (40, 30)))
    (tmp_path / "a.png").write_bytes(image_bytes("PNG", (20, 10)))
    code, out, err = cli(tmp_path, "process", "a.jpg", "a.png", "-s", "png", "-o", "out",
                         "-j", "1")
    assert code == 1
    assert out == f"a.jpg -> {Path('out/a.png')}\n"
    assert err.splitlines() == [
        "a.png: its output a.png was already made from a.jpg in this run; put {sha8} in the"
        " output name or process them separately",
        "1 of 2 files processed, 1 failed",
    ]
    with Image.open(tmp_path / "out" / "a.png") as image:
        assert image.size == (40, 30)


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"p{i}.jpg").write_bytes(image_bytes("JPEG", (64, 48), seed=i))
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    screen: list[bytes] = []

    def read_terminal() -> None:
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # closed once the process has gone and everything is read
                return
            if not chunk:
                return
            screen.append(chunk)

    reader = threading.Thread(target=read_terminal)
    reader.start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hotfolder.cli", "process", "p0.jpg", "p1.jpg", "p2.jpg", "-s",
         "png", "-o", "out", "-j", "2"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=follower,
        env={**os.environ, "HOTFOLDER_CONFIG": str(tmp_path / "none.yaml")},
    )
    os.close(follower)
    out, _ = proc.communicate(timeout=120)
    reader.join(timeout=30)
    os.close(leader)
    assert proc.returncode == 0
    assert len(out.splitlines()) == 3
    text = b"".join(screen).decode()
    assert "3/3" in text and "file/s" in text
    assert "3 of 3 files processed" in text


def test_a_folder_that_cannot_be_made_is_one_line(tmp_path: Path, cli: RunCli) -> None:
    (tmp_path / "taken").write_text("a file, not a folder")
    code, out, err = cli(tmp_path, "init", "taken/root")
    assert (code, out) == (2, "")
    assert err == f"hotfolder: {tmp_path / 'taken' / 'root' / 'inbox'}: Not a directory\n"
