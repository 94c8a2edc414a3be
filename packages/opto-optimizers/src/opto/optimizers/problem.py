"""The problem an OptoPrime-family optimizer shows the LLM: its sections and value lines.

A problem has the sections ``#Instruction``, ``#Code``, ``#Documentation``,
``#Variables``, ``#Constraints``, ``#Inputs``, ``#Others``, ``#Outputs`` and
``#Feedback`` (headers renamed per optimizer by ``prompt_symbols``); values are listed one
per line as ``(int) x0=3``, code as ``(code) __code0:<source>``.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Collection, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import attrs
from opto.optimizers.prompt_budget import graph_sections
from opto.optimizers.utils import jsonable, truncate_expression
from opto.trace.propagators import FunctionFeedback
from opto.trace.utils import is_code_name

__all__ = [
    "DEFAULT_PROMPT_SYMBOLS",
    "FENCE_LINE",
    "LineProblemView",
    "ProblemInstance",
    "ProblemView",
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


class ProblemView(abc.ABC):
    """How an optimizer shows a problem: section headers, the problem instance, the worked
    example, remembered steps and the system prompt's description of them.

    Args:
        titles: section key to the header rendered above it.
        names: section key to the name prose uses for it (``#Variables``).
        defaults: the default headers, also accepted in a ``mask``.
    """

    #: What suggested values must respect, and how prose names a code value.
    constraints_ref: str = "{constraints}"
    code_value: str = "A (code) value"

    def __init__(
        self,
        titles: Mapping[str, str],
        names: Mapping[str, str],
        defaults: Mapping[str, str] = DEFAULT_PROMPT_SYMBOLS,
    ) -> None:
        self.titles = titles
        self.names = names
        self.defaults = dict(defaults)  # a copy: read-only mappings cannot be deep-copied

    def masked(self, mask: Collection[str] | None) -> set[str]:
        """The section keys ``mask`` names, by key, header, prose name or default header."""
        if not mask:
            return set()
        keys = {*self.titles, *self.names}
        return {
            key
            for key in keys
            if key in mask
            or self.titles.get(key) in mask
            or self.names.get(key) in mask
            or self.defaults.get(key) in mask
        }

    def representation(self, template: str) -> str:
        """``template`` (the system prompt's description) with the section names filled in."""
        return template.format(**self.names)

    def instance(
        self,
        summary: FunctionFeedback,
        objective: str,
        limit: int,
        max_section_chars: int | None,
        masked: Collection[str],
    ) -> Any:
        """The problem instance of ``summary`` (values cut at ``limit``, graph sections
        within ``max_section_chars``, ``masked`` sections left empty); ``.render(titles)``
        lays it out."""

        def node(section: str, name: str, value: Any, desc: Any) -> str:
            return self.node_entry(section, name, value, desc, limit)

        sections = {
            "instruction": objective,
            **self.variable_sections(summary),
            "feedback": str(summary.user_feedback),
            **graph_sections(summary, node, max_section_chars),
        }
        return self.build({key: "" if key in masked else text for key, text in sections.items()})

    @abc.abstractmethod
    def node_entry(self, section: str, name: str, value: Any, desc: Any, limit: int) -> str:
        """One input, intermediate or output node of ``section`` (value cut at ``limit``)."""

    @abc.abstractmethod
    def variable_sections(self, summary: FunctionFeedback) -> dict[str, str]:
        """The sections showing the trainable variables (never cut)."""

    @abc.abstractmethod
    def build(self, sections: Mapping[str, str]) -> Any:
        """The problem instance holding ``sections``."""

    @abc.abstractmethod
    def example(self, objective: str) -> Any:
        """The problem of the worked example (its reply suggests ``a = 14``)."""

    @abc.abstractmethod
    def memory(self, entries: Sequence[Mapping[str, Any]], limit: int) -> str:
        """Remembered ``{variables, feedback}`` entries, oldest first."""


class LineProblemView(ProblemView):
    """OptoPrime's view: ``#Header`` sections of ``(type) name=value`` lines, variables'
    descriptions under ``#Constraints``, memory as JSON blocks.

    Args:
        symbols: the headers (``prompt_symbols``; read at each use).
        defaults: the default headers, also accepted in a ``mask``.
    """

    def __init__(
        self, symbols: Mapping[str, str], defaults: Mapping[str, str] = DEFAULT_PROMPT_SYMBOLS
    ) -> None:
        super().__init__(symbols, symbols, defaults)

    def node_entry(self, section: str, name: str, value: Any, desc: Any, limit: int) -> str:
        """``(type) name=value``."""
        return value_line(name, value, limit)

    def variable_sections(self, summary: FunctionFeedback) -> dict[str, str]:
        """``#Variables`` as value lines, ``#Constraints`` from their descriptions."""
        return {
            "variables": "\n".join(value_line(k, v[0], -1) for k, v in summary.variables.items()),
            "constraints": "\n".join(
                f"({type_name(name, value)}) {name}: {desc}"
                for name, (value, desc) in summary.variables.items()
                if desc is not None
            ),
        }

    def build(self, sections: Mapping[str, str]) -> ProblemInstance:
        """A :class:`ProblemInstance`."""
        return ProblemInstance(**sections)

    def example(self, objective: str) -> ProblemInstance:
        """``a + b - c`` should be 10: ``a`` must become 14."""
        return ProblemInstance(
            instruction=objective,
            code="y = add(x=a, y=b)\nz = subtract(x=y, y=c)",
            documentation="[add] Returns x + y.\n[subtract] Returns x - y.",
            variables="(int) a=5",
            constraints="(int) a: a > 0",
            inputs="(int) b=1\n(int) c=5",
            others="(int) y=6",
            outputs="(int) z=1",
            feedback="z should be 10.",
        )

    def memory(self, entries: Sequence[Mapping[str, Any]], limit: int) -> str:
        """One indented JSON object per entry (text values cut at ``limit``)."""
        return "\n".join(
            json.dumps(
                {
                    "variables": {
                        k: truncate_expression(v, limit) if isinstance(v, str) else jsonable(v)
                        for k, v in entry["variables"].items()
                    },
                    "feedback": jsonable(entry["feedback"]),
                },
                indent=2,
                ensure_ascii=False,
            )
            for entry in entries
        )
