"""`LiteLLM`: any provider through litellm. The only module that imports litellm.

litellm is imported on the first call (it takes seconds), with its remote price-map fetch
disabled (`LITELLM_LOCAL_MODEL_COST_MAP=True` unless the user set it), its debug banners off
and its own retries off: opto's `RetryPolicy` retries transient errors.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from opto.utils.imports import require
from opto.utils.llm.base import AbstractModel
from opto.utils.llm.config import env_model, provider_default_model
from opto.utils.llm.errors import LLMConfigurationError
from opto.utils.llm.retry import RetryPolicy
from opto.utils.llm.types import ChatResponse, response_from_openai

__all__ = ["LiteLLM", "get_litellm"]

logger = logging.getLogger(__name__)

_IMPORT_LOCK = threading.Lock()
_LITELLM: Any = None


def get_litellm() -> Any:
    """Import and configure litellm once; raise MissingExtraError (an ImportError) with the
    install hint if absent."""
    global _LITELLM
    if _LITELLM is not None:
        return _LITELLM
    with _IMPORT_LOCK:
        if _LITELLM is None:
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            logger.debug("importing litellm (first LLM call; this takes a few seconds)")
            litellm = require("litellm", "litellm", purpose="LiteLLM")
            litellm.suppress_debug_info = True
            litellm.telemetry = False
            _LITELLM = litellm
    return _LITELLM


def _resolve_model(model: str | None) -> str:
    resolved = model or env_model() or provider_default_model()
    if not resolved:
        msg = (
            "LiteLLM has no model: pass LiteLLM('provider/model'), set OPTO_LLM_MODEL "
            "(or TRACE_LITELLM_MODEL), or set a provider key such as OPENAI_API_KEY"
        )
        raise LLMConfigurationError(msg)
    return resolved


class LiteLLM(AbstractModel):
    """Any litellm model string: `gpt-4o-mini`, `anthropic/...`, `ollama/...`, or
    `openai/<name>` with `api_base=` for vLLM / llama.cpp servers.

    Args:
        model: litellm model id; None → `OPTO_LLM_MODEL`, `TRACE_LITELLM_MODEL`,
            `DEFAULT_LITELLM_MODEL`, then the default model of a provider key in the env.
        reset_freq, cache: as in `AbstractModel`.
        max_retries, base_delay: shorthand for `retry=RetryPolicy(...)` (reference API).
        api_base, api_key: endpoint and credential (never part of cache keys).
        supports_json_schema: override litellm's view of whether the model enforces
            `response_format={"type": "json_schema", ...}` (e.g. True for a vLLM server).
        **kwargs: `AbstractModel` keywords and default call options.

    `timeout` is a hard deadline per request (the HTTP client's own timeout only bounds
    each read of the reply). Each request reserves its cost at the model's litellm price
    (prompt estimate plus `completion_estimate(options)` completion tokens) against
    `max_usd`; models litellm has no price for reserve nothing.
    """

    hard_timeout = True

    def __init__(
        self,
        model: str | None = None,
        reset_freq: float | None = None,
        cache: Any = None,
        max_retries: int | None = None,
        base_delay: float | None = None,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        supports_json_schema: bool | None = None,
        retry: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        if retry is None and (max_retries is not None or base_delay is not None):
            defaults = RetryPolicy()
            retry = RetryPolicy(
                max_retries=defaults.max_retries if max_retries is None else max_retries,
                base_delay=defaults.base_delay if base_delay is None else base_delay,
            )
        super().__init__(
            reset_freq=reset_freq, model=_resolve_model(model), cache=cache, retry=retry, **kwargs
        )
        self.api_base = api_base
        self.api_key = api_key
        self._json_schema = supports_json_schema

    @property
    def supports_json_schema(self) -> bool:  # type: ignore[override]
        """Whether the model enforces JSON-schema output (litellm's capability table,
        unless overridden in the constructor)."""
        if self._json_schema is None:
            litellm = get_litellm()
            try:
                self._json_schema = bool(litellm.supports_response_schema(model=self.model_name))
            except Exception:  # litellm raises for models it does not know
                self._json_schema = False
        return self._json_schema

    def _json_mode_format(self) -> Any:
        """JSON mode (`{"type": "json_object"}`) when the provider takes a response_format."""
        try:
            params = get_litellm().get_supported_openai_params(model=self.model_name) or ()
        except Exception:  # litellm raises for providers it does not know
            params = ()
        return {"type": "json_object"} if "response_format" in params else None

    def __call__(self, messages: Any = None, **options: Any) -> ChatResponse:
        get_litellm()  # imported first, so the seconds it takes are not the call's latency
        return super().__call__(messages, **options)

    async def acall(self, messages: Any = None, **options: Any) -> ChatResponse:
        get_litellm()  # imported first, so the seconds it takes are not the call's latency
        return await super().acall(messages, **options)

    def _estimate_cost(
        self, messages: list[dict[str, Any]], options: dict[str, Any], prompt_tokens: int
    ) -> float:
        try:
            prompt_cost, completion_cost = get_litellm().cost_per_token(
                model=self.model_name,
                prompt_tokens=prompt_tokens,
                completion_tokens=self.completion_estimate(options),
            )
        except Exception:  # litellm raises for models it has no price for
            return 0.0
        return float(prompt_cost) + float(completion_cost)

    def _kwargs(self, messages: list[dict[str, Any]], options: dict[str, Any]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.model_name,
            "messages": messages,
            "timeout": self.timeout,
            "num_retries": 0,
            "max_retries": 0,
        }
        if self.api_base is not None:
            kwargs["api_base"] = self.api_base
        if self.api_key is not None:
            kwargs["api_key"] = self.api_key
        scope = os.environ.get("AZURE_TOKEN_PROVIDER_SCOPE")
        if scope and self.model_name.startswith("azure/"):
            kwargs["azure_ad_token_provider"] = _azure_token_provider(scope)
        kwargs.update(options)
        return kwargs

    def _response(self, raw: Any, latency: float) -> ChatResponse:
        cost = None
        hidden = getattr(raw, "_hidden_params", None) or {}
        cost = hidden.get("response_cost")
        if cost is None:
            try:
                cost = get_litellm().completion_cost(completion_response=raw)
            except Exception:  # unmapped model: cost unknown, not zero
                cost = None
        return response_from_openai(
            raw, model=self.model_name, cost_usd=None if cost is None else float(cost),
            latency_s=latency,
        )  # fmt: skip

    def _complete(self, messages: list[dict[str, Any]], options: dict[str, Any]) -> ChatResponse:
        litellm = get_litellm()
        start = time.perf_counter()
        raw = litellm.completion(**self._kwargs(messages, options))
        return self._response(raw, time.perf_counter() - start)

    async def _acomplete(
        self, messages: list[dict[str, Any]], options: dict[str, Any]
    ) -> ChatResponse:
        litellm = get_litellm()
        start = time.perf_counter()
        raw = await litellm.acompletion(**self._kwargs(messages, options))
        return self._response(raw, time.perf_counter() - start)


def _azure_token_provider(scope: str) -> Any:
    """Azure AD token provider for `azure/...` models (the reference's
    `AZURE_TOKEN_PROVIDER_SCOPE`)."""
    try:
        from azure.identity import DefaultAzureCredential, get_bearer_token_provider
    except ImportError as exc:
        msg = "AZURE_TOKEN_PROVIDER_SCOPE needs the azure-identity package: pip install azure-identity"
        raise ImportError(msg) from exc
    return get_bearer_token_provider(DefaultAzureCredential(), scope)
