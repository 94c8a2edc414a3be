"""`PrioritySearch` and the candidate-search engine that `BeamSearch` and `UCBSearch` share.

Candidates are values: a `ModuleCandidate` holds a parameter set (`{path: value}`), the
index of the optimizer that explores it, and that optimizer chain's JSON state. Work on
candidates goes through a `SearchEngine`, which never touches the shared agent:

* `explore(jobs, guide)`: for each job (a candidate and a minibatch), run every example on a copy
  of the agent bound to the candidate (its own parameter nodes), join the feedback with
  `batchify`, backward into an optimizer copy bound to those nodes, and take
  `num_proposals` steps, each on its own optimizer copy;
* `score(paramsets, xs, infos, guide)`: every candidate x example rollout at once.

With an in-process executor (threads, asyncio, serial) each stage puts every independent
call in flight at once: all rollouts of all jobs, then all proposal steps of all jobs. With
an out-of-process executor (`executor.in_process` is False, e.g. `RayExecutor`) each job is
one task (forward, backward and steps need the same trace graph, so they run together)
and each validation rollout is one task; both return plain records (inputs, output data,
score, feedback) and the optimizer chain's state, never graph nodes.
"""

from __future__ import annotations

import copy
import functools
import heapq
import json
import logging
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs
from opto.trace.modules import Module
from opto.utils.usage import BudgetExceeded

from ..executors import Executor, SerialExecutor, ThreadExecutor
from ..guide import Guide
from ..loader import DataLoader, DatasetError, as_dataset
from ..objectives import ObjectiveConfig, aggregate_score_dicts
from ..ranking import rank_value, score_key
from ..runner import ErrorBudget, Rollout, TooManyErrorsError, run_example, score_dict_of
from ..scoring import mean_score, reward
from ..utils import ParamSet, batchify, bind, get_paramset, paramset_from_update, safe_mean
from .base import Trainer, TrainOptions, TrainResult, copy_optimizer

__all__ = [
    "ExplorationJob",
    "ExplorationResult",
    "HeapMemory",
    "ModuleCandidate",
    "PrioritySearch",
    "SearchEngine",
    "SearchProposal",
    "SearchTrainer",
    "bind_optimizer",
    "bind_worker",
    "chain_state",
    "load_chain_state",
    "paramset_key",
    "strict_mean",
]

logger = logging.getLogger(__name__)

_NEG_INF = float("-inf")


# -- candidates as values -------------------------------------------------------------------


def paramset_key(paramset: Mapping[str, Any]) -> str:
    """A stable identity for a parameter set (JSON of its sorted items)."""
    return json.dumps(paramset, sort_keys=True, default=repr)


def bind_worker(agent: Module, paramset: Mapping[str, Any]) -> Module:
    """A copy of `agent` holding `paramset`, whose parameters keep the agent's names.

    The copy has its own parameter nodes (the shared agent is untouched); their names are
    reset to the originals so optimizer prompts read exactly as for the agent itself.
    """
    worker = bind(agent, paramset)
    names = {path: node._name for path, node in agent.named_parameters()}
    for path, node in worker.named_parameters():
        if path in names:
            node._name = names[path]
    return worker


def bind_optimizer(optimizer: Any, agent: Module, worker: Module, state: Any = None) -> Any:
    """A copy of `optimizer` (built on `agent`'s parameters) that optimizes `worker`'s.

    `state` (an optimizer `state_dict()`) is loaded into the copy when given, so an
    optimizer chain with memory continues where it stood.
    """
    nodes = dict(worker.named_parameters())
    paths = {id(node): path for path, node in agent.named_parameters()}
    bound = copy_optimizer(optimizer)
    bound.parameters = [nodes.get(paths.get(id(p), ""), p) for p in optimizer.parameters]
    if state is not None:
        bound.load_state_dict(copy.deepcopy(state))
    return bound


def chain_state(optimizer: Any) -> dict[str, Any] | None:
    """The optimizer's JSON state without its step log and parameter names (a chain's
    state moves between copies whose nodes are named alike but may be numbered apart)."""
    state_dict = getattr(optimizer, "state_dict", None)
    if not callable(state_dict):
        return None
    state = dict(state_dict())
    state.pop("steps", None)
    state.pop("parameters", None)
    return state


def load_chain_state(optimizer: Any, state: Mapping[str, Any]) -> None:
    """Load a chain's state into `optimizer`, which keeps its own step log."""
    merged = copy.deepcopy(dict(state))
    steps = optimizer.state_dict().get("steps")
    if steps is not None:
        merged["steps"] = steps
    optimizer.load_state_dict(merged)


@attrs.define(kw_only=True, eq=False)
class ExplorationJob:
    """One candidate explored on one minibatch: rollouts, one backward, N proposals.

    `context` is appended to the joined feedback before the backward (e.g. a history of
    earlier attempts).
    """

    paramset: ParamSet
    xs: list[Any]
    infos: list[Any]
    num_proposals: int = 1
    optimizer_index: int = 0
    optimizer_state: dict[str, Any] | None = None
    context: str | None = None


@attrs.define(kw_only=True, eq=False)
class SearchProposal:
    """A proposed parameter set and the state of the optimizer copy that made it."""

    paramset: ParamSet
    optimizer_index: int
    optimizer_state: dict[str, Any] | None


@attrs.define(kw_only=True, eq=False)
class ExplorationResult:
    """What exploring one job produced: plain rollout records and the proposals."""

    rollouts: list[Rollout]
    proposals: list[SearchProposal]

    @property
    def mean_score(self) -> float | None:
        """Mean score of the job's rollouts (None if none scored)."""
        return safe_mean([r.score for r in self.rollouts])


def _plain(record: Rollout) -> Rollout:
    """The record without its graph node (safe to keep, pickle or send)."""
    return attrs.evolve(record, target=None)


def _backward(optimizer: Any, rollouts: Sequence[Rollout], context: str | None) -> bool:
    """Join the rollouts' targets and feedback and propagate; False if none has a graph."""
    usable = [r for r in rollouts if r.target is not None]
    if not usable:
        return False
    target = batchify(*[r.target for r in usable])
    feedback = batchify(*[r.feedback for r in usable]).data
    if context:
        feedback = "--- Current Feedback ---\n" + feedback + context
    optimizer.zero_feedback()
    optimizer.backward(target, feedback)
    return True


def _step(optimizer: Any, step_kwargs: Mapping[str, Any]) -> dict[Any, Any] | None:
    """One bypassing step; a failed step is logged and yields no proposal."""
    try:
        return optimizer.step(bypassing=True, **step_kwargs)
    except (BudgetExceeded, TooManyErrorsError):
        raise
    except Exception as exc:
        logger.warning("optimizer step failed (%s: %s); no proposal", type(exc).__name__, exc)
        return None


def _explore(
    agent: Module,
    optimizers: Sequence[Any],
    guide: Guide,
    jobs: Sequence[ExplorationJob],
    executor: Executor,
    min_score: Any,
    step_kwargs: Mapping[str, Any],
    score_dicts: bool = False,
) -> list[ExplorationResult]:
    """Explore `jobs` in two waves on `executor`: every rollout, then every step."""
    workers = [bind_worker(agent, job.paramset) for job in jobs]
    items = [(j, x, info) for j, job in enumerate(jobs) for x, info in zip(job.xs, job.infos)]
    flat = executor.map(
        lambda item: run_example(
            workers[item[0]].copy(),
            item[1],
            guide.copy(),
            item[2],
            min_score,
            score_dicts=score_dicts,
        ),
        items,
    )
    grouped: list[list[Rollout]] = [[] for _ in jobs]
    for (j, _, _), record in zip(items, flat):
        grouped[j].append(record)
    step_items: list[tuple[int, Any]] = []
    backwarded: list[Any] = []
    for j, job in enumerate(jobs):
        optimizer = bind_optimizer(
            optimizers[job.optimizer_index], agent, workers[j], job.optimizer_state
        )
        backwarded.append(optimizer)
        if _backward(optimizer, grouped[j], job.context):
            step_items.extend((j, copy_optimizer(optimizer)) for _ in range(job.num_proposals))
    updates = executor.map(lambda item: _step(item[1], step_kwargs), step_items)
    proposals: list[list[SearchProposal]] = [[] for _ in jobs]
    for (j, stepped), update in zip(step_items, updates):
        if update:
            job = jobs[j]
            proposals[j].append(
                SearchProposal(
                    paramset=paramset_from_update(workers[j], update, job.paramset),
                    optimizer_index=job.optimizer_index,
                    optimizer_state=chain_state(stepped),
                )
            )
    for optimizer in backwarded:
        optimizer.zero_feedback()
    return [
        ExplorationResult(rollouts=[_plain(r) for r in grouped[j]], proposals=proposals[j])
        for j in range(len(jobs))
    ]


class _ExploreTask:
    """A whole exploration job as one task (for executors that run out of process)."""

    def __init__(
        self,
        agent: Module,
        optimizers: Sequence[Any],
        guide: Guide,
        min_score: Any,
        step_kwargs: Mapping[str, Any],
        threads: int = 1,
        score_dicts: bool = False,
    ) -> None:
        self.score_dicts = score_dicts
        self.agent = agent
        self.optimizers = list(optimizers)
        self.guide = guide
        self.min_score = min_score
        self.step_kwargs = dict(step_kwargs)
        self.threads = threads

    def __call__(self, job: ExplorationJob) -> ExplorationResult:
        executor = SerialExecutor() if self.threads <= 1 else ThreadExecutor(self.threads)
        with executor:
            (result,) = _explore(
                self.agent,
                self.optimizers,
                self.guide,
                [job],
                executor,
                self.min_score,
                self.step_kwargs,
                self.score_dicts,
            )
        return result


class _ScoreTask:
    """Validation rollouts `(candidate index, x, info) -> plain record`.

    Each candidate is bound once per task instance (per worker, when shipped) and every
    rollout runs on a private copy of it, so agent state never leaks between rollouts.
    """

    def __init__(
        self,
        agent: Module,
        paramsets: Sequence[ParamSet],
        guide: Guide,
        min_score: Any,
        score_dicts: bool = False,
    ) -> None:
        self.score_dicts = score_dicts
        self.agent = agent
        self.paramsets = list(paramsets)
        self.guide = guide
        self.min_score = min_score
        self._workers: dict[int, Module] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_workers"] = {}
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _worker(self, index: int) -> Module:
        with self._lock:
            worker = self._workers.get(index)
            if worker is None:
                worker = bind_worker(self.agent, self.paramsets[index])
                self._workers[index] = worker
            return worker.copy()

    def __call__(self, item: tuple[int, Any, Any]) -> Rollout:
        index, x, info = item
        worker, guide = self._worker(index), self.guide.copy()
        record = run_example(
            worker, x, guide, info, self.min_score, scores_only=True, score_dicts=self.score_dicts
        )
        if self.score_dicts and record.score_dict is None:
            record.score_dict = score_dict_of(self.min_score)
        return _plain(record)


class SearchEngine:
    """Explores and scores candidates on an executor; never touches the shared agent.

    Args:
        agent: the shared agent (a template: candidates run on bound copies of it).
        optimizers: the trainer's optimizers (templates: every job steps its own copy).
        executor: where the work runs; `executor.in_process = False` selects one task per
            exploration job (see the module docstring), which may use
            `executor.task_threads` threads for its own rollouts and proposals.
        min_score: score of rollouts that fail.
        step_kwargs: extra keyword arguments for `optimizer.step`.
        errors: counts the failed examples of every exploration and scoring (default:
            unlimited); it raises `TooManyErrorsError` once its limit is passed.
        score_dicts: score candidates with the guide's score dicts (`Guide.get_score_dict`).
    """

    def __init__(
        self,
        agent: Module,
        optimizers: Sequence[Any],
        executor: Executor,
        *,
        min_score: Any = None,
        step_kwargs: Mapping[str, Any] | None = None,
        errors: ErrorBudget | None = None,
        score_dicts: bool = False,
    ) -> None:
        self.agent = agent
        self.score_dicts = score_dicts
        self.optimizers = list(optimizers)
        self.executor = executor
        self.min_score = min_score
        self.step_kwargs = dict(step_kwargs or {})
        self.errors = errors if errors is not None else ErrorBudget(None)

    @property
    def in_process(self) -> bool:
        """Whether tasks run in this process (graphs may cross task boundaries)."""
        return bool(getattr(self.executor, "in_process", True))

    def explore(self, jobs: Sequence[ExplorationJob], guide: Guide) -> list[ExplorationResult]:
        """Run every job: rollouts, one backward, `num_proposals` proposals each."""
        if not jobs:
            return []
        if self.in_process:
            results = _explore(
                self.agent,
                self.optimizers,
                guide,
                jobs,
                self.executor,
                self.min_score,
                self.step_kwargs,
                self.score_dicts,
            )
        else:
            task = _ExploreTask(
                self.agent,
                self.optimizers,
                guide,
                self.min_score,
                self.step_kwargs,
                threads=int(getattr(self.executor, "task_threads", 1)),
                score_dicts=self.score_dicts,
            )
            results = self.executor.map(task, list(jobs))
        self.errors.count(r for result in results for r in result.rollouts)
        return results

    def rollouts(
        self,
        paramsets: Sequence[ParamSet],
        xs: Sequence[Any],
        infos: Sequence[Any],
        guide: Guide,
        *,
        repeats: int = 1,
    ) -> list[list[Rollout]]:
        """Every candidate on every example (`repeats` times each), all at once."""
        if not paramsets:
            return []
        task = _ScoreTask(self.agent, paramsets, guide, self.min_score, self.score_dicts)
        items = [
            (c, x, info)
            for c in range(len(paramsets))
            for x, info in zip(xs, infos)
            for _ in range(repeats)
        ]
        flat = self.executor.map(task, items)
        self.errors.count(flat)
        n = len(xs) * repeats
        return [flat[c * n : (c + 1) * n] for c in range(len(paramsets))]

    def score(
        self,
        paramsets: Sequence[ParamSet],
        xs: Sequence[Any],
        infos: Sequence[Any],
        guide: Guide,
    ) -> list[list[Any]]:
        """The scores (score dicts with `score_dicts`) of every candidate on every example."""
        runs = self.rollouts(paramsets, xs, infos, guide)
        return [[r.score_dict if self.score_dicts else r.score for r in rs] for rs in runs]


# -- the trainer base of the search algorithms ----------------------------------------------


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, not {value!r}")
    return value


def strict_mean(scores: Sequence[Any]) -> float:
    """Mean score for ranking: -inf when any rollout has no score (a failure counts)."""
    if not scores or any(s is None for s in scores):
        return _NEG_INF
    return math.fsum(float(s) for s in scores) / len(scores)


class SearchTrainer(Trainer):
    """Base of the candidate-search trainers: a `SearchEngine` and Ray-safe evaluation.

    Every LLM call of a search step goes through `self.engine`, so its rollouts,
    proposals and validations are in flight at once on the trainer's executor (threads,
    asyncio or Ray), and the shared agent only ever receives the chosen candidate.
    """

    num_epochs: int | None  # set by each subclass's `_configure`

    def __init__(
        self,
        agent: Module,
        optimizer: Any,
        num_threads: int | None = None,
        logger: Any = None,
        *,
        executor: Any = None,
        seed: int | None = None,
    ) -> None:
        optimizers = list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer]
        if not optimizers or any(o is None for o in optimizers):
            raise ValueError(
                f"{type(self).__name__} needs an optimizer: pass one (or a list), e.g. "
                f"{type(self).__name__}(agent, OptoPrime(agent.parameters()))"
            )
        super().__init__(agent, optimizers[0], num_threads, logger, executor=executor, seed=seed)
        self.optimizers = optimizers
        self._check_optimizers()

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
        )

    def _initial_state(self) -> dict[str, Any] | None:
        return chain_state(self.optimizer)

    def _adopt_candidate(self, paramset: ParamSet, optimizer_state: Any = None) -> None:
        """Give the shared agent the chosen candidate and the trainer's optimizer the state
        of the candidate's chain (its memory; the optimizer keeps its own step log)."""
        self.adopt(paramset)
        if optimizer_state is not None:
            load_chain_state(self.optimizer, optimizer_state)

    def evaluate(
        self,
        agent: Module,
        guide: Guide,
        xs: Sequence[Any],
        infos: Sequence[Any],
        min_score: Any = None,
        num_samples: int = 1,
        num_threads: int | None = None,
        description: str | None = None,
        *,
        max_errors: int | None = None,
        objective_config: ObjectiveConfig | None = None,
    ) -> Any:
        """Mean score of `agent`'s current values on the examples, every rollout at once.

        Runs on bound copies through the engine's tasks on the trainer's executor, so it
        also works on executors that run out of process (`num_threads` and `description`
        are accepted for compatibility).
        """
        engine = SearchEngine(
            agent,
            self.optimizers,
            self.executor,
            min_score=min_score,
            errors=ErrorBudget(max_errors),
            score_dicts=objective_config is not None,
        )
        (row,) = engine.score(
            [get_paramset(agent)], list(xs) * num_samples, list(infos) * num_samples, guide
        )
        return mean_score(row, objective_config)

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


# -- PrioritySearch -------------------------------------------------------------------------


@attrs.define(kw_only=True, eq=False)
class ModuleCandidate:
    """A candidate: a parameter set, its optimizer chain, and the scores it earned.

    `created` orders candidates by creation (larger is newer). `rollouts` are plain
    records (`Rollout.to_dict()`); compressed candidates keep only the scores.
    """

    update_dict: ParamSet
    optimizer_index: int = 0
    optimizer_state: dict[str, Any] | None = None
    created: int = 0
    rollouts: list[dict[str, Any]] = attrs.field(factory=list)

    @property
    def key(self) -> str:
        """Identity of the candidate's values and optimizer (duplicates share it)."""
        return f"{self.optimizer_index}:{paramset_key(self.update_dict)}"

    def get_module(self, base_module: Module) -> Module:
        """A new module bound to this candidate's values (the base is not modified)."""
        return bind_worker(base_module, self.update_dict)

    def add_rollouts(
        self, records: Sequence[Rollout | Mapping[str, Any]], config: ObjectiveConfig | None = None
    ) -> None:
        """Count more rollouts toward the candidate's statistics (under `config`, each
        score is the rollout's score dict reduced by it)."""
        for record in records:
            row = record.to_dict() if isinstance(record, Rollout) else dict(record)
            self.rollouts.append({**row, "score": reward(row, config)} if config else row)

    @property
    def scores(self) -> list[Any]:
        """Scores of the candidate's rollouts (None for unscored ones)."""
        return [r.get("score") for r in self.rollouts]

    @property
    def num_rollouts(self) -> int:
        """How many rollouts the statistics count."""
        return len(self.rollouts)

    def mean_score(self) -> float | None:
        """Mean of the scored rollouts, None when none is scored."""
        return safe_mean(self.scores)

    def mean_score_dict(self) -> dict[str, float] | None:
        """Per-metric mean of the rollouts' score dicts (None if none has one)."""
        return aggregate_score_dicts([r.get("score_dict") for r in self.rollouts]) or None

    def compute_score_confidence(
        self, min_score: float, max_score: float, scaling_constant: float, total_trials: int
    ) -> tuple[float, float | None, float]:
        """`(lcb, mean, ucb)` by a Hoeffding bound, clipped to `[min_score, max_score]`."""
        scores = [float(s) for s in self.scores if s is not None]
        if not scores:
            return min_score, None, max_score
        mean = math.fsum(scores) / len(scores)
        width = (
            scaling_constant
            * math.sqrt(math.log(total_trials + 1) / len(scores))
            * (max_score - min_score)
        )
        return max(min_score, mean - width), mean, min(max_score, mean + width)

    def compress(self) -> ModuleCandidate:
        """Drop every rollout field but the score(s) (to keep long-lived memory small)."""
        self.rollouts = [_scores_only(r) for r in self.rollouts]
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state (rollouts reduced to scores)."""
        return {
            "update_dict": copy.deepcopy(self.update_dict),
            "optimizer_index": self.optimizer_index,
            "optimizer_state": copy.deepcopy(self.optimizer_state),
            "created": self.created,
            "scores": self.scores,
            "score_dicts": [r.get("score_dict") for r in self.rollouts],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModuleCandidate:
        """Inverse of `to_dict`."""
        return cls(
            update_dict=copy.deepcopy(dict(data["update_dict"])),
            optimizer_index=int(data["optimizer_index"]),
            optimizer_state=copy.deepcopy(data["optimizer_state"]),
            created=int(data["created"]),
            rollouts=[
                _scores_only({"score": s, "score_dict": d})
                for s, d in zip(
                    data["scores"], data.get("score_dicts") or [None] * len(data["scores"])
                )
            ],
        )


def _scores_only(record: Mapping[str, Any]) -> dict[str, Any]:
    kept = {"score": record.get("score")}
    if record.get("score_dict") is not None:
        kept["score_dict"] = dict(record["score_dict"])
    return kept


class HeapMemory:
    """Candidates by priority; `pop` takes the highest, trimming keeps the true top `size`.

    Ties are deterministic: among equal priorities the newest candidate pops first and
    the oldest is evicted first. `processing_fun` runs on every pushed candidate.
    """

    def __init__(
        self,
        size: int | None = None,
        processing_fun: Callable[[ModuleCandidate], ModuleCandidate] | None = None,
    ) -> None:
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise ValueError(f"memory size must be None or a non-negative int, not {size!r}")
        self.size = size
        self.processing_fun = processing_fun
        self._heap: list[tuple[float, int, ModuleCandidate]] = []

    @staticmethod
    def _entry(priority: float, candidate: ModuleCandidate) -> tuple[float, int, ModuleCandidate]:
        return (-rank_value(priority), -candidate.created, candidate)

    def push(self, priority: float, candidate: ModuleCandidate) -> None:
        """Add `candidate` with `priority`; trim to the `size` highest if over."""
        if self.processing_fun is not None:
            candidate = self.processing_fun(candidate)
        heapq.heappush(self._heap, self._entry(float(priority), candidate))
        if self.size is not None and len(self._heap) > self.size:
            self._heap = heapq.nsmallest(self.size, self._heap, key=lambda e: e[:2])
            heapq.heapify(self._heap)

    def pop(self) -> tuple[float, ModuleCandidate]:
        """Remove and return `(priority, candidate)` of the highest priority."""
        neg, _, candidate = heapq.heappop(self._heap)
        return -neg, candidate

    def best(
        self, criterion: Callable[[ModuleCandidate], float | None] | None = None
    ) -> ModuleCandidate | None:
        """The candidate maximizing `criterion` (None scores lowest; ties: oldest), or the
        top of the heap without a criterion; None if empty."""
        if not self._heap:
            return None
        if criterion is None:
            return min(self._heap, key=lambda e: e[:2])[2]

        def rank(entry: tuple[float, int, ModuleCandidate]) -> tuple[tuple[int, float], int]:
            value = criterion(entry[2])
            return (score_key(value), -entry[2].created)

        return max(self._heap, key=rank)[2]

    def remove(self, candidate: ModuleCandidate) -> None:
        """Remove `candidate` (by identity) if present."""
        self._heap = [entry for entry in self._heap if entry[2] is not candidate]
        heapq.heapify(self._heap)

    def items(self) -> list[tuple[float, ModuleCandidate]]:
        """`(priority, candidate)` pairs, highest priority first."""
        return [(-neg, c) for neg, _, c in sorted(self._heap, key=lambda e: e[:2])]

    def append(self, other: HeapMemory) -> None:
        """Push every item of `other` (with its priority)."""
        for priority, candidate in other.items():
            self.push(priority, candidate)

    def reset(self) -> None:
        """Remove every item."""
        self._heap = []

    def __len__(self) -> int:
        return len(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)

    def __iter__(self) -> Iterator[ModuleCandidate]:
        return (candidate for _, candidate in self.items())


_SCORE_FUNCTIONS = ("mean", "ucb", "time")
_PRIORITY_KEYWORDS = (
    "validate_dataset",
    "validate_guide",
    "num_batches",
    "score_range",
    "num_epochs",
    "num_candidates",
    "num_proposals",
    "validate_exploration_candidates",
    "use_best_candidate_to_explore",
    "long_term_memory_size",
    "short_term_memory_size",
    "memory_update_frequency",
    "score_function",
    "ucb_exploration_constant",
    "decouple_optimizers",
)


class PrioritySearch(SearchTrainer):
    """Search with a priority queue of candidates (the reference's general search engine).

    Each iteration: take the best candidate (by mean score) and pop the highest-priority
    ones until `num_candidates` explore; run each on `num_batches` minibatches of
    `batch_size` training examples; from each (candidate, minibatch) make `num_proposals`
    proposals, each on its own optimizer copy (the chain's memory is carried on when
    `decouple_optimizers`); validate the proposals (and, with a validation set, the
    explorers again) with every candidate x example rollout at once; push everything
    back with its priority; the shared agent gets the best candidate by mean score.

    `optimizer` may be a list: candidates are spread over the optimizers and keep theirs.
    Differences from the reference (its bugs fixed): positional `train` arguments work;
    memory trimming keeps the true top k with deterministic ties; every proposal gets its
    own optimizer copy; `score_function="ucb"` needs a finite `score_range` (an error,
    not infinite priorities); `"time"` favours the newest candidates; no iteration's
    rollouts are wasted; with `memory_update_frequency` the memories are merged once per
    k iterations (not as a side effect of reading a property) and candidates are drawn
    from the short-term memory first, then the long-term one.

    With an `objective_config`, rollouts keep the guide's score dicts, every score is the
    objective's scalar of its dict, the memories are `ParetoHeapMemory` (in "pareto" mode
    they pop from the Pareto front) and `exploit` uses `objectives.select_best`.
    """

    def train(self, guide: Guide, train_dataset: Any, **kwargs: Any) -> TrainResult:
        """Search over `train_dataset` with feedback from `guide`.

        Keywords (besides `TrainOptions`): `validate_dataset` (default: validate on the
        very batch that produced the proposals), `validate_guide`, `num_batches` (1),
        `score_range` ((-inf, inf); its low end scores failed rollouts when `min_score` is
        unset), `num_epochs` (1, or unbounded when only `max_steps`/`num_steps` is given),
        `num_candidates` (10), `num_proposals` (1), `validate_exploration_candidates`
        (True), `use_best_candidate_to_explore` (True), `long_term_memory_size`,
        `short_term_memory_size`, `memory_update_frequency` (0: long-term memory only;
        None: short-term only; k: merge the short-term memory into the long-term one every
        k iterations), `score_function` ("mean", "ucb" or "time"),
        `ucb_exploration_constant` (1.0), `decouple_optimizers` (True).
        """
        own = {key: kwargs.pop(key) for key in _PRIORITY_KEYWORDS if key in kwargs}
        options = TrainOptions.from_kwargs(
            kwargs, algorithm=type(self).__name__, extra=_PRIORITY_KEYWORDS
        )
        self._configure(guide, train_dataset, options, **own)
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

    def _configure(
        self,
        guide: Guide,
        train_dataset: Any,
        options: TrainOptions,
        *,
        validate_dataset: Any = None,
        validate_guide: Guide | None = None,
        num_batches: int = 1,
        score_range: Sequence[float] | None = None,
        num_epochs: int | None = None,
        num_candidates: int = 10,
        num_proposals: int = 1,
        validate_exploration_candidates: bool = True,
        use_best_candidate_to_explore: bool = True,
        long_term_memory_size: int | None = None,
        short_term_memory_size: int | None = None,
        memory_update_frequency: int | None = 0,
        score_function: str = "mean",
        ucb_exploration_constant: float = 1.0,
        decouple_optimizers: bool = True,
    ) -> None:
        self.num_batches = _positive_int(num_batches, "num_batches")
        self.num_proposals = _positive_int(num_proposals, "num_proposals")
        self.num_candidates = max(_positive_int(num_candidates, "num_candidates"), 1)
        if score_function not in _SCORE_FUNCTIONS:
            raise ValueError(
                f"score_function must be one of {_SCORE_FUNCTIONS}, not {score_function!r}"
            )
        low, high = (_NEG_INF, math.inf) if score_range is None else map(float, score_range)
        if low > high:
            raise ValueError(f"score_range must be (low, high) with low <= high, not {score_range}")
        if score_function == "ucb" and not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(
                "score_function='ucb' needs a finite score_range=(min, max) to scale the "
                "confidence bound; pass e.g. score_range=(0, 1)"
            )
        self.min_score, self.max_score = low, high
        if options.min_score is None and math.isfinite(low):
            options = attrs.evolve(options, min_score=low)
        self.options = options
        if num_epochs is None:
            num_epochs = None if options.max_steps is not None else 1
        self.num_epochs = None if num_epochs is None else _positive_int(num_epochs, "num_epochs")
        self.score_function = score_function
        self.ucb_exploration_constant = float(ucb_exploration_constant)
        self.validate_exploration_candidates = bool(validate_exploration_candidates)
        self.use_best_candidate_to_explore = bool(use_best_candidate_to_explore)
        self.decouple_optimizers = bool(decouple_optimizers)
        self.memory_update_frequency = memory_update_frequency
        if long_term_memory_size is not None:
            _positive_int(long_term_memory_size, "long_term_memory_size")
        if memory_update_frequency is not None:
            if (
                isinstance(memory_update_frequency, bool)
                or not isinstance(memory_update_frequency, int)
                or memory_update_frequency < 0
            ):
                raise ValueError(
                    "memory_update_frequency must be None or a non-negative int, not "
                    f"{memory_update_frequency!r}"
                )
        memory: Callable[..., HeapMemory] = HeapMemory
        if options.objective_config is not None:
            from .pareto_memory import ParetoHeapMemory

            memory = functools.partial(ParetoHeapMemory, options.objective_config)
        self.long_term_memory = memory(
            long_term_memory_size, processing_fun=ModuleCandidate.compress
        )
        self.short_term_memory = memory(short_term_memory_size)
        self.validate_guide = validate_guide or guide
        self._training_loader(
            train_dataset,
            options.batch_size * self.num_batches,
            f"batch_size * num_batches ({options.batch_size} * {self.num_batches})",
        )
        self.validate_loader = (
            None
            if validate_dataset is None
            else DataLoader(
                as_dataset(validate_dataset, name="validate_dataset"),
                options.batch_size * self.num_batches,
                seed=None if self.seed is None else self.seed + 1,
            )
        )
        self._config = {
            "num_batches": self.num_batches,
            "num_candidates": self.num_candidates,
            "num_proposals": self.num_proposals,
            "score_function": score_function,
            "batch_size": options.batch_size,
        }

    # -- memory -----------------------------------------------------------------------------

    def _new_candidate(self, paramset: ParamSet, index: int, state: Any) -> ModuleCandidate:
        self._created += 1
        return ModuleCandidate(
            update_dict=paramset,
            optimizer_index=index,
            optimizer_state=state,
            created=self._created,
        )

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

    def compute_exploration_priority(self, candidate: ModuleCandidate) -> float:
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

    def compute_exploitation_priority(self, candidate: ModuleCandidate) -> float | None:
        """What picks the agent's parameters: the mean score."""
        return candidate.mean_score()

    def exploit(self) -> ModuleCandidate | None:
        """The best candidate in memory by exploitation priority (not removed); under an
        `objective_config`, by `objectives.select_best` on the mean score dicts."""
        if self.options.objective_config is not None:
            from .pareto_memory import best_candidate

            pool = [c for memory in self._memories() for c in memory]
            return best_candidate(pool, self.options.objective_config)
        best: ModuleCandidate | None = None
        for memory in self._memories():
            top = memory.best(self.compute_exploitation_priority)
            if top is not None and (best is None or self._better(top, best)):
                best = top
        return best

    def _better(self, a: ModuleCandidate, b: ModuleCandidate) -> bool:
        """Whether `a` beats `b` on exploitation priority (ties: the older one)."""
        pa, pb = self.compute_exploitation_priority(a), self.compute_exploitation_priority(b)
        return (score_key(pa), -a.created) > (score_key(pb), -b.created)

    def explore(self) -> list[ModuleCandidate]:
        """The candidates that explore this iteration (popped from memory, best first)."""
        chosen: list[ModuleCandidate] = []
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

    def _iterate(self, guide: Guide) -> dict[str, Any]:
        self._swap_memory()
        explorers = self.explore()
        assert self.loader is not None
        xs, infos = self.loader.sample()
        size = self.options.batch_size
        batches = [(xs[i : i + size], infos[i : i + size]) for i in range(0, len(xs), size)]
        jobs = [
            ExplorationJob(
                paramset=c.update_dict,
                xs=bx,
                infos=bi,
                num_proposals=self.num_proposals,
                optimizer_index=c.optimizer_index,
                optimizer_state=c.optimizer_state if self.decouple_optimizers else None,
            )
            for c in explorers
            for bx, bi in batches
        ]
        results = self.engine.explore(jobs, guide)
        train_records: list[Rollout] = []
        proposals: list[ModuleCandidate] = []
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
        self._validate(proposals, explorers, xs, infos)
        if not self.decouple_optimizers:
            self._advance_shared_optimizers(proposals)
        unique_explorers = list({id(c): c for c in explorers}.values())
        for candidate in unique_explorers + proposals:
            self.memory.push(self.compute_exploration_priority(candidate), candidate)
        best = self.exploit()
        assert best is not None
        self._adopt_candidate(
            best.update_dict, best.optimizer_state if best.optimizer_index == 0 else None
        )
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

    def _validate(
        self,
        proposals: list[ModuleCandidate],
        explorers: list[ModuleCandidate],
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
            [c.update_dict for c in targets], xs, infos, self.validate_guide
        )
        for candidate, rows in zip(targets, records):
            candidate.add_rollouts(rows, self.options.objective_config)

    def _advance_shared_optimizers(self, proposals: list[ModuleCandidate]) -> None:
        """Without decoupling, each optimizer keeps the state of its latest proposal."""
        for candidate in proposals:
            if candidate.optimizer_state is not None:
                load_chain_state(
                    self.optimizers[candidate.optimizer_index], candidate.optimizer_state
                )
            candidate.optimizer_state = None

    # -- checkpoints ------------------------------------------------------------------------

    def _algorithm_state(self) -> Any:
        def dump(memory: HeapMemory) -> list[Any]:
            return [[p, c.to_dict()] for p, c in memory.items()]

        return {
            "created": getattr(self, "_created", 0),
            "long_term_memory": dump(self.long_term_memory),
            "short_term_memory": dump(self.short_term_memory),
            "validate_loader": None
            if getattr(self, "validate_loader", None) is None
            else self.validate_loader.state_dict(),
        }

    def _load_algorithm_state(self, state: Any) -> None:
        if state is None:
            return
        self._created = int(state["created"])
        for name in ("long_term_memory", "short_term_memory"):
            memory: HeapMemory = getattr(self, name)
            memory._heap = [
                HeapMemory._entry(float(p), ModuleCandidate.from_dict(c)) for p, c in state[name]
            ]
            heapq.heapify(memory._heap)
        if state["validate_loader"] is not None and self.validate_loader is not None:
            self.validate_loader.load_state_dict(state["validate_loader"])
