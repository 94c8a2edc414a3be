"""Retry policy: transient errors only, exponential backoff with jitter, `Retry-After`.

Only `LLMError`s whose `transient` flag is set (timeouts, connection errors, 429, 5xx,
malformed replies) are retried; anything else propagates at once. After the last try the
typed error is raised with the provider's exception as `__cause__`. `RetryPolicy.deadline`
bounds the whole call, retries and waits included.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import attrs
from opto.utils.llm.errors import LLMError, classify_exception

__all__ = ["RetryPolicy", "acall_with_retry", "call_with_retry"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


async def _asyncio_sleep(seconds: float) -> None:
    """`asyncio.sleep`, imported on first use (asyncio is slow to import)."""
    import asyncio

    await asyncio.sleep(seconds)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How often and how long to retry a transient failure.

    Delay before retry k (0-based) is `min(max_delay, base_delay * 2**k)` scaled by a
    random factor in [1 - jitter, 1]; a provider's `Retry-After` raises it (capped at
    `max_delay`). `sleep`/`asleep` are injectable so tests can observe delays.

    `deadline` is the overall limit in seconds for one call, all attempts and waits
    included (None: no limit): no retry starts, and no wait is begun, that would end past
    it, and backends that enforce `timeout=` as a hard deadline also cut the last attempt
    short at it. The default (300 s) lets a few attempts at the default 120 s timeout run.
    """

    max_retries: int = attrs.field(default=4, validator=attrs.validators.ge(0))
    base_delay: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    max_delay: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    jitter: float = attrs.field(
        default=0.5, validator=[attrs.validators.ge(0), attrs.validators.le(1)]
    )
    sleep: Callable[[float], None] = attrs.field(default=time.sleep, eq=False, repr=False)
    asleep: Callable[[float], Awaitable[None]] = attrs.field(
        default=_asyncio_sleep, eq=False, repr=False
    )
    deadline: float | None = attrs.field(
        default=300.0, validator=attrs.validators.optional(attrs.validators.gt(0))
    )

    def remaining(self, started: float) -> float | None:
        """Seconds left of `deadline` for a call started at `time.monotonic()` `started`."""
        if self.deadline is None:
            return None
        return self.deadline - (time.monotonic() - started)

    def delay(self, attempt: int, error: LLMError) -> float:
        """Seconds to wait after failed attempt number `attempt` (0-based)."""
        backoff = min(self.max_delay, self.base_delay * (2**attempt))
        backoff *= 1.0 - self.jitter * random.random()
        if error.retry_after is not None:
            backoff = max(backoff, min(error.retry_after, self.max_delay))
        return backoff


def _failure(exc: Exception, model: str | None, attempt: int) -> LLMError | None:
    """The typed error for `exc` (None: not a provider error, re-raise it unchanged)."""
    if isinstance(exc, AssertionError):
        return None
    error = classify_exception(exc, model=model)
    if error is not None:
        error.attempts = attempt + 1
    return error


def _retry_wait(
    exc: Exception, policy: RetryPolicy, model: str | None, attempt: int, started: float
) -> float | None:
    """Seconds to wait before retrying after `exc` failed attempt `attempt` (0-based).

    None: re-raise `exc` unchanged. Raises the typed error (from `exc`) when `exc` must
    not be retried, or when the wait would end past the policy's deadline. Shared by
    `call_with_retry` and `acall_with_retry`.
    """
    error = _failure(exc, model, attempt)
    if error is None:
        return None
    wait = policy.delay(attempt, error) if error.transient else 0.0
    left = policy.remaining(started)
    out_of_time = left is not None and wait >= left
    if not error.transient or attempt >= policy.max_retries or out_of_time:
        if out_of_time and error.transient and attempt < policy.max_retries:
            logger.warning(
                "LLM call to %s failed (%s); not retried: the call's %gs deadline would "
                "pass", model, type(error).__name__, policy.deadline,
            )  # fmt: skip
        if error is exc:
            return None
        raise error from exc
    logger.warning(
        "LLM call to %s failed (%s); retry %d/%d in %.2fs",
        model, type(error).__name__, attempt + 1, policy.max_retries, wait,
    )  # fmt: skip
    return wait


def call_with_retry(fn: Callable[[], T], policy: RetryPolicy, *, model: str | None = None) -> T:
    """Call `fn()` and retry transient failures per `policy`; raise a typed `LLMError`."""
    attempt = 0
    started = time.monotonic()
    while True:
        try:
            return fn()
        except Exception as exc:
            wait = _retry_wait(exc, policy, model, attempt, started)
            if wait is None:
                raise
            policy.sleep(wait)
            attempt += 1


async def acall_with_retry(
    fn: Callable[[], Awaitable[T]], policy: RetryPolicy, *, model: str | None = None
) -> T:
    """Async twin of `call_with_retry`."""
    attempt = 0
    started = time.monotonic()
    while True:
        try:
            return await fn()
        except Exception as exc:
            wait = _retry_wait(exc, policy, model, attempt, started)
            if wait is None:
                raise
            await policy.asleep(wait)
            attempt += 1
