"""The default LLM: set once with `configure(llm=...)`, or for a block with `using(llm)`.

`LLM()` called without a model, backend or profile returns the default when one is set, so
everything that builds its LLM with `LLM()` (optimizers, judges, `train()`) uses it:

    import opto.utils.llm as llm

    llm.configure(llm="gpt-4o-mini")          # process-wide, from any thread
    with llm.using(llm.LLM("ollama/llama3")):  # this context (thread, task) only
        ...

`using` is scoped by a context variable: it applies to the current thread or asyncio task
and to the work it hands to threads that propagate the context, and is undone on exit.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator
from typing import Any

from opto.utils.llm.errors import LLMConfigurationError

__all__ = ["configure", "default_llm", "using"]

_LOCK = threading.Lock()
_GLOBAL: Any = None
_SCOPED: contextvars.ContextVar[Any] = contextvars.ContextVar("opto_default_llm", default=None)


def _as_llm(llm: Any) -> Any:
    """A model id becomes `LLM(model)`; an LLM object (anything callable) is kept."""
    if isinstance(llm, str):
        from opto.utils.llm.factory import LLM

        return LLM(llm)
    if not callable(llm):
        msg = (
            f"the default LLM must be an opto LLM (e.g. LLM('gpt-4o-mini')) or a model id, "
            f"not {type(llm).__name__}"
        )
        raise LLMConfigurationError(msg)
    return llm


def configure(*, llm: Any) -> Any:
    """Set the process-wide default LLM and return it.

    `llm` is an LLM object (`LLM(...)`, `LiteLLM(...)`, `CustomLLM(...)`, a `DummyLLM`…)
    or a model id such as `"gpt-4o-mini"` (built with `LLM(model)`); None clears it, so
    `LLM()` goes back to the environment. A `using(...)` block in effect still wins.
    """
    global _GLOBAL
    value = None if llm is None else _as_llm(llm)
    with _LOCK:
        _GLOBAL = value
    return value


@contextlib.contextmanager
def using(llm: Any) -> Iterator[Any]:
    """Make `llm` (an LLM object or a model id) the default LLM inside the `with` block,
    for the current context only; yields the LLM."""
    value = _as_llm(llm)
    token = _SCOPED.set(value)
    try:
        yield value
    finally:
        _SCOPED.reset(token)


def default_llm() -> Any:
    """The default LLM in effect: the innermost `using(...)`, else the one `configure`
    set, else None (then `LLM()` resolves one from the environment)."""
    scoped = _SCOPED.get()
    return scoped if scoped is not None else _GLOBAL
