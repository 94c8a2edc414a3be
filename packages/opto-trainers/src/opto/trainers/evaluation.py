"""Rollouts and evaluation: run an agent on examples and score the outputs with a guide.

A *rollout* is one forward pass on one example plus the guide's verdict. `run_rollouts`
runs many at once on an executor (each with its own copy of the agent's state and of the
guide) and returns plain `Rollout` records. `evaluate` is the reference's scoring entry
point built on it.

Failures follow the policy of `opto.trainers.runner` (shared by every trainer): an
`ExecutionError` of the agent becomes feedback; with `catch_errors`, any other exception
of the agent or guide scores `min_score`, is recorded with its example and counted, and
`TooManyErrorsError` is raised once more than `max_errors` have failed (without
`catch_errors` it propagates); a guide breaking its contract raises `GuideError`;
`BudgetExceeded` and `KeyboardInterrupt` always propagate. Async agents are awaited.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

from opto.trace.modules import Module

from .executors import Executor, make_executor
from .guide import Guide
from .runner import (
    ErrorBudget,
    Rollout,
    TooManyErrorsError,
    guarded,
    is_failure,
    rollout,
    score_dict_of,
)

__all__ = ["Rollout", "TooManyErrorsError", "evaluate", "rollout", "run_rollouts"]

logger = logging.getLogger(__name__)


def _run_one(
    min_score: Any,
    catch_errors: bool,
    scores_only: bool,
    score_dicts: bool,
    copy_agent: bool,
    keep_target: bool,
    budget: ErrorBudget | None,
    task: tuple[Module, Any, Any, Guide],
) -> Rollout:
    """One rollout task (see `run_example`); with `catch_errors` failures become records.

    A module-level function of plain arguments, so executors that ship tasks to other
    processes (Ray) can send it. `budget` (in-process only) counts failures as they
    happen and skips the tasks that start once it is exhausted.
    """
    agent, x, info, guide = task
    if budget is not None and budget.tripped:
        return Rollout(
            x=x,
            info=info,
            score=min_score,
            error="skipped",
            error_kind="skipped",
            score_dict=score_dict_of(min_score) if score_dicts else None,
        )

    def call() -> Rollout:
        worker = agent.copy() if copy_agent else agent
        return rollout(
            worker,
            x,
            guide.copy(),
            info,
            min_score,
            scores_only=scores_only,
            score_dicts=score_dicts,
        )

    record = guarded(call, x, info, min_score) if catch_errors else call()
    if score_dicts and record.score_dict is None:
        record.score_dict = score_dict_of(min_score)
    if budget is not None and is_failure(record):
        budget.add(record.exception, record)
    if not keep_target:
        record.target = None
    return record


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
    score_dicts: bool = False,
    copy_agents: bool = True,
    keep_targets: bool = True,
    errors: ErrorBudget | None = None,
) -> list[Rollout]:
    """Run example i on `agents[i]`, all at once on `executor`; results in order.

    Each call runs on `agents[i].copy()` (shared parameters, isolated state; pass
    `copy_agents=False` when the agents are already private copies) and its own
    `guide.copy()`. `keep_targets=False` drops the output nodes (scores only, and required
    on executors that run tasks in other processes, whose graphs cannot come back). See
    the module docstring for `catch_errors`, `max_errors` and `min_score`. With
    `score_dicts` each record's `score_dict` holds the guide's metrics (a failed example's
    is derived from `min_score`: None, its dict, or `{"score": min_score}`). `errors` is an
    `ErrorBudget` to count failures in instead (e.g. a training run's, shared by steps).
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
    budget = errors if errors is not None else ErrorBudget(max_errors)
    task = functools.partial(
        _run_one,
        min_score,
        catch_errors,
        scores_only,
        score_dicts,
        copy_agents,
        keep_targets,
        budget if in_process else None,
    )
    results = executor.map(task, list(zip(agents, xs, infos, guides)))
    if in_process:
        budget.check()
    else:
        budget.count(results)
    return results


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
    score_dicts: bool = False,
) -> list[Any]:
    """Score `agent` on every (input, info) pair; every call in flight at once.

    Returns one score per input, or, with `num_samples > 1`, a list of `num_samples`
    scores per input. Failures follow the module docstring (`ExecutionError` and other
    exceptions score `min_score`; more than `max_errors` non-execution failures raise
    `TooManyErrorsError`). `on_rollouts` receives the full records (for storage/logging).
    `description` is accepted for compatibility (progress is shown by trainers' loggers).

    With `score_dicts=True` each score is the guide's dict of metrics instead (see
    `Guide.get_score_dict`; one guide call per example when the guide overrides it); a
    failed example's is None when `min_score` is None, `min_score` when it is a dict, else
    `{"score": min_score}`. Average them with `objectives.aggregate_score_dicts`.
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
            score_dicts=score_dicts,
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
    scores = [r.score_dict if score_dicts else r.score for r in results]
    if num_samples == 1:
        return scores
    return [scores[i : i + num_samples] for i in range(0, len(scores), num_samples)]
