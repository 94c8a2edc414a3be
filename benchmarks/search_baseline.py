"""`RandomSearch`: the random-search baseline of the search-efficiency benchmark.

opto.trainers has no random search, so the benchmark brings its own, built on the same
machinery as the library's search trainers (`SearchTrainer`, `SearchEngine`,
`Candidate`): every step makes `num_proposals` proposals **from the initial parameters**
(independent samples of the proposer, each from feedback on a fresh minibatch; nothing
is learnt from earlier proposals), scores them on the validation set and keeps the best
candidate seen so far. All of a step's proposals, and then all of its validation
rollouts, run at once on the trainer's executor.
"""

from __future__ import annotations

from typing import Any

import attrs
from opto.trainers.algorithms.base import TrainResult
from opto.trainers.guide import Guide
from opto.trainers.loader import as_dataset
from opto.trainers.options import TrainOptions, optional_positive_int, positive_int
from opto.trainers.search import Candidate, ExplorationJob, SearchTrainer, best_candidate
from opto.trainers.utils import get_paramset

__all__ = ["RandomSearch", "RandomSearchOptions"]


@attrs.frozen(kw_only=True)
class RandomSearchOptions(TrainOptions):
    """`TrainOptions` plus `validate_dataset` (default: the training set),
    `validate_guide` and `num_proposals` (4 per step); `num_epochs` is unbounded when
    `max_steps` is given."""

    num_epochs: int | None = attrs.field(default=None, validator=optional_positive_int)  # type: ignore[assignment]
    validate_dataset: Any = None
    validate_guide: Guide | None = None
    num_proposals: int = attrs.field(default=4, validator=positive_int)


class RandomSearch(SearchTrainer):
    """Best of independent proposals from the initial parameters (see the module doc)."""

    def train(self, guide: Guide, train_dataset: Any, **kwargs: Any) -> TrainResult:
        """Search over `train_dataset`; keywords: the fields of `RandomSearchOptions`."""
        options = RandomSearchOptions.from_kwargs(kwargs, algorithm=type(self).__name__)
        self.options = options
        epochs = options.num_epochs
        self.num_epochs = 1 if epochs is None and options.max_steps is None else epochs
        data = self._training_loader(train_dataset, options.batch_size)
        self.validate_data = (
            data
            if options.validate_dataset is None
            else as_dataset(options.validate_dataset, name="validate_dataset")
        )
        self.validate_guide = options.validate_guide or guide
        self.origin = Candidate(get_paramset(self.agent), optimizer_state=self._initial_state())
        self.incumbent: Candidate | None = None
        config = {"algorithm": type(self).__name__, "num_proposals": options.num_proposals}
        with self.session(guide, options, config=config, total_steps=options.max_steps) as run:
            self.engine = self._engine(options)
            run.initial_evaluation()
            if self.incumbent is None:
                self.incumbent = self._scored([self.origin])[0]
            while not run.should_stop() and not self._epochs_done():
                run.complete_step(**self._iterate(guide))
        assert run.result is not None
        return run.result

    def _scored(self, candidates: list[Candidate]) -> list[Candidate]:
        data = self.validate_data
        rows = self.engine.score(
            [c.paramset for c in candidates], data["inputs"], data["infos"], self.validate_guide
        )
        for candidate, row in zip(candidates, rows):
            candidate.add_scores(row, self.options.objective_config)
        return candidates

    def _iterate(self, guide: Guide) -> dict[str, Any]:
        assert self.loader is not None and self.incumbent is not None
        jobs = []
        for _ in range(self.options.num_proposals):
            xs, infos = self.loader.sample()
            jobs.append(
                ExplorationJob(
                    paramset=self.origin.paramset,
                    xs=xs,
                    infos=infos,
                    optimizer_state=self.origin.optimizer_state,
                )
            )
        results = self.engine.explore(jobs, guide)
        seen = {self.incumbent.key, self.origin.key}
        fresh: list[Candidate] = []
        for result in results:
            for proposal in result.proposals:
                candidate = Candidate(proposal.paramset, optimizer_state=proposal.optimizer_state)
                if candidate.key not in seen:
                    seen.add(candidate.key)
                    fresh.append(candidate)
        pool = [self.incumbent, *self._scored(fresh)]
        config = self.options.objective_config
        if config is not None:
            best = best_candidate(pool, config)
        else:
            best = max(pool, key=lambda c: (c.mean_score() is not None, c.mean_score() or 0.0))
        assert best is not None
        self.incumbent = best
        self._adopt_candidate(best)
        records = [r for result in results for r in result.rollouts]
        scored = [r.score for r in records if isinstance(r.score, (int, float))]
        return {
            "train_score": sum(scored) / len(scored) if scored else None,
            "feedback": [r.to_dict() for r in records],
            "scores": {"best": best.mean_score_dict() if config else best.mean_score()},
            "info": {"num_proposals": len(fresh)},
            "observe": best.mean_score(),
        }

    def _algorithm_state(self) -> Any:
        incumbent = getattr(self, "incumbent", None)
        return {
            "origin": self.origin.to_dict(),
            "incumbent": None if incumbent is None else incumbent.to_dict(),
        }

    def _load_algorithm_state(self, state: Any) -> None:
        if state is None:
            return
        self.origin = Candidate.from_dict(state["origin"])
        incumbent = state["incumbent"]
        self.incumbent = None if incumbent is None else Candidate.from_dict(incumbent)
