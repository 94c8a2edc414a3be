"""`Trainer` (alias `AlgorithmBase`): the one trainer API every algorithm shares.

A trainer holds an agent (a `trace.Module`), an optimizer, a logger, an executor (or a
thread count) and a seed. Algorithms implement `train(guide, train_dataset, **options)`
with the reference's keyword names: the common ones are the fields of `TrainOptions`
(an unknown keyword raises `UnknownTrainArgumentError`), and every call returns a
`TrainResult`.

Building blocks for algorithms, each running all its independent calls at once on the
executor: `rollouts` (forward + guide on a batch), `propose` (N optimizer proposals, each
on its own optimizer copy), `validate` (every candidate x example). Candidates are
parameter sets (values); validating them never touches the shared agent.

`TrainSession` (opened with `self.session(...)`) runs the bookkeeping of a run: step
counters, periodic test evaluation, logging, step records and atomic checkpoints in run
storage, resume, stop conditions, LLM budgets, and Ctrl-C.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import importlib
import logging
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from opto.trace.modules import Module
from opto.trace.nodes import Node, ParameterNode
from opto.utils.errors import OptoError
from opto.utils.storage import RunStatus
from opto.utils.usage import Budget, BudgetExceeded, UsageLedger, track_usage

from ..checkpoint import CHECKPOINT_VERSION, RunStore, default_storage_url
from ..evaluation import Rollout, evaluate, run_rollouts
from ..executors import Executor, make_executor
from ..guide import Guide, build_guide, check_guide
from ..loader import DataLoader, as_dataset
from ..loggers import BaseLogger, ConsoleLogger
from ..objectives import ObjectiveConfig
from ..ranking import is_score
from ..resume_check import agent_signature, check_overrides, check_resume
from ..runner import ErrorBudget, TooManyErrorsError
from ..scoring import as_objective_config, log_metrics, mean_score, scalar, split_scores
from ..stopping import StopConditions, StopReason
from ..utils import (
    ParamSet,
    bind,
    copy_optimizer,
    get_paramset,
    paramset_from_update,
    safe_mean,
    to_jsonable,
    update_from_paramset,
)

__all__ = [
    "AlgorithmBase",
    "Proposal",
    "TrainOptions",
    "TrainResult",
    "TrainSession",
    "Trainer",
    "UnknownTrainArgumentError",
    "train",
]

logger = logging.getLogger(__name__)

_USAGE_KEYS = (
    "calls",
    "requests",
    "errors",
    "cached_calls",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
    "unknown_cost_calls",
)


class UnknownTrainArgumentError(OptoError, TypeError):
    """`train` received a keyword it does not know (it is never passed on silently)."""


def _optional_positive(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{attribute.name} must be None or a positive int, not {value!r}")


def _optional_non_negative(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"{attribute.name} must be None or a non-negative int, not {value!r}")


def _positive(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be a positive int, not {value!r}")


@attrs.frozen(kw_only=True)
class TrainOptions:
    """Keyword options common to every algorithm's `train` (reference names).

    Data and cadence: `num_epochs`, `batch_size`, `test_dataset` (None: no test
    evaluation), `test_guide` (default: the guide), `num_test_samples`, `eval_frequency`
    (alias `test_frequency`; evaluate every k steps and before training, 0/None: never),
    `log_frequency` (default: `eval_frequency`), `min_score` (score of failed rollouts),
    `max_errors` (examples whose agent or guide raised that are tolerated: over the run's
    training and validation rollouts, and per test evaluation; None: unlimited),
    `objective_config` (an `ObjectiveConfig`: compare candidates by the guide's score dicts;
    see `opto.trainers.scoring`).

    Saving: `save_frequency` (checkpoint and save the agent every k steps),
    `save_path` (the agent file), `storage` (a storage URL or `Storage`; default
    `OPTO_STORAGE_URL`, else `opto-runs.db` in the working directory, as `opto-runs`
    reads, when saving or resuming), `run_name`, `resume` (continue the run's latest checkpoint; refused for
    another agent or changed hyperparameters, see `opto.trainers.resume_check`),
    `resume_overrides` (True, or the names of hyperparameters allowed to change),
    `trust_code` (let a resumed checkpoint run code that differs from its defining source;
    docs/security.md).

    Stopping: `max_steps` (alias `num_steps`), `patience`, `min_delta`, `stop_file`,
    LLM budget `budget` or `max_llm_calls` / `max_tokens` / `max_cost` (USD).

    Execution: `num_threads` (overrides the trainer's), `verbose` (progress bar and tables;
    nothing is printed without it), `step_kwargs` (extra keyword arguments for
    `optimizer.step`, e.g. the reference's `verbose="output"`).
    """

    num_epochs: int = attrs.field(default=1, validator=_positive)
    batch_size: int = attrs.field(default=1, validator=_positive)
    test_dataset: Any = None
    test_guide: Guide | None = None
    num_test_samples: int = attrs.field(default=1, validator=_positive)
    eval_frequency: int | None = attrs.field(default=1, validator=_optional_non_negative)
    log_frequency: int | None = attrs.field(default=None, validator=_optional_non_negative)
    min_score: Any = None
    max_errors: int | None = None
    objective_config: ObjectiveConfig | None = attrs.field(
        default=None, converter=as_objective_config
    )
    save_frequency: int | None = attrs.field(default=None, validator=_optional_positive)
    save_path: str = "checkpoints/agent.json"
    storage: Any = None
    run_name: str | None = None
    resume: bool = False
    resume_overrides: bool | Sequence[str] = attrs.field(default=False, validator=check_overrides)
    trust_code: bool = False
    max_steps: int | None = attrs.field(default=None, validator=_optional_positive)
    patience: int | None = attrs.field(default=None, validator=_optional_positive)
    min_delta: float = 0.0
    stop_file: str | None = None
    budget: Budget | None = None
    max_llm_calls: int | None = None
    max_tokens: int | None = None
    max_cost: float | None = None
    num_threads: int | None = attrs.field(default=None, validator=_optional_positive)
    verbose: bool | str = False
    step_kwargs: Mapping[str, Any] = attrs.field(factory=dict)

    ALIASES = {"test_frequency": "eval_frequency", "num_steps": "max_steps"}

    @classmethod
    def from_kwargs(
        cls, kwargs: Mapping[str, Any], *, algorithm: str, extra: Sequence[str] = ()
    ) -> TrainOptions:
        """Build options from `train`'s `**kwargs`; unknown names raise with a suggestion."""
        fields = {f.name for f in attrs.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in kwargs.items():
            name = cls.ALIASES.get(key, key)
            if name not in fields:
                known = sorted(fields | set(cls.ALIASES) | set(extra))
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise UnknownTrainArgumentError(
                    f"{algorithm}.train() got an unknown keyword argument {key!r}{hint}. "
                    f"Known keywords: {', '.join(known)}. Optimizer step options go in "
                    "step_kwargs={...}"
                )
            if name in values:
                raise UnknownTrainArgumentError(
                    f"{algorithm}.train() got both {key!r} and its alias for {name!r}; pass one"
                )
            values[name] = value
        return cls(**values)

    @property
    def llm_budget(self) -> Budget | None:
        """The LLM budget from `budget` or the `max_*` shortcuts (None: unlimited)."""
        if self.budget is not None:
            return self.budget
        if self.max_llm_calls is None and self.max_tokens is None and self.max_cost is None:
            return None
        return Budget(
            max_calls=self.max_llm_calls, max_tokens=self.max_tokens, max_usd=self.max_cost
        )


@attrs.define(kw_only=True)
class TrainResult:
    """What a `train` call produced.

    Iterating gives `(train_scores, final_test_score)`, so the reference's
    `scores, test_score = trainer.train(...)` keeps working.
    """

    best_parameters: dict[str, Any]
    best_score: float | None
    final_parameters: dict[str, Any]
    train_scores: list[Any]
    test_scores: list[dict[str, Any]]
    final_test_score: float | None
    history: list[dict[str, Any]]
    usage: dict[str, Any]
    n_iters: int
    n_epochs: int
    stopped: str
    run_name: str | None = None
    storage_url: str | None = None
    save_path: str | None = None

    def __iter__(self) -> Iterator[Any]:
        yield self.train_scores
        yield self.final_test_score


@attrs.define(kw_only=True, eq=False)
class Proposal:
    """One optimizer proposal: the full parameter set and the optimizer copy that made it."""

    paramset: ParamSet
    optimizer: Any


def _add_usage(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    return {key: a.get(key, 0) + b.get(key, 0) for key in _USAGE_KEYS}


def _remaining(budget: Budget, used: Mapping[str, Any]) -> Budget:
    """`budget` minus what earlier sessions of the run already used."""

    def left(limit: Any, spent: Any) -> Any:
        return None if limit is None else max(0, limit - spent)

    sent = max(used.get("requests", 0), used.get("calls", 0) - used.get("cached_calls", 0))
    return Budget(
        max_calls=left(budget.max_calls, sent),
        max_tokens=left(budget.max_tokens, used.get("total_tokens", 0)),
        max_usd=left(budget.max_usd, used.get("cost_usd", 0.0)),
    )


class Trainer:
    """Base of all training algorithms (the reference's `AlgorithmBase`).

    Args:
        agent: the `trace.Module` whose trainable parameters are optimized.
        optimizer: an `opto.optimizers.Optimizer` over `agent.parameters()`.
        num_threads: how many independent calls may be in flight (None/1: one at a time).
        logger: a logger (default `ConsoleLogger`; it prints only with `verbose`).
        executor: an `Executor`, or "serial", "threads", "asyncio", "ray" (overrides
            `num_threads` as the way work runs; sized by it).
        seed: seeds the trainer's own RNG (data order, subsampling, tie-breaks).
    """

    def __init__(
        self,
        agent: Module,
        optimizer: Any = None,
        num_threads: int | None = None,
        logger: BaseLogger | None = None,
        *,
        executor: Executor | str | None = None,
        seed: int | None = None,
    ) -> None:
        if not isinstance(agent, Module):
            raise TypeError(
                f"Agent must be a trace Module (decorate its class with @trace.model), not "
                f"{type(agent).__name__}"
            )
        if num_threads is not None and (
            isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1
        ):
            raise ValueError(f"num_threads must be None or a positive int, not {num_threads!r}")
        self.agent = agent
        self.optimizer = optimizer
        self.num_threads = num_threads
        self.logger: BaseLogger = logger if logger is not None else ConsoleLogger(verbose=False)
        self.executor_spec = executor
        self.seed = seed
        self.rng = random.Random(seed)
        self.n_iters = 0
        self.n_epochs = 0
        self.train_scores: list[Any] = []
        self.test_scores: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"score": None, "parameters": None, "iteration": None}
        self.errors = ErrorBudget(None)  # failed examples of the current run
        self.loader: DataLoader | None = None
        self._executor: Executor | None = None
        self._local_executor: Executor | None = None

    # -- execution --------------------------------------------------------------------------

    @property
    def executor(self) -> Executor:
        """The executor of the current run (serial outside `train` unless configured)."""
        if self._executor is None:
            self._executor = make_executor(self.executor_spec, self.num_threads)
        return self._executor

    @property
    def local_executor(self) -> Executor:
        """The executor for work that must stay in this process.

        Rollouts whose graphs feed a backward, and optimizer steps, need the local
        parameter nodes; with an executor that runs tasks elsewhere (Ray) they run on
        threads here, as many as the executor's `max_workers`.
        """
        executor = self.executor
        if getattr(executor, "in_process", True):
            return executor
        if self._local_executor is None:
            self._local_executor = make_executor(num_threads=executor.max_workers)
        return self._local_executor

    @contextlib.contextmanager
    def _use_executor(self, num_threads: int | None) -> Iterator[Executor]:
        previous, previous_local = self._executor, self._local_executor
        executor = make_executor(self.executor_spec, num_threads or self.num_threads)
        self._executor, self._local_executor = executor, None
        try:
            yield executor
        finally:
            local = self._local_executor
            self._executor, self._local_executor = previous, previous_local
            if local is not None:
                local.close()
            if executor is not self.executor_spec:
                executor.close()

    def rollouts(
        self,
        xs: Sequence[Any],
        infos: Sequence[Any],
        guide: Guide,
        *,
        paramset: ParamSet | None = None,
        min_score: Any = None,
        catch_errors: bool = False,
        max_errors: int | None = None,
    ) -> list[Rollout]:
        """Forward + guide on every example at once.

        Without `paramset` the rollouts run (in this process) on copies of the shared
        agent, so their graphs reach its parameters (what a backward needs); with one, on a
        bound copy holding it, and they keep no graph.
        """
        agent = self.agent if paramset is None else bind(self.agent, paramset)
        return run_rollouts(
            [agent] * len(xs),
            xs,
            infos,
            guide,
            executor=self.local_executor if paramset is None else self.executor,
            min_score=min_score,
            catch_errors=catch_errors,
            max_errors=max_errors,
            keep_targets=paramset is None,
            errors=self.errors if catch_errors and max_errors is None else None,
        )

    def validate(
        self,
        candidates: Sequence[ParamSet],
        xs: Sequence[Any],
        infos: Sequence[Any],
        guide: Guide,
        *,
        min_score: Any = None,
        max_errors: int | None = None,
        objective_config: ObjectiveConfig | None = None,
    ) -> list[Any]:
        """Mean score of each candidate on the examples; every candidate x example at once.

        Candidates run on bound copies: the shared agent is never modified, even if a
        validation fails. A candidate whose rollouts all lack a score gets None. Failures
        count in the run's `errors`, or, with `max_errors`, against that limit alone. With
        `objective_config` each mean is a per-metric dict of the guide's score dicts.
        """
        bound = [bind(self.agent, candidate) for candidate in candidates]
        results = run_rollouts(
            [b for b in bound for _ in xs],
            list(xs) * len(bound),
            list(infos) * len(bound),
            guide,
            executor=self.executor,
            min_score=min_score,
            catch_errors=True,
            max_errors=max_errors,
            scores_only=True,
            score_dicts=objective_config is not None,
            keep_targets=False,
            errors=self.errors if max_errors is None else None,
        )
        n = len(xs)
        scores = [r.score if objective_config is None else r.score_dict for r in results]
        return [
            mean_score(scores[i * n : (i + 1) * n], objective_config) for i in range(len(bound))
        ]

    def propose(
        self,
        target: Node[Any] | None = None,
        feedback: Any = None,
        num_proposals: int = 1,
        **step_kwargs: Any,
    ) -> list[Proposal]:
        """Take `num_proposals` optimizer steps at once (after a backward, if `target` given).

        With `target`, the optimizer's feedback is reset and `feedback` is propagated from
        it first; otherwise the feedback already on the parameters is used. Proposal 0
        steps the trainer's optimizer; the others step copies of it (sharing parameters
        and LLM clients), so no optimizer is stepped concurrently. Nothing is applied to
        the agent; empty proposals are dropped.
        """
        optimizer = self._require_optimizer()
        if target is not None:
            optimizer.zero_feedback()
            optimizer.backward(target, feedback)
        optimizers = [optimizer] + [copy_optimizer(optimizer) for _ in range(num_proposals - 1)]
        updates = self.local_executor.map(
            lambda opt: opt.step(bypassing=True, **step_kwargs), optimizers
        )
        base = get_paramset(self.agent)
        return [
            Proposal(paramset=paramset_from_update(self.agent, update, base), optimizer=opt)
            for update, opt in zip(updates, optimizers)
            if update
        ]

    def adopt(self, paramset: ParamSet, optimizer: Any = None) -> None:
        """Set the shared agent to `paramset` (through the optimizer, so projections apply).

        With `optimizer` (the copy that proposed it), the trainer's optimizer takes over
        that copy's state (e.g. its memory of the chosen step).
        """
        if self.optimizer is not None:
            self.optimizer.update(update_from_paramset(self.agent, paramset))
            if optimizer is not None and optimizer is not self.optimizer:
                state_dict = getattr(optimizer, "state_dict", None)
                if callable(state_dict):
                    self.optimizer.load_state_dict(state_dict())
        else:
            self.agent.load_state_dict(paramset, strict=False)

    def _require_optimizer(self) -> Any:
        if self.optimizer is None:
            raise ValueError(
                f"{type(self).__name__} needs an optimizer: pass one, e.g. "
                f"{type(self).__name__}(agent, OptoPrime(agent.parameters()))"
            )
        return self.optimizer

    # -- evaluation and saving --------------------------------------------------------------

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
        """Mean score of `agent` on the examples (all calls at once); None if none scored.

        With `objective_config`, the per-metric mean of the guide's score dicts."""
        with contextlib.ExitStack() as stack:
            executor = self.executor
            if num_threads is not None:
                executor = stack.enter_context(make_executor(num_threads=num_threads))
            scores = evaluate(
                agent,
                guide,
                xs,
                infos,
                min_score=min_score,
                num_samples=num_samples,
                max_errors=max_errors,
                executor=executor,
                score_dicts=objective_config is not None,
            )
        return mean_score(scores, objective_config)

    def save_agent(self, save_path: str | Path, iteration: int | None = None) -> str:
        """Save the agent (JSON) to `save_path`, suffixed `_iter{N}` when `iteration` is given."""
        path = Path(save_path)
        if iteration is not None:
            path = path.with_name(f"{path.stem}_iter{iteration}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.agent.save(path)
        self.logger.log("Saved agent", str(path), self.n_iters)
        return str(path)

    # -- state ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state for checkpoints: parameters, optimizer, loader, RNG, counters."""
        optimizer_state = getattr(self.optimizer, "state_dict", None)
        version, internal, gauss = self.rng.getstate()
        return {
            "version": CHECKPOINT_VERSION,
            "algorithm": type(self).__name__,
            "n_iters": self.n_iters,
            "n_epochs": self.n_epochs,
            "parameters": get_paramset(self.agent),
            "optimizer": optimizer_state() if callable(optimizer_state) else None,
            "loader": None if self.loader is None else self.loader.state_dict(),
            "rng": [version, list(internal), gauss],
            "train_scores": list(self.train_scores),
            "test_scores": copy.deepcopy(self.test_scores),
            "history": copy.deepcopy(self.history),
            "best": copy.deepcopy(self.best),
            "algorithm_state": self._algorithm_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a `state_dict()` (the loader must already be set up for the same data)."""
        self.agent.load_state_dict(state["parameters"], strict=False)
        if state["optimizer"] is not None and self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if state["loader"] is not None and self.loader is not None:
            self.loader.load_state_dict(state["loader"])
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.n_iters = int(state["n_iters"])
        self.n_epochs = int(state["n_epochs"])
        self.train_scores = list(state["train_scores"])
        self.test_scores = copy.deepcopy(list(state["test_scores"]))
        self.history = copy.deepcopy(list(state["history"]))
        self.best = copy.deepcopy(dict(state["best"]))
        self._load_algorithm_state(state["algorithm_state"])

    def _algorithm_state(self) -> Any:
        """Subclass hook: extra JSON-able state to checkpoint."""
        return None

    def _load_algorithm_state(self, state: Any) -> None:
        """Subclass hook: restore `_algorithm_state()`."""
        return

    # -- training ---------------------------------------------------------------------------

    def train(self, guide: Guide, train_dataset: Any, **kwargs: Any) -> TrainResult:
        """Optimize the agent on `train_dataset` with feedback from `guide` (abstract)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement train()")

    def resume(self, guide: Guide, train_dataset: Any, **kwargs: Any) -> TrainResult:
        """`train(..., resume=True)`: continue the run's latest checkpoint."""
        return self.train(guide, train_dataset, resume=True, **kwargs)

    @contextlib.contextmanager
    def session(
        self,
        guide: Guide,
        options: TrainOptions,
        *,
        config: Mapping[str, Any] | None = None,
        total_steps: int | None = None,
    ) -> Iterator[TrainSession]:
        """Open a run: resume, budgets, logging, checkpoints and clean stops (see module doc)."""
        check_guide(guide, "guide")
        if options.test_guide is not None:
            check_guide(options.test_guide, "test_guide")
        with self._use_executor(options.num_threads):
            config = dict(config or {})
            if options.objective_config is not None:
                config["objective_config"] = options.objective_config.to_dict()
            run = TrainSession(self, guide, options, config=config)
            with run._running(total_steps):
                yield run


class TrainSession:
    """The bookkeeping of one `train` call; algorithms drive it from their loop.

    Typical loop::

        with self.session(guide, options, config=...) as run:
            while not run.should_stop():
                ...  # one step: rollouts, proposals, validation, update
                run.complete_step(train_score=..., feedback=..., observe=...)
        return run.result

    `run.resumed` tells whether a checkpoint was loaded. `complete_step` counts the step,
    evaluates on the test set when due, logs, records the step and checkpoints. A
    `KeyboardInterrupt` or `BudgetExceeded` inside the `with` rolls the trainer back to the
    last completed step, checkpoints it and ends the run cleanly (`result.stopped` says
    why); other exceptions checkpoint the last completed step and propagate.
    """

    def __init__(
        self, trainer: Trainer, guide: Guide, options: TrainOptions, *, config: dict[str, Any]
    ) -> None:
        self.trainer = trainer
        self.guide = guide
        self.options = options
        self.config = config
        trainer.errors = ErrorBudget(options.max_errors)
        self.test_data = (
            None
            if options.test_dataset is None
            else as_dataset(options.test_dataset, name="test_dataset")
        )
        self.test_guide = options.test_guide or guide
        self.eval_frequency = options.eval_frequency or 0
        self.log_frequency = options.log_frequency or self.eval_frequency or 1
        self.stop = StopConditions(
            max_steps=options.max_steps,
            patience=options.patience,
            min_delta=options.min_delta,
            stop_file=options.stop_file,
        )
        self.stopped: str | None = None
        self.resumed = False
        self.store: RunStore | None = None
        self._prior_usage: dict[str, Any] = dict.fromkeys(_USAGE_KEYS, 0)
        self._ledger: UsageLedger | None = None
        self._step_usage_mark: dict[str, Any] = dict.fromkeys(_USAGE_KEYS, 0)
        self._last_state: dict[str, Any] | None = None
        self._test_metrics: dict[str, float] | None = None
        self.result: TrainResult | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _running(self, total_steps: int | None) -> Iterator[None]:
        trainer, options = self.trainer, self.options
        verbose = bool(options.verbose)
        if hasattr(trainer.logger, "verbose"):
            trainer.logger.verbose = verbose
        status = RunStatus.COMPLETED
        try:
            self._open_store()
            budget = options.llm_budget
            if budget is not None:
                budget = _remaining(budget, self._prior_usage)
            with track_usage(budget, all_threads=True) as ledger:
                self._ledger = ledger
                self._last_state = trainer.state_dict()
                trainer.logger.start(total=total_steps, description=type(trainer).__name__)
                trainer.logger.advance(trainer.n_iters)
                try:
                    if self.store is not None:
                        self.store.event(
                            "resumed" if self.resumed else "started", {"n_iters": trainer.n_iters}
                        )
                    yield
                except KeyboardInterrupt:
                    self._roll_back()
                    self.stopped = StopReason.INTERRUPTED
                    status = RunStatus.INTERRUPTED
                    logger.warning(
                        "training interrupted; checkpointed after step %d", trainer.n_iters
                    )
                except BudgetExceeded as exc:
                    self._roll_back()
                    self.stopped = StopReason.BUDGET
                    logger.warning("LLM budget reached after step %d: %s", trainer.n_iters, exc)
                    if self.store is not None:
                        self.store.event(
                            "budget_exceeded", {"limit": exc.limit}, iteration=trainer.n_iters
                        )
                except BaseException as exc:
                    self._roll_back()
                    status = RunStatus.FAILED
                    if isinstance(exc, TooManyErrorsError) and self.store is not None:
                        self.store.event("too_many_errors", {"failures": to_jsonable(exc.failures)})
                    try:
                        self._checkpoint()
                    except Exception:  # keep the original error; this one is secondary
                        logger.exception("could not checkpoint the failed run")
                    raise
                else:
                    if self.stopped is None:
                        self.stopped = StopReason.COMPLETED
                    self._final_evaluation()
                finally:
                    trainer.logger.close()
            self._checkpoint()
            self.result = self._result()
        finally:
            if self.store is not None:
                with contextlib.suppress(Exception):
                    self.store.finish(status)
                self.store.close()

    def _open_store(self) -> None:
        options, trainer = self.options, self.trainer
        if options.storage is None and not options.resume and options.save_frequency is None:
            return
        storage = options.storage
        if storage is None:
            storage = default_storage_url()
        config = {**self.config, "agent": agent_signature(trainer.agent)}
        self.store = RunStore(
            storage,
            run_name=options.run_name,
            prefix=type(trainer).__name__,
            resume=options.resume,
            config=config,
            seed=trainer.seed,
        )
        if options.resume and not self.store.created:
            state = self.store.latest_state(type(trainer).__name__)
            check_resume(
                self.store.name, self.store.run.config, config, state, options.resume_overrides
            )
            if state is not None:
                state = self.store.check_parameters(state, trainer.agent, options.trust_code)
                trainer.load_state_dict(state)
                self.stop.load_state_dict(state["stop"])
                trainer.errors.errors = int(state.get("errors", 0))
                self._prior_usage = dict(state["usage"])
                self._step_usage_mark = dict(self._prior_usage)
                self.resumed = True
                logger.info("resumed run %s after step %d", self.store.name, trainer.n_iters)

    def _final_evaluation(self) -> None:
        """Evaluate the final parameters unless the last step already did."""
        trainer = self.trainer
        if self.test_data is None or self.eval_frequency <= 0:
            return
        if self._evaluated_at(trainer.n_iters):
            return
        try:
            self.evaluate_test()
        except (KeyboardInterrupt, BudgetExceeded) as exc:
            logger.warning("final evaluation skipped: %s", type(exc).__name__)
            return
        self._last_state = trainer.state_dict()

    def _roll_back(self) -> None:
        """Return the trainer to the state after the last completed step."""
        if self._last_state is not None:
            self.trainer.load_state_dict(self._last_state)

    # -- usage ------------------------------------------------------------------------------

    @property
    def usage(self) -> dict[str, Any]:
        """LLM usage of the whole run so far (earlier sessions included)."""
        current = self._ledger.summary() if self._ledger is not None else {}
        return _add_usage(self._prior_usage, current)

    def _step_usage(self) -> dict[str, Any]:
        now = self.usage
        delta = {k: now[k] - self._step_usage_mark.get(k, 0) for k in _USAGE_KEYS}
        self._step_usage_mark = now
        return delta

    # -- the loop ---------------------------------------------------------------------------

    def should_stop(self) -> bool:
        """Whether a stop condition holds (it is recorded in `stopped`)."""
        if self.stopped is not None:
            return True
        reason = self.stop.check(self.trainer.n_iters)
        if reason is not None:
            self.stopped = reason
            logger.info("stopping after step %d: %s", self.trainer.n_iters, reason)
            return True
        return False

    def _evaluated_at(self, step: int) -> bool:
        return any(entry["step"] == step for entry in self.trainer.test_scores)

    def initial_evaluation(self) -> None:
        """Evaluate the starting parameters on the test set (once, when evaluations are on)."""
        if self.test_data is not None and self.eval_frequency > 0 and not self._evaluated_at(0):
            if self.trainer.n_iters == 0:
                self.evaluate_test()
                self._last_state = self.trainer.state_dict()

    def evaluate_test(self) -> float | None:
        """Evaluate the agent on the test set now; logs, tracks best and patience."""
        trainer, options = self.trainer, self.options
        assert self.test_data is not None
        score = trainer.evaluate(
            trainer.agent,
            self.test_guide,
            self.test_data["inputs"],
            self.test_data["infos"],
            min_score=options.min_score,
            num_samples=options.num_test_samples,
            max_errors=options.max_errors,
            objective_config=options.objective_config,
        )
        self._test_metrics = score if isinstance(score, Mapping) else None
        score = scalar(score, options.objective_config)
        if self._test_metrics is not None:
            log_metrics(trainer.logger, {"Average test score": self._test_metrics}, trainer.n_iters)
        entry = {"step": trainer.n_iters, "score": score}
        if self._test_metrics is not None:
            entry["metrics"] = dict(self._test_metrics)
        trainer.test_scores.append(entry)
        trainer.logger.log("Average test score", score, trainer.n_iters, color="green")
        trainer.logger.log_table(trainer.n_iters, {"Average test score": score})
        self._observe(score)
        return score

    def _observe(self, score: float | None) -> None:
        trainer = self.trainer
        if self.stop.observe(score) or trainer.best["parameters"] is None:
            trainer.best = {
                "score": score if is_score(score) else None,
                "parameters": get_paramset(trainer.agent),
                "iteration": trainer.n_iters,
            }

    def complete_step(
        self,
        *,
        train_score: float | None,
        feedback: Any = None,
        scores: Mapping[str, Any] | None = None,
        info: Mapping[str, Any] | None = None,
        observe: float | None = None,
    ) -> None:
        """Close a finished step: count, evaluate if due, log, record and checkpoint.

        `observe` is the score that drives best-so-far and patience when there is no test
        set (e.g. a validation score); `scores` are extra named scores for the record. The
        examples that failed since the last step go to the record's `info["failures"]`.
        """
        trainer, options = self.trainer, self.options
        trainer.n_iters += 1
        step = trainer.n_iters
        if trainer.loader is not None:
            trainer.n_epochs = trainer.loader.n_epochs
        if train_score is not None:
            trainer.train_scores.append(train_score)
        test_score = None
        if (
            self.test_data is not None
            and self.eval_frequency > 0
            and step % self.eval_frequency == 0
        ):
            test_score = self.evaluate_test()
        elif self.test_data is None and observe is not None:
            self._observe(observe)
        all_scores: dict[str, Any] = {"train": train_score}
        if test_score is not None:
            all_scores["test"] = test_score
            if self._test_metrics is not None:
                all_scores.update(split_scores({"test": self._test_metrics}))
        all_scores.update(split_scores(scores or {}, options.objective_config))
        usage = self._step_usage()
        failures = trainer.errors.drain()  # the examples whose agent or guide raised
        info = {**(info or {}), **({"failures": failures} if failures else {})}
        entry = {"step": step, "epoch": trainer.n_epochs, "scores": all_scores, "usage": usage}
        trainer.history.append(entry)
        if step % self.log_frequency == 0:
            self._log_step(train_score)
            log_metrics(trainer.logger, scores or {}, step)
        if self.store is not None:
            self.store.record_step(
                step,
                parameters=to_jsonable(get_paramset(trainer.agent)),
                scores={k: _finite_or_none(v) for k, v in all_scores.items()},
                feedback=to_jsonable(feedback),
                usage=usage,
                info=to_jsonable({"epoch": trainer.n_epochs, **info}),
            )
        self._last_state = trainer.state_dict()
        if options.save_frequency is not None and step % options.save_frequency == 0:
            self._checkpoint()
            trainer.save_agent(options.save_path)
        elif self.store is not None and options.save_frequency is None:
            self._checkpoint()
        trainer.logger.advance(step)

    def _log_step(self, train_score: float | None) -> None:
        trainer = self.trainer
        step = trainer.n_iters
        trainer.logger.log("Instantaneous train score", train_score, step)
        trainer.logger.log("Average train score", safe_mean(trainer.train_scores), step)
        for path, value in get_paramset(trainer.agent).items():
            trainer.logger.log(f"Parameter: {path}", value, step, color="red")

    def _checkpoint(self) -> None:
        if self.store is None or self._last_state is None:
            return
        state = dict(self._last_state)
        state["stop"] = self.stop.state_dict()
        state["usage"] = self.usage
        state["errors"] = self.trainer.errors.errors
        self.store.save(state, iteration=state["n_iters"])

    def _result(self) -> TrainResult:
        trainer = self.trainer
        final = get_paramset(trainer.agent)
        best = trainer.best
        tests = trainer.test_scores
        return TrainResult(
            best_parameters=best["parameters"] if best["parameters"] is not None else final,
            best_score=best["score"],
            final_parameters=final,
            train_scores=list(trainer.train_scores),
            test_scores=copy.deepcopy(tests),
            final_test_score=tests[-1]["score"] if tests else None,
            history=copy.deepcopy(trainer.history),
            usage=self.usage,
            n_iters=trainer.n_iters,
            n_epochs=trainer.n_epochs,
            stopped=self.stopped or StopReason.COMPLETED,
            run_name=None if self.store is None else self.store.name,
            storage_url=None if self.store is None else self.store.url,
            save_path=self.options.save_path if self.options.save_frequency else None,
        )


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return value
    return None


#: The reference's original name of `Trainer`.
AlgorithmBase = Trainer


class _ParameterModel(Module):
    """Wraps one trainable ParameterNode as a model whose output is the parameter."""

    def __init__(self, parameter: ParameterNode) -> None:
        self.parameter = parameter

    def forward(self, x: Any) -> ParameterNode:
        return self.parameter


def _resolve(spec: Any, module: str, kind: str, base: type) -> Any:
    """A class from a name looked up in `module`, or the class/instance given."""
    if isinstance(spec, str):
        found = getattr(importlib.import_module(module), spec, None)
        if not (isinstance(found, type) and issubclass(found, base)):
            raise ValueError(f"unknown {kind} {spec!r}: {module} has no {kind} of that name")
        return found
    return spec


def train(
    *,
    model: Module | ParameterNode,
    train_dataset: Any,
    algorithm: str | type[Trainer] = "MinibatchAlgorithm",
    optimizer: Any = None,
    guide: Any = "LLMJudge",
    logger: Any = "ConsoleLogger",
    optimizer_kwargs: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    guide_kwargs: Mapping[str, Any] | None = None,
    logger_kwargs: Mapping[str, Any] | None = None,
    seed: int | None = None,
    executor: Executor | str | None = None,
    **trainer_kwargs: Any,
) -> TrainResult:
    """Train `model` in one call (the reference's entry point).

    `algorithm`, `optimizer`, `guide` and `logger` are names (looked up in
    `opto.trainers.algorithms`, `opto.optimizers`, `opto.trainers.guide`,
    `opto.trainers.loggers`), classes, or instances. A trainable `ParameterNode` is
    wrapped into a model whose output is the parameter (black-box optimization; the default
    optimizer is then "OPROv2" where available, else "OPRO"; for modules "OptoPrimeV2").
    A list of `optimizer_kwargs` builds one optimizer per entry. `seed` and `executor` go
    to the trainer; every other keyword to its `train`.
    """
    as_dataset(train_dataset, name="train_dataset")
    if isinstance(model, ParameterNode):
        if not model.trainable:
            raise ValueError(
                "train(model=...) got a non-trainable ParameterNode; create it with trainable=True"
            )
        model = _ParameterModel(model)
    elif not isinstance(model, Module):
        raise TypeError(
            f"model must be a trace Module or a trainable ParameterNode, not {type(model).__name__}"
        )
    if not model.parameters():
        raise ValueError("the model has no parameters to optimize; mark some with trainable=True")
    trainer_class = _resolve(algorithm, "opto.trainers.algorithms", "algorithm", Trainer)
    if not (isinstance(trainer_class, type) and issubclass(trainer_class, Trainer)):
        raise TypeError(f"algorithm must be a Trainer subclass or its name, not {algorithm!r}")
    optimizers_module = importlib.import_module("opto.optimizers")
    if optimizer is None:
        wrapped = isinstance(model, _ParameterModel)
        optimizer = (
            ("OPROv2" if hasattr(optimizers_module, "OPROv2") else "OPRO")
            if wrapped
            else "OptoPrimeV2"
        )
    optimizer_class = _resolve(
        optimizer, "opto.optimizers", "optimizer", optimizers_module.Optimizer
    )
    if isinstance(optimizer_class, type):
        many = isinstance(optimizer_kwargs, Sequence) and not isinstance(optimizer_kwargs, Mapping)
        kwargs_list = list(optimizer_kwargs) if many else [optimizer_kwargs or {}]  # type: ignore[arg-type]
        built = [optimizer_class(model.parameters(), **kw) for kw in kwargs_list]
        optimizer = built if many else built[0]
    guide_class = _resolve(guide, "opto.trainers.guide", "guide", Guide)
    guide = build_guide(guide_class, guide_kwargs)
    logger_class = _resolve(logger, "opto.trainers.loggers", "logger", BaseLogger)
    logger = (
        logger_class(**(logger_kwargs or {})) if isinstance(logger_class, type) else logger_class
    )
    trainer = trainer_class(model, optimizer, logger=logger, executor=executor, seed=seed)
    return trainer.train(guide, train_dataset, **trainer_kwargs)
