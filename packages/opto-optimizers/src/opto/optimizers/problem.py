"""The problem an OptoPrime-family optimizer shows the LLM: its sections and value lines.

A problem has the sections ``#Instruction``, ``#Code``, ``#Documentation``,
``#Variables``, ``#Constraints``, ``#Inputs``, ``#Others``, ``#Outputs`` and
``#Feedback`` (headers renamed per optimizer by ``prompt_symbols``); values are listed one
per line as ``(int) x0=3``, code as ``(code) __code0:<source>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs
from opto.optimizers.utils import truncate_expression
from opto.trace.utils import is_code_name

__all__ = [
    "DEFAULT_PROMPT_SYMBOLS",
    "FENCE_LINE",
    "ProblemInstance",
    "merged_overrides",
    "trace_representation",
    "type_name",
    "value_line",
]

#: Section headers of the prompt; ``prompt_symbols`` overrides them per optimizer.
DEFAULT_PROMPT_SYMBOLS: Mapping[str, str] = MappingProxyType(
    {
        "instruction": "#Instruction",
        "code": "#Code",
        "documentation": "#Documentation",
        "variables": "#Variables",
        "constraints": "#Constraints",
        "inputs": "#Inputs",
        "others": "#Others",
        "outputs": "#Outputs",
        "feedback": "#Feedback",
    }
)

#: The line around a problem instance in the user prompt.
FENCE_LINE = "=" * 32

_SECTIONS = tuple(DEFAULT_PROMPT_SYMBOLS)


@attrs.define(kw_only=True)
class ProblemInstance:
    """The problem shown to the LLM, one text per section (``str()`` renders it)."""

    instruction: str = ""
    code: str = ""
    documentation: str = ""
    variables: str = ""
    constraints: str = ""
    inputs: str = ""
    others: str = ""
    outputs: str = ""
    feedback: str = ""

    def render(self, symbols: Mapping[str, str] = DEFAULT_PROMPT_SYMBOLS) -> str:
        """The sections in prompt order, each header followed by its content."""
        return "\n\n".join(f"{symbols[name]}\n{getattr(self, name)}" for name in _SECTIONS)

    def __str__(self) -> str:
        return self.render()


def trace_representation(variables: str, inputs: str, extra: str = "", values: str = "") -> str:
    """The system prompt's description of a traced problem (``{…}`` are section names to
    format in): ``variables``/``inputs`` describe those two parts, ``extra`` lists more
    parts after the variables, ``values`` says how values are shown."""
    return (
        "You improve a program by changing some of its values. You see a trace of one run: "
        "the operations it performed, their values, and feedback on the result.\n\n"
        "The problem has these parts:\n"
        "- {instruction}: what to do, or the question to answer.\n"
        "- {code}: the operations of the run, one call per line.\n"
        "- {documentation}: what each function in {code} does (may be incomplete; use "
        "{others} to infer).\n"
        f"- {{variables}}: {variables}\n{extra}"
        f"- {{inputs}}: {inputs}\n"
        "- {others}: intermediate values of the run.\n"
        "- {outputs}: the results of the run.\n"
        "- {feedback}: feedback on the outputs.\n\n" + values
    )


def type_name(name: str, value: Any) -> str:
    """The type shown for a value: ``code`` for a code parameter, else its class name."""
    return "code" if is_code_name(name) else type(value).__name__


def value_line(name: str, value: Any, limit: int) -> str:
    """``(type) name=value`` cut at ``limit`` characters; code as ``(code) name:source``."""
    if is_code_name(name):
        return f"(code) {name}:{truncate_expression(value, limit).rstrip()}"
    return f"({type(value).__name__}) {name}={truncate_expression(value, limit)}"


def merged_overrides(
    defaults: Mapping[str, Any], overrides: Mapping[str, Any] | None, what: str
) -> dict[str, Any]:
    """``defaults`` updated by ``overrides`` (a per-instance copy; unknown keys rejected)."""
    result = dict(defaults)
    if overrides:
        unknown = sorted(set(overrides) - set(defaults))
        if unknown:
            raise ValueError(f"unknown {what} keys {unknown}; valid keys are {sorted(defaults)}.")
        result.update(overrides)
    return result
