"""Bad input for `hotfolder process` one file at a time: one plain line, an exit code, no output.

The kinds of hostile input, many files to a run, are the table of test_hostile.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import RunCli
from helpers import image_bytes
from test_hostile import PROCESS_KINDS


@pytest.mark.parametrize("name", ["empty.jpg", "drawing.jpg", "huge.png", "notes.jpg"])
def test_single_bad_file_exit_code_and_message(tmp_path: Path, name: str, cli: RunCli) -> None:
    kind = next(kind for kind in PROCESS_KINDS if kind.name == name)
    words = kind.reason
    assert words is not None
    (tmp_path / name).write_bytes(kind.make())
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
