"""Small helpers shared by the optimizers: value truncation, history trimming, coloured
console output. The XML-reply helpers of `opto.optimizers.xml_parsing` (`extract_xml_like_data` and friends) are
importable from here too.

``jsonable`` (`opto.utils.jsonable`) and ``atomic_write_text`` (`opto.utils.files.atomic_write`)
are the shared opto-utils helpers, re-exported here under the names optimizers use.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from opto.utils.files import atomic_write as atomic_write_text
from opto.utils.jsonable import dumps as json_dumps
from opto.utils.jsonable import jsonable
from opto.utils.lazy import lazy_exports

_C = TypeVar("_C", bound=type)

__all__ = [
    "TRUNCATION_MARKER",
    "Delegated",
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
# The XML helpers live in xml_parsing: loaded on first access.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        name: "opto.optimizers.xml_parsing"
        for name in (
            "extract_first_top_level_block",
            "extract_reasoning_and_remainder",
            "extract_top_level_blocks",
            "extract_xml_like_data",
        )
    },
)


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


class Delegated:
    """A class attribute that reads and writes the same-named attribute of a part.

    ``num_responses = Delegated("proposer")`` on an optimizer makes ``optimizer.num_responses``
    the ``num_responses`` of ``optimizer.proposer``: a configured optimizer keeps the
    attribute names of its configuration while the part owns the value.
    """

    def __init__(self, part: str) -> None:
        self.part = part
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return getattr(getattr(instance, self.part), self.name)

    def __set__(self, instance: Any, value: Any) -> None:
        setattr(getattr(instance, self.part), self.name, value)

    @classmethod
    def many(cls, part: str, *names: str) -> Callable[[_C], _C]:
        """A class decorator that makes each of ``names`` a :class:`Delegated` attribute of
        ``part``, as ``name = Delegated(part)`` in the class body would.

        ``@Delegated.many("proposer", "num_responses", "selector")`` gives the class
        ``num_responses`` and ``selector`` read from and written to ``self.proposer``.

        Raises:
            TypeError: a name is not an identifier, or the class itself already defines it
                (delegating it would silently replace that definition).
        """

        def install(owner: _C) -> _C:
            for name in names:
                if not name.isidentifier():
                    raise TypeError(f"Delegated.many: {name!r} is not an attribute name.")
                if name in vars(owner):
                    raise TypeError(
                        f"Delegated.many: {owner.__name__} already defines {name!r}; "
                        f"remove it there or leave it out of the delegated names."
                    )
                descriptor = cls(part)
                descriptor.__set_name__(owner, name)
                setattr(owner, name, descriptor)
            return owner

        return install


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
