"""Recipes: the YAML format, the inline folder-name grammar, and how a path chooses steps (SPEC 3).

A file at `inbox/A/B/photo.jpg` gets the steps of `A`, then those of `B`. Each
folder contributes the first that exists of: `A/recipe.yaml`, the named recipe
`recipes/a.yaml`, or the folder name read as an inline chain
(`resize=800x600,fill+grayscale+png`). Below a folder that chose steps, a folder
that is none of these and whose name holds no `=` or `+` is a plain sub-folder (a
customer, an order): it adds no steps and stays in the output path.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import json
import os
import re
import stat
import string
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from PIL import ImageColor
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    field_validator,
)
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from hotfolder import __version__, yamlfile
from hotfolder.config import RECIPE_FILE
from hotfolder.errors import RecipeError
from hotfolder.formats import NAMES, WORDS, FormatName
from hotfolder.modes import RGBA, WHITE, Color
from hotfolder.ops import REGISTRY, Operation, lookup
from hotfolder.pipeline import Step

NAME_FIELDS = {"stem", "ext", "recipe", "date", "sha8", "width", "height"}
# Steps one job may have, from all its folders together: folder names and recipe files are
# written by anyone who can write to the share, and every step costs a pass over the image.
MAX_STEPS = 50
CHAIN_MARKS = frozenset("=+")  # a folder name holding one of these is meant as a chain
FOLDER_NAME = "folder name"  # the source of a part read from a folder's name as a chain
# Why a named recipe's file cannot be looked at, when it is simply not there.
NO_FILE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG})
# Folder names whose reading as a chain is kept (each job of a folder asks again): at most
# this many, the last seen, so names made on the share cost a bounded amount of memory.
CHAINS_KEPT = 512


def word_to_step(word: str, args: Any) -> Step:
    """A step from an operation word and its arguments (None, a mapping, or inline args)."""
    # Bare format words in a chain (`+png`, `jpeg=85`) are the `format` operation.
    if word in WORDS and word not in REGISTRY:
        fmt = WORDS[word]
        if isinstance(args, dict):
            if "format" in args:
                raise RecipeError(f"{word}: the word names the format; give only the quality")
            args = {"format": fmt, **args}
        else:
            args = [fmt, *(args if isinstance(args, list) else [] if args is None else [args])]
        word = "format"
    op: Operation = lookup(word)
    return Step(op.name, op.parse(args))


def parse_step(value: Any) -> Step:
    """A step from its YAML form: `grayscale`, `resize=800x600`, or `{resize: {...}}`."""
    if isinstance(value, Step):
        return value
    if isinstance(value, str):
        word, _, rest = value.strip().partition("=")
        step = word_to_step(word.strip(), rest.split(",") if rest else None)
        return dataclasses.replace(step, text=value.strip())
    if isinstance(value, dict) and len(value) == 1:
        ((word, args),) = value.items()
        return word_to_step(str(word), args)
    raise RecipeError("a step is an operation name, or a mapping with one operation name as key")


def _validate_step(value: Any) -> Step:
    try:
        return parse_step(value)
    except RecipeError as exc:
        raise ValueError(exc.message) from None


def any_case(words: Iterable[str]) -> str:
    """A JSON Schema pattern matching any of `words` in any letter case."""
    def letters(word: str) -> str:
        return "".join(f"[{c}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)

    return f"^(?:{'|'.join(letters(word) for word in sorted(words))})$"


class RecipeSchema(GenerateJsonSchema):
    """The JSON Schema of what the loader reads: booleans also as yes/no/on/off (yamlfile)."""

    def bool_schema(self, schema: core_schema.BoolSchema) -> JsonSchemaValue:
        """A boolean, or the words and digits that pydantic reads as one."""
        words = ("yes", "no", "on", "off", "true", "false", "y", "n", "t", "f")
        return {"anyOf": [{"type": "boolean"}, {"type": "string", "pattern": any_case(words)},
                          {"enum": [0, 1]}]}


def _bare(op: Operation) -> bool:
    """True when the operation may be named without parameters."""
    try:
        op.parse(None)
    except RecipeError:
        return False
    return True


def _step_schema() -> dict[str, Any]:
    """JSON Schema of one step: `op`, `op=arg,...` (as in folder names), or `{op: params}`."""
    bare = sorted([*(name for name, op in REGISTRY.items() if _bare(op)), *WORDS])
    takes = sorted([*(name for name, op in REGISTRY.items() if op.params.model_fields),
                    *WORDS])
    choices: list[dict[str, Any]] = [
        {"type": "string", "enum": bare},
        {"type": "string", "pattern": rf"^\s*(?:{'|'.join(bare)})\s*=?\s*$"
                                      rf"|^\s*(?:{'|'.join(takes)})\s*=.*$"},
    ]
    fmt = REGISTRY["format"].params.model_json_schema(schema_generator=RecipeSchema)
    by_word = {word: {"type": "object", "additionalProperties": False,
                      "properties": {k: v for k, v in fmt["properties"].items() if k != "format"}}
               for word in WORDS if word not in REGISTRY}
    for name, op in sorted(REGISTRY.items()):
        by_word[name] = op.params.model_json_schema(schema_generator=RecipeSchema)
    for word, params in sorted(by_word.items()):
        op = REGISTRY.get(word) or REGISTRY["format"]
        inline: list[dict[str, Any]] = [params]
        if op.params.model_fields:
            inline.append({"type": ["string", "number", "array"]})
        if word in bare:
            inline.append({"type": "null"})
        choices.append({
            "type": "object",
            "description": op.summary,
            "properties": {word: {"anyOf": inline}},
            "required": [word],
            "additionalProperties": False,
        })
    return {"anyOf": choices}


StepField = Annotated[
    Step,
    PlainValidator(_validate_step),
    PlainSerializer(lambda s: s.describe(), return_type=dict),
    WithJsonSchema(_step_schema()),
]


def _opaque(rgba: RGBA) -> RGBA:
    if rgba[3] != 255:
        raise ValueError("must be opaque: JPEG and BMP hold no transparency")
    return rgba


FormatWord = Annotated[
    FormatName,
    WithJsonSchema({"anyOf": [{"type": "string", "enum": list(NAMES)},
                              {"type": "string", "pattern": any_case(WORDS)}]}),
]
_BYTE = {"type": "integer", "minimum": 0, "maximum": 255}
Background = Annotated[Color, AfterValidator(_opaque), WithJsonSchema({"anyOf": [
    {"type": "string", "enum": sorted(ImageColor.colormap)},
    {"type": "string", "pattern": "^#?(?:[0-9a-fA-F]{3}[fF]?|[0-9a-fA-F]{6}(?:[fF]{2})?)$"},
    {"type": "array", "items": _BYTE, "minItems": 3, "maxItems": 3},
    {"type": "array", "prefixItems": [_BYTE, _BYTE, _BYTE, {"const": 255}], "minItems": 4,
     "maxItems": 4},
]})]


class OutputSpec(BaseModel):
    """How the result is written: format, quality, DPI, name, metadata."""

    model_config = ConfigDict(extra="forbid")

    format: FormatWord | None = Field(
        None, description="output format; by default the input's format"
    )
    quality: int = Field(90, ge=1, le=100, description="JPEG/WebP quality")
    progressive: bool = Field(False, description="progressive JPEG")
    compression: int | None = Field(
        None, ge=0, le=9, description="PNG zlib level (0-9); by default a fast level"
    )
    lossless: bool = Field(False, description="lossless WebP")
    dpi: float | None = Field(None, gt=0, description="resolution written into the file")
    name: str = Field("{stem}.{ext}", description="output file name template")
    metadata: Literal["strip", "keep"] = "strip"
    background: Background = Field(
        WHITE, description="the colour transparency is flattened on for JPEG and BMP: a name"
        " such as black, or #rrggbb"
    )

    @field_validator("format", mode="before")
    @classmethod
    def _format_word(cls, value: Any) -> Any:
        return WORDS.get(str(value).lower(), value) if value is not None else None

    @field_validator("name")
    @classmethod
    def _template(cls, value: str) -> str:
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        except ValueError as exc:
            raise ValueError(f"bad name template: {exc}") from None
        unknown = fields - NAME_FIELDS
        if unknown:
            raise ValueError(
                f"unknown field {{{sorted(unknown)[0]}}} in name; known: "
                + " ".join(f"{{{f}}}" for f in sorted(NAME_FIELDS))
            )
        if "/" in value or "\\" in value:
            raise ValueError("the name may not contain a folder separator")
        return value

    def merged(self, other: OutputSpec) -> OutputSpec:
        """This spec with the settings that `other` sets explicitly."""
        return self.model_copy(update={k: getattr(other, k) for k in other.model_fields_set})


class Recipe(BaseModel):
    """A recipe file: a description, steps, output settings, and the sidecar switch."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    steps: list[StepField] = Field(default_factory=list)
    output: OutputSpec = Field(default_factory=OutputSpec)
    sidecar: bool = False


def recipe_schema() -> dict[str, Any]:
    """The JSON Schema of recipe files: a mapping, a bare list of steps, or an empty file."""
    schema = Recipe.model_json_schema(schema_generator=RecipeSchema)
    schema["type"] = ["object", "array", "null"]
    schema["items"] = schema["properties"]["steps"]["items"]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema,
            "title": "hotfolder recipe"}


def load_recipe(path: Path) -> Recipe:
    """Read a recipe file; errors name the file, the line and the key."""
    try:
        doc = yamlfile.load(path, follow_links=False)
    except (OSError, ValueError) as exc:
        raise RecipeError(str(exc)) from None
    data = doc.data if doc.data is not None else {}
    if isinstance(data, list):  # a bare list of steps
        data = {"steps": data}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping with steps, output and sidecar")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(doc.explain(exc, Recipe, data=data),
                          detail=yamlfile.technical(yamlfile.problems(exc, data, Recipe))) from None


def parse_chain(text: str) -> Recipe:
    """A recipe from an inline chain `step+step+...` (a folder name, or `process -s`)."""
    parts = text.split("+")
    if len(parts) > MAX_STEPS:
        raise RecipeError(too_many_steps(len(parts)))
    steps = []
    for part in parts:
        if not part.strip():
            raise RecipeError(f"empty step in {text!r}")
        steps.append(parse_step(part))
    return Recipe(steps=steps)


@functools.lru_cache(maxsize=CHAINS_KEPT)
def _folder_chain(name: str) -> Recipe | RecipeError:
    try:
        return parse_chain(name)
    except RecipeError as exc:
        return exc


def _reads_as_chain(name: str) -> bool:
    """Whether a folder name without chain marks still reads as a chain (one step's name)."""
    return not isinstance(_folder_chain(name), RecipeError)


def folder_chain(name: str) -> Recipe:
    """`parse_chain` of a folder name, read once for the CHAINS_KEPT names seen last (a
    recipe is shared, as the recipe files' are; an error is raised anew each time)."""
    found = _folder_chain(name)
    if isinstance(found, RecipeError):
        raise RecipeError(found.message, detail=found.detail, stage=found.stage)
    return found


def too_many_steps(count: int) -> str:
    """The reason a job with `count` steps is refused."""
    return f"{count} steps, more than the limit of {MAX_STEPS} steps per job"


def recipe_name(folder: str) -> str:
    """The named recipe a folder refers to: lower-case, spaces and underscores as hyphens."""
    return folder.strip().lower().replace(" ", "-").replace("_", "-")


@dataclass(frozen=True)
class Plan:
    """What a file will get: its steps, output settings, and where they came from."""

    name: str
    steps: list[Step] = field(default_factory=list)
    output: OutputSpec = field(default_factory=OutputSpec)
    sidecar: bool = False
    sources: tuple[str, ...] = ()
    # The `recipe` label of metrics: inline chains and recipe.yaml files are named by kind,
    # so that folders made on the share make no new time series.
    metric_name: str = "none"

    def describe(self) -> list[dict[str, Any]]:
        """The steps as recorded in the sidecar."""
        return [s.describe() for s in self.steps]

    @functools.cached_property
    def digest(self) -> str:
        """The SHA-256 of what the plan does to a file in this version of hotfolder (its steps
        and output settings, not its folders' names), made once per plan: its results are
        cached under it and their inputs' SHA-256."""
        recipe = {"steps": self.describe(), "output": self.output.model_dump(mode="json"),
                  "hotfolder": __version__}
        return hashlib.sha256(canonical(recipe)).hexdigest()


def canonical(value: Any) -> bytes:
    """JSON with sorted keys and no spaces: equal values give equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def combine(parts: list[tuple[str, str, Recipe]]) -> Plan:
    """One plan from (label, source, recipe) parts in folder order."""
    steps: list[Step] = []
    output = OutputSpec()
    sidecar = False
    for _, _, recipe in parts:
        steps.extend(recipe.steps)
        output = output.merged(recipe.output)
        if "sidecar" in recipe.model_fields_set:
            sidecar = recipe.sidecar
    name = "/".join(label for label, _, _ in parts) or "none"
    if len(steps) > MAX_STEPS:
        raise RecipeError(f"{name}: {too_many_steps(len(steps))}")
    return Plan(
        name=name,
        steps=steps,
        output=output,
        sidecar=sidecar,
        sources=tuple(source for _, source, _ in parts),
        metric_name="/".join(_metric_part(label, source) for label, source, _ in parts) or "none",
    )


def _metric_part(label: str, source: str) -> str:
    """A part's name in metrics: `inline`, `recipe.yaml`, or the named recipe's name."""
    if source == FOLDER_NAME:
        return "inline"
    return RECIPE_FILE if Path(source).name == RECIPE_FILE else label


def inbox_folders(inbox: Path, work: Path) -> list[Path]:
    """Every folder below the inbox that takes files: not hidden, not the work folder, no link."""
    return sorted(
        Path(top) / name for top, dirs, _ in os.walk(inbox) for name in dirs
        if not name.startswith(".") and Path(top, name) != work
        and not Path(top, name).is_symlink()
    )


class RecipeBook:
    """Finds recipes for folders and names; a file is read again once it changes.

    `inline=False` is `recipes.inline: deny`: folder names are never read as chains.
    """

    def __init__(self, recipes_dir: Path, default_recipe: str | None = None, *,
                 inline: bool = True) -> None:
        self.recipes_dir = recipes_dir
        self.default_recipe = default_recipe
        self.inline = inline
        # Paths are joined as text: a job's folders are looked up at every job.
        self._recipes = str(recipes_dir)
        self._cache: dict[str, tuple[tuple[int, ...], Recipe]] = {}
        # The plans of the CHAINS_KEPT combinations of parts seen last, by each part's label,
        # source and recipe (a recipe read again is another object, and makes another key;
        # the parts are kept with the plan, so no recipe's id is reused while it is kept).
        self._plans: OrderedDict[tuple[tuple[str, str, int], ...],
                                 tuple[list[tuple[str, str, Recipe]], Plan]] = OrderedDict()

    def _load(self, path: str) -> Recipe:
        st = os.lstat(path)
        # A file saved again, or replaced by another one, differs in one of these.
        version = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        cached = self._cache.get(path)
        if cached and cached[0] == version:
            return cached[1]
        recipe = load_recipe(Path(path))
        self._cache[path] = (version, recipe)
        return recipe

    def named(self, name: str) -> Recipe | None:
        """The recipe `recipes/NAME.yaml`, or None."""
        path = os.path.join(self._recipes, f"{recipe_name(name)}.yaml")
        try:
            st = os.stat(path)
        except OSError as exc:
            # A folder name near the length limit (ENAMETOOLONG) names no recipe file either.
            if exc.errno not in NO_FILE:
                raise
            return None
        return self._load(path) if stat.S_ISREG(st.st_mode) else None

    def get(self, name_or_path: str) -> Plan:
        """A plan for `-r`: a recipe name or a path to a recipe file."""
        path = Path(name_or_path)
        if path.suffix in (".yaml", ".yml") and path.is_file():
            return combine([(path.stem, str(path), self._load(str(path)))])
        recipe = self.named(name_or_path)
        if recipe is None:
            known = ", ".join(self.names()) or "none"
            raise RecipeError(f"no recipe named {name_or_path!r} (known: {known})")
        return combine([(recipe_name(name_or_path), str(self.recipes_dir), recipe)])

    def names(self) -> list[str]:
        """The named recipes available."""
        if not self.recipes_dir.is_dir():
            return []
        return sorted(p.stem for p in self.recipes_dir.glob("*.yaml"))

    def folder(self, folder: Path) -> tuple[str, str, Recipe]:
        """The (label, source, recipe) that one inbox folder contributes."""
        return self._folder(str(folder), folder.name)

    def _folder(self, folder: str, name: str) -> tuple[str, str, Recipe]:
        local = os.path.join(folder, RECIPE_FILE)
        if os.path.lexists(local):  # a link or anything but a file fails, with the reason
            return name, local, self._load(local)
        recipe = self.named(name)
        if recipe is not None:
            return recipe_name(name), f"recipes/{recipe_name(name)}.yaml", recipe
        if not self.inline:
            raise RecipeError(
                f"folder {name!r} is not a recipe: it has no {RECIPE_FILE}, there is no"
                f" recipes/{recipe_name(name)}.yaml, and inline folder names are turned"
                " off (recipes.inline: deny)"
            )
        try:
            return name, FOLDER_NAME, folder_chain(name)
        except RecipeError as exc:
            raise RecipeError(
                f"folder {name!r} is not a recipe: {exc.message}", detail=exc.detail
            ) from None

    def _plain(self, folder: str, name: str) -> bool:
        """Whether a folder below one that chose steps is a plain sub-folder (a customer, an
        order): no recipe file, no named recipe, and a name that is not written as a chain.

        The name is looked at first: a chain's folder is not plain whatever it holds, and its
        recipe file and named recipe are then looked up once, by `_folder`, not twice."""
        if self.inline and (CHAIN_MARKS & set(name) or _reads_as_chain(name)):
            return False
        return not (os.path.lexists(os.path.join(folder, RECIPE_FILE))
                    or self.named(name) is not None)

    def resolve(self, inbox: Path, file: Path) -> Plan:
        """The plan for `file` inside `inbox`, from its folders (SPEC 3)."""
        rel = file.parent.relative_to(inbox)
        parts: list[tuple[str, str, Recipe]] = []
        folder = str(inbox)
        for name in rel.parts:
            folder = os.path.join(folder, name)
            if parts and self._plain(folder, name):
                continue
            parts.append(self._folder(folder, name))
        if not parts and self.default_recipe:
            plan = self.get(self.default_recipe)
            return plan
        return self._combined(parts)

    def _combined(self, parts: list[tuple[str, str, Recipe]]) -> Plan:
        """`combine(parts)`, made once for the CHAINS_KEPT combinations seen last."""
        key = tuple((label, source, id(recipe)) for label, source, recipe in parts)
        kept = self._plans.get(key)
        if kept is not None:
            self._plans.move_to_end(key)
            return kept[1]
        plan = combine(parts)
        self._plans[key] = (parts, plan)
        if len(self._plans) > CHAINS_KEPT:
            self._plans.popitem(last=False)
        return plan
