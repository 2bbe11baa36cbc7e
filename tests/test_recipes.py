"""Recipes (SPEC 3): the inline grammar, recipe files, named recipes, folder resolution, errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import YAML_BOMB
from hotfolder import recipes as recipes_module
from hotfolder.errors import RecipeError
from hotfolder.ops.registry import REGISTRY
from hotfolder.recipes import (
    CHAINS_KEPT,
    Recipe,
    RecipeBook,
    load_recipe,
    parse_chain,
    recipe_name,
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "inbox").mkdir()
    (tmp_path / "recipes").mkdir()
    return tmp_path


def book(root: Path, default: str | None = None) -> RecipeBook:
    return RecipeBook(root / "recipes", default)


def ops(steps: list[object]) -> list[str]:
    return [step.op for step in steps]  # type: ignore[attr-defined]


# Inline grammar ---------------------------------------------------------------------


def test_inline_chain_from_the_spec() -> None:
    recipe = parse_chain("resize=800x600,fill+grayscale+png")
    assert [s.describe() for s in recipe.steps] == [
        {"resize": {"width": 800, "height": 600, "mode": "fill", "dpi": None,
                    "upscale": False, "gravity": "center", "fill": None}},
        {"grayscale": {}},
        {"format": {"format": "png", "quality": None}},
    ]


def test_every_inline_example_is_a_folder_name_windows_accepts() -> None:
    """SPEC 3: an inline chain must be writable as a folder on an SMB share (in the forms
    `hotfolder ops` shows, '|' separates alternatives)."""
    for op in REGISTRY.values():
        assert not set(op.inline_form) & set('<>:"/\\?*'), f"{op.name}: {op.inline_form}"


def test_inline_format_words_take_a_quality() -> None:
    (step,) = parse_chain("jpeg=85").steps
    assert step.describe() == {"format": {"format": "jpeg", "quality": 85}}
    (step,) = parse_chain("tif").steps
    assert step.describe() == {"format": {"format": "tiff", "quality": None}}


def test_inline_physical_size_with_dpi() -> None:
    (step,) = parse_chain("resize=100mmx50mm,fit,300").steps
    assert step.describe()["resize"]["width"] == "100mm"
    assert step.describe()["resize"]["dpi"] == 300


def test_inline_unknown_operation_names_the_closest_one() -> None:
    expected = r"unknown operation 'grayscal' \(did you mean 'grayscale'\?\)"
    with pytest.raises(RecipeError, match=expected):
        parse_chain("resize=800+grayscal")


def test_inline_empty_step_is_an_error() -> None:
    with pytest.raises(RecipeError, match="empty step"):
        parse_chain("grayscale++png")


def test_inline_bad_argument_names_the_operation() -> None:
    with pytest.raises(RecipeError, match=r"^resize: .*not a length"):
        parse_chain("resize=bigxsmall")


def test_inline_too_many_arguments() -> None:
    with pytest.raises(RecipeError, match="sharpen: takes at most 3 argument"):
        parse_chain("sharpen=1,2,3,4")


@pytest.mark.parametrize(("folder", "name"), [
    ("Engrave Wood", "engrave-wood"),
    ("engrave_wood", "engrave-wood"),
    ("  Photo On Glass ", "photo-on-glass"),
])
def test_recipe_names_from_folder_names(folder: str, name: str) -> None:
    assert recipe_name(folder) == name


# Recipe files ------------------------------------------------------------------------


def test_recipe_file_from_the_spec(tmp_path: Path) -> None:
    path = write(tmp_path / "wood.yaml", """\
description: Photo on wood, 300 DPI
steps:
  - auto_orient
  - resize: {width: 100mm, height: 100mm, dpi: 300, mode: fit}
  - grayscale
  - adjust: {contrast: 1.2, gamma: 0.9}
  - crop: 16:9
output:
  format: png
  quality: 90
  dpi: 300
  name: "{stem}_{width}x{height}.{ext}"
  metadata: strip
sidecar: true
""")
    recipe = load_recipe(path)
    assert ops(recipe.steps) == ["auto_orient", "resize", "grayscale", "adjust", "crop"]
    assert recipe.steps[1].describe()["resize"]["width"] == "100mm"
    assert recipe.steps[4].params.aspect == pytest.approx(16 / 9)  # type: ignore[attr-defined]
    assert recipe.output.format == "png" and recipe.output.dpi == 300
    assert recipe.sidecar is True


def test_aspect_ratios_in_yaml_are_not_read_as_base_60_numbers(tmp_path: Path) -> None:
    """YAML 1.1 would read 16:9 as 969; a crop to 969:1 would be a thin strip."""
    path = write(tmp_path / "r.yaml", "steps:\n  - crop: 16:9\n  - crop: {aspect: 4:3}\n")
    first, second = load_recipe(path).steps
    assert first.params.aspect == pytest.approx(16 / 9)  # type: ignore[attr-defined]
    assert second.params.aspect == pytest.approx(4 / 3)  # type: ignore[attr-defined]


def test_a_bare_list_is_a_list_of_steps(tmp_path: Path) -> None:
    path = write(tmp_path / "r.yaml", "- grayscale\n- invert\n")
    assert ops(load_recipe(path).steps) == ["grayscale", "invert"]


def test_an_empty_file_is_an_empty_recipe(tmp_path: Path) -> None:
    assert load_recipe(write(tmp_path / "r.yaml", "")) == Recipe()


@pytest.mark.parametrize(("text", "message"), [
    ("steps:\n  - grayscale\noutptu:\n  format: png\n",
     r"r\.yaml, line 3, key outptu: unknown key, did you mean 'output'\?$"),
    ("steps:\n  - grayscale\n  - resise: 800\n",
     r"r\.yaml, line 3, key steps\.1: unknown operation 'resise' \(did you mean 'resize'\?\)"),
    ("steps:\n  - resize:\n      width: 10\n      colour: red\n",
     r"r\.yaml, line 2, key steps\.0: resize: colour: unknown key"),
    ("output:\n  format: png\n  quality: 900\n",
     r"r\.yaml, line 3, key output\.quality: must be at most 100$"),
    ("output:\n  name: '{stem}/{ext}'\n", r"line 2, key output\.name: the name may not contain"),
    ("output:\n  name: '{colour}.{ext}'\n", r"line 2, key output\.name: unknown field \{colour\}"),
    ("steps: [grayscale\n", r"r\.yaml, line 2: not valid YAML"),
    ("just text\n", r"r\.yaml: a recipe is a mapping"),
])
def test_recipe_errors_name_the_file_the_line_and_the_key(tmp_path: Path, text: str,
                                                          message: str) -> None:
    path = write(tmp_path / "r.yaml", text)
    with pytest.raises(RecipeError, match=message) as caught:
        load_recipe(path)
    assert str(path) in caught.value.message
    assert "Traceback" not in caught.value.message


def test_json_schema_lists_every_operation() -> None:
    schema = Recipe.model_json_schema()
    text = str(schema)
    for name in ("resize", "crop", "trim", "rotate", "thumbnail", "metadata", "equalize"):
        assert f"'{name}'" in text


# Resolution (SPEC 3) ---------------------------------------------------------------------


def test_recipe_yaml_inside_the_folder_comes_first(root: Path) -> None:
    write(root / "inbox" / "grayscale" / "recipe.yaml", "steps: [invert]\n")
    write(root / "recipes" / "grayscale.yaml", "steps: [flip]\n")
    plan = book(root).resolve(root / "inbox", root / "inbox" / "grayscale" / "a.jpg")
    assert ops(plan.steps) == ["invert"]
    assert plan.sources == (str(root / "inbox" / "grayscale" / "recipe.yaml"),)


def test_named_recipe_comes_before_the_inline_reading(root: Path) -> None:
    write(root / "recipes" / "engrave-wood.yaml", "steps: [grayscale, invert]\nsidecar: true\n")
    (root / "inbox" / "Engrave Wood").mkdir()
    plan = book(root).resolve(root / "inbox", root / "inbox" / "Engrave Wood" / "a.jpg")
    assert ops(plan.steps) == ["grayscale", "invert"]
    assert plan.name == "engrave-wood"
    assert plan.sources == ("recipes/engrave-wood.yaml",)
    assert plan.sidecar is True


def test_folder_name_read_as_an_inline_chain(root: Path) -> None:
    folder = root / "inbox" / "resize=800x600,fill+grayscale+png"
    folder.mkdir()
    plan = book(root).resolve(root / "inbox", folder / "a.jpg")
    assert ops(plan.steps) == ["resize", "grayscale", "format"]
    assert plan.sources == ("folder name",)


def test_nested_folders_apply_a_then_b_and_merge_output_settings(root: Path) -> None:
    write(root / "recipes" / "a.yaml",
          "steps: [auto_orient]\noutput: {format: jpeg, quality: 70}\nsidecar: true\n")
    write(root / "inbox" / "A" / "B" / "recipe.yaml",
          "steps: [grayscale]\noutput: {format: png}\n")
    plan = book(root).resolve(root / "inbox", root / "inbox" / "A" / "B" / "photo.jpg")
    assert ops(plan.steps) == ["auto_orient", "grayscale"]
    assert plan.output.format == "png"
    assert plan.output.quality == 70
    assert plan.sidecar is True
    assert plan.name == "a/B"


def test_a_folder_that_is_no_recipe_names_the_folder_and_the_closest_operation(
        root: Path) -> None:
    folder = root / "inbox" / "Holiday Photos"
    folder.mkdir()
    with pytest.raises(RecipeError) as caught:
        book(root).resolve(root / "inbox", folder / "a.jpg")
    assert caught.value.message == (
        "folder 'Holiday Photos' is not a recipe: unknown operation 'Holiday Photos'"
    )
    folder = root / "inbox" / "grayscal+png"
    folder.mkdir()
    with pytest.raises(RecipeError, match=(
            r"folder 'grayscal\+png' is not a recipe: unknown operation 'grayscal' "
            r"\(did you mean 'grayscale'\?\)")):
        book(root).resolve(root / "inbox", folder / "a.jpg")


def test_folder_names_are_read_once_for_their_jobs_within_a_bounded_memory(
        root: Path) -> None:
    recipes = book(root)
    inbox = root / "inbox"
    good, bad = inbox / "grayscale+png", inbox / "grayscal+png"
    plans = []
    for _ in range(2):  # the second reading comes from what the first kept, the same
        plans.append(recipes.resolve(inbox, good / "dpi=300" / "order-7" / "a.jpg"))
        assert ops(plans[-1].steps) == ["grayscale", "format", "dpi"]
        with pytest.raises(RecipeError, match=r"unknown operation 'grayscal' \(did you mean"):
            recipes.resolve(inbox, bad / "a.jpg")
    # Names made on the share without end keep no more than CHAINS_KEPT readings.
    for n in range(CHAINS_KEPT + 50):
        recipes.resolve(inbox, good / f"dpi={n + 1}" / "a.jpg")
    assert plans[0] is plans[1]  # combined once
    assert recipes_module._folder_chain.cache_info().currsize <= CHAINS_KEPT
    assert len(recipes._plans) <= CHAINS_KEPT


def test_a_broken_recipe_file_fails_with_its_own_location(root: Path) -> None:
    write(root / "inbox" / "X" / "recipe.yaml", "steps:\n  - blur\n")
    with pytest.raises(RecipeError, match=r"recipe\.yaml, line 2, key steps\.0: unknown operation"):
        book(root).resolve(root / "inbox", root / "inbox" / "X" / "a.jpg")


def test_files_directly_in_the_inbox_get_the_default_recipe(root: Path) -> None:
    write(root / "recipes" / "web.yaml", "steps: [auto_orient, thumbnail]\n")
    plan = book(root, default="web").resolve(root / "inbox", root / "inbox" / "a.jpg")
    assert ops(plan.steps) == ["auto_orient", "thumbnail"]
    assert plan.name == "web"


def test_files_directly_in_the_inbox_without_default_are_delivered_unchanged(root: Path) -> None:
    plan = book(root).resolve(root / "inbox", root / "inbox" / "a.jpg")
    assert plan.steps == [] and plan.name == "none"


def test_get_by_name_or_by_path(root: Path) -> None:
    write(root / "recipes" / "engrave-wood.yaml", "steps: [grayscale]\n")
    other = write(root / "elsewhere" / "glass.yaml", "steps: [mirror]\n")
    assert ops(book(root).get("Engrave Wood").steps) == ["grayscale"]
    assert ops(book(root).get(str(other)).steps) == ["mirror"]
    with pytest.raises(RecipeError, match=r"no recipe named 'slate' \(known: engrave-wood\)"):
        book(root).get("slate")


def test_a_changed_recipe_file_is_read_again(root: Path) -> None:
    path = write(root / "recipes" / "x.yaml", "steps: [grayscale]\n")
    recipes = book(root)
    assert ops(recipes.get("x").steps) == ["grayscale"]
    path.write_text("steps: [invert]\n", encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert ops(recipes.get("x").steps) == ["invert"]


def test_a_recipe_file_replaced_with_the_same_time_is_read_again(root: Path) -> None:
    path = write(root / "inbox" / "A" / "recipe.yaml", "steps: [grayscale]\n")
    recipes = book(root)
    photo = root / "inbox" / "A" / "a.jpg"
    assert ops(recipes.resolve(root / "inbox", photo).steps) == ["grayscale"]
    before = path.stat()
    replacement = write(root / "inbox" / "A" / ".new", "steps: [invert]\n")
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
    replacement.replace(path)
    assert ops(recipes.resolve(root / "inbox", photo).steps) == ["invert"]


# Untrusted recipe files and folder names (SPEC 10) -------------------------------------------

def test_a_yaml_bomb_is_refused_with_the_file_and_the_limit(root: Path) -> None:
    path = write(root / "inbox" / "A" / "recipe.yaml", YAML_BOMB)
    assert path.stat().st_size < 300
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert caught.value.message == (
        f"{path}, line 5: refused: it holds more than 10000 values once its aliases are"
        " expanded, the limit for a configuration or recipe file")


def test_a_long_plain_list_is_refused_without_talk_of_aliases(tmp_path: Path) -> None:
    path = write(tmp_path / "long.yaml", "steps:\n" + "  - invert\n" * 10_000)
    with pytest.raises(RecipeError, match=(
            r"long\.yaml, line 10001: refused: it holds more than 10000 values, the limit")):
        load_recipe(path)


@pytest.mark.parametrize("text", [
    "steps: " + "[" * 5000 + "]" * 5000 + "\n",
    "a: &a " + "[" * 40 + "1" + "]" * 40 + "\nsteps: " + "[" * 20 + "*a" + "]" * 20 + "\n",
], ids=["nested", "nested-by-alias"])
def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "deep.yaml", text)
    with pytest.raises(RecipeError, match=r"deep\.yaml, line \d+: refused: it nests more than 50"
                                          r" levels deep"):
        load_recipe(path)


def test_anchors_and_aliases_of_ordinary_size_still_work(tmp_path: Path) -> None:
    path = write(tmp_path / "shared.yaml", """\
steps:
  - &size {resize: {width: 800, height: 600}}
  - grayscale
  - *size
""")
    assert ops(load_recipe(path).steps) == ["resize", "grayscale", "resize"]


def test_a_job_of_more_than_50_steps_is_refused(root: Path) -> None:
    folder = root / "inbox"
    for _ in range(26):
        folder = folder / "grayscale+invert"
    folder.mkdir(parents=True)
    with pytest.raises(RecipeError) as caught:
        book(root).resolve(root / "inbox", folder / "a.jpg")
    assert caught.value.message == (
        f"{'/'.join(['grayscale+invert'] * 26)}: 52 steps, more than the limit of 50 steps"
        " per job")
    fifty = root / "inbox" / "+".join(["png"] * 50)
    fifty.mkdir()
    assert len(book(root).resolve(root / "inbox", fifty / "a.jpg").steps) == 50


def test_a_chain_of_hundreds_of_steps_is_refused_before_its_steps_are_read() -> None:
    with pytest.raises(RecipeError, match=r"^300 steps, more than the limit of 50 steps per job$"):
        parse_chain("+".join(["nosuchop"] * 300))


@pytest.mark.parametrize("inline", [True, False])
def test_below_a_recipe_folder_only_plain_sub_folders_add_no_steps(root: Path,
                                                                  inline: bool) -> None:
    write(root / "recipes" / "engrave-wood.yaml", "steps: [grayscale]\n")
    write(root / "recipes" / "extra.yaml", "steps: [autocontrast]\n")
    inbox = root / "inbox"
    write(inbox / "engrave-wood" / "Own" / "recipe.yaml", "steps: [invert]\n")
    # A recipe file in a folder whose name is a chain: the file chooses, not the name.
    write(inbox / "engrave-wood" / "invert+png" / "recipe.yaml", "steps: [autocontrast]\n")
    recipes = RecipeBook(root / "recipes", inline=inline)
    expected = {
        "customer-7/order-12": ["grayscale"],  # plain, whatever the setting
        "Own": ["grayscale", "invert"],  # its recipe.yaml
        "extra": ["grayscale", "autocontrast"],  # a named recipe
        "invert+png": ["grayscale", "autocontrast"],  # its recipe.yaml
        "invert": ["grayscale", "invert"] if inline else ["grayscale"],  # a step's name
        "dpi=300/customer-7": ["grayscale", "dpi"] if inline else ["grayscale"],
    }
    for below, steps in expected.items():
        photo = inbox / "engrave-wood" / below / "a.jpg"
        assert ops(recipes.resolve(inbox, photo).steps) == steps, below


def test_with_inline_names_denied_only_recipe_files_choose_steps(root: Path) -> None:
    write(root / "inbox" / "Own" / "recipe.yaml", "steps: [invert]\n")
    write(root / "recipes" / "engrave-wood.yaml", "steps: [grayscale]\n")
    (root / "inbox" / "Engrave Wood").mkdir()
    (root / "inbox" / "grayscale+png").mkdir()
    recipes = RecipeBook(root / "recipes", inline=False)
    inbox = root / "inbox"
    assert ops(recipes.resolve(inbox, inbox / "Own" / "a.jpg").steps) == ["invert"]
    assert ops(recipes.resolve(inbox, inbox / "Engrave Wood" / "a.jpg").steps) == ["grayscale"]
    with pytest.raises(RecipeError) as caught:
        recipes.resolve(inbox, inbox / "grayscale+png" / "a.jpg")
    assert caught.value.message == (
        "folder 'grayscale+png' is not a recipe: it has no recipe.yaml, there is no"
        " recipes/grayscale+png.yaml, and inline folder names are turned off"
        " (recipes.inline: deny)")
