"""`SearchTrainer`: the trainer base of the candidate-search algorithms.

A search trainer keeps candidates (`Candidate`) instead of stepping the shared agent: every
LLM call of a search step goes through its `SearchEngine`, so rollouts, proposals and
validations are in flight at once on the trainer's executor (threads, asyncio or Ray),
and the shared agent only ever receives the chosen candidate (`_adopt_candidate`).
"""

from __future__ import annotations

import copy
from typing import Any

from ..algorithms.base import Trainer
from ..loader import DataLoader, DatasetError, as_dataset
from ..options import TrainOptions
from .candidate import Candidate
from .engine import SearchEngine, chain_state

__all__ = ["SearchTrainer"]


class SearchTrainer(Trainer):
    """Base of the candidate-search trainers: one or more optimizers and a `SearchEngine`.

    Every LLM call of a search step goes through `self.engine`, so its rollouts,
    proposals and validations are in flight at once on the trainer's executor (threads,
    asyncio or Ray), and the shared agent only ever receives the chosen candidate.
    """

    num_epochs: int | None  # set by each subclass's `_configure`

    def _accept_optimizer(self, optimizer: Any) -> Any:
        """Accept one optimizer or a list (candidates are spread over them); all must be
        built on the agent's parameters. The first is the trainer's `optimizer`."""
        optimizers = list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer]
        if not optimizers or any(o is None for o in optimizers):
            raise ValueError(
                f"{type(self).__name__} needs an optimizer: pass one (or a list), e.g. "
                f"{type(self).__name__}(agent, OptoPrime(agent.parameters()))"
            )
        self.optimizers = optimizers
        self._check_optimizers()
        return optimizers[0]

    def _check_optimizers(self) -> None:
        own = {id(p) for p in self.agent.parameters()}
        for index, optimizer in enumerate(self.optimizers):
            foreign = [p.name for p in getattr(optimizer, "parameters", ()) if id(p) not in own]
            if foreign:
                raise ValueError(
                    f"optimizer {index} optimizes {foreign}, which are not parameters of the "
                    "agent; build it on agent.parameters()"
                )

    def _engine(self, options: TrainOptions) -> SearchEngine:
        return SearchEngine(
            self.agent,
            self.optimizers,
            self.executor,
            min_score=options.min_score,
            step_kwargs=options.step_kwargs,
            errors=self.errors,
            score_dicts=options.objective_config is not None,
            cache=self.eval_cache,
        )

    def _initial_state(self) -> dict[str, Any] | None:
        return chain_state(self.optimizer)

    def _adopt_candidate(self, candidate: Candidate) -> None:
        """Give the shared agent the chosen candidate's values and the trainer's optimizer
        the state of the candidate's chain (its memory, counters and latest step record);
        a candidate of another optimizer passes its values only."""
        self.adopt(candidate.paramset)
        if candidate.optimizer_state is not None and candidate.optimizer_index == 0:
            self.optimizer.load_state_dict(copy.deepcopy(candidate.optimizer_state))

    def _epochs_done(self) -> bool:
        """Whether the loader has gone through `num_epochs` (set by the subclass's
        `_configure`; None means no epoch limit)."""
        assert self.loader is not None
        return self.num_epochs is not None and self.loader.n_epochs >= self.num_epochs

    def _training_loader(
        self, train_dataset: Any, batch_size: int, what: str = "batch_size"
    ) -> dict[str, list[Any]]:
        """The training set, with `self.loader` on it; `what` names the batch size in errors
        (the keyword, or how it was computed from the keywords)."""
        data = as_dataset(train_dataset, name="train_dataset")
        if batch_size > len(data["inputs"]):
            raise DatasetError(
                f"{what}={batch_size} is larger than the training set "
                f"({len(data['inputs'])} examples); use a batch size of at most the dataset size"
            )
        self.loader = DataLoader(data, batch_size, seed=self.seed)
        return data
