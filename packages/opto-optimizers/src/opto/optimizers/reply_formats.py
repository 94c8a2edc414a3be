"""Reply formats: how an optimizer asks the LLM to answer, and how it reads the answer.

A :class:`ReplyFormat` owns everything about one format: the section of the system prompt
that describes it (:meth:`~ReplyFormat.prompt_section`), the structured-output schema
sent with the request (:meth:`~ReplyFormat.response_format`), a reply written in it for
worked examples (:meth:`~ReplyFormat.example_reply`) and the tolerant parser
(:meth:`~ReplyFormat.parse`). :class:`JSONReplyFormat` asks for
``{reasoning, answer, suggestion: {variable: value}}``; :class:`XMLReplyFormat` for a
``<reasoning>`` block and one ``<variable><name>…</name><value>…</value></variable>``
block per change. The optimizer supplies the task-specific wording as a
:class:`ReplyGuide`, so OptoPrime and OPRO share a format and differ only in words.
"""

from __future__ import annotations

import abc
import json
import logging
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

import attrs
from opto.optimizers.parsing import (
    ParsedReply,
    SuggestionParseError,
    is_terminate,
    parse_suggestion_reply,
)
from opto.optimizers.xml_parsing import extract_xml_like_data, unclosed_block_name

__all__ = [
    "JSONReplyFormat",
    "ReplyFormat",
    "ReplyGuide",
    "XMLReplyFormat",
    "XMLReplyTags",
    "json_value_schema",
]

logger = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class ReplyGuide:
    """The task's wording of a reply-format section.

    Attributes:
        reasoning_hint: what the reasoning placeholder of the skeleton says.
        reasoning_rule: what the reasoning should contain (None: no rule).
        question: the section a question would be asked in, for the answer rule (None:
            the reply has no answer field).
        variables: the name of the section listing the variables that may change.
        constraints: what suggested values must respect (None: nothing beyond their type).
        code_value: how the prose names a code value (``"A (code) value"``).
        terminate_when: when the reply should be just ``TERMINATE``.
        skeleton_variables: the variable entries the skeleton shows.
    """

    reasoning_hint: str = "your reasoning"
    reasoning_rule: str | None = None
    question: str | None = None
    variables: str = "#Variables"
    constraints: str | None = None
    code_value: str = "A (code) value"
    terminate_when: str = "nothing needs to change"
    skeleton_variables: Mapping[str, str] = attrs.field(
        factory=lambda: {"variable_name": "new value", "another_variable_name": "new value"}
    )

    def change_rule(self, scope: str) -> str:
        """``scope`` (where the changes go, for which variables) followed by the rules
        every suggested value follows."""
        respecting = f" and respecting {self.constraints}" if self.constraints else ""
        return (
            f"{scope} (nothing else can change), each of its current type{respecting}. "
            f"{self.code_value} must be a complete, valid Python function definition with "
            "the same name and parameters."
        )


def json_value_schema(value: Any, code: bool = False) -> dict[str, Any]:
    """The JSON schema of a suggested value, from the parameter's current value."""
    if code or isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, (list, tuple, set, frozenset)):
        return {"type": "array"}
    if isinstance(value, dict):
        return {"type": "object"}
    return {}


class ReplyFormat(abc.ABC):
    """One way of replying: prompt section, schema, example and parser.

    Args:
        custom_instruction: a prompt section that replaces :meth:`prompt_section`'s text
            (the parser stays this format's).
    """

    def __init__(self, custom_instruction: str | None = None) -> None:
        self.custom_instruction = custom_instruction

    def prompt_section(self, guide: ReplyGuide) -> str:
        """The part of the system prompt that asks for this format."""
        if self.custom_instruction is not None:
            return self.custom_instruction
        return self._instructions(guide)

    @abc.abstractmethod
    def _instructions(self, guide: ReplyGuide) -> str:
        """The format's own prompt section for ``guide``."""

    def response_format(
        self,
        variables: Mapping[str, tuple[Any, bool]],
        max_tokens: int,
        reasoning_max_chars: int | None = None,
    ) -> dict[str, Any] | None:
        """The ``response_format`` option for a reply suggesting ``variables``
        (``{name: (current value, is_code)}``); None when the format has no schema."""
        return None

    @abc.abstractmethod
    def example_reply(self, reasoning: str, suggestion: Mapping[str, Any]) -> str:
        """A reply in this format with ``reasoning`` and ``suggestion``."""

    def parse(
        self,
        reply: str,
        suggestion_tag: str | None = None,
        reasoning_tag: str | None = None,
    ) -> ParsedReply:
        """Parse a reply; the tags, when given, replace the format's own names. A reply
        that is just ``TERMINATE`` parses as ``terminate=True``.

        Raises:
            SuggestionParseError: the reply is not text or holds no usable suggestion.
        """
        if not isinstance(reply, str):
            raise SuggestionParseError(
                f"the reply must be text, got {type(reply).__name__}", raw=repr(reply)
            )
        if is_terminate(reply):
            return ParsedReply(raw=reply, terminate=True)
        return self._parse(reply, suggestion_tag, reasoning_tag)

    @abc.abstractmethod
    def _parse(self, reply: str, suggestion: str | None, reasoning: str | None) -> ParsedReply:
        """Parse a reply that is text and not ``TERMINATE`` (see :meth:`parse`)."""

    def extract(
        self,
        reply: str,
        *,
        ignore_errors: bool,
        suggestion_tag: str | None = None,
        reasoning_tag: str | None = None,
        return_only_suggestion: bool = True,
    ) -> dict[str, Any]:
        """The suggestion dict of a reply, or ``{"reasoning": …, "variables": …}`` with
        ``return_only_suggestion=False``; an unusable reply gives empty results (logged),
        or raises SuggestionParseError unless ``ignore_errors``."""
        try:
            parsed = self.parse(reply, suggestion_tag, reasoning_tag)
        except SuggestionParseError as error:
            logger.warning("Cannot extract a suggestion from the LLM reply: %s", error)
            if not ignore_errors:
                raise
            parsed = ParsedReply(raw=str(reply))
        if return_only_suggestion:
            return dict(parsed.suggestion)
        return {"reasoning": parsed.reasoning, "variables": dict(parsed.suggestion)}


class JSONReplyFormat(ReplyFormat):
    """``{"reasoning": …, "answer": …, "suggestion": {variable: value}}``.

    A subclass may set :attr:`suggestion_only` (a reply of just ``{"suggestion": {…}}``)
    and override :meth:`value_schema` (what a suggested value may be).

    Args:
        keys: the reply's keys ``reasoning``/``answer``/``suggestion`` (``answer`` None:
            no answer). The mapping is read at each use, so later changes apply.
        custom_instruction: see :class:`ReplyFormat`.
    """

    #: The reply is just the suggestion: no reasoning or answer in the prompt section,
    #: the schema or the example reply.
    suggestion_only: ClassVar[bool] = False

    def __init__(
        self, keys: Mapping[str, str | None], custom_instruction: str | None = None
    ) -> None:
        super().__init__(custom_instruction)
        self.keys = keys

    def _text_keys(self, with_answer: bool = True) -> tuple[str | None, str | None]:
        """The keys of the reasoning and answer texts the reply has (None: not in it)."""
        if self.suggestion_only:
            return None, None
        return self.keys["reasoning"], (self.keys["answer"] if with_answer else None)

    def _instructions(self, guide: ReplyGuide) -> str:
        reasoning, answer = self._text_keys(with_answer=bool(guide.question))
        suggestion = self.keys["suggestion"]
        lines = [
            "Reply with one JSON object:",
            "{",
            *([f'  "{reasoning}": <{guide.reasoning_hint}>,'] if reasoning else []),
            *([f'  "{answer}": <your answer>,'] if answer else []),
            f'  "{suggestion}": {{<variable name>: <new value>, ...}}',
            "}",
        ]
        if reasoning and guide.reasoning_rule:
            lines.append(f'In "{reasoning}": {guide.reasoning_rule}')
        if answer:
            lines.append(f'Fill "{answer}" only when {guide.question} asks a question.')
        lines.append(
            guide.change_rule(
                f'In "{suggestion}" give new values for variables of {guide.variables} only'
            )
        )
        lines.append(f"If {guide.terminate_when}, reply with just TERMINATE.")
        return "\n".join(lines)

    def value_schema(self, name: str, value: Any, code: bool) -> dict[str, Any]:
        """The JSON schema of the suggested value of variable ``name`` (current ``value``,
        ``code`` for a code parameter): :func:`json_value_schema` here."""
        return json_value_schema(value, code)

    def response_format(
        self,
        variables: Mapping[str, tuple[Any, bool]],
        max_tokens: int,
        reasoning_max_chars: int | None = None,
    ) -> dict[str, Any]:
        """A ``json_schema`` naming exactly ``variables`` (each by :meth:`value_schema`),
        non-code ones first (a reply cut off at ``max_tokens`` then loses the long code,
        not the short values after it); the reasoning and answer texts are capped at
        ``reasoning_max_chars``."""
        names = sorted(variables, key=lambda name: variables[name][1])
        properties_of = {name: self.value_schema(name, *variables[name]) for name in names}
        reasoning, answer = self._text_keys()
        text: dict[str, Any] = {"type": "string"}
        if reasoning_max_chars is not None:
            text["maxLength"] = max(1, min(reasoning_max_chars, max_tokens))
        properties = {key: dict(text) for key in (reasoning, answer) if key}
        suggestion: str = self.keys["suggestion"]  # type: ignore[assignment]
        properties[suggestion] = {
            "type": "object",
            "properties": properties_of,
            "required": list(properties_of),
            "additionalProperties": False,
        }
        schema = {
            "type": "object",
            "properties": properties,
            "required": [key for key in (reasoning, suggestion) if key],
            "additionalProperties": False,
        }
        return {"type": "json_schema", "json_schema": {"name": "suggestion", "schema": schema}}

    def example_reply(self, reasoning: str, suggestion: Mapping[str, Any]) -> str:
        """The example as indented JSON (with an empty answer when the reply has one)."""
        reasoning_key, answer_key = self._text_keys()
        reply: dict[str, Any] = {reasoning_key: reasoning} if reasoning_key else {}
        if answer_key:
            reply[answer_key] = ""
        reply[self.keys["suggestion"]] = dict(suggestion)  # type: ignore[index]
        return json.dumps(reply, indent=2)

    def _parse(self, reply: str, suggestion: str | None, reasoning: str | None) -> ParsedReply:
        """Parse with :func:`~opto.optimizers.parsing.parse_suggestion_reply`."""
        return parse_suggestion_reply(
            reply,
            reasoning_key=reasoning or self.keys["reasoning"],  # type: ignore[arg-type]
            answer_key=self.keys["answer"],
            suggestion_key=suggestion or self.keys["suggestion"],  # type: ignore[arg-type]
        )


class XMLReplyTags(Protocol):
    """The tags of an XML-style reply (an ``OptimizerPromptSymbolSet`` provides them)."""

    reasoning_tag: str
    improved_variable_tag: str
    name_tag: str
    value_tag: str

    def output_response_extractor(self, reply: str) -> dict[str, Any]:
        """``{"reasoning": str, "variables": {name: value}}`` of a reply."""
        ...

    def example_output(self, reasoning: str, variables: Mapping[str, str]) -> str:
        """A reply with these tags."""
        ...


class XMLReplyFormat(ReplyFormat):
    """``<reasoning>…</reasoning>`` then one ``<variable><name>…</name><value>…</value>
    </variable>`` block per changed variable; values arrive as text (converted later).

    Args:
        tags: the tag names, reply extractor and example writer (an
            ``OptimizerPromptSymbolSet``).
        custom_instruction: see :class:`ReplyFormat`.
    """

    def __init__(self, tags: XMLReplyTags, custom_instruction: str | None = None) -> None:
        super().__init__(custom_instruction)
        self.tags = tags

    def _instructions(self, guide: ReplyGuide) -> str:
        t = self.tags
        skeleton = t.example_output(guide.reasoning_hint, guide.skeleton_variables)
        lines = ["Your output should be in the following XML/HTML format:", f"```\n{skeleton}\n```"]
        if guide.reasoning_rule:
            lines.append(f"In <{t.reasoning_tag}>: {guide.reasoning_rule}")
        scope = (
            f"Give one <{t.improved_variable_tag}> block per variable you change, only for "
            f"variables of {guide.variables}"
        )
        lines.append(guide.change_rule(scope))
        lines.append(f"If {guide.terminate_when}, just output TERMINATE.")
        return "\n".join(lines)

    def example_reply(self, reasoning: str, suggestion: Mapping[str, Any]) -> str:
        """The example in the tags' format (values as text)."""
        return self.tags.example_output(reasoning, {k: str(v) for k, v in suggestion.items()})

    def _parse(self, reply: str, suggestion: str | None, reasoning: str | None) -> ParsedReply:
        """Parse the blocks (``suggestion`` replaces the variable tag, ``reasoning`` the
        reasoning tag); a last block that never closes is reported as ``cut_off``.

        Raises:
            SuggestionParseError: the reply holds no complete variable block.
        """
        t = self.tags
        variable_tag = suggestion or t.improved_variable_tag
        if suggestion or reasoning:
            data = extract_xml_like_data(
                reply,
                reasoning_tag=reasoning or t.reasoning_tag,
                improved_variable_tag=variable_tag,
                name_tag=t.name_tag,
                value_tag=t.value_tag,
            )
        else:
            data = t.output_response_extractor(reply)
        if not data["variables"]:
            raise SuggestionParseError(
                f"the reply holds no complete <{variable_tag}> block with a "
                f"<{t.name_tag}> and a <{t.value_tag}>",
                raw=reply,
            )
        return ParsedReply(
            raw=reply,
            suggestion=data["variables"],
            reasoning=data["reasoning"],
            cut_off=unclosed_block_name(reply, variable_tag, t.name_tag),
        )
