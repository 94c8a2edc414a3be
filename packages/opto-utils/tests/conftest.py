"""Fixtures shared by the opto-utils tests (the reusable code lives in opto.utils.testing)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from opto.utils.testing import OpenAIServer

# The CI machine is shared and may be heavily loaded: a property's examples must not fail on
# wall-clock time (Hypothesis's per-example deadline and its "too slow" health check).
settings.register_profile("opto", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("opto")

# Variables that steer LLM selection or caching; tests start from a clean slate.
LLM_ENV = (
    "OPTO_LLM_MODEL",
    "OPTO_LLM_CACHE",
    "TRACE_LITELLM_MODEL",
    "DEFAULT_LITELLM_MODEL",
    "TRACE_DEFAULT_LLM_BACKEND",
    "TRACE_CUSTOMLLM_MODEL",
    "TRACE_CUSTOMLLM_URL",
    "TRACE_CUSTOMLLM_API_KEY",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "MISTRAL_API_KEY",
    "GROQ_API_KEY",
    "DEEPSEEK_API_KEY",
    "OPENROUTER_API_KEY",
    "AZURE_TOKEN_PROVIDER_SCOPE",
    "OPTO_LLM_HISTORY",
    "LITELLM_LOG",
)


def pytest_configure(config: pytest.Config) -> None:
    """litellm must never try the network (its price-map fetch), whoever imports it first."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(autouse=True)
def clean_llm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No LLM configuration leaks in from the developer's shell."""
    for name in LLM_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    """A running local OpenAI-compatible server (127.0.0.1, random port)."""
    with OpenAIServer() as server:
        yield server
