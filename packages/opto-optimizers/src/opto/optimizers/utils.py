"""Small helpers shared by the optimizers: value truncation, JSON-able copies, atomic writes,
history trimming, coloured console output. The XML-reply helpers of
`opto.optimizers.xml_parsing` (`extract_xml_like_data` and friends) are importable from here
too."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from opto.trace.utils import atomic_write

__all__ = [
    "TRUNCATION_MARKER",
    "atomic_write_text",
    "dumps",
    "estimate_tokens",
    "jsonable",
    "print_color",
    "truncate_expression",
]

_COLORS = {
    "red": "\033[91m",
    "green": "\033[92m",
    "yellow": "\033[93m",
    "blue": "\033[94m",
    "magenta": "\033[95m",
    "cyan": "\033[96m",
}
_XML_HELPERS = frozenset(
    {
        "extract_first_top_level_block",
        "extract_reasoning_and_remainder",
        "extract_top_level_blocks",
        "extract_xml_like_data",
    }
)


def __getattr__(name: str) -> Any:
    # The XML helpers live in xml_parsing: load them on demand.
    if name in _XML_HELPERS:
        from opto.optimizers import xml_parsing

        return getattr(xml_parsing, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def print_color(message: Any, color: str | None = None, logger: Any = None) -> None:
    """Print `message` to stdout in an ANSI colour, for scripts and notebooks.

    Colours: red, green, yellow, blue, magenta, cyan; any other (or None) prints plain.
    With `logger`, the message also goes to it: `logger.info(message)` for a
    `logging.Logger`, else `logger.log(message)` (e.g. a trainer logger taking one text).
    """
    code = _COLORS.get(color or "")
    text = str(message)
    sys.stdout.write(f"{code}{text}\033[0m\n" if code else f"{text}\n")
    if logger is not None:
        import logging

        if isinstance(logger, logging.Logger):
            logger.info(text)
        else:
            logger.log(text)


TRUNCATION_MARKER = "...(skipped due to length limit)"
"""Appended to a value shortened for the prompt (the reference's wording)."""


def truncate_expression(value: Any, limit: int) -> str:
    """``str(value)``, cut to ``limit`` characters plus a marker when it is longer.

    A negative ``limit`` means no limit.
    """
    text = str(value)
    if limit < 0 or len(text) <= limit:
        return text
    return text[:limit] + TRUNCATION_MARKER


def estimate_tokens(text: str) -> int:
    """A rough, offline token count: about four characters per token."""
    return math.ceil(len(text) / 4)


def jsonable(value: Any) -> Any:
    """A JSON-serialisable copy of ``value``; what JSON cannot hold becomes its ``repr``.

    Tuples and sets become lists, mapping keys become strings, non-finite floats become
    their repr (JSON has no NaN).
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return [jsonable(item) for item in sorted(value, key=repr)]
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        with contextlib.suppress(Exception):
            return jsonable(to_dict())
    return repr(value)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically: temp file in the same folder, fsync, rename.

    Readers see either the old file or the complete new one, never a partial write.
    Parent folders are created. Returns the path written.
    """
    target = Path(path)
    atomic_write(target, text)
    return target


def drop_oldest(items: list[Any], size: int) -> None:
    """Delete the first items of ``items`` so that at most ``size`` remain."""
    if len(items) > size:
        del items[: len(items) - size]


def dumps(value: Any) -> str:
    """Pretty JSON of ``jsonable(value)`` (what the optimizers write and show)."""
    return json.dumps(jsonable(value), indent=2, ensure_ascii=False)
