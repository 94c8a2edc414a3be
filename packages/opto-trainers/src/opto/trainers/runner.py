"""Running one example: the agent's forward (sync or async) and the guide's verdict.

Every trainer and `evaluate` run their examples through `run_example` (or guard their own
forward hook with `guarded`), so a failing example is handled the same way everywhere:

* the agent raises `ExecutionError` (a traced operator failed): the record's target is
  the `ExceptionNode`, its score `min_score` and its feedback the node's full feedback, so
  an optimizer can fix the code; this is not counted as an error;
* any other exception of the agent or the guide: the record keeps the example, scores
  `min_score` and carries the error message (`error_kind="exception"`); an `ErrorBudget`
  counts such records and raises `TooManyErrorsError` once more than `max_errors` failed;
* a guide that breaks its contract (returns something other than `(score, feedback)`, or a
  score that is None or not a number) raises `GuideError` naming the guide at once: that
  is a bug in the guide, not a failing example;
* `BudgetExceeded`, `TooManyErrorsError` and `KeyboardInterrupt` always propagate.

An agent whose `forward` is `async def` (or that calls async bundles) returns an awaitable;
`resolve` runs it to completion in the calling worker, so async agents work on every
executor, and the awaited result is the traced output node a backward needs.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import numbers
import threading
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

import attrs
from opto.trace.errors import ExecutionError
from opto.trace.modules import Module
from opto.trace.nodes import Node
from opto.utils.concurrency import start_thread
from opto.utils.errors import OptoError
from opto.utils.usage import BudgetExceeded

from .executors import executor_loop
from .guide import Guide, GuideError

__all__ = [
    "ErrorBudget",
    "Rollout",
    "TooManyErrorsError",
    "call_agent",
    "guarded",
    "is_failure",
    "judge",
    "resolve",
    "rollout",
    "run_example",
    "score_dict_of",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


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
    return Rollout(
        x=x,
        info=info,
        output=output,
        score=score,
        feedback=feedback,
        score_dict=metrics,
        target=target if isinstance(target, Node) else None,
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


def run_example(
    agent: Module,
    x: Any,
    guide: Guide,
    info: Any,
    min_score: Any = None,
    *,
    scores_only: bool = False,
    score_dicts: bool = False,
) -> Rollout:
    """One example under the failure policy: forward (sync or async), guide, record."""
    return guarded(
        lambda: rollout(
            agent, x, guide, info, min_score, scores_only=scores_only, score_dicts=score_dicts
        ),
        x,
        info,
        min_score,
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
