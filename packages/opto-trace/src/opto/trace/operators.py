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

__all__ = [fun.__name__ for fun in FUNCTIONS] + ["call_llm", "identity"]


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


@bundle(catch_execution_error=False)
def call_llm(llm: Any, system_prompt: Any, *user_prompts: Any, **kwargs: Any) -> Any:
    """Query the language model of system_prompt with user_prompts."""
    messages = []
    if system_prompt is not None:
        messages.append({"role": "system", "content": system_prompt})
    for prompt in user_prompts:
        messages.append({"role": "user", "content": prompt})
    response = llm(messages=messages, **kwargs)
    return response.choices[0].message.content
