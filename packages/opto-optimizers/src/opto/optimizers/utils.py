"""Small helpers shared by the optimizers: value truncation and history trimming.

``jsonable`` (`opto.utils.jsonable`) and ``atomic_write_text`` (`opto.utils.files.atomic_write`)
are the shared opto-utils helpers, re-exported here under the names optimizers use.
"""

from __future__ import annotations

import math
from typing import Any

from opto.utils.files import atomic_write as atomic_write_text
from opto.utils.jsonable import dumps as json_dumps
from opto.utils.jsonable import jsonable

__all__ = [
    "TRUNCATION_MARKER",
    "atomic_write_text",
    "dumps",
    "estimate_tokens",
    "jsonable",
    "truncate_expression",
]

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


def drop_oldest(items: list[Any], size: int) -> None:
    """Delete the first items of ``items`` so that at most ``size`` remain."""
    if len(items) > size:
        del items[: len(items) - size]


def dumps(value: Any) -> str:
    """Pretty standard JSON of ``jsonable(value)`` (what the optimizers write and show)."""
    return json_dumps(value, indent=2)
