"""`UCBSearch`: a bandit over a bounded buffer of candidates (upper confidence bound).

Each iteration pulls the candidate with the highest UCB score, `mean + c * sqrt(ln T / n)
* (max - min)` (+inf while unscored), runs it on a training minibatch (the pull's reward
counts toward its statistics), makes one proposal from that feedback on the candidate's
own optimizer chain, scores the proposal on a fresh validation subsample (every example
at once) and adds it to the buffer, evicting the lowest-UCB entry when full. The agent
holds the best candidate by mean score after every iteration.

Fixes over the reference: candidates are values (no set-and-restore of the shared agent);
the bonus is scaled by `score_range` (default (0, 1), the reference's implicit range);
a step that proposes nothing adds no duplicate of its parent; subsamples come from the
trainer's seeded RNG and minibatches from its `DataLoader`; `num_epochs`, when given,
bounds the search; ties are broken by age (oldest first). With an `objective_config`, the
bandit's reward is the objective's scalar of each score dict, and the agent holds the
candidate `objectives.select_best` prefers by per-metric means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs

from ..guide import Guide
from ..options import (
    TrainResult,
    finite_range,
    positive_int,
)
from ..ranking import score_key
from ..scoring import best_of, objective_of, reward
from ..search import Candidate, SearchTrainer
from ..search.trainer import IterativeSearchOptions
from ..utils import safe_mean

__all__ = [
    "BufferEntry",
    "UCBSearch",
    "UCBSearchAlgorithm",
    "UCBSearchOptions",
    "UCBSearchSettings",
]

#: A buffer entry is a search `Candidate` (its statistics are its scored rollouts).
BufferEntry = Candidate


@attrs.frozen(kw_only=True)
class UCBSearchOptions(IterativeSearchOptions):
    """`UCBSearch.train`'s keywords: `IterativeSearchOptions` (`validation_dataset`,
    `validate_guide`, `num_search_iterations`, `train_batch_size`, `num_epochs`) plus the
    bandit's own: `evaluation_batch_size` (20), `min_score_for_agent_update` (score of
    failed validation rollouts; default `min_score`), `score_range` ((0, 1): scales the
    bonus).
    """

    evaluation_batch_size: int = attrs.field(default=20, validator=positive_int)
    min_score_for_agent_update: Any = None
    score_range: Sequence[float] = attrs.field(default=(0.0, 1.0), validator=finite_range)


@attrs.frozen(kw_only=True)
class UCBSearchSettings:
    """`UCBSearch`'s constructor hyperparameters: `max_buffer_size` (10: how many
    candidates the buffer holds) and `ucb_exploration_factor` (1.0: the `c` of the UCB
    bonus)."""

    max_buffer_size: int = attrs.field(default=10, validator=positive_int)
    ucb_exploration_factor: float = attrs.field(default=1.0, converter=float)


class UCBSearch(SearchTrainer):
    """UCB bandit search (the reference's `UCBSearchAlgorithm`).

    Args:
        agent, optimizer, num_threads, logger, executor, seed: as for every `Trainer`.
        max_buffer_size, ucb_exploration_factor: see `UCBSearchSettings` (positional
            after `optimizer`, then `logger` and `num_threads`, as in the reference).
    """

    options_class: ClassVar[type[UCBSearchOptions]] = UCBSearchOptions
    settings_class = UCBSearchSettings
    positional_parameters = ("max_buffer_size", "ucb_exploration_factor", "logger", "num_threads")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.buffer: list[Candidate] = []
        self._total_samples = 0

    def train(self, guide: Guide, train_dataset: Any, **kwargs: Any) -> TrainResult:
        """Run `num_search_iterations` bandit iterations over `train_dataset`.

        Keywords: the fields of `UCBSearchOptions` (`TrainOptions` plus the bandit's own).
        """
        return self._iterative_search(guide, train_dataset, kwargs)

    # -- configuration ----------------------------------------------------------------------

    def _configure(
        self, guide: Guide, train_dataset: Any, options: UCBSearchOptions, *, batch_given: bool
    ) -> None:
        low, high = (float(v) for v in options.score_range)
        self.score_range = (low, high)
        if options.min_score_for_agent_update is not None:
            options = attrs.evolve(options, min_score=options.min_score_for_agent_update)
        self.options = options
        self._configure_iterations(guide, train_dataset, options, batch_given=batch_given)
        self.evaluation_batch_size = min(
            options.evaluation_batch_size, len(self.validation_dataset["inputs"])
        )
        self._config = {
            "num_search_iterations": self.iterations,
            "train_batch_size": self.train_batch_size,
            "evaluation_batch_size": self.evaluation_batch_size,
            **self._settings_config(),
        }

    def _reset(self) -> None:
        self.buffer = [self._start_candidate()]
        self._total_samples = 0

    # -- the bandit -------------------------------------------------------------------------

    def compute_ucb(self, entry: Candidate) -> float:
        """`mean + c * sqrt(ln T / n) * (max - min)`; +inf for an unscored entry."""
        scored = [float(s) for s in entry.scores if s is not None]
        if not scored:
            return math.inf
        low, high = self.score_range
        total = max(self._total_samples, 1)
        bonus = math.sqrt(math.log(total) / len(scored)) * (high - low)
        return math.fsum(scored) / len(scored) + self.ucb_exploration_factor * bonus

    def select(self, buffer: Sequence[Candidate]) -> Candidate:
        """The entry to pull: highest UCB (ties: the oldest)."""
        return max(enumerate(buffer), key=lambda i: (score_key(self.compute_ucb(i[1])), -i[0]))[1]

    def best_entry(self) -> Candidate:
        """The entry with the best mean score (ties: the oldest); under an
        `objective_config`, the best per-metric means (`objectives.select_best`)."""
        config = objective_of(self)
        if config is not None:
            index = best_of([e.mean_score_dict() for e in self.buffer], config)
            if index is not None:
                return self.buffer[index]
        return max(
            enumerate(self.buffer),
            key=lambda item: (score_key(item[1].mean_score()), -item[0]),
        )[1]

    def _validation_batch(self) -> tuple[list[Any], list[Any]]:
        return self._sample_examples(self.validation_dataset, self.evaluation_batch_size)

    def _seed_buffer(self) -> None:
        """Score the buffer's unscored entries (the initial parameters) once."""
        unscored = [entry for entry in self.buffer if entry.num_scored == 0]
        if not unscored:
            return
        xs, infos = self._validation_batch()
        rows = self.engine.score([e.paramset for e in unscored], xs, infos, self.validate_guide)
        for entry, row in zip(unscored, rows):
            self._total_samples += entry.add_scores(row, self.options.objective_config)

    def _iterate(self, guide: Guide) -> dict[str, Any]:
        assert self.loader is not None
        parent = self.select(self.buffer)
        selected_ucb = self.compute_ucb(parent)
        xs, infos = self.loader.sample()
        result = self._explore_one(parent, guide, xs, infos)
        config = self.options.objective_config
        new_score: float | None = None
        new_metrics: dict[str, float] | None = None
        if result.proposals:
            proposal = result.proposals[0]
            val_xs, val_infos = self._validation_batch()
            (row,) = self.engine.score([proposal.paramset], val_xs, val_infos, self.validate_guide)
            child = Candidate(
                proposal.paramset,
                optimizer_state=proposal.optimizer_state,
                created=self.n_iters + 1,
            )
            self._total_samples += child.add_scores(row, config)
            new_score = child.mean_score()
            new_metrics = child.mean_score_dict()
        parent.add_rollouts([_scores_of(r) for r in result.rollouts], config)
        self._total_samples += sum(r.score is not None for r in result.rollouts)
        if new_score is not None and math.isfinite(new_score):
            if len(self.buffer) >= self.max_buffer_size:
                worst = min(
                    enumerate(self.buffer),
                    key=lambda item: (score_key(self.compute_ucb(item[1])), item[0]),
                )[0]
                del self.buffer[worst]
            self.buffer.append(child)
        best = self.best_entry()
        self._adopt_candidate(best)
        train_score = safe_mean([reward(r, config) for r in result.rollouts])
        metrics = {
            "UCB/selected_ucb": selected_ucb if math.isfinite(selected_ucb) else None,
            "UCB/new_candidate_score": new_score,
            "UCB/best_mean_score": best.mean_score(),
            "UCB/buffer_size": len(self.buffer),
            "UCB/average_buffer_score": safe_mean([e.mean_score() for e in self.buffer]),
            "UCB/total_samples": self._total_samples,
        }
        step = self.n_iters + 1
        for name, value in metrics.items():
            self.logger.log(name, value, step)
        return {
            "train_score": train_score,
            "feedback": [r.to_dict() for r in result.rollouts],
            "scores": {
                "new_candidate": new_score if config is None else new_metrics,
                "best_mean": best.mean_score() if config is None else best.mean_score_dict(),
            },
            "info": {"buffer_size": len(self.buffer), "total_samples": self._total_samples},
            "observe": best.mean_score(),
        }

    # -- checkpoints ------------------------------------------------------------------------

    def _algorithm_state(self) -> Any:
        return {
            "buffer": [entry.to_dict() for entry in self.buffer],
            "total_samples": self._total_samples,
        }

    def _load_algorithm_state(self, state: Any) -> None:
        if state is None:
            return
        self.buffer = [Candidate.from_dict(entry) for entry in state["buffer"]]
        self._total_samples = int(state["total_samples"])


#: The reference's name.
UCBSearchAlgorithm = UCBSearch


def _scores_of(record: Any) -> dict[str, Any]:
    """A rollout's score and score dict (what a candidate's statistics keep)."""
    kept = {"score": record.score}
    if record.score_dict is not None:
        kept["score_dict"] = record.score_dict
    return kept
