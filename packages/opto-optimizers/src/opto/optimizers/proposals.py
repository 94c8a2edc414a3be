"""Proposal strategies: how an OptoPrime-family optimizer gets the reply it applies.

A step builds its prompt (a :class:`StepRequest`); the optimizer's ``proposer`` then asks
the LLM and returns the parsed reply to apply, or None when there is nothing to apply (the
reason is written to the step record). :class:`SingleReply` is OptoPrime's: one request,
one reply. :class:`~opto.optimizers.candidates.CandidateSearch` (OptoPrimeMulti's)
generates several candidate replies and selects one.

A strategy is given the optimizer being stepped: it sends requests through the
optimizer's LLM (:mod:`~opto.optimizers.llm_calls`, usage counted on the step record),
parses with its reply format, and writes the optimizer's step record and logs.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Collection, Mapping
from typing import Any, ClassVar, Protocol

import attrs
from opto.optimizers.optimizer import StepRecord
from opto.optimizers.parsing import ParsedReply, SuggestionParseError
from opto.trace.propagators import FunctionFeedback
from opto.utils.llm.types import Usage

__all__ = ["ProposalHost", "ProposalStrategy", "SingleReply", "StepRequest"]

logger = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class StepRequest:
    """What one step asks the LLM: the feedback summary and its problem mask, the two
    prompts, the LLM options (e.g. ``response_format``) and the ``verbose`` flag."""

    summary: FunctionFeedback
    mask: Collection[str] | None
    system: str
    user: str
    options: Mapping[str, Any] = attrs.field(factory=dict)
    verbose: bool | str = False


class ProposalHost(Protocol):
    """What a proposal strategy uses of the optimizer it proposes for (an OptoPrime)."""

    llm: Any
    max_tokens: int
    ignore_extraction_error: bool
    parse_failures: int
    step_count: int

    @property
    def current_step(self) -> StepRecord: ...

    @property
    def max_history(self) -> int: ...

    def _count_call(self, usage: Usage | None) -> None: ...

    def call_llm(
        self, system_prompt: str, user_prompt: str, verbose: bool | str = False, **options: Any
    ) -> str: ...

    def parse_reply(self, reply: str) -> ParsedReply: ...

    def output_format_prompt(self) -> str: ...

    def log_exchange(self, request: StepRequest, response: str | None, **extra: Any) -> None: ...


class ProposalStrategy(abc.ABC):
    """How a step's reply is obtained (the strategy's interface).

    ``optimizer`` is the OptoPrime-family optimizer being stepped.
    """

    #: Keyword arguments of ``step()`` this strategy takes (passed to :meth:`propose`).
    step_options: ClassVar[frozenset[str]] = frozenset()

    @abc.abstractmethod
    def propose(
        self, optimizer: ProposalHost, request: StepRequest, **step_options: Any
    ) -> ParsedReply | None:
        """Ask the LLM for ``request`` and return the parsed reply to apply.

        None when nothing is to be applied: the reply said ``TERMINATE`` or could not be
        parsed (recorded on ``optimizer.current_step``; a parse failure raises
        :class:`SuggestionParseError` unless the optimizer ignores extraction errors).
        """

    def state_dict(self) -> dict[str, Any]:
        """State to save with the optimizer's (JSON-able; merged into its state dict)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s keys from the optimizer's saved state."""
        return None  # stateless by default


class SingleReply(ProposalStrategy):
    """One request (``optimizer.call_llm``) and its reply, parsed in the reply format."""

    def propose(
        self, optimizer: ProposalHost, request: StepRequest, **step_options: Any
    ) -> ParsedReply | None:
        """The parsed reply of one request; logged to ``optimizer.log``."""
        record = optimizer.current_step
        reply = optimizer.call_llm(
            request.system, request.user, verbose=request.verbose, **request.options
        )
        record.raw_reply = reply
        optimizer.log_exchange(request, reply)
        try:
            parsed: ParsedReply = optimizer.parse_reply(reply)
        except SuggestionParseError as error:
            optimizer.parse_failures += 1
            record.parse_error = str(error)
            logger.warning(
                "%s could not parse the LLM reply (%d failures so far): %s; reply: %.300r",
                type(optimizer).__name__,
                optimizer.parse_failures,
                error,
                reply,
            )
            if not optimizer.ignore_extraction_error:
                raise
            return None
        if parsed.terminate:
            record.terminated = True
            return None
        return parsed
