"""A search trainer's constructor parameters, declared once: `constructor_signature` builds
them from its base's parameters and the fields of an attrs settings class (defaults and
validators included) instead of repeating the base's parameters around them. Calls are
bound to it with `opto.utils.signatures.bind_arguments`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import attrs

__all__ = ["constructor_signature"]


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
