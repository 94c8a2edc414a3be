"""Prompt builders: how an OptoPrime-family optimizer turns one step's feedback into a prompt.

A :class:`PromptBuilder` is a strategy the optimizer holds as ``prompt_builder``. It writes
the system prompt, the user prompt for a :class:`~opto.trace.propagators.FunctionFeedback`
(fit to ``max_prompt_tokens``), the wording of the reply-format section, and records what
it must remember between steps. :class:`ProblemPrompt` is OptoPrime's: the problem
instance in the optimizer's :class:`~opto.optimizers.problem.ProblemView`, with the worked
example and memory. OPRO's scored-history meta-prompt
(:class:`~opto.optimizers.opro.OPROPrompt`) and the compact prompt for small models
(:class:`~opto.optimizers.compact_prompt.CompactPrompt`) are the others.

A builder is given the optimizer being stepped: it reads that optimizer's configuration
(its problem view, reply format, objective, limits and memory) and never sends requests.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Mapping, MutableSequence, Sequence
from typing import Any, ClassVar, Protocol

import attrs
from opto.optimizers import prompt_budget
from opto.optimizers.problem import FENCE_LINE, ProblemView
from opto.optimizers.reply_formats import ReplyGuide
from opto.trace.propagators import FunctionFeedback

__all__ = ["Mask", "Memory", "ProblemPrompt", "PromptBuilder", "PromptHost", "PromptRequest"]

#: The problem sections a step leaves out (by key, header or name; None: none).
Mask = Collection[str] | None
#: Remembered ``{variables, feedback}`` entries of earlier steps, oldest first.
Memory = Sequence[Mapping[str, Any]]


@attrs.frozen
class PromptRequest:
    """What one user prompt shows: the optimizer's step ``summary`` under ``mask``, values
    cut at ``limit`` characters, and the ``memory`` entries kept after fitting the budget."""

    optimizer: PromptHost
    summary: FunctionFeedback
    mask: Mask
    limit: int
    memory: Memory


class PromptHost(Protocol):
    """What a prompt builder reads from the optimizer it builds for (an OptoPrime)."""

    problem_view: ProblemView
    prompt_symbols: Mapping[str, str]
    objective: str
    representation_prompt: str
    memory_prompt: str
    highlight_prompt: str
    final_prompt: str
    include_example: bool
    highlight_variables: bool
    max_value_chars: int
    max_prompt_tokens: int | None
    token_counter: Callable[[str], int]
    memory_size: int
    memory: MutableSequence[dict[str, Any]]

    @property
    def section_titles(self) -> Mapping[str, str]: ...

    def system_prompt(self) -> str: ...

    def output_format_prompt(self) -> str: ...

    def example_prompt(self) -> str: ...

    def problem_instance(
        self, summary: FunctionFeedback, mask: Mask = None, max_value_chars: int | None = None
    ) -> Any: ...


class PromptBuilder(abc.ABC):
    """How one step's ``(system, user)`` prompt is built (the strategy's interface).

    Subclasses implement :meth:`user_prompt`; the other methods have OptoPrime's
    behaviour. ``optimizer`` is the OptoPrime-family optimizer being stepped.
    """

    #: Keyword arguments of ``step()`` this builder takes (passed to :meth:`build`).
    step_options: ClassVar[frozenset[str]] = frozenset()

    #: The ``#Instruction`` when no objective is given (None: the optimizer's default).
    default_objective: str | None = None

    def system_prompt(self, optimizer: PromptHost) -> str:
        """The optimizer's description of the problem followed by its reply-format section."""
        view: ProblemView = optimizer.problem_view
        representation = view.representation(optimizer.representation_prompt)
        return representation + "\n\n" + optimizer.output_format_prompt()

    def reply_guide(self, view: ProblemView) -> ReplyGuide:
        """The wording of the reply-format section for the task, in ``view``'s names."""
        s = view.names
        return ReplyGuide(
            reasoning_rule=(
                f"say what {s['instruction']} asks; explain what {s['feedback']} means for "
                f"the variables, using {s['code']}, {s['documentation']}, {s['inputs']} and "
                f"{s['others']}; then state the change and the result you expect."
            ),
            question=s["instruction"],
            variables=s["variables"],
            constraints=view.constraints_ref.format(**s),
            code_value=view.code_value,
        )

    @abc.abstractmethod
    def user_prompt(self, request: PromptRequest) -> str:
        """The user prompt for ``request``: values cut at ``request.limit`` characters and
        ``request.memory`` (earlier ``{variables, feedback}`` entries, oldest first) shown."""

    def build(
        self,
        optimizer: PromptHost,
        summary: FunctionFeedback,
        mask: Collection[str] | None = None,
        **step_options: Any,
    ) -> tuple[str, str]:
        """``(system, user)`` for ``summary`` (showing :meth:`shown_memory`); then
        :meth:`remember` the step. ``step_options`` are the ``step()`` arguments named in
        :attr:`step_options`.

        With the optimizer's ``max_prompt_tokens``, values are shortened and then the
        oldest memory entries dropped until the prompt fits.
        """
        system = optimizer.system_prompt()
        user = prompt_budget.fit_to_tokens(
            lambda limit, memory: self.user_prompt(
                PromptRequest(optimizer, summary, mask, limit, memory)
            ),
            system,
            optimizer.max_value_chars,
            self.shown_memory(optimizer),
            optimizer.max_prompt_tokens,
            optimizer.token_counter,
        )
        self.remember(optimizer, summary)
        return system, user

    def shown_memory(self, optimizer: PromptHost) -> list[Mapping[str, Any]]:
        """The remembered entries the prompt may show, oldest first (the optimizer's
        memory of its last ``memory_size`` steps)."""
        return list(optimizer.memory)

    def remember(self, optimizer: PromptHost, summary: FunctionFeedback) -> None:
        """Push the step's variables and feedback to the optimizer's memory (when it has
        ``memory_size``), for the next steps' prompts."""
        if optimizer.memory_size:
            optimizer.memory.append(
                {
                    "variables": {k: v[0] for k, v in summary.variables.items()},
                    "feedback": summary.user_feedback,
                }
            )

    def state_dict(self) -> dict[str, Any]:
        """What the builder remembers across steps, JSON-able, saved inside the optimizer's
        state dict (e.g. OPRO's history); nothing by default."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Take back the keys of :meth:`state_dict` from the optimizer's saved state."""
        return None  # a builder without state has nothing to restore


class ProblemPrompt(PromptBuilder):
    """OptoPrime's prompt: the worked example (``include_example``), the problem instance
    in the optimizer's problem view, the remembered steps, the question about the
    variables (``highlight_variables``) and the closing line."""

    def user_prompt(self, request: PromptRequest) -> str:
        """The problem instance between fence lines, with example, memory and question."""
        optimizer = request.optimizer
        instance = optimizer.problem_instance(request.summary, request.mask, request.limit)
        parts = [optimizer.example_prompt()] if optimizer.include_example else []
        parts.append(
            "Now you see problem instance:\n\n"
            f"{FENCE_LINE}\n{instance.render(optimizer.section_titles)}\n{FENCE_LINE}\n\n"
        )
        if request.memory:
            shown = optimizer.problem_view.memory(request.memory, request.limit)
            parts.append(optimizer.memory_prompt + "\n" + shown + "\n\n")
        if optimizer.highlight_variables:
            names = ", ".join(request.summary.variables)
            parts.append(optimizer.highlight_prompt.format(names=names) + "\n\n")
        parts.append(optimizer.final_prompt)
        return "".join(parts)
