"""YAML loading that remembers where each key stood, for errors that name the line.

A file is read only when it is a regular file of at most `MAX_FILE_BYTES`; recipe files
(which users of the share can write) are also never read through a link. Errors about a
file name its line and key, never a value: a file read by mistake (a secret) is not quoted.
"""

from __future__ import annotations

import difflib
import errno
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, cast, get_args

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

Loc = tuple[str | int, ...]
MAX_FILE_BYTES = 1024 * 1024
HIDDEN = "(value not shown)"


@dataclass(frozen=True)
class Located:
    """A parsed YAML document with the line (1-based) of every key and list item."""

    data: Any
    lines: dict[Loc, int]
    source: str

    def line_of(self, loc: Loc) -> int | None:
        """The line of the deepest known prefix of `loc`."""
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return None

    def where(self, loc: Loc) -> str:
        """`file, line N, key a.b` for an error message."""
        line = self.line_of(loc)
        key = ".".join(str(p) for p in loc)
        parts = [self.source]
        if line is not None:
            parts.append(f"line {line}")
        if key:
            parts.append(f"key {key}")
        return ", ".join(parts)

    def explain(
        self, exc: ValidationError, model: type[BaseModel], prefix: Loc = (),
        elsewhere: Mapping[tuple[str, ...], str] | None = None, data: Any = None,
    ) -> str:
        """Every error of `exc` (on `data`, by default this document's) located, one per line."""
        given = [err.get("input") for err in exc.errors()]
        lines = []
        for problem in problems(exc, self.data if data is None else data, model):
            loc = prefix + problem.loc
            origin = next(
                (name for at, name in (elsewhere or {}).items() if loc[: len(at)] == at), None
            )
            where = f"{origin}, key {'.'.join(map(str, loc))}" if origin else self.where(loc)
            lines.append(f"{where}: {hide_values(problem.message, given)}")
        return "\n".join(lines)


class Problem(NamedTuple):
    """One wrong key of a validated document: where, what is wrong, the value found, its kind."""

    loc: Loc
    message: str
    given: str | None
    kind: str | None


def problems(exc: ValidationError, data: Any, model: type[BaseModel]) -> list[Problem]:
    """The errors of `exc` in plain words, one per key of `data`, a union's alternatives joined."""
    found: dict[Loc, tuple[list[str], Any]] = {}
    for err in exc.errors():
        loc = _real_loc(data, err["loc"])
        messages, _ = found.setdefault(loc, ([], _MISSING if err["type"] == "missing"
                                            else err["input"]))
        message = plain_message(err, model, loc)
        if message not in messages:
            messages.append(message)
    result = []
    for loc, (messages, value) in found.items():
        given, kind = (None, None) if value is _MISSING else (_shown(value), _kind(value))
        result.append(Problem(loc, _either(messages), given, kind))
    return result


_MISSING = object()


def hide_values(message: str, given: Any) -> str:
    """The message with every value found in `given` (quoted, or long enough) replaced."""
    for value in sorted(_values(given), key=len, reverse=True):
        for form in (repr(value), f"'{value}'", f'"{value}"'):
            message = message.replace(form, HIDDEN)
        if len(value) >= 8:
            message = message.replace(value, HIDDEN)
    return message


def _values(given: Any) -> set[str]:
    """The texts and numbers inside a parsed YAML value (mapping keys are structure, kept)."""
    if isinstance(given, Mapping):
        return {text for item in given.values() for text in _values(item)}
    if isinstance(given, list | tuple):
        return {text for item in given for text in _values(item)}
    if isinstance(given, str | int | float) and not isinstance(given, bool) and str(given):
        return {str(given)}
    return set()


def technical(found: list[Problem]) -> str:
    """The kind of value found at each wrong key of a file, never the value itself."""
    return "; ".join(f"{'.'.join(map(str, p.loc)) or 'the document'} was {p.kind}"
                     for p in found if p.kind is not None)


def _kind(value: Any) -> str:
    """What sort of YAML value this is, in words: `text`, `a whole number`, `a mapping`..."""
    kinds: tuple[tuple[type | tuple[type, ...], str], ...] = (
        (bool, "true or false"), (int, "a whole number"), (float, "a number"), (str, "text"),
        ((list, tuple), "a list"), (Mapping, "a mapping"), (type(None), "empty"))
    return next((name for kind, name in kinds if isinstance(value, kind)), type(value).__name__)


def values_given(found: list[Problem]) -> str:
    """The value found at each wrong key, for folder names and steps (files use `technical`)."""
    return "; ".join(f"{'.'.join(map(str, p.loc)) or 'the document'} was {p.given}"
                     for p in found if p.given is not None)


def plain_message(err: ErrorDetails, model: type[BaseModel], loc: Loc) -> str:
    """What is wrong with one value, in words an operator reads."""
    kind, ctx = err["type"], err.get("ctx", {})
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), fields_at(model, loc[:-1]), n=1)
        return f"unknown key, did you mean {close[0]!r}?" if close else "unknown key"
    if kind in _LIMITS:
        bound = next(iter(ctx.values()))
        return f"must be {_LIMITS[kind]} {bound:g}" if isinstance(bound, float | int) else (
            f"must be {_LIMITS[kind]} {bound}")
    if kind == "literal_error":
        return f"must be {ctx['expected']}"
    if kind in _LENGTHS:
        what, bound = _LENGTHS[kind]
        return f"must be {what} {ctx[bound]} {'characters' if 'string' in kind else 'items'} long"
    if kind in _PLAIN:
        return _PLAIN[kind]
    return str(err["msg"]).removeprefix("Value error, ")


_LIMITS = {"greater_than": "greater than", "greater_than_equal": "at least",
           "less_than": "less than", "less_than_equal": "at most"}
_LENGTHS = {"string_too_short": ("at least", "min_length"), "too_short": ("at least", "min_length"),
            "string_too_long": ("at most", "max_length"), "too_long": ("at most", "max_length")}
_PLAIN = {
    "missing": "is required",
    "int_parsing": "must be a whole number", "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number", "float_type": "must be a number",
    "bool_parsing": "must be true or false", "bool_type": "must be true or false",
    "string_type": "must be text",
    "dict_type": "must be a mapping of settings", "model_type": "must be a mapping of settings",
    "model_attributes_type": "must be a mapping of settings",
    "list_type": "must be a list", "tuple_type": "must be a list",
}


def _either(messages: list[str]) -> str:
    """`must be a whole number or 'auto'` from the messages of a union's alternatives."""
    if len(messages) > 1 and all(m.startswith("must be ") for m in messages):
        return "must be " + " or ".join(m.removeprefix("must be ") for m in messages)
    return "; or ".join(messages)


def _real_loc(data: Any, loc: tuple[str | int, ...]) -> Loc:
    """`loc` without what pydantic adds for a union's alternatives (`int`): keys `data` holds."""
    real: list[str | int] = []
    node = data
    for part in loc:
        if _is_union_tag(part):
            continue
        if isinstance(node, dict):
            real.append(part)
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int):
            real.append(part)
            node = node[part] if part < len(node) else None
        elif node is None:
            real.append(part)
        else:
            break  # a scalar holds no keys: the rest names a union's alternative
    return tuple(real)


def fields_at(model: type[BaseModel], path: Loc) -> list[str]:
    """The keys that `model` knows at `path` (inside its nested models); [] when none."""
    for part in path:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        inner = _model_in(field.annotation) if field is not None else None
        if inner is None:
            return []
        model = inner
    return list(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside a type such as `S3Config | None` or `list[Step]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _shown(value: Any) -> str:
    """A value found in a document, short enough for one line."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_union_tag(part: str | int) -> bool:
    """Pydantic inserts validator names (`function-before[...]`) into locations."""
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def _walk(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> None:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*loc, str(key.value))
            lines[child] = key.start_mark.line + 1
            _walk(value, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*loc, index), lines)


# YAML 1.1 reads `16:9` as a base-60 number (969) and `off`/`on`/`yes`/`no` as booleans
# (`clamd: off` would be False): keep them as text, as YAML 1.2 does. Boolean settings
# still accept them, since pydantic reads "off" or "yes" as a bool.
_SEXAGESIMAL = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")
_YAML11_BOOLS = {"yes", "no", "on", "off"}

# Anchors and aliases let a few hundred bytes stand for billions of values (a "YAML bomb"),
# and nesting without end exhausts the stack: a document beyond these limits is refused while
# it is read. Configuration and recipe files need a few hundred values and a few levels.
MAX_VALUES = 10_000  # keys, values and list items, counting each alias as what it repeats
MAX_DEPTH = 50  # levels of nesting, aliases included


class Refused(Exception):
    """A document over MAX_VALUES or MAX_DEPTH; the message says which, and where."""


def _too_deep(mark: yaml.Mark) -> str:
    return (f"line {mark.line + 1}: refused: it nests more than {MAX_DEPTH} levels deep,"
            " the limit for a configuration or recipe file")


class Loader(yaml.SafeLoader):
    """The safe loader, reading `16:9` and `off` as text rather than a number and a boolean.

    It also refuses documents over MAX_VALUES or MAX_DEPTH before building them.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0  # levels open now
        self._values = 0  # values composed so far, each alias counted as what it repeats
        self._aliased = False
        self._extent: dict[int, tuple[int, int]] = {}  # id(node) -> (values, levels), expanded

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node:
        """A node, refused as soon as the document nests too deep or holds too many values."""
        alias = self.check_event(yaml.AliasEvent)
        mark: yaml.Mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise Refused(_too_deep(mark))
            node = cast(yaml.Node, super().compose_node(parent, index))  # never None here
        finally:
            self._depth -= 1
        values, _ = self._measure(node)
        self._aliased |= alias
        self._values += values if alias else 1  # a new node's children were counted already
        if self._values > MAX_VALUES:
            expanded = " once its aliases are expanded" if self._aliased else ""
            raise Refused(
                f"line {mark.line + 1}: refused: it holds more than {MAX_VALUES}"
                f" values{expanded}, the limit for a configuration or recipe file"
            )
        return node

    def _measure(self, node: yaml.Node) -> tuple[int, int]:
        """How many values and levels a node holds once its aliases are expanded."""
        known = self._extent.get(id(node))
        if known is not None:  # an alias: measured where its anchor was
            return known
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
        extents = [self._extent[id(child)] for child in children]
        extent = (1 + sum(v for v, _ in extents), 1 + max((d for _, d in extents), default=0))
        if extent[1] > MAX_DEPTH:
            raise Refused(_too_deep(node.start_mark))
        self._extent[id(node)] = extent
        return extent

    def resolve(self, kind: type[yaml.Node], value: Any, implicit: tuple[bool, bool]) -> str:
        """The tag of a node; base-60 numbers and yes/no/on/off resolve to text."""
        if kind is yaml.ScalarNode and implicit[0] and (
            _SEXAGESIMAL.match(value) or value.lower() in _YAML11_BOOLS
        ):
            return "tag:yaml.org,2002:str"
        resolved: str = super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
        return resolved


def parse(text: str, source: str) -> Located:
    """Parse YAML text; a syntax error is a ValueError naming `source` and the line."""
    loader = Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValueError(f"{source}{at}: not valid YAML: {problem}") from None
    except Refused as exc:
        raise ValueError(f"{source}, {exc}") from None
    finally:
        loader.dispose()
    lines: dict[Loc, int] = {}
    if node is not None:
        _walk(node, (), lines)
    return Located(data=data, lines=lines, source=source)


def load(path: Path, *, follow_links: bool = True) -> Located:
    """Read and parse a YAML file; OSError or ValueError (naming the file) when it can't be."""
    return parse(read_text(path, follow_links=follow_links), str(path))


def read_text(path: Path, *, follow_links: bool) -> str:
    """The UTF-8 text of a regular file of at most MAX_FILE_BYTES; ValueError for anything else."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_links else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_links:
            raise ValueError(f"{path}: not read, it is a symbolic link") from None
        raise
    with os.fdopen(fd, "rb") as stream:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path}: not read, it is not a regular file")
        data = stream.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"{path}: not read, it is larger than {MAX_FILE_BYTES // 1024} KB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start})") from None
