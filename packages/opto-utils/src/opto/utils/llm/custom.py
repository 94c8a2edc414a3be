"""`CustomLLM`: any OpenAI-compatible client object (`client.chat.completions.create`)."""

from __future__ import annotations

import inspect
import os
import time
from typing import Any

from opto.utils.imports import require
from opto.utils.llm.base import AbstractModel
from opto.utils.llm.types import ChatResponse, response_from_openai

__all__ = ["CustomLLM"]


class CustomLLM(AbstractModel):
    """An LLM served by an OpenAI-compatible client.

    Args:
        model: model id sent with each request; None → `TRACE_CUSTOMLLM_MODEL`, else gpt-4o.
        reset_freq, cache: as in `AbstractModel`.
        client: any object with `chat.completions.create(model=, messages=, **options)`
            (sync; an async client's coroutine is awaited by `acall`). None → an
            `openai.OpenAI` client for `base_url`/`api_key`, defaulting to the reference's
            `TRACE_CUSTOMLLM_URL` / `TRACE_CUSTOMLLM_API_KEY` (needs the `openai` package,
            which the `litellm` extra brings).
        async_client: optional async twin of `client` used by `acall`.
        supports_json_schema: whether the server enforces `json_schema` response formats;
            False puts the schema into the prompt instead.
        **kwargs: `AbstractModel` keywords and default call options.

    `timeout` is a hard deadline per request (the OpenAI client's own timeout only bounds
    each read of the reply).
    """

    hard_timeout = True

    def __init__(
        self,
        model: str | None = None,
        reset_freq: float | None = None,
        cache: Any = None,
        *,
        client: Any = None,
        async_client: Any = None,
        base_url: str | None = None,
        api_key: str | None = None,
        supports_json_schema: bool = True,
        **kwargs: Any,
    ) -> None:
        self.base_url = base_url or os.environ.get("TRACE_CUSTOMLLM_URL", "http://localhost:4000/")
        self._api_key = api_key or os.environ.get("TRACE_CUSTOMLLM_API_KEY", "sk-placeholder")
        model = model or os.environ.get("TRACE_CUSTOMLLM_MODEL", "gpt-4o")
        self._owns_client = client is None
        self.async_client = async_client
        factory = self._openai_client if client is None else _Constant(client)
        super().__init__(
            factory,
            reset_freq,
            model=model,
            cache=cache,
            supports_json_schema=supports_json_schema,
            **kwargs,
        )

    def _openai_client(self) -> Any:
        openai = _import_openai()
        return openai.OpenAI(
            base_url=self.base_url, api_key=self._api_key, max_retries=0, timeout=self.timeout
        )

    def _request(self, messages: list[dict[str, Any]], options: dict[str, Any]) -> dict[str, Any]:
        return {"model": self.model_name, "messages": messages, **options}

    def _complete(self, messages: list[dict[str, Any]], options: dict[str, Any]) -> ChatResponse:
        start = time.perf_counter()
        raw = self.model.chat.completions.create(**self._request(messages, options))
        return response_from_openai(
            raw, model=self.model_name, latency_s=time.perf_counter() - start
        )

    async def _acomplete(
        self, messages: list[dict[str, Any]], options: dict[str, Any]
    ) -> ChatResponse:
        client = self.async_client
        if client is None and self._owns_client:
            openai = _import_openai()
            client = self.async_client = openai.AsyncOpenAI(
                base_url=self.base_url, api_key=self._api_key, max_retries=0,
                timeout=self.timeout,
            )  # fmt: skip
        if client is None:
            return await super()._acomplete(messages, options)
        start = time.perf_counter()
        raw = client.chat.completions.create(**self._request(messages, options))
        if inspect.isawaitable(raw):
            raw = await raw
        return response_from_openai(
            raw, model=self.model_name, latency_s=time.perf_counter() - start
        )

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        if self._owns_client:
            state["async_client"] = None
        return state


class _Constant:
    """A picklable factory returning a given client."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __call__(self) -> Any:
        return self.value


def _import_openai() -> Any:
    return require("openai", "litellm", purpose="CustomLLM without client=")
