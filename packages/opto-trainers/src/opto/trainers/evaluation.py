"""Rollouts and evaluation: run an agent on examples and score the outputs with a guide.

A *rollout* is one forward pass on one example plus the guide's verdict. `run_rollouts`
runs many at once on an executor (each with its own copy of the agent's state and of the
guide) and returns plain `Rollout` records. `evaluate` is the reference's scoring entry
point built on it.

Failure semantics:

* the agent raises `ExecutionError` (a traced operator failed): the rollout's target is
  the `ExceptionNode`, its score `min_score` and its feedback the node's full feedback,
  so an optimizer can fix code that crashes;
* anything else (a network error in an LLM judge, a bug in the guide...): with
  `catch_errors` the rollout is scored `min_score`, counted in `errors`, and the run stops
  with `TooManyErrorsError` once more than `max_errors` have failed; without it the
  exception propagates;
* `BudgetExceeded` and `KeyboardInterrupt` always propagate.
"""

from __future__ import annotations

import functools
import logging
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from opto.trace.errors import ExecutionError
from opto.trace.modules import Module
from opto.trace.nodes import Node
from opto.utils.errors import OptoError
from opto.utils.usage import BudgetExceeded

from .executors import Executor, make_executor
from .guide import Guide, GuideError

__all__ = ["Rollout", "TooManyErrorsError", "evaluate", "rollout", "run_rollouts"]

logger = logging.getLogger(__name__)


class TooManyErrorsError(OptoError, RuntimeError):
    """More rollouts failed than `max_errors` allows; the first failure is the `__cause__`."""

    def __init__(self, message: str, *, errors: int, max_errors: int) -> None:
        super().__init__(message)
        self.errors = errors
        self.max_errors = max_errors


@attrs.define(kw_only=True, eq=False)
class Rollout:
    """One example's forward pass and verdict.

    `target` is the output node (or the `ExceptionNode`) for backward; it is None when the
    rollout failed outside the traced code and is never serialized. `error_kind` is None,
    "execution" (an `ExecutionError` of the agent) or "exception" (any other failure).
    """

    x: Any
    info: Any
    output: Any = None
    score: Any = None
    feedback: Any = None
    error: str | None = None
    error_kind: str | None = None
    target: Node[Any] | None = attrs.field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly record (inputs, output data, score, feedback, error)."""
        return {
            "x": self.x,
            "info": self.info,
            "output": self.output,
            "score": self.score,
            "feedback": self.feedback,
            "error": self.error,
            "error_kind": self.error_kind,
        }


def _metric_overridden(guide: Guide) -> bool:
    metric = getattr(type(guide), "metric", None)
    return metric is not None and metric is not Guide.metric


def rollout(
    agent: Module,
    x: Any,
    guide: Guide,
    info: Any,
    min_score: Any = None,
    *,
    scores_only: bool = False,
) -> Rollout:
    """Run `agent(x)` and score it with `guide`; `ExecutionError` becomes feedback.

    With `scores_only`, a guide with its own (cheaper) `metric` is asked for the score
    only and the rollout has no feedback. Other exceptions propagate.
    """
    try:
        target = agent(x)
    except ExecutionError as exc:
        node = exc.exception_node
        return Rollout(
            x=x,
            info=info,
            output=node._data,
            score=min_score,
            feedback=node.create_feedback("full"),
            error=str(node._data),
            error_kind="execution",
            target=node,
        )
    output = target.data if isinstance(target, Node) else target
    if scores_only and _metric_overridden(guide):
        score, feedback = guide.metric(x, output, info), None
    else:
        verdict = guide(x, output, info)
        if not (isinstance(verdict, tuple) and len(verdict) == 2):
            raise GuideError(
                f"{type(guide).__name__} returned {verdict!r:.80}; a guide call must return "
                "(score, feedback) — wrap a plain metric with FunctionGuide"
            )
        score, feedback = verdict
    return Rollout(
        x=x,
        info=info,
        output=output,
        score=score,
        feedback=feedback,
        target=target if isinstance(target, Node) else None,
    )


class _ErrorBudget:
    """Counts non-execution failures across concurrent rollouts; trips past `max_errors`."""

    def __init__(self, max_errors: int | None) -> None:
        self.max_errors = max_errors
        self.errors = 0
        self.first: BaseException | None = None
        self._lock = threading.Lock()

    def add(self, exc: BaseException) -> None:
        with self._lock:
            self.errors += 1
            if self.first is None:
                self.first = exc

    @property
    def tripped(self) -> bool:
        return self.max_errors is not None and self.errors > self.max_errors

    def check(self) -> None:
        if self.tripped:
            raise TooManyErrorsError(
                f"{self.errors} rollouts failed, more than max_errors={self.max_errors}; the "
                f"first failure was {type(self.first).__name__}: {self.first}. Fix the cause "
                "(see __cause__) or raise max_errors",
                errors=self.errors,
                max_errors=self.max_errors,  # type: ignore[arg-type]
            ) from self.first


def _run_one(
    min_score: Any,
    catch_errors: bool,
    scores_only: bool,
    copy_agent: bool,
    keep_target: bool,
    budget: _ErrorBudget | None,
    task: tuple[Module, Any, Any, Guide],
) -> tuple[Rollout, Exception | None]:
    """One rollout task; returns the record and the exception it caught, if any.

    A module-level function of plain arguments, so executors that ship tasks to other
    processes (Ray) can send it. `budget` (in-process only) skips tasks once tripped.
    """
    agent, x, info, guide = task
    if budget is not None and budget.tripped:
        return Rollout(x=x, info=info, score=min_score, error="skipped", error_kind="skipped"), None
    try:
        record = rollout(
            agent.copy() if copy_agent else agent,
            x,
            guide.copy(),
            info,
            min_score,
            scores_only=scores_only,
        )
    except (BudgetExceeded, TooManyErrorsError):
        raise
    except Exception as exc:
        if not catch_errors:
            raise
        if budget is not None:
            budget.add(exc)
        logger.warning("rollout failed (%s: %s); scored %r", type(exc).__name__, exc, min_score)
        message = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        failed = Rollout(x=x, info=info, score=min_score, error=message, error_kind="exception")
        return failed, exc
    if not keep_target:
        record.target = None
    return record, None


def run_rollouts(
    agents: Sequence[Module],
    xs: Sequence[Any],
    infos: Sequence[Any],
    guide: Guide | Sequence[Guide],
    *,
    executor: Executor | None = None,
    min_score: Any = None,
    catch_errors: bool = False,
    max_errors: int | None = None,
    scores_only: bool = False,
    copy_agents: bool = True,
    keep_targets: bool = True,
) -> list[Rollout]:
    """Run example i on `agents[i]`, all at once on `executor`; results in order.

    Each call runs on `agents[i].copy()` (shared parameters, isolated state; pass
    `copy_agents=False` when the agents are already private copies) and its own
    `guide.copy()`. `keep_targets=False` drops the output nodes (scores only, and required
    on executors that run tasks in other processes, whose graphs cannot come back). See
    the module docstring for `catch_errors`, `max_errors` and `min_score`.
    """
    if not len(agents) == len(xs) == len(infos):
        raise ValueError(
            f"run_rollouts needs one agent per example: got {len(agents)} agents, {len(xs)} "
            f"inputs and {len(infos)} infos"
        )
    guides = list(guide) if isinstance(guide, Sequence) else [guide] * len(xs)
    if len(guides) != len(xs):
        raise ValueError(f"got {len(guides)} guides for {len(xs)} examples")
    executor = executor or make_executor()
    in_process = getattr(executor, "in_process", True)
    if keep_targets and not in_process:
        raise ValueError(
            f"{executor!r} runs tasks in other processes, so rollouts cannot keep their "
            "graphs; run rollouts that feed a backward on an in-process executor"
        )
    budget = _ErrorBudget(max_errors)
    task = functools.partial(
        _run_one,
        min_score,
        catch_errors,
        scores_only,
        copy_agents,
        keep_targets,
        budget if in_process else None,
    )
    results = executor.map(task, list(zip(agents, xs, infos, guides)))
    if not in_process:
        for _, exc in results:
            if exc is not None:
                budget.add(exc)
    budget.check()
    return [record for record, _ in results]


def evaluate(
    agent: Module,
    guide: Guide,
    inputs: Sequence[Any],
    infos: Sequence[Any],
    min_score: Any = None,
    num_samples: int = 1,
    num_threads: int | None = None,
    description: str | None = None,
    *,
    max_errors: int | None = None,
    executor: Executor | None = None,
    on_rollouts: Callable[[list[Rollout]], None] | None = None,
) -> list[Any]:
    """Score `agent` on every (input, info) pair; every call in flight at once.

    Returns one score per input, or, with `num_samples > 1`, a list of `num_samples`
    scores per input. Failures follow the module docstring (`ExecutionError` and other
    exceptions score `min_score`; more than `max_errors` non-execution failures raise
    `TooManyErrorsError`). `on_rollouts` receives the full records (for storage/logging).
    `description` is accepted for compatibility (progress is shown by trainers' loggers).
    """
    if len(inputs) != len(infos):
        raise ValueError(
            f"evaluate got {len(inputs)} inputs but {len(infos)} infos; pass one info per input"
        )
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, not {num_samples!r}")
    xs = [x for x in inputs for _ in range(num_samples)]
    refs = [info for info in infos for _ in range(num_samples)]
    own = executor is None
    executor = executor or make_executor(num_threads=num_threads)
    try:
        results = run_rollouts(
            [agent] * len(xs),
            xs,
            refs,
            guide,
            executor=executor,
            min_score=min_score,
            catch_errors=True,
            max_errors=max_errors,
            scores_only=True,
            keep_targets=False,
        )
    finally:
        if own:
            executor.close()
    failed = sum(r.error_kind == "exception" for r in results)
    if failed:
        logger.warning(
            "evaluation: %d of %d rollouts failed and scored %r", failed, len(results), min_score
        )
    if on_rollouts is not None:
        on_rollouts(results)
    scores = [r.score for r in results]
    if num_samples == 1:
        return scores
    return [scores[i : i + num_samples] for i in range(0, len(scores), num_samples)]
