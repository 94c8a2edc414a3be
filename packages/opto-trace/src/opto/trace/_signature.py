"""Binding call arguments to a function's parameters without ``inspect.Signature.bind``.

A :class:`Plan` is computed once per function; :func:`bind` maps one call's arguments to
``(input keys, values, number of positional call arguments)``. Shared by the primitive
operators and bundle. :func:`takes_parameters_of` gives a function the declared parameters
of another (one definition of a parameter list that two entry points accept).
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

__all__ = ["Plan", "bind", "plan_of", "takes_parameters_of"]

P = ParamSpec("P")
R = TypeVar("R")


class Plan:
    """Precomputed parameter layout of a function (replaces per-call Signature.bind)."""

    __slots__ = ("defaults", "kwonly", "n_posonly", "pos", "simple", "var_kw", "var_pos")

    def __init__(self, sig: inspect.Signature) -> None:
        pos: list[str] = []
        kwonly: list[str] = []
        defaults: dict[str, Any] = {}
        self.var_pos: str | None = None
        self.var_kw: str | None = None
        self.n_posonly = 0
        for p in sig.parameters.values():
            if p.kind is p.POSITIONAL_ONLY:
                self.n_posonly += 1
                pos.append(p.name)
            elif p.kind is p.POSITIONAL_OR_KEYWORD:
                pos.append(p.name)
            elif p.kind is p.VAR_POSITIONAL:
                self.var_pos = p.name
            elif p.kind is p.KEYWORD_ONLY:
                kwonly.append(p.name)
            else:
                self.var_kw = p.name
            if p.default is not p.empty:
                defaults[p.name] = p.default
        self.pos = tuple(pos)
        self.kwonly = tuple(kwonly)
        self.defaults = defaults
        self.simple = not kwonly and self.var_pos is None and self.var_kw is None

    @classmethod
    def of(cls, fun: Any) -> Plan | None:
        try:
            return cls(inspect.signature(fun))
        except (TypeError, ValueError):
            return None


def _plan_from_code(fun: types.FunctionType) -> Plan:
    """Fast :class:`Plan` for plain functions straight from their code object."""
    code = fun.__code__
    plan = Plan.__new__(Plan)
    names = code.co_varnames
    n_pos = code.co_argcount
    n_kwonly = code.co_kwonlyargcount
    plan.pos = names[:n_pos]
    plan.n_posonly = code.co_posonlyargcount
    plan.kwonly = names[n_pos : n_pos + n_kwonly]
    idx = n_pos + n_kwonly
    plan.var_pos = None
    plan.var_kw = None
    if code.co_flags & inspect.CO_VARARGS:
        plan.var_pos = names[idx]
        idx += 1
    if code.co_flags & inspect.CO_VARKEYWORDS:
        plan.var_kw = names[idx]
    defaults: dict[str, Any] = {}
    if fun.__defaults__:
        for name, value in zip(plan.pos[n_pos - len(fun.__defaults__) :], fun.__defaults__):
            defaults[name] = value
    if fun.__kwdefaults__:
        defaults.update(fun.__kwdefaults__)
    plan.defaults = defaults
    plan.simple = not plan.kwonly and plan.var_pos is None and plan.var_kw is None
    return plan


def plan_of(fun: Any) -> Plan | None:
    """The :class:`Plan` of ``fun``; None when its signature cannot be read (some builtins).

    A function declaring its signature (``__signature__``, as :func:`inspect.signature`
    reports it) binds by that signature; other plain functions by their code object.
    """
    if isinstance(fun, types.FunctionType) and "__signature__" not in fun.__dict__:
        return _plan_from_code(fun)
    return Plan.of(fun)


def bind(
    plan: Plan, qualname: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[list[str], list[Any], int]:
    """``(keys, values, n_call_pos)`` of one call, like Python would bind it.

    Keys are parameter names; extra positional arguments get ``"<var_pos>_<i>"``. The first
    ``n_call_pos`` values are passed positionally. Raises the TypeError Python would.
    """
    pos = plan.pos
    n_named = len(pos)
    n_args = len(args)
    if n_args > n_named and plan.var_pos is None:
        raise TypeError(
            f"{qualname}() takes {n_named} positional arguments but {n_args} were given"
        )
    kw = dict(kwargs)
    keys: list[str] = []
    values: list[Any] = []
    for i, name in enumerate(pos):
        if i < n_args:
            if name in kw and i >= plan.n_posonly:
                raise TypeError(f"{qualname}() got multiple values for argument {name!r}")
            values.append(args[i])
        else:  # a positional-only parameter cannot be passed by keyword
            given = kw if i >= plan.n_posonly else _NO_KEYWORDS
            values.append(_keyword_or_default(plan, qualname, given, name, "argument"))
        keys.append(name)
    for j, value in enumerate(args[n_named:]):
        keys.append(f"{plan.var_pos}_{j}")
        values.append(value)
    n_call_pos = len(values)
    for name in plan.kwonly:
        values.append(_keyword_or_default(plan, qualname, kw, name, "keyword argument"))
        keys.append(name)
    if kw:
        if plan.var_kw is None:
            raise TypeError(f"{qualname}() got unexpected keyword arguments: {sorted(kw)}")
        keys.extend(kw)
        values.extend(kw.values())
    return keys, values, n_call_pos


_NO_KEYWORDS: dict[str, Any] = {}


def _keyword_or_default(plan: Plan, qualname: str, kw: dict[str, Any], name: str, kind: str) -> Any:
    """The value of parameter ``name`` not passed positionally: taken out of ``kw``, else
    its default; a TypeError naming the ``kind`` of parameter when it has neither."""
    if name in kw:
        return kw.pop(name)
    if name in plan.defaults:
        return plan.defaults[name]
    raise TypeError(f"{qualname}() missing required {kind}: {name!r}")


def takes_parameters_of(
    source: Callable[P, Any],
) -> Callable[[Callable[..., R]], Callable[P, R]]:
    """Declare that the decorated ``f(*args, **kwargs)`` takes the parameters of ``source``.

    ``f`` passes its arguments on to ``source`` (an options class, typically), which defines
    the names, order, defaults and types in one place and raises the TypeError Python would
    for a wrong call. ``f.__signature__`` becomes ``source``'s (with ``f``'s return
    annotation), so ``help`` and :func:`inspect.signature` show the real parameters, and
    type checkers see them through the ParamSpec. ``f`` itself is returned (no wrapper).
    """

    def declare(f: Callable[..., R]) -> Callable[P, R]:
        returns = inspect.signature(f).return_annotation
        f.__signature__ = inspect.signature(source).replace(  # type: ignore[attr-defined]
            return_annotation=returns
        )
        return f

    return declare
