"""Parameter lists declared once: `takes_parameters_of` (a function or method that takes
another function's parameters) and `constructor_signature` (a constructor's parameters
from its base's and an attrs class's fields).

A wrapper that only adds to what a function does (a failure policy around a rollout, a
trainer's executor and cache around `evaluate`) takes the same parameters; declaring them
once, on the function, keeps the two from drifting apart. The wrapper's
`inspect.signature` (what `help()` and editors show) is the function's, adjusted by
`rename`, `drop` and `extra`, and a call is checked against it before anything runs, so a
wrong argument is the caller's `TypeError`, as for the function itself. Likewise a
trainer whose constructor adds hyperparameters declares them as attrs fields (defaults and
validators included) instead of repeating its base's parameters around them.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import attrs

__all__ = ["Binder", "constructor_signature", "takes_parameters_of"]

R = TypeVar("R")


class Binder:
    """Binds a call to `signature` (a callable called `name` in errors): every
    parameter's value by name, defaults applied, in the signature's order.

    A well-formed call of a signature whose parameters are all positional-or-keyword or
    keyword-only is bound directly (a wrapper binds every call it gets, e.g. every
    rollout's); any other goes through `inspect.Signature.bind`, so a wrong argument
    raises its `TypeError`, naming `name` and the parameters.
    """

    def __init__(self, signature: inspect.Signature, name: str) -> None:
        self.signature = signature
        self.name = name
        parameters = list(signature.parameters.values())
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        self._simple = all(p.kind in kinds for p in parameters)
        self._positional = [p.name for p in parameters if p.kind is kinds[0]]
        self._names = frozenset(signature.parameters)
        self._defaults = {p.name: p.default for p in parameters if p.default is not p.empty}

    def __call__(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        if self._simple and len(args) <= len(self._positional) and kwargs.keys() <= self._names:
            given = dict(zip(self._positional, args))
            given.update(kwargs)
            if len(given) == len(args) + len(kwargs):  # no parameter given twice
                try:
                    return {
                        name: given[name] if name in given else self._defaults[name]
                        for name in self.signature.parameters
                    }
                except KeyError:  # a required parameter is missing: bind explains
                    pass
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}() {exc}; its parameters are {self.signature}") from None
        bound.apply_defaults()
        return dict(bound.arguments)


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
    annotation), each defaulting to None. The result keeps `body`'s name and docstring;
    an unknown or missing argument raises `TypeError` naming the callable (`Binder`).
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
        bind = Binder(signature, body.__qualname__)

        @functools.wraps(body)
        def call(*args: Any, **kwargs: Any) -> R:
            arguments = bind(args, kwargs)
            if method:
                return body(arguments.pop("self"), arguments)
            return body(arguments)

        call.__signature__ = signature.replace(return_annotation=returns)  # type: ignore[attr-defined]
        return call

    return decorate


def constructor_signature(
    base: Callable[..., Any],
    settings_class: type | None,
    positional: Sequence[str],
    *,
    leading: int = 2,
) -> inspect.Signature:
    """A constructor's signature built from `base` (an `__init__`) and an attrs class.

    The parameters are `base`'s first `leading` ones after `self`, then `positional` in
    that order (each a parameter of `base` or a field of `settings_class`), then,
    keyword-only, `base`'s other parameters and the other fields. A field's default and
    type are its parameter's default and annotation.
    """
    inherited = list(inspect.signature(base).parameters.values())[1:]
    by_name = {p.name: p for p in inherited}
    fields = {f.name: f for f in attrs.fields(settings_class)} if settings_class else {}

    def parameter(name: str, kind: Any) -> inspect.Parameter:
        if name in fields:
            field = fields[name]
            annotation = inspect.Parameter.empty if field.type is None else field.type
            return inspect.Parameter(name, kind, default=field.default, annotation=annotation)
        if name not in by_name:
            raise TypeError(f"{name!r} is neither a parameter of {base.__qualname__} nor a field")
        return by_name[name].replace(kind=kind)

    head = [p.name for p in inherited[:leading]]
    ordered = [*head, *positional]
    rest = [name for name in [*by_name, *fields] if name not in ordered]
    return inspect.Signature(
        [parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in ordered]
        + [parameter(name, inspect.Parameter.KEYWORD_ONLY) for name in rest]
    )
