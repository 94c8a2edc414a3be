"""`CompactOptoPrime`: OptoPrime with a short prompt that small models can follow.

OptoPrime's prompt explains its nine sections in about 3,700 characters before the problem
itself; a model of a few hundred million parameters loses the task in it and mostly copies
the current values back. The compact prompt keeps only what such a model can use: the
feedback, each variable with its description and current value, and the outputs of the
run, in a few short lines. Everything else (the JSON reply and its schema, parsing,
conversion, code checks, step records) is OptoPrime's.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from opto.optimizers.optoprime import OptoPrime
from opto.optimizers.utils import jsonable, truncate_expression
from opto.trace.nodes import ParameterNode
from opto.trace.propagators import FunctionFeedback
from opto.trace.utils import is_code_name

__all__ = ["CompactOptoPrime"]

#: How many outputs of the run the compact prompt shows (each cut at ``max_value_chars``).
MAX_OUTPUTS = 3


class CompactOptoPrime(OptoPrime):
    """OptoPrime with a compact prompt for small models (e.g. the embedded SmolLM2-135M).

    The system prompt is two sentences; the user prompt lists the feedback, the variables
    (type, description and current value, in full; code parameters without their
    boilerplate description) and up to three outputs of the run, and asks
    for new values that fix what the feedback names. The run's code, documentation,
    inputs and intermediate values are not shown, and no worked example is added
    (``include_example`` has no effect). The reply is just ``{"suggestion": {...}}``. Accepts
    every OptoPrime option; ``objective`` replaces the closing request, and with
    ``memory_size`` the earlier values and their feedback are listed too.

    ``choices`` ({parameter: candidate strings}) turns writing into choosing, which small
    models do far better: the prompt lists the candidates and the reply schema only allows
    one of them (a JSON-schema ``enum``, enforced by backends that support schemas). The
    current value is left out of the candidates: a proposal is a change, and whether it is
    better is for the feedback and the search to judge.
    """

    default_objective = (
        "Write new values for these variables that fix every problem the feedback names. "
        "Do not copy the current values."
    )
    compact_system_prompt = (
        "You improve the variables of a program so that its output gets better feedback. "
        "Reply with one JSON object."
    )

    def __init__(
        self,
        parameters: Iterable[ParameterNode],
        llm: Any = None,
        *args: Any,
        choices: Mapping[ParameterNode, Sequence[str]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(parameters, llm, *args, **kwargs)
        self.choices: dict[str, list[str]] = {}
        for parameter, options in (choices or {}).items():
            if not any(parameter is p for p in self.parameters):
                raise ValueError(f"choices names {parameter.py_name}, not a parameter here.")
            values = [str(option) for option in options]
            if not values:
                raise ValueError(f"choices for {parameter.py_name} is empty: give candidates.")
            self.choices[parameter.py_name] = values

    def response_format(self, summary: FunctionFeedback) -> dict[str, Any] | None:
        """OptoPrime's schema without the reasoning (and answer): the reply is just the
        suggestion, so a small model spends its tokens on the new values instead of
        writing a reasoning that it then copies into them."""
        response_format = super().response_format(summary)
        if response_format is None:
            return None
        schema = response_format["json_schema"]["schema"]
        key = self.json_keys["suggestion"]
        schema["properties"] = {key: schema["properties"][key]}
        schema["required"] = [key]
        variables = schema["properties"][key]["properties"]
        for name in variables:
            options = self._options(summary, name)
            if options:
                variables[name] = {"type": "string", "enum": options}
        return response_format

    def _options(self, summary: FunctionFeedback, name: str) -> list[str]:
        """The candidates for variable `name` other than its current value (a proposal
        is a change; keeping the value is the search's call), or [] without choices."""
        current = str(summary.variables[name][0])
        options = [o for o in self.choices.get(name, ()) if o != current]
        return options or list(self.choices.get(name, ()))

    def system_prompt(self) -> str:
        """The two-sentence system prompt (no section legend, no format rules)."""
        return self.compact_system_prompt

    def _user_prompt(
        self,
        summary: FunctionFeedback,
        mask: Collection[str] | None,
        limit: int,
        memory: Sequence[Mapping[str, Any]],
    ) -> str:
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
                if self._options(summary, name):
                    lines.append("Choose the new value from:")
                    lines += [f"- {option}" for option in self._options(summary, name)]
        outputs = list(summary.output.values())[:MAX_OUTPUTS]
        masked = set(mask or ())
        if outputs and not masked & {"outputs", "#Outputs", self.prompt_symbols.get("outputs")}:
            lines += ["", "Outputs of the run:"]
            lines += [f"- {truncate_expression(value, limit)}" for value, _ in outputs]
        if memory:
            lines += ["", "Earlier values and their feedback:"]
            for entry in memory:
                values = jsonable(entry["variables"])
                lines.append(f"- {values} -> {jsonable(entry['feedback'])}")
        # The feedback last, right before the request.
        lines += ["", "Feedback:", str(summary.user_feedback).strip()]
        lines += ["", self.objective]
        return "\n".join(lines)
