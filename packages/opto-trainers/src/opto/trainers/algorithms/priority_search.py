"""`PrioritySearch`: search with a priority queue of candidates.

The search machinery (candidates, memories, the engine, the trainer base) lives in
`opto.trainers.search`; its names are re-exported here, where the reference has them.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import attrs

from ..evaluation import Rollout
from ..guide import Guide
from ..loader import DataLoader, as_dataset
from ..options import (
    TrainOptions,
    TrainResult,
    optional_non_negative_int,
    optional_positive_int,
    positive_int,
)
from ..ranking import score_key
from ..scoring import reward
from ..search import (
    Candidate,
    ExplorationJob,
    HeapMemory,
    ParetoHeapMemory,
    SearchTrainer,
    best_candidate,
)
from ..search import (  # the search machinery, where the reference has it
    ExplorationResult as ExplorationResult,
)
from ..search import SearchEngine as SearchEngine
from ..search import SearchProposal as SearchProposal
from ..search import bind_optimizer as bind_optimizer
from ..search import bind_worker as bind_worker
from ..search import chain_state as chain_state
from ..search import paramset_key as paramset_key
from ..search import strict_mean as strict_mean
from ..utils import get_paramset, safe_mean

__all__ = ["ModuleCandidate", "PrioritySearch", "PrioritySearchOptions"]

#: The reference's name of a search candidate.
ModuleCandidate = Candidate

_SCORE_FUNCTIONS = ("mean", "ucb", "time")


def _score_function(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in _SCORE_FUNCTIONS:
        raise ValueError(f"score_function must be one of {_SCORE_FUNCTIONS}, not {value!r}")


@attrs.frozen(kw_only=True)
class PrioritySearchOptions(TrainOptions):
    """`PrioritySearch.train`'s keywords: `TrainOptions` plus the search's own.

    `validate_dataset` (default: validate on the very batch that produced the proposals),
    `validate_guide`, `num_batches` (1), `score_range` ((-inf, inf); its low end scores
    failed rollouts when `min_score` is unset), `num_epochs` (1, or unbounded when only
    `max_steps`/`num_steps` is given), `num_candidates` (10), `num_proposals` (1),
    `validate_exploration_candidates` (True), `use_best_candidate_to_explore` (True),
    `long_term_memory_size`, `short_term_memory_size`, `memory_update_frequency` (0:
    long-term memory only; None: short-term only; k: merge the short-term memory into the
    long-term one every k iterations), `score_function` ("mean", "ucb" or "time"),
    `ucb_exploration_constant` (1.0), `decouple_optimizers` (True).
    """

    num_epochs: int | None = attrs.field(default=None, validator=optional_positive_int)  # type: ignore[assignment]
    validate_dataset: Any = None
    validate_guide: Guide | None = None
    num_batches: int = attrs.field(default=1, validator=positive_int)
    score_range: Sequence[float] | None = None
    num_candidates: int = attrs.field(default=10, validator=positive_int)
    num_proposals: int = attrs.field(default=1, validator=positive_int)
    validate_exploration_candidates: bool = True
    use_best_candidate_to_explore: bool = True
    long_term_memory_size: int | None = attrs.field(default=None, validator=optional_positive_int)
    short_term_memory_size: int | None = attrs.field(
        default=None, validator=optional_non_negative_int
    )
    memory_update_frequency: int | None = attrs.field(
        default=0, validator=optional_non_negative_int
    )
    score_function: str = attrs.field(default="mean", validator=_score_function)
    ucb_exploration_constant: float = 1.0
    decouple_optimizers: bool = True

    def __attrs_post_init__(self) -> None:
        low, high = self.score_bounds
        if self.score_function == "ucb" and not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(
                "score_function='ucb' needs a finite score_range=(min, max) to scale the "
                "confidence bound; pass e.g. score_range=(0, 1)"
            )

    @property
    def score_bounds(self) -> tuple[float, float]:
        """`score_range` as floats ((-inf, inf) when unset); ValueError if low > high."""
        if self.score_range is None:
            return -math.inf, math.inf
        low, high = (float(v) for v in self.score_range)
        if low > high:
            raise ValueError(
                f"score_range must be (low, high) with low <= high, not {self.score_range}"
            )
        return low, high


class PrioritySearch(SearchTrainer):
    """Search with a priority queue of candidates (the reference's general search engine).

    Each iteration: take the best candidate (by mean score) and pop the highest-priority
    ones until `num_candidates` explore; run each on `num_batches` minibatches of
    `batch_size` training examples; from each (candidate, minibatch) make `num_proposals`
    proposals, each on its own optimizer fork (the chain's memory is carried on when
    `decouple_optimizers`); validate the proposals (and, with a validation set, the
    explorers again) with every candidate x example rollout at once; push everything
    back with its priority; the shared agent gets the best candidate by mean score.

    `optimizer` may be a list: candidates are spread over the optimizers and keep theirs.
    Differences from the reference (its bugs fixed): positional `train` arguments work;
    memory trimming keeps the true top k with deterministic ties; every proposal gets its
    own optimizer fork; `score_function="ucb"` needs a finite `score_range` (an error,
    not infinite priorities); `"time"` favours the newest candidates; no iteration's
    rollouts are wasted; with `memory_update_frequency` the memories are merged once per
    k iterations (not as a side effect of reading a property) and candidates are drawn
    from the short-term memory first, then the long-term one.

    With an `objective_config`, rollouts keep the guide's score dicts, every score is the
    objective's scalar of its dict, the memories are `ParetoHeapMemory` (in "pareto" mode
    they pop from the Pareto front) and `exploit` uses `objectives.select_best`.

    Subclass hooks: `options_class`, `validates_proposals`, `filter_candidates`,
    `exploration_context`, `_run_jobs`.
    """

    #: The attrs class of `train`'s keywords (a subclass may extend it).
    options_class: ClassVar[type[PrioritySearchOptions]] = PrioritySearchOptions
    #: Whether proposals are scored on validation rollouts as soon as they are made
    #: (False: their scores come from exploring later batches).
    validates_proposals: ClassVar[bool] = True

    def train(self, guide: Guide, train_dataset: Any, **kwargs: Any) -> TrainResult:
        """Search over `train_dataset` with feedback from `guide`.

        Keywords: the fields of `PrioritySearchOptions` (`TrainOptions` plus the search's
        own, e.g. `num_candidates`, `num_proposals`, `score_function`).
        """
        options = self.options_class.from_kwargs(kwargs, algorithm=type(self).__name__)
        self._configure(guide, train_dataset, options)
        config = {"algorithm": type(self).__name__, **self._config}
        self._initialize_memory()
        with self.session(guide, options, config=config, total_steps=options.max_steps) as run:
            self.engine = self._engine(options)
            run.initial_evaluation()
            while not run.should_stop() and not self._epochs_done():
                record = self._iterate(guide)
                run.complete_step(**record)
        assert run.result is not None
        return run.result

    # -- configuration ----------------------------------------------------------------------

    def _configure(self, guide: Guide, train_dataset: Any, options: PrioritySearchOptions) -> None:
        low, high = options.score_bounds
        self.min_score, self.max_score = low, high
        if options.min_score is None and math.isfinite(low):
            options = attrs.evolve(options, min_score=low)
        self.options = options
        self.num_batches = options.num_batches
        self.num_proposals = options.num_proposals
        self.num_candidates = options.num_candidates
        num_epochs = options.num_epochs
        self.num_epochs = 1 if num_epochs is None and options.max_steps is None else num_epochs
        self.score_function = options.score_function
        self.ucb_exploration_constant = float(options.ucb_exploration_constant)
        self.validate_exploration_candidates = bool(options.validate_exploration_candidates)
        self.use_best_candidate_to_explore = bool(options.use_best_candidate_to_explore)
        self.decouple_optimizers = bool(options.decouple_optimizers)
        self.memory_update_frequency = options.memory_update_frequency
        memory: Callable[..., HeapMemory] = HeapMemory
        if options.objective_config is not None:
            memory = functools.partial(ParetoHeapMemory, options.objective_config)
        self.long_term_memory = memory(
            options.long_term_memory_size, processing_fun=Candidate.compress
        )
        self.short_term_memory = memory(options.short_term_memory_size)
        self.validate_guide = options.validate_guide or guide
        self._training_loader(
            train_dataset,
            options.batch_size * self.num_batches,
            f"batch_size * num_batches ({options.batch_size} * {self.num_batches})",
        )
        self.validate_loader = (
            None
            if options.validate_dataset is None
            else DataLoader(
                as_dataset(options.validate_dataset, name="validate_dataset"),
                options.batch_size * self.num_batches,
                seed=None if self.seed is None else self.seed + 1,
            )
        )
        self._config = {
            "num_batches": self.num_batches,
            "num_candidates": self.num_candidates,
            "num_proposals": self.num_proposals,
            "score_function": self.score_function,
            "batch_size": options.batch_size,
        }

    # -- memory -----------------------------------------------------------------------------

    def _initialize_memory(self) -> None:
        """Seed the memory with the agent's values, once per optimizer."""
        self._created = 0
        self.long_term_memory.reset()
        self.short_term_memory.reset()
        paramset = get_paramset(self.agent)
        for index, optimizer in enumerate(self.optimizers[: self.num_candidates]):
            candidate = self._new_candidate(paramset, index, chain_state(optimizer))
            self.memory.push(self.max_score, candidate)

    @property
    def memory(self) -> HeapMemory:
        """Where candidates go after validation.

        `memory_update_frequency=None`: the short-term memory only; 0 (or a short-term
        size of 0): the long-term memory only; k > 0: the short-term memory, merged into
        the long-term one (whose candidates keep only their scores) every k iterations.
        """
        freq = self.memory_update_frequency
        if freq is None:
            return self.short_term_memory
        if freq == 0 or self.short_term_memory.size == 0:
            return self.long_term_memory
        return self.short_term_memory

    def _memories(self) -> list[HeapMemory]:
        """The memories candidates are drawn from, in order (recent ones first)."""
        memory = self.memory
        if memory is self.short_term_memory and self.memory_update_frequency is not None:
            return [memory, self.long_term_memory]
        return [memory]

    def _swap_memory(self) -> None:
        """Every `memory_update_frequency` iterations, merge short- into long-term memory."""
        freq = self.memory_update_frequency
        if freq and self.memory is self.short_term_memory and self.n_iters % freq == 0:
            self.long_term_memory.append(self.short_term_memory)
            self.short_term_memory.reset()

    def compute_exploration_priority(self, candidate: Candidate) -> float:
        """Priority in memory: mean score, UCB, or creation order ("time": newest first)."""
        if self.score_function == "time":
            return float(candidate.created)
        if self.score_function == "ucb":
            _, _, ucb = candidate.compute_score_confidence(
                self.min_score, self.max_score, self.ucb_exploration_constant, self.n_iters + 1
            )
            return ucb
        mean = candidate.mean_score()
        return self.max_score if mean is None else mean

    def compute_exploitation_priority(self, candidate: Candidate) -> float | None:
        """What picks the agent's parameters: the mean score."""
        return candidate.mean_score()

    def exploit(self) -> Candidate | None:
        """The best candidate in memory by exploitation priority (not removed); under an
        `objective_config`, by `objectives.select_best` on the mean score dicts."""
        if self.options.objective_config is not None:
            pool = [c for memory in self._memories() for c in memory]
            return best_candidate(pool, self.options.objective_config)
        best: Candidate | None = None
        for memory in self._memories():
            top = memory.best(self.compute_exploitation_priority)
            if top is not None and (best is None or self._better(top, best)):
                best = top
        return best

    def _better(self, a: Candidate, b: Candidate) -> bool:
        """Whether `a` beats `b` on exploitation priority (ties: the older one)."""
        pa, pb = self.compute_exploitation_priority(a), self.compute_exploitation_priority(b)
        return (score_key(pa), -a.created) > (score_key(pb), -b.created)

    def explore(self) -> list[Candidate]:
        """The candidates that explore this iteration (popped from memory, best first)."""
        chosen: list[Candidate] = []
        best = self.exploit() if self.use_best_candidate_to_explore else None
        if best is not None:
            for memory in self._memories():
                memory.remove(best)
            chosen.append(best)
        for memory in self._memories():
            while memory and len(chosen) < self.num_candidates:
                chosen.append(memory.pop()[1])
        return chosen

    # -- one iteration ----------------------------------------------------------------------

    def _run_jobs(
        self, jobs: list[ExplorationJob], explorers: list[Candidate], guide: Guide
    ) -> list[ExplorationResult]:
        """Explore the jobs (explorer `i // num_batches` runs job `i`) on the engine."""
        return self.engine.explore(jobs, guide)

    def _iterate(self, guide: Guide) -> dict[str, Any]:
        self._swap_memory()
        explorers = self.explore()
        context = self.exploration_context(explorers)
        assert self.loader is not None
        xs, infos = self.loader.sample()
        size = self.options.batch_size
        batches = [(xs[i : i + size], infos[i : i + size]) for i in range(0, len(xs), size)]
        jobs = [
            ExplorationJob(
                paramset=c.paramset,
                xs=bx,
                infos=bi,
                num_proposals=self.num_proposals,
                optimizer_index=c.optimizer_index,
                optimizer_state=c.optimizer_state if self.decouple_optimizers else None,
                context=context,
            )
            for c in explorers
            for bx, bi in batches
        ]
        results = self._run_jobs(jobs, explorers, guide)
        train_records: list[Rollout] = []
        proposals: list[Candidate] = []
        seen = {c.key for c in explorers}
        for job_index, result in enumerate(results):
            explorer = explorers[job_index // len(batches)]
            explorer.add_rollouts(result.rollouts, self.options.objective_config)
            train_records.extend(result.rollouts)
            for proposal in result.proposals:
                candidate = self._new_candidate(
                    proposal.paramset, proposal.optimizer_index, proposal.optimizer_state
                )
                if candidate.key not in seen:
                    seen.add(candidate.key)
                    proposals.append(candidate)
        proposals = self.filter_candidates(proposals, explorers)
        if self.validates_proposals:
            self._validate(proposals, explorers, xs, infos)
        if not self.decouple_optimizers:
            self._advance_shared_optimizers(proposals)
        unique_explorers = list({id(c): c for c in explorers}.values())
        for candidate in unique_explorers + proposals:
            self.memory.push(self.compute_exploration_priority(candidate), candidate)
        best = self.exploit()
        assert best is not None
        self._adopt_candidate(best)
        best_mean = best.mean_score()
        config = self.options.objective_config
        train_score = safe_mean([reward(r, config) for r in train_records])
        info = {
            "num_proposals": len(proposals),
            "num_explorers": len(unique_explorers),
            "memory_size": len(self.memory),
            "best_num_rollouts": best.num_rollouts,
        }
        step = self.n_iters + 1
        self.logger.log("Update/best_mean_score", best_mean, step, color="green")
        for name, value in info.items():
            self.logger.log(f"Update/{name}", value, step)
        return {
            "train_score": train_score,
            "feedback": [r.to_dict() for r in train_records],
            "scores": {"best_mean": best_mean if config is None else best.mean_score_dict()},
            "info": info,
            "observe": best_mean,
        }

    def filter_candidates(
        self, proposals: list[Candidate], explorers: list[Candidate]
    ) -> list[Candidate]:
        """The proposals worth validating (all of them; POLCA keeps an epsilon-net)."""
        return proposals

    def exploration_context(self, explorers: list[Candidate]) -> str | None:
        """Text appended to every explorer's feedback this iteration (none here)."""
        return None

    def _validate(
        self,
        proposals: list[Candidate],
        explorers: list[Candidate],
        xs: list[Any],
        infos: list[Any],
    ) -> None:
        """Score the proposals (and, on a separate validation set, the explorers)."""
        if self.validate_loader is not None:
            xs, infos = self.validate_loader.sample()
            rescore = list({id(c): c for c in explorers}.values())
            if not self.validate_exploration_candidates:
                rescore = []
        else:
            rescore = []
        targets = proposals + rescore
        records = self.engine.rollouts(
            [c.paramset for c in targets], xs, infos, self.validate_guide
        )
        for candidate, rows in zip(targets, records):
            candidate.add_rollouts(rows, self.options.objective_config)

    def _advance_shared_optimizers(self, proposals: list[Candidate]) -> None:
        """Without decoupling, each optimizer takes the chain state of its latest proposal."""
        for candidate in proposals:
            if candidate.optimizer_state is not None:
                self.optimizers[candidate.optimizer_index].load_state_dict(
                    copy.deepcopy(candidate.optimizer_state)
                )
            candidate.optimizer_state = None

    # -- checkpoints ------------------------------------------------------------------------

    def _algorithm_state(self) -> Any:
        return {
            "created": getattr(self, "_created", 0),
            "long_term_memory": self.long_term_memory.to_list(),
            "short_term_memory": self.short_term_memory.to_list(),
            "validate_loader": None
            if getattr(self, "validate_loader", None) is None
            else self.validate_loader.state_dict(),
        }

    def _load_algorithm_state(self, state: Any) -> None:
        if state is None:
            return
        self._created = int(state["created"])
        self.long_term_memory.load_list(state["long_term_memory"])
        self.short_term_memory.load_list(state["short_term_memory"])
        if state["validate_loader"] is not None and self.validate_loader is not None:
            self.validate_loader.load_state_dict(state["validate_loader"])
