"""`Trainer` (alias `AlgorithmBase`): the one trainer API every algorithm shares.

A trainer holds an agent (a `trace.Module`), an optimizer, a logger, an executor (or a
thread count) and a seed. Algorithms implement `train(guide, train_dataset, **options)`
with the reference's keyword names: the common ones are the fields of `TrainOptions`
(`opto.trainers.options`; an unknown keyword raises `UnknownTrainArgumentError`), and every
call returns a `TrainResult`.

Building blocks for algorithms, each running all its independent calls at once on the
executor: `rollouts` (forward + guide on a batch), `propose` (N optimizer proposals, each
on its own fork of the optimizer), `validate` (every candidate x example). Candidates are
parameter sets (values); validating them never touches the shared agent.

`TrainSession` (`opto.trainers.session`, opened with `self.session(...)`) runs the
bookkeeping of a run: step counters, periodic test evaluation, logging, step records and
atomic checkpoints in run storage, resume, stop conditions, LLM budgets, and Ctrl-C.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from opto.trace.modules import Module
from opto.trace.nodes import Node
from opto.utils.signatures import takes_parameters_of

from ..checkpoint import CHECKPOINT_VERSION
from ..evalcache import EvalCache
from ..evaluation import ErrorBudget, Rollout, evaluate, run_rollouts
from ..executors import Executor, make_executor
from ..guide import Guide, check_guide
from ..loader import DataLoader
from ..loggers import BaseLogger, ConsoleLogger
from ..objectives import ObjectiveConfig
from ..options import TrainOptions, TrainResult, UnknownTrainArgumentError
from ..scoring import mean_score
from ..session import TrainSession
from ..utils import (  # noqa: F401  (copy_optimizer: re-exported)
    ParamSet,
    bind,
    copy_optimizer,
    get_paramset,
    paramset_from_update,
    safe_mean,
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


@attrs.define(kw_only=True, eq=False)
class Proposal:
    """One optimizer proposal: the full parameter set and the optimizer (or fork) that made it."""

    paramset: ParamSet
    optimizer: Any


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
        self.optimizer = self._accept_optimizer(optimizer)
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
        self.eval_cache: EvalCache | None = None  # the current run's (set by its session)
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
            cache=self.eval_cache,
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
        steps the trainer's optimizer; the others step its forks (`Optimizer.fork()`:
        same parameters and LLM client), so no optimizer is stepped concurrently. Nothing is applied to
        the agent; empty proposals are dropped.
        """
        optimizer = self._require_optimizer()
        if target is not None:
            optimizer.zero_feedback()
            optimizer.backward(target, feedback)
        optimizers = [optimizer] + [optimizer.fork() for _ in range(num_proposals - 1)]
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

    def _accept_optimizer(self, optimizer: Any) -> Any:
        """The trainer's optimizer from the constructor's argument (a hook: search
        trainers accept a list of optimizers and keep the first as `optimizer`)."""
        return optimizer

    def _require_optimizer(self) -> Any:
        if self.optimizer is None:
            raise ValueError(
                f"{type(self).__name__} needs an optimizer: pass one, e.g. "
                f"{type(self).__name__}(agent, OptoPrime(agent.parameters()))"
            )
        return self.optimizer

    # -- evaluation and saving --------------------------------------------------------------

    @takes_parameters_of(
        evaluate,
        rename={"inputs": "xs"},
        drop=("executor", "on_rollouts", "score_dicts", "cache"),
        extra={"objective_config": "ObjectiveConfig | None"},
    )
    def evaluate(self, arguments: dict[str, Any]) -> Any:
        """Mean score of `agent` on the examples (all calls at once); None if none scored.

        Takes `opto.trainers.evaluation.evaluate`'s arguments (`xs` are its `inputs`) and
        runs it on the trainer's executor and eval cache, or on `num_threads` threads when
        given (`description` is accepted for compatibility). With `objective_config`, the
        per-metric mean of the guide's score dicts.
        """
        config = arguments.pop("objective_config")
        num_threads = arguments.pop("num_threads")
        arguments["inputs"] = arguments.pop("xs")
        with contextlib.ExitStack() as stack:
            executor = self.executor
            if num_threads is not None:
                executor = stack.enter_context(make_executor(num_threads=num_threads))
            scores = evaluate(
                **arguments,
                executor=executor,
                score_dicts=config is not None,
                cache=self.eval_cache,
            )
        return mean_score(scores, config)

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


#: The reference's original name of `Trainer`.
AlgorithmBase = Trainer

from .entrypoint import train  # noqa: E402  (defined on top of Trainer)
