"""`AbstractModel`: the base of every opto LLM backend and its call pipeline.

Every call runs cache → budget check → retry → usage ledger:

1. a cache hit (when a cache is configured) is returned at once, recorded as free;
2. otherwise the call is admitted against the active budgets (`BudgetExceeded` if not);
3. the backend is called, transient failures retried per the `RetryPolicy`;
4. the outcome (tokens, cost, latency, error) is recorded and a success is cached.

Subclasses implement `_complete` (and `_acomplete` when they have a native async path).
The reference's form `AbstractModel(factory, reset_freq)` also works: `factory()` builds the
underlying callable (rebuilt every `reset_freq` seconds, e.g. for expiring credentials).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
from opto.utils import usage as _usage
from opto.utils.cache import ResponseCache, request_key, resolve_cache
from opto.utils.llm.errors import MalformedResponseError
from opto.utils.llm.retry import RetryPolicy, acall_with_retry, call_with_retry
from opto.utils.llm.structured import json_schema_of, normalize_response_format, schema_in_prompt
from opto.utils.llm.types import ChatResponse, response_from_openai

__all__ = ["DEFAULT_TIMEOUT", "AbstractModel"]

DEFAULT_TIMEOUT = 120.0
"""Seconds a provider may take to answer one request before it counts as a timeout."""

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
        timeout: seconds per request (backends that talk over a network honour it).
        rollout_id: default rollout id for cache keys (a per-call `rollout_id=` wins).
        **options: default call options (temperature, max_tokens…); per-call options win.
    """

    #: Whether `response_format={"type": "json_schema", ...}` is enforced by the backend.
    #: When False the schema is put into the prompt instead (and `_json_mode_format()` is
    #: sent). The base passes the option through to the underlying callable unchanged.
    supports_json_schema: bool = True

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
        **options: Any,
    ) -> None:
        self.factory = factory
        self.reset_freq = reset_freq
        self.model_name = model
        self.cache = resolve_cache(cache)
        self.retry = retry if retry is not None else RetryPolicy()
        self.timeout = timeout
        self.rollout_id = rollout_id
        self.options = options
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

    def _failed(self, exc: BaseException, reservation: _usage.Reservation, latency: float) -> None:
        reservation.commit(
            _usage.UsageRecord(
                model=self.model_name,
                latency_s=latency,
                error=type(exc).__name__,
                attempts=getattr(exc, "attempts", 1),
            )
        )

    def __call__(self, messages: Messages | None = None, **options: Any) -> ChatResponse:
        """Ask the model; returns an OpenAI-shaped `ChatResponse`.

        Options are passed to the provider (temperature, max_tokens, n, response_format…)
        except `rollout_id` (cache key only) and `cache=False` (skip the cache this call).
        Raises an `LLMError` subclass on failure, `BudgetExceeded` before a call that would
        pass a budget.
        """
        msgs, options, key = self._prepare(messages, options)
        hit = self._cached(key)
        if hit is not None:
            return hit
        reservation = _usage.reserve(_estimate_tokens(msgs, options))
        attempts = 0

        def attempt() -> ChatResponse:
            nonlocal attempts
            attempts += 1
            return _non_empty(self._complete(msgs, options))

        start = time.perf_counter()
        try:
            response = call_with_retry(attempt, self.retry, model=self.model_name)
        except BaseException as exc:
            self._failed(exc, reservation, time.perf_counter() - start)
            raise
        return self._done(response, reservation, key, time.perf_counter() - start, attempts)

    async def acall(self, messages: Messages | None = None, **options: Any) -> ChatResponse:
        """Async twin of `__call__` (same pipeline, same options)."""
        msgs, options, key = self._prepare(messages, options)
        hit = self._cached(key)
        if hit is not None:
            return hit
        reservation = _usage.reserve(_estimate_tokens(msgs, options))
        attempts = 0

        async def attempt() -> ChatResponse:
            nonlocal attempts
            attempts += 1
            return _non_empty(await self._acomplete(msgs, options))

        start = time.perf_counter()
        try:
            response = await acall_with_retry(attempt, self.retry, model=self.model_name)
        except BaseException as exc:
            self._failed(exc, reservation, time.perf_counter() - start)
            raise
        return self._done(response, reservation, key, time.perf_counter() - start, attempts)

    def create(self, messages: Messages | None = None, **options: Any) -> ChatResponse:
        """Alias of `__call__` for code written against OpenAI-style `.create(...)`."""
        return self(messages, **options)
