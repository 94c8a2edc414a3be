"""Usage ledger: every LLM call recorded, totals, scoped tracking and budgets.

The process-wide `ledger()` sees every call. `with track_usage() as u:` opens a scope that
also sees the calls made in its context (the current thread or asyncio task and the tasks it
starts; pass `all_threads=True` to see calls from every thread). A scope may carry a budget:
a request that would pass it raises `BudgetExceeded` *before* it leaves the process. Cache
hits are recorded but cost nothing and count against no budget.

Budgets are enforced per request, retries included: each request first reserves one call,
its estimated tokens and its estimated cost in every active scope (atomically, under each
ledger's lock), then settles to the actual usage when it ends, or releases the estimate
when it fails. So `max_calls=N` lets at most N requests leave, however many threads make
them, and concurrent requests pass `max_usd` by at most the estimates reserved by the
requests in flight when the budget ran out.

Evaluations answered from a run storage's evaluation cache (`record_evaluations`) are
counted too, as `eval_cache_hits` (free: no call was made) and `eval_cache_misses`.

Plain threads do not inherit context variables: start threads and pools with
`opto.utils.concurrency` (or use `all_threads=True`) so their calls reach the scope.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
from opto.utils.errors import OptoError

__all__ = [
    "Budget",
    "BudgetExceeded",
    "Reservation",
    "UsageLedger",
    "UsageRecord",
    "ledger",
    "record",
    "record_evaluations",
    "record_remote",
    "remaining_budget",
    "reserve",
    "track_usage",
]


class BudgetExceeded(OptoError):
    """A call was refused because it would pass a usage budget.

    Not an `LLMError`: retry logic and "ignore LLM failures" handlers must not swallow it.
    Attributes: `limit` ("calls", "tokens" or "usd"), `budget`, `used` (including what
    requests in flight have reserved).
    """

    def __init__(self, message: str, *, limit: str, budget: float, used: float) -> None:
        super().__init__(message)
        self.limit = limit
        self.budget = budget
        self.used = used

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle with the keyword attributes (the error crosses process boundaries)."""
        return (_budget_exceeded, (str(self), self.limit, self.budget, self.used))


def _budget_exceeded(message: str, limit: str, budget: float, used: float) -> BudgetExceeded:
    return BudgetExceeded(message, limit=limit, budget=budget, used=used)


@attrs.frozen(kw_only=True)
class UsageRecord:
    """One LLM call as the ledger saw it. `error` is the error type name of a failed call."""

    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    latency_s: float = 0.0
    cached: bool = False
    error: str | None = None
    attempts: int = 1
    timestamp: float = attrs.field(factory=time.time)

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@attrs.frozen(kw_only=True)
class Budget:
    """Limits for a usage scope; None means unlimited.

    `max_calls` counts requests sent to providers (every retry is one; cache hits are
    not). `max_tokens` counts prompt + completion tokens; `max_usd` counts calls of known
    cost (calls to models without a price add nothing, and are counted in
    `unknown_cost_calls`). A request is admitted while the budget's spent plus reserved
    amount is below `max_usd`, and reserves its estimated cost until it settles.
    """

    max_calls: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0))
    )
    max_tokens: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0))
    )
    max_usd: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0))
    )

    @property
    def unlimited(self) -> bool:
        """True when no limit is set."""
        return self.max_calls is None and self.max_tokens is None and self.max_usd is None


# The ledger's totals and their starting values (`summary()` reports them in this order).
_TOTALS: dict[str, int | float] = {
    "calls": 0,
    "requests": 0,
    "errors": 0,
    "cached_calls": 0,
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "cost_usd": 0.0,
    "unknown_cost_calls": 0,
    "eval_cache_hits": 0,
    "eval_cache_misses": 0,
}


class UsageLedger:
    """Thread- and task-safe totals of LLM calls, with an optional budget.

    `calls` counts recorded calls (cached and failed ones included); `requests` counts the
    requests that left the process (each retry is one). `records` keeps the last
    `max_records` calls (all of them when None); totals are exact regardless.
    `eval_cache_hits` / `eval_cache_misses` count evaluations looked up in an evaluation
    cache: a hit made no call and costs nothing.
    """

    calls: int
    requests: int
    errors: int
    cached_calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    unknown_cost_calls: int
    eval_cache_hits: int
    eval_cache_misses: int

    def __init__(self, budget: Budget | None = None, *, max_records: int | None = None) -> None:
        self.budget = budget or Budget()
        self._lock = threading.Lock()
        self._records: deque[UsageRecord] = deque(maxlen=max_records)
        self._pending_requests = 0
        self._pending_tokens = 0
        self._pending_usd = 0.0
        for name, zero in _TOTALS.items():
            setattr(self, name, zero)
        self._by_model: dict[str, dict[str, float]] = {}

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens of all recorded calls."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def records(self) -> list[UsageRecord]:
        """A copy of the kept records, oldest first."""
        with self._lock:
            return list(self._records)

    def by_model(self) -> dict[str, dict[str, float]]:
        """Per-model totals: calls, prompt_tokens, completion_tokens, cost_usd."""
        with self._lock:
            return {model: dict(totals) for model, totals in self._by_model.items()}

    def summary(self) -> dict[str, Any]:
        """Totals as a JSON-able dict (for logs and checkpoints)."""
        with self._lock:
            totals = {name: getattr(self, name) for name in _TOTALS}
        totals["total_tokens"] = totals["prompt_tokens"] + totals["completion_tokens"]
        return totals

    def _check(self, estimated_tokens: int) -> None:
        """Raise `BudgetExceeded` if one more request would pass the budget (lock held)."""
        budget = self.budget
        if budget.max_calls is not None:
            used = self.requests + self._pending_requests
            if used + 1 > budget.max_calls:
                msg = (
                    f"LLM call budget exhausted: {used} of max_calls={budget.max_calls} "
                    "requests used (retries count); raise max_calls or make fewer calls"
                )
                raise BudgetExceeded(msg, limit="calls", budget=budget.max_calls, used=used)
        if budget.max_tokens is not None:
            used = self.prompt_tokens + self.completion_tokens + self._pending_tokens
            if used + estimated_tokens > budget.max_tokens:
                msg = (
                    f"LLM token budget would be passed: {used} used + ~{estimated_tokens} for "
                    f"this call > max_tokens={budget.max_tokens}; raise max_tokens"
                )
                raise BudgetExceeded(msg, limit="tokens", budget=budget.max_tokens, used=used)
        if budget.max_usd is not None:
            used_usd = self.cost_usd + self._pending_usd
            if used_usd >= budget.max_usd:
                msg = (
                    f"LLM cost budget exhausted: ${self.cost_usd:.6f} spent + "
                    f"${self._pending_usd:.6f} reserved by requests in flight of "
                    f"max_usd={budget.max_usd}; raise max_usd"
                )
                raise BudgetExceeded(msg, limit="usd", budget=budget.max_usd, used=used_usd)

    def remaining(self) -> Budget:
        """What is left of this ledger's budget (spent and reserved usage deducted)."""
        budget = self.budget
        with self._lock:
            calls = tokens = usd = None
            if budget.max_calls is not None:
                calls = max(0, budget.max_calls - self.requests - self._pending_requests)
            if budget.max_tokens is not None:
                used = self.prompt_tokens + self.completion_tokens + self._pending_tokens
                tokens = max(0, budget.max_tokens - used)
            if budget.max_usd is not None:
                usd = max(0.0, budget.max_usd - self.cost_usd - self._pending_usd)
        return Budget(max_calls=calls, max_tokens=tokens, max_usd=usd)

    def _add(self, record: UsageRecord) -> None:
        """Add `record` to the totals (lock held)."""
        self._records.append(record)
        self.calls += 1
        if record.error is not None:  # failed: its usage, if any, is unknown
            self.errors += 1
            return
        if record.cached:
            self.cached_calls += 1
            return
        self.prompt_tokens += record.prompt_tokens
        self.completion_tokens += record.completion_tokens
        if record.cost_usd is None:
            self.unknown_cost_calls += 1
        else:
            self.cost_usd += record.cost_usd
        totals = self._by_model.setdefault(
            record.model,
            {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0},
        )
        totals["calls"] += 1
        totals["prompt_tokens"] += record.prompt_tokens
        totals["completion_tokens"] += record.completion_tokens
        totals["cost_usd"] += record.cost_usd or 0.0

    def record(self, record: UsageRecord) -> None:
        """Add a call to the totals."""
        with self._lock:
            self._add(record)


_GLOBAL = UsageLedger(max_records=10_000)
_SCOPES: contextvars.ContextVar[tuple[UsageLedger, ...]] = contextvars.ContextVar(
    "opto_usage_scopes", default=()
)
_THREAD_SCOPES: list[UsageLedger] = []
_THREAD_SCOPES_LOCK = threading.Lock()


def ledger() -> UsageLedger:
    """The process-wide ledger that records every call (keeps the last 10,000 records)."""
    return _GLOBAL


def _active() -> tuple[UsageLedger, ...]:
    scopes = _SCOPES.get()
    if _THREAD_SCOPES:
        with _THREAD_SCOPES_LOCK:
            extra = tuple(s for s in _THREAD_SCOPES if s not in scopes)
        scopes = scopes + extra
    return (_GLOBAL, *scopes)


class Reservation:
    """One request admitted by every active budget, holding its estimated usage.

    Exactly one of `commit` (the request answered: settle to its actual usage and record
    the call), `fail` (the request left but brought back no usable answer: count it,
    release the estimate) or `release` (the request never left: forget it) ends it; later
    calls are no-ops. Until then the estimate counts against the budgets, so concurrent
    callers cannot jointly pass a limit by more than what requests in flight reserved.
    """

    __slots__ = ("_done", "_ledgers", "_tokens", "_usd")

    def __init__(self, ledgers: tuple[UsageLedger, ...], tokens: int, usd: float) -> None:
        self._ledgers = ledgers
        self._tokens = tokens
        self._usd = usd
        self._done = False

    def commit(self, record: UsageRecord) -> None:
        """Settle the answered request to `record`'s usage and record it in every ledger."""
        self._finish(sent=True, record=record)

    def fail(self) -> None:
        """The request was sent but failed: it counts as a request, its estimate is freed."""
        self._finish(sent=True, record=None)

    def release(self) -> None:
        """The request was never sent: forget the reservation."""
        self._finish(sent=False, record=None)

    def _finish(self, *, sent: bool, record: UsageRecord | None) -> None:
        if self._done:
            return
        self._done = True
        for led in self._ledgers:
            with led._lock:
                led._pending_requests -= 1
                led._pending_tokens -= self._tokens
                led._pending_usd -= self._usd
                if sent:
                    led.requests += 1
                if record is not None:
                    led._add(record)


def reserve(estimated_tokens: int = 0, estimated_usd: float = 0.0) -> Reservation:
    """Admit one request against every active budget, or raise `BudgetExceeded`.

    Call it right before the request leaves (once per retry). `estimated_tokens` is the
    caller's guess of the tokens the request will use (prompt size plus requested
    `max_tokens`); `estimated_usd` its cost at the model's price (0 when unknown). Both
    count against the budgets until the reservation ends.
    """
    ledgers = _active()
    taken: list[UsageLedger] = []
    try:
        for led in ledgers:
            with led._lock:
                if not led.budget.unlimited:
                    led._check(estimated_tokens)
                led._pending_requests += 1
                led._pending_tokens += estimated_tokens
                led._pending_usd += estimated_usd
            taken.append(led)
    except BudgetExceeded:
        Reservation(tuple(taken), estimated_tokens, estimated_usd).release()
        raise
    return Reservation(ledgers, estimated_tokens, estimated_usd)


def remaining_budget() -> Budget:
    """The tightest remaining limits over every active scope (for work sent elsewhere,
    e.g. to a Ray worker that enforces them on its own)."""
    calls: int | None = None
    tokens: int | None = None
    usd: float | None = None
    for led in _active():
        if led.budget.unlimited:
            continue
        left = led.remaining()
        if left.max_calls is not None:
            calls = left.max_calls if calls is None else min(calls, left.max_calls)
        if left.max_tokens is not None:
            tokens = left.max_tokens if tokens is None else min(tokens, left.max_tokens)
        if left.max_usd is not None:
            usd = left.max_usd if usd is None else min(usd, left.max_usd)
    return Budget(max_calls=calls, max_tokens=tokens, max_usd=usd)


def record(entry: UsageRecord) -> None:
    """Record a call that needed no reservation (a cache hit, or the final outcome of a
    call whose requests were already counted) in every active ledger."""
    for led in _active():
        led.record(entry)


def record_evaluations(*, hits: int = 0, misses: int = 0) -> None:
    """Count evaluations looked up in an evaluation cache in every active ledger: `hits`
    were answered from the cache (free, no budget used), `misses` had to run."""
    if hits < 0 or misses < 0:
        raise ValueError(f"hits and misses must be >= 0, not {hits} and {misses}")
    for led in _active():
        with led._lock:
            led.eval_cache_hits += hits
            led.eval_cache_misses += misses


def record_remote(entry: UsageRecord) -> None:
    """Record a call made in another process (e.g. a Ray worker) in every active ledger,
    counting its `attempts` as requests unless it was a cache hit."""
    sent = 0 if entry.cached else entry.attempts
    for led in _active():
        with led._lock:
            led.requests += sent
            led._add(entry)


@contextmanager
def track_usage(
    budget: Budget | None = None,
    *,
    max_calls: int | None = None,
    max_tokens: int | None = None,
    max_usd: float | None = None,
    all_threads: bool = False,
) -> Iterator[UsageLedger]:
    """Open a usage scope; yields its `UsageLedger`.

    Pass a `Budget` or the `max_*` limits. Scopes nest: a call is recorded in, and checked
    against, every enclosing scope.
    """
    if budget is None:
        budget = Budget(max_calls=max_calls, max_tokens=max_tokens, max_usd=max_usd)
    scope = UsageLedger(budget)
    if all_threads:
        with _THREAD_SCOPES_LOCK:
            _THREAD_SCOPES.append(scope)
        try:
            yield scope
        finally:
            with _THREAD_SCOPES_LOCK:
                _THREAD_SCOPES.remove(scope)
        return
    token = _SCOPES.set((*_SCOPES.get(), scope))
    try:
        yield scope
    finally:
        _SCOPES.reset(token)
