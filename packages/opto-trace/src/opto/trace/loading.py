"""Checks of parameter values read from a file, before they reach a module.

A state file (``Module.save``, a trainer checkpoint, run storage) is untrusted input.
:func:`check_loaded_state` returns the values to load, or raises naming the parameter:

- a trainable code parameter whose text differs from the source that defined it is
  refused unless the caller trusts the file (``trust_code=True``); loaded code always
  passes the same checks as an LLM proposal (:func:`opto.trace.code_policy.check_code`,
  with the bundle's policy);
- a value keeps its parameter's type: an int stays an int (``5.0`` becomes ``5``, ``"5"``
  is refused), a tuple read back as a JSON list becomes a tuple again.

See ``docs/security.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from opto.trace.code_policy import CodePolicyError, UntrustedCodeError, check_code, code_spec
from opto.utils.errors import OptoError

__all__ = ["LoadedValueError", "check_loaded_state"]


class LoadedValueError(OptoError, ValueError):
    """A value read from a file does not fit its parameter (wrong type, bad code)."""


def _kind(value: Any) -> str:
    return type(value).__name__


def _typed(key: str, current: Any, loaded: Any, source: str) -> Any:
    """``loaded`` as a value of ``current``'s type, or LoadedValueError."""
    if current is None:
        return loaded
    kind = type(current)
    if kind is bool or kind is str or kind is dict or kind is list:
        ok = type(loaded) is kind
    elif kind is int:
        if type(loaded) is float and math.isfinite(loaded) and loaded.is_integer():
            return int(loaded)
        ok = type(loaded) is int
    elif kind is float:
        if type(loaded) is int:
            return float(loaded)
        ok = type(loaded) is float
    elif kind is tuple:
        if type(loaded) is list:
            return tuple(loaded)
        ok = type(loaded) is tuple
    else:
        ok = isinstance(loaded, kind)
    if not ok:
        raise LoadedValueError(
            f"{source}: parameter {key!r} holds a {_kind(current)}, but the file has a "
            f"{_kind(loaded)} ({str(loaded)[:60]!r}); a loaded value must keep its "
            "parameter's type. Check that the file belongs to this model."
        )
    return loaded


def _code(key: str, spec: Any, loaded: Any, trust_code: bool, source: str) -> str:
    if not isinstance(loaded, str):
        raise LoadedValueError(
            f"{source}: parameter {key!r} is trainable code, but the file has a "
            f"{_kind(loaded)}, not the source text of a function."
        )
    if loaded != spec.original and not trust_code:
        raise UntrustedCodeError(
            f"{source}: parameter {key!r} holds code that differs from the source that "
            "defined it. Code read from a file runs only when you trust the file: load it "
            "with trust_code=True (it still passes the same checks as an LLM proposal). "
            "See docs/security.md."
        )
    try:
        check_code(loaded, original=spec.original, policy=spec.policy)
    except CodePolicyError as error:
        raise CodePolicyError(
            f"{source}: the code of parameter {key!r} fails the code checks: {error}"
        ) from None
    return loaded


def check_loaded_state(
    parameters: Mapping[str, Any],
    state: Mapping[str, Any],
    trust_code: bool = False,
    source: str = "the loaded state",
) -> dict[str, Any]:
    """The values of ``state`` to load into ``parameters`` (``{path: ParameterNode}``).

    Keys without a parameter are passed through (the loader reports them).

    Raises:
        UntrustedCodeError: code differs from its defining source and ``trust_code`` is
            False.
        CodePolicyError: loaded code fails the checks an LLM proposal must pass.
        LoadedValueError: a value does not have its parameter's type.
    """
    if not isinstance(state, Mapping):
        raise LoadedValueError(
            f"{source}: the parameter values must be a mapping of path to value, got "
            f"a {_kind(state)}."
        )
    checked: dict[str, Any] = {}
    for key, value in state.items():
        parameter = parameters.get(key)
        if parameter is None:
            checked[key] = value
            continue
        spec = code_spec(parameter)
        if spec is not None:
            checked[key] = _code(key, spec, value, trust_code, source)
        else:
            checked[key] = _typed(key, parameter._data, value, source)
    return checked
