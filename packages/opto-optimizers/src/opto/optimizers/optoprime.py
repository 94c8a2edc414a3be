"""OptoPrime: the LLM reads the trace of a run and its feedback, and rewrites the variables.

Each step sums the feedback the trainable parameters received into one TraceGraph, shows
it to the LLM as a small program (``#Code``, ``#Variables``, ``#Feedback``…), asks for a
JSON reply ``{reasoning, answer, suggestion: {variable: value}}`` whose schema names exactly
the trainable variables, parses the reply tolerantly and converts each suggested value to
its parameter's type. What happened is kept in the step record (``optimizer.last_step``).
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import attrs
from opto.optimizers import prompt_budget
from opto.optimizers.code_proposals import restrict_parameters
from opto.optimizers.conversion import ConversionError, Converter, convert_code, convert_value
from opto.optimizers.optimizer import Optimizer
from opto.optimizers.parsing import ParsedReply, SuggestionParseError, parse_suggestion_reply
from opto.optimizers.utils import drop_oldest, estimate_tokens, jsonable, truncate_expression
from opto.trace.nodes import ParameterNode
from opto.trace.propagators import (
    AbstractPropagator,
    FunctionFeedback,
    TraceGraph,
    node_to_function_feedback,
)
from opto.trace.utils import is_code_name
from opto.utils.llm.types import response_from_openai

__all__ = [
    "DEFAULT_JSON_KEYS",
    "DEFAULT_PROMPT_SYMBOLS",
    "FunctionFeedback",
    "OptoPrime",
    "OptoPrimeV1",
    "ProblemInstance",
    "node_to_function_feedback",
]

logger = logging.getLogger(__name__)

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

#: Keys of the JSON reply; ``json_keys`` overrides them (``answer=None`` drops the answer).
DEFAULT_JSON_KEYS: Mapping[str, str | None] = MappingProxyType(
    {"reasoning": "reasoning", "answer": "answer", "suggestion": "suggestion"}
)

_SECTIONS = tuple(DEFAULT_PROMPT_SYMBOLS)
_MIN_VALUE_CHARS = 40
_FENCE_LINE = "=" * 32


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


def _type_name(name: str, value: Any) -> str:
    return "code" if is_code_name(name) else type(value).__name__


def _value_line(name: str, value: Any, limit: int) -> str:
    """``(type) name=value``; code as ``(code) name:source``."""
    if is_code_name(name):
        return f"(code) {name}:{truncate_expression(value, limit).rstrip()}"
    return f"({type(value).__name__}) {name}={truncate_expression(value, limit)}"


def _json_type(value: Any, name: str) -> dict[str, Any]:
    """The JSON schema of one suggested value, from the parameter's current value."""
    if is_code_name(name) or isinstance(value, str):
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


class OptoPrime(Optimizer):
    """The OptoPrime optimizer (the reference's V1, JSON replies).

    Args:
        parameters: the ParameterNodes to optimize.
        llm: any callable of the opto.utils LLM protocol (``llm(messages=..., **options)``
            returning an OpenAI-shaped response); ``opto.utils.llm.LLM()``, built at the first
            LLM call, when None.
        propagator: the feedback propagator (a GraphPropagator by default).
        objective: the ``#Instruction`` text; :attr:`default_objective` when None.
        ignore_extraction_error: when False an unparsable reply raises
            :class:`SuggestionParseError` (it is always counted and logged).
        include_example: show a worked example (problem and reply) before the problem.
        memory_size: how many earlier (variables, feedback) pairs the prompt shows.
        max_tokens: ``max_tokens`` of every LLM call.
        log: keep :attr:`log` (prompts and replies) and :attr:`summary_log`.
        prompt_symbols: overrides of the section headers (keys of DEFAULT_PROMPT_SYMBOLS).
        json_keys: overrides of the reply's keys ``reasoning``/``answer``/``suggestion``;
            ``answer=None`` asks for no answer.
        use_json_object_format: request structured output: a ``json_schema`` response
            format naming exactly the trainable variables (backends that cannot enforce it
            get the schema in the prompt). False sends no response format.
        highlight_variables: end the prompt by asking for suggestions on the variables.
        max_value_chars: longest value shown for inputs, intermediates, outputs and past
            variables (longer ones are cut with a marker); -1 for no limit. The current
            variables are always shown in full.
        max_section_chars: longest #Code/#Documentation/#Inputs/#Others/#Outputs section
            (20,000; see :mod:`opto.optimizers.prompt_budget`); None for no limit.
        max_prompt_tokens: when set, shorten values and then drop the oldest memory until
            the prompt fits (counted by ``token_counter``, ≈4 characters per token by
            default); a prompt that still does not fit is sent with a warning.
        token_counter: counts the tokens of a text, for ``max_prompt_tokens``.
        forbidden_modules / forbidden_calls: asking for either runs trainable code restricted
            (RestrictedPython, ``opto-trace[sandbox]``) and rejects proposals importing or
            using them, e.g. ``{"os"}`` / ``{"open"}``; see docs/security.md.
        converters: ``{type: fn(old, new)}`` conversions for parameter types, tried before
            the built-in ones.
        reasoning_max_chars: the schema's ``maxLength`` for the reasoning and answer texts
            (at most ``max_tokens`` characters, about a quarter of the reply's budget), so
            that schema-enforcing backends (e.g. the embedded model) finish the JSON within
            ``max_tokens``; None for no limit.
        max_history: how many step records :attr:`steps` (and :attr:`log`) keep.
    """

    #: Section headers and reply keys before per-instance overrides (read-only mappings;
    #: ``prompt_symbols``/``json_keys`` make a copy per optimizer).
    default_prompt_symbols: Mapping[str, str] = DEFAULT_PROMPT_SYMBOLS
    default_json_keys: Mapping[str, str | None] = DEFAULT_JSON_KEYS

    #: The ``#Instruction`` when no objective is given ({...} are section headers).
    default_objective = (
        "Change the values of the variables in {variables} to improve the output "
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
        "- {variables}: the values you may change.\n"
        "- {constraints}: descriptions and constraints of the variables.\n"
        "- {inputs}: values you cannot change.\n"
        "- {others}: intermediate values of the run.\n"
        "- {outputs}: the results of the run.\n"
        "- {feedback}: feedback on the outputs.\n\n"
        "Values are listed one per line as (<data_type>) <name>=<value>; a (code) value "
        "is the source of a Python function."
    )

    final_prompt = "Your response:"
    highlight_prompt = "What are your suggestions on variables {names}?"
    memory_prompt = "Below are the variables and the feedback of earlier steps, oldest first."

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
        max_tokens: int = 4096,
        log: bool = True,
        prompt_symbols: Mapping[str, str] | None = None,
        json_keys: Mapping[str, str | None] | None = None,
        use_json_object_format: bool = True,
        highlight_variables: bool = False,
        max_value_chars: int = 2000,
        max_section_chars: int | None = prompt_budget.DEFAULT_MAX_SECTION_CHARS,
        max_prompt_tokens: int | None = None,
        token_counter: Callable[[str], int] | None = None,
        forbidden_modules: Collection[str] = (),
        forbidden_calls: Collection[str] = (),
        converters: Mapping[type, Converter] | None = None,
        reasoning_max_chars: int | None = 1000,
        max_history: int = 100,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            parameters, *args, propagator=propagator, max_history=max_history, **kwargs
        )
        if memory_size < 0:
            raise ValueError(f"memory_size must be >= 0, got {memory_size}.")
        if max_prompt_tokens is not None and max_prompt_tokens < 1:
            raise ValueError(f"max_prompt_tokens must be positive, got {max_prompt_tokens}.")
        if llm is not None and not callable(llm):
            raise TypeError(
                f"llm must be callable as llm(messages=..., **options), got {type(llm).__name__}."
            )
        self.ignore_extraction_error = ignore_extraction_error
        self.include_example = include_example
        self.max_tokens = max_tokens
        self.prompt_symbols = _merged(self.default_prompt_symbols, prompt_symbols, "prompt_symbols")
        self.json_keys = _merged(self.default_json_keys, json_keys, "json_keys")
        if not self.json_keys["reasoning"] or not self.json_keys["suggestion"]:
            raise ValueError("json_keys 'reasoning' and 'suggestion' must be non-empty names.")
        self.objective = (
            objective
            if objective is not None
            else self.default_objective.format(**self.prompt_symbols)
        )
        self.use_json_object_format = use_json_object_format
        self.highlight_variables = highlight_variables
        self.max_value_chars = max_value_chars
        self.max_section_chars = prompt_budget.check_max_section_chars(max_section_chars)
        self.max_prompt_tokens = max_prompt_tokens
        self.token_counter = token_counter or estimate_tokens
        self.forbidden_modules, self.forbidden_calls = restrict_parameters(
            self.parameters, forbidden_modules, forbidden_calls
        )
        self.converters = dict(converters or {})
        self.reasoning_max_chars = reasoning_max_chars
        self.memory_size = memory_size
        self.memory: deque[dict[str, Any]] = deque(maxlen=memory_size)
        self.log: list[dict[str, Any]] | None = [] if log else None
        self.summary_log: list[dict[str, Any]] | None = [] if log else None
        self.llm_calls = 0
        self.parse_failures = 0
        self.llm = llm  # None: LLM() on first use

    # --- what the LLM sees ------------------------------------------------------------

    def summarize(self) -> FunctionFeedback | None:
        """The feedback of the trainable parameters as a FunctionFeedback, with
        ``variables`` (this optimizer's trainable roots) and ``inputs`` (the other roots).

        None when no trainable parameter received feedback.

        Raises:
            FeedbackMismatchError: parameters received different feedback texts.
            TypeError: the propagator does not produce TraceGraphs.
        """
        total = self._aggregated_feedback()
        if total is None:
            return None
        if not isinstance(total, TraceGraph):
            raise TypeError(f"the propagator produced {type(total).__name__}, not a TraceGraph.")
        if not total.graph:
            return None
        summary = node_to_function_feedback(total)
        names = {p.py_name for p in self.trainable_parameters}
        summary.variables = {k: v for k, v in summary.roots.items() if k in names}
        summary.inputs = {k: v for k, v in summary.roots.items() if k not in names}
        return summary

    def problem_instance(
        self,
        summary: FunctionFeedback,
        mask: Collection[str] | None = None,
        max_value_chars: int | None = None,
    ) -> ProblemInstance:
        """The problem for ``summary``; sections named in ``mask`` (e.g. ``"#Code"``) are
        left empty. Values other than the variables are cut at ``max_value_chars``."""
        limit = self.max_value_chars if max_value_chars is None else max_value_chars
        masked = self._masked(mask)

        def node(_: str, name: str, value: Any, __: Any) -> str:
            return _value_line(name, value, limit)

        sections = {
            "instruction": self.objective,
            "variables": "\n".join(_value_line(k, v[0], -1) for k, v in summary.variables.items()),
            "constraints": "\n".join(
                f"({_type_name(name, value)}) {name}: {desc}"
                for name, (value, desc) in summary.variables.items()
                if desc is not None
            ),
            "feedback": str(summary.user_feedback),
            **prompt_budget.graph_sections(summary, node, self.max_section_chars),
        }
        return ProblemInstance(
            **{name: "" if name in masked else text for name, text in sections.items()}
        )

    def _masked(self, mask: Collection[str] | None) -> set[str]:
        if not mask:
            return set()
        result = set()
        for name, symbol in self.prompt_symbols.items():
            default = self.default_prompt_symbols.get(name)
            if symbol in mask or default in mask or name in mask:
                result.add(name)
        return result

    def output_format_prompt(self) -> str:
        """The part of the system prompt that asks for the JSON reply."""
        s = self.prompt_symbols
        reasoning, answer, suggestion = (
            self.json_keys["reasoning"],
            self.json_keys["answer"],
            self.json_keys["suggestion"],
        )
        answer_line = f'  "{answer}": <your answer>,\n' if answer else ""
        answer_rule = (
            f'Fill "{answer}" only when {s["instruction"]} asks a question.\n' if answer else ""
        )
        return (
            "Reply with one JSON object:\n"
            "{\n"
            f'  "{reasoning}": <your reasoning>,\n'
            f"{answer_line}"
            f'  "{suggestion}": {{<variable name>: <new value>, ...}}\n'
            "}\n"
            f'In "{reasoning}": say what {s["instruction"]} asks; explain what '
            f"{s['feedback']} means for the variables, using {s['code']}, "
            f"{s['documentation']}, {s['inputs']} and {s['others']}; then state the change "
            "and the result you expect.\n"
            f"{answer_rule}"
            f'In "{suggestion}" give new values for variables of {s["variables"]} only '
            f"(nothing else can change), each of its current type and respecting "
            f"{s['constraints']}. A (code) value must be a complete, valid Python function "
            "definition with the same name and parameters.\n"
            "If nothing needs to change, reply with just TERMINATE."
        )

    def system_prompt(self) -> str:
        """Representation prompt followed by the output-format prompt."""
        return (
            self.representation_prompt.format(**self.prompt_symbols)
            + "\n\n"
            + self.output_format_prompt()
        )

    def example_prompt(self) -> str:
        """A worked example (problem and a consistent, valid JSON reply)."""
        example = ProblemInstance(
            instruction=self.default_objective.format(**self.prompt_symbols),
            code="y = add(x=a, y=b)\nz = subtract(x=y, y=c)",
            documentation="[add] Returns x + y.\n[subtract] Returns x - y.",
            variables="(int) a=5",
            constraints="(int) a: a > 0",
            inputs="(int) b=1\n(int) c=5",
            others="(int) y=6",
            outputs="(int) z=1",
            feedback="z should be 10.",
        )
        reply: dict[str, Any] = {
            self.json_keys["reasoning"]: (
                "z = a + b - c = a - 4, and the feedback asks for z = 10, so a must be 14 "
                "(which satisfies a > 0)."
            ),
        }
        if self.json_keys["answer"]:
            reply[self.json_keys["answer"]] = ""
        reply[self.json_keys["suggestion"]] = {"a": 14}
        return (
            "Here is an example of a problem instance and a response:\n\n"
            f"{_FENCE_LINE}\n{example.render(self.prompt_symbols)}\n{_FENCE_LINE}\n\n"
            f"{json.dumps(reply, indent=2)}\n\n"
        )

    def _memory_text(self, entries: Sequence[Mapping[str, Any]], limit: int) -> str:
        if not entries:
            return ""
        blocks = [
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
        ]
        return self.memory_prompt + "\n" + "\n".join(blocks) + "\n\n"

    def _user_prompt(
        self,
        summary: FunctionFeedback,
        mask: Collection[str] | None,
        limit: int,
        memory: Sequence[Mapping[str, Any]],
    ) -> str:
        instance = self.problem_instance(summary, mask, limit)
        parts = [self.example_prompt()] if self.include_example else []
        parts.append(
            "Now you see problem instance:\n\n"
            f"{_FENCE_LINE}\n{instance.render(self.prompt_symbols)}\n{_FENCE_LINE}\n\n"
        )
        parts.append(self._memory_text(memory, limit))
        if self.highlight_variables:
            names = ", ".join(summary.variables)
            parts.append(self.highlight_prompt.format(names=names) + "\n\n")
        parts.append(self.final_prompt)
        return "".join(parts)

    def construct_prompt(
        self,
        summary: FunctionFeedback,
        mask: Collection[str] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> tuple[str, str]:
        """``(system_prompt, user_prompt)`` for ``summary``; pushes it to the memory.

        With ``max_prompt_tokens``, values are shortened and then the oldest memory entries
        dropped until the prompt fits.
        """
        system = self.system_prompt()
        limit = self.max_value_chars
        memory = list(self.memory)
        user = self._user_prompt(summary, mask, limit, memory)
        budget = self.max_prompt_tokens
        while budget is not None and self.token_counter(system) + self.token_counter(user) > budget:
            if limit < 0 or limit > _MIN_VALUE_CHARS:
                limit = 4000 if limit < 0 else max(_MIN_VALUE_CHARS, limit // 2)
            elif memory:
                memory.pop(0)
            else:
                logger.warning(
                    "The prompt (%d tokens) exceeds max_prompt_tokens=%d even with short "
                    "values and no memory; sending it anyway.",
                    self.token_counter(system) + self.token_counter(user),
                    budget,
                )
                break
            user = self._user_prompt(summary, mask, limit, memory)
        if self.memory_size:
            self.memory.append(
                {
                    "variables": {k: v[0] for k, v in summary.variables.items()},
                    "feedback": summary.user_feedback,
                }
            )
        return system, user

    def response_format(self, summary: FunctionFeedback) -> dict[str, Any] | None:
        """The ``json_schema`` response format naming exactly the trainable variables,
        non-code ones first (None when ``use_json_object_format`` is False)."""
        if not self.use_json_object_format:
            return None
        # Non-code values first: a reply cut off at max_tokens then loses the (long) code,
        # not the short values written after it.
        names = sorted(summary.variables, key=is_code_name)
        variables = {name: _json_type(summary.variables[name][0], name) for name in names}
        text: dict[str, Any] = {"type": "string"}
        if self.reasoning_max_chars is not None:
            text["maxLength"] = max(1, min(self.reasoning_max_chars, self.max_tokens))
        properties: dict[str, Any] = {self.json_keys["reasoning"]: text}
        if self.json_keys["answer"]:
            properties[self.json_keys["answer"]] = dict(text)
        properties[self.json_keys["suggestion"]] = {
            "type": "object",
            "properties": variables,
            "required": list(variables),
            "additionalProperties": False,
        }
        schema = {
            "type": "object",
            "properties": properties,
            "required": [self.json_keys["reasoning"], self.json_keys["suggestion"]],
            "additionalProperties": False,
        }
        return {"type": "json_schema", "json_schema": {"name": "suggestion", "schema": schema}}

    # --- talking to the LLM -----------------------------------------------------------

    def call_llm(
        self,
        system_prompt: str,
        user_prompt: str,
        verbose: bool | str = False,
        max_tokens: int | None = None,
        **options: Any,
    ) -> str:
        """Send the two prompts; return the reply text ("" when the reply has no text).

        ``options`` go to the LLM (e.g. ``response_format``, ``temperature``). Usage is
        added to the current step record. If the backend rejects the request as a bad
        request while a response format was sent, it is retried once without it.
        """
        from opto.utils.llm.errors import BadRequestError, ContextWindowExceededError

        messages = [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": user_prompt},
        ]
        if verbose and verbose != "output":
            logger.info("Prompt:\n%s\n\n%s", system_prompt, user_prompt)
        options["max_tokens"] = max_tokens if max_tokens is not None else self.max_tokens
        try:
            raw = self.llm(messages=messages, **options)
        except ContextWindowExceededError:
            raise
        except BadRequestError as error:
            if options.get("response_format") is None:
                raise
            logger.warning(
                "The LLM rejected the request (%s); retrying without response_format.", error
            )
            self._count_call(None)
            del options["response_format"]
            raw = self.llm(messages=messages, **options)
        response = response_from_openai(raw)
        self._count_call(response)
        text = response.content or ""
        if verbose:
            logger.info("LLM response:\n%s", text)
        return text

    def _count_call(self, response: Any) -> None:
        self.llm_calls += 1
        if self._active is not None:
            self._active.add_usage(None if response is None else response.usage)

    def parse_reply(self, reply: str) -> ParsedReply:
        """Parse a reply with this optimizer's JSON keys (SuggestionParseError if unusable)."""
        return parse_suggestion_reply(
            reply,
            reasoning_key=self.json_keys["reasoning"],
            answer_key=self.json_keys["answer"],
            suggestion_key=self.json_keys["suggestion"],
        )

    def extract_llm_suggestion(
        self,
        response: str,
        suggestion_tag: str | None = None,
        reasoning_tag: str | None = None,
        return_only_suggestion: bool = True,
        ignore_extraction_error: bool | None = None,
    ) -> dict[str, Any]:
        """The suggestion dict of a reply (reference API).

        With ``return_only_suggestion=False`` returns ``{"reasoning": ..., "variables": ...}``.
        An unusable reply gives ``{}`` (logged) or, when extraction errors are not ignored
        (the argument wins over the attribute), raises SuggestionParseError.
        """
        ignore = (
            self.ignore_extraction_error
            if ignore_extraction_error is None
            else bool(ignore_extraction_error)
        )
        try:
            parsed = parse_suggestion_reply(
                response,
                reasoning_key=reasoning_tag or self.json_keys["reasoning"],
                answer_key=self.json_keys["answer"],
                suggestion_key=suggestion_tag or self.json_keys["suggestion"],
            )
        except SuggestionParseError as error:
            logger.warning("Cannot extract a suggestion from the LLM reply: %s", error)
            if not ignore:
                raise
            parsed = ParsedReply(raw=str(response))
        if return_only_suggestion:
            return dict(parsed.suggestion)
        return {"reasoning": parsed.reasoning, "variables": dict(parsed.suggestion)}

    def construct_update_dict(self, suggestion: Mapping[str, Any]) -> dict[ParameterNode, Any]:
        """Convert a suggestion ``{name: value}`` into ``{ParameterNode: typed value}``.

        Keys match a parameter's ``py_name`` (or its ``name``, e.g. ``"x:0"`` for ``x0``).
        Unknown names, non-trainable parameters and values that fail conversion or the
        code checks are left out and recorded (with the reason) in the step record.
        """
        by_name: dict[str, ParameterNode] = {}
        for p in self.parameters:
            by_name.setdefault(p.name, p)
        for p in self.parameters:
            by_name[p.py_name] = p
        update: dict[ParameterNode, Any] = {}
        for key, raw in suggestion.items():
            p = by_name.get(key)
            if p is None:
                self._reject(key, "not a variable of this optimizer")
                continue
            if not p.trainable:
                self._reject(key, "the parameter is not trainable")
                continue
            try:
                if is_code_name(p.py_name):
                    value = convert_code(
                        p,
                        raw,
                        forbidden_modules=self.forbidden_modules,
                        forbidden_calls=self.forbidden_calls,
                    )
                else:
                    value = convert_value(p._data, raw, converters=self.converters)
            except ConversionError as error:
                logger.warning("Rejected the suggestion for %s: %s", p.py_name, error)
                self._reject(p.py_name, str(error))
                continue
            update[p] = value
        return update

    # --- the step ---------------------------------------------------------------------

    def _prepare_step(
        self, mask: Collection[str] | None
    ) -> tuple[FunctionFeedback, str, str, dict[str, Any]] | None:
        """The summary, system prompt, user prompt and LLM options of this step, with the
        prompts recorded on :attr:`current_step`.

        None (the step recorded as skipped) when no trainable parameter received feedback.
        """
        record = self.current_step
        summary = self.summarize()
        if summary is None or not summary.variables:
            record.skipped = "no trainable parameter received feedback; call backward() first"
            logger.warning("%s.step: %s.", type(self).__name__, record.skipped)
            return None
        system_prompt, user_prompt = self.construct_prompt(summary, mask=mask)
        record.system_prompt, record.user_prompt = system_prompt, user_prompt
        options: dict[str, Any] = {}
        response_format = self.response_format(summary)
        if response_format is not None:
            options["response_format"] = response_format
        return summary, system_prompt, user_prompt, options

    def _step(
        self,
        verbose: bool | str = False,
        mask: Collection[str] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> dict[ParameterNode, Any]:
        record = self.current_step
        prepared = self._prepare_step(mask)
        if prepared is None:
            return {}
        summary, system_prompt, user_prompt, options = prepared
        reply = self.call_llm(system_prompt, user_prompt, verbose=verbose, **options)
        record.raw_reply = reply
        if self.log is not None:
            self.log.append(
                {"system_prompt": system_prompt, "user_prompt": user_prompt, "response": reply}
            )
            self.summary_log.append(  # type: ignore[union-attr]
                {
                    "problem_instance": str(self.problem_instance(summary, mask)),
                    "user_feedback": jsonable(summary.user_feedback),
                }
            )
            drop_oldest(self.log, self.max_history)
            drop_oldest(self.summary_log, self.max_history)  # type: ignore[arg-type]
        try:
            parsed = self.parse_reply(reply)
        except SuggestionParseError as error:
            self.parse_failures += 1
            record.parse_error = str(error)
            logger.warning(
                "%s could not parse the LLM reply (%d failures so far): %s; reply: %.300r",
                type(self).__name__,
                self.parse_failures,
                error,
                reply,
            )
            if not self.ignore_extraction_error:
                raise
            return {}
        if parsed.terminate:
            record.terminated = True
            return {}
        record.reasoning, record.answer = parsed.reasoning, parsed.answer
        record.suggestion = dict(parsed.suggestion)
        update = self.construct_update_dict(parsed.suggestion)
        self._reject_cut_off(parsed.cut_off)
        return update

    def _reject_cut_off(self, cut_off: str | None) -> None:
        """Record the value a reply cut off (at ``max_tokens``) was writing as rejected
        (``cut_off`` as in :class:`ParsedReply`; None: the reply was complete)."""
        if cut_off is None:
            return
        name = cut_off or "<the value after the last complete one>"
        reason = (
            "the reply was cut off (max_tokens) while writing this value; only the "
            "completely written values were applied. Raise max_tokens."
        )
        logger.warning("%s: %s: %s", type(self).__name__, name, reason)
        self._reject(name, reason)

    # --- state ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Base state plus memory, logs and counters (all JSON-able)."""
        state = super().state_dict()
        state.update(
            memory=[jsonable(entry) for entry in self.memory],
            log=None if self.log is None else jsonable(self.log),
            summary_log=None if self.summary_log is None else jsonable(self.summary_log),
            llm_calls=self.llm_calls,
            parse_failures=self.parse_failures,
        )
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (the memory keeps at most ``memory_size``)."""
        super().load_state_dict(state)
        self.memory.clear()
        self.memory.extend(state.get("memory", ()))
        if self.log is not None and state.get("log") is not None:
            self.log[:] = state["log"]
        if self.summary_log is not None and state.get("summary_log") is not None:
            self.summary_log[:] = state["summary_log"]
        self.llm_calls = int(state.get("llm_calls", 0))
        self.parse_failures = int(state.get("parse_failures", 0))


OptoPrimeV1 = OptoPrime
"""The name trace-opt's experimental branch gives the JSON OptoPrime."""


def _merged(
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
