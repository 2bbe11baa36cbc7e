"""Bad input for `hotfolder process`: one plain line per file, an exit code, no partial output."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from conftest import Recorder, RunCli
from helpers import image_bytes, png_file
from test_imaging import svg_with_image

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto showpage\n"


def hotfolder(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the real command line in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "hotfolder.cli", *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
    )


def bad_files(folder: Path, web_url: str) -> dict[str, tuple[bytes, str]]:
    """name -> (content, words the reason must contain)."""
    jpeg = image_bytes("JPEG", (300, 200))
    secret = folder / "secret.txt"
    secret.write_text("hunter2")
    return {
        "empty.jpg": (b"", "the file is empty"),
        "cut.jpg": (jpeg[: len(jpeg) // 2], "jpeg file is truncated"),
        "huge.png": (png_file(65535, 65535, rows=0), "4295 megapixels, over the limit"),
        "bomb.png": (png_file(12000, 12000, bit_depth=1), "decompression bomb"),
        "notes.jpg": (b"Dear customer,\nplease engrave this.\n", "ASCII text"),
        "drawing.png": (EPS, "PostScript"),
        "entity.svg": (
            f'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file://{secret}">]>'
            '<svg xmlns="http://www.w3.org/2000/svg"><text>&x;</text></svg>'.encode(),
            "declares XML entities",
        ),
        "remote.svg": (svg_with_image(f"{web_url}/pixel.png"),
                       f"outside resource ({web_url}/pixel.png)"),
    }


def test_each_bad_file_gets_one_line_and_no_output(tmp_path: Path, web: str) -> None:
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    cases = bad_files(tmp_path, web)
    for name, (data, _) in cases.items():
        (inbox / name).write_bytes(data)
    (inbox / "good.jpg").write_bytes(image_bytes("PNG", (60, 40)))  # a PNG named .jpg

    result = hotfolder("process", inbox, "-s", "grayscale", "-o", out, cwd=tmp_path)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    for name, (_, words) in cases.items():
        mine = [line for line in lines if line.startswith(f"{inbox / name}: ")]
        assert len(mine) == 1, (name, lines)
        assert words in mine[0], (name, mine[0])
    assert lines[-1] == f"1 of {len(cases) + 1} files processed, {len(cases)} failed"
    assert len(lines) == len(cases) + 1
    # Only the good file has an output, named by its content, and no temporary is left.
    assert sorted(p.name for p in out.iterdir()) == ["good.png"]
    with Image.open(out / "good.png") as image:
        assert image.format == "PNG" and image.mode == "L" and image.size == (60, 40)
    assert Recorder.hits == []


@pytest.mark.parametrize("name", ["empty.jpg", "drawing.png", "huge.png", "notes.jpg"])
def test_single_bad_file_exit_code_and_message(tmp_path: Path, name: str, web: str,
                                               cli: RunCli) -> None:
    data, words = bad_files(tmp_path, web)[name]
    (tmp_path / name).write_bytes(data)
    code, out, err = cli(tmp_path, "process", name, "-s", "png", "-o", "out")
    assert code == 1
    assert len(err.splitlines()) == 1 and err.startswith(f"{name}: ")
    assert words in err
    assert out == ""
    assert list((tmp_path / "out").iterdir()) == []


def test_unknown_operation_is_a_usage_error(tmp_path: Path,
                                            cli: RunCli) -> None:
    (tmp_path / "a.jpg").write_bytes(image_bytes("JPEG"))
    code, _, err = cli(tmp_path, "process", "a.jpg", "-s", "resize=100+grayscal",
                           "-o", "out")
    assert code == 2
    assert err.splitlines() == [
        "hotfolder: -s 'resize=100+grayscal': unknown operation 'grayscal'"
        " (did you mean 'grayscale'?)"
    ]
    assert not (tmp_path / "out").exists()


def test_recipe_with_unknown_key_names_file_line_and_key(
        tmp_path: Path, cli: RunCli) -> None:
    (tmp_path / "a.jpg").write_bytes(image_bytes("JPEG"))
    recipe = tmp_path / "wood.yaml"
    recipe.write_text("steps:\n  - grayscale\noutput:\n  format: png\n  colour: red\n")
    code, _, err = cli(tmp_path, "process", "a.jpg", "-r", recipe, "-o", "out")
    assert code == 2
    assert err.splitlines() == [f"hotfolder: {recipe}, line 5, key output.colour: unknown key"]
    assert not (tmp_path / "out").exists()


def test_a_jpeg_with_a_zip_appended_comes_out_clean(
        tmp_path: Path, cli: RunCli) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("payload.txt", "hidden")
    (tmp_path / "a.jpg").write_bytes(image_bytes("JPEG", (80, 60)) + archive.getvalue())
    code, out, err = cli(tmp_path, "process", "a.jpg", "-s", "jpeg", "-o", "out")
    assert code == 0, err
    assert out == f"a.jpg -> {Path('out', 'a.jpg')}\n"
    data = (tmp_path / "out" / "a.jpg").read_bytes()
    assert b"PK\x03\x04" not in data and b"payload.txt" not in data
    with Image.open(tmp_path / "out" / "a.jpg") as image:
        assert image.size == (80, 60)
