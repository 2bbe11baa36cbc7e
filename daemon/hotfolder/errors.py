"""The errors of hotfolder, each carrying a sentence an operator can read.

Three families decide where a file goes (SPEC 4):
- `InputError`: the file itself is bad; it goes to failed/ with the reason.
- `RecipeError`/`ConfigError`: the recipe or configuration is wrong; the
  file goes to failed/, the command line exits 2.
- `Unavailable`: something outside the file is missing (scanner, disk,
  outbox, S3); the job waits and is retried, it is never failed for it.
"""

from __future__ import annotations


class HotfolderError(Exception):
    """An error whose `message` is a plain sentence, with a stage and technical detail."""

    stage = "process"

    def __init__(self, message: str, *, detail: str = "", stage: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        if stage is not None:
            self.stage = stage

    def __str__(self) -> str:
        return self.message


class InputError(HotfolderError):
    """The input file cannot be processed: corrupt, unknown type, too large, over a limit."""

    stage = "decode"


class RecipeError(HotfolderError):
    """A recipe, a folder name or a step is wrong."""

    stage = "recipe"


class ConfigError(HotfolderError):
    """The configuration file is missing or wrong."""

    stage = "config"


class Unavailable(HotfolderError):
    """A resource the job needs is unavailable for now; the job waits and retries."""

    stage = "deliver"

