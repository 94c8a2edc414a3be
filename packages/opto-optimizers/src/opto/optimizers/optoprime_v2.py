"""OptoPrimeV2: OptoPrime with an XML-style prompt and reply.

The variables are shown as ``<variable name=… type=…><value>…</value><constraint>…
</constraint></variable>`` elements and the LLM answers with a ``<reasoning>`` block and
one ``<variable><name>…</name><value>…</value></variable>`` block per change, which small
models follow more reliably than JSON. Tags and section titles come from an
:class:`OptimizerPromptSymbolSet`; parsing tolerates text around the tags, nested tags,
``name="…"`` attributes and an unclosed reasoning. Conversion, code checks, memory and step
records are OptoPrime's.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import attrs
from opto.optimizers.optoprime import OptoPrime
from opto.optimizers.parsing import ParsedReply, SuggestionParseError, is_terminate
from opto.optimizers.prompt_budget import graph_sections
from opto.optimizers.utils import truncate_expression
from opto.trace.nodes import ParameterNode
from opto.trace.propagators import AbstractPropagator, FunctionFeedback
from opto.trace.utils import is_code_name

__all__ = [
    "OptimizerPromptSymbolSet",
    "OptimizerPromptSymbolSet2",
    "OptimizerPromptSymbolSetJSON",
    "OptoPrimeV2",
    "ProblemInstanceV2",
    "extract_first_top_level_block",
    "extract_reasoning_and_remainder",
    "extract_top_level_blocks",
    "extract_xml_like_data",
]

logger = logging.getLogger(__name__)

_FENCE_LINE = "=" * 32

# --- tolerant XML-like parsing ------------------------------------------------------------

_ATTRIBUTE = re.compile(r"""([A-Za-z_][\w.-]*)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""")


def _tag_pattern(tag: str) -> re.Pattern[str]:
    """An opening (``attrs`` group) or closing (``close`` group) ``tag``, any letter case."""
    name = re.escape(tag)
    return re.compile(
        rf"<\s*(?:/\s*{name}\s*(?P<close>)>|{name}(?P<attrs>(?:\s[^<>]*)?)>)", re.IGNORECASE
    )


def _blocks(text: str, tag: str) -> list[tuple[str, str, int, int]]:
    """Top-level ``<tag …>inner</tag>`` blocks as ``(attributes, inner, start, end)``.

    A depth counter keeps nested blocks of the same tag inside their parent's text;
    closers without an opener are ignored and an opener that is never closed gives no block.
    """
    found: list[tuple[str, str, int, int]] = []
    depth = 0
    attributes = ""
    start = inner_start = 0
    for match in _tag_pattern(tag).finditer(text):
        if match.group("close") is None:
            if depth == 0:
                attributes = match.group("attrs") or ""
                start, inner_start = match.start(), match.end()
            depth += 1
        elif depth > 0:
            depth -= 1
            if depth == 0:
                found.append((attributes, text[inner_start : match.start()], start, match.end()))
    return found


def extract_top_level_blocks(text: str, tag: str) -> list[str]:
    """Inner text of every top-level ``<tag>…</tag>`` block of ``text``, in order."""
    return [inner for _, inner, _, _ in _blocks(text, tag)]


def extract_first_top_level_block(text: str, tag: str) -> str | None:
    """Inner text of the first top-level ``<tag>…</tag>`` block, or None."""
    blocks = _blocks(text, tag)
    return blocks[0][1] if blocks else None


def extract_reasoning_and_remainder(text: str, tag: str = "reasoning") -> tuple[str, str]:
    """Split a reply into its reasoning and the text after it.

    A closed ``<tag>`` block gives its stripped content and the text after the block. An
    opened but unclosed tag gives the text up to the next tag (the reasoning ran into the
    answer) and the rest, so the answer is still parsed — the reference parsed nothing
    then. Without the tag the reasoning is empty and the whole text remains.
    """
    blocks = _blocks(text, tag)
    if blocks:
        _, inner, _, end = blocks[0]
        return inner.strip(), text[end:]
    opener = next((m for m in _tag_pattern(tag).finditer(text) if m.group("close") is None), None)
    if opener is None:
        return "", text
    rest = text[opener.end() :]
    cut = re.search(r"<\s*[A-Za-z]", rest)
    if cut is None:
        return rest.strip(), ""
    return rest[: cut.start()].strip(), rest[cut.start() :]


def _attribute(attributes: str, key: str) -> str | None:
    for match in _ATTRIBUTE.finditer(attributes):
        if match.group(1).lower() == key.lower():
            return next(value for value in match.group(2, 3, 4) if value is not None)
    return None


def extract_xml_like_data(
    text: str,
    reasoning_tag: str = "reasoning",
    improved_variable_tag: str = "variable",
    name_tag: str = "name",
    value_tag: str = "value",
) -> dict[str, Any]:
    """Parse an XML-style reply into ``{"reasoning": str, "variables": {name: str}}``.

    Each top-level ``<variable>`` block after the reasoning gives its first top-level
    ``<name>`` (or a ``name="…"`` attribute of the tag) and ``<value>``; blocks missing
    either, or with a blank name, are skipped. Names and values are stripped; a later block
    for the same name wins; blank values of code parameters (``__code…``) are dropped.
    Text around the tags is ignored. Never raises for a ``str`` input.
    """
    reasoning, remainder = extract_reasoning_and_remainder(text, reasoning_tag)
    variables: dict[str, str] = {}
    for attributes, inner, _, _ in _blocks(remainder, improved_variable_tag):
        name = extract_first_top_level_block(inner, name_tag)
        if name is None:
            name = _attribute(attributes, name_tag)
        value = extract_first_top_level_block(inner, value_tag)
        if name is None or value is None or not name.strip():
            continue
        name, value = name.strip(), value.strip()
        if is_code_name(name) and not value:
            continue
        variables[name] = value
    return {"reasoning": reasoning, "variables": variables}


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
        """The sections in prompt order, each title followed by its content.

        ``symbols`` is accepted for OptoPrime's call and ignored: the titles are the
        instance's own.
        """
        titles = self.titles
        return "\n\n".join(f"{titles[key]}\n{getattr(self, key)}" for key in titles)

    def __str__(self) -> str:
        return self.render()


def _type_name(name: str, value: Any) -> str:
    return "code" if is_code_name(name) else type(value).__name__


class OptoPrimeV2(OptoPrime):
    """OptoPrime with XML-style prompts and replies (the reference's ``OptoPrimeV2``).

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

    representation_prompt = (
        "You improve a program by changing some of its values. You see a trace of one run: "
        "the operations it performed, their values, and feedback on the result.\n\n"
        "The problem has these parts:\n"
        "- {instruction}: what to do, or the question to answer.\n"
        "- {code}: the operations of the run, one call per line.\n"
        "- {documentation}: what each function in {code} does (may be incomplete; use "
        "{others} to infer).\n"
        "- {variables}: the values you may change (trainable), each with its constraint.\n"
        "- {inputs}: values you CANNOT change (fixed).\n"
        "- {others}: intermediate values of the run.\n"
        "- {outputs}: the results of the run.\n"
        "- {feedback}: feedback on the outputs.\n\n"
        "A variable is shown as\n"
        '<{variable_tag} name="variable_name" type="data_type">\n'
        "<{value_tag}>\nvalue\n</{value_tag}>\n"
        "<{constraint_tag}>\nconstraint_expression\n</{constraint_tag}>\n"
        "</{variable_tag}>\n"
        "and inputs, intermediate values and outputs as\n"
        '<{node_tag} name="node_name" type="data_type">\n'
        "<{value_tag}>\nvalue\n</{value_tag}>\n"
        "</{node_tag}>\n"
        'A value of type "code" is the source of a Python function.'
    )

    memory_prompt = "Below are the variables and the feedback of earlier rounds, oldest first."

    def __init__(
        self,
        parameters: Iterable[ParameterNode],
        llm: Any = None,
        *args: Any,
        propagator: AbstractPropagator | None = None,
        objective: str | None = None,
        ignore_extraction_error: bool = True,
        include_example: bool = False,
        memory_size: int = 0,
        max_tokens: int = 8192,
        log: bool = True,
        initial_var_char_limit: int = 2000,
        optimizer_prompt_symbol_set: OptimizerPromptSymbolSet | None = None,
        use_json_object_format: bool = True,
        truncate_expression: Callable[[Any, int], str] = truncate_expression,
        **kwargs: Any,
    ) -> None:
        symbols = optimizer_prompt_symbol_set or OptimizerPromptSymbolSet()
        if not isinstance(symbols, OptimizerPromptSymbolSet):
            raise TypeError(
                "optimizer_prompt_symbol_set must be an OptimizerPromptSymbolSet, got "
                f"{type(symbols).__name__}."
            )
        fixed = sorted({"prompt_symbols", "highlight_variables", "max_value_chars"} & set(kwargs))
        if fixed:
            raise TypeError(
                f"OptoPrimeV2 does not take {fixed}: titles come from "
                "optimizer_prompt_symbol_set, the value limit is initial_var_char_limit, and "
                "the prompt always asks about the variables."
            )
        self.symbols = symbols
        self.truncate_expression = truncate_expression
        kwargs.setdefault("json_keys", {"answer": None})
        super().__init__(
            parameters,
            llm,
            *args,
            propagator=propagator,
            objective=objective,
            ignore_extraction_error=ignore_extraction_error,
            include_example=include_example,
            memory_size=memory_size,
            max_tokens=max_tokens,
            log=log,
            prompt_symbols={**symbols.names, "constraints": "#Constraints"},
            use_json_object_format=use_json_object_format and symbols.expect_json,
            highlight_variables=True,
            max_value_chars=initial_var_char_limit,
            **kwargs,
        )

    @property
    def initial_var_char_limit(self) -> int:
        """Longest value shown for non-variables (``max_value_chars``)."""
        return self.max_value_chars

    # --- the prompt -------------------------------------------------------------------

    def _masked(self, mask: Collection[str] | None) -> set[str]:
        masked = super()._masked(mask)
        if mask:
            masked.update(key for key, title in self.symbols.titles.items() if title in mask)
        return masked

    def _element(self, tag: str, name: str, value: Any, constraint: str | None, limit: int) -> str:
        s = self.symbols
        shown = value if limit < 0 else self.truncate_expression(value, limit)
        text = str(shown).rstrip("\n") if is_code_name(name) else str(shown)
        parts = [
            f'<{tag} name="{name}" type="{_type_name(name, value)}">',
            f"<{s.value_tag}>\n{text}\n</{s.value_tag}>",
        ]
        if constraint is not None:
            parts.append(f"<{s.constraint_tag}>\n{constraint}\n</{s.constraint_tag}>")
        parts.append(f"</{tag}>")
        return "\n".join(parts)

    def problem_instance(
        self,
        summary: FunctionFeedback,
        mask: Collection[str] | None = None,
        max_value_chars: int | None = None,
    ) -> ProblemInstanceV2:  # type: ignore[override]
        """The XML-style problem for ``summary``; sections named in ``mask`` (by title,
        prose name or key) are left empty. Code values are shown whole, with their
        signature description as the constraint."""
        limit = self.max_value_chars if max_value_chars is None else max_value_chars
        s = self.symbols
        masked = self._masked(mask)

        def node(section: str, name: str, value: Any, desc: Any) -> str:
            constraint = desc if section == "inputs" else None
            return self._element(s.node_tag, name, value, constraint, limit)

        sections = {
            "instruction": self.objective,
            "variables": "\n".join(
                self._element(s.variable_tag, name, value, desc, -1)
                for name, (value, desc) in summary.variables.items()
            ),
            "feedback": str(summary.user_feedback),
            **graph_sections(summary, node, self.max_section_chars),
        }
        return ProblemInstanceV2(
            titles=s.titles,
            **{key: "" if key in masked else text for key, text in sections.items()},
        )

    def output_format_prompt(self) -> str:
        """The reply instructions: the symbol set's XML format (or JSON for JSON sets)."""
        s = self.symbols
        if s.custom_output_format_instruction is not None:
            return s.custom_output_format_instruction
        if s.expect_json:
            return super().output_format_prompt()
        n = s.names
        skeleton = s.example_output(
            "your reasoning",
            {"variable_name": "new value", "another_variable_name": "new value"},
        )
        return (
            "Your output should be in the following XML/HTML format:\n"
            f"```\n{skeleton}\n```\n"
            f"In <{s.reasoning_tag}>: say what {n['instruction']} asks; explain what "
            f"{n['feedback']} means for the variables, using {n['code']}, "
            f"{n['documentation']}, {n['inputs']} and {n['others']}; then state the change "
            "and the result you expect.\n"
            f"Then give one <{s.improved_variable_tag}> block per variable you change, only "
            f"for variables of {n['variables']} (nothing else can change), each value of its "
            f"current type and respecting its <{s.constraint_tag}>. A value of type code must "
            "be a complete, valid Python function definition with the same name and "
            "parameters.\n"
            "If no changes are needed, just output TERMINATE."
        )

    def system_prompt(self) -> str:
        """Representation prompt (with this set's tags) followed by the output format."""
        s = self.symbols
        representation = self.representation_prompt.format(
            **s.names,
            node_tag=s.node_tag,
            variable_tag=s.variable_tag,
            value_tag=s.value_tag,
            constraint_tag=s.constraint_tag,
        )
        return representation + "\n\n" + self.output_format_prompt()

    def example_prompt(self) -> str:
        """A worked example: a small problem and a consistent reply in this format."""
        s = self.symbols
        element = self._element
        example = ProblemInstanceV2(
            titles=s.titles,
            instruction=self.default_objective.format(**s.names),
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
        reasoning = (
            "z = a + b - c = a - 4, and the feedback asks for z = 10, so a must be 14 "
            "(which satisfies a > 0)."
        )
        if s.expect_json:
            reply = json.dumps({"reasoning": reasoning, "suggestion": {"a": 14}}, indent=2)
        else:
            reply = s.example_output(reasoning, {"a": "14"})
        return (
            "Here is an example of a problem instance and a response:\n\n"
            f"{_FENCE_LINE}\n{example.render()}\n{_FENCE_LINE}\n\n{reply}\n\n"
        )

    def _memory_text(self, entries: Sequence[Mapping[str, Any]], limit: int) -> str:
        """Past rounds as ``<round k>`` blocks; values keep their indentation."""
        if not entries:
            return ""
        s = self.symbols
        rounds = []
        for number, entry in enumerate(entries, start=1):
            blocks = "".join(
                f"<{s.improved_variable_tag}>\n<{s.name_tag}>{name}</{s.name_tag}>\n"
                f"<{s.value_tag}>\n{self.truncate_expression(value, limit) if limit >= 0 else value}"
                f"\n</{s.value_tag}>\n</{s.improved_variable_tag}>\n"
                for name, value in entry["variables"].items()
            )
            rounds.append(
                f"<round {number}>\n{blocks}<feedback>\n{entry['feedback']}\n</feedback>\n"
                f"</round {number}>"
            )
        return self.memory_prompt + "\n" + "\n".join(rounds) + "\n\n"

    # --- the reply --------------------------------------------------------------------

    def parse_reply(self, reply: str) -> ParsedReply:
        """Parse a reply in the symbol set's format.

        Raises:
            SuggestionParseError: no complete variable block (XML), or no usable JSON.
        """
        if self.symbols.expect_json:
            return super().parse_reply(reply)
        if not isinstance(reply, str):
            raise SuggestionParseError(
                f"the reply must be text, got {type(reply).__name__}", raw=repr(reply)
            )
        if is_terminate(reply):
            return ParsedReply(raw=reply, terminate=True)
        data = self.symbols.output_response_extractor(reply)
        if not data["variables"]:
            s = self.symbols
            raise SuggestionParseError(
                f"the reply holds no complete <{s.improved_variable_tag}> block with a "
                f"<{s.name_tag}> and a <{s.value_tag}>",
                raw=reply,
            )
        return ParsedReply(
            raw=reply,
            suggestion=data["variables"],
            reasoning=data["reasoning"],
            cut_off=self._unclosed_variable(reply),
        )

    def _unclosed_variable(self, reply: str) -> str | None:
        """The name in a last variable block that never closes (a reply cut off at
        ``max_tokens``), ``""`` when its name is unknown; None when every block closes."""
        s = self.symbols
        opening = list(re.finditer(rf"<{re.escape(s.improved_variable_tag)}\b[^>]*>", reply))
        if not opening:
            return None
        tail = reply[opening[-1].end() :]
        if f"</{s.improved_variable_tag}>" in tail:
            return None
        tag = re.escape(s.name_tag)
        name = re.search(rf"<{tag}>(.*?)</{tag}>", tail, re.DOTALL)
        return name.group(1).strip() if name else ""

    def extract_llm_suggestion(
        self,
        response: str,
        suggestion_tag: str | None = None,
        reasoning_tag: str | None = None,
        return_only_suggestion: bool = True,
        ignore_extraction_error: bool | None = None,
    ) -> dict[str, Any]:
        """The suggestion of a reply (reference API): ``{name: value}``, or
        ``{"reasoning": …, "variables": …}`` with ``return_only_suggestion=False``.

        An unusable reply gives empty results (logged) or, when extraction errors are not
        ignored, raises SuggestionParseError.
        """
        if self.symbols.expect_json:
            return super().extract_llm_suggestion(
                response,
                suggestion_tag,
                reasoning_tag,
                return_only_suggestion,
                ignore_extraction_error,
            )
        ignore = (
            self.ignore_extraction_error
            if ignore_extraction_error is None
            else bool(ignore_extraction_error)
        )
        try:
            parsed = self.parse_reply(response)
        except SuggestionParseError as error:
            logger.warning("Cannot extract a suggestion from the LLM reply: %s", error)
            if not ignore:
                raise
            parsed = ParsedReply(raw=str(response))
        if return_only_suggestion:
            return dict(parsed.suggestion)
        return {"reasoning": parsed.reasoning, "variables": dict(parsed.suggestion)}
