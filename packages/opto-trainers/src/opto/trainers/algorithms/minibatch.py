"""The minibatch family: `Minibatch` (the generic loop), `MinibatchAlgorithm` (batched
feedback, optional ensure-improvement with rollback) and `BasicSearchAlgorithm` (best of N
proposals on validation data, the current parameters included).

Per step: forward every example of the batch at once, join the targets and the feedback
with the traced `batchify` op, one backward, then one optimizer step (or N proposals
validated together, every candidate x example in flight at once).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import attrs
from opto.trace.errors import ExecutionError
from opto.trace.modules import Module
from opto.trace.nodes import Node

from ..evaluation import Rollout, batch_backward, call_agent, guarded, is_failure, judge
from ..guide import Guide
from ..loader import DataLoader, DatasetError, as_dataset
from ..options import positive_int
from ..ranking import is_score
from ..scoring import best_of, scalar
from ..utils import ParamSet, get_paramset, paramset_key, safe_mean
from .base import Trainer, TrainOptions, TrainResult

__all__ = [
    "BasicSearchAlgorithm",
    "BasicSearchOptions",
    "Minibatch",
    "MinibatchAlgorithm",
    "MinibatchOptions",
    "standard_optimization_step",
]

logger = logging.getLogger(__name__)


def standard_optimization_step(
    agent: Module, x: Any, guide: Guide, info: Any, min_score: Any = 0
) -> tuple[Node[Any], Any, Any]:
    """`target = agent(x)` and `(score, feedback) = guide(x, target.data, info)`.

    An async agent is awaited. An `ExecutionError` gives `(exception_node, min_score, full
    error feedback)`; a guide breaking its contract raises `GuideError`; other exceptions
    propagate (trainers record and count them, see `opto.trainers.evaluation`).
    """
    try:
        target = call_agent(agent, x)
    except ExecutionError as exc:
        node = exc.exception_node
        return node, min_score, node.create_feedback("full")
    score, feedback = judge(guide, x, target.data, info)
    return target, score, feedback


def _run_config(name: str, options: TrainOptions, **extra: Any) -> dict[str, Any]:
    """The JSON-able part of a run's configuration, stored with the run."""
    config: dict[str, Any] = {"algorithm": name}
    for key in ("num_epochs", "batch_size", "eval_frequency", "max_steps", "patience", "min_delta"):
        config[key] = getattr(options, key)
    config.update(extra)
    return config


@attrs.frozen(kw_only=True)
class MinibatchOptions(TrainOptions):
    """`MinibatchAlgorithm.train`'s keywords: `TrainOptions` plus `ensure_improvement`
    (re-score the batch after each update and roll it back unless the new mean beats the
    old one by at least `improvement_threshold`; 0: ties are kept)."""

    ensure_improvement: bool = False
    improvement_threshold: float = 0.0


@attrs.frozen(kw_only=True)
class BasicSearchOptions(MinibatchOptions):
    """`BasicSearchAlgorithm.train`'s keywords: `MinibatchOptions` plus `validate_dataset`
    (default: the training set), `validate_guide` (default: the guide) and
    `num_proposals` (4)."""

    validate_dataset: Any = None
    validate_guide: Guide | None = None
    num_proposals: int = attrs.field(default=4, validator=positive_int)


class Minibatch(Trainer):
    """Generic minibatch loop; subclasses implement `forward` (per example) and `update`.

    `train` returns a `TrainResult`; iterating it gives the reference's
    `(train_scores, test_score)`.
    """

    def _accept_optimizer(self, optimizer: Any) -> Any:
        """The minibatch loop steps an optimizer every batch: refuse to build without one."""
        self.optimizer = optimizer
        return self._require_optimizer()

    # -- hooks ------------------------------------------------------------------------------

    def forward(self, agent: Module, x: Any, guide: Guide, info: Any, min_score: Any = 0) -> Any:
        """Run one example on `agent` (a private copy) and return what `update` needs."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def update(self, outputs: list[Any], options: TrainOptions) -> float | None:
        """Consume the batch's outputs, update the agent, return the batch's mean score."""
        raise NotImplementedError(f"{type(self).__name__} must implement update()")

    def _train_extra(self) -> dict[str, Any]:
        """Algorithm keywords stored in the run configuration."""
        return {}

    # -- loop -------------------------------------------------------------------------------

    #: The options class of `train`.
    options_class: type[MinibatchOptions] = MinibatchOptions

    def train(self, guide: Guide, train_dataset: Any, **kwargs: Any) -> TrainResult:
        """Optimize the agent over `num_epochs` passes of minibatches of `train_dataset`.

        Keywords: the fields of `options_class` (`MinibatchOptions`).
        """
        options = self.options_class.from_kwargs(kwargs, algorithm=type(self).__name__)
        self.ensure_improvement = options.ensure_improvement
        self.improvement_threshold = options.improvement_threshold
        self._configure(guide, train_dataset, options)
        return self._train(guide, train_dataset, options)

    def _configure(self, guide: Guide, train_dataset: Any, options: MinibatchOptions) -> None:
        """Hook: take the algorithm's own options before the run starts."""
        return

    def _train(self, guide: Guide, train_dataset: Any, options: TrainOptions) -> TrainResult:
        data = as_dataset(train_dataset, name="train_dataset")
        size = len(data["inputs"])
        if options.batch_size > size:
            raise DatasetError(
                f"batch_size={options.batch_size} is larger than the training set ({size} "
                "examples); use a batch size of at most the dataset size"
            )
        self.loader = DataLoader(data, options.batch_size, seed=self.seed)
        total = options.num_epochs * len(self.loader)
        if options.max_steps is not None:
            total = min(total, options.max_steps)
        config = _run_config(type(self).__name__, options, **self._train_extra())
        with self.session(guide, options, config=config, total_steps=total) as run:
            self._prepare(options)
            run.initial_evaluation()
            while not run.should_stop() and self.loader.n_epochs < options.num_epochs:
                try:
                    xs, infos = next(iter(self.loader))
                except StopIteration:  # drop_last ended the epoch without a batch
                    continue
                outputs = self._forward_batch(xs, infos, guide, options)
                self.errors.count(outputs)
                backup = get_paramset(self.agent)
                score = self._update_batch(outputs, options)
                if self.ensure_improvement:
                    self._ensure_improvement(xs, infos, guide, score, backup, options)
                run.complete_step(
                    train_score=score,
                    feedback=[_feedback_record(*row) for row in zip(xs, infos, outputs)],
                    scores=self._step_scores(),
                    observe=self._step_observation(),
                )
        assert run.result is not None
        return run.result

    def _prepare(self, options: TrainOptions) -> None:
        """Hook run once the session is open (after any resume), before the loop."""
        return

    def _step_scores(self) -> dict[str, Any]:
        """Extra named scores of the last step for the step record."""
        return {}

    def _step_observation(self) -> float | None:
        """Score driving best-so-far and patience when there is no test set."""
        return None

    def _forward_batch(
        self, xs: Sequence[Any], infos: Sequence[Any], guide: Guide, options: TrainOptions
    ) -> list[Any]:
        """`forward` on every example at once, each on its own copy of agent and guide.

        An example whose forward raised (see `opto.trainers.evaluation`) gives a failed
        `Rollout` record instead of an output.
        """
        min_score = self._failure_score(options)

        def one(i: int) -> Any:
            return guarded(
                lambda: self.forward(self.agent.copy(), xs[i], guide.copy(), infos[i], min_score),
                xs[i],
                infos[i],
                min_score,
            )

        return self.local_executor.map(one, range(len(xs)))

    @staticmethod
    def _failure_score(options: TrainOptions) -> Any:
        return options.min_score if options.min_score is not None else 0

    def _update_batch(self, outputs: list[Any], options: TrainOptions) -> float | None:
        """`update` on the outputs of the examples that ran; failed examples count with
        `min_score` in the batch score. Nothing is updated when every example failed."""
        ok = [o for o in outputs if not is_failure(o)]
        failed = len(outputs) - len(ok)
        if not ok:
            logger.warning("every example of the batch failed; no update this step")
            score = None
        else:
            score = self.update(ok, options)
        fill = self._failure_score(options)
        if not failed or not isinstance(fill, (int, float)):
            return score
        if score is None:
            return None if ok else float(fill)
        return (score * len(ok) + fill * failed) / len(outputs)

    def _ensure_improvement(
        self,
        xs: Sequence[Any],
        infos: Sequence[Any],
        guide: Guide,
        score: float | None,
        backup: ParamSet,
        options: TrainOptions,
    ) -> None:
        current = get_paramset(self.agent)
        if current == backup:
            return
        if score is None:
            logger.warning("ensure_improvement: the batch has no score; keeping the update")
            return
        # Under an objective both sides are re-scored with the guide's score dicts (the
        # batch score comes from the guide's feedback call, not from the objective).
        config = options.objective_config
        candidates = [current] if config is None else [backup, current]
        scores = self.validate(
            candidates, xs, infos, guide, min_score=options.min_score, objective_config=config
        )
        if config is not None:
            score = scalar(scores[0], config)
        new_score = scalar(scores[-1], config)
        if score is None:
            return
        if not is_score(new_score) or new_score - score < self.improvement_threshold:
            logger.info(
                "update rejected: batch score %s -> %s (threshold %s); rolled back",
                score,
                new_score,
                self.improvement_threshold,
            )
            self.adopt(backup)


def _feedback_record(x: Any, info: Any, output: Any) -> Any:
    """A JSON-friendly view of one example's forward output for the step record."""
    if isinstance(output, Rollout):
        return output.to_dict()
    if isinstance(output, tuple) and len(output) == 3:
        _, score, feedback = output
        return {
            "x": x,
            "info": info,
            "score": score,
            "feedback": feedback if isinstance(feedback, str) else repr(feedback),
        }
    return {"x": x, "info": info, "output": repr(output)}


class MinibatchAlgorithm(Minibatch):
    """Batched feedback: one backward of all the batch's feedback, then one optimizer step."""

    def forward(
        self, agent: Module, x: Any, guide: Guide, info: Any, min_score: Any = 0
    ) -> tuple[Node[Any], Any, Any]:
        return standard_optimization_step(agent, x, guide, info, min_score)

    def update(self, outputs: list[Any], options: TrainOptions) -> float | None:
        targets = [o[0] for o in outputs]
        scores = [o[1] for o in outputs]
        feedbacks = [o[2] for o in outputs]
        config = options.objective_config
        average = (
            None
            if any(s is None for s in scores)
            else safe_mean([scalar(s, config) for s in scores])
        )
        batch_backward(self._require_optimizer(), targets, feedbacks)
        self.optimizer_step(options)
        return average

    def optimizer_step(self, options: TrainOptions) -> None:
        """Take the step (the hook search algorithms replace with a search over steps)."""
        self.optimizer.step(bypassing=False, **options.step_kwargs)


class BasicSearchAlgorithm(MinibatchAlgorithm):
    """Best of `num_proposals` proposals per step, chosen on validation data.

    The proposals are made at once (each on its own optimizer fork), then every candidate
    (the proposals and the current parameters) is validated on every validation example
    at once, on bound copies: the shared agent only ever receives the winner. The current
    parameters' score is cached while they stay unchanged. Ties go to the earliest
    proposal. With an `objective_config`, candidates are compared by
    `objectives.select_best` on the per-metric means of the guide's score dicts.
    """

    options_class = BasicSearchOptions

    def _configure(self, guide: Guide, train_dataset: Any, options: MinibatchOptions) -> None:
        assert isinstance(options, BasicSearchOptions)
        self.validate_dataset = as_dataset(
            train_dataset if options.validate_dataset is None else options.validate_dataset,
            name="validate_dataset",
        )
        self.validate_guide = options.validate_guide or guide
        self.num_proposals = options.num_proposals
        self._current_score: tuple[str, float | None] | None = None

    def _train_extra(self) -> dict[str, Any]:
        return {"num_proposals": self.num_proposals}

    def _prepare(self, options: TrainOptions) -> None:
        self._last_validation: Any = None
        self._objective = options.objective_config

    def _algorithm_state(self) -> Any:
        return {"current_score": getattr(self, "_current_score", None)}

    def _load_algorithm_state(self, state: Any) -> None:
        cached = None if state is None else state.get("current_score")
        self._current_score = None if cached is None else (cached[0], cached[1])

    def _step_scores(self) -> dict[str, Any]:
        return {"validation": self._last_validation}

    def _step_observation(self) -> float | None:
        return scalar(self._last_validation, self._objective)

    def optimizer_step(self, options: TrainOptions) -> None:
        proposals = self.propose(num_proposals=self.num_proposals, **options.step_kwargs)
        current = get_paramset(self.agent)
        current_key = paramset_key(current)
        candidates: list[ParamSet] = []
        owners: list[Any] = []
        seen: set[str] = {current_key}
        for proposal in proposals:
            key = paramset_key(proposal.paramset)
            if key not in seen:
                seen.add(key)
                candidates.append(proposal.paramset)
                owners.append(proposal.optimizer)
        cached = self._current_score
        need_current = cached is None or cached[0] != current_key
        to_score = candidates + ([current] if need_current else [])
        data = self.validate_dataset
        scores = self.validate(
            to_score,
            data["inputs"],
            data["infos"],
            self.validate_guide,
            min_score=options.min_score,
            max_errors=options.max_errors,
            objective_config=options.objective_config,
        )
        current_score = scores[-1] if need_current else cached[1]  # type: ignore[index]
        # The current parameters come first: on a tie they stay (no change without evidence).
        ranked = [
            (current, current_score, None),
            *zip(candidates, scores[: len(candidates)], owners),
        ]
        best_index = best_of([r[1] for r in ranked], options.objective_config) or 0
        winner, winner_score, owner = ranked[best_index]
        if owner is not None:
            self.adopt(winner, owner)
        self._current_score = (paramset_key(winner), winner_score)
        self._last_validation = winner_score
        self.logger.log(
            "Validation score",
            scalar(winner_score, options.objective_config),
            self.n_iters + 1,
            color="green",
        )
