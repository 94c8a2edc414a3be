"""Running examples: one (`run_example`), many at once (`run_rollouts`, `evaluate`), and
turning a batch of them into feedback (`batch_backward`).

Every trainer runs its examples through this module, so a failing example is handled the
same way everywhere:

* the agent raises `ExecutionError` (a traced operator failed): the record's target is
  the `ExceptionNode`, its score `min_score` and its feedback the node's full feedback, so
  an optimizer can fix the code; this is not counted as an error;
* any other exception of the agent or the guide: the record keeps the example, scores
  `min_score` and carries the error message (`error_kind="exception"`); an `ErrorBudget`
  counts such records and raises `TooManyErrorsError` once more than `max_errors` failed
  (with `catch_errors=False`, `run_rollouts` lets the exception propagate instead);
* a guide that breaks its contract (returns something other than `(score, feedback)`, or a
  score that is None or not a number) raises `GuideError` naming the guide at once: that
  is a bug in the guide, not a failing example;
* `BudgetExceeded`, `TooManyErrorsError` and `KeyboardInterrupt` always propagate.

An agent whose `forward` is `async def` (or that calls async bundles) returns an awaitable;
`resolve` runs it to completion in the calling worker, so async agents work on every
executor, and the awaited result is the traced output node a backward needs.

A *rollout* is one forward pass on one example plus the guide's verdict (a `Rollout`
record). `run_rollouts` runs many at once on an executor (each with its own copy of the
agent's state and of the guide); `evaluate` is the reference's scoring entry point built
on it. `batch_backward` joins a batch's outputs and feedback with the traced `batchify` op
and propagates them in one backward.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import numbers
import threading
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
from opto.trace.errors import ExecutionError
from opto.trace.modules import Module
from opto.trace.nodes import Node
from opto.utils.concurrency import start_thread
from opto.utils.errors import OptoError
from opto.utils.signatures import takes_parameters_of
from opto.utils.usage import BudgetExceeded

from .executors import Executor, executor_loop, make_executor
from .guide import Guide, GuideError
from .utils import batchify, get_paramset

if TYPE_CHECKING:
    from .evalcache import EvalCache, Keep

__all__ = [
    "ErrorBudget",
    "Rollout",
    "TooManyErrorsError",
    "batch_backward",
    "call_agent",
    "evaluate",
    "guarded",
    "is_failure",
    "judge",
    "resolve",
    "rollout",
    "run_example",
    "run_rollouts",
    "score_dict_of",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
_R = TypeVar("_R", bound="Rollout")


class TooManyErrorsError(OptoError, RuntimeError):
    """More rollouts failed than `max_errors` allows; the first failure is the `__cause__`.

    `failures` holds the failed examples' records (`Rollout.to_dict()`), oldest first.
    """

    def __init__(
        self,
        message: str,
        *,
        errors: int,
        max_errors: int,
        failures: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.errors = errors
        self.max_errors = max_errors
        self.failures = list(failures or [])


@attrs.define(kw_only=True, eq=False)
class Rollout:
    """One example's forward pass and verdict.

    `target` is the output node (or the `ExceptionNode`) for backward; it is None when the
    rollout failed outside the traced code. `exception` is what a failed rollout raised.
    Neither is part of `to_dict()`. `score_dict` holds the guide's metrics by name when
    they were asked for (`score_dicts=True`; `to_dict()` then includes it). `error_kind` is None,
    "execution" (an `ExecutionError` of the agent), "exception" (any other failure) or
    "skipped" (not run because the error budget was already exhausted).
    """

    x: Any
    info: Any
    output: Any = None
    score: Any = None
    feedback: Any = None
    error: str | None = None
    error_kind: str | None = None
    score_dict: dict[str, float] | None = None
    target: Node[Any] | None = attrs.field(default=None, repr=False)
    exception: BaseException | None = attrs.field(default=None, repr=False)

    @classmethod
    def from_target(cls: type[_R], target: Any, **fields: Any) -> _R:
        """The rollout of a forward pass that returned `target` (a `Node` or a plain value).

        `output` is the target's data; `target` is kept only when it is a node (for backward).
        """
        if isinstance(target, Node):
            return cls(output=target.data, target=target, **fields)
        return cls(output=target, **fields)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly record (inputs, output data, score(s), feedback, error)."""
        record = {
            "x": self.x,
            "info": self.info,
            "output": self.output,
            "score": self.score,
            "feedback": self.feedback,
            "error": self.error,
            "error_kind": self.error_kind,
        }
        if self.score_dict is not None:
            record["score_dict"] = dict(self.score_dict)
        return record


# -- async agents ---------------------------------------------------------------------------


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


def resolve(value: Any) -> Any:
    """`value`, or, if it is awaitable (an async agent's result), what it resolves to.

    Inside a task of an `AsyncioExecutor` the awaitable is awaited on the executor's loop;
    elsewhere it runs to completion on a fresh event loop in this thread, or, when this
    thread already runs a loop (synchronous code called from async code), on a helper
    thread. Either way it runs in a copy of the caller's `contextvars` context.
    """
    if not inspect.isawaitable(value):
        return value
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        loop = executor_loop()
        if loop is not None:
            return asyncio.run_coroutine_threadsafe(_await(value), loop).result()
        return asyncio.run(_await(value))
    result: list[Any] = []
    failure: list[BaseException] = []

    def run() -> None:  # in a copy of the caller's context (start_thread)
        try:
            result.append(asyncio.run(_await(value)))
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    start_thread(run, name="opto-await-agent").join()
    if failure:
        raise failure[0]
    return result[0]


def call_agent(agent: Module, x: Any) -> Any:
    """`agent(x)`, awaited to completion when the agent is async (its output node)."""
    return resolve(agent(x))


# -- the guide's verdict --------------------------------------------------------------------


def _check_score(guide: Guide, score: Any, what: str) -> Any:
    if isinstance(score, numbers.Real):
        return score
    if (
        isinstance(score, Mapping)
        and score
        and all(isinstance(v, numbers.Real) for v in score.values())
    ):
        return score
    raise GuideError(
        f"guide {type(guide).__name__} returned the score {score!r:.80} from {what}; a score "
        "must be a number (or a dict of numbers). Fix the guide's get_feedback/metric"
    )


def _overrides(guide: Guide, method: str) -> bool:
    impl = getattr(type(guide), method, None)
    return impl is not None and impl is not getattr(Guide, method)


def _metric_overridden(guide: Guide) -> bool:
    return _overrides(guide, "metric")


def score_dict_of(min_score: Any) -> dict[str, float] | None:
    """The score dict of a failed example scored `min_score`: None stays None, a dict is
    copied, a number `s` becomes `{"score": s}`."""
    if min_score is None:
        return None
    if isinstance(min_score, Mapping):
        return {str(k): float(v) for k, v in min_score.items()}
    return {"score": float(min_score)}


def _scores(
    guide: Guide, x: Any, output: Any, info: Any, *, scores_only: bool, score_dicts: bool
) -> tuple[Any, Any, dict[str, float] | None]:
    """`(score, feedback, score_dict)`, asking the guide as little as possible.

    Without `score_dicts` the score dict is None. With it: a score that is itself a dict
    is the score dict; a guide with its own `get_score_dict` is asked for it (when only
    scores are wanted, that is the only call, and the scalar score is None); otherwise
    the score dict is `{"score": score}`.
    """
    if score_dicts and scores_only and _overrides(guide, "get_score_dict"):
        return None, None, _checked_dict(guide, resolve(guide.get_score_dict(x, output, info)))
    score, feedback = judge(guide, x, output, info, scores_only=scores_only)
    if not score_dicts:
        return score, feedback, None
    if isinstance(score, Mapping):
        return score, feedback, {str(k): float(v) for k, v in score.items()}
    if _overrides(guide, "get_score_dict"):
        metrics = _checked_dict(guide, resolve(guide.get_score_dict(x, output, info)))
        return score, feedback, metrics
    return score, feedback, {"score": float(score)}


def _checked_dict(guide: Guide, metrics: Any) -> dict[str, float]:
    if not isinstance(metrics, Mapping):
        raise GuideError(
            f"guide {type(guide).__name__}.get_score_dict returned {metrics!r:.80}; it must "
            "return a dict of metric name -> number"
        )
    return {str(k): float(v) for k, v in _check_score(guide, metrics, "get_score_dict").items()}


def judge(
    guide: Guide, x: Any, output: Any, info: Any, *, scores_only: bool = False
) -> tuple[Any, Any]:
    """`(score, feedback)` of `guide` for `output`, checked (see the module docstring).

    With `scores_only`, a guide with its own (cheaper) `metric` is asked for the score
    only, and the feedback is None.
    """
    if scores_only and _metric_overridden(guide):
        return _check_score(guide, resolve(guide.metric(x, output, info)), "metric"), None
    verdict = resolve(guide(x, output, info))
    if not (isinstance(verdict, tuple) and len(verdict) == 2):
        raise GuideError(
            f"guide {type(guide).__name__} returned {verdict!r:.80}; a guide call must return "
            "(score, feedback) — wrap a plain metric with FunctionGuide"
        )
    score, feedback = verdict
    return _check_score(guide, score, "its call"), feedback


# -- one example ----------------------------------------------------------------------------


def rollout(
    agent: Module,
    x: Any,
    guide: Guide,
    info: Any,
    min_score: Any = None,
    *,
    scores_only: bool = False,
    score_dicts: bool = False,
) -> Rollout:
    """Run `agent(x)` (awaited if async) and score it with `guide`.

    An `ExecutionError` becomes an "execution" record with the error's feedback; other
    exceptions propagate (`run_example` turns them into records). With `score_dicts`, the
    record's `score_dict` holds the guide's metrics (see `Guide.get_score_dict`).
    """
    try:
        target = call_agent(agent, x)
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
            score_dict=score_dict_of(min_score) if score_dicts else None,
            target=node,
        )
    output = target.data if isinstance(target, Node) else target
    score, feedback, metrics = _scores(
        guide, x, output, info, scores_only=scores_only, score_dicts=score_dicts
    )
    return Rollout.from_target(
        target, x=x, info=info, score=score, feedback=feedback, score_dict=metrics
    )


def guarded(call: Callable[[], T], x: Any, info: Any, min_score: Any) -> T | Rollout:
    """`call()`, or a failed `Rollout` of the example if it raised (see the module doc)."""
    try:
        return call()
    except (BudgetExceeded, TooManyErrorsError, GuideError):
        raise
    except Exception as exc:
        logger.warning("example failed (%s: %s); scored %r", type(exc).__name__, exc, min_score)
        message = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return Rollout(
            x=x, info=info, score=min_score, error=message, error_kind="exception", exception=exc
        )


@takes_parameters_of(rollout)
def run_example(arguments: dict[str, Any]) -> Rollout:
    """One example under the failure policy: `rollout` (same arguments: forward, sync or
    async, then the guide), with an exception of the agent or the guide as a failed
    record (`guarded`)."""
    return guarded(
        lambda: rollout(**arguments), arguments["x"], arguments["info"], arguments["min_score"]
    )


def is_failure(output: Any) -> bool:
    """Whether a forward output is a failed example's record (agent or guide raised)."""
    return isinstance(output, Rollout) and output.error_kind == "exception"


class ErrorBudget:
    """Counts failed examples (thread-safe); raises `TooManyErrorsError` past `max_errors`.

    `max_errors=None` tolerates any number. The first failure becomes the error's cause
    when it is known (in-process); the first `KEEP` failed records travel with the error,
    and `drain()` hands out the records counted since its last call (for step records).
    """

    KEEP = 100

    def __init__(self, max_errors: int | None) -> None:
        self.max_errors = max_errors
        self.errors = 0
        self.first: BaseException | None = None
        self.failures: list[dict[str, Any]] = []
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, exc: BaseException | None = None, record: Rollout | None = None) -> None:
        """Count one failure (its exception and/or its record)."""
        with self._lock:
            self.errors += 1
            if self.first is None and exc is not None:
                self.first = exc
            if record is not None:
                if len(self.failures) < self.KEEP:
                    self.failures.append(record.to_dict())
                self._pending.append(record.to_dict())

    def drain(self) -> list[dict[str, Any]]:
        """The failed records counted since the last `drain()`, oldest first."""
        with self._lock:
            pending, self._pending = self._pending, []
        return pending

    def count(self, records: Iterable[Any]) -> None:
        """Count the failed records among `records`, then `check()`."""
        for record in records:
            if is_failure(record):
                self.add(record.exception, record)
        self.check()

    @property
    def tripped(self) -> bool:
        """Whether more than `max_errors` failures were counted."""
        return self.max_errors is not None and self.errors > self.max_errors

    def check(self) -> None:
        """Raise `TooManyErrorsError` if the budget is exhausted."""
        if not self.tripped:
            return
        if self.first is not None:
            first = f"{type(self.first).__name__}: {self.first}"
        else:
            first = self.failures[0]["error"] if self.failures else "unknown"
        raise TooManyErrorsError(
            f"{self.errors} examples failed, more than max_errors={self.max_errors}; the first "
            f"failure was {first}. Fix the cause (see the failures' records) or raise "
            "max_errors",
            errors=self.errors,
            max_errors=self.max_errors,  # type: ignore[arg-type]
            failures=self.failures,
        ) from self.first


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
    cache: EvalCache | None = None,
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
    With a `cache` (`opto.trainers.evalcache.EvalCache`), scoring rollouts (`scores_only`,
    `keep_targets=False`) already evaluated are read back instead of run.
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
    tasks = list(zip(agents, xs, infos, guides))

    def run(indices: Sequence[int], keep: Keep | None = None) -> list[Rollout]:
        if keep is not None and in_process:  # store each completed evaluation at once
            results = executor.map(lambda i: keep(i, task(tasks[i])), list(indices))
        else:
            results = executor.map(task, [tasks[i] for i in indices])
        if in_process:
            budget.check()
        else:
            budget.count(results)
        return results

    if cache is None or not scores_only or keep_targets:
        return run(range(len(tasks)))
    states: dict[int, dict[str, Any]] = {}
    for agent in agents:
        if id(agent) not in states:
            states[id(agent)] = get_paramset(agent)
    paramsets = [states[id(agent)] for agent in agents]
    return cache.run(guides, paramsets, xs, infos, run, score_dicts=score_dicts)


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
    cache: EvalCache | None = None,
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
    With a `cache` (`opto.trainers.evalcache.EvalCache`) evaluations already made are
    read back instead of run (sample k of an input is kept apart from sample j).
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
            cache=cache,
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


def batch_backward(
    optimizer: Any,
    targets: Sequence[Any],
    feedbacks: Sequence[Any],
    *,
    context: str | None = None,
) -> Any:
    """Propagate a batch's feedback to `optimizer`'s parameters in one backward.

    The outputs (`targets`, nodes) and their feedback are each joined with the traced
    `batchify` op (`ID [i]: ...` lines), the optimizer's feedback is reset, and the joined
    feedback is propagated from the joined output. `context` (e.g. earlier attempts) is
    appended to the feedback under a "Current Feedback" heading. Returns what
    `optimizer.backward` returns.
    """
    if not targets or len(targets) != len(feedbacks):
        raise ValueError(
            f"batch_backward needs one feedback per output, got {len(targets)} outputs and "
            f"{len(feedbacks)} feedbacks"
        )
    target = batchify(*targets)
    feedback = batchify(*feedbacks).data
    if context:
        feedback = "--- Current Feedback ---\n" + feedback + context
    optimizer.zero_feedback()
    return optimizer.backward(target, feedback)
