"""Traced operators as bundled functions (``FunModule``), e.g. ``operators.add(x, y)``.

Each operator is the primitive of the same name (:mod:`opto.trace.primitives`, what
``x + y`` calls) offered with the ``FunModule``/``Module`` API; calling it runs the
primitive. Parameter names are the input keys of the output and the docstring its
description (``"[add] ..."``). ``call_llm`` is a regular bundle.
"""

from __future__ import annotations

from typing import Any

from opto.trace._node import OPERATORS, Node
from opto.trace.bundle import FunModule, bundle
from opto.trace.primitives import FUNCTIONS, Primitive

__all__ = [fun.__name__ for fun in FUNCTIONS] + ["call_default_llm", "call_llm", "identity"]


# One FunModule per primitive, named like it (``add``, ``list_append``...).
for _fun in FUNCTIONS:
    _primitive = OPERATORS[_fun.__name__]
    assert isinstance(_primitive, Primitive)
    globals()[_fun.__name__] = FunModule.of_primitive(_primitive)
del _fun, _primitive


def identity(x: Node[Any]) -> Node[Any]:
    """A traced copy of ``x`` (same as ``x.clone()``)."""
    return x.clone()


# ---------------------------------------------------------------------------- LLM


def _ask(llm: Any, system_prompt: Any, user_prompts: tuple[Any, ...], options: Any) -> Any:
    messages = []
    if system_prompt is not None:
        messages.append({"role": "system", "content": system_prompt})
    for prompt in user_prompts:
        messages.append({"role": "user", "content": prompt})
    response = llm(messages=messages, **options)
    return response.choices[0].message.content


@bundle(catch_execution_error=False)
def call_llm(llm: Any, system_prompt: Any, *user_prompts: Any, **kwargs: Any) -> Any:
    """Query the language model of system_prompt with user_prompts."""
    return _ask(llm, system_prompt, user_prompts, kwargs)


@bundle(catch_execution_error=False)
def call_default_llm(system_prompt: Any, *user_prompts: Any, **kwargs: Any) -> Any:
    """Query the default language model with system_prompt and user_prompts."""
    return _ask(_default_llm(), system_prompt, user_prompts, kwargs)


_call_given_llm = call_llm


def call_llm(*args: Any, **kwargs: Any) -> Any:  # type: ignore[no-redef]
    """Query an LLM: ``call_llm(llm, system_prompt, *user_prompts, **options)``, or
    ``call_llm(system_prompt, *user_prompts, **options)`` with the default ``LLM()``.

    The first form is chosen when the first argument is an LLM (not a str or None); it
    traces a ``call_llm`` operator, the second a ``call_default_llm`` one, each with its
    inputs named after what they are.
    """
    first = args[0] if args else kwargs.get("llm", kwargs.get("system_prompt"))
    value = first._data if isinstance(first, Node) else first
    if "llm" not in kwargs and (value is None or isinstance(value, str)):
        return call_default_llm(*args, **kwargs)
    return _call_given_llm(*args, **kwargs)


def _default_llm() -> Any:
    """`opto.utils.llm.LLM()`: the configured default LLM."""
    from opto.utils.llm import LLM

    return LLM()
