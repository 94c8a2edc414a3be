"""`CompactOptoPrime`: OptoPrime with a short prompt that small models can follow.

OptoPrime's prompt explains its nine sections in about 3,700 characters before the problem
itself; a model of a few hundred million parameters loses the task in it and mostly copies
the current values back. The compact prompt keeps only what such a model can use: the
feedback, each variable with its description and current value, and the outputs of the
run, in a few short lines. Everything else (the JSON reply and its schema, parsing,
conversion, code checks, step records) is OptoPrime's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opto.optimizers.optoprime import OptoPrime
from opto.optimizers.prompts import ProblemPrompt, PromptHost, PromptRequest
from opto.optimizers.reply_formats import JSONReplyFormat
from opto.optimizers.utils import jsonable, truncate_expression
from opto.trace.nodes import ParameterNode
from opto.trace.utils import is_code_name

__all__ = ["CompactOptoPrime", "CompactPrompt", "CompactReplyFormat"]

#: How many outputs of the run the compact prompt shows (each cut at ``max_value_chars``).
MAX_OUTPUTS = 3

COMPACT_OBJECTIVE = (
    "Write new values for these variables that fix every problem the feedback names. "
    "Do not copy the current values."
)
COMPACT_SYSTEM_PROMPT = (
    "You improve the variables of a program so that its output gets better feedback. "
    "Reply with one JSON object."
)


def _options(choices: Mapping[str, Sequence[str]], name: str, current: Any) -> list[str]:
    """The candidates for variable ``name`` other than its ``current`` value (a proposal
    is a change; keeping the value is the search's call), or [] without choices."""
    options = [o for o in choices.get(name, ()) if o != str(current)]
    return options or list(choices.get(name, ()))


class CompactReplyFormat(JSONReplyFormat):
    """The JSON reply without reasoning (and answer): just ``{"suggestion": {...}}``, so a
    small model spends its tokens on the new values instead of writing a reasoning that it
    then copies into them. A variable with ``choices`` (``{variable name: candidate
    strings}``, read at each use) may only take one of them (a JSON-schema ``enum``)."""

    suggestion_only = True

    def __init__(
        self, keys: Mapping[str, str | None], choices: Mapping[str, Sequence[str]]
    ) -> None:
        super().__init__(keys)
        self.choices = choices

    def value_schema(self, name: str, value: Any, code: bool) -> dict[str, Any]:
        """One of the ``choices`` for ``name`` (an ``enum``) when it has some, else the
        JSON reply's schema of the value."""
        options = _options(self.choices, name, value)
        if options:
            return {"type": "string", "enum": options}
        return super().value_schema(name, value, code)


class CompactPrompt(ProblemPrompt):
    """The compact prompt: a two-sentence system prompt; the variables (type,
    description, current value, and the ``choices`` to pick from), up to three outputs of
    the run (unless ``#Outputs`` is masked), the remembered steps, the feedback and the
    objective. Memory is kept as OptoPrime keeps it."""

    default_objective = COMPACT_OBJECTIVE

    def __init__(
        self,
        choices: Mapping[str, Sequence[str]],
        system_prompt: str = COMPACT_SYSTEM_PROMPT,
    ) -> None:
        self.choices = choices
        self.text = system_prompt

    def system_prompt(self, optimizer: PromptHost) -> str:
        """The two-sentence system prompt (no section legend, no format rules)."""
        return self.text

    def user_prompt(self, request: PromptRequest) -> str:
        """Variables, outputs, memory, then the feedback right before the request."""
        optimizer, summary = request.optimizer, request.summary
        lines = ["Variables:"]
        # Non-code values first, as in the reply's schema; code on lines of its own.
        for name in sorted(summary.variables, key=is_code_name):
            value, description = summary.variables[name]
            if is_code_name(name):
                lines.append(f"{name} (a Python function). Current value:")
                lines.append(str(value).rstrip())
            else:
                about = f": {description}" if description else ""
                lines.append(f"{name} ({type(value).__name__}){about}")
                lines.append(f"Current value: {value}")
                options = _options(self.choices, name, value)
                if options:
                    lines.append("Choose the new value from:")
                    lines += [f"- {option}" for option in options]
        outputs = list(summary.output.values())[:MAX_OUTPUTS]
        if outputs and "outputs" not in optimizer.problem_view.masked(request.mask):
            lines += ["", "Outputs of the run:"]
            lines += [f"- {truncate_expression(value, request.limit)}" for value, _ in outputs]
        if request.memory:
            lines += ["", "Earlier values and their feedback:"]
            for entry in request.memory:
                values = jsonable(entry["variables"])
                lines.append(f"- {values} -> {jsonable(entry['feedback'])}")
        # The feedback last, right before the request.
        lines += ["", "Feedback:", str(summary.user_feedback).strip()]
        lines += ["", optimizer.objective]
        return "\n".join(lines)


class CompactOptoPrime(OptoPrime):
    """OptoPrime with a compact prompt for small models (e.g. the embedded SmolLM2-135M).

    OptoPrime configured with a :class:`CompactPrompt` and a :class:`CompactReplyFormat`
    (unless ``reply_format`` is given). The system prompt is two sentences; the user
    prompt lists the feedback, the variables (type, description and current value, in
    full; code parameters without their boilerplate description) and up to three outputs
    of the run, and asks for new values that fix what the feedback names. The run's code,
    documentation, inputs and intermediate values are not shown, and no worked example is
    added (``include_example`` has no effect). The reply is just ``{"suggestion": {...}}``.
    Accepts every OptoPrime option; ``objective`` replaces the closing request, and with
    ``memory_size`` the earlier values and their feedback are listed too.

    ``choices`` ({parameter: candidate strings}) turns writing into choosing, which small
    models do far better: the prompt lists the candidates and the reply schema only allows
    one of them (a JSON-schema ``enum``, enforced by backends that support schemas). The
    current value is left out of the candidates: a proposal is a change, and whether it is
    better is for the feedback and the search to judge.
    """

    default_objective = COMPACT_OBJECTIVE
    compact_system_prompt = COMPACT_SYSTEM_PROMPT

    def __init__(
        self,
        parameters: Iterable[ParameterNode],
        llm: Any = None,
        *args: Any,
        choices: Mapping[ParameterNode, Sequence[str]] | None = None,
        **kwargs: Any,
    ) -> None:
        # One dict for the prompt and the reply format, filled once the parameters are known.
        named: dict[str, list[str]] = {}
        kwargs.setdefault("prompt_builder", CompactPrompt(named, self.compact_system_prompt))
        given_format = kwargs.get("reply_format")
        super().__init__(parameters, llm, *args, **kwargs)
        for parameter, options in (choices or {}).items():
            if not any(parameter is p for p in self.parameters):
                raise ValueError(f"choices names {parameter.py_name}, not a parameter here.")
            values = [str(option) for option in options]
            if not values:
                raise ValueError(f"choices for {parameter.py_name} is empty: give candidates.")
            named[parameter.py_name] = values
        #: ``{variable name: candidate strings}``, shown by the prompt and the schema.
        self.choices = named
        if given_format is None:
            self.reply_format = CompactReplyFormat(self.json_keys, named)
