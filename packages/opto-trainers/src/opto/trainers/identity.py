"""Stable identities of judges, for the evaluation cache (`opto.trainers.evalcache`).

A cached evaluation may only answer a later one made by the same judge with the same
configuration. `describe(value)` turns a guide's configuration into plain JSON data that
is equal across processes exactly when the configuration is, or raises `Unidentifiable`
when it cannot tell (then the guide's evaluations are not cached). It knows:

* JSON data (strings, numbers, booleans, None, lists, tuples, dicts with string keys)
  and sets;
* guides (their `cache_identity()`), opto LLMs (class, model name and default options;
  one without a model name is unidentifiable), classes, enums, attrs instances and
  dataclasses (their fields), `functools.partial`;
* plain functions and lambdas: module, qualified name and a digest of their bytecode
  and constants, plus the values their closure captured and their defaults. Globals a
  function reads are not part of it: a function whose behaviour depends on a global
  that changes between runs needs its own `cache_identity()` on the guide.

Anything else (an open file, a client object, a numpy array...) is unidentifiable.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import math
import numbers
import types
from collections.abc import Mapping
from typing import Any

import attrs
from opto.utils.errors import OptoError

__all__ = ["Unidentifiable", "describe", "qualified_name"]

_MAX_DEPTH = 20


class Unidentifiable(OptoError, ValueError):
    """A value has no stable identity (see `describe`); the message names it."""


def qualified_name(kind: type | types.FunctionType | types.BuiltinFunctionType) -> str:
    """`module.QualifiedName` of a class or function."""
    return f"{kind.__module__}.{kind.__qualname__}"


def describe(value: Any, _depth: int = 0) -> Any:
    """Plain JSON data identifying `value` (see the module docstring), or `Unidentifiable`."""
    if _depth > _MAX_DEPTH:
        raise Unidentifiable("the value nests too deeply (or contains itself)")
    depth = _depth + 1
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, enum.Enum):
        return {"enum": qualified_name(type(value)), "name": value.name}
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else {"float": repr(number)}
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise Unidentifiable(f"a dict with non-string keys ({list(value)[:3]!r:.60})")
        return {"dict": {k: describe(v, depth) for k, v in sorted(value.items())}}
    if isinstance(value, (list, tuple)):
        return [describe(v, depth) for v in value]
    if isinstance(value, (set, frozenset)):
        return {"set": sorted((describe(v, depth) for v in value), key=repr)}
    if isinstance(value, type):
        return {"class": qualified_name(value)}
    return _describe_object(value, depth)


def _describe_object(value: Any, depth: int) -> Any:
    cache_identity = getattr(value, "cache_identity", None)
    if callable(cache_identity) and not isinstance(value, type):
        identity = cache_identity()
        if identity is None:
            raise Unidentifiable(f"{type(value).__name__}.cache_identity() returned None")
        return {"object": qualified_name(type(value)), "identity": describe(identity, depth)}
    from opto.utils.llm.base import AbstractModel

    if isinstance(value, AbstractModel):
        return _describe_llm(value, depth)
    if isinstance(value, functools.partial):
        return {
            "partial": describe(value.func, depth),
            "args": describe(value.args, depth),
            "keywords": describe(value.keywords, depth),
        }
    if isinstance(value, types.MethodType):
        return {"method": describe(value.__func__, depth), "self": describe(value.__self__, depth)}
    if isinstance(value, types.FunctionType):
        return _describe_function(value, depth)
    if isinstance(value, types.BuiltinFunctionType):
        return {"builtin": f"{value.__module__}.{value.__qualname__}"}
    if attrs.has(type(value)):
        fields = {f.name: getattr(value, f.name) for f in attrs.fields(type(value))}
        return {"object": qualified_name(type(value)), "fields": describe(fields, depth)}
    if dataclasses.is_dataclass(value):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return {"object": qualified_name(type(value)), "fields": describe(fields, depth)}
    raise Unidentifiable(
        f"a {qualified_name(type(value))} has no stable identity; give the guide a "
        "cache_identity() method"
    )


def _describe_llm(llm: Any, depth: int) -> Any:
    """An opto LLM: its class, model name and default call options."""
    if not llm.model_name:
        raise Unidentifiable(f"the LLM {type(llm).__name__} has no model name")
    return {
        "llm": qualified_name(type(llm)),
        "model": str(llm.model_name),
        "options": describe(dict(llm.options or {}), depth),
    }


def _code_digest(code: types.CodeType) -> str:
    """A digest of a function's bytecode, names and constants (nested code included)."""
    digest = hashlib.sha256(code.co_code)
    digest.update(repr((code.co_names, code.co_varnames, code.co_freevars)).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            digest.update(_code_digest(const).encode())
        else:
            digest.update(repr(const).encode())
    return digest.hexdigest()


def _describe_function(function: types.FunctionType, depth: int) -> Any:
    closure = {}
    for name, cell in zip(function.__code__.co_freevars, function.__closure__ or ()):
        try:
            closure[name] = cell.cell_contents
        except ValueError:  # an empty cell (a name assigned after the function was made)
            closure[name] = None
    return {
        "function": qualified_name(function),
        "code": _code_digest(function.__code__),
        "closure": describe(closure, depth),
        "defaults": describe(function.__defaults__ or (), depth),
        "kwdefaults": describe(function.__kwdefaults__ or {}, depth),
    }
