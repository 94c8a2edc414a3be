"""OPRO and OPROv2: optimization by prompting over the history of (solution, score) pairs.

Every step adds the current values of the variables, the feedback and its score to a
history; the LLM sees the earlier solutions sorted by score (best last, as in the OPRO
paper) and proposes a new solution that should score higher. Scores come from
``step(score=…)`` or are read from the feedback text (``"0.8"``, ``"score: 0.8"``); without
any score the feedback text alone guides the search. ``OPRO`` asks for OptoPrime's JSON
suggestion, ``OPROv2`` for OptoPrimeV2's XML-style reply; both keep OptoPrime's typed
conversion and code checks. The meta-prompt and the history are an :class:`OPROPrompt`,
the prompt builder both configure (any OptoPrime takes it as ``prompt_builder=``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, ClassVar

import attrs
from opto.optimizers.buffers import FIFOBuffer
from opto.optimizers.optoprime import OptoPrime
from opto.optimizers.optoprime_v2 import OptimizerPromptSymbolSet, OptoPrimeV2
from opto.optimizers.problem import ProblemView
from opto.optimizers.prompts import PromptBuilder, PromptHost, PromptRequest
from opto.optimizers.reply_formats import ReplyGuide
from opto.optimizers.utils import Delegated, jsonable, truncate_expression
from opto.trace.nodes import ParameterNode
from opto.trace.propagators import FunctionFeedback
from opto.trace.utils import is_code_name

__all__ = ["OPRO", "OPROPrompt", "OPROPromptSymbolSet", "OPROv2", "score_from_feedback"]

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_SCORE = re.compile(
    rf"\b(?:score|reward|accuracy|fitness)\b\s*(?:is|was|=|:)?\s*({_NUMBER})", re.IGNORECASE
)


def score_from_feedback(feedback: Any) -> float | None:
    """A numeric score read from feedback: a number, a numeric text (``"0.8"``), or a
    text naming it (``"score: 0.8"``, ``"reward = 3"``); None when there is none."""
    if isinstance(feedback, bool):
        return None
    if isinstance(feedback, (int, float)):
        return float(feedback) if math.isfinite(feedback) else None
    if not isinstance(feedback, str):
        return None
    text = feedback.strip()
    try:
        value = float(text)
    except ValueError:
        match = _SCORE.search(text)
        if match is None:
            return None
        value = float(match.group(1))
    return value if math.isfinite(value) else None


OPRO_OBJECTIVE = "Come up with a new solution that scores higher than all earlier ones."

OPRO_REPRESENTATION = (
    "You are an optimizer. You see solutions tried earlier, each with the feedback it "
    "received and, when known, its score, sorted from the worst to the best. Propose "
    "a new solution that differs from all of them and scores better.\n\n"
    "{variables} lists the variables a solution sets, with their types and "
    "descriptions. A (code) value is the source of a Python function."
)


class OPROPrompt(PromptBuilder):
    """OPRO's meta-prompt over a scored history of solutions.

    Each step first records the current solution (the variables' values), its feedback
    and its score (``step(score=…)``, else ``score_extractor(feedback)``); the prompt then
    shows the variables and the shown history, best last, and asks for a better solution.
    A ``mask`` naming ``#Instruction``, ``#Variables`` or ``#Feedback`` leaves out the
    objective, the list of variables or the solutions' feedback (the meta-prompt has no
    other sections). It keeps no memory of its own (the history is its memory).

    Args:
        history_size: how many (solution, feedback, score) entries are kept (None: all).
        max_num_solutions: how many past solutions the prompt shows: the best-scored ones
            (and the most recent unscored ones), sorted with the best last.
        maximize: whether a higher score is better.
        score_extractor: ``fn(feedback) -> float | None`` used when ``step`` gets no
            score; :func:`score_from_feedback` by default.
    """

    step_options: ClassVar[frozenset[str]] = frozenset({"score"})
    default_objective = OPRO_OBJECTIVE
    representation = OPRO_REPRESENTATION

    def __init__(
        self,
        history_size: int | None = None,
        max_num_solutions: int = 20,
        maximize: bool = True,
        score_extractor: Callable[[Any], float | None] | None = None,
    ) -> None:
        if max_num_solutions < 1:
            raise ValueError(f"max_num_solutions must be at least 1, got {max_num_solutions}.")
        self.history: FIFOBuffer[dict[str, Any]] = FIFOBuffer(history_size)
        self.max_num_solutions = max_num_solutions
        self.maximize = maximize
        self.score_extractor = score_extractor or score_from_feedback

    def system_prompt(self, optimizer: PromptHost) -> str:
        """OPRO's description of the task followed by the reply-format section."""
        representation = optimizer.problem_view.representation(self.representation)
        return representation + "\n\n" + optimizer.output_format_prompt()

    def reply_guide(self, view: ProblemView) -> ReplyGuide:
        """The wording of the reply section: a better-scoring solution, no answer."""
        return attrs.evolve(
            super().reply_guide(view),
            reasoning_hint="why the new solution should score better",
            reasoning_rule=None,
            question=None,
            constraints=None,
            terminate_when="no solution can do better",
            skeleton_variables={"variable_name": "new value"},
        )

    def build(
        self,
        optimizer: PromptHost,
        summary: FunctionFeedback,
        mask: Collection[str] | None = None,
        score: float | None = None,
        **step_options: Any,
    ) -> tuple[str, str]:
        """Record the current solution with its score (``score``, else read from the
        feedback) in the history, then build the ``(system, user)`` meta-prompt, its values
        shortened to fit ``max_prompt_tokens`` when set."""
        if score is None:
            score = self.score_extractor(summary.user_feedback)
        self.history.add(
            {
                # a JSON-able snapshot: later in-place changes of a value do not alter it
                "variables": {
                    name: jsonable(value) for name, (value, _) in summary.variables.items()
                },
                "feedback": summary.user_feedback,
                "score": None if score is None else float(score),
            }
        )
        return super().build(optimizer, summary, mask)

    def shown_memory(self, optimizer: PromptHost) -> list[Mapping[str, Any]]:
        """None: the meta-prompt shows the history instead."""
        return []

    def remember(self, optimizer: PromptHost, summary: FunctionFeedback) -> None:
        """Nothing: :meth:`build` already recorded the step in the history."""

    def user_prompt(self, request: PromptRequest) -> str:
        """The meta-prompt (:meth:`meta_prompt`)."""
        return self.meta_prompt(request.optimizer, request.summary, request.limit, request.mask)

    def _shown_history(self) -> list[tuple[bool, dict[str, Any]]]:
        """``(is_current, entry)`` to show: unscored first (chronological), then scored
        from worst to best; at most ``max_num_solutions`` plus the current one."""
        entries = self.history.buffer
        current = entries[-1] if entries else None
        earlier = entries[:-1]
        scored = [e for e in earlier if e["score"] is not None]
        unscored = [e for e in earlier if e["score"] is None]
        scored.sort(key=lambda e: e["score"], reverse=not self.maximize)
        scored = scored[-self.max_num_solutions :]
        room = self.max_num_solutions - len(scored)
        unscored = unscored[-room:] if room > 0 else []
        shown = [(False, e) for e in unscored + scored]
        if current is not None:
            shown.append((True, current))
        return shown

    @staticmethod
    def _solution_text(entry: Mapping[str, Any], limit: int, feedback: bool = True) -> str:
        values = {
            name: truncate_expression(value, limit) if isinstance(value, str) else value
            for name, value in entry["variables"].items()
        }
        lines = [json.dumps(values, indent=2, ensure_ascii=False)]
        if entry["score"] is not None:
            lines.append(f"score: {entry['score']:g}")
        if feedback and entry["feedback"] not in (None, ""):
            lines.append(f"feedback: {entry['feedback']}")
        return "\n".join(lines)

    def meta_prompt(
        self,
        optimizer: PromptHost,
        summary: FunctionFeedback,
        limit: int,
        mask: Collection[str] | None = None,
    ) -> str:
        """The user prompt: the objective and the variables, then the shown history
        (values cut at ``limit`` characters), and the request for a better solution;
        without the parts ``mask`` names."""
        s = optimizer.prompt_symbols
        masked = optimizer.problem_view.masked(mask)
        variables = "\n".join(
            f"({'code' if is_code_name(name) else type(value).__name__}) {name}"
            + (f": {desc}" if desc else "")
            for name, (value, desc) in summary.variables.items()
        )
        direction = "higher" if self.maximize else "lower"
        blocks = []
        for is_current, entry in self._shown_history():
            title = "Current solution" if is_current else "Solution"
            text = self._solution_text(entry, limit, "feedback" not in masked)
            blocks.append(f"{title}:\n{text}")
        names = ", ".join(summary.variables)
        parts = {
            "instruction": f"{s['instruction']}\n{optimizer.objective}\n\n",
            "variables": f"{s['variables']}\n{variables}\n\n",
        }
        return (
            "".join(text for key, text in parts.items() if key not in masked)
            + f"Below are earlier solutions from the worst to the best ({direction} scores are "
            "better); the current solution comes last.\n\n"
            + "\n\n".join(blocks)
            + f"\n\nGive a new solution for {names} that differs from all solutions above and "
            f"has a {direction} score than any of them.\n\n{optimizer.final_prompt}"
        )

    def state_dict(self) -> dict[str, Any]:
        """The (solution, feedback, score) history."""
        return {"history": jsonable(self.history.buffer)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the history."""
        self.history.clear()
        self.history.extend(state.get("history") or ())


@Delegated.many("prompt_builder", "history", "max_num_solutions", "maximize", "score_extractor")
class _OPROOptions:
    """OPRO's options for an OptoPrime-family optimizer: an :class:`OPROPrompt` as its
    prompt builder and a reply without an answer. The history and its settings are the
    builder's, reachable under their names on the optimizer."""

    def __init__(
        self,
        parameters: Iterable[ParameterNode],
        llm: Any = None,
        *args: Any,
        history_size: int | None = None,
        max_num_solutions: int = 20,
        maximize: bool = True,
        score_extractor: Callable[[Any], float | None] | None = None,
        json_keys: Mapping[str, str | None] | None = None,
        **kwargs: Any,
    ) -> None:
        builder = OPROPrompt(history_size, max_num_solutions, maximize, score_extractor)
        super().__init__(  # type: ignore[call-arg]
            parameters,
            llm,
            *args,
            json_keys={"answer": None, **(json_keys or {})},
            prompt_builder=builder,
            **kwargs,
        )

    @property
    def buffer(self) -> list[dict[str, Any]]:
        """The history entries, oldest first (a list; :attr:`history` is the buffer)."""
        return self.history.buffer  # type: ignore[no-any-return]

    def meta_prompt(
        self, summary: FunctionFeedback, limit: int, mask: Collection[str] | None = None
    ) -> str:
        """The user prompt OPRO sends for ``summary`` (values cut at ``limit``, without
        the parts ``mask`` names)."""
        return self.history_prompt.meta_prompt(self, summary, limit, mask)

    @property
    def history_prompt(self) -> OPROPrompt:
        """The :class:`OPROPrompt` this optimizer is configured with."""
        return self.prompt_builder  # type: ignore[attr-defined,no-any-return]


class OPRO(_OPROOptions, OptoPrime):
    """The OPRO optimizer: a meta-prompt of past solutions and their scores, JSON replies.

    Takes OptoPrime's arguments plus ``history_size``, ``max_num_solutions``,
    ``maximize`` and ``score_extractor`` (see the module docstring).
    """


@attrs.frozen(kw_only=True)
class OPROPromptSymbolSet(OptimizerPromptSymbolSet):
    """OPROv2's titles: the instruction is the problem context, the variables a solution."""

    instruction_section_title: str = "# Problem Context"
    variables_section_title: str = "# Solution"


class OPROv2(_OPROOptions, OptoPrimeV2):
    """OPRO with OptoPrimeV2's XML-style problem and reply.

    Takes OptoPrimeV2's arguments (``optimizer_prompt_symbol_set`` defaults to
    :class:`OPROPromptSymbolSet`) plus OPRO's. The titles in the system prompt and in the
    meta-prompt are the same.
    """

    def __init__(
        self,
        parameters: Iterable[ParameterNode],
        llm: Any = None,
        *args: Any,
        optimizer_prompt_symbol_set: OptimizerPromptSymbolSet | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            parameters,
            llm,
            *args,
            optimizer_prompt_symbol_set=optimizer_prompt_symbol_set or OPROPromptSymbolSet(),
            **kwargs,
        )
