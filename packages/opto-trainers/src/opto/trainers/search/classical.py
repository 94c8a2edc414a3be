"""Classical searches as `PrioritySearch` configurations, and a Pareto-based PrioritySearch.

* `SequentialUpdate`: one candidate, one proposal per iteration, a memory of one: the
  proposal replaces the current candidate only if it scores at least as well on the batch
  that produced it (or on a validation batch);
* `SequentialSearch`: one candidate and `num_proposals` proposals per iteration, the best of
  them (and the current candidate) kept, ideally judged on a separate validation set;
* `ParetobasedPS`: GEPA-style exploration: the explorers are the candidates that are best
  on some input (the per-input Pareto frontier), not the top of the priority queue.

The knobs a configuration fixes are fields of its options class with the fixed value as
default; passing another value raises `FixedOptionError` naming the knob.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs
from opto.utils.errors import OptoError

from ..algorithms.priority_search import PrioritySearch, PrioritySearchOptions
from ..guide import Guide
from ..options import optional_positive_int, positive_int
from ..ranking import rank_value
from ..utils import safe_mean
from .candidate import Candidate

__all__ = [
    "FixedOptionError",
    "ParetobasedPS",
    "ParetobasedPSOptions",
    "SequentialSearch",
    "SequentialSearchOptions",
    "SequentialUpdate",
    "SequentialUpdateOptions",
    "check_fixed_options",
]


class FixedOptionError(OptoError, ValueError):
    """A keyword that the algorithm fixes was given another value."""


def check_fixed_options(options: Any, algorithm: str, fixed: Mapping[str, Any]) -> None:
    """Raise `FixedOptionError` for the first field of `options` that differs from its
    value in `fixed` (None must be None; other values compare with `==`)."""
    for name, value in fixed.items():
        given = getattr(options, name)
        same = given is None if value is None else (given is not None and given == value)
        if not same:
            aliases = [a for a, field in getattr(options, "ALIASES", {}).items() if field == name]
            also = f" (alias {', '.join(aliases)})" if aliases else ""
            raise FixedOptionError(
                f"{algorithm} runs with {name}={value!r} and cannot take {name}={given!r}; "
                f"drop {name}{also} (or use PrioritySearch, where it is free)"
            )


# Shared by the sequential searches: a long-term memory of one candidate, never merged.
_ONE_CANDIDATE = {
    "num_candidates": 1,
    "long_term_memory_size": 1,
    "short_term_memory_size": None,
    "memory_update_frequency": 0,
}


@attrs.frozen(kw_only=True)
class SequentialSearchOptions(PrioritySearchOptions):
    """`SequentialSearch.train`'s keywords: `PrioritySearchOptions` with `num_candidates=1`
    and a memory of one candidate fixed (`memory_size`, the reference's name, is an alias
    of `long_term_memory_size`); `num_proposals` is free."""

    num_candidates: int = attrs.field(default=1, validator=positive_int)
    long_term_memory_size: int | None = attrs.field(default=1, validator=optional_positive_int)

    ALGORITHM: ClassVar[str] = "SequentialSearch"
    FIXED: ClassVar[Mapping[str, Any]] = _ONE_CANDIDATE
    ALIASES: ClassVar[Mapping[str, str]] = {
        **PrioritySearchOptions.ALIASES,
        "memory_size": "long_term_memory_size",
    }

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        check_fixed_options(self, self.ALGORITHM, self.FIXED)


@attrs.frozen(kw_only=True)
class SequentialUpdateOptions(SequentialSearchOptions):
    """`SequentialUpdate.train`'s keywords: `SequentialSearchOptions` with
    `num_proposals=1` fixed too."""

    ALGORITHM: ClassVar[str] = "SequentialUpdate"
    FIXED: ClassVar[Mapping[str, Any]] = {**_ONE_CANDIDATE, "num_proposals": 1}


class SequentialSearch(PrioritySearch):
    """Best-of-N search on one candidate: `PrioritySearch` with `num_candidates=1` and a
    memory of one.

    Each iteration the current candidate explores `num_batches` minibatches, makes
    `num_proposals` proposals from each, and the proposals are validated (on a batch of
    `validate_dataset`, where the current candidate is scored again; without one, on the
    training batch that produced them); the memory keeps the single highest-priority
    candidate (by default the best mean score), which the agent gets. With a validation
    set this is `BasicSearchAlgorithm` run through the search engine.
    """

    options_class = SequentialSearchOptions


class SequentialUpdate(SequentialSearch):
    """One proposal at a time: `PrioritySearch` with `num_candidates=1`,
    `num_proposals=1` and a memory of one.

    The proposal made from a minibatch's feedback replaces the current candidate when its
    priority (by default its mean score on the validation batch: the same minibatch
    unless `validate_dataset` is given) is at least the current one's, like
    `MinibatchAlgorithm` with `ensure_improvement`.
    """

    options_class = SequentialUpdateOptions


@attrs.frozen(kw_only=True)
class ParetobasedPSOptions(PrioritySearchOptions):
    """`ParetobasedPS.train`'s keywords: those of `PrioritySearchOptions`."""


def input_key(x: Any) -> str:
    """A short stable identity of an input: a digest of its JSON (`repr` for what JSON
    cannot hold), so rollouts of long inputs stay small in memory and checkpoints."""
    text = json.dumps(x, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


class ParetobasedPS(PrioritySearch):
    """`PrioritySearch` that explores the per-input Pareto frontier (GEPA-style).

    Every rollout a candidate earns (training and validation) is kept with its input.
    Each iteration, for every input on which candidates in memory scored differently, the
    candidates with the highest mean score on it are "best on" it; a candidate best on no
    input, or best on a strict subset of the inputs another candidate is best on, is
    dropped; the rest (the frontier) are sorted by mean score and the first
    `num_candidates` explore. Candidates never scored yet explore first. The frontier
    size (before that cut) is logged as `Update/num_pareto_candidates`. Under an `objective_config` a
    rollout's score is its score dict reduced by the config. The agent still gets the
    best candidate by mean score (`exploit`); `use_best_candidate_to_explore` does not
    apply (the frontier decides who explores).

    Unlike the reference, an input a candidate was never scored on does not count as a
    score of 0 (which let every candidate tie on unseen inputs and outrank negative
    scores); the inputs are those actually scored, so proposals validated on a separate
    validation set take part. Inputs seen by one candidate only, or on which all tie, are
    skipped (see `pareto_frontier`); when no candidate is on the frontier, the explorers
    are taken by priority as in `PrioritySearch`.
    """

    options_class = ParetobasedPSOptions

    def _configure(self, guide: Guide, train_dataset: Any, options: Any) -> None:
        super()._configure(guide, train_dataset, options)
        self.long_term_memory.processing_fun = self.compress_candidate_memory
        self.num_pareto_candidates = 0

    @staticmethod
    def compress_candidate_memory(candidate: Candidate) -> Candidate:
        """Keep each rollout's score(s) and its input's key (what the frontier needs)."""
        keys = [_row_input(row) for row in candidate.rollouts]
        candidate.compress()
        for row, key in zip(candidate.rollouts, keys):
            if key is not None:
                row["input_key"] = key
        return candidate

    def explore(self) -> list[Candidate]:
        """The frontier candidates (at most `num_candidates`), removed from memory."""
        pool = [c for memory in self._memories() for c in memory]
        frontier = pareto_frontier(pool)
        chosen = frontier[: self.num_candidates]
        self.num_pareto_candidates = len(frontier)
        self.logger.log("Update/num_pareto_candidates", len(frontier), self.n_iters + 1)
        if not chosen:  # nothing scored on any input (e.g. every rollout failed)
            return super().explore()
        for candidate in chosen:
            for memory in self._memories():
                memory.remove(candidate)
        return chosen

    # -- checkpoints: the inputs of the kept rollouts ----------------------------------------

    def _algorithm_state(self) -> Any:
        state = super()._algorithm_state()
        state["input_keys"] = {
            str(c.created): [_row_input(row) for row in c.rollouts]
            for memory in (self.long_term_memory, self.short_term_memory)
            for c in memory
        }
        return state

    def _load_algorithm_state(self, state: Any) -> None:
        super()._load_algorithm_state(state)
        if state is None:
            return
        saved = state.get("input_keys", {})
        for memory in (self.long_term_memory, self.short_term_memory):
            for candidate in memory:
                keys = saved.get(str(candidate.created), [])
                for row, key in zip(candidate.rollouts, keys):
                    if key is not None:
                        row["input_key"] = key


def _row_input(row: Mapping[str, Any]) -> str | None:
    """The input key of a rollout row (None for rows that never had an input)."""
    if "input_key" in row:
        return row["input_key"]
    return input_key(row["x"]) if "x" in row else None


def per_input_means(candidate: Candidate) -> dict[str, float]:
    """The candidate's mean score on each input it was scored on."""
    scores: dict[str, list[Any]] = {}
    for row in candidate.rollouts:
        key = _row_input(row)
        if key is not None:
            scores.setdefault(key, []).append(row.get("score"))
    means = {key: safe_mean(values) for key, values in scores.items()}
    return {key: float(m) for key, m in means.items() if m is not None and not math.isnan(m)}


def pareto_frontier(candidates: list[Candidate]) -> list[Candidate]:
    """The per-input Pareto frontier of `candidates`, best mean score first.

    Only inputs that tell candidates apart count: scored by at least two of them, not all
    alike (otherwise a candidate that saw more inputs would win them all by coverage).
    Never-scored candidates come first (oldest first); then every candidate that is best
    on some input and whose set of such inputs is not a strict subset of another's, by
    mean score (ties: the newer first, as `HeapMemory` pops, so a search on a plateau
    moves on instead of re-exploring its oldest candidates).
    """
    unscored = sorted((c for c in candidates if not c.num_rollouts), key=lambda c: c.created)
    means = {id(c): per_input_means(c) for c in candidates}
    inputs = {key for c in candidates for key in means[id(c)]}
    best_on: dict[int, set[str]] = {id(c): set() for c in candidates}
    for key in inputs:
        scored = [(means[id(c)][key], c) for c in candidates if key in means[id(c)]]
        if len({value for value, _ in scored}) < 2:
            continue  # one candidate, or all tie: the input tells none apart
        top = max(value for value, _ in scored)
        for value, c in scored:
            if value == top:
                best_on[id(c)].add(key)
    pool = [c for c in candidates if best_on[id(c)]]
    frontier = [c for c in pool if not any(best_on[id(c)] < best_on[id(other)] for other in pool)]
    frontier.sort(key=lambda c: (-rank_value(c.mean_score()), -c.created))
    return unscored + frontier
