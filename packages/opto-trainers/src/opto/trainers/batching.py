"""Run a function over many argument sets at once: `async_run` and the `batch_run` decorator.

Both keep the order of their inputs in their results and run every call in a copy of the
caller's `contextvars` context, so tracing state, usage scopes and budgets hold in the
worker threads. `batch_run` gives every call its own copy of each `Module` and `Guide`
argument (shared parameters, isolated state), so batched forward passes never see each
other's mutable attributes while their graphs still reach the shared parameters.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from opto.trace.modules import Module
from opto.utils.errors import OptoError

from .executors import SerialExecutor, ThreadExecutor
from .guide import Guide

__all__ = ["BatchLengthError", "async_run", "batch_run"]

R = TypeVar("R")


class BatchLengthError(OptoError, ValueError):
    """The batched arguments of a `batch_run` call have different lengths."""


def async_run(
    runs: Sequence[Callable[..., Any]],
    args_list: Sequence[Sequence[Any]] | None = None,
    kwargs_list: Sequence[Mapping[str, Any]] | None = None,
    max_workers: int | None = None,
    description: str | None = None,
    allow_sequential_run: bool = True,
) -> list[Any]:
    """Call `runs[i](*args_list[i], **kwargs_list[i])` for every i, in parallel threads.

    Results come back in the order of `runs`. `max_workers` bounds the threads in flight
    (None: as `ThreadPoolExecutor`, `min(32, cpu_count + 4)`); with `max_workers=1` (and `allow_sequential_run`) the calls run
    in order on the calling thread. Works the same inside a running event loop (e.g. a
    notebook), since it never starts one. The first exception raised by a call propagates
    once every started call has finished. `description` is accepted for compatibility;
    progress belongs to the trainers' loggers.
    """
    runs = list(runs)
    count = len(runs)
    args_list = [()] * count if args_list is None else list(args_list)
    kwargs_list = [{}] * count if kwargs_list is None else list(kwargs_list)
    if len(args_list) != count or len(kwargs_list) != count:
        raise ValueError(
            f"async_run got {count} runs, {len(args_list)} args and {len(kwargs_list)} kwargs; "
            "pass one entry per run (or None for no arguments)"
        )
    if max_workers is not None and (
        not isinstance(max_workers, int) or isinstance(max_workers, bool) or max_workers < 1
    ):
        raise ValueError(f"max_workers must be None or a positive int, not {max_workers!r}")
    calls = list(zip(runs, args_list, kwargs_list))
    if max_workers == 1 and allow_sequential_run:
        executor: SerialExecutor | ThreadExecutor = SerialExecutor()
    else:
        default = min(32, (os.cpu_count() or 1) + 4)
        executor = ThreadExecutor(max(1, min(max_workers or default, count)))
    with executor:
        return executor.map(_call, calls)


def _call(call: tuple[Callable[..., Any], Sequence[Any], Mapping[str, Any]]) -> Any:
    fn, args, kwargs = call
    return fn(*args, **kwargs)


def _is_batched(value: Any) -> bool:
    """A batched argument is a sized, indexable collection other than a text or a mapping."""
    if isinstance(value, (str, bytes, bytearray, Mapping, Module, Guide)):
        return False
    return hasattr(value, "__len__") and hasattr(value, "__getitem__")


def _private(value: Any) -> Any:
    """A per-call copy of modules and guides; other values are passed as they are."""
    if isinstance(value, (Module, Guide)):
        return value.copy()
    return value


def batch_run(
    max_workers: int | None = None, description: str | None = None
) -> Callable[[Callable[..., R]], Callable[..., list[R]]]:
    """Decorator: `f(a, b, ...)` becomes a batched call returning a list of results.

    Arguments that are sequences (lists, tuples, arrays: anything sized and indexable
    except str, bytes and mappings) are batched and must all have the same length; every
    other argument is broadcast to each call. A `Module` or `Guide` argument (batched or
    broadcast) is replaced by its `.copy()` in every call. The calls run through
    `async_run` with `max_workers` threads.

    Raises:
        BatchLengthError: batched arguments of different lengths (a `ValueError`).
    """

    def decorate(fn: Callable[..., R]) -> Callable[..., list[R]]:
        @functools.wraps(fn)
        def batched(*args: Any, **kwargs: Any) -> list[R]:
            lengths = {len(v) for v in _values(args, kwargs) if _is_batched(v)}
            if len(lengths) > 1:
                raise BatchLengthError(
                    "All arguments and keyword arguments must have the same length. Got "
                    f"lengths {sorted(lengths)}; broadcast a value by passing it unwrapped, "
                    "not in a list."
                )
            size = lengths.pop() if lengths else 1

            def pick(value: Any, i: int) -> Any:
                return _private(value[i] if _is_batched(value) else value)

            args_list = [[pick(a, i) for a in args] for i in range(size)]
            kwargs_list = [{k: pick(v, i) for k, v in kwargs.items()} for i in range(size)]
            return async_run([fn] * size, args_list, kwargs_list, max_workers, description)

        return batched

    return decorate


def _values(args: Iterable[Any], kwargs: Mapping[str, Any]) -> Iterable[Any]:
    yield from args
    yield from kwargs.values()
