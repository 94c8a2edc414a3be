"""Candidate search: several candidate replies per step, then one is selected.

:class:`CandidateSearch` is the proposal strategy of OptoPrimeMulti (and of any
OptoPrime given ``proposer=CandidateSearch(...)``). Candidates come from one of several
generation techniques — a temperature spread, ``n`` samples of one request,
self-refinement, deliberately different alternatives, expert personas, or several LLM
profiles — and independent requests run concurrently through
:func:`~opto.optimizers.llm_calls.send_all` (in the caller's context, so usage scopes and
budgets hold; usage reported per request). A selection technique then picks the reply to
apply: an LLM judge that sees the problem and names the best candidate (``best_of_n``), an
LLM synthesis of the candidates (``moa``), the medoid of the largest cluster of similar
suggestions (``majority``), the last one, or a user ``selector``.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import attrs
from opto.optimizers.candidate_helpers import (
    check_count,
    check_name,
    check_temperatures,
    chosen_index,
    majority,
    profile_name,
    spread,
    string_list,
    weighted_order,
)
from opto.optimizers.llm_calls import LLMRequest, chat_messages, send_all
from opto.optimizers.parsing import (
    ParsedReply,
    SuggestionParseError,
)
from opto.optimizers.proposals import ProposalHost, ProposalStrategy, StepRequest
from opto.optimizers.utils import drop_oldest, jsonable
from opto.utils.llm.types import ChatResponse

__all__ = [
    "GENERATION_TECHNIQUES",
    "SELECTION_TECHNIQUES",
    "Candidate",
    "CandidateSearch",
]

logger = logging.getLogger(__name__)

GENERATION_TECHNIQUES = (
    "temperature_variation",
    "n_samples",
    "self_refinement",
    "iterative_alternatives",
    "multi_experts",
    "multi_llm",
)
SELECTION_TECHNIQUES = (
    "best_of_n",
    "bestofn",
    "moa",
    "mixture_of_agents",
    "majority",
    "last_of_n",
)

DEFAULT_EXPERTS = (
    "Algorithm Expert",
    "Performance Optimizer",
    "Careful Reviewer who checks every constraint",
    "Domain Specialist",
    "Creative Problem Solver",
)
_JUDGE_SYSTEM = (
    "You compare candidate responses to an optimization problem and pick the one most "
    "likely to improve the output according to the feedback, while respecting the "
    "constraints. Reply with one JSON object: "
    '{"reasoning": <your comparison>, "best": <the number of the best candidate>}.'
)
_MOA_SYSTEM = (
    "You are given an optimization problem and several candidate responses. Write one "
    "response that combines their best elements into the most promising change."
)
_REFINE = (
    "\n\nA previous solution is quoted between <<< and >>>. Refine it: fix its mistakes "
    "and improve it, keep the reply format, and change only the variables you may change."
    "\n<<<\n{previous}\n>>>"
)
_ALTERNATIVE = (
    "\n\nCandidate responses proposed so far:\n{previous}\n\nPropose a new candidate that is "
    "very different from all of them (a different approach, not a small variation), in the "
    "same reply format."
)
_EXPERTS_PROMPT = (
    "List {n} different kinds of experts who could best solve the problem below, as a "
    "JSON array of short role names and nothing else.\n\n{problem}"
)


@attrs.define(kw_only=True)
class Candidate:
    """One candidate reply: its text, what it parses to, and how it was produced."""

    text: str
    suggestion: dict[str, Any] = attrs.field(factory=dict)
    reasoning: str = ""
    terminate: bool = False
    cut_off: str | None = None
    parse_error: str | None = None
    error: str | None = None
    temperature: float | None = None
    profile: str | None = None
    expert: str | None = None
    source: str = "generated"

    @property
    def valid(self) -> bool:
        """The reply parsed into a non-empty suggestion."""
        return bool(self.suggestion) and self.error is None and self.parse_error is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return jsonable(attrs.asdict(self))


def _count(instance: Any, attribute: Any, value: Any) -> None:
    check_count(value)


def _technique(valid: Sequence[str]) -> Callable[[Any, Any, Any], None]:
    def check(instance: Any, attribute: Any, value: Any) -> None:
        check_name(value, valid)

    return check


def _workers(instance: Any, attribute: Any, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"max_workers must be at least 1, got {value}.")


def _list_or_none(values: Sequence[Any] | None) -> list[Any] | None:
    return list(values) if values else None


def _temperatures(pair: Sequence[float] | None) -> tuple[float, float]:
    return check_temperatures(pair or (0.0, 1.0))


def _weights(weights: Sequence[float] | None) -> list[float] | None:
    return None if weights is None else list(weights)


@attrs.define(slots=False, eq=False)
class CandidateSearch(ProposalStrategy):
    """Several candidate replies per step, generated and then selected.

    Attributes (all keyword arguments of the constructor too; checked when set):
        num_responses: candidates per step.
        temperature_min_max: ``(min, max)`` sampling temperatures (default ``(0.0, 1.0)``).
        selector: ``fn(candidates) -> Candidate | index | reply text | suggestion dict``;
            overrides ``selection_technique``.
        generation_technique: one of :data:`GENERATION_TECHNIQUES`.
        selection_technique: one of :data:`SELECTION_TECHNIQUES`.
        experts_list: expert personas for ``multi_experts`` (else the LLM proposes them).
        llm_profiles: for ``multi_llm``: LLMFactory profile names or LLM objects.
        llm_weights: relative share of candidates per profile (default: equal).
        max_workers: how many requests run at once (default ``num_responses``).

    ``step()`` also accepts per-step ``num_responses``, ``temperature_min_max``,
    ``generation_technique`` and ``selection_technique``. After a step, :attr:`candidates`
    holds them all and :attr:`selected` the one applied; :attr:`candidate_log` keeps both
    for the recent steps (saved with the optimizer's state). A copy shares the
    ``selector`` and the LLMs built for profiles.
    """

    step_options: ClassVar[frozenset[str]] = frozenset(
        {"num_responses", "temperature_min_max", "generation_technique", "selection_technique"}
    )
    #: Attributes a copy shares: the user's selector and the LLM clients built for profiles.
    _shared_on_copy: ClassVar[tuple[str, ...]] = ("selector", "_profile_llms")

    num_responses: int = attrs.field(default=3, validator=_count)
    temperature_min_max: tuple[float, float] = attrs.field(default=None, converter=_temperatures)
    selector: Callable[[list[Candidate]], Any] | None = None
    generation_technique: str = attrs.field(
        default="temperature_variation", validator=_technique(GENERATION_TECHNIQUES)
    )
    selection_technique: str = attrs.field(
        default="best_of_n", validator=_technique(SELECTION_TECHNIQUES)
    )
    experts_list: list[str] | None = attrs.field(default=None, converter=_list_or_none)
    llm_profiles: list[Any] | None = attrs.field(default=None, converter=_list_or_none)
    llm_weights: list[float] = attrs.field(default=None, converter=_weights)
    max_workers: int | None = attrs.field(default=None, validator=_workers)
    candidates: list[Candidate] = attrs.field(factory=list, init=False, repr=False)
    selected: Candidate | None = attrs.field(default=None, init=False, repr=False)
    candidate_log: list[dict[str, Any]] = attrs.field(factory=list, init=False, repr=False)
    _profile_llms: dict[str, Any] = attrs.field(factory=dict, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        weights = self.llm_weights
        if weights is not None:
            if not self.llm_profiles or len(weights) != len(self.llm_profiles):
                raise ValueError("llm_weights needs one weight per entry of llm_profiles.")
            if any(w <= 0 for w in weights):
                raise ValueError(f"llm_weights must be positive, got {weights}.")
        if not weights:  # equal shares
            self.llm_weights = [1.0] * len(self.llm_profiles or ())
        if self.generation_technique == "multi_llm" and not self.llm_profiles:
            raise ValueError("generation_technique='multi_llm' needs llm_profiles=[...].")

    def __deepcopy__(self, memo: dict[int, Any]) -> CandidateSearch:
        """A copy with its own candidates and log, sharing the selector and profile LLMs."""
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            if key in self._shared_on_copy:
                new.__dict__[key] = memo.setdefault(id(value), value)
            else:
                new.__dict__[key] = copy.deepcopy(value, memo)
        return new

    # --- the step ---------------------------------------------------------------------

    def propose(
        self,
        optimizer: ProposalHost,
        request: StepRequest,
        num_responses: int | None = None,
        temperature_min_max: Sequence[float] | None = None,
        generation_technique: str | None = None,
        selection_technique: str | None = None,
        **step_options: Any,
    ) -> ParsedReply | None:
        """Generate the candidates, select one, and return it parsed (None when no
        candidate holds a suggestion: the step is terminated when a candidate said
        ``TERMINATE``, else a parse failure)."""
        record = optimizer.current_step
        user, options = request.user, request.options
        candidates = self.generate(
            optimizer,
            request.system,
            user,
            options,
            count=num_responses,
            technique=generation_technique,
            temperatures=temperature_min_max,
        )
        self.candidates = candidates
        selected = self.select(
            optimizer, candidates, technique=selection_technique, problem=user, options=options
        )
        self.selected = selected
        self._log(optimizer, request, candidates, selected, generation_technique)
        if selected is None:
            if any(c.terminate for c in candidates):
                record.terminated = True
            else:
                errors = [c.parse_error for c in candidates if c.parse_error]
                record.parse_error = errors[0] if errors else "no candidate was produced"
                if not optimizer.ignore_extraction_error:
                    raise SuggestionParseError(
                        f"no candidate reply held a suggestion: {record.parse_error}",
                        raw="\n\n".join(c.text for c in candidates),
                    )
            return None
        record.raw_reply = selected.text
        return ParsedReply(
            raw=selected.text,
            suggestion=dict(selected.suggestion),
            reasoning=selected.reasoning,
            cut_off=selected.cut_off,
        )

    def _log(
        self,
        optimizer: ProposalHost,
        request: StepRequest,
        candidates: Sequence[Candidate],
        selected: Candidate | None,
        technique: str | None,
    ) -> None:
        if request.verbose:
            for k, candidate in enumerate(candidates):
                logger.info("Candidate %d:\n%s", k + 1, candidate.text)
        self.candidate_log.append(
            {
                "step": optimizer.step_count,
                "technique": technique or self.generation_technique,
                "candidates": [c.to_dict() for c in candidates],
                "selected": None if selected is None else selected.to_dict(),
            }
        )
        drop_oldest(self.candidate_log, optimizer.max_history)
        optimizer.log_exchange(
            request,
            None if selected is None else selected.text,
            candidates=[c.text for c in candidates],
        )

    def state_dict(self) -> dict[str, Any]:
        """The candidates of the recent steps."""
        return {"candidate_log": jsonable(self.candidate_log)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the candidate log."""
        self.candidate_log = list(state.get("candidate_log") or [])

    # --- requests ---------------------------------------------------------------------

    def _run(
        self, optimizer: ProposalHost, jobs: Sequence[LLMRequest]
    ) -> list[ChatResponse | BaseException]:
        """Send the requests concurrently (at most ``max_workers`` at once); responses or
        exceptions in order, usage counted, a spent budget raised."""
        return send_all(
            jobs,
            llm=optimizer.llm,
            on_call=optimizer._count_call,
            max_workers=self.max_workers,
            return_exceptions=True,
        )

    def _candidates(
        self, optimizer: ProposalHost, jobs: Sequence[LLMRequest], results: Sequence[Any]
    ) -> list[Candidate]:
        """Parse the results; when every request failed, re-raise the first error."""
        if results and all(isinstance(r, BaseException) for r in results):
            raise results[0]
        out = []
        for job, result in zip(jobs, results):
            if isinstance(result, BaseException):
                logger.warning("A candidate request failed: %s: %s", type(result).__name__, result)
                out.append(
                    Candidate(text="", error=f"{type(result).__name__}: {result}", **job.meta)
                )
                continue
            texts = [c.message.content or "" for c in result.choices] or [""]
            out.extend(self.parse_candidate(optimizer, text, **job.meta) for text in texts)
        return out

    def parse_candidate(self, optimizer: ProposalHost, text: str, **meta: Any) -> Candidate:
        """A candidate of reply ``text`` parsed in the optimizer's reply format (a parse
        failure is counted in ``optimizer.parse_failures``)."""
        try:
            parsed = optimizer.parse_reply(text)
        except SuggestionParseError as error:
            optimizer.parse_failures += 1
            return Candidate(text=text, parse_error=str(error), **meta)
        return Candidate(
            text=text,
            suggestion=dict(parsed.suggestion),
            reasoning=parsed.reasoning,
            terminate=parsed.terminate,
            cut_off=parsed.cut_off,
            **meta,
        )

    @staticmethod
    def _job(
        optimizer: ProposalHost,
        system: str,
        user: str,
        options: Mapping[str, Any],
        index: int,
        llm: Any = None,
        **meta: Any,
    ) -> LLMRequest:
        opts = {"max_tokens": optimizer.max_tokens, **options, "rollout_id": f"candidate-{index}"}
        if meta.get("temperature") is not None:
            opts["temperature"] = meta["temperature"]
        return LLMRequest(messages=chat_messages(system, user), options=opts, llm=llm, meta=meta)

    def request_texts(
        self,
        optimizer: ProposalHost,
        system_prompt: str,
        user_prompt: str,
        num_responses: int = 1,
        temperature: float = 0.0,
        llm: Any = None,
        **options: Any,
    ) -> list[str]:
        """The reply texts of one request for ``num_responses`` choices; errors of the LLM
        propagate, usage is added to the current step record."""
        if num_responses > 1:
            options["n"] = num_responses
        job = self._job(
            optimizer, system_prompt, user_prompt, options, 0, llm=llm, temperature=temperature
        )
        (result,) = self._run(optimizer, [job])
        if isinstance(result, BaseException):
            raise result
        return [choice.message.content or "" for choice in result.choices]

    # --- generation -------------------------------------------------------------------

    def generate(
        self,
        optimizer: ProposalHost,
        system_prompt: str,
        user_prompt: str,
        options: Mapping[str, Any] | None = None,
        *,
        count: int | None = None,
        technique: str | None = None,
        temperatures: Sequence[float] | None = None,
    ) -> list[Candidate]:
        """The candidates for one prompt: ``count`` of them (else :attr:`num_responses`)
        by ``technique`` (else :attr:`generation_technique`) within ``temperatures``
        (else :attr:`temperature_min_max`); ``options`` go to every request."""
        options = dict(options or {})
        n = check_count(count or self.num_responses)
        technique = check_name(technique or self.generation_technique, GENERATION_TECHNIQUES)
        low, high = check_temperatures(temperatures or self.temperature_min_max)
        if technique == "temperature_variation":
            jobs = [
                self._job(optimizer, system_prompt, user_prompt, options, i, temperature=t)
                for i, t in enumerate(spread(low, high, n))
            ]
            return self._candidates(optimizer, jobs, self._run(optimizer, jobs))
        if technique == "n_samples":
            job = self._job(
                optimizer, system_prompt, user_prompt, {**options, "n": n}, 0, temperature=high
            )
            found = self._candidates(optimizer, [job], self._run(optimizer, [job]))
            if len(found) < n:
                logger.info("The LLM returned %d of the %d samples asked for.", len(found), n)
            return found
        if technique in ("self_refinement", "iterative_alternatives"):
            return self._sequential(
                optimizer, technique, system_prompt, user_prompt, options, n, low, high
            )
        if technique == "multi_experts":
            experts = self._experts(optimizer, user_prompt, n)
            jobs = [
                self._job(
                    optimizer,
                    f"You are a {expert}. Solve the problem from your expertise.\n\n"
                    + system_prompt,
                    user_prompt,
                    options,
                    i,
                    temperature=high,
                    expert=expert,
                )
                for i, expert in enumerate(experts)
            ]
            return self._candidates(optimizer, jobs, self._run(optimizer, jobs))
        names = [profile_name(p) for p in self.llm_profiles or ()]
        if not names:
            raise ValueError("generation_technique='multi_llm' needs llm_profiles=[...].")
        order = weighted_order(names, self.llm_weights, n)
        jobs = [
            self._job(
                optimizer,
                system_prompt,
                user_prompt,
                options,
                i,
                llm=self._profile_llm(optimizer, self.llm_profiles[k]),  # type: ignore[index]
                profile=names[k],
                temperature=high,
            )
            for i, k in enumerate(order)
        ]
        return self._candidates(optimizer, jobs, self._run(optimizer, jobs))

    def _sequential(
        self,
        optimizer: ProposalHost,
        technique: str,
        system: str,
        user: str,
        options: Mapping[str, Any],
        n: int,
        low: float,
        high: float,
    ) -> list[Candidate]:
        found: list[Candidate] = []
        for i in range(n):
            sys_i, user_i = system, user
            if found and technique == "self_refinement":
                sys_i = system + _REFINE.format(previous=found[-1].text)
            elif found:
                previous = "\n\n".join(f"Candidate {k + 1}:\n{c.text}" for k, c in enumerate(found))
                user_i = user + _ALTERNATIVE.format(previous=previous)
            temperature = low if technique == "self_refinement" else high
            job = self._job(optimizer, sys_i, user_i, options, i, temperature=temperature)
            found.extend(self._candidates(optimizer, [job], self._run(optimizer, [job])))
        return found

    def _experts(self, optimizer: ProposalHost, user_prompt: str, n: int) -> list[str]:
        """``n`` expert personas: the configured list (cycled), else asked from the LLM,
        padded with defaults."""
        if self.experts_list:
            return [self.experts_list[i % len(self.experts_list)] for i in range(n)]
        prompt = _EXPERTS_PROMPT.format(n=n, problem=user_prompt)
        job = LLMRequest(
            messages=chat_messages(None, prompt),
            options={"max_tokens": optimizer.max_tokens, "temperature": 0.0},
        )
        (result,) = self._run(optimizer, [job])
        experts: list[str] = []
        if isinstance(result, ChatResponse):
            experts = string_list(result.content or "")
        experts = experts[:n]
        defaults = [d for d in DEFAULT_EXPERTS if d not in experts] or list(DEFAULT_EXPERTS)
        experts.extend(defaults[i % len(defaults)] for i in range(n - len(experts)))
        return experts

    def _profile_llm(self, optimizer: ProposalHost, profile: Any) -> Any:
        """The LLM of a profile (built once; the default LLM if it cannot be built)."""
        if callable(profile):
            return profile
        if profile not in self._profile_llms:
            from opto.utils.llm import LLMFactory

            try:
                self._profile_llms[profile] = LLMFactory.get_llm(profile)
            except Exception as error:
                logger.warning(
                    "Cannot build the LLM of profile %r (%s); using the default LLM.",
                    profile,
                    error,
                )
                self._profile_llms[profile] = optimizer.llm
        return self._profile_llms[profile]

    # --- selection --------------------------------------------------------------------

    def select(
        self,
        optimizer: ProposalHost,
        candidates: Sequence[Candidate | str],
        *,
        technique: str | None = None,
        problem: str = "",
        options: Mapping[str, Any] | None = None,
    ) -> Candidate | None:
        """The candidate to apply, by ``technique`` (else :attr:`selection_technique`;
        a :attr:`selector` wins); None when no candidate holds a suggestion.

        ``candidates`` may be reply texts too. ``problem`` is the user prompt (problem
        instance and feedback) the judge sees; ``options`` go to a synthesis request.
        """
        candidates = [
            c if isinstance(c, Candidate) else self.parse_candidate(optimizer, str(c))
            for c in candidates
        ]
        valid = [c for c in candidates if c.valid]
        if self.selector is not None:
            return self._from_selector(optimizer, candidates)
        if not valid:
            return None
        technique = check_name(technique or self.selection_technique, SELECTION_TECHNIQUES)
        if len(valid) == 1 or technique == "last_of_n":
            return valid[-1]
        if technique == "majority":
            texts = [json.dumps(jsonable(c.suggestion), sort_keys=True) for c in valid]
            return valid[majority(texts)]
        listing = "\n\n".join(f"Candidate {k + 1}:\n{c.text}" for k, c in enumerate(valid))
        user = f"Problem:\n{problem}\n\nCandidates:\n{listing}"
        if technique in ("best_of_n", "bestofn"):
            job = self._job(optimizer, _JUDGE_SYSTEM, user, {}, 0, temperature=0.0)
            (result,) = self._run(optimizer, [job])
            index = (
                chosen_index(result.content or "", len(valid))
                if isinstance(result, ChatResponse)
                else None
            )
            if index is None:
                logger.warning("The judge named no valid candidate; using the last one.")
                return valid[-1]
            return valid[index]
        system = _MOA_SYSTEM + "\n\n" + optimizer.output_format_prompt()
        job = self._job(
            optimizer, system, user, dict(options or {}), 0, temperature=0.0, source="moa"
        )
        (synthesis,) = self._candidates(optimizer, [job], self._run(optimizer, [job]))
        if not synthesis.valid:
            logger.warning("The synthesis of the candidates did not parse; using the last one.")
            return valid[-1]
        return synthesis

    def _from_selector(
        self, optimizer: ProposalHost, candidates: Sequence[Candidate]
    ) -> Candidate | None:
        chosen = self.selector(list(candidates))  # type: ignore[misc]
        if chosen is None or isinstance(chosen, Candidate):
            return chosen
        if isinstance(chosen, int) and not isinstance(chosen, bool):
            return candidates[chosen]
        if isinstance(chosen, str):
            return self.parse_candidate(optimizer, chosen, source="selector")
        if isinstance(chosen, Mapping):
            return Candidate(
                text=json.dumps(jsonable(chosen)), suggestion=dict(chosen), source="selector"
            )
        raise TypeError(
            "selector must return a Candidate, an index, a reply text or a suggestion dict, "
            f"got {type(chosen).__name__}."
        )
