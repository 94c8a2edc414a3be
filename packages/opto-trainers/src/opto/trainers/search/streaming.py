"""`StreamingPrioritySearch`: PrioritySearch without a validation pass.

Proposals are not validated: they enter memory unscored with the top priority
(`max_score`), explore on the next training batch, and those training rollouts are their
scores. Each iteration proposes from only some of the (explorer, minibatch) pairs: K of
them, drawn without replacement by a softmax over the explorers' priorities (after this
iteration's rollouts) at `exploration_temperature`, with the trainer's seeded RNG (its
state is checkpointed, so a resumed run draws what the uninterrupted one would).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import attrs

from ..algorithms.priority_search import PrioritySearch, PrioritySearchOptions
from ..evaluation import Rollout
from ..guide import Guide
from ..ranking import rank_value
from .candidate import Candidate
from .classical import check_fixed_options
from .engine import ExplorationJob, ExplorationResult

__all__ = [
    "StreamingPrioritySearch",
    "StreamingPrioritySearchOptions",
    "num_proposing_pairs",
    "softmax_sample",
]


def _ratio(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"{attribute.name} must be a number in (0, 1], not {value!r}")


def _temperature(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{attribute.name} must be a finite number > 0, not {value!r}")


@attrs.frozen(kw_only=True)
class StreamingPrioritySearchOptions(PrioritySearchOptions):
    """`StreamingPrioritySearch.train`'s keywords: `PrioritySearchOptions` plus
    `exploration_ratio` (0.5: the share of next iteration's `num_candidates` explorers
    that are new proposals) and `exploration_temperature` (1.0: of the softmax that picks
    the pairs to propose from; lower is greedier). There is no validation step, so
    `validate_dataset` and `validate_guide` must stay unset."""

    exploration_ratio: float = attrs.field(default=0.5, validator=_ratio)
    exploration_temperature: float = attrs.field(default=1.0, validator=_temperature)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        fixed = {"validate_dataset": None, "validate_guide": None}
        check_fixed_options(self, "StreamingPrioritySearch", fixed)


def num_proposing_pairs(
    num_candidates: int, num_proposals: int, ratio: float, available: int, pairs: int
) -> int:
    """K, how many (explorer, minibatch) pairs propose this iteration.

    `max(1, floor(num_candidates * ratio / num_proposals))`, raised so that the
    `available` candidates (explorers and memory) plus the K * `num_proposals` new ones
    fill next iteration's `num_candidates`, capped at `max(1, num_candidates //
    num_proposals)` and at the number of `pairs`.
    """
    k = max(1, math.floor(num_candidates * ratio / num_proposals))
    missing = num_candidates - (k * num_proposals + available)
    if missing > 0:
        k += math.ceil(missing / num_proposals)
    return min(k, max(1, num_candidates // num_proposals), pairs)


def softmax_sample(
    priorities: Sequence[float | None], k: int, temperature: float, rng: Any
) -> list[int]:
    """`k` distinct indices drawn one by one with probability `softmax(priority / T)`.

    `+inf` priorities are drawn first (uniformly among them); `-inf`, None and NaN have
    weight 0 unless nothing else is left (then uniformly). `rng` is a `random.Random`.
    """
    values = [rank_value(p) for p in priorities]
    left = list(range(len(values)))
    chosen: list[int] = []
    while left and len(chosen) < k:
        top = [i for i in left if values[i] == math.inf]
        finite = [i for i in left if math.isfinite(values[i])]
        if top or not finite:
            pool, weights = (top or left), [1.0] * len(top or left)
        else:
            high = max(values[i] for i in finite)
            pool = finite
            weights = [math.exp((values[i] - high) / temperature) for i in finite]
        point, acc = rng.random() * math.fsum(weights), 0.0
        pick = pool[-1]
        for index, weight in zip(pool, weights):
            acc += weight
            if point < acc:
                pick = index
                break
        chosen.append(pick)
        left.remove(pick)
    return chosen


class StreamingPrioritySearch(PrioritySearch):
    """`PrioritySearch` whose proposals are scored by exploring, never by validation.

    Each iteration the explorers (the best candidate, then the highest priorities: new
    proposals first, as never-rolled-out candidates have priority `max_score`) run on
    `num_batches` minibatches; their rollouts count toward their scores; then K of the
    (explorer, minibatch) pairs (see `num_proposing_pairs`) are drawn by a softmax over
    the explorers' updated priorities at `exploration_temperature` (`softmax_sample`,
    with the trainer's seeded `rng`), and only those make `num_proposals` proposals each.
    The proposals go to memory unscored and explore on the next training batch. The
    agent gets the best scored candidate by mean score.

    On an out-of-process executor (Ray) the K drawn pairs run their minibatch once more
    in the task that proposes (a trace graph cannot outlive its task); those repeated
    rollouts feed the proposals only, not the scores.
    """

    options_class = StreamingPrioritySearchOptions
    validates_proposals = False  # proposals are scored when they explore the next batch

    def _configure(self, guide: Guide, train_dataset: Any, options: Any) -> None:
        super()._configure(guide, train_dataset, options)
        self.exploration_ratio = float(options.exploration_ratio)
        self.exploration_temperature = float(options.exploration_temperature)
        self._config["exploration_ratio"] = self.exploration_ratio
        self._config["exploration_temperature"] = self.exploration_temperature

    def compute_exploration_priority(self, candidate: Candidate) -> float:
        """`max_score` for a candidate never rolled out (so it explores next), else the
        `score_function`'s priority."""
        if candidate.num_rollouts == 0:
            return self.max_score
        return super().compute_exploration_priority(candidate)

    def _run_jobs(
        self, jobs: list[ExplorationJob], explorers: list[Candidate], guide: Guide
    ) -> list[ExplorationResult]:
        """Roll every job out, then let only the K drawn (explorer, minibatch) pairs propose."""
        per_explorer = len(jobs) // len(explorers) if explorers else 1

        def select(rollouts: list[list[Rollout]]) -> list[int]:
            config = self.options.objective_config
            updated: dict[int, Candidate] = {}
            for job_index, rows in enumerate(rollouts):
                explorer = explorers[job_index // per_explorer]
                if id(explorer) not in updated:
                    updated[id(explorer)] = copy.copy(explorer)
                    updated[id(explorer)].rollouts = list(explorer.rollouts)
                updated[id(explorer)].add_rollouts(rows, config)
            priorities = [
                self.compute_exploration_priority(updated[id(explorers[j // per_explorer])])
                for j in range(len(rollouts))
            ]
            available = len(updated) + sum(len(memory) for memory in self._memories())
            k = num_proposing_pairs(
                self.num_candidates,
                self.num_proposals,
                self.exploration_ratio,
                available,
                len(rollouts),
            )
            return softmax_sample(priorities, k, self.exploration_temperature, self.rng)

        return self.engine.explore(jobs, guide, select=select)
