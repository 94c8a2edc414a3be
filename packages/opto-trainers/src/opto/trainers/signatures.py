"""`takes_parameters_of`: a function or method that takes another function's parameters.

A wrapper that only adds to what a function does (a failure policy around a rollout, a
trainer's executor and cache around `evaluate`) takes the same parameters; declaring them
once, on the function, keeps the two from drifting apart. The wrapper's
`inspect.signature` (what `help()` and editors show) is the function's, adjusted by
`rename`, `drop` and `extra`, and a call is checked against it before anything runs, so a
wrong argument is the caller's `TypeError`, as for the function itself.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

__all__ = ["takes_parameters_of"]

R = TypeVar("R")


def takes_parameters_of(
    source: Callable[..., Any],
    *,
    method: bool = False,
    rename: Mapping[str, str] | None = None,
    drop: Iterable[str] = (),
    extra: Mapping[str, str] | None = None,
) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Turn `body(arguments)` (with `method`, `body(self, arguments)`) into a callable
    with `source`'s parameters.

    `arguments` is a dict of every parameter's value by name (defaults applied, in the
    signature's order). `rename` maps a parameter of `source` to the name it has here,
    `drop` leaves parameters out, and `extra` appends keyword-only parameters (name ->
    annotation), each defaulting to None. The
    result keeps `body`'s name and docstring; an unknown or missing argument raises
    `TypeError` naming the callable.
    """
    names = dict(rename or {})
    dropped = set(drop)
    parameters = [
        p.replace(name=names.get(p.name, p.name))
        for p in inspect.signature(source).parameters.values()
        if p.name not in dropped
    ]
    if method:
        parameters.insert(0, inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD))
    for name, annotation in (extra or {}).items():
        parameters.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation
            )
        )
    signature = inspect.Signature(parameters)

    def decorate(body: Callable[..., R]) -> Callable[..., R]:
        returns = inspect.signature(body).return_annotation

        @functools.wraps(body)
        def call(*args: Any, **kwargs: Any) -> R:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{body.__qualname__}() {exc}") from None
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            if method:
                return body(arguments.pop("self"), arguments)
            return body(arguments)

        call.__signature__ = signature.replace(return_annotation=returns)  # type: ignore[attr-defined]
        return call

    return decorate
