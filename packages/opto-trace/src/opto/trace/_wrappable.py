"""What ``bundle`` can wrap: checked once, when the function is decorated."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from opto.trace.nodes import Node


def check_wrappable(fun: Callable[..., Any]) -> None:
    """Raise TypeError, naming the problem and the fix, when ``fun`` cannot be bundled.

    Generator functions (sync or async) are rejected: their body runs only while the caller
    iterates the result, after the traced call has returned, so the nodes it reads, the
    errors it raises and the values it yields would all escape the trace.
    """
    if not callable(fun) or isinstance(fun, Node):
        raise TypeError(
            f"bundle can only wrap a callable (a function, method, lambda or callable "
            f"object), got {type(fun).__name__}."
        )
    if isinstance(fun, (staticmethod, classmethod)):
        raise TypeError("Apply @bundle() below @staticmethod/@classmethod, not above.")
    target = fun if inspect.isroutine(fun) or isinstance(fun, type) else type(fun).__call__
    if inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target):
        name = (getattr(fun, "__qualname__", None) or type(fun).__name__).replace("<locals>.", "")
        kind = "async generator" if inspect.isasyncgenfunction(target) else "generator"
        raise TypeError(
            f"bundle cannot trace the {kind} function {name!r}: its body runs only when the "
            "result is iterated, after the traced call has returned, so its reads, errors "
            "and yielded values would escape the trace. Bundle a function that collects "
            "the items and returns them instead, e.g. `return list(...)`."
        )
