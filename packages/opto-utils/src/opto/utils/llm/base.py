"""`AbstractModel`: the base of every opto LLM backend and its call pipeline.

Every call runs validation → cache → retry (budget → request) → usage ledger:

1. the messages are checked (`InvalidMessageError` before anything is sent);
2. a cache hit (when a cache is configured) is returned at once, recorded as free;
3. every request, retries included, first reserves one call plus its estimated tokens and
   cost against the active budgets (`BudgetExceeded` if it would pass one); transient
   failures are retried per the `RetryPolicy`, within its overall `deadline`;
4. each request settles its reservation; the outcome (tokens, cost, latency, error) is
   recorded and a success is cached.

Backends with `hard_timeout = True` run each request under a hard deadline of `timeout`
seconds (and what is left of the retry deadline), so a reply trickling in byte by byte
cannot hold a call past it.

Subclasses implement `_complete` (and `_acomplete` when they have a native async path).
The reference's form `AbstractModel(factory, reset_freq)` also works: `factory()` builds the
underlying callable (rebuilt every `reset_freq` seconds, e.g. for expiring credentials).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs
from opto.utils import usage as _usage
from opto.utils.cache import ResponseCache, request_key, resolve_cache
from opto.utils.concurrency import DeadlineExceeded, call_with_deadline
from opto.utils.llm import history as _history
from opto.utils.llm.errors import LLMTimeoutError, MalformedResponseError
from opto.utils.llm.retry import RetryPolicy, acall_with_retry, call_with_retry
from opto.utils.llm.structured import json_schema_of, normalize_response_format, schema_in_prompt
from opto.utils.llm.types import ChatResponse, response_from_openai
from opto.utils.llm.validation import check_messages

__all__ = ["DEFAULT_COMPLETION_ESTIMATE", "DEFAULT_TIMEOUT", "AbstractModel"]

DEFAULT_TIMEOUT = 120.0
"""Seconds a provider may take to answer one request before it counts as a timeout."""

DEFAULT_COMPLETION_ESTIMATE = 4096
"""Completion tokens assumed per choice when estimating the cost a request reserves
against `max_usd` and the call sets no `max_tokens` (a conservative guess)."""

Messages = Sequence[Mapping[str, Any]]


def _estimate_tokens(messages: Messages, options: Mapping[str, Any]) -> int:
    """Rough token count of a request (≈4 characters per token) plus its `max_tokens`."""
    chars = 0
    for message in messages:
        content = message.get("content")
        chars += len(content) if isinstance(content, str) else len(str(content))
    return chars // 4 + int(options.get("max_tokens") or 0)


def _non_empty(response: ChatResponse) -> ChatResponse:
    """Reject a reply without choices (retried: providers send these under load)."""
    if not response.choices:
        msg = f"the provider returned no choices (model {response.model!r})"
        raise MalformedResponseError(msg, model=response.model)
    return response


class AbstractModel:
    """Base class of LLM backends: `llm(messages=[...], **options) -> ChatResponse`.

    Args:
        factory: optional zero-argument callable building the underlying client/callable
            (reference API); the default `_complete` calls it with `messages=` and options.
        reset_freq: rebuild the factory's product after this many seconds.
        model: the model id recorded in the ledger and used in cache keys.
        cache: `True`/a path/a `ResponseCache` to cache replies, `False` to never cache,
            None to follow `OPTO_LLM_CACHE`.
        retry: the `RetryPolicy` for transient failures.
        timeout: seconds per request (backends that talk over a network honour it; with
            `hard_timeout` it is a deadline for the whole reply, not for each read).
        rollout_id: default rollout id for cache keys (a per-call `rollout_id=` wins).
        history: keep the last this many calls for `inspect_history` (0: off; None:
            follow `OPTO_LLM_HISTORY`).
        supports_json_schema: whether the backend enforces JSON-schema response formats
            (see the property); None lets the backend decide.
        **options: default call options (temperature, max_tokens…); per-call options win.
    """

    #: Whether each request runs under a hard deadline of `timeout` seconds (in a helper
    #: thread, or `asyncio.wait_for`), for transports whose timeouts only bound each read.
    hard_timeout: bool = False

    #: The last calls of this LLM (None: not recorded); see `inspect_history`.
    history: _history.History | None = None

    def __init__(
        self,
        factory: Callable[[], Any] | None = None,
        reset_freq: float | None = None,
        *,
        model: str = "",
        cache: bool | str | os.PathLike[str] | ResponseCache | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        rollout_id: Any = None,
        history: int | None = None,
        supports_json_schema: bool | None = None,
        **options: Any,
    ) -> None:
        self._json_schema = supports_json_schema
        self.factory = factory
        self.reset_freq = reset_freq
        self.model_name = model
        self.cache = resolve_cache(cache)
        self.retry = retry if retry is not None else RetryPolicy()
        self.timeout = timeout
        self.rollout_id = rollout_id
        self.options = options
        capacity = _history.env_capacity() if history is None else history
        self.history = _history.History(capacity) if capacity > 0 else None
        self._model: Any = None
        self._init_time = time.monotonic()
        if factory is not None:
            self._model = factory()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model_name!r})"

    # --- the reference's factory protocol -------------------------------------------------

    @property
    def model(self) -> Any:
        """The underlying callable built by `factory` (rebuilt after `reset_freq` seconds)."""
        if (
            self.factory is not None
            and self.reset_freq is not None
            and time.monotonic() - self._init_time > self.reset_freq
        ):
            self._model = self.factory()
            self._init_time = time.monotonic()
        return self._model

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self.factory is not None:
            state["_model"] = None  # rebuilt from the factory on unpickling
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.factory is not None:
            self._model = self.factory()
            self._init_time = time.monotonic()

    # --- what subclasses implement --------------------------------------------------------

    def _estimate_cost(
        self, messages: list[dict[str, Any]], options: dict[str, Any], prompt_tokens: int
    ) -> float:
        """Estimated USD cost of one request, reserved against `max_usd` until it settles.

        0.0 when the model's price is unknown (such calls count nothing against `max_usd`).
        Backends that know prices override it; see `completion_estimate`.
        """
        return 0.0

    @staticmethod
    def completion_estimate(options: Mapping[str, Any]) -> int:
        """Completion tokens a request may use: `max_tokens` (or `max_completion_tokens`),
        else `DEFAULT_COMPLETION_ESTIMATE`, times the number of choices `n`."""
        limit = options.get("max_tokens") or options.get("max_completion_tokens")
        per_choice = int(limit) if limit else DEFAULT_COMPLETION_ESTIMATE
        return per_choice * max(1, int(options.get("n") or 1))

    @property
    def supports_json_schema(self) -> bool:
        """Whether `response_format={"type": "json_schema", ...}` is enforced by the backend.

        When False the schema is put into the prompt instead (and `_json_mode_format()` is
        sent). As given to the constructor, else what `_detect_json_schema()` says (asked
        once).
        """
        if self._json_schema is None:
            self._json_schema = self._detect_json_schema()
        return self._json_schema

    def _detect_json_schema(self) -> bool:
        """`supports_json_schema` when the constructor left it open. The base passes the
        option through to the underlying callable unchanged, so True."""
        return True

    def _json_mode_format(self) -> Any:
        """What to send as `response_format` when a JSON schema went into the prompt
        instead (e.g. `{"type": "json_object"}`); None sends nothing."""
        return None

    def _complete(self, messages: list[dict[str, Any]], options: dict[str, Any]) -> ChatResponse:
        """Make one request (no retry, cache or ledger: the pipeline does those)."""
        if self.factory is None:
            msg = f"{type(self).__name__} must implement _complete() or be given a factory"
            raise NotImplementedError(msg)
        start = time.perf_counter()
        reply = self.model(messages=messages, **options)
        return response_from_openai(
            reply, model=self.model_name, latency_s=time.perf_counter() - start
        )

    async def _acomplete(
        self, messages: list[dict[str, Any]], options: dict[str, Any]
    ) -> ChatResponse:
        """Async request; by default `_complete` in a worker thread."""
        import asyncio

        return await asyncio.to_thread(self._complete, messages, options)

    # --- the pipeline ---------------------------------------------------------------------

    def _prepare(
        self, messages: Messages | None, options: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], dict[str, Any], str | None]:
        """Merge default options, apply the structured-output fallback, compute the key."""
        if messages is None:
            messages = options.pop("messages", None)
            if messages is None:
                msg = "an LLM call needs messages=[{'role': ..., 'content': ...}, ...]"
                raise TypeError(msg)
        rollout_id = options.pop("rollout_id", self.rollout_id)
        use_cache = options.pop("cache", True)
        if self.options:
            options = {**self.options, **options}
        msgs: list[dict[str, Any]] = messages if isinstance(messages, list) else list(messages)
        check_messages(msgs, model=self.model_name)
        response_format = options.get("response_format")
        if response_format is not None:
            response_format = normalize_response_format(response_format)
            options["response_format"] = response_format
            schema = json_schema_of(response_format)
            if schema is not None and not self.supports_json_schema:
                msgs = schema_in_prompt(msgs, schema)
                fallback = self._json_mode_format()
                if fallback is None:
                    del options["response_format"]
                else:
                    options["response_format"] = fallback
        key = None
        if self.cache is not None and use_cache:
            key = request_key(self.model_name, msgs, options, rollout_id)
        return msgs, options, key

    def _cached(self, key: str | None) -> ChatResponse | None:
        if key is None:
            return None
        start = time.perf_counter()
        stored = self.cache.get(key)  # type: ignore[union-attr]
        if stored is None:
            return None
        response = ChatResponse.from_dict(stored)
        latency = time.perf_counter() - start
        response = attrs.evolve(
            response,
            usage=attrs.evolve(response.usage, cost_usd=0.0, cached=True, latency_s=latency),
        )
        _usage.record(_usage.UsageRecord(model=response.model, cached=True, latency_s=latency))
        return response

    def _done(
        self,
        response: ChatResponse,
        reservation: _usage.Reservation,
        key: str | None,
        latency: float,
        attempts: int,
    ) -> ChatResponse:
        u = response.usage
        if u.latency_s != latency:
            u = attrs.evolve(u, latency_s=latency)
            response = attrs.evolve(response, usage=u)
        reservation.commit(
            _usage.UsageRecord(
                model=response.model or self.model_name,
                prompt_tokens=u.prompt_tokens,
                completion_tokens=u.completion_tokens,
                cost_usd=u.cost_usd,
                latency_s=latency,
                attempts=attempts,
            )
        )
        if key is not None and response.choices:
            self.cache.put(key, response.to_dict(), model=response.model)  # type: ignore[union-attr]
        return response

    def _remember(
        self,
        msgs: list[dict[str, Any]],
        options: dict[str, Any],
        reply: ChatResponse | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Record the call in this LLM's and the process-wide history, when either is on."""
        shared = _history.global_history()
        if self.history is None and shared is None:
            return
        _history.record_call(
            (self.history, shared), model=self.model_name, messages=msgs, options=options,
            reply=reply, error=error,
        )  # fmt: skip

    def inspect_history(self, n: int = 1) -> str:
        """This LLM's last `n` calls, readable: messages, reply (or error) and usage."""
        if self.history is None:
            return (
                f"call history is off for {self!r}: create it with history=N (or set "
                f"{_history.ENV_VAR}=N)"
            )
        return self.history.format(n)

    def _failed(self, exc: BaseException, latency: float, attempts: int) -> None:
        if attempts == 0:  # refused before any request left (budget, deadline)
            return
        _usage.record(
            _usage.UsageRecord(
                model=self.model_name,
                latency_s=latency,
                error=type(exc).__name__,
                attempts=attempts,
            )
        )

    def _attempt_limit(self, started: float) -> float | None:
        """Seconds the next request may take: `timeout`, capped by the retry deadline."""
        left = self.retry.remaining(started)
        if left is not None and left <= 0:
            msg = (
                f"the call to {self.model_name!r} ran out of its {self.retry.deadline:g}s "
                "retry deadline; raise RetryPolicy(deadline=...)"
            )
            raise LLMTimeoutError(msg, model=self.model_name)
        if self.timeout is None:
            return left
        return self.timeout if left is None else min(self.timeout, left)

    def _timed_out(self, limit: float) -> LLMTimeoutError:
        msg = (
            f"{self.model_name!r} did not answer within {limit:.3g}s (timeout={self.timeout}, "
            f"retry deadline={self.retry.deadline}); raise timeout= if replies are long"
        )
        return LLMTimeoutError(msg, model=self.model_name)

    def _reserve(self, msgs: list[dict[str, Any]], options: dict[str, Any]) -> _usage.Reservation:
        tokens = _estimate_tokens(msgs, options)
        prompt_tokens = tokens - int(options.get("max_tokens") or 0)
        return _usage.reserve(tokens, self._estimate_cost(msgs, options, prompt_tokens))

    def __call__(self, messages: Messages | None = None, **options: Any) -> ChatResponse:
        """Ask the model; returns an OpenAI-shaped `ChatResponse`.

        Options are passed to the provider (temperature, max_tokens, n, response_format…)
        except `rollout_id` (cache key only) and `cache=False` (skip the cache this call).
        Raises an `LLMError` subclass on failure (`InvalidMessageError` before any request
        for messages that cannot be sent), `BudgetExceeded` before a request that would pass
        a budget.
        """
        call = _Call(self, messages, options)
        if call.hit is not None:
            return call.hit

        def send(limit: float | None) -> ChatResponse:
            if not self.hard_timeout or limit is None:
                return self._complete(call.msgs, call.options)
            try:
                return call_with_deadline(
                    lambda: self._complete(call.msgs, call.options), limit, name="opto-llm"
                )
            except DeadlineExceeded as exc:
                raise self._timed_out(limit) from exc

        def attempt() -> ChatResponse:
            with call.attempt() as limit:
                return _non_empty(send(limit))

        with call.recording_failure():
            response = call_with_retry(attempt, self.retry, model=self.model_name)
        return call.succeeded(response)

    async def acall(self, messages: Messages | None = None, **options: Any) -> ChatResponse:
        """Async twin of `__call__` (same pipeline, same options)."""
        import asyncio

        call = _Call(self, messages, options)
        if call.hit is not None:
            return call.hit

        async def send(limit: float | None) -> ChatResponse:
            if not self.hard_timeout or limit is None:
                return await self._acomplete(call.msgs, call.options)
            try:
                return await asyncio.wait_for(self._acomplete(call.msgs, call.options), limit)
            except asyncio.TimeoutError as exc:  # TimeoutError's alias from Python 3.11 on
                raise self._timed_out(limit) from exc

        async def attempt() -> ChatResponse:
            with call.attempt() as limit:
                return _non_empty(await send(limit))

        with call.recording_failure():
            response = await acall_with_retry(attempt, self.retry, model=self.model_name)
        return call.succeeded(response)

    def create(self, messages: Messages | None = None, **options: Any) -> ChatResponse:
        """Alias of `__call__` for code written against OpenAI-style `.create(...)`."""
        return self(messages, **options)


class _Call:
    """The book-keeping of one model call, shared by `__call__` and `acall`.

    Normalizes the request and looks it up in the cache (`hit`), then counts the attempts,
    holds the budget reservation of the current one, and records the outcome (usage and
    history) once the retries are over.
    """

    def __init__(
        self, model: AbstractModel, messages: Messages | None, options: dict[str, Any]
    ) -> None:
        self.model = model
        self.msgs, self.options, self.key = model._prepare(messages, options)
        self.hit = model._cached(self.key)
        if self.hit is not None:
            model._remember(self.msgs, self.options, reply=self.hit)
        self.attempts = 0
        self.reservation: _usage.Reservation | None = None
        self.started = time.monotonic()
        self.start = time.perf_counter()

    @contextlib.contextmanager
    def attempt(self) -> Iterator[float | None]:
        """One request: yields its time limit; releases its reservation if it fails."""
        limit = self.model._attempt_limit(self.started)
        self.reservation = self.model._reserve(self.msgs, self.options)
        self.attempts += 1
        try:
            yield limit
        except BaseException:
            self.reservation.fail()
            raise

    @contextlib.contextmanager
    def recording_failure(self) -> Iterator[None]:
        """Record the call as failed (usage and history) when the retries give up."""
        try:
            yield
        except BaseException as exc:
            self.model._failed(exc, time.perf_counter() - self.start, self.attempts)
            self.model._remember(self.msgs, self.options, error=exc)
            raise

    def succeeded(self, response: ChatResponse) -> ChatResponse:
        """Settle the reservation, cache and record `response`; return it."""
        assert self.reservation is not None
        latency = time.perf_counter() - self.start
        response = self.model._done(response, self.reservation, self.key, latency, self.attempts)
        self.model._remember(self.msgs, self.options, reply=response)
        return response
