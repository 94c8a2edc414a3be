"""OPRO and OPROv2: optimization by prompting over the history of (solution, score) pairs.

Every step adds the current values of the variables, the feedback and its score to a
history; the LLM sees the earlier solutions sorted by score (best last, as in the OPRO
paper) and proposes a new solution that should score higher. Scores come from
``step(score=…)`` or are read from the feedback text (``"0.8"``, ``"score: 0.8"``); without
any score the feedback text alone guides the search. ``OPRO`` asks for OptoPrime's JSON
suggestion, ``OPROv2`` for OptoPrimeV2's XML-style reply; both keep OptoPrime's typed
conversion and code checks.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import attrs
from opto.optimizers import prompt_budget
from opto.optimizers.buffers import FIFOBuffer
from opto.optimizers.optoprime import OptoPrime
from opto.optimizers.optoprime_v2 import OptimizerPromptSymbolSet, OptoPrimeV2
from opto.optimizers.reply_formats import ReplyGuide
from opto.optimizers.utils import jsonable, truncate_expression
from opto.trace.nodes import ParameterNode
from opto.trace.propagators import FunctionFeedback
from opto.trace.utils import is_code_name

__all__ = ["OPRO", "OPROPromptSymbolSet", "OPROv2", "score_from_feedback"]

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


class _OPROHistory:
    """The OPRO meta-prompt over a scored history, for OptoPrime-family optimizers.

    Takes the optimizer's arguments plus:

    Args:
        history_size: how many (solution, feedback, score) entries are kept (None: all).
        max_num_solutions: how many past solutions the prompt shows: the best-scored ones
            (and the most recent unscored ones), sorted with the best last.
        maximize: whether a higher score is better.
        score_extractor: ``fn(feedback) -> float | None`` used when ``step`` gets no
            score; :func:`score_from_feedback` by default.
    """

    default_objective = "Come up with a new solution that scores higher than all earlier ones."

    representation_prompt = (
        "You are an optimizer. You see solutions tried earlier, each with the feedback it "
        "received and, when known, its score, sorted from the worst to the best. Propose "
        "a new solution that differs from all of them and scores better.\n\n"
        "{variables} lists the variables a solution sets, with their types and "
        "descriptions. A (code) value is the source of a Python function."
    )

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
        if max_num_solutions < 1:
            raise ValueError(f"max_num_solutions must be at least 1, got {max_num_solutions}.")
        super().__init__(
            parameters, llm, *args, json_keys={"answer": None, **(json_keys or {})}, **kwargs
        )
        self.history: FIFOBuffer[dict[str, Any]] = FIFOBuffer(history_size)
        self.max_num_solutions = max_num_solutions
        self.maximize = maximize
        self.score_extractor = score_extractor or score_from_feedback
        self._step_score: float | None = None

    @property
    def buffer(self) -> list[dict[str, Any]]:
        """The history entries, oldest first (the reference's name)."""
        return self.history.buffer

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

    def _solution_text(self, entry: Mapping[str, Any], limit: int) -> str:
        values = {
            name: truncate_expression(value, limit) if isinstance(value, str) else value
            for name, value in entry["variables"].items()
        }
        lines = [json.dumps(values, indent=2, ensure_ascii=False)]
        if entry["score"] is not None:
            lines.append(f"score: {entry['score']:g}")
        if entry["feedback"] not in (None, ""):
            lines.append(f"feedback: {entry['feedback']}")
        return "\n".join(lines)

    def meta_prompt(self, summary: FunctionFeedback, limit: int) -> str:
        """The user prompt: the variables, then the shown history (values cut at
        ``limit`` characters), and the request for a better solution."""
        s = self.prompt_symbols
        variables = "\n".join(
            f"({'code' if is_code_name(name) else type(value).__name__}) {name}"
            + (f": {desc}" if desc else "")
            for name, (value, desc) in summary.variables.items()
        )
        direction = "higher" if self.maximize else "lower"
        blocks = []
        for is_current, entry in self._shown_history():
            title = "Current solution" if is_current else "Solution"
            blocks.append(f"{title}:\n{self._solution_text(entry, limit)}")
        names = ", ".join(summary.variables)
        return (
            f"{s['instruction']}\n{self.objective}\n\n"
            f"{s['variables']}\n{variables}\n\n"
            f"Below are earlier solutions from the worst to the best ({direction} scores are "
            "better); the current solution comes last.\n\n"
            + "\n\n".join(blocks)
            + f"\n\nGive a new solution for {names} that differs from all solutions above and "
            f"has a {direction} score than any of them.\n\n{self.final_prompt}"
        )

    def construct_prompt(
        self,
        summary: FunctionFeedback,
        mask: Collection[str] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> tuple[str, str]:
        """Record the current solution with its score (given to ``step`` or read from the
        feedback) in the history, then build the ``(system, user)`` meta-prompt, its values
        shortened to fit ``max_prompt_tokens`` when set. ``mask`` has no effect: the
        meta-prompt has no problem sections."""
        score = self._step_score
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
        system = self.system_prompt()
        user = prompt_budget.fit_to_tokens(
            lambda limit, _: self.meta_prompt(summary, limit),
            system,
            self.max_value_chars,
            [],
            self.max_prompt_tokens,
            self.token_counter,
        )
        return system, user

    def reply_guide(self) -> ReplyGuide:
        """The wording of the reply section: a better-scoring solution, no answer."""
        return attrs.evolve(
            super().reply_guide(),  # type: ignore[misc]
            reasoning_hint="why the new solution should score better",
            reasoning_rule=None,
            question=None,
            constraints=None,
            terminate_when="no solution can do better",
            skeleton_variables={"variable_name": "new value"},
        )

    def _step(
        self,
        verbose: bool | str = False,
        mask: Collection[str] | None = None,
        *args: Any,
        score: float | None = None,
        **kwargs: Any,
    ) -> dict[ParameterNode, Any]:
        """OptoPrime's step over the OPRO meta-prompt; ``score`` scores the current
        solution (else it is read from the feedback)."""
        self._step_score = score
        try:
            return super()._step(verbose, mask, *args, **kwargs)
        finally:
            self._step_score = None

    def state_dict(self) -> dict[str, Any]:
        """OptoPrime's state plus the (solution, feedback, score) history."""
        state = super().state_dict()
        state["history"] = jsonable(self.history.buffer)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output, history included."""
        super().load_state_dict(state)
        self.history.clear()
        self.history.extend(state.get("history") or ())


class OPRO(_OPROHistory, OptoPrime):
    """The OPRO optimizer: a meta-prompt of past solutions and their scores, JSON replies.

    Takes OptoPrime's arguments plus ``history_size``, ``max_num_solutions``,
    ``maximize`` and ``score_extractor`` (see the module docstring).
    """


@attrs.frozen(kw_only=True)
class OPROPromptSymbolSet(OptimizerPromptSymbolSet):
    """OPROv2's titles: the instruction is the problem context, the variables a solution."""

    instruction_section_title: str = "# Problem Context"
    variables_section_title: str = "# Solution"


class OPROv2(_OPROHistory, OptoPrimeV2):
    """OPRO with OptoPrimeV2's XML-style reply (the reference's ``OPROv2``).

    Takes OptoPrimeV2's arguments (``optimizer_prompt_symbol_set`` defaults to
    :class:`OPROPromptSymbolSet`) plus OPRO's. The titles in the system prompt and in the
    meta-prompt are the same (the reference mixed two sets of names).
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
