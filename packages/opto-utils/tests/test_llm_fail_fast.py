"""Misconfigured LiteLLM calls fail at once, typed, naming the fix, and are never retried."""

from __future__ import annotations

import importlib.util
import logging

import pytest
from opto.utils import track_usage
from opto.utils.llm import (
    LLM,
    AuthenticationError,
    LiteLLM,
    LLMConfigurationError,
    RetryPolicy,
)
from opto.utils.llm.errors import classify_exception
from opto.utils.llm.litellm_backend import LITELLM_LOGGERS, get_litellm
from opto.utils.testing import ServerReply

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("litellm") is None, reason="the litellm extra is not installed"
    ),
    pytest.mark.filterwarnings("ignore::UserWarning:pydantic"),
]

USER = [{"role": "user", "content": "hello"}]


def counting_retry(sleeps: list[float]) -> RetryPolicy:
    return RetryPolicy(max_retries=4, sleep=sleeps.append)


def test_missing_openai_key_is_an_authentication_error_naming_the_variable():
    sleeps: list[float] = []
    llm = LLM("gpt-4o-mini", retry=counting_retry(sleeps))
    with track_usage() as u, pytest.raises(AuthenticationError) as info:
        llm(messages=USER)
    assert "OPENAI_API_KEY" in str(info.value) and "api_key=" in str(info.value)
    assert info.value.attempts == 0 and sleeps == [] and u.calls == 0 and u.errors == 0
    assert not info.value.transient


def test_missing_key_of_a_provider_known_only_to_litellm(monkeypatch):
    monkeypatch.delenv("COHERE_API_KEY", raising=False)
    litellm = pytest.importorskip("litellm")
    missing = litellm.validate_environment("cohere/command-r").get("missing_keys") or []
    if "COHERE_API_KEY" not in missing:  # older litellm releases do not know cohere's key
        pytest.skip("this litellm release does not report COHERE_API_KEY for cohere models")
    sleeps: list[float] = []
    llm = LiteLLM("cohere/command-r", retry=counting_retry(sleeps))
    with pytest.raises(AuthenticationError, match="COHERE_API_KEY"):
        asyncio_run(llm.acall(messages=USER))
    assert sleeps == []


def asyncio_run(awaitable):
    import asyncio

    return asyncio.run(awaitable)


def test_an_explicit_api_key_skips_the_environment_check(openai_server):
    openai_server.enqueue(ServerReply.ok("served"))
    llm = LiteLLM("openai/test-model", api_base=openai_server.base_url, api_key="sk-local")
    assert llm(messages=USER).content == "served"


def test_model_name_typo_is_one_configuration_error_with_a_suggestion(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-unused")  # the key check passes; the name fails
    sleeps: list[float] = []
    llm = LiteLLM("gpt-4o-mnii", retry=counting_retry(sleeps))
    with track_usage() as u, pytest.raises(LLMConfigurationError) as info:
        llm(messages=USER)
    assert "unknown model 'gpt-4o-mnii'" in str(info.value)
    assert "Did you mean 'gpt-4o-mini'?" in str(info.value)
    assert sleeps == [] and u.calls == 0


def test_litellm_missing_credentials_error_is_configuration_not_a_server_error():
    """Were the up-front check bypassed, litellm's own report (an HTTP-500-shaped error
    wrapping the SDK's client-setup error) still classifies as non-retryable."""
    litellm = get_litellm()
    with pytest.raises(Exception) as info:
        litellm.completion(
            model="openai/m", api_base="http://127.0.0.1:9/v1", messages=USER, max_retries=0
        )
    typed = classify_exception(info.value, model="openai/m")
    assert isinstance(typed, LLMConfigurationError) and not typed.transient


def test_litellm_info_logging_stays_out_of_the_output(openai_server, caplog):
    """With the application logging at INFO, a call adds no litellm INFO lines."""
    openai_server.enqueue(ServerReply.ok("quiet"))
    llm = LiteLLM("openai/test-model", api_base=openai_server.base_url, api_key="sk-local")
    with caplog.at_level(logging.INFO):
        assert llm(messages=USER).content == "quiet"
    litellm_records = [r for r in caplog.records if r.name in LITELLM_LOGGERS]
    assert litellm_records == []
    assert all(logging.getLogger(name).level == logging.WARNING for name in LITELLM_LOGGERS)
