"""`SearchEngine`: explores and scores candidates without touching the shared agent.

* `explore(jobs, guide)`: for each job (a candidate and a minibatch), run every example on a
  copy of the agent bound to the candidate (its own parameter nodes), one batch backward
  of their feedback (`opto.trainers.evaluation.batch_backward`) into a fork of the
  candidate's optimizer bound to those nodes (`Optimizer.fork`), and `num_proposals`
  steps, each on its own fork;
* `rollouts` / `score(paramsets, xs, infos, guide)`: every candidate x example at once.

With an in-process executor (threads, asyncio, serial) each stage puts every independent
call in flight at once: all rollouts of all jobs, then all proposal steps of all jobs. With
an out-of-process executor (`executor.in_process` is False, e.g. `RayExecutor`) each job is
one task (forward, backward and steps need the same trace graph, so they run together)
and each validation rollout is one task; both return plain records (inputs, output data,
score, feedback) and the optimizer chain's JSON state, never graph nodes.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from opto.trace.modules import Module
from opto.utils.usage import BudgetExceeded

from ..evaluation import (
    ErrorBudget,
    Rollout,
    TooManyErrorsError,
    batch_backward,
    run_example,
    score_dict_of,
)
from ..executors import Executor, SerialExecutor, ThreadExecutor
from ..guide import Guide
from ..utils import ParamSet, bind, get_paramset, paramset_from_update, safe_mean

if TYPE_CHECKING:
    from ..evalcache import EvalCache

__all__ = [
    "ExplorationJob",
    "ExplorationResult",
    "SearchEngine",
    "SearchProposal",
    "bind_optimizer",
    "bind_worker",
    "chain_state",
]

#: Picks the jobs that propose, given every job's rollouts (indices into the jobs).
JobSelector = Callable[[list[list[Rollout]]], Collection[int]]

logger = logging.getLogger(__name__)


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
    """A fork of `optimizer` (built on `agent`'s parameters) that optimizes `worker`'s.

    `state` (a chain's `state_dict()`) is loaded into the fork when given, so an optimizer
    chain with memory continues where it stood.
    """
    nodes = dict(worker.named_parameters())
    paths = {id(node): path for path, node in agent.named_parameters()}
    bound = optimizer.fork([nodes.get(paths.get(id(p), ""), p) for p in optimizer.parameters])
    if state is not None:
        bound.load_state_dict(copy.deepcopy(state))
    return bound


def chain_state(optimizer: Any) -> dict[str, Any] | None:
    """The JSON state of an optimizer chain started from `optimizer` (`state_dict()` of a
    fork of it, see `_chain_state_of_fork`). None for an optimizer without `state_dict`."""
    if not callable(getattr(optimizer, "state_dict", None)):
        return None
    fork = getattr(optimizer, "fork", None)
    return _chain_state_of_fork(fork() if callable(fork) else optimizer)


def _chain_state_of_fork(fork: Any) -> dict[str, Any]:
    """The state of a fork as a chain's state.

    A fork starts without step records, so a chain's state carries the optimizer's memory
    and counters and at most the step that made its candidate, never a growing log. It
    does not name the parameters: a chain moves between agents whose nodes are named
    alike but numbered apart (a resumed run builds its agent anew).
    """
    state = dict(fork.state_dict())
    state.pop("parameters", None)
    return state


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
    """A proposed parameter set and the chain state of the optimizer fork that made it."""

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
    """One batch backward of the rollouts that kept a graph; False if none did."""
    usable = [r for r in rollouts if r.target is not None]
    if not usable:
        return False
    batch_backward(
        optimizer, [r.target for r in usable], [r.feedback for r in usable], context=context
    )
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


@attrs.define(kw_only=True, eq=False, slots=False)
class _Task:
    """What every engine task carries (picklable, for executors that ship tasks to other
    processes): the agent template, the guide, and how failed rollouts are scored."""

    agent: Module
    guide: Guide
    min_score: Any = None
    score_dicts: bool = False


@attrs.define(kw_only=True, eq=False, slots=False)
class _ExploreTask(_Task):
    """Exploration jobs: `explore` runs many on an executor; calling the task runs one
    whole job as one task (for executors that run out of process) on `threads` threads."""

    optimizers: list[Any] = attrs.field(converter=list)
    step_kwargs: dict[str, Any] = attrs.field(converter=dict)
    threads: int = 1

    def explore(
        self,
        jobs: Sequence[ExplorationJob],
        executor: Executor,
        select: JobSelector | None = None,
    ) -> list[ExplorationResult]:
        """Explore `jobs` in two waves on `executor`: every rollout, then every step (of
        the jobs `select` picks from the rollouts, when given)."""
        workers = [bind_worker(self.agent, job.paramset) for job in jobs]
        items = [(j, x, info) for j, job in enumerate(jobs) for x, info in zip(job.xs, job.infos)]
        flat = executor.map(
            lambda item: run_example(
                workers[item[0]].copy(),
                item[1],
                self.guide.copy(),
                item[2],
                self.min_score,
                score_dicts=self.score_dicts,
            ),
            items,
        )
        grouped: list[list[Rollout]] = [[] for _ in jobs]
        for (j, _, _), record in zip(items, flat):
            grouped[j].append(record)
        step_items: list[tuple[int, Any]] = []
        backwarded: list[Any] = []
        chosen = range(len(jobs)) if select is None else sorted(set(select(grouped)))
        for j in chosen:
            job = jobs[j]
            optimizer = bind_optimizer(
                self.optimizers[job.optimizer_index], self.agent, workers[j], job.optimizer_state
            )
            backwarded.append(optimizer)
            if _backward(optimizer, grouped[j], job.context):
                step_items.extend((j, optimizer.fork()) for _ in range(job.num_proposals))
        updates = executor.map(lambda item: _step(item[1], self.step_kwargs), step_items)
        proposals: list[list[SearchProposal]] = [[] for _ in jobs]
        for (j, stepped), update in zip(step_items, updates):
            if update:
                job = jobs[j]
                proposals[j].append(
                    SearchProposal(
                        paramset=paramset_from_update(workers[j], update, job.paramset),
                        optimizer_index=job.optimizer_index,
                        optimizer_state=_chain_state_of_fork(stepped),
                    )
                )
        for optimizer in backwarded:
            optimizer.zero_feedback()
        return [
            ExplorationResult(rollouts=[_plain(r) for r in grouped[j]], proposals=proposals[j])
            for j in range(len(jobs))
        ]

    def __call__(self, job: ExplorationJob) -> ExplorationResult:
        executor = SerialExecutor() if self.threads <= 1 else ThreadExecutor(self.threads)
        with executor:
            (result,) = self.explore([job], executor)
        return result


@attrs.define(kw_only=True, eq=False, slots=False)
class _ScoreTask(_Task):
    """Validation rollouts `(candidate index, x, info) -> plain record`.

    Each candidate is bound once per task instance (per worker, when shipped) and every
    rollout runs on a private copy of it, so agent state never leaks between rollouts.
    """

    paramsets: list[ParamSet] = attrs.field(converter=list)
    _workers: dict[int, Module] = attrs.field(init=False, factory=dict)
    _lock: Any = attrs.field(init=False, factory=threading.Lock)

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
        cache: an `EvalCache`: scoring rollouts (`rollouts`, `score`) already evaluated
            are read back instead of run (looked up and stored here, in the driver, on
            every executor). Exploration rollouts always run: their backward needs graphs.
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
        cache: EvalCache | None = None,
    ) -> None:
        self.agent = agent
        self.cache = cache
        self.score_dicts = score_dicts
        self.optimizers = list(optimizers)
        self.executor = executor
        self.min_score = min_score
        self.step_kwargs = dict(step_kwargs or {})
        self.errors = errors if errors is not None else ErrorBudget(None)

    def _task_fields(self, guide: Guide) -> dict[str, Any]:
        """The fields every engine task carries (see `_Task`)."""
        return {
            "agent": self.agent,
            "guide": guide,
            "min_score": self.min_score,
            "score_dicts": self.score_dicts,
        }

    @property
    def in_process(self) -> bool:
        """Whether tasks run in this process (graphs may cross task boundaries)."""
        return bool(getattr(self.executor, "in_process", True))

    def explore(
        self,
        jobs: Sequence[ExplorationJob],
        guide: Guide,
        select: JobSelector | None = None,
    ) -> list[ExplorationResult]:
        """Run every job: rollouts, one backward, `num_proposals` proposals each.

        `select`, given every job's rollouts, names the jobs that go on to propose (the
        others only roll out). Out of process, where a trace graph cannot outlive its
        task, the chosen jobs run their minibatch again in the proposing task (those
        repeated rollouts feed the proposals only).
        """
        if not jobs:
            return []
        task = _ExploreTask(
            **self._task_fields(guide),
            optimizers=self.optimizers,
            step_kwargs=self.step_kwargs,
            threads=int(getattr(self.executor, "task_threads", 1)),
        )
        if self.in_process:
            results = task.explore(jobs, self.executor, select)
        else:
            if select is None:
                results = self.executor.map(task, list(jobs))
            else:
                results = self.executor.map(
                    task, [attrs.evolve(job, num_proposals=0) for job in jobs]
                )
                chosen = sorted(set(select([r.rollouts for r in results])))
                proposing = self.executor.map(task, [jobs[j] for j in chosen])
                for j, again in zip(chosen, proposing):
                    results[j].proposals = again.proposals
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
        task = _ScoreTask(**self._task_fields(guide), paramsets=paramsets)
        items = [
            (c, x, info)
            for c in range(len(paramsets))
            for x, info in zip(xs, infos)
            for _ in range(repeats)
        ]
        if self.cache is None:
            flat = self.executor.map(task, items)
        else:  # key on the full values each candidate runs with (the agent's fill gaps)
            base = get_paramset(self.agent)
            full = [{**base, **paramset} for paramset in paramsets]
            flat = self.cache.run(
                [guide] * len(items),
                [full[c] for c, _, _ in items],
                [x for _, x, _ in items],
                [info for _, _, info in items],
                lambda todo, keep: (
                    self.executor.map(lambda i: keep(i, task(items[i])), todo)
                    if self.in_process  # store each evaluation as it completes
                    else self.executor.map(task, [items[i] for i in todo])
                ),
                score_dicts=self.score_dicts,
            )
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
