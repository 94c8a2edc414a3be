"""OptoPrimeV2: OptoPrime with an XML-style prompt and reply.

The variables are shown as ``<variable name=… type=…><value>…</value><constraint>…
</constraint></variable>`` elements and the LLM answers with a ``<reasoning>`` block and
one ``<variable><name>…</name><value>…</value></variable>`` block per change, which small
models follow more reliably than JSON. Tags and section titles come from an
:class:`OptimizerPromptSymbolSet`; parsing tolerates text around the tags, nested tags,
``name="…"`` attributes and an unclosed reasoning (:mod:`~opto.optimizers.xml_parsing`).
The symbol set configures an :class:`~opto.optimizers.reply_formats.XMLReplyFormat` (or a
JSON one); conversion, code checks, memory, LLM calls and step records are OptoPrime's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
from opto.optimizers.optoprime import OptoPrime
from opto.optimizers.problem import ProblemView, trace_representation, type_name
from opto.optimizers.reply_formats import JSONReplyFormat, XMLReplyFormat
from opto.optimizers.utils import truncate_expression
from opto.optimizers.xml_parsing import (
    extract_first_top_level_block,
    extract_reasoning_and_remainder,
    extract_top_level_blocks,
    extract_xml_like_data,
)
from opto.trace.nodes import ParameterNode
from opto.trace.propagators import FunctionFeedback
from opto.trace.utils import is_code_name

__all__ = [
    "OptimizerPromptSymbolSet",
    "OptimizerPromptSymbolSet2",
    "OptimizerPromptSymbolSetJSON",
    "OptoPrimeV2",
    "ProblemInstanceV2",
    "XMLProblemView",
    "extract_first_top_level_block",
    "extract_reasoning_and_remainder",
    "extract_top_level_blocks",
    "extract_xml_like_data",
]

# --- prompt symbols -----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class OptimizerPromptSymbolSet:
    """Section titles and XML tags of OptoPrimeV2's prompt and reply (immutable).

    Subclass it (or use :func:`attrs.evolve`) to rename tags. A set with
    ``custom_output_format_instruction`` replaces the reply instructions and must also
    override :meth:`output_response_extractor` and :meth:`example_output` to match.
    """

    instruction_section_title: str = "# Instruction"
    code_section_title: str = "# Code"
    documentation_section_title: str = "# Documentation"
    variables_section_title: str = "# Variables"
    inputs_section_title: str = "# Inputs"
    others_section_title: str = "# Others"
    outputs_section_title: str = "# Outputs"
    feedback_section_title: str = "# Feedback"

    node_tag: str = "node"
    variable_tag: str = "variable"
    value_tag: str = "value"
    constraint_tag: str = "constraint"

    reasoning_tag: str = "reasoning"
    improved_variable_tag: str = "variable"
    name_tag: str = "name"

    expect_json: bool = False
    custom_output_format_instruction: str | None = None

    @property
    def titles(self) -> dict[str, str]:
        """Section key (``"variables"``…) to its title, in prompt order."""
        return {
            "instruction": self.instruction_section_title,
            "code": self.code_section_title,
            "documentation": self.documentation_section_title,
            "variables": self.variables_section_title,
            "inputs": self.inputs_section_title,
            "others": self.others_section_title,
            "outputs": self.outputs_section_title,
            "feedback": self.feedback_section_title,
        }

    @property
    def names(self) -> dict[str, str]:
        """Section key to the name used in prose: the title without spaces (``#Variables``)."""
        return {key: title.replace(" ", "") for key, title in self.titles.items()}

    def output_response_extractor(self, reply: str) -> dict[str, Any]:
        """``{"reasoning": str, "variables": {name: value}}`` of a reply (never raises)."""
        return extract_xml_like_data(
            reply,
            reasoning_tag=self.reasoning_tag,
            improved_variable_tag=self.improved_variable_tag,
            name_tag=self.name_tag,
            value_tag=self.value_tag,
        )

    def example_output(self, reasoning: str, variables: Mapping[str, str]) -> str:
        """A reply in this format (used for the format skeleton and the worked example)."""
        blocks = "".join(
            f"<{self.improved_variable_tag}>\n<{self.name_tag}>{name}</{self.name_tag}>\n"
            f"<{self.value_tag}>\n{value}\n</{self.value_tag}>\n</{self.improved_variable_tag}>\n"
            for name, value in variables.items()
        )
        return f"<{self.reasoning_tag}>\n{reasoning}\n</{self.reasoning_tag}>\n{blocks}".rstrip()


@attrs.frozen(kw_only=True)
class OptimizerPromptSymbolSet2(OptimizerPromptSymbolSet):
    """Shorter tags: ``<var>``/``<const>``/``<data>`` and ``<reason>``."""

    node_tag: str = "const"
    variable_tag: str = "var"
    value_tag: str = "data"
    constraint_tag: str = "constraint"
    reasoning_tag: str = "reason"
    improved_variable_tag: str = "var"
    name_tag: str = "name"


@attrs.frozen(kw_only=True)
class OptimizerPromptSymbolSetJSON(OptimizerPromptSymbolSet):
    """XML-style problem, JSON reply ``{"reasoning": …, "suggestion": {name: value}}``
    parsed by OptoPrime's tolerant JSON parser (and requested as a JSON schema)."""

    expect_json: bool = True


# --- the problem instance -----------------------------------------------------------------


@attrs.define(kw_only=True)
class ProblemInstanceV2:
    """The problem shown to the LLM, one text per section (no separate constraints:
    they sit inside each variable). ``render(titles)`` lays it out."""

    instruction: str = ""
    code: str = ""
    documentation: str = ""
    variables: str = ""
    inputs: str = ""
    others: str = ""
    outputs: str = ""
    feedback: str = ""
    titles: Mapping[str, str] = attrs.field(factory=lambda: OptimizerPromptSymbolSet().titles)

    def render(self, symbols: Mapping[str, str] | None = None) -> str:
        """The sections in prompt order, each title (from ``symbols`` when given, else
        the instance's own ``titles``) followed by its content."""
        titles = self.titles if symbols is None else {key: symbols[key] for key in self.titles}
        return "\n\n".join(f"{titles[key]}\n{getattr(self, key)}" for key in titles)

    def __str__(self) -> str:
        return self.render()


class XMLProblemView(ProblemView):
    """OptoPrimeV2's view: ``<variable name=… type=…>`` elements (constraints inside
    them) under the symbol set's titles, memory as ``<round k>`` blocks.

    Args:
        symbols: the tags and titles.
        truncate: ``fn(value, limit) -> str`` that shortens long values.
    """

    code_value = "A value of type code"

    def __init__(
        self,
        symbols: OptimizerPromptSymbolSet,
        truncate: Callable[[Any, int], str] = truncate_expression,
    ) -> None:
        super().__init__(symbols.titles, {**symbols.names, "constraints": "#Constraints"})
        self.symbols = symbols
        self.truncate = truncate
        self.constraints_ref = f"its <{symbols.constraint_tag}>"

    def representation(self, template: str) -> str:
        """The description with section names and this set's tags filled in."""
        s = self.symbols
        return template.format(
            **self.names,
            node_tag=s.node_tag,
            variable_tag=s.variable_tag,
            value_tag=s.value_tag,
            constraint_tag=s.constraint_tag,
        )

    def element(self, tag: str, name: str, value: Any, constraint: Any, limit: int) -> str:
        """One ``<tag name=… type=…>`` element with its value (cut at ``limit``) and, when
        given, its constraint."""
        s = self.symbols
        shown = value if limit < 0 else self.truncate(value, limit)
        text = str(shown).rstrip("\n") if is_code_name(name) else str(shown)
        parts = [
            f'<{tag} name="{name}" type="{type_name(name, value)}">',
            f"<{s.value_tag}>\n{text}\n</{s.value_tag}>",
        ]
        if constraint is not None:
            parts.append(f"<{s.constraint_tag}>\n{constraint}\n</{s.constraint_tag}>")
        parts.append(f"</{tag}>")
        return "\n".join(parts)

    def node_entry(self, section: str, name: str, value: Any, desc: Any, limit: int) -> str:
        """A node element; inputs carry their description as the constraint."""
        constraint = desc if section == "inputs" else None
        return self.element(self.symbols.node_tag, name, value, constraint, limit)

    def variable_sections(self, summary: FunctionFeedback) -> dict[str, str]:
        """Variables as elements with their constraints (code whole)."""
        tag = self.symbols.variable_tag
        return {
            "variables": "\n".join(
                self.element(tag, name, value, desc, -1)
                for name, (value, desc) in summary.variables.items()
            )
        }

    def build(self, sections: Mapping[str, str]) -> ProblemInstanceV2:
        """A :class:`ProblemInstanceV2` with this set's titles."""
        return ProblemInstanceV2(titles=self.symbols.titles, **sections)

    def example(self, objective: str) -> ProblemInstanceV2:
        """``a + b - c`` should be 10, in this set's elements."""
        s = self.symbols
        element = self.element
        return ProblemInstanceV2(
            titles=s.titles,
            instruction=objective,
            code="y = add(x=a, y=b)\nz = subtract(x=y, y=c)",
            documentation="[add] Returns x + y.\n[subtract] Returns x - y.",
            variables=element(s.variable_tag, "a", 5, "a > 0", -1),
            inputs=element(s.node_tag, "b", 1, None, -1)
            + "\n"
            + element(s.node_tag, "c", 5, None, -1),
            others=element(s.node_tag, "y", 6, None, -1),
            outputs=element(s.node_tag, "z", 1, None, -1),
            feedback="z should be 10.",
        )

    def memory(self, entries: Sequence[Mapping[str, Any]], limit: int) -> str:
        """Past rounds as ``<round k>`` blocks; values keep their indentation."""
        s = self.symbols
        rounds = []
        for number, entry in enumerate(entries, start=1):
            blocks = "".join(
                f"<{s.improved_variable_tag}>\n<{s.name_tag}>{name}</{s.name_tag}>\n"
                f"<{s.value_tag}>\n{self.truncate(value, limit) if limit >= 0 else value}"
                f"\n</{s.value_tag}>\n</{s.improved_variable_tag}>\n"
                for name, value in entry["variables"].items()
            )
            rounds.append(
                f"<round {number}>\n{blocks}<feedback>\n{entry['feedback']}\n</feedback>\n"
                f"</round {number}>"
            )
        return "\n".join(rounds)


class OptoPrimeV2(OptoPrime):
    """OptoPrime configured with an XML-style problem and an XML (or JSON) reply format.

    Takes OptoPrime's arguments (``llm`` is used as given: no default LLM is built when
    one is passed) plus:

    Args:
        initial_var_char_limit: longest value shown for inputs, intermediates, outputs
            and past variables (the current variables are always shown in full).
        optimizer_prompt_symbol_set: tags and titles; :class:`OptimizerPromptSymbolSet`
            by default, :class:`OptimizerPromptSymbolSetJSON` for JSON replies.
        truncate_expression: ``fn(value, limit) -> str`` that shortens long values.
        use_json_object_format: with a JSON symbol set, request the reply as a JSON schema
            naming the trainable variables (XML sets never send a response format).
    """

    default_objective = (
        "Change the `value` of the variables in {variables} to improve the output "
        "according to {feedback}."
    )

    representation_prompt = trace_representation(
        variables="the values you may change (trainable), each with its constraint.",
        inputs="values you CANNOT change (fixed).",
        values="A variable is shown as\n"
        '<{variable_tag} name="variable_name" type="data_type">\n'
        "<{value_tag}>\nvalue\n</{value_tag}>\n"
        "<{constraint_tag}>\nconstraint_expression\n</{constraint_tag}>\n"
        "</{variable_tag}>\n"
        "and inputs, intermediate values and outputs as\n"
        '<{node_tag} name="node_name" type="data_type">\n'
        "<{value_tag}>\nvalue\n</{value_tag}>\n"
        "</{node_tag}>\n"
        'A value of type "code" is the source of a Python function.',
    )

    memory_prompt = "Below are the variables and the feedback of earlier rounds, oldest first."

    def __init__(
        self,
        parameters: Iterable[ParameterNode],
        llm: Any = None,
        *args: Any,
        max_tokens: int = 8192,
        initial_var_char_limit: int = 2000,
        optimizer_prompt_symbol_set: OptimizerPromptSymbolSet | None = None,
        truncate_expression: Callable[[Any, int], str] = truncate_expression,
        **kwargs: Any,
    ) -> None:
        symbols = optimizer_prompt_symbol_set or OptimizerPromptSymbolSet()
        if not isinstance(symbols, OptimizerPromptSymbolSet):
            raise TypeError(
                "optimizer_prompt_symbol_set must be an OptimizerPromptSymbolSet, got "
                f"{type(symbols).__name__}."
            )
        fixed = {"prompt_symbols", "highlight_variables", "max_value_chars", "reply_format"}
        if fixed & set(kwargs):
            raise TypeError(
                f"OptoPrimeV2 does not take {sorted(fixed & set(kwargs))}: titles and the reply "
                "format come from optimizer_prompt_symbol_set, the value limit is "
                "initial_var_char_limit, and the prompt always asks about the variables."
            )
        self.symbols = symbols
        kwargs.setdefault("json_keys", {"answer": None})
        super().__init__(
            parameters,
            llm,
            *args,
            max_tokens=max_tokens,
            prompt_symbols={**symbols.names, "constraints": "#Constraints"},
            highlight_variables=True,
            max_value_chars=initial_var_char_limit,
            **kwargs,
        )
        self.problem_view = XMLProblemView(symbols, truncate_expression)
        custom = symbols.custom_output_format_instruction
        self.reply_format = (
            JSONReplyFormat(self.json_keys, custom)
            if symbols.expect_json
            else XMLReplyFormat(symbols, custom)
        )

    @property
    def initial_var_char_limit(self) -> int:
        """Longest value shown for non-variables (``max_value_chars``)."""
        return self.max_value_chars

    @property
    def truncate_expression(self) -> Callable[[Any, int], str]:
        """``fn(value, limit) -> str`` that shortens long values in the problem."""
        return self.problem_view.truncate  # type: ignore[attr-defined,no-any-return]

    @truncate_expression.setter
    def truncate_expression(self, fn: Callable[[Any, int], str]) -> None:
        self.problem_view.truncate = fn  # type: ignore[attr-defined]
