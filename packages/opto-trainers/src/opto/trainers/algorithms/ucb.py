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

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from opto.trace.modules import Module

from ..guide import Guide
from ..loader import as_dataset
from ..objectives import ObjectiveConfig
from ..ranking import score_key
from ..scoring import best_of, objective_of, scalar
from ..utils import ParamSet, get_paramset
from .base import TrainOptions, TrainResult
from .priority_search import ExplorationJob, SearchTrainer, _positive_int

__all__ = ["UCBSearch", "UCBSearchAlgorithm"]

_UCB_KEYWORDS = (
    "validation_dataset",
    "validate_dataset",
    "validate_guide",
    "num_search_iterations",
    "train_batch_size",
    "evaluation_batch_size",
    "min_score_for_agent_update",
    "score_range",
    "num_epochs",
)


@attrs.define(kw_only=True, eq=False)
class BufferEntry:
    """One candidate in the buffer and its statistics.

    `score_sum`/`eval_count` hold the bandit's scalar rewards; under an `objective_config`
    `metric_sums`/`metric_counts` also sum every metric of the score dicts.
    """

    params: ParamSet
    optimizer_state: dict[str, Any] | None = None
    score_sum: float = 0.0
    eval_count: int = 0
    iteration_created: int = 0
    metric_sums: dict[str, float] = attrs.field(factory=dict)
    metric_counts: dict[str, int] = attrs.field(factory=dict)

    @property
    def mean(self) -> float | None:
        """Mean score so far (None before any evaluation)."""
        return self.score_sum / self.eval_count if self.eval_count else None

    @property
    def mean_scores(self) -> dict[str, float] | None:
        """Per-metric means of the score dicts so far (None before any)."""
        if not self.metric_counts:
            return None
        return {k: self.metric_sums[k] / n for k, n in self.metric_counts.items()}

    def add(self, scores: Sequence[Any], config: ObjectiveConfig | None = None) -> int:
        """Count the scored values among `scores` (score dicts are reduced to a reward
        by `config`, and their metrics summed); returns how many were counted."""
        scored = [s for s in scores if s is not None]
        for score in scored:
            if isinstance(score, Mapping):
                for key, value in score.items():
                    self.metric_sums[key] = self.metric_sums.get(key, 0.0) + float(value)
                    self.metric_counts[key] = self.metric_counts.get(key, 0) + 1
        self.score_sum += math.fsum(scalar(s, config) for s in scored)  # type: ignore[misc]
        self.eval_count += len(scored)
        return len(scored)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        data = attrs.asdict(self, recurse=False)
        return copy.deepcopy(data)

    @classmethod
    def from_dict(cls, data: Any) -> BufferEntry:
        """Inverse of `to_dict`."""
        return cls(**copy.deepcopy(dict(data)))


class UCBSearch(SearchTrainer):
    """UCB bandit search (the reference's `UCBSearchAlgorithm`).

    Args:
        agent, optimizer, num_threads, logger, executor, seed: as for every `Trainer`.
        max_buffer_size: how many candidates the buffer holds (10).
        ucb_exploration_factor: the `c` of the UCB bonus (1.0).
    """

    def __init__(
        self,
        agent: Module,
        optimizer: Any,
        max_buffer_size: int = 10,
        ucb_exploration_factor: float = 1.0,
        logger: Any = None,
        num_threads: int | None = None,
        *,
        executor: Any = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(agent, optimizer, num_threads, logger, executor=executor, seed=seed)
        self.max_buffer_size = _positive_int(max_buffer_size, "max_buffer_size")
        self.ucb_exploration_factor = float(ucb_exploration_factor)
        self.buffer: list[BufferEntry] = []
        self._total_samples = 0

    def train(self, guide: Guide, train_dataset: Any, **kwargs: Any) -> TrainResult:
        """Run `num_search_iterations` bandit iterations over `train_dataset`.

        Keywords (besides `TrainOptions`): `validation_dataset` (alias `validate_dataset`;
        default: the training set), `validate_guide`, `num_search_iterations` (100),
        `train_batch_size` (default: `batch_size` if given, else 2),
        `evaluation_batch_size` (20), `min_score_for_agent_update` (score of failed
        validation rollouts; default `min_score`), `score_range` ((0, 1): scales the
        bonus), `num_epochs` (None: only the iteration count bounds the search).
        """
        own = {key: kwargs.pop(key) for key in _UCB_KEYWORDS if key in kwargs}
        batch_given = "batch_size" in kwargs
        options = TrainOptions.from_kwargs(
            kwargs, algorithm=type(self).__name__, extra=_UCB_KEYWORDS
        )
        self._configure(guide, train_dataset, options, batch_given=batch_given, **own)
        self._reset()
        config = {"algorithm": type(self).__name__, **self._config}
        with self.session(guide, options, config=config, total_steps=self.iterations) as run:
            self.engine = self._engine(self.options)
            run.initial_evaluation()
            self._seed_buffer()
            while (
                self.n_iters < self.iterations and not run.should_stop() and not self._epochs_done()
            ):
                run.complete_step(**self._iterate(guide))
        assert run.result is not None
        return run.result

    # -- configuration ----------------------------------------------------------------------

    def _configure(
        self,
        guide: Guide,
        train_dataset: Any,
        options: TrainOptions,
        *,
        batch_given: bool,
        validation_dataset: Any = None,
        validate_dataset: Any = None,
        validate_guide: Guide | None = None,
        num_search_iterations: int = 100,
        train_batch_size: int | None = None,
        evaluation_batch_size: int = 20,
        min_score_for_agent_update: Any = None,
        score_range: Sequence[float] = (0.0, 1.0),
        num_epochs: int | None = None,
    ) -> None:
        if validation_dataset is not None and validate_dataset is not None:
            raise ValueError("pass validation_dataset or its alias validate_dataset, not both")
        validation = validation_dataset if validation_dataset is not None else validate_dataset
        if train_batch_size is None:
            train_batch_size = options.batch_size if batch_given else 2
        self.train_batch_size = _positive_int(train_batch_size, "train_batch_size")
        self.iterations = _positive_int(num_search_iterations, "num_search_iterations")
        self.num_epochs = None if num_epochs is None else _positive_int(num_epochs, "num_epochs")
        low, high = (float(v) for v in score_range)
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise ValueError(f"score_range must be finite (low, high), not {score_range!r}")
        self.score_range = (low, high)
        if min_score_for_agent_update is not None:
            options = attrs.evolve(options, min_score=min_score_for_agent_update)
        self.options = options
        data = self._training_loader(train_dataset, self.train_batch_size, "train_batch_size")
        self.validation_dataset = (
            data if validation is None else as_dataset(validation, name="validation_dataset")
        )
        self.evaluation_batch_size = min(
            _positive_int(evaluation_batch_size, "evaluation_batch_size"),
            len(self.validation_dataset["inputs"]),
        )
        self.validate_guide = validate_guide or guide
        self._config = {
            "num_search_iterations": self.iterations,
            "train_batch_size": self.train_batch_size,
            "evaluation_batch_size": self.evaluation_batch_size,
            "max_buffer_size": self.max_buffer_size,
            "ucb_exploration_factor": self.ucb_exploration_factor,
        }

    def _reset(self) -> None:
        self.buffer = [
            BufferEntry(params=get_paramset(self.agent), optimizer_state=self._initial_state())
        ]
        self._total_samples = 0

    # -- the bandit -------------------------------------------------------------------------

    def compute_ucb(self, entry: BufferEntry) -> float:
        """`mean + c * sqrt(ln T / n) * (max - min)`; +inf for an unscored entry."""
        if entry.eval_count == 0:
            return math.inf
        low, high = self.score_range
        total = max(self._total_samples, 1)
        bonus = math.sqrt(math.log(total) / entry.eval_count) * (high - low)
        return entry.score_sum / entry.eval_count + self.ucb_exploration_factor * bonus

    def select(self, buffer: Sequence[BufferEntry]) -> BufferEntry:
        """The entry to pull: highest UCB (ties: the oldest)."""
        return max(enumerate(buffer), key=lambda i: (score_key(self.compute_ucb(i[1])), -i[0]))[1]

    def best_entry(self) -> BufferEntry:
        """The entry with the best mean score (ties: the oldest); under an
        `objective_config`, the best per-metric means (`objectives.select_best`)."""
        config = objective_of(self)
        if config is not None:
            index = best_of([e.mean_scores for e in self.buffer], config)
            if index is not None:
                return self.buffer[index]
        return max(
            enumerate(self.buffer),
            key=lambda item: (score_key(item[1].mean), -item[0]),
        )[1]

    def _validation_batch(self) -> tuple[list[Any], list[Any]]:
        data = self.validation_dataset
        picked = sorted(self.rng.sample(range(len(data["inputs"])), self.evaluation_batch_size))
        return [data["inputs"][i] for i in picked], [data["infos"][i] for i in picked]

    def _seed_buffer(self) -> None:
        """Score the buffer's unscored entries (the initial parameters) once."""
        unscored = [entry for entry in self.buffer if entry.eval_count == 0]
        if not unscored:
            return
        xs, infos = self._validation_batch()
        rows = self.engine.score([e.params for e in unscored], xs, infos, self.validate_guide)
        for entry, row in zip(unscored, rows):
            self._total_samples += entry.add(row, self.options.objective_config)

    def _iterate(self, guide: Guide) -> dict[str, Any]:
        assert self.loader is not None
        parent = self.select(self.buffer)
        selected_ucb = self.compute_ucb(parent)
        xs, infos = self.loader.sample()
        (result,) = self.engine.explore(
            [
                ExplorationJob(
                    paramset=parent.params,
                    xs=xs,
                    infos=infos,
                    num_proposals=1,
                    optimizer_state=parent.optimizer_state,
                )
            ],
            guide,
        )
        config = self.options.objective_config
        new_score: float | None = None
        new_metrics: dict[str, float] | None = None
        if result.proposals:
            proposal = result.proposals[0]
            val_xs, val_infos = self._validation_batch()
            (row,) = self.engine.score([proposal.paramset], val_xs, val_infos, self.validate_guide)
            child = BufferEntry(
                params=proposal.paramset,
                optimizer_state=proposal.optimizer_state,
                iteration_created=self.n_iters + 1,
            )
            self._total_samples += child.add(row, config)
            new_score = child.mean
            new_metrics = child.mean_scores
        rewards = [r.score if config is None else r.score_dict for r in result.rollouts]
        self._total_samples += parent.add(rewards, config)
        if new_score is not None and math.isfinite(new_score):
            if len(self.buffer) >= self.max_buffer_size:
                worst = min(
                    enumerate(self.buffer),
                    key=lambda item: (score_key(self.compute_ucb(item[1])), item[0]),
                )[0]
                del self.buffer[worst]
            self.buffer.append(child)
        best = self.best_entry()
        self._adopt_candidate(best.params, best.optimizer_state)
        train_score = _mean_of([scalar(r, config) for r in rewards])
        metrics = {
            "UCB/selected_ucb": selected_ucb if math.isfinite(selected_ucb) else None,
            "UCB/new_candidate_score": new_score,
            "UCB/best_mean_score": best.mean,
            "UCB/buffer_size": len(self.buffer),
            "UCB/average_buffer_score": _mean_of([e.mean for e in self.buffer]),
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
                "best_mean": best.mean if config is None else best.mean_scores,
            },
            "info": {"buffer_size": len(self.buffer), "total_samples": self._total_samples},
            "observe": best.mean,
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
        self.buffer = [BufferEntry.from_dict(entry) for entry in state["buffer"]]
        self._total_samples = int(state["total_samples"])


def _mean_of(values: Sequence[Any]) -> float | None:
    scored = [float(v) for v in values if v is not None]
    return math.fsum(scored) / len(scored) if scored else None


#: The reference's name.
UCBSearchAlgorithm = UCBSearch
