"""Defining trainable functions from code text, optionally under RestrictedPython.

:func:`define_function` runs a code text (the ``__code`` of a trainable bundle) and returns
the function it defines. Without a restricting policy the code runs as ordinary Python in
the defining module's globals. Under ``CodePolicy(restricted=True)`` it is compiled by
RestrictedPython (``opto-trace[sandbox]``) and runs with:

- no access to attributes starting with ``_`` or to frame, generator and code internals,
  neither by syntax nor by ``getattr``/``hasattr`` with a string;
- no builtins mapping (``__builtins__``, ``vars``, ``globals``, ``locals``, ``open``,
  ``eval``, ``exec``, ``compile``, ``__import__`` are absent), and ``str.format`` disabled;
- imports, module globals and attribute results that are modules limited to the policy's
  allowlist, and subscripts with ``__``-keys refused;
- attribute writes refused on modules, classes and functions.

This is a guard against unwanted code in-process, not a security boundary: see
``docs/security.md`` (run untrusted code in a separate process or container).
"""

from __future__ import annotations

import builtins
import operator
import types
from collections.abc import Callable, Mapping
from typing import Any

from opto.trace._restricted import _reason, _restricted_python, restricted_compile_errors
from opto.trace.code_policy import CodePolicy, CodePolicyError
from opto.utils.errors import OptoError

__all__ = ["RestrictedAccessError", "define_function", "restricted_compile_errors"]


class RestrictedAccessError(OptoError, PermissionError):
    """Restricted code tried something its CodePolicy does not allow."""


class Globals(dict):  # type: ignore[type-arg]
    """Globals of exec'd trainable code: own names first, then the live module globals."""

    __slots__ = ("_base",)

    def __init__(self, base: Mapping[str, Any], overlay: Mapping[str, Any] | None) -> None:
        super().__init__(overlay or {})
        self._base = base

    def __missing__(self, key: str) -> Any:
        return self._base[key]


class Locals(dict):  # type: ignore[type-arg]
    """Top-level namespace while exec'ing trainable code (module-level statements see globals)."""

    __slots__ = ("_globals",)

    def __init__(self, glb: Globals) -> None:
        super().__init__()
        self._globals = glb

    def __missing__(self, key: str) -> Any:
        return self._globals[key]


# --- the guards -----------------------------------------------------------------------------

_INTERNALS = (types.FrameType, types.CodeType, types.TracebackType)
_UNWRITABLE = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType)
_INPLACE: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.iadd,
    "-=": operator.isub,
    "*=": operator.imul,
    "/=": operator.itruediv,
    "//=": operator.ifloordiv,
    "%=": operator.imod,
    "**=": operator.ipow,
    "<<=": operator.ilshift,
    ">>=": operator.irshift,
    "&=": operator.iand,
    "^=": operator.ixor,
    "|=": operator.ior,
    "@=": operator.imatmul,
}
_MISSING = object()
_EXTRA_BUILTINS = (
    "all any dict enumerate filter frozenset iter list map max min next reversed set sorted "
    "sum tuple zip"
).split()


class _Guards:
    """The guard functions RestrictedPython's compiled code calls, for one policy."""

    def __init__(self, policy: CodePolicy) -> None:
        self.policy = policy
        rp = _restricted_python()
        self._inspect = frozenset(rp.transformer.INSPECT_ATTRIBUTES)
        self._unpack = rp.Guards.guarded_unpack_sequence
        self._iter_unpack = rp.Guards.guarded_iter_unpack_sequence
        self._printer = rp.PrintCollector

    def deny(self, what: str) -> RestrictedAccessError:
        return RestrictedAccessError(f"restricted code may not {what} (see docs/security.md)")

    def result(self, value: Any, what: str) -> Any:
        if isinstance(value, types.ModuleType) and not self.policy.allows_module(value.__name__):
            raise self.deny(
                f"reach the module {value.__name__} ({what}); allowed modules: "
                f"{', '.join(sorted(self.policy.allowlist))}"
            )
        if isinstance(value, _INTERNALS):
            raise self.deny(f"reach interpreter internals ({what})")
        return value

    def getattr(self, obj: Any, name: Any, default: Any = _MISSING) -> Any:
        if type(name) is not str:
            raise TypeError("attribute name must be a str")
        if name.startswith("_") or name in self._inspect:
            raise self.deny(f"read the attribute {name!r}")
        if name in self.policy.forbidden_calls:
            raise self.deny(f"use {name!r} (forbidden_calls)")
        if name in ("format", "format_map") and (
            isinstance(obj, str) or (isinstance(obj, type) and issubclass(obj, str))
        ):
            raise self.deny("call str.format (use an f-string)")
        try:
            value = getattr(obj, name)
        except AttributeError:
            if default is _MISSING:
                raise
            return default
        return self.result(value, f"attribute {name!r}")

    def hasattr(self, obj: Any, name: Any) -> bool:
        try:
            self.getattr(obj, name)
        except AttributeError:
            return False
        return True

    def getitem(self, obj: Any, key: Any) -> Any:
        if isinstance(key, str) and key.startswith("__"):
            raise self.deny(f"read the item {key!r}")
        return self.result(obj[key], f"item {key!r}")

    def write(self, obj: Any) -> Any:
        if isinstance(obj, _UNWRITABLE):
            raise self.deny(f"modify {type(obj).__name__} objects")
        return obj

    def setattr(self, obj: Any, name: str, value: Any) -> None:
        if not isinstance(name, str) or name.startswith("_"):
            raise self.deny(f"set the attribute {name!r}")
        setattr(self.write(obj), name, value)

    def delattr(self, obj: Any, name: str) -> None:
        if not isinstance(name, str) or name.startswith("_"):
            raise self.deny(f"delete the attribute {name!r}")
        delattr(self.write(obj), name)

    def inplace(self, op: str, target: Any, value: Any) -> Any:
        return _INPLACE[op](target, value)

    def import_(
        self, name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level=0
    ) -> Any:
        if level or not self.policy.allows_module(name):
            raise self.deny(
                f"import {name}; allowed modules: {', '.join(sorted(self.policy.allowlist))}"
            )
        module = __import__(name, None, None, fromlist or (), 0)
        for item in fromlist or ():
            if isinstance(item, str) and item.startswith("_"):
                raise self.deny(f"import the private name {item!r}")
        return module

    def builtins(self) -> dict[str, Any]:
        rp = _restricted_python()
        table = dict(rp.safe_builtins)
        table.update(rp.limited_builtins)
        table.update({name: getattr(builtins, name) for name in _EXTRA_BUILTINS})
        table.update(
            getattr=self.getattr,
            hasattr=self.hasattr,
            setattr=self.setattr,
            delattr=self.delattr,
            __import__=self.import_,
        )
        for name in self.policy.forbidden_calls:
            table.pop(name, None)
        return table

    def names(self) -> dict[str, Any]:
        """The helper names RestrictedPython's compiled code refers to."""
        return {
            "__builtins__": self.builtins(),
            "__name__": "opto_restricted_code",
            "__metaclass__": type,
            "_getattr_": self.getattr,
            "_getitem_": self.getitem,
            "_getiter_": iter,
            "_write_": self.write,
            "_inplacevar_": self.inplace,
            "_unpack_sequence_": self._unpack,
            "_iter_unpack_sequence_": self._iter_unpack,
            "_apply_": lambda f, *args, **kwargs: f(*args, **kwargs),
            "_print_": self._printer,
        }


class _RestrictedGlobals(dict):  # type: ignore[type-arg]
    """Restricted globals: the guards, then the module's globals the policy lets through."""

    __slots__ = ("_base", "_guards")

    def __init__(self, guards: _Guards, base: Mapping[str, Any], overlay: Mapping | None) -> None:
        super().__init__(guards.names())
        self._guards = guards
        self._base = dict(base)
        self._base.update(overlay or {})

    def __missing__(self, key: str) -> Any:
        if key.startswith("_") or key not in self._base:
            raise KeyError(key)
        return self._guards.result(self._base[key], f"global {key!r}")


def define_function(
    code: str,
    filename: str,
    name: str,
    base_globals: Mapping[str, Any],
    overlay: Mapping[str, Any] | None,
    policy: CodePolicy | None,
) -> Callable[..., Any]:
    """Run ``code`` and return the function ``name`` it defines.

    Raises:
        SyntaxError: the code does not compile.
        CodePolicyError: under a restricting policy, RestrictedPython refuses the code.
        KeyError: the code does not define ``name``.
        ImportError: a restricting policy without ``opto-trace[sandbox]`` installed.
        Exception: whatever the code's top level raises.
    """
    if policy is None or not policy.restricted:
        glb = Globals(base_globals, overlay)  # type: ignore[arg-type]
        loc = Locals(glb)
        exec(compile(code, filename, "exec"), glb, loc)
        if name not in loc:
            raise KeyError(name)
        fn = dict.__getitem__(loc, name)
        glb.update(loc)
        return fn
    rp = _restricted_python()
    result = rp.compile_restricted_exec(code, filename)
    if result.errors:
        reasons = "; it ".join(_reason(message) for message in result.errors)
        raise CodePolicyError(f"the code is not allowed: it {reasons}")
    rglb = _RestrictedGlobals(_Guards(policy), base_globals, overlay)
    exec(result.code, rglb)
    if name not in rglb or not isinstance(dict.__getitem__(rglb, name), types.FunctionType):
        raise KeyError(name)
    return dict.__getitem__(rglb, name)
