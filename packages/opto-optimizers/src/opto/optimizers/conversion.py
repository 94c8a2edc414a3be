"""Type-preserving conversion of suggested values, and checks of suggested code.

An LLM suggests values as JSON (often as strings). ``convert_value`` turns a suggestion into
a value of the parameter's current type or raises :class:`ConversionError` with the reason:
an int stays an int (``"3.9"`` is rejected, not truncated), ``"no"`` is ``False`` for a bool,
a float is finite, ``"abc"`` is never ``['a', 'b', 'c']`` and a dict keeps the type of its
keys through JSON (whose object keys are always strings). Code (the ``__code`` of trainable
bundles) must pass :mod:`opto.trace.code_policy`'s checks, the same ones loaded code passes
(see ``docs/security.md``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Mapping
from typing import Any

from opto.optimizers.parsing import load_json_like
from opto.trace import code_policy
from opto.trace.code_policy import CodePolicy, CodePolicyError
from opto.trace.nodes import ParameterNode
from opto.trace.utils import is_code_name
from opto.utils.errors import OptoError

__all__ = [
    "ConversionError",
    "Converter",
    "check_code",
    "convert_code",
    "convert_suggestion",
    "convert_value",
    "function_signature",
]

Converter = Callable[[Any, Any], Any]
"""``converter(old_value, suggested) -> new value``; raises ConversionError to reject."""

_TRUE = frozenset({"true", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "no", "n", "off", "0"})


class ConversionError(OptoError, ValueError):
    """A suggested value could not become a valid value of its parameter.

    The message is the reason (recorded in the step record's ``rejected``).
    """


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _parse_text(text: str) -> Any:
    """A JSON/Python literal from ``text``; ConversionError when it is none."""
    try:
        return load_json_like(text.strip())
    except ValueError:
        raise ConversionError(f"{_describe(text)} is not a JSON or Python literal") from None


def _to_bool(old: Any, new: Any) -> bool:
    if isinstance(new, bool):
        return new
    if isinstance(new, int) and new in (0, 1):
        return bool(new)
    if isinstance(new, str):
        word = new.strip().strip("'\"").lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ConversionError(f"{_describe(new)} is not a boolean (use true or false)")


def _integral(number: float, source: Any) -> int:
    if not math.isfinite(number) or not number.is_integer():
        raise ConversionError(
            f"{_describe(source)} is not an integer; rounding it would change the value"
        )
    return int(number)


def _to_int(old: Any, new: Any) -> int:
    if isinstance(new, bool):
        raise ConversionError(f"{_describe(new)} is a boolean, not an integer")
    if isinstance(new, int):
        return new
    if isinstance(new, float):
        return _integral(new, new)
    if isinstance(new, str):
        text = new.strip().strip("'\"")
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            return _integral(number, new)
    raise ConversionError(f"{_describe(new)} is not an integer")


def _to_float(old: Any, new: Any) -> float:
    if isinstance(new, bool):
        raise ConversionError(f"{_describe(new)} is a boolean, not a number")
    number: float | None = None
    if isinstance(new, (int, float)):
        try:
            number = float(new)
        except OverflowError:
            raise ConversionError(f"{_describe(new)} is too large for a float") from None
    elif isinstance(new, str):
        try:
            number = float(new.strip().strip("'\""))
        except ValueError:
            pass
    if number is None:
        raise ConversionError(f"{_describe(new)} is not a number")
    if not math.isfinite(number):
        raise ConversionError(f"{_describe(new)} is not a finite number (nan and inf are rejected)")
    return number


def _to_str(old: Any, new: Any) -> str:
    if isinstance(new, str):
        return new
    if new is None:
        raise ConversionError("null is not a text value")
    if isinstance(new, (dict, list, tuple)):
        return json.dumps(new, ensure_ascii=False, default=repr)
    return str(new)


def _container(kind: type, new: Any) -> Any:
    """``new`` (or the literal it spells) as a ``kind`` collection."""
    value = _parse_text(new) if isinstance(new, str) else new
    if kind is dict:
        if isinstance(value, dict):
            return value
        raise ConversionError(f"{_describe(new)} is not an object/dict")
    if isinstance(value, (list, tuple, set, frozenset)):
        return kind(value)
    raise ConversionError(f"{_describe(new)} is not a {kind.__name__}")


def _key_spellings(key: Any) -> tuple[str, ...]:
    """How a non-string dict key can come back as a JSON object key."""
    spellings = [str(key), repr(key)]
    try:
        spellings.append(json.dumps(key))
    except (TypeError, ValueError):
        pass
    return tuple(spellings)


def _to_dict(old: dict[Any, Any], new: Any) -> dict[Any, Any]:
    """``new`` as a dict whose keys have the types of ``old``'s keys.

    A string key that spells an existing non-string key (``"1"`` for ``1``, ``"true"`` for
    ``True``) becomes that key; a new string key is converted to the type shared by all of
    ``old``'s keys (``"3"`` -> ``3``). Dicts with string or mixed-type keys keep new keys as
    they came.
    """
    value = _container(dict, new)
    odd_keys = [k for k in old if not isinstance(k, str)]
    if not odd_keys or not any(isinstance(k, str) for k in value):
        return value
    known: dict[str, Any] = {}
    for key in odd_keys:
        for spelling in _key_spellings(key):
            known.setdefault(spelling, key)
    key_types = {type(k) for k in old}
    shared = next(iter(key_types)) if len(key_types) == 1 else None
    restored: dict[Any, Any] = {}
    for key, item in value.items():
        if isinstance(key, str) and key in known:
            key = known[key]
        elif isinstance(key, str) and shared is not None:
            try:
                key = convert_value(odd_keys[0], key)
            except ConversionError as exc:
                raise ConversionError(
                    f"key {_describe(key)} is not of type {shared.__name__} like the other keys: {exc}"
                ) from None
        if key in restored:
            raise ConversionError(f"key {_describe(key)} appears twice once its type is restored")
        restored[key] = item
    return restored


#: Converters by the parameter's current type (exact type first, then isinstance order).
_BUILTIN: dict[type, Converter] = {
    bool: _to_bool,
    int: _to_int,
    float: _to_float,
    str: _to_str,
    list: lambda old, new: _container(list, new),
    tuple: lambda old, new: _container(tuple, new),
    dict: _to_dict,
    set: lambda old, new: _container(set, new),
    frozenset: lambda old, new: _container(frozenset, new),
}


def _generic(old: Any, new: Any) -> Any:
    """Other types: accept a value of the same type, or a literal that parses to one."""
    kind = type(old)
    if isinstance(new, kind):
        return new
    if isinstance(new, str):
        value = _parse_text(new)
        if isinstance(value, kind):
            return value
    raise ConversionError(
        f"{_describe(new)} is not a {kind.__name__}, and there is no converter for "
        f"{kind.__name__}; pass converters={{{kind.__name__}: fn}} to the optimizer"
    )


def convert_value(old: Any, new: Any, *, converters: Mapping[type, Converter] | None = None) -> Any:
    """``new`` converted to the type of ``old`` (a parameter's current value).

    ``converters`` (``{type: fn(old, new)}``) take precedence, matched with ``isinstance``
    in order. A parameter whose value is None takes ``new`` unchanged.

    Raises:
        ConversionError: ``new`` cannot become a value of that type without loss.
    """
    if converters:
        for kind, converter in converters.items():
            if isinstance(old, kind):
                return converter(old, new)
    if old is None:
        return new
    converter = _BUILTIN.get(type(old))
    if converter is None:
        for kind, candidate in _BUILTIN.items():
            if isinstance(old, kind):
                converter = candidate
                break
    if converter is None:
        return _generic(old, new)
    value = converter(old, new)
    if not isinstance(old, (bool, int, float, str)) and type(old) is not type(value):
        try:  # subclasses (e.g. a namedtuple or an OrderedDict) keep their type when they can
            value = type(old)(value)
        except Exception:
            raise ConversionError(
                f"{_describe(new)} cannot be made a {type(old).__name__}"
            ) from None
    return value


# --- code -------------------------------------------------------------------------------


def function_signature(source: str) -> tuple[str, str] | None:
    """``(name, parameters)`` of the first top-level function in ``source``, if any."""
    return code_policy.function_signature(source)


def check_code(
    source: str,
    *,
    expected: tuple[str, str] | None = None,
    forbidden_modules: Collection[str] = (),
    forbidden_calls: Collection[str] = (),
    original: str | None = None,
    policy: CodePolicy | None = None,
) -> None:
    """Check suggested code with :func:`opto.trace.code_policy.check_code`: it compiles,
    keeps the function's name, parameters and def kind (from ``original``, or ``expected =
    (name, parameters)``), has nothing else at top level but imports, and satisfies the
    policy. Any forbidden module or call turns on the restricted policy (RestrictedPython,
    ``opto-trace[sandbox]``); see ``docs/security.md``.

    Raises:
        ConversionError: with the first problem found.
    """
    merged = CodePolicy.of(
        policy, forbidden_modules=forbidden_modules, forbidden_calls=forbidden_calls
    )
    try:
        code_policy.check_code(source, original=original, expected=expected, policy=merged)
    except CodePolicyError as error:
        raise ConversionError(str(error)) from None


def convert_code(
    old: Any,
    new: Any,
    *,
    forbidden_modules: Collection[str] = (),
    forbidden_calls: Collection[str] = (),
) -> str:
    """A suggested function definition, checked against the current one.

    ``old`` is the code parameter (a ParameterNode of a trainable bundle: its defining
    source and :class:`~opto.trace.code_policy.CodePolicy` apply) or the current source.
    Code fences and a common indentation are removed; then :func:`check_code` applies.
    Any forbidden module or call turns on the restricted policy (see ``docs/security.md``).

    Raises:
        ConversionError: not a string, blank, or a failed check.
    """
    spec = code_policy.code_spec(old) if isinstance(old, ParameterNode) else None
    if isinstance(old, ParameterNode):
        old = old._data
    if not isinstance(new, str):
        raise ConversionError(f"code must be given as a string, got {type(new).__name__}")
    if not new.strip():
        raise ConversionError("the suggested code is empty")
    source = code_policy.normalize_code(new)
    check_code(
        source,
        original=spec.original if spec is not None else old if isinstance(old, str) else None,
        policy=None if spec is None else spec.policy,
        forbidden_modules=forbidden_modules,
        forbidden_calls=forbidden_calls,
    )
    return source


def convert_suggestion(
    parameter: ParameterNode,
    new: Any,
    *,
    forbidden_modules: Collection[str] = (),
    forbidden_calls: Collection[str] = (),
    converters: Mapping[type, Converter] | None = None,
) -> Any:
    """The suggested value for ``parameter``: :func:`convert_code` for a code parameter
    (``__code`` of a trainable bundle), :func:`convert_value` for any other.

    Raises:
        ConversionError: the suggestion cannot become a value of the parameter.
    """
    if is_code_name(parameter.py_name):
        return convert_code(
            parameter, new, forbidden_modules=forbidden_modules, forbidden_calls=forbidden_calls
        )
    return convert_value(parameter._data, new, converters=converters)
