"""`CompactOptoPrime`: OptoPrime with a short prompt that small models can follow.

OptoPrime's prompt explains its nine sections in about 3,700 characters before the problem
itself; a model of a few hundred million parameters loses the task in it and mostly copies
the current values back. The compact prompt keeps only what such a model can use: the
feedback, each variable with its description and current value, and the outputs of the
run, in a few short lines. Everything else (the JSON reply and its schema, parsing,
conversion, code checks, step records) is OptoPrime's.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from opto.optimizers.optoprime import OptoPrime
from opto.optimizers.utils import jsonable, truncate_expression
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
    (``include_example`` has no effect). Accepts
    every OptoPrime option; ``objective`` replaces the closing request, and with
    ``memory_size`` the earlier values and their feedback are listed too.
    """

    default_objective = (
        "Write new values for these variables that fix every problem the feedback names. "
        "Do not copy the current values."
    )
    compact_system_prompt = (
        "You improve the variables of a program so that its output gets better feedback. "
        "Reply with one JSON object."
    )

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
        lines = ["Feedback:", str(summary.user_feedback).strip(), "", "Variables:"]
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
        outputs = list(summary.output.values())[:MAX_OUTPUTS]
        if outputs and "outputs" not in self._masked(mask):
            lines += ["", "Outputs of the run:"]
            lines += [f"- {truncate_expression(value, limit)}" for value, _ in outputs]
        if memory:
            lines += ["", "Earlier values and their feedback:"]
            for entry in memory:
                values = jsonable(entry["variables"])
                lines.append(f"- {values} -> {jsonable(entry['feedback'])}")
        lines += ["", self.objective]
        return "\n".join(lines)
