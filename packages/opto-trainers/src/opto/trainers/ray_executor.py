"""`RayExecutor`: run a trainer's independent tasks on Ray (a cluster or a local runtime).

Usage: install `opto-trainers[ray]` (in the opto workspace:
`uv sync --all-packages --extra ray`) and give a trainer the executor (or `executor="ray"`,
sized by `num_threads`)::

    from opto.trainers import BeamSearch
    from opto.trainers.ray_executor import RayExecutor

    with RayExecutor(max_workers=16, address="ray://head:10001") as executor:
        trainer = BeamSearch(agent, optimizer, executor=executor)
        result = trainer.train(guide, train_dataset, validate_dataset=validation)

Without `address` and with Ray not initialized yet, the first `map` starts (or joins) a
local Ray runtime; an application that called `ray.init(...)` itself keeps its runtime.
Actors are created on first use and reused by later maps; leaving the `with` block (or
`close()`) ends them, not the runtime. `fn` and its items must be picklable by Ray's
cloudpickle: define guides and agents in `__main__` or in modules the workers can import,
or register the defining module with `ray.cloudpickle.register_pickle_by_value`. Bundled
functions (`@trace.bundle`, trainable or not) are pickled by reference, so an agent that
defines its own must come from a module the workers can import by name (installed, or
shipped with `runtime_env={"working_dir": ...}` or `"py_modules"`; see
examples/ray_scaleout.py).
A task's exception is re-raised in the driver as the original exception when Ray keeps it. Without Ray, building the executor
raises `RayNotInstalledError` (an ImportError) naming the install command.

`map(fn, items)` ships `fn` once per call (Ray's object store) to a pool of `max_workers`
actors, each running one item at a time, and returns the results in input order. Anything `fn` holds (agent, guide, optimizer and their
LLM objects) is unpickled in the workers, so LLM clients are created there, never sent.

The search trainers (`BeamSearch`, `UCBSearch`, `PrioritySearch`) see `in_process = False`
and send self-contained tasks: one per exploration job (forward, backward and proposals
together, because they need the same trace graph) and one per validation rollout; both
return plain records (inputs, output data, score, feedback) and optimizer states.

The LLM usage of every task is recorded in the worker and added to the driver's active
usage ledgers when the task's result arrives, so run totals include remote calls.

Budgets (`track_usage(max_calls=..., max_tokens=..., max_usd=...)`) on Ray:

- what is enforced: each task takes along what was left of the driver's active budgets
  when it was dispatched (`opto.utils.usage.remaining_budget()`) and its worker enforces
  that remainder per request, retries included, exactly as in-process calls are (a request
  that would pass it raises `BudgetExceeded`, which fails the `map`); once the driver's
  budget is used up, every later task gets a zero budget and makes no LLM request. Remote
  requests count against the driver's budgets when their task returns.
- what is not: workers do not see each other's usage while they run, so the tasks in flight
  at one time may together pass a budget by up to (tasks in flight - 1) times the remainder
  they were given; scopes opened with `all_threads=True` in the driver and usage scopes
  opened inside the task itself only apply in the worker; and the usage of a task that
  raises, or dies with its worker (killed actor, lost node), is not reported. For a hard global limit use
  a thread or asyncio executor, or `max_workers=1`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from opto.utils.errors import MissingExtraError
from opto.utils.imports import require
from opto.utils.usage import Budget, record_remote, remaining_budget

from .executors import Executor

__all__ = ["RayExecutor", "RayNotInstalledError"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class RayNotInstalledError(MissingExtraError):
    """Ray is not importable; install the extra `opto-trainers[ray]`."""


def _import_ray() -> Any:
    return require(
        "ray", "ray", package="trainers", purpose="RayExecutor", error=RayNotInstalledError
    )


class _Worker:
    """Actor body: runs one item at a time with the function of the current `map`."""

    def __init__(self) -> None:
        self._key: str | None = None
        self._fn: Callable[[Any], Any] | None = None

    def run(
        self, key: str, boxed: list[Any], item: Any, budget: Budget | None = None
    ) -> tuple[Any, list[Any]]:
        """`fn(item)` within `budget` (what the driver had left) and the LLM usage records
        of the call (sent back to the driver)."""
        from opto.utils.usage import track_usage

        if key != self._key:
            import ray

            self._fn = ray.get(boxed[0])  # unpickled once per map (LLM clients made here)
            self._key = key
        assert self._fn is not None
        with track_usage(budget) as scope:
            result = self._fn(item)
        return result, scope.records


def _unwrap(exc: BaseException) -> BaseException:
    """The task's own exception inside a Ray task error, when Ray kept it."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


class RayExecutor(Executor):
    """Up to `max_workers` calls in flight on Ray actors.

    Args:
        max_workers: how many actors (calls in flight at once); default 4.
        address: the Ray cluster to join when Ray is not initialized yet (None: start or
            join a local runtime, as `ray.init()` does).
        init_kwargs: extra `ray.init` arguments used in that case.
        actor_options: Ray actor options (default `num_cpus=0`: tasks wait on LLM calls,
            so they should not reserve CPUs; set e.g. `{"num_cpus": 1}` for CPU-heavy
            agents).
        task_threads: threads a task may use for its own independent calls (the rollouts
            and proposals of one exploration job of the search trainers); default 1.

    Raises `RayNotInstalledError` when Ray is missing. `close()` ends the actors (not the
    Ray runtime).
    """

    in_process = False

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        address: str | None = None,
        init_kwargs: Mapping[str, Any] | None = None,
        actor_options: Mapping[str, Any] | None = None,
        task_threads: int = 1,
    ) -> None:
        self._ray = _import_ray()
        if max_workers is None:
            max_workers = 4
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"max_workers must be a positive int, not {max_workers!r}")
        self.max_workers = max_workers
        self.address = address
        self.init_kwargs = dict(init_kwargs or {})
        self.actor_options = {"num_cpus": 0, **(actor_options or {})}
        if isinstance(task_threads, bool) or not isinstance(task_threads, int) or task_threads < 1:
            raise ValueError(f"task_threads must be a positive int, not {task_threads!r}")
        self.task_threads = task_threads
        self._actors: list[Any] = []

    def _ensure_runtime(self) -> None:
        ray = self._ray
        if not ray.is_initialized():
            logger.info("starting Ray (address=%s)", self.address)
            ray.init(address=self.address, **self.init_kwargs)

    def _pool(self, size: int) -> list[Any]:
        while len(self._actors) < size:
            actor_class = self._ray.remote(**self.actor_options)(_Worker)
            self._actors.append(actor_class.remote())
        return self._actors[:size]

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """Run `fn` on every item on the actors; ordered results.

        The first exception raised by a call propagates (unwrapped from Ray's error)
        after every started call has finished; items not started yet are not run.
        """
        items = list(items)
        if not items:
            return []
        ray = self._ray
        self._ensure_runtime()
        fn_ref = ray.put(fn)
        key = fn_ref.hex()
        idle = list(self._pool(min(self.max_workers, len(items))))
        results: list[Any] = [None] * len(items)
        pending: dict[Any, tuple[int, Any]] = {}
        failure: BaseException | None = None
        next_index = 0
        try:
            while pending or (failure is None and next_index < len(items)):
                while idle and failure is None and next_index < len(items):
                    actor = idle.pop()
                    budget = remaining_budget()
                    ref = actor.run.remote(key, [fn_ref], items[next_index], budget)
                    pending[ref] = (next_index, actor)
                    next_index += 1
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    index, actor = pending.pop(ref)
                    idle.append(actor)
                    try:
                        results[index], records = ray.get(ref)
                    except Exception as exc:
                        if failure is None:
                            failure = _unwrap(exc)
                    else:
                        for entry in records:  # the driver's ledgers see remote LLM calls
                            record_remote(entry)
        except BaseException:  # Ctrl-C: stop the calls in flight
            for ref in pending:
                try:
                    ray.cancel(ref)
                except Exception as exc:  # already finished, or not cancellable
                    logger.debug("could not cancel a Ray task: %s", exc)
            raise
        if failure is not None:
            raise failure
        return results

    def close(self) -> None:
        """End the actors (the Ray runtime keeps running)."""
        actors, self._actors = self._actors, []
        for actor in actors:
            try:
                self._ray.kill(actor)
            except Exception as exc:  # an actor that already died
                logger.debug("could not kill a Ray actor: %s", exc)

    def __repr__(self) -> str:
        return f"RayExecutor(max_workers={self.max_workers})"
