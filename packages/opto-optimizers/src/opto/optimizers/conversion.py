"""Type-preserving conversion of suggested values, and checks of suggested code.

An LLM suggests values as JSON (often as strings). ``convert_value`` turns a suggestion into
a value of the parameter's current type or raises :class:`ConversionError` with the reason:
an int stays an int (``"3.9"`` is rejected, not truncated), ``"no"`` is ``False`` for a bool,
a float is finite, ``"abc"`` is never ``['a', 'b', 'c']`` and a dict keeps the type of its
keys through JSON (whose object keys are always strings). Code (the ``__code`` of trainable bundles) must
compile, keep the function's name and signature and, when asked, avoid forbidden modules
and calls (a guard against unwanted suggestions, not a sandbox).
"""

from __future__ import annotations

import ast
import json
import math
import re
import textwrap
from collections.abc import Callable, Collection, Mapping
from typing import Any

from opto.optimizers.parsing import load_json_like

__all__ = [
    "ConversionError",
    "Converter",
    "check_code",
    "convert_code",
    "convert_value",
    "function_signature",
]

Converter = Callable[[Any, Any], Any]
"""``converter(old_value, suggested) -> new value``; raises ConversionError to reject."""

_TRUE = frozenset({"true", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "no", "n", "off", "0"})
_FENCED = re.compile(r"^\s*```[ \t]*[\w.+-]*[ \t]*\r?\n(.*?)\r?\n?[ \t]*```\s*$", re.DOTALL)


class ConversionError(ValueError):
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


def _unfence(source: str) -> str:
    match = _FENCED.match(source)
    return match.group(1) if match else source


def _first_function(tree: ast.Module) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    for statement in tree.body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return statement
    return None


def _parameters(function: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """The calling convention: parameter names and kinds (no defaults or annotations)."""
    args = function.args
    parts = [arg.arg for arg in args.posonlyargs]
    if args.posonlyargs:
        parts.append("/")
    parts.extend(arg.arg for arg in args.args)
    if args.vararg is not None:
        parts.append("*" + args.vararg.arg)
    elif args.kwonlyargs:
        parts.append("*")
    parts.extend(arg.arg for arg in args.kwonlyargs)
    if args.kwarg is not None:
        parts.append("**" + args.kwarg.arg)
    return ", ".join(parts)


def function_signature(source: str) -> tuple[str, str] | None:
    """``(name, parameters)`` of the first top-level function in ``source``, if any."""
    try:
        tree = ast.parse(textwrap.dedent(_unfence(source)))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    function = _first_function(tree)
    return None if function is None else (function.name, _parameters(function))


def _dotted(node: ast.AST) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _under(module: str, forbidden: Collection[str]) -> bool:
    return any(module == item or module.startswith(item + ".") for item in forbidden)


def _violations(
    tree: ast.AST, forbidden_modules: Collection[str], forbidden_calls: Collection[str]
) -> list[str]:
    """Why the code breaks the safety rules (empty when it does not)."""
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(
                f"imports {alias.name}"
                for alias in node.names
                if _under(alias.name, forbidden_modules)
            )
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and _under(node.module, forbidden_modules):
                found.append(f"imports from {node.module}")
        elif isinstance(node, ast.Name) and node.id in forbidden_modules:
            found.append(f"uses the module name {node.id}")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name is None:
                continue
            if name in forbidden_calls or name.rsplit(".", 1)[-1] in forbidden_calls:
                found.append(f"calls {name}()")
            if name in {"__import__", "importlib.import_module", "import_module"} and node.args:
                target = node.args[0]
                if (
                    isinstance(target, ast.Constant)
                    and isinstance(target.value, str)
                    and _under(target.value, forbidden_modules)
                ):
                    found.append(f"imports {target.value} dynamically")
    return list(dict.fromkeys(found))


def check_code(
    source: str,
    *,
    expected: tuple[str, str] | None = None,
    forbidden_modules: Collection[str] = (),
    forbidden_calls: Collection[str] = (),
) -> None:
    """Check suggested code: it compiles, defines ``expected = (name, parameters)`` at top
    level (see :func:`function_signature`), and breaks no safety rule.

    Raises:
        ConversionError: with the first problem found.
    """
    try:
        tree = ast.parse(source)
        compile(tree, "<suggested code>", "exec")
    except SyntaxError as error:
        where = f" (line {error.lineno})" if error.lineno else ""
        raise ConversionError(f"the code does not compile: {error.msg}{where}") from None
    except (ValueError, RecursionError, MemoryError) as error:
        raise ConversionError(f"the code does not compile: {error}") from None
    if expected is not None:
        name, parameters = expected
        functions = {
            node.name: node
            for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        }
        function = functions.get(name)
        if function is None:
            defined = ", ".join(functions) or "no function"
            raise ConversionError(
                f"the code must define the function {name}({parameters}); it defines {defined}"
            )
        found = _parameters(function)
        if found != parameters:
            raise ConversionError(
                f"the signature must stay {name}({parameters}); the suggestion has {name}({found})"
            )
    if forbidden_modules or forbidden_calls:
        problems = _violations(tree, set(forbidden_modules), set(forbidden_calls))
        if problems:
            raise ConversionError("the code is not allowed: it " + "; it ".join(problems))


def convert_code(
    old: Any,
    new: Any,
    *,
    forbidden_modules: Collection[str] = (),
    forbidden_calls: Collection[str] = (),
) -> str:
    """A suggested function definition, checked against the current one (``old``).

    Code fences and a common indentation are removed; then :func:`check_code` applies with
    the name and parameters of ``old``'s first function (when ``old`` has one).

    Raises:
        ConversionError: not a string, blank, or a failed check.
    """
    if not isinstance(new, str):
        raise ConversionError(f"code must be given as a string, got {type(new).__name__}")
    source = textwrap.dedent(_unfence(new)).strip("\n")
    if not source.strip():
        raise ConversionError("the suggested code is empty")
    expected = function_signature(old) if isinstance(old, str) else None
    check_code(
        source,
        expected=expected,
        forbidden_modules=forbidden_modules,
        forbidden_calls=forbidden_calls,
    )
    return source + "\n"
