"""Small helpers around trace graphs and LLM text.

Graph helpers (``contain``, ``sum_feedback``), a class decorator (``for_all_methods``) and
text helpers used when reading LLM replies (``parse_eqs_to_dict``,
``escape_json_nested_quotes``, ``remove_non_ascii``, ``dedent``) and ``is_code_name``
(whether a parameter holds code).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

__all__ = [
    "CODE_PARAMETER_NAME",
    "contain",
    "dedent",
    "escape_json_nested_quotes",
    "for_all_methods",
    "global_functions_list",
    "is_code_name",
    "parse_eqs_to_dict",
    "remove_non_ascii",
    "sum_feedback",
]

ClassT = TypeVar("ClassT", bound=type)

global_functions_list: list[str] = [
    name for name, value in vars(builtins).items() if callable(value)
]
"""Names of the callable builtins (functions, types, exceptions)."""


def contain(nodes: Iterable[Any], node: Any) -> bool:
    """Identity membership: ``node in nodes`` compares values, this compares objects."""
    return any(item is node for item in nodes)


def sum_feedback(nodes: Iterable[Any]) -> Any:
    """Sum of every feedback item held by ``nodes``; the int ``0`` when there is none."""
    from opto.trace.propagators.graph_propagator import sum_feedback as total

    return total(nodes)


def for_all_methods(decorator: Callable[[Any], Any]) -> Callable[[ClassT], ClassT]:
    """Class decorator applying ``decorator`` to every callable attribute but dunder methods."""

    def decorate(cls: ClassT) -> ClassT:
        for name, value in list(vars(cls).items()):
            if callable(value) and not (name.startswith("__") and name.endswith("__")):
                setattr(cls, name, decorator(value))
        return cls

    return decorate


def parse_eqs_to_dict(text: str) -> dict[str, str]:
    """Parse ``name = value`` lines into a dict; other lines continue the previous value.

    Backticks are removed. A line starts a new entry when the text before its first ``=`` is
    a name (letters, digits, ``_``, ``.``, ``/``, ``:``) and the line is not indented inside
    a value, so indented code such as ``    y = f(a=1)`` stays part of the previous value. Values are stripped of surrounding blank
    lines and the first line's leading spaces.
    """
    result: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.replace("`", "").split("\n"):
        key, sep, value = line.partition("=")
        name = key.strip()
        indented = line[:1].isspace() and current is not None
        if sep and name and not indented and _is_name(name):
            current = name
            result[current] = [value.lstrip()]
        elif current is not None:
            result[current].append(line)
    return {key: "\n".join(lines).strip("\n").rstrip() for key, lines in result.items()}


def _is_name(text: str) -> bool:
    return all(char.isalnum() or char in "_./:" for char in text)


def escape_json_nested_quotes(json_str: str) -> str:
    """Escape double quotes inside JSON string values that an LLM left unescaped.

    A quote inside a string closes it only when the next non-space character is one that
    may follow a JSON string (``,``, ``:``, ``}``, ``]`` or the end); otherwise it is escaped.
    Existing escapes are kept.
    """
    out: list[str] = []
    in_string = False
    index, size = 0, len(json_str)
    while index < size:
        char = json_str[index]
        if in_string and char == "\\":
            out.append(json_str[index : index + 2])
            index += 2
            continue
        if char == '"':
            if not in_string:
                in_string = True
                out.append(char)
            else:
                following = index + 1
                while following < size and json_str[following].isspace():
                    following += 1
                if following == size or json_str[following] in ",:}]":
                    in_string = False
                    out.append(char)
                else:
                    out.append('\\"')
        else:
            out.append(char)
        index += 1
    return "".join(out)


def remove_non_ascii(json_txt: str) -> str:
    """Drop control and other non-printable characters that break JSON parsing.

    Newlines, tabs and carriage returns are kept, and so are printable non-ASCII letters
    (they are valid JSON).
    """
    return "".join(char for char in json_txt if char.isprintable() or char in "\n\r\t")


def dedent(text: str) -> str:
    """Strip leading and trailing whitespace from every line."""
    return "\n".join(line.strip() for line in text.split("\n"))


CODE_PARAMETER_NAME = "__code"
"""The name of the parameter that holds a trainable bundle's source code."""


def is_code_name(name: str) -> bool:
    """Whether `name` (a node's ``name`` or ``py_name``, possibly scoped) is the name of a
    code parameter (``__code`` of a trainable bundle)."""
    return CODE_PARAMETER_NAME in name
