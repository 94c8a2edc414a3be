"""`Model.export`: the source text of a model as a standalone Python class.

The exporter writes the object's class and its user-defined bases as plain classes with the
current trainable code and parameter values, and resolves the names the code reads. It is
called by :meth:`opto.trace.modules.Model.export`, which passes the ``Model`` class in, so
this module needs nothing above the containers.
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib.util
import inspect
import logging
import sys
import textwrap
from collections.abc import Iterable
from typing import Any

from opto.trace.containers import Map, Seq, is_traced_function
from opto.trace.nodes import Node
from opto.utils.errors import OptoError

__all__ = ["ExportError", "export_source"]

logger = logging.getLogger(__name__)


class ExportError(OptoError, RuntimeError):
    """A model cannot be exported as source (source unavailable, non-literal value)."""


def export_source(obj: Any, model_type: type) -> str:
    """The source text of the model ``obj`` (an instance of ``model_type``'s subclass)."""
    return _Exporter(obj, model_type).render()


def _projections(projections: Iterable[Any] | Any) -> list[Any]:
    if projections is not None:
        return list(projections) if isinstance(projections, (list, tuple)) else [projections]
    if importlib.util.find_spec("black") is None:
        logger.info("black is not installed; exported code is left unformatted.")
        return []
    try:
        from opto.trace.projections import BlackCodeFormatter
    except ImportError as exc:
        logger.info("BlackCodeFormatter unavailable (%s); exported code is unformatted.", exc)
        return []
    return [BlackCodeFormatter()]


_SKIPPED_CLASS_KEYS = frozenset(
    {
        "__dict__",
        "__weakref__",
        "__module__",
        "__qualname__",
        "__doc__",
        "__annotations__",
        "__orig_bases__",
        "__firstlineno__",
        "__static_attributes__",
        "__slots__",
        "__parameters__",
        "__abstractmethods__",
        "_abc_impl",
        "_model_user_class",
    }
)


def _source(obj: Any, what: str) -> str:
    """Dedented source of a function or class, or ExportError."""
    try:
        return textwrap.dedent(inspect.getsource(inspect.unwrap(obj)))
    except (OSError, TypeError) as exc:
        raise ExportError(
            f"Cannot export: the source of {what} is unavailable ({exc}). export() needs "
            "classes and functions defined in a source file (not python -c or exec)."
        ) from exc


def _literal(value: Any) -> str | None:
    """`repr(value)` when it evaluates back to an equal value of the same type, else None."""
    text = repr(value)
    try:
        back = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return text if type(back) is type(value) and back == value else None


class _Exporter:
    """Builds the source text of `Model.export` (`model_type` is the `Model` class).

    The object's class and its user-defined bases (those of the class's own module) are
    written as plain classes, keeping the inheritance; bases from other modules are
    imported. Every other name the code reads is imported, defined as a literal, or
    inlined from the class's module.
    """

    def __init__(self, obj: Any, model_type: type, parent: _Exporter | None = None) -> None:
        self.obj = obj
        self.model_type = model_type
        self.home = vars(type(obj)).get("_model_user_class", type(obj))
        self.module_name = self.home.__module__
        module = sys.modules.get(self.module_name)
        self.globals: dict[str, Any] = vars(module) if module is not None else {}
        # The text around the class; nested models exported into the same file share it.
        self.imports: set[str] = parent.imports if parent else set()
        self.constants: list[str] = parent.constants if parent else []
        self.definitions: list[str] = parent.definitions if parent else []
        self.unresolved: list[str] = parent.unresolved if parent else []
        self.defined: set[str] = parent.defined if parent else set()
        self.assigned: set[str] = set()
        self.node_values, self.fun_values = self._instance_values()

    def render(self) -> str:
        self._emit_class(type(self.obj))
        parts: list[str] = []
        if self.unresolved:
            parts.append(f"# NOTE: names not resolved, define them: {', '.join(self.unresolved)}")
        if self.imports:
            parts.append("\n".join(sorted(self.imports)))
        if self.constants:
            parts.append("\n".join(self.constants))
        parts.extend(self.definitions)
        return "\n\n\n".join(parts) + "\n"

    # -- classes ----------------------------------------------------------------------------

    def _emit_class(self, klass: type) -> str:
        """Write `klass` (after its bases) as a plain class; return its name."""
        source_class: type = vars(klass).get("_model_user_class", klass)
        name = source_class.__name__
        self.defined.add(name)
        bases = [self._base_name(base) for base in source_class.__bases__]
        bases = [base for base in bases if base is not None]
        members: list[tuple[str, str]] = []
        for member, raw in vars(source_class).items():
            if member not in _SKIPPED_CLASS_KEYS:
                members.append((member, self._member_source(member, raw)))
        members = [(member, self._rewrite_assignments(src)) for member, src in members]
        if klass is type(self.obj):
            leftover = [
                f"self.{attr} = {text}"
                for attr, text in {**self.node_values, **self.fun_values}.items()
                if attr not in self.assigned
            ]
            if leftover:
                members = _append_to_init(members, leftover)
        body: list[str] = []
        doc = source_class.__doc__
        if doc:
            body.append(_docstring(inspect.cleandoc(doc)))
        body.extend(source.rstrip("\n") for _, source in members)
        header = f"class {name}({', '.join(bases)}):" if bases else f"class {name}:"
        lines = [header]
        for index, chunk in enumerate(body or ["pass"]):
            if index:
                lines.append("")
            lines.append(textwrap.indent(chunk, "    "))
        code = "\n".join(lines)
        self._resolve(code, {name})
        self.definitions.append(code)
        return name

    def _base_name(self, base: type) -> str | None:
        """The name a base class has in the exported file (emitting it if needed)."""
        if base in self.model_type.__mro__:  # Model, Module, the containers, object
            return None
        name = vars(base).get("_model_user_class", base).__name__
        if name in self.defined or getattr(builtins, name, None) is base:
            return name
        if base.__module__ == self.module_name:
            return self._emit_class(base)
        imported = _import_line(name, base)
        if imported is None:
            self._unresolved(name)
        else:
            self.defined.add(name)
            self.imports.add(imported)
        return name

    def _member_source(self, name: str, raw: Any) -> str:
        if is_traced_function(raw):
            # The instance's own copy holds its trained code, unless a subclass overrides it.
            bound = getattr(self.obj, name) if _lookup(type(self.obj), name) is raw else raw
            return _aliased(name, self._bundle_code(raw, bound, f"method {name!r}"))
        if isinstance(raw, (staticmethod, classmethod)):
            inner = raw.__func__
            if is_traced_function(inner):
                code = self._bundle_code(inner, inner, f"method {name!r}")
                return f"@{type(raw).__name__}\n{code}"
            return _source(inner, f"method {name!r}")
        if isinstance(raw, functools.cached_property):
            return _source(raw.func, f"property {name!r}")
        if isinstance(raw, property):
            functions = []
            for func in (raw.fget, raw.fset, raw.fdel):
                if func is not None and func not in functions:
                    functions.append(func)
            return "\n\n".join(_source(f, f"property {name!r}") for f in functions)
        if inspect.isfunction(raw) or inspect.isclass(raw) or hasattr(raw, "__wrapped__"):
            return _aliased(name, _source(raw, f"member {name!r}"))
        text = _literal(raw)
        if text is None:
            raise ExportError(
                f"Cannot export class attribute {name!r}: its {type(raw).__name__} value has "
                "no literal form. Set it in __init__ or make it a literal."
            )
        return f"{name} = {text}"

    def _bundle_code(self, fun: Any, bound: Any, what: str) -> str:
        """Current code of a bundled function: the trained code, or its source."""
        if bound.trainable:
            return textwrap.dedent(str(bound.parameter._data))
        info = getattr(fun, "info", None) or {}
        source = info.get("source")
        if source:
            return textwrap.dedent(source)
        return _strip_bundle_decorators(_source(getattr(fun, "_fun", fun), what))

    # -- instance values --------------------------------------------------------------------

    def _instance_values(self) -> tuple[dict[str, str], dict[str, str]]:
        """Literal text for node attributes; function names for bundled-function attributes."""
        nodes: dict[str, str] = {}
        functions: dict[str, str] = {}
        for attr, value in vars(self.obj).items():
            if "__TRACE_RESERVED_" in attr:
                continue
            if isinstance(value, Node):
                text = _literal(value._data)
                if text is None:
                    raise ExportError(
                        f"Cannot export attribute {attr!r}: the value of node {value.name} "
                        f"({type(value._data).__name__}) has no literal form. Store literal "
                        "data (str, numbers, lists, dicts, ...) in exported nodes."
                    )
                nodes[attr] = text
            elif isinstance(value, (Seq, Map)):
                # Containers of nodes become plain lists/dicts when their values are literal.
                text = _literal(_plain(value))
                if text is not None:
                    nodes[attr] = text
            elif is_traced_function(value):
                code = self._bundle_code(value, value, f"attribute {attr!r}")
                function_name = _defined_name(code)
                if function_name is None:
                    raise ExportError(f"Cannot export attribute {attr!r}: its code has no def.")
                self._add_definition(function_name, code)
                functions[attr] = function_name
        return nodes, functions

    def _rewrite_assignments(self, source: str) -> str:
        """Replace the right side of `self.<attr> = ...` for node/bundle attributes."""
        values = {**self.node_values, **self.fun_values}
        if not values:
            return source
        try:
            tree = ast.parse(source)
        except SyntaxError:
            return source
        edits: list[tuple[int, int, int, int, str]] = []
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            arguments = function.args.posonlyargs + function.args.args
            if not arguments:
                continue
            self_name = arguments[0].arg
            for statement in ast.walk(function):
                if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
                    target = statement.targets[0]
                elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
                    target = statement.target
                else:
                    continue
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == self_name
                    and target.attr in values
                ):
                    value = statement.value
                    self.assigned.add(target.attr)
                    edits.append(
                        (
                            value.lineno,
                            value.col_offset,
                            value.end_lineno or value.lineno,
                            value.end_col_offset or 0,
                            values[target.attr],
                        )
                    )
        return _apply_edits(source, edits)

    # -- names used by the code -------------------------------------------------------------

    def _resolve(self, code: str, bound: set[str]) -> None:
        """Import, define or inline every free name of `code` found in the class's module."""
        for name in _free_names(code):
            if name in bound or name in self.defined or name in self.unresolved:
                continue
            self.defined.add(name)
            if name not in self.globals:
                self._unresolved(name)
                continue
            self._resolve_value(name, self.globals[name])

    def _resolve_value(self, name: str, value: Any) -> None:
        if inspect.ismodule(value):
            module_name = value.__name__
            if module_name == name:
                self.imports.add(f"import {module_name}")
            else:
                self.imports.add(f"import {module_name} as {name}")
            return
        if is_traced_function(value):
            code = self._bundle_code(value, value, f"function {name!r}")
            self._add_definition(name, code)
            return
        if inspect.isclass(value) and value in type(self.obj).__mro__:
            self._emit_class(value)  # a base class named in a method body
            return
        nested = self._nested_model(value)
        if nested is not None:
            # A model class this model holds an instance of: export it as a plain class
            # too, with that instance's current values.
            _Exporter(nested, self.model_type, parent=self)._emit_class(type(nested))
            return
        module_name = getattr(value, "__module__", None)
        if (inspect.isfunction(value) or inspect.isclass(value)) and (
            module_name == self.module_name
        ):
            self._add_definition(name, _source(value, f"{name!r}"))
            return
        imported = _import_line(name, value)
        if imported is not None:
            self.imports.add(imported)
            return
        text = _literal(value)
        if text is not None:
            self.constants.append(f"{name} = {text}")
            return
        self._unresolved(name)

    def _nested_model(self, value: Any) -> Any:
        """An attribute of the exported object that is an instance of the class `value`."""
        if not (inspect.isclass(value) and issubclass(value, self.model_type)):
            return None
        for attr in vars(self.obj).values():
            if type(attr) is value:
                return attr
        return None

    def _add_definition(self, name: str, code: str) -> None:
        """Emit a module-level definition (and resolve the names it uses)."""
        self.defined.add(name)
        defined_name = _defined_name(code)
        code = _aliased(name, code)
        self._resolve(code, {name, defined_name or name})
        self.definitions.append(code.rstrip("\n"))

    def _unresolved(self, name: str) -> None:
        logger.warning("export: cannot resolve name %r used by the class; define it.", name)
        self.unresolved.append(name)


def _plain(value: Any) -> Any:
    """`value` with nodes replaced by their data and Seq/Map by list/dict."""
    if isinstance(value, Node):
        return value._data
    if isinstance(value, Seq):
        return [_plain(item) for item in value]
    if isinstance(value, Map):
        return {_plain(key): _plain(item) for key, item in value.items()}
    return value


def _lookup(klass: type, name: str) -> Any:
    """The raw class attribute `name` as attribute lookup on `klass` finds it."""
    for base in klass.__mro__:
        if name in vars(base):
            return vars(base)[name]
    return None


def _aliased(name: str, code: str) -> str:
    """`code` plus `name = <defined name>` when it defines something under another name."""
    defined_name = _defined_name(code)
    if defined_name is None or defined_name == name:
        return code
    return f"{code.rstrip()}\n\n{name} = {defined_name}"


def _append_to_init(members: list[tuple[str, str]], statements: list[str]) -> list[tuple[str, str]]:
    """Add `statements` at the end of `__init__` (created, calling super, if absent)."""
    for index, (name, source) in enumerate(members):
        if name != "__init__":
            continue
        function = ast.parse(source).body[0]
        indent = " " * function.body[0].col_offset if function.body else "    "
        lines = source.rstrip("\n").split("\n")
        end = function.end_lineno or len(lines)
        added = [indent + statement for statement in statements]
        members[index] = (name, "\n".join(lines[:end] + added + lines[end:]))
        return members
    init = [
        "def __init__(self, *args, **kwargs):",
        "    super().__init__(*args, **kwargs)",
        *("    " + statement for statement in statements),
    ]
    return [("__init__", "\n".join(init)), *members]


def _docstring(doc: str) -> str:
    if '"""' in doc or doc.endswith('"') or "\\" in doc:
        return repr(doc)
    closing = "\n" if "\n" in doc else ""
    return f'"""{doc}{closing}"""'


def _defined_name(code: str) -> str | None:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    for statement in tree.body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return statement.name
    return None


def _strip_bundle_decorators(source: str) -> str:
    """Drop `@bundle(...)`/`@trace.bundle(...)` decorators from a function's source."""
    tree = ast.parse(source)
    function = tree.body[0]
    if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return source
    edits = []
    for decorator in function.decorator_list:
        call = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = call.attr if isinstance(call, ast.Attribute) else getattr(call, "id", None)
        if name == "bundle":
            # Remove the decorator line(s), including the "@".
            edits.append((decorator.lineno, 0, (decorator.end_lineno or decorator.lineno) + 1, 0))
    lines = source.split("\n")
    for start, _, stop, _ in sorted(edits, reverse=True):
        del lines[start - 1 : stop - 1]
    return "\n".join(lines)


def _apply_edits(source: str, edits: list[tuple[int, int, int, int, str]]) -> str:
    """Replace `(line, col, end_line, end_col)` spans (ast positions, utf-8 columns)."""
    lines = [line.encode() for line in source.split("\n")]
    for line, col, end_line, end_col, text in sorted(edits, reverse=True):
        head = lines[line - 1][:col]
        tail = lines[end_line - 1][end_col:]
        lines[line - 1 : end_line] = [head + text.encode() + tail]
    return "\n".join(line.decode() for line in lines)


def _free_names(code: str) -> list[str]:
    """Names `code` reads but never binds (excluding builtins), sorted."""
    tree = ast.parse(code)
    bound: set[str] = set()
    loaded: set[str] = set()
    for item in ast.walk(tree):
        if isinstance(item, ast.Name):
            (bound if isinstance(item.ctx, ast.Store) else loaded).add(item.id)
        elif isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(item.name)
        elif isinstance(item, ast.arg):
            bound.add(item.arg)
        elif isinstance(item, ast.alias):
            bound.add((item.asname or item.name).split(".")[0])
        elif isinstance(item, ast.ExceptHandler) and item.name:
            bound.add(item.name)
    return sorted(loaded - bound - set(dir(builtins)))


def _import_line(name: str, value: Any) -> str | None:
    """`from <module> import <attr> [as name]` when `value` is importable from its module."""
    module_name = getattr(value, "__module__", None)
    if not isinstance(module_name, str) or module_name == "__main__":
        return None
    module = sys.modules.get(module_name)
    if module is None:
        return None
    candidates = [name, getattr(value, "__name__", None), getattr(value, "__qualname__", None)]
    for attr in candidates:
        if isinstance(attr, str) and attr.isidentifier() and getattr(module, attr, None) is value:
            alias = "" if attr == name else f" as {name}"
            return f"from {module_name} import {attr}{alias}"
    return None
