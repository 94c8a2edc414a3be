"""opto.utils.llm — one LLM protocol, several backends.

`llm(messages=[...], **options) -> ChatResponse` (OpenAI-shaped: `.choices[0].message.content`,
plus `.usage`) and `await llm.acall(...)`. Backends: `LiteLLM` (any provider), `LocalLLM` (the
embedded offline model), `CustomLLM` (any OpenAI-compatible client), `AbstractModel` (base
class); `LLM()` picks one, or returns the default set once with `configure(llm=...)` (or
for a block with `using(llm)`). `embed(texts, model=None)` embeds texts (litellm's
embedding call, or an offline character n-gram vectorizer). `inspect_history(n)` shows the last calls when recording is
on (`enable_history()`, `OPTO_LLM_HISTORY`, or `history=N` for one LLM). Names are imported on first access so that `import
opto.utils.llm` stays cheap; litellm itself is only imported on the first LiteLLM call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opto.utils.lazy import lazy_exports
from opto.utils.llm import errors as _errors

if TYPE_CHECKING:
    from opto.utils.llm.base import DEFAULT_TIMEOUT, AbstractModel
    from opto.utils.llm.custom import CustomLLM
    from opto.utils.llm.defaults import configure, default_llm, using
    from opto.utils.llm.embeddings import LiteLLMEmbedder, NgramEmbedder, embed, get_embedder
    from opto.utils.llm.errors import (
        AuthenticationError,
        BadRequestError,
        ContextWindowExceededError,
        InvalidMessageError,
        LLMConfigurationError,
        LLMConnectionError,
        LLMConnectionRefusedError,
        LLMError,
        LLMTimeoutError,
        MalformedResponseError,
        RateLimitError,
        ServerError,
    )
    from opto.utils.llm.factory import LLM, LLMFactory, Profile
    from opto.utils.llm.history import (
        CallRecord,
        History,
        disable_history,
        enable_history,
        inspect_history,
    )
    from opto.utils.llm.litellm_backend import LiteLLM
    from opto.utils.llm.local import LocalLLM
    from opto.utils.llm.retry import RetryPolicy
    from opto.utils.llm.types import ChatModel, ChatResponse, Choice, Message, Usage
    from opto.utils.testing import DummyLLM

# The exception classes of `errors` (its helper functions stay in that module).
_ERROR_NAMES = [name for name in _errors.__all__ if isinstance(getattr(_errors, name), type)]

_EXPORTS = {
    "AbstractModel": "opto.utils.llm.base",
    "DEFAULT_TIMEOUT": "opto.utils.llm.base",
    "CustomLLM": "opto.utils.llm.custom",
    "LiteLLM": "opto.utils.llm.litellm_backend",
    "LocalLLM": "opto.utils.llm.local",
    "LLM": "opto.utils.llm.factory",
    "LLMFactory": "opto.utils.llm.factory",
    "Profile": "opto.utils.llm.factory",
    "RetryPolicy": "opto.utils.llm.retry",
    "ChatModel": "opto.utils.llm.types",
    "ChatResponse": "opto.utils.llm.types",
    "Choice": "opto.utils.llm.types",
    "Message": "opto.utils.llm.types",
    "Usage": "opto.utils.llm.types",
    "DummyLLM": "opto.utils.testing",
    "configure": "opto.utils.llm.defaults",
    "default_llm": "opto.utils.llm.defaults",
    "using": "opto.utils.llm.defaults",
    "LiteLLMEmbedder": "opto.utils.llm.embeddings",
    "NgramEmbedder": "opto.utils.llm.embeddings",
    "embed": "opto.utils.llm.embeddings",
    "get_embedder": "opto.utils.llm.embeddings",
    "CallRecord": "opto.utils.llm.history",
    "History": "opto.utils.llm.history",
    "disable_history": "opto.utils.llm.history",
    "enable_history": "opto.utils.llm.history",
    "inspect_history": "opto.utils.llm.history",
    **dict.fromkeys(_ERROR_NAMES, "opto.utils.llm.errors"),
}

__all__ = [
    "DEFAULT_TIMEOUT",
    "LLM",
    "AbstractModel",
    "AuthenticationError",
    "BadRequestError",
    "CallRecord",
    "ChatModel",
    "ChatResponse",
    "Choice",
    "ContextWindowExceededError",
    "CustomLLM",
    "DummyLLM",
    "History",
    "InvalidMessageError",
    "LLMConfigurationError",
    "LLMConnectionError",
    "LLMConnectionRefusedError",
    "LLMError",
    "LLMFactory",
    "LLMTimeoutError",
    "LiteLLM",
    "LiteLLMEmbedder",
    "LocalLLM",
    "MalformedResponseError",
    "Message",
    "NgramEmbedder",
    "Profile",
    "RateLimitError",
    "RetryPolicy",
    "ServerError",
    "Usage",
    "configure",
    "default_llm",
    "disable_history",
    "embed",
    "enable_history",
    "get_embedder",
    "inspect_history",
    "using",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
