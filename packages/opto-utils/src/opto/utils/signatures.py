"""Parameter lists declared once, and calls bound to them fast.

Two entry points often take the same parameters: a decorator and the class it builds, a
method and the function it runs, a constructor and the settings object it fills.
:func:`takes_parameters_of` lets one of them take the declared parameters of the other, so
names, order, defaults and annotations live in one place, and ``help`` and
:func:`inspect.signature` still show them all.

Binding a call to parameters (what ``inspect.Signature.bind`` does) is on the hot path of
every traced call, so it is split in two: a :class:`Plan` (the parameter layout, computed
once per function by :func:`plan_of`) and :func:`bind` (one call's arguments, with the
``TypeError`` Python would raise for a wrong call). :func:`bind_arguments` gives the same
binding as a dict by name.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

__all__ = ["Plan", "bind", "bind_arguments", "plan_of", "takes_parameters_of"]

R = TypeVar("R")
_Parameter = inspect.Parameter


class Plan:
    """Precomputed parameter layout of a function: what :func:`bind` needs per call.

    ``pos`` are the positional parameters (the first ``n_posonly`` positional-only),
    ``kwonly`` the keyword-only ones, ``var_pos``/``var_kw`` the names of ``*args`` and
    ``**kwargs`` (None when absent), ``defaults`` the default values by name; ``simple``
    when there are positional parameters only.
    """

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
        """The plan of ``fun``'s :func:`inspect.signature`; None when it cannot be read."""
        try:
            return cls(inspect.signature(fun))
        except (TypeError, ValueError):
            return None

    def __str__(self) -> str:
        """The parameters as in a ``def`` (without annotations), e.g. ``(a, b=2, *, c)``."""

        def named(name: str) -> str:
            return f"{name}={self.defaults[name]!r}" if name in self.defaults else name

        parts = [named(name) for name in self.pos]
        if self.n_posonly:
            parts.insert(self.n_posonly, "/")
        if self.var_pos is not None:
            parts.append(f"*{self.var_pos}")
        elif self.kwonly:
            parts.append("*")
        parts.extend(named(name) for name in self.kwonly)
        if self.var_kw is not None:
            parts.append(f"**{self.var_kw}")
        return f"({', '.join(parts)})"


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

    Keys are parameter names, in the plan's order, defaults applied; extra positional
    arguments get ``"<var_pos>_<i>"`` and extra keywords (for ``**kwargs``) their own
    names. The first ``n_call_pos`` values are passed positionally. A wrong call raises the
    TypeError Python would, naming ``qualname``.
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
            if len(kw) == 1:
                raise TypeError(
                    f"{qualname}() got an unexpected keyword argument {next(iter(kw))!r}"
                )
            unknown = ", ".join(repr(name) for name in sorted(kw))
            raise TypeError(f"{qualname}() got unexpected keyword arguments {unknown}")
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


def bind_arguments(
    plan: Plan, qualname: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """The call's arguments by parameter name (:func:`bind` as a dict).

    A wrong call raises :func:`bind`'s TypeError followed by the parameters
    (``...; its parameters are (a, b=2, *, c)``), for callables whose parameters are
    not spelled out in their own ``def``.
    """
    try:
        keys, values, _ = bind(plan, qualname, args, dict(kwargs))
    except TypeError as exc:
        raise TypeError(f"{exc}; its parameters are {plan}") from None
    return dict(zip(keys, values))


def takes_parameters_of(
    source: Callable[..., Any],
    *,
    rename: Mapping[str, str] | None = None,
    drop: Iterable[str] = (),
    extra: Mapping[str, Any] | None = None,
    keyword_only: bool = False,
) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Declare that the decorated function takes ``source``'s parameters.

    ``source``'s parameters (by :func:`inspect.signature`; for a class, its constructor's)
    are adjusted: ``rename`` maps a parameter's name to the one it has here, ``drop``
    leaves parameters out, ``extra`` appends keyword-only parameters (name -> annotation)
    defaulting to None. How the decorated function receives them is read from its own
    parameters; those it names itself come first (e.g. ``self``):

    - ``f(..., *args, **kwargs)`` *forwards* the call (typically to ``source``, an
      options class, which checks it). ``f`` is returned itself, no wrapper, with a
      ``__signature__`` in which ``source``'s parameters replace ``*args, **kwargs``
      (``f``'s own keyword-only parameters stay, last). With ``keyword_only``, ``f``
      keeps its ``*args``/``**kwargs`` for other arguments and ``source``'s parameters
      are added as keyword-only ones: ``f`` picks them out of ``kwargs``.
    - ``f(..., arguments)`` is a *body*: the result is a wrapper (``f``'s name and
      docstring) that binds each call with :func:`bind_arguments`, so a wrong argument is
      the caller's TypeError before anything runs, and calls
      ``f(..., {name: value, ...})`` with every parameter of ``source`` (defaults
      applied, in order).

    Either way ``help`` and :func:`inspect.signature` show every parameter, with ``f``'s
    return annotation.
    """
    names = dict(rename or {})
    dropped = set(drop)
    taken = [
        p.replace(name=names.get(p.name, p.name))
        for p in inspect.signature(source).parameters.values()
        if p.name not in dropped
    ]
    for name, annotation in (extra or {}).items():
        taken.append(_Parameter(name, _Parameter.KEYWORD_ONLY, default=None, annotation=annotation))

    def decorate(f: Callable[..., R]) -> Callable[..., R]:
        declared = inspect.signature(f)
        own = list(declared.parameters.values())
        returns = declared.return_annotation
        if own and own[-1].name == "arguments" and own[-1].kind is _Parameter.POSITIONAL_OR_KEYWORD:
            leading = own[:-1]
            signature = inspect.Signature([*leading, *taken], return_annotation=returns)
            return _body(f, signature, [p.name for p in leading])
        forwarded = _forwarded(f, own, taken, keyword_only)
        f.__signature__ = forwarded.replace(return_annotation=returns)  # type: ignore[attr-defined]
        return f

    return decorate


def _forwarded(
    f: Callable[..., Any],
    own: list[inspect.Parameter],
    taken: list[inspect.Parameter],
    keyword_only: bool,
) -> inspect.Signature:
    """The parameters of ``f(..., *args, **kwargs)`` forwarding ``taken`` (see
    takes_parameters_of)."""
    variadic = [p for p in own if p.kind in (_Parameter.VAR_POSITIONAL, _Parameter.VAR_KEYWORD)]
    if not variadic:
        raise TypeError(
            f"takes_parameters_of decorates f(..., *args, **kwargs) or f(..., arguments); "
            f"{f.__qualname__}{inspect.signature(f)} is neither"
        )
    if keyword_only:
        parameters = [*own, *(p.replace(kind=_Parameter.KEYWORD_ONLY) for p in taken)]
    else:
        parameters = [p for p in own if p not in variadic] + taken
    # kinds in Python's order (stable: each kind keeps its own order)
    return inspect.Signature(sorted(parameters, key=lambda p: p.kind))


def _body(
    f: Callable[..., R], signature: inspect.Signature, leading: list[str]
) -> Callable[..., R]:
    """A wrapper with ``signature`` calling ``f(*leading, arguments)`` (see
    takes_parameters_of)."""
    plan = Plan(signature)
    qualname = f.__qualname__

    @functools.wraps(f)
    def call(*args: Any, **kwargs: Any) -> R:
        arguments = bind_arguments(plan, qualname, args, kwargs)
        if leading:
            first = [arguments.pop(name) for name in leading]
            return f(*first, arguments)
        return f(arguments)

    call.__signature__ = signature  # type: ignore[attr-defined]
    return call
