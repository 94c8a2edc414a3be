"""Checks on a request's messages made before anything is sent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opto.utils.llm.errors import InvalidMessageError

__all__ = ["check_messages"]


def _check_value(value: Any, where: str, model: str | None) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            msg = (
                f"{where} holds a lone surrogate {value[exc.start]!r} at character {exc.start}, "
                "which is not valid Unicode and cannot be sent; clean the text first, e.g. "
                "text.encode('utf-8', 'replace').decode('utf-8')"
            )
            raise InvalidMessageError(msg, model=model) from None
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_value(key, f"{where} (a key)", model)
            _check_value(item, f"{where}[{key!r}]", model)
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        for index, item in enumerate(value):
            _check_value(item, f"{where}[{index}]", model)


def check_messages(messages: Sequence[Mapping[str, Any]], *, model: str | None = None) -> None:
    """Raise `InvalidMessageError` if any string in `messages` cannot be sent as UTF-8.

    Runs before the cache, the budgets and any request, so a bad message costs nothing and
    is never retried.
    """
    for index, message in enumerate(messages):
        _check_value(message, f"messages[{index}]", model)
