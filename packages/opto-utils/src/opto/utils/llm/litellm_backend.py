"""`LiteLLM`: any provider through litellm. The only module that imports litellm.

litellm is imported on the first call (it takes seconds), with its remote price-map fetch
disabled (`LITELLM_LOCAL_MODEL_COST_MAP=True` unless the user set it), its debug banners off,
its own loggers at WARNING (unless `LITELLM_LOG` or the application sets their level: its
INFO lines, one per call, would flood the output) and its own retries off: opto's
`RetryPolicy` retries transient errors.

Before its first request each `LiteLLM` checks what can be checked offline, so that a
misconfiguration fails at once and names the fix instead of failing (and being retried)
over the network: a model litellm cannot route raises `LLMConfigurationError` (with the
closest known model name), and a missing provider key raises `AuthenticationError` naming
the environment variable to set.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from opto.utils.imports import require
from opto.utils.llm.base import AbstractModel
from opto.utils.llm.config import env_model, provider_default_model, provider_key
from opto.utils.llm.errors import AuthenticationError, LLMConfigurationError
from opto.utils.llm.retry import RetryPolicy
from opto.utils.llm.types import ChatResponse, response_from_openai

__all__ = ["LiteLLM", "get_litellm", "request_kwargs"]

logger = logging.getLogger(__name__)

_IMPORT_LOCK = threading.Lock()
_LITELLM: Any = None

#: litellm's own loggers (it logs one INFO line per call).
LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")


def _quiet_litellm_logging() -> None:
    """Put litellm's loggers at WARNING, unless `LITELLM_LOG` or the application set them."""
    if os.environ.get("LITELLM_LOG"):
        return
    for name in LITELLM_LOGGERS:
        litellm_logger = logging.getLogger(name)
        if litellm_logger.level == logging.NOTSET:
            litellm_logger.setLevel(logging.WARNING)


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
            _quiet_litellm_logging()
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
            reset_freq=reset_freq,
            model=_resolve_model(model),
            cache=cache,
            retry=retry,
            supports_json_schema=supports_json_schema,
            **kwargs,
        )
        self.api_base = api_base
        self.api_key = api_key
        self._checked = False

    def _detect_json_schema(self) -> bool:
        """litellm's capability table says whether the model enforces JSON-schema output."""
        try:
            return bool(get_litellm().supports_response_schema(model=self.model_name))
        except Exception:  # litellm raises for models it does not know
            return False

    def _json_mode_format(self) -> Any:
        """JSON mode (`{"type": "json_object"}`) when the provider takes a response_format."""
        try:
            params = get_litellm().get_supported_openai_params(model=self.model_name) or ()
        except Exception:  # litellm raises for providers it does not know
            params = ()
        return {"type": "json_object"} if "response_format" in params else None

    def check(self) -> None:
        """Check offline that litellm can route the model and that the provider's API key
        is set; raise `LLMConfigurationError` / `AuthenticationError` naming the fix.

        Runs before the first request (once it passes); call it to fail early.
        """
        if self._checked:
            return
        needs_key = self.api_key is None and not self._azure_ad()
        known = provider_key(self.model_name) if needs_key else None
        if known is not None and not os.environ.get(known[1], "").strip():
            # Decided before importing litellm, which takes seconds.
            raise self._missing_key([known[1]], known[0])
        litellm = get_litellm()
        try:
            provider = litellm.get_llm_provider(model=self.model_name, api_base=self.api_base)[1]
        except Exception as exc:  # litellm raises BadRequestError for unroutable models
            raise LLMConfigurationError(
                _unknown_model_message(litellm, self.model_name), model=self.model_name
            ) from exc
        if needs_key:
            missing = _missing_keys(litellm, self.model_name, self.api_base)
            if missing:
                raise self._missing_key(missing, provider)
        self._checked = True

    def _missing_key(self, names: list[str], provider: str) -> AuthenticationError:
        msg = (
            f"{' and '.join(names)} is not set: model {self.model_name!r} (provider {provider}) "
            f"needs it. Set it in the environment (export {names[0]}=...) or pass "
            "api_key=... to LLM(...)/LiteLLM(...)"
        )
        return AuthenticationError(msg, model=self.model_name, attempts=0)

    def _azure_ad(self) -> bool:
        return bool(os.environ.get("AZURE_TOKEN_PROVIDER_SCOPE")) and self.model_name.startswith(
            "azure/"
        )

    def __call__(self, messages: Any = None, **options: Any) -> ChatResponse:
        # litellm is imported first, so the seconds it takes are not the call's latency
        self.check()
        return super().__call__(messages, **options)

    async def acall(self, messages: Any = None, **options: Any) -> ChatResponse:
        self.check()
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
        kwargs = request_kwargs(self.model_name, self.timeout, self.api_base, self.api_key)
        kwargs["messages"] = messages
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


def _missing_keys(litellm: Any, model: str, api_base: str | None) -> list[str]:
    """Provider API-key variables (`*_API_KEY`) litellm says the model needs and are unset.

    Other settings it lists (endpoints, cloud credentials with other sources) are left to
    the provider to check.
    """
    try:
        report = litellm.validate_environment(model=model, api_base=api_base)
    except Exception:  # litellm raises for providers it cannot inspect
        return []
    missing = report.get("missing_keys") or [] if isinstance(report, dict) else []
    return [name for name in missing if str(name).endswith("_API_KEY")]


def _unknown_model_message(litellm: Any, model: str) -> str:
    known = [name for name in getattr(litellm, "model_list", ()) if isinstance(name, str)]
    import difflib

    close = difflib.get_close_matches(model, known, n=1, cutoff=0.75)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return (
        f"unknown model {model!r}: litellm cannot tell which provider serves it.{hint} "
        "Name it as 'provider/model' (e.g. 'openai/gpt-4o-mini', 'anthropic/claude-3-5-"
        "sonnet-latest', 'ollama/llama3'); see https://docs.litellm.ai/docs/providers"
    )


def request_kwargs(
    model_name: str, timeout: float | None, api_base: str | None, api_key: str | None
) -> dict[str, Any]:
    """The keywords every litellm request of opto carries: the model, the timeout, no
    retries of litellm's or the SDK's own (opto's `RetryPolicy` retries), the endpoint and
    key when given, and an Azure AD token provider when `AZURE_TOKEN_PROVIDER_SCOPE` is set
    for an `azure/` model."""
    kwargs: dict[str, Any] = {
        "model": model_name,
        "timeout": timeout,
        "num_retries": 0,
        "max_retries": 0,
    }
    if api_base is not None:
        kwargs["api_base"] = api_base
    if api_key is not None:
        kwargs["api_key"] = api_key
    scope = os.environ.get("AZURE_TOKEN_PROVIDER_SCOPE")
    if scope and model_name.startswith("azure/"):
        kwargs["azure_ad_token_provider"] = _azure_token_provider(scope)
    return kwargs


def _azure_token_provider(scope: str) -> Any:
    """Azure AD token provider for `azure/...` models (the reference's
    `AZURE_TOKEN_PROVIDER_SCOPE`)."""
    try:
        from azure.identity import DefaultAzureCredential, get_bearer_token_provider
    except ImportError as exc:
        msg = "AZURE_TOKEN_PROVIDER_SCOPE needs the azure-identity package: pip install azure-identity"
        raise ImportError(msg) from exc
    return get_bearer_token_provider(DefaultAzureCredential(), scope)
