"""OptoPrime: the LLM reads the trace of a run and its feedback, and rewrites the variables.

Each step sums the feedback the trainable parameters received into one TraceGraph, shows
it to the LLM as a small program (``#Code``, ``#Variables``, ``#Feedback``…), asks for a
reply in its reply format (by default JSON ``{reasoning, answer, suggestion: {variable:
value}}`` whose schema names exactly the trainable variables), parses the reply tolerantly
and converts each suggested value to its parameter's type. What happened is kept in the
step record (``optimizer.last_step``).

The optimizer is a configuration of pieces, each in its own module: the problem's
sections in :mod:`~opto.optimizers.problem`, the prompt (``prompt_builder``) in
:mod:`~opto.optimizers.prompts`, size limits in :mod:`~opto.optimizers.prompt_budget`,
the reply format (prompt section, schema, parser) in :mod:`~opto.optimizers.reply_formats`,
how replies are obtained (``proposer``) in :mod:`~opto.optimizers.proposals`, requests in
:mod:`~opto.optimizers.llm_calls`, typed conversion in :mod:`~opto.optimizers.conversion`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from opto.optimizers import prompt_budget
from opto.optimizers.code_proposals import restrict_parameters
from opto.optimizers.conversion import ConversionError, Converter, convert_suggestion
from opto.optimizers.llm_calls import chat_messages, check_llm, send
from opto.optimizers.optimizer import Optimizer
from opto.optimizers.parsing import ParsedReply
from opto.optimizers.problem import (
    DEFAULT_PROMPT_SYMBOLS,
    FENCE_LINE,
    LineProblemView,
    ProblemInstance,
    ProblemView,
    merged_overrides,
    trace_representation,
)
from opto.optimizers.prompts import ProblemPrompt, PromptBuilder
from opto.optimizers.proposals import ProposalStrategy, SingleReply, StepRequest
from opto.optimizers.reply_formats import JSONReplyFormat, ReplyFormat, ReplyGuide
from opto.optimizers.utils import drop_oldest, estimate_tokens, jsonable
from opto.trace.nodes import ParameterNode
from opto.trace.propagators import (
    AbstractPropagator,
    FunctionFeedback,
    TraceGraph,
    node_to_function_feedback,
)
from opto.trace.utils import is_code_name

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

#: Keys of the JSON reply; ``json_keys`` overrides them (``answer=None`` drops the answer).
DEFAULT_JSON_KEYS: Mapping[str, str | None] = MappingProxyType(
    {"reasoning": "reasoning", "answer": "answer", "suggestion": "suggestion"}
)


class OptoPrime(Optimizer):
    """The OptoPrime optimizer: a trace-shaped problem, JSON replies.

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
        reply_format: how the LLM replies (prompt section, schema, parser); a
            :class:`~opto.optimizers.reply_formats.JSONReplyFormat` over ``json_keys`` when
            None, e.g. ``XMLReplyFormat(OptimizerPromptSymbolSet())`` for XML-style replies.
        prompt_builder: how the prompt is built (:mod:`~opto.optimizers.prompts`);
            :class:`~opto.optimizers.prompts.ProblemPrompt` when None.
        proposer: how the reply to apply is obtained (:mod:`~opto.optimizers.proposals`);
            one request (:class:`~opto.optimizers.proposals.SingleReply`) when None, e.g.
            :class:`~opto.optimizers.candidates.CandidateSearch` for several candidates.

    ``step()`` also takes the keyword arguments the prompt builder and the proposer name
    in their ``step_options`` (e.g. OPRO's ``score``).
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

    representation_prompt = trace_representation(
        variables="the values you may change.",
        extra="- {constraints}: descriptions and constraints of the variables.\n",
        inputs="values you cannot change.",
        values="Values are listed one per line as (<data_type>) <name>=<value>; a (code) "
        "value is the source of a Python function.",
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
        reply_format: ReplyFormat | None = None,
        prompt_builder: PromptBuilder | None = None,
        proposer: ProposalStrategy | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            parameters, *args, propagator=propagator, max_history=max_history, **kwargs
        )
        if memory_size < 0:
            raise ValueError(f"memory_size must be >= 0, got {memory_size}.")
        if max_prompt_tokens is not None and max_prompt_tokens < 1:
            raise ValueError(f"max_prompt_tokens must be positive, got {max_prompt_tokens}.")
        check_llm(llm)
        for name, given, kind, where in (
            ("reply_format", reply_format, ReplyFormat, "reply_formats"),
            ("prompt_builder", prompt_builder, PromptBuilder, "prompts"),
            ("proposer", proposer, ProposalStrategy, "proposals"),
        ):
            if given is not None and not isinstance(given, kind):
                raise TypeError(
                    f"{name} must be a {kind.__name__} (opto.optimizers.{where}), got "
                    f"{type(given).__name__}."
                )
        #: How the prompt is built, and how the reply to apply is obtained.
        self.prompt_builder: PromptBuilder = prompt_builder or ProblemPrompt()
        self.proposer: ProposalStrategy = proposer or SingleReply()
        self.ignore_extraction_error = ignore_extraction_error
        self.include_example = include_example
        self.max_tokens = max_tokens
        self.prompt_symbols = merged_overrides(
            self.default_prompt_symbols, prompt_symbols, "prompt_symbols"
        )
        self.json_keys = merged_overrides(self.default_json_keys, json_keys, "json_keys")
        if not self.json_keys["reasoning"] or not self.json_keys["suggestion"]:
            raise ValueError("json_keys 'reasoning' and 'suggestion' must be non-empty names.")
        self.reply_format = reply_format or JSONReplyFormat(self.json_keys)
        #: How the problem is shown (sections, values, example, memory).
        self.problem_view: ProblemView = LineProblemView(
            self.prompt_symbols, self.default_prompt_symbols
        )
        default = self.prompt_builder.default_objective or self.default_objective
        self.objective = (
            objective if objective is not None else default.format(**self.prompt_symbols)
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
        """The problem for ``summary`` in the :attr:`problem_view`; sections named in
        ``mask`` (e.g. ``"#Code"``) are left empty. Values other than the variables are cut
        at ``max_value_chars``."""
        limit = self.max_value_chars if max_value_chars is None else max_value_chars
        view = self.problem_view
        return view.instance(
            summary, self.objective, limit, self.max_section_chars, view.masked(mask)
        )

    def reply_guide(self) -> ReplyGuide:
        """The wording of the reply-format section for this optimizer's task (the prompt
        builder's)."""
        return self.prompt_builder.reply_guide(self.problem_view)

    def output_format_prompt(self) -> str:
        """The part of the system prompt that asks for the reply (the reply format's)."""
        return self.reply_format.prompt_section(self.reply_guide())

    def system_prompt(self) -> str:
        """The prompt builder's system prompt: by default the representation prompt
        followed by the output-format prompt."""
        return self.prompt_builder.system_prompt(self)

    def example_problem(self) -> ProblemInstance:
        """The problem of the worked example (its reply suggests ``a = 14``)."""
        return self.problem_view.example(self.default_objective.format(**self.problem_view.names))

    def example_prompt(self) -> str:
        """A worked example: a small problem and a consistent reply in the reply format."""
        reply = self.reply_format.example_reply(
            "z = a + b - c = a - 4, and the feedback asks for z = 10, so a must be 14 "
            "(which satisfies a > 0).",
            {"a": 14},
        )
        return (
            "Here is an example of a problem instance and a response:\n\n"
            f"{FENCE_LINE}\n{self.example_problem().render(self.section_titles)}\n"
            f"{FENCE_LINE}\n\n{reply}\n\n"
        )

    @property
    def section_titles(self) -> Mapping[str, str]:
        """The header of each problem section as rendered."""
        return self.problem_view.titles

    def construct_prompt(
        self,
        summary: FunctionFeedback,
        mask: Collection[str] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> tuple[str, str]:
        """``(system_prompt, user_prompt)`` for ``summary`` from the prompt builder, which
        then remembers the step (OptoPrime: pushes it to the memory). ``kwargs`` named in
        the builder's ``step_options`` reach it (e.g. OPRO's ``score``).

        With ``max_prompt_tokens``, values are shortened and then the oldest memory entries
        dropped until the prompt fits.
        """
        builder = self.prompt_builder
        options = {k: v for k, v in kwargs.items() if k in builder.step_options}
        return builder.build(self, summary, mask, **options)

    def response_format(self, summary: FunctionFeedback) -> dict[str, Any] | None:
        """The reply format's structured-output option for the trainable variables of
        ``summary`` (None when ``use_json_object_format`` is False or it has none)."""
        if not self.use_json_object_format:
            return None
        variables = {name: (v[0], is_code_name(name)) for name, v in summary.variables.items()}
        return self.reply_format.response_format(
            variables, self.max_tokens, self.reasoning_max_chars
        )

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
        if verbose and verbose != "output":
            logger.info("Prompt:\n%s\n\n%s", system_prompt, user_prompt)
        options["max_tokens"] = max_tokens if max_tokens is not None else self.max_tokens
        messages = chat_messages(system_prompt, user_prompt)
        response = send(self.llm, messages, options, self._count_call)
        text = response.content or ""
        if verbose:
            logger.info("LLM response:\n%s", text)
        return text

    def parse_reply(self, reply: str) -> ParsedReply:
        """Parse a reply in the reply format (SuggestionParseError if unusable)."""
        return self.reply_format.parse(reply)

    def extract_llm_suggestion(
        self,
        response: str,
        suggestion_tag: str | None = None,
        reasoning_tag: str | None = None,
        return_only_suggestion: bool = True,
        ignore_extraction_error: bool | None = None,
    ) -> dict[str, Any]:
        """The suggestion dict of a reply.

        With ``return_only_suggestion=False`` returns ``{"reasoning": ..., "variables": ...}``.
        The tags replace the format's reasoning/suggestion names. An unusable reply gives
        ``{}`` (logged) or, when extraction errors are not ignored (the argument wins over
        the attribute), raises SuggestionParseError.
        """
        ignore = (
            self.ignore_extraction_error
            if ignore_extraction_error is None
            else bool(ignore_extraction_error)
        )
        return self.reply_format.extract(
            response,
            ignore_errors=ignore,
            suggestion_tag=suggestion_tag,
            reasoning_tag=reasoning_tag,
            return_only_suggestion=return_only_suggestion,
        )

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
                value = convert_suggestion(
                    p,
                    raw,
                    forbidden_modules=self.forbidden_modules,
                    forbidden_calls=self.forbidden_calls,
                    converters=self.converters,
                )
            except ConversionError as error:
                logger.warning("Rejected the suggestion for %s: %s", p.py_name, error)
                self._reject(p.py_name, str(error))
                continue
            update[p] = value
        return update

    # --- the step ---------------------------------------------------------------------

    def _prepare_step(
        self, mask: Collection[str] | None, verbose: bool | str, options: Mapping[str, Any]
    ) -> StepRequest | None:
        """The request of this step (summary, prompts, LLM options), with the prompts
        recorded on :attr:`current_step`; ``options`` are ``step()``'s keyword arguments.

        None (the step recorded as skipped) when no trainable parameter received feedback.
        """
        record = self.current_step
        summary = self.summarize()
        if summary is None or not summary.variables:
            record.skipped = "no trainable parameter received feedback; call backward() first"
            logger.warning("%s.step: %s.", type(self).__name__, record.skipped)
            return None
        system_prompt, user_prompt = self.construct_prompt(summary, mask, **options)
        record.system_prompt, record.user_prompt = system_prompt, user_prompt
        response_format = self.response_format(summary)
        return StepRequest(
            summary=summary,
            mask=mask,
            system=system_prompt,
            user=user_prompt,
            options={} if response_format is None else {"response_format": response_format},
            verbose=verbose,
        )

    def _step(
        self,
        verbose: bool | str = False,
        mask: Collection[str] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> dict[ParameterNode, Any]:
        request = self._prepare_step(mask, verbose, kwargs)
        if request is None:
            return {}
        proposer = self.proposer
        options = {k: v for k, v in kwargs.items() if k in proposer.step_options}
        parsed = proposer.propose(self, request, **options)
        if parsed is None:
            return {}
        record = self.current_step
        record.reasoning, record.answer = parsed.reasoning, parsed.answer
        record.suggestion = dict(parsed.suggestion)
        update = self.construct_update_dict(parsed.suggestion)
        self._reject_cut_off(parsed.cut_off)
        return update

    def log_exchange(self, request: StepRequest, response: str | None, **extra: Any) -> None:
        """Append the prompts and the reply of a step to :attr:`log` (with ``extra``
        fields) and its problem and feedback to :attr:`summary_log`, when logging."""
        if self.log is None:
            return
        entry = {"system_prompt": request.system, "user_prompt": request.user}
        self.log.append({**entry, "response": response, **extra})
        self.summary_log.append(  # type: ignore[union-attr]
            {
                "problem_instance": str(self.problem_instance(request.summary, request.mask)),
                "user_feedback": jsonable(request.summary.user_feedback),
            }
        )
        drop_oldest(self.log, self.max_history)
        drop_oldest(self.summary_log, self.max_history)  # type: ignore[arg-type]

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
            parse_failures=self.parse_failures,
        )
        state.update(self.prompt_builder.state_dict())
        state.update(self.proposer.state_dict())
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
        self.parse_failures = int(state.get("parse_failures", 0))
        self.prompt_builder.load_state_dict(state)
        self.proposer.load_state_dict(state)


OptoPrimeV1 = OptoPrime
"""The name trace-opt's experimental branch gives the JSON OptoPrime."""
