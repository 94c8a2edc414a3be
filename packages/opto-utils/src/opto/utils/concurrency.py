"""Threads that keep the caller's context: the only way opto code starts threads.

Python threads start with an empty `contextvars` context, so usage scopes and budgets
(`opto.utils.usage.track_usage`), tracing state and other context variables would not
reach work submitted to a plain thread pool: the calls made there would escape every budget.
`ContextThreadPoolExecutor` runs each submitted call in a copy of the submitter's context,
`start_thread` does the same for a single thread, and `call_with_deadline` bounds how long
the caller waits for a call running in such a thread.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from opto.utils.errors import OptoError

__all__ = ["ContextThreadPoolExecutor", "DeadlineExceeded", "call_with_deadline", "start_thread"]

T = TypeVar("T")


class DeadlineExceeded(OptoError, TimeoutError):
    """`call_with_deadline` gave up waiting: the call did not finish within its deadline."""


class ContextThreadPoolExecutor(concurrent.futures.ThreadPoolExecutor):
    """A `ThreadPoolExecutor` whose calls run in a copy of the submitting thread's context.

    `submit` (and `map`, which uses it) captures `contextvars.copy_context()` at submission,
    so each call sees the scopes, budgets and tracing state active where it was submitted;
    changes a call makes to context variables stay in its own copy.
    """

    def submit(  # type: ignore[override]
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        """Schedule `fn(*args, **kwargs)` to run in a copy of the caller's context."""
        context = contextvars.copy_context()
        return super().submit(context.run, fn, *args, **kwargs)


def start_thread(
    target: Callable[..., Any],
    *args: Any,
    name: str | None = None,
    daemon: bool = True,
    **kwargs: Any,
) -> threading.Thread:
    """Start a thread running `target(*args, **kwargs)` in a copy of the caller's context."""
    context = contextvars.copy_context()
    thread = threading.Thread(
        target=context.run, args=(target, *args), kwargs=kwargs, name=name, daemon=daemon
    )
    thread.start()
    return thread


def call_with_deadline(fn: Callable[[], T], timeout: float | None, *, name: str = "opto") -> T:
    """`fn()` in a helper thread (caller's context); `DeadlineExceeded` after `timeout` s.

    For blocking calls whose own timeouts bound each read but not the whole call (an HTTP
    reply trickling in byte by byte). On timeout the call is abandoned, not interrupted:
    its daemon thread finishes on its own and its result is dropped. `timeout=None` calls
    `fn()` directly in the caller's thread.
    """
    if timeout is None:
        return fn()
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except BaseException as exc:  # handed to the caller
            future.set_exception(exc)

    start_thread(run, name=f"{name}-deadline")
    try:
        return future.result(timeout=max(0.0, timeout))
    except concurrent.futures.TimeoutError:
        msg = f"the call did not finish within its {timeout:.3g}s deadline"
        raise DeadlineExceeded(msg) from None
