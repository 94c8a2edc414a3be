"""OptoPrimeMulti: several candidate replies per step, then one is selected.

OptoPrime configured with a :class:`~opto.optimizers.candidates.CandidateSearch` as its
proposal strategy: candidates come from one of several generation techniques — a
temperature spread, ``n`` samples of one request, self-refinement, deliberately different
alternatives, expert personas, or several LLM profiles — and independent requests run
concurrently. A selection technique then picks the reply to apply: an LLM judge that sees
the problem and names the best candidate (``best_of_n``), an LLM synthesis of the
candidates (``moa``), the medoid of the largest cluster of similar suggestions
(``majority``), the last one, or a user ``selector``. ``step`` applies the selection;
:attr:`~OptoPrimeMulti.candidates` holds them all.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opto.optimizers import candidate_helpers
from opto.optimizers.candidate_helpers import MAJORITY_THRESHOLD as MAJORITY_THRESHOLD
from opto.optimizers.candidates import DEFAULT_EXPERTS as DEFAULT_EXPERTS
from opto.optimizers.candidates import (
    GENERATION_TECHNIQUES,
    SELECTION_TECHNIQUES,
    Candidate,
    CandidateSearch,
)
from opto.optimizers.optoprime import OptoPrime
from opto.optimizers.utils import Delegated
from opto.trace.nodes import ParameterNode
from opto.utils.signatures import takes_parameters_of

__all__ = ["GENERATION_TECHNIQUES", "SELECTION_TECHNIQUES", "Candidate", "OptoPrimeMulti"]

logger = logging.getLogger(__name__)

#: The constructor's keywords that configure the candidate search.
_SEARCH_SETTINGS = tuple(inspect.signature(CandidateSearch).parameters)

# The helpers of the candidate search stay importable from here under their old names.
_chosen_index = candidate_helpers.chosen_index
_majority = candidate_helpers.majority
_string_list = candidate_helpers.string_list
_weighted_order = candidate_helpers.weighted_order


@Delegated.many(
    "proposer",
    "num_responses",
    "temperature_min_max",
    "selector",
    "generation_technique",
    "selection_technique",
    "experts_list",
    "llm_profiles",
    "llm_weights",
    "max_workers",
    "candidates",
    "selected",
    "candidate_log",
)
class OptoPrimeMulti(OptoPrime):
    """OptoPrime that generates several candidates per step and applies the selected one.

    Takes OptoPrime's arguments plus the settings of its
    :class:`~opto.optimizers.candidates.CandidateSearch` (``num_responses``,
    ``temperature_min_max``, ``selector``, ``generation_technique``,
    ``selection_technique``, ``experts_list``, ``llm_profiles``, ``llm_weights``,
    ``max_workers``; see there). ``step`` also accepts ``num_responses``,
    ``temperature_min_max``, ``generation_technique`` and ``selection_technique`` per step.
    The settings and the results (:attr:`candidates`, :attr:`selected`,
    :attr:`candidate_log`) are the search's, reachable under their names here.
    """

    @takes_parameters_of(CandidateSearch, keyword_only=True)
    def __init__(
        self, parameters: Iterable[ParameterNode], llm: Any = None, *args: Any, **kwargs: Any
    ) -> None:
        """OptoPrime's arguments, and :class:`CandidateSearch`'s as keywords (``help``
        lists them)."""
        settings = {name: kwargs.pop(name) for name in _SEARCH_SETTINGS if name in kwargs}
        search = CandidateSearch(**settings)
        super().__init__(parameters, llm, *args, proposer=search, **kwargs)

    @property
    def search(self) -> CandidateSearch:
        """The :class:`CandidateSearch` this optimizer is configured with."""
        return self.proposer  # type: ignore[return-value]

    def call_llm(  # type: ignore[override]
        self,
        system_prompt: str,
        user_prompt: str,
        verbose: bool | str = False,
        max_tokens: int | None = None,
        num_responses: int = 1,
        temperature: float = 0.0,
        llm: Any = None,
        **options: Any,
    ) -> list[str]:
        """The reply texts of one request for ``num_responses`` choices (the candidate
        search's :meth:`~CandidateSearch.request_texts`).

        Errors of the LLM propagate; usage is added to the current step record.
        """
        if max_tokens is not None:
            options["max_tokens"] = max_tokens
        texts = self.search.request_texts(
            self, system_prompt, user_prompt, num_responses, temperature, llm, **options
        )
        if verbose:
            logger.info("LLM responses:\n%s", "\n\n".join(texts))
        return texts

    def generate_candidates(
        self,
        system_prompt: str,
        user_prompt: str,
        options: Mapping[str, Any] | None = None,
        num_responses: int | None = None,
        generation_technique: str | None = None,
        temperature_min_max: Sequence[float] | None = None,
    ) -> list[Candidate]:
        """Produce the candidates of one step with the given (or configured) technique
        (the candidate search's :meth:`~CandidateSearch.generate`)."""
        return self.search.generate(
            self,
            system_prompt,
            user_prompt,
            options,
            count=num_responses,
            technique=generation_technique,
            temperatures=temperature_min_max,
        )

    def select_candidate(
        self,
        candidates: Sequence[Candidate | str],
        selection_technique: str | None = None,
        problem: str = "",
        options: Mapping[str, Any] | None = None,
    ) -> Candidate | None:
        """The candidate to apply, None when no candidate holds a suggestion (the
        candidate search's :meth:`~CandidateSearch.select`; candidates may be reply texts)."""
        return self.search.select(
            self, candidates, technique=selection_technique, problem=problem, options=options
        )
