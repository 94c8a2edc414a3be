"""Executors: where a trainer's independent tasks (rollouts, proposals, validations) run.

Every algorithm expresses its work as a list of independent calls and hands it to an
executor's `map`, which returns the results in input order. `SerialExecutor` runs them one
after another, `ThreadExecutor` (the default) keeps up to `max_workers` in flight at once
(LLM calls release the GIL), `AsyncioExecutor` runs coroutine functions on an event loop
(async agents called from its plain tasks are awaited on that loop, see `executor_loop`).
A Ray executor (`opto.trainers.ray_executor`) implements the same interface.

Each task runs in a copy of the caller's `contextvars` context (threads come from
`opto.utils.concurrency`), so usage scopes and budgets (`opto.utils.usage.track_usage`)
and tracing state reach the workers. A `map` issued from inside one of the executor's own
tasks runs inline, so nested work never deadlocks a bounded pool.
"""

from __future__ import annotations

import abc
import concurrent.futures
import contextvars
import inspect
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from opto.utils.concurrency import ContextThreadPoolExecutor, start_thread

__all__ = [
    "AsyncioExecutor",
    "Executor",
    "SerialExecutor",
    "ThreadExecutor",
    "executor_loop",
    "make_executor",
]

T = TypeVar("T")
R = TypeVar("R")

_LOOP: contextvars.ContextVar[Any] = contextvars.ContextVar("opto_trainers_loop", default=None)


def executor_loop() -> Any:
    """The running event loop of the `AsyncioExecutor` whose task is calling (else None).

    Plain tasks of an `AsyncioExecutor` run on helper threads; awaitables they produce
    (async agents) are handed to this loop, so they run concurrently on it.
    """
    loop = _LOOP.get()
    return loop if loop is not None and loop.is_running() else None


class Executor(abc.ABC):
    """Runs independent calls; `map(fn, items)` returns `[fn(item) for item in items]`.

    `max_workers` is how many calls may be in flight at once (1 for serial). Executors are
    context managers; `close()` releases their workers. The first exception raised by a
    call propagates from `map` after every started call has finished.
    """

    max_workers: int = 1

    @abc.abstractmethod
    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """Apply `fn` to every item, concurrently where the executor allows; ordered results."""

    def close(self) -> None:
        """Release the executor's workers (a no-op for executors that hold none)."""
        return

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SerialExecutor(Executor):
    """Runs every call in the caller's thread, in order (deterministic and debuggable)."""

    max_workers = 1

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        return [fn(item) for item in items]

    def __repr__(self) -> str:
        return "SerialExecutor()"


class ThreadExecutor(Executor):
    """Up to `max_workers` calls in flight on a thread pool (created on first use)."""

    def __init__(self, max_workers: int) -> None:
        if not isinstance(max_workers, int) or isinstance(max_workers, bool) or max_workers < 1:
            raise ValueError(f"max_workers must be a positive int, not {max_workers!r}")
        self.max_workers = max_workers
        self._pool: ContextThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._inside = threading.local()

    def _get_pool(self) -> ContextThreadPoolExecutor:
        with self._lock:
            if self._pool is None:  # submit runs each task in contextvars.copy_context()
                self._pool = ContextThreadPoolExecutor(
                    self.max_workers, thread_name_prefix="opto-trainer"
                )
            return self._pool

    def _run(self, fn: Callable[[T], R], item: T) -> R:
        self._inside.active = True
        try:
            return fn(item)
        finally:
            self._inside.active = False

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        items = list(items)
        if len(items) <= 1 or getattr(self._inside, "active", False):
            return [fn(item) for item in items]
        pool = self._get_pool()
        futures = [pool.submit(self._run, fn, item) for item in items]
        try:
            concurrent.futures.wait(futures)
        except BaseException:  # Ctrl-C: drop what has not started, wait for what has
            for future in futures:
                future.cancel()
            concurrent.futures.wait(futures)
            raise
        return [future.result() for future in futures]

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def __repr__(self) -> str:
        return f"ThreadExecutor(max_workers={self.max_workers})"


class AsyncioExecutor(Executor):
    """Runs calls as asyncio tasks, at most `max_workers` at once.

    Coroutine functions are awaited on the loop; plain functions run on a pool of
    `max_workers` threads of their own (the loop's default pool stays free for the
    `asyncio.to_thread` calls of async agents), and the awaitables they resolve (async
    agents) are awaited on the loop. `map` may be called from synchronous code (it runs its
    own event loop in a helper thread, so it also works under a running loop, e.g. in
    Jupyter); from async code use `amap`.
    """

    def __init__(self, max_workers: int) -> None:
        if not isinstance(max_workers, int) or isinstance(max_workers, bool) or max_workers < 1:
            raise ValueError(f"max_workers must be a positive int, not {max_workers!r}")
        self.max_workers = max_workers

    async def amap(self, fn: Callable[[T], Any], items: Iterable[T]) -> list[Any]:
        """Await `fn` over `items` with at most `max_workers` calls in flight; ordered."""
        import asyncio

        semaphore = asyncio.Semaphore(self.max_workers)
        loop = asyncio.get_running_loop()
        is_async = inspect.iscoroutinefunction(fn)
        pool = None
        if not is_async:
            pool = ContextThreadPoolExecutor(
                self.max_workers, thread_name_prefix="opto-asyncio-task"
            )

        def on_loop(item: T) -> Any:
            _LOOP.set(loop)  # in the submitted call's own copy of the context
            return fn(item)

        async def one(item: T) -> Any:
            async with semaphore:
                if is_async:
                    return await fn(item)
                return await asyncio.wrap_future(pool.submit(on_loop, item))

        tasks = [asyncio.ensure_future(one(item)) for item in items]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            if pool is not None:  # started calls may still await coroutines on this loop
                await asyncio.to_thread(pool.shutdown)

    def map(self, fn: Callable[[T], Any], items: Iterable[T]) -> list[Any]:
        import asyncio

        items = list(items)
        if not items:
            return []
        result: list[Any] = []
        failure: list[BaseException] = []

        def runner() -> None:
            try:
                result.extend(asyncio.run(self.amap(fn, items)))
            except BaseException as exc:  # re-raised in the caller's thread
                failure.append(exc)

        start_thread(runner, name="opto-asyncio-executor", daemon=False).join()
        if failure:
            raise failure[0]
        return result

    def __repr__(self) -> str:
        return f"AsyncioExecutor(max_workers={self.max_workers})"


def make_executor(
    executor: Executor | str | int | None = None, num_threads: int | None = None
) -> Executor:
    """Resolve an executor argument: an `Executor`, a name, or a thread count.

    `None` uses `num_threads`: None or 1 gives a `SerialExecutor`, more a `ThreadExecutor`.
    Names: "serial", "threads", "asyncio" (sized by `num_threads`, default 8) and "ray"
    (needs `opto-trainers[ray]`).
    """
    if isinstance(executor, Executor):
        return executor
    if isinstance(executor, int) and not isinstance(executor, bool):
        num_threads, executor = executor, None
    if num_threads is not None and (
        not isinstance(num_threads, int) or isinstance(num_threads, bool) or num_threads < 1
    ):
        raise ValueError(f"num_threads must be None or a positive int, not {num_threads!r}")
    if executor is None:
        return SerialExecutor() if num_threads in (None, 1) else ThreadExecutor(num_threads)
    workers = num_threads or 8
    if executor == "serial":
        return SerialExecutor()
    if executor == "threads":
        return ThreadExecutor(workers)
    if executor == "asyncio":
        return AsyncioExecutor(workers)
    if executor == "ray":
        from opto.trainers.ray_executor import RayExecutor

        return RayExecutor(max_workers=workers)
    raise ValueError(
        f"unknown executor {executor!r}; pass an Executor instance, a thread count, or one of "
        "'serial', 'threads', 'asyncio', 'ray'"
    )
