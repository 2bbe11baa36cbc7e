"""Names from the share as they are shown: any bytes the file system accepts, on one line.

Paths stay `str` as Python gives them, with bytes that are not valid UTF-8 held as
surrogate escapes, and go to the file system unchanged. Shown in a log line or a
report, undecodable bytes read `\\xff`, and control characters and line separators
are escaped, so a name with a newline never splits a log line. Both are idempotent.
Stored in a database, a path that is not valid UTF-8 becomes `/` and its bytes
percent-encoded (`stored_rel`), which no relative path can be mistaken for.
"""

from __future__ import annotations

import logging
import os
from typing import Any, TypeVar, cast
from urllib.parse import quote_from_bytes, unquote_to_bytes

_UNDECODABLE = {0xDC00 + byte: f"\\x{byte:02x}" for byte in range(0x80, 0x100)}
_CONTROL = {code: repr(chr(code))[1:-1]
            for code in (*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029)}
_ESCAPES = _UNDECODABLE | _CONTROL
T = TypeVar("T")


def shown(text: object) -> str:
    """`text` as one printable line: undecodable bytes as `\\xff`, control characters escaped."""
    return str(text).translate(_ESCAPES)


def readable(value: T) -> T:
    """A JSON value with the undecodable bytes of its strings written `\\xff`, so it encodes."""
    found: Any = value
    if isinstance(found, str):
        found = found.translate(_UNDECODABLE)
    elif isinstance(found, dict):
        found = {readable(key): readable(item) for key, item in found.items()}
    elif isinstance(found, (list, tuple)):
        found = type(found)(readable(item) for item in found)
    return cast(T, found)


def stored_rel(rel: str) -> str:
    """A path as UTF-8 text: itself, or `/` and its bytes percent-encoded."""
    try:
        rel.encode()
    except UnicodeEncodeError:
        return "/" + quote_from_bytes(os.fsencode(rel), safe="/")
    return rel


def loaded_rel(text: str) -> str:
    """The path from its `stored_rel` form."""
    return os.fsdecode(unquote_to_bytes(text[1:])) if text.startswith("/") else text


class OneLineFormatter(logging.Formatter):
    """Log records as single lines, whatever names their messages hold."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The line for a record, with the escapes of `shown`."""
        return shown(super().formatMessage(record))
