"""The registry of operations: every operation is declared here once, by name.

An operation is a plain function `(Canvas, Params) -> Canvas` with a pydantic
model of its parameters. Recipes name operations; the inline folder-name
grammar (`op=arg,arg`) and YAML scalars (`dither: jarvis`) pass a list of
strings that the operation's `inline` parser turns into parameters. Each
operation also says how large its result will be (`output_size`, from the
parameters, the input size and DPI) so that the pipeline can refuse a step
before it allocates; an operation that states none keeps the size of its input
or makes it smaller.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from hotfolder.canvas import Canvas
from hotfolder.errors import RecipeError
from hotfolder.yamlfile import Problem, problems, values_given


class Params(BaseModel):
    """Base of every operation's parameters: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(Params):
    """For operations that take no parameters."""


InlineParser = Callable[[list[str]], dict[str, Any]]
P = TypeVar("P", bound=Params)
OpFunc = Callable[[Canvas, Any], Canvas]
Size = tuple[int, int]
OutputSize = Callable[[Any, Size, float | None], Size]
"""`(params, input size, input DPI) -> the largest image the operation will allocate`."""


def same_size(params: Params, size: Size, dpi: float | None) -> Size:
    """The output size of operations that keep the input's size or make it smaller."""
    return size


def positional(fields: list[str]) -> InlineParser:
    """An inline parser that assigns the arguments to `fields` in order; empty ones are skipped."""

    def parse(args: list[str]) -> dict[str, Any]:
        if len(args) > len(fields):
            raise ValueError(f"takes at most {len(fields)} argument(s) ({', '.join(fields)})")
        return {name: arg for name, arg in zip(fields, args, strict=False) if arg.strip()}

    return parse


@dataclass(frozen=True)
class Operation:
    """One registered operation."""

    name: str
    func: OpFunc
    params: type[Params]
    inline: InlineParser
    inline_form: str
    positional: bool  # inline arguments go to the fields in order; an empty one is skipped
    output_size: OutputSize = same_size

    @property
    def summary(self) -> str:
        """The first line of the function's docstring."""
        doc = (self.func.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    def parse(self, value: Any) -> Params:
        """Parameters from a YAML value: None, a mapping, or a scalar/list of inline args."""
        data: Any = None
        try:
            if value is None:
                return self.params()
            if isinstance(value, dict):
                data = value
            else:
                args = [str(a) for a in value] if isinstance(value, list) else [str(value)]
                data = self.inline(args)
            return self.params.model_validate(data)
        except ValidationError as exc:
            found = problems(exc, data, self.params)
            raise RecipeError(
                f"{self.name}: {describe(found)}", detail=values_given(found)
            ) from None
        except ValueError as exc:
            raise RecipeError(f"{self.name}: {exc}") from None


def describe(found: list[Problem]) -> str:
    """Validation problems in one plain sentence: `key: what is wrong; ...`."""
    return "; ".join(f"{'.'.join(map(str, p.loc))}: {p.message}" if p.loc else p.message
                     for p in found)


REGISTRY: dict[str, Operation] = {}


def operation(
    name: str,
    params: type[Params] = NoParams,
    inline: InlineParser | None = None,
    inline_form: str | None = None,
    output_size: OutputSize = same_size,
) -> Callable[[OpFunc], OpFunc]:
    """Register `func` as the operation `name`; a name is registered once only."""

    def register(func: OpFunc) -> OpFunc:
        if name in REGISTRY:
            raise RuntimeError(f"operation {name!r} is registered twice")
        fields = list(params.model_fields)
        REGISTRY[name] = Operation(
            name=name,
            func=func,
            params=params,
            inline=inline or positional(fields),
            inline_form=inline_form or (f"{name}=" + ",".join(fields) if fields else name),
            positional=inline is None,
            output_size=output_size,
        )
        return func

    return register


def lookup(name: str) -> Operation:
    """The operation called `name`, or a RecipeError naming the closest known one."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise RecipeError(unknown_word(name)) from None


def unknown_word(word: str) -> str:
    """`unknown operation 'x' (did you mean 'y'?)`."""
    close = difflib.get_close_matches(word, REGISTRY, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown operation {word!r}{hint}"
