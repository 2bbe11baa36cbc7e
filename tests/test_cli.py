"""The command line without the service: init, process, check, ops, schema."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw, ImageFont

from clamd_server import Clamd
from conftest import MountTmpfs, RunCli
from helpers import exif_with, image_bytes, zlib_level
from hotfolder import watcher, yamlfile
from hotfolder.cli import examples
from hotfolder.config import load_config
from hotfolder.errors import RecipeError
from hotfolder.recipes import Recipe, load_recipe

EXAMPLE_RECIPES = sorted((examples() / "recipes").glob("*.yaml"))


pytestmark = pytest.mark.usefixtures("no_machine_config")


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
    assert "unknown operation (value not shown)" in fails[0]  # a file's values are never quoted
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
    for inline in ("inline: curve=IN,OUT,IN,OUT,...", "inline: levels=BLACK,WHITE,GAMMA",
                   "inline: dot_width=WIDTH", "dither=blue-noise", "[,linear]"):
        assert inline in out


def test_schema_describes_the_recipe_format(tmp_path: Path, cli: RunCli) -> None:
    code, out, _ = cli(tmp_path, "schema")
    schema = json.loads(out)
    assert code == 0
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(Recipe.model_fields)
    bare_names = schema["properties"]["steps"]["items"]["anyOf"][0]["enum"]
    assert {"grayscale", "png", "optimize"} <= set(bare_names)
    assert "resize" not in bare_names  # resize needs a size


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_recipes() -> list[object]:
    """The recipes of README.md: its YAML blocks with steps, and the steps in its text."""
    text = README.read_text(encoding="utf-8")
    blocks = [yamlfile.parse(block, "README.md").data
              for block in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)]
    steps = [yamlfile.parse(item, "README.md").data[0]
             for item in re.findall(r"`(- [^`]+)`", text)]
    assert "resize=1200" in steps, "README.md shows inline steps"
    return [b for b in blocks if isinstance(b, dict) and "steps" in b] + [{"steps": steps}]


@pytest.fixture
def printed_schema(tmp_path: Path, cli: RunCli) -> jsonschema.Draft202012Validator:
    code, out, _ = cli(tmp_path, "schema")
    assert code == 0
    schema = json.loads(out)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", EXAMPLE_RECIPES, ids=lambda p: p.stem)
def test_every_shipped_recipe_is_valid_under_the_printed_schema(
        path: Path, printed_schema: jsonschema.Draft202012Validator) -> None:
    problems = [e.message for e in printed_schema.iter_errors(yamlfile.load(path).data)]
    assert problems == []


def test_every_readme_recipe_is_valid_under_the_printed_schema(
        tmp_path: Path, printed_schema: jsonschema.Draft202012Validator) -> None:
    recipes = readme_recipes()
    assert len(recipes) >= 2
    for number, data in enumerate(recipes):
        load_recipe(write_yaml(tmp_path / f"readme-{number}.yaml", data))
        assert [e.message for e in printed_schema.iter_errors(data)] == [], data


def write_yaml(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


# Each recipe text: does the loader take it? The printed schema must say the same.
SCHEMA_CASES = [
    ("steps: [resize=1600, jpeg=85, grayscale, 'optimize=,,9', png]", True),
    ("steps: [{jpeg: 85}, {png: null}, {webp: [80]}, {jpeg: {quality: 70}}]", True),
    ("steps: [{dither: jarvis}, {resize: {width: 100mm, dpi: 300}}, {grayscale: null}]", True),
    ("- grayscale\n- invert\n", True),
    ("steps: [{curve: '0:0,128:96,255:255'}, 'levels=16,240,1.2', {levels: {gamma: 1.2}},"
     " {curve: {points: [[0, 0], [255, 200]]}}, {dither: {method: blue-noise, linear: true}},"
     " {dither: {method: stevenson-arce, serpentine: true}}, dot_width=0.1mm,"
     " {dot_width: {width: 0.08mm}}]", True),
    ("steps: [{levels: {black: 10, gamma: 0}}]", False),
    ("steps: [{levels: {black: 300}}]", False),
    ("steps: [{curve: {points: [[0, 0], [300, 255]]}}]", False),
    ("steps: [{curve: {points: [[0, 0]]}}]", False),
    ("steps: [{dither: {method: sierra-4}}]", False),
    ("", True),
    ("sidecar: yes\noutput: {format: JPG, progressive: on, background: black}", True),
    ("steps: [resise=1600]", False),
    ("steps: [resize]", False),
    ("steps: [grayscale=2]", False),
    ("steps: [{grayscale: 2}]", False),
    ("steps: [{resize: {width: 10}, grayscale: null}]", False),
    ("output: {qualty: 90}", False),
    ("output: {quality: 101}", False),
    ("output: {format: eps}", False),
    ("output: {metadata: remove}", False),
    ("sidecar: maybe", False),
    ("colour: red", False),
    ("output: {background: '#102030'}", True),
    ("output: {background: [0, 0, 0]}", True),
    ("output: {background: nocolour}", False),
    ("output: {background: transparent}", False),
    ("output: {background: '#00000080'}", False),
]


@pytest.mark.parametrize(("text", "loads"), SCHEMA_CASES)
def test_the_printed_schema_takes_what_the_loader_takes(
        tmp_path: Path, printed_schema: jsonschema.Draft202012Validator, text: str,
        loads: bool) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_recipe(path)
    except RecipeError:
        loaded = False
    else:
        loaded = True
    assert loaded is loads
    assert printed_schema.is_valid(yamlfile.load(path).data) is loads


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


# A reader that goes away --------------------------------------------------------------


def small_root(tmp_path: Path, folders: int = 0) -> Path:
    """A root with no scanner and `folders` customer folders under inbox/grayscale/."""
    root = tmp_path / "hf"
    for name in ("inbox/grayscale", "recipes"):
        (root / name).mkdir(parents=True)
    for number in range(folders):
        (root / "inbox" / "grayscale" / f"customer {number:05d} with a long name").mkdir()
    config = root / "hotfolder.yaml"
    config.write_text("scanner: {clamd: 'off'}\nmetrics: {listen: 'off'}\n")
    return config


def hotfolder_into_closed_pipe(cwd: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run a command whose standard output is a pipe nobody reads any more."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        return subprocess.run([sys.executable, "-m", "hotfolder.cli", *map(str, args)],
                              cwd=cwd, stdout=writer, stderr=subprocess.PIPE, text=True,
                              timeout=120, check=False)
    finally:
        os.close(writer)


@pytest.mark.parametrize("command", [
    ["check"], ["status", "--json"], ["status"], ["ops"], ["schema"], ["cache"],
    ["process", "a.png", "-s", "png", "-o", "out", "-j", "1"],
], ids=" ".join)
def test_every_command_stops_quietly_when_its_reader_has_gone(tmp_path: Path,
                                                              command: list[str]) -> None:
    config = small_root(tmp_path)
    (tmp_path / "a.png").write_bytes(image_bytes("PNG"))
    done = hotfolder_into_closed_pipe(tmp_path, *command, *(
        ["-c", config] if command[0] not in ("ops", "schema") else []))
    assert (done.returncode, done.stderr) == (1, "")


def test_check_piped_into_head_stops_quietly(tmp_path: Path) -> None:
    config = small_root(tmp_path, folders=3000)  # far more lines than a pipe holds
    with (tmp_path / "stderr").open("wb") as stderr, subprocess.Popen(
            [sys.executable, "-m", "hotfolder.cli", "check", "-c", config],
            stdout=subprocess.PIPE, stderr=stderr) as writer:
        assert writer.stdout is not None
        head = subprocess.run(["head", "-1"], stdin=writer.stdout, capture_output=True,
                              text=True, timeout=120, check=True)
        writer.stdout.close()  # head has gone: nobody reads the rest
        assert writer.wait(timeout=120) == 1
    assert head.stdout == f"ok    configuration {config}\n"
    assert (tmp_path / "stderr").read_text() == ""


# Output settings: optimize, metadata, background -------------------------------------


def test_optimize_inline_sets_one_parameter_alone(tmp_path: Path, cli: RunCli) -> None:
    (tmp_path / "a.jpg").write_bytes(image_bytes("JPEG", (64, 48)))
    code, _, err = cli(tmp_path, "process", "a.jpg", "-s", "optimize=,,9+png", "-o", "out")
    assert (code, err) == (0, "")
    assert zlib_level((tmp_path / "out" / "a.png").read_bytes()) == 3
    code, _, err = cli(tmp_path, "process", "a.jpg", "-s", "png", "-o", "fast")
    assert zlib_level((tmp_path / "fast" / "a.png").read_bytes()) == 0


def fast_png_bytes(image: Image.Image) -> int:
    """The size of `image` as a PNG at zlib's fast level and its default strategy."""
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return len(out.getvalue())


def test_a_photo_png_is_coded_in_runs_and_drawn_text_is_not(tmp_path: Path,
                                                             cli: RunCli) -> None:
    (tmp_path / "photo.jpg").write_bytes(image_bytes("JPEG", (400, 300)))
    text = Image.new("L", (400, 300), 255)
    draw = ImageDraw.Draw(text)
    for line in range(14):
        draw.text((5, 5 + line * 20), f"line {line}: the quick brown fox jumps", fill=0,
                  font=ImageFont.load_default(size=14))
    text.save(tmp_path / "text.png")
    code, _, err = cli(tmp_path, "process", "photo.jpg", "text.png", "-s", "grayscale+png",
                       "-o", "out")
    assert code == 0, err
    with Image.open(tmp_path / "photo.jpg") as source, Image.open(tmp_path / "out" / "photo.png"
                                                                   ) as result:
        assert result.tobytes() == source.convert("L").tobytes()
        # Run-length coding makes the photograph's PNG smaller than the fast level's matching.
        assert (tmp_path / "out" / "photo.png").stat().st_size < 0.9 * fast_png_bytes(result)
    with Image.open(tmp_path / "out" / "text.png") as result:
        assert result.tobytes() == text.tobytes()
        # Text keeps the matching, which finds its repeated letters (runs make it 3x bigger).
        assert (tmp_path / "out" / "text.png").stat().st_size < 1.1 * fast_png_bytes(result)


@pytest.mark.parametrize(("metadata", "step", "kept"), [
    ("keep", "optimize=85", True),  # optimize without strip leaves output.metadata alone
    ("strip", "optimize: {strip: false}", True),  # a step's setting wins over output:
    ("keep", "optimize: {strip: true}", False),
    ("strip", "optimize=,true", False),
])
def test_one_rule_settles_optimize_strip_and_output_metadata(
        tmp_path: Path, cli: RunCli, metadata: str, step: str, kept: bool) -> None:
    (tmp_path / "a.jpg").write_bytes(image_bytes("JPEG", (64, 48), exif=exif_with(1)))
    (tmp_path / "r.yaml").write_text(
        f"steps:\n  - {step}\noutput:\n  format: jpeg\n  metadata: {metadata}\n")
    code, _, err = cli(tmp_path, "process", "a.jpg", "-r", "r.yaml", "-o", "out")
    assert (code, err) == (0, "")
    with Image.open(tmp_path / "out" / "a.jpg") as image:
        assert (image.getexif().get(0x010F) == "TestCam") is kept


def test_ops_shows_one_parameter_alone_and_the_output_rule(tmp_path: Path, cli: RunCli) -> None:
    code, out, _ = cli(tmp_path, "ops")
    assert code == 0
    block = out.split("\noptimize: ", 1)[1].split("\n\n", 1)[0]
    assert "    one parameter alone: optimize=,,,STRIP (empty places keep their defaults), or" \
        " - optimize: {strip: STRIP}" in block
    assert "strip: boolean|null = null  true: output.metadata strip, false: keep; unset:" \
        " output.metadata" in block
    assert out.endswith("a step that sets one (format, jpeg=85, optimize, dpi) wins over the"
                        " recipe's output: section, and optimize changes only the settings it"
                        " is given.\n")
    shown = subprocess.run([sys.executable, "-m", "hotfolder.cli", "ops", "--help"],
                           capture_output=True, text=True, timeout=60, check=True)
    assert "optimize changes only the settings it is given" in " ".join(shown.stdout.split())


def transparent_png() -> bytes:
    image = Image.new("RGBA", (20, 10), (255, 0, 0, 255))
    image.paste((0, 0, 0, 0), (10, 0, 20, 10))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize(("fmt", "background", "expected"), [
    ("jpeg", None, (255, 255, 255)), ("jpeg", "black", (0, 0, 0)),
    ("bmp", "'#2040ff'", (32, 64, 255)),
])
def test_a_recipe_chooses_the_colour_transparency_is_flattened_on(
        tmp_path: Path, cli: RunCli, fmt: str, background: str | None,
        expected: tuple[int, int, int]) -> None:
    (tmp_path / "logo.png").write_bytes(transparent_png())
    (tmp_path / "r.yaml").write_text(f"output:\n  format: {fmt}\n"
                                     + (f"  background: {background}\n" if background else ""))
    code, _, err = cli(tmp_path, "process", "logo.png", "-r", "r.yaml", "-o", "out")
    assert (code, err) == (0, "")
    with Image.open(tmp_path / "out" / f"logo.{'jpg' if fmt == 'jpeg' else fmt}") as image:
        assert image.getpixel((15, 5)) == pytest.approx(expected, abs=4)
        assert image.getpixel((5, 5)) == pytest.approx((255, 0, 0), abs=8)


@pytest.mark.parametrize(("background", "message"), [
    ("transparent", "must be opaque: JPEG and BMP hold no transparency"),
    ("walnut", "(value not shown) is not a colour (use a name such as white, #rrggbb or"
               " transparent)"),  # a file's values are never quoted
])
def test_a_background_that_is_no_opaque_colour_is_refused(
        tmp_path: Path, cli: RunCli, background: str, message: str) -> None:
    (tmp_path / "logo.png").write_bytes(transparent_png())
    (tmp_path / "r.yaml").write_text(f"output:\n  format: jpeg\n  background: {background}\n")
    code, _, err = cli(tmp_path, "process", "logo.png", "-r", "r.yaml", "-o", "out")
    assert code == 2
    assert err == f"hotfolder: r.yaml, line 3, key output.background: {message}\n"


# Error messages -------------------------------------------------------------------------


def test_a_misspelt_key_gets_the_closest_known_one(tmp_path: Path, cli: RunCli) -> None:
    (tmp_path / "a.jpg").write_bytes(image_bytes("JPEG"))
    (tmp_path / "r.yaml").write_text("output:\n  format: png\n  qualty: 90\n"
                                     "steps:\n  - resize: {widht: 100}\n")
    code, _, err = cli(tmp_path, "process", "a.jpg", "-r", "r.yaml", "-o", "out")
    assert code == 2
    assert err.splitlines() == [
        "hotfolder: r.yaml, line 5, key steps.0: resize: widht: unknown key, did you mean"
        " 'width'?",
        "r.yaml, line 3, key output.qualty: unknown key, did you mean 'quality'?",
    ]
    config = small_root(tmp_path)
    config.write_text("watch:\n  setle_seconds: 1\nscaner: {clamd: 'off'}\n")
    code, _, err = cli(tmp_path, "check", "-c", config)
    assert code == 2
    assert err.splitlines() == [
        f"hotfolder: {config}, line 2, key watch.setle_seconds: unknown key, did you mean"
        " 'settle_seconds'?",
        f"{config}, line 3, key scaner: unknown key, did you mean 'scanner'?",
    ]


@pytest.mark.parametrize(("args", "config_text", "message"), [
    (["check"], "queue: {workers: many}\n",
     "{config}, line 1, key queue.workers: must be a whole number or 'auto'"),
    (["check"], "output:\n  s3: 5\n", "{config}, line 2, key output.s3: must be a mapping of"
     " settings"),
    (["check"], "output:\n  s3: {bucket: b}\n",
     "{config}, line 2, key output.s3.bucket: must be at least 3 characters long"),
    (["process", "a.jpg", "-s", "adjust=bright", "-o", "out"], "",
     "-s 'adjust=bright': adjust: brightness: must be a number"),
    (["process", "a.jpg", "-s", "png=500", "-o", "out"], "",
     "-s 'png=500': format: quality: must be at most 100"),
])
def test_error_messages_are_plain_words(tmp_path: Path, cli: RunCli, args: list[str],
                                        config_text: str, message: str) -> None:
    config = small_root(tmp_path)
    config.write_text(config_text)
    (tmp_path / "a.jpg").write_bytes(image_bytes("JPEG"))
    code, _, err = cli(tmp_path, *args, "-c", config)
    assert code == 2
    assert err == f"hotfolder: {message.format(config=config)}\n"


def test_check_pings_clamd(tmp_path: Path, cli: RunCli, clamd: Clamd,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    cli(tmp_path, "init", "hf")
    monkeypatch.setenv("HOTFOLDER_SCANNER__CLAMD", clamd.address)
    monkeypatch.setenv("HOTFOLDER_LIMITS__MAX_FILE_MB", "1")  # within the test clamd's limits
    code, out, err = cli(tmp_path, "check", "-c", tmp_path / "hf" / "hotfolder.yaml")
    assert code == 0, out + err
    assert (f"ok    clamd at {clamd.address} answers and finds a test virus at the end of a file"
            " of 1 MB (limits.max_file_mb)\n") in out


def test_check_fails_when_clamd_does_not_answer(tmp_path: Path, cli: RunCli,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cli(tmp_path, "init", "hf")
    address = f"unix://{tmp_path / 'no-clamd.sock'}"
    monkeypatch.setenv("HOTFOLDER_SCANNER__CLAMD", address)
    code, out, err = cli(tmp_path, "check", "-c", tmp_path / "hf" / "hotfolder.yaml")
    assert code == 2
    assert [line for line in out.splitlines() if line.startswith("FAIL")] == [
        f"FAIL  the EICAR probe could not be scanned: clamd at {address} is not reachable (is"
        " clamd running?)"]
    assert err == "1 problem(s) found\n"


def test_check_says_whether_the_state_folder_is_on_a_local_disk(
        tmp_path: Path, cli: RunCli, monkeypatch: pytest.MonkeyPatch) -> None:
    cli(tmp_path, "init", "hf")
    state = tmp_path / "hf" / "state"
    code, out, _ = cli(tmp_path, "check", "-c", tmp_path / "hf" / "hotfolder.yaml")
    assert code == 0
    assert f"ok    {state}: the state folder is on a local disk\n" in out

    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/sda1 / ext4 rw 0 0\nnas:/export {state.resolve()} nfs4 rw 0 0\n")
    monkeypatch.setattr(watcher, "MOUNTS", mounts)  # the mount table the check reads
    code, out, err = cli(tmp_path, "check", "-c", tmp_path / "hf" / "hotfolder.yaml")
    assert code == 2
    assert [line for line in out.splitlines() if line.startswith("FAIL")] == [
        f"FAIL  {state}: the state folder is on a network filesystem; its SQLite databases"
        " need a local disk (set paths.state to a local folder)"]
    assert err == "1 problem(s) found\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_work_folder_on_another_filesystem_than_the_inbox_is_refused(
        tmp_path: Path, cli: RunCli, tmpfs: MountTmpfs, monkeypatch: pytest.MonkeyPatch) -> None:
    cli(tmp_path, "init", "hf")
    config, inbox = tmp_path / "hf" / "hotfolder.yaml", tmp_path / "hf" / "inbox"
    code, out, _ = cli(tmp_path, "check", "-c", config)
    assert code == 0
    assert f"ok    {inbox / '.hotfolder'}: the work folder is on the inbox's filesystem\n" in out

    work = tmpfs("elsewhere") / "work"  # not made yet: judged by the folder it would be made in
    problem = (f"{work}: the work folder is on another filesystem than the inbox {inbox}; a file"
               " is claimed by one rename, which needs both on one filesystem (set paths.work to"
               " a folder on the inbox's filesystem)")
    monkeypatch.setenv("HOTFOLDER_PATHS__WORK", str(work))
    code, out, err = cli(tmp_path, "check", "-c", config)
    assert code == 2
    assert [line for line in out.splitlines() if line.startswith("FAIL")] == [f"FAIL  {problem}"]
    assert err == "1 problem(s) found\n"
    run = subprocess.run([sys.executable, "-m", "hotfolder.cli", "run", "-c", str(config)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert (run.returncode, run.stderr) == (2, f"hotfolder: {problem}\n")
