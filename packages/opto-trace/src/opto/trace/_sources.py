"""Source text of functions: decorator-stripped, dedented, with the ``def`` hint.

Used by bundle (``info["source"]``, trainable code), by the primitive operators' info and by
error comments. Imports nothing from opto.trace.
"""

from __future__ import annotations

import ast
import inspect
import io
import re
import textwrap
import tokenize
from typing import Any

__all__ = ["DECORATOR", "DEF", "extract_source", "fallback_source", "signature_hint"]

#: A line opening a ``@bundle(...)`` decorator (any module prefix, e.g. ``@trace.bundle(``).
DECORATOR = re.compile(r"^\s*@\s*(?:[\w.]+\.)?bundle\s*(?:\(|\\)")
#: A line opening a function definition.
DEF = re.compile(r"^\s*(?:async\s+)?def\s")


def extract_source(fun: Any, qualname: str) -> tuple[str, int | None, str | None, bool]:
    """Decorator-stripped, dedented source of ``fun`` and its first line number."""
    target = inspect.unwrap(fun) if callable(fun) else fun
    target = getattr(target, "__func__", target)
    try:
        lines, start = inspect.getsourcelines(target)
        file = inspect.getsourcefile(target)
    except (OSError, TypeError):
        return fallback_source(fun, qualname), None, None, False
    keep = 0
    for i, line in enumerate(lines):
        if DEF.match(line):
            break
        if DECORATOR.match(line):
            keep = _end_of_decorator(lines, i) + 1
    source = textwrap.dedent("".join(lines[keep:]))
    return source, start + keep, file, True


def _end_of_decorator(lines: list[str], i: int) -> int:
    """Index of the last line of the decorator call starting at ``lines[i]``."""
    text = textwrap.dedent("".join(lines[i:]))
    depth = 0
    opened = False
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.OP and tok.string in "([{":
                depth += 1
                opened = True
            elif tok.type == tokenize.OP and tok.string in ")]}":
                depth -= 1
                if opened and depth == 0:
                    return i + tok.end[0] - 1
            elif tok.type == tokenize.NEWLINE and depth == 0:
                return i + tok.start[0] - 1
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return i


def fallback_source(fun: Any, qualname: str) -> str:
    try:
        sig = str(inspect.signature(fun))
    except (TypeError, ValueError):
        sig = "(*args, **kwargs)"
    name = qualname if qualname.isidentifier() else "function"
    return f"def {name}{sig}:\n    ...  # source not available: {fun!r}\n"


def signature_hint(source: str) -> str:
    """``def`` line(s) and docstring of ``source`` (what rewritten code must start with)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source.splitlines()[0] if source else ""
    lines = source.splitlines()
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = stmt.lineno - 1
            if stmt.decorator_list:
                first = stmt.decorator_list[0].lineno - 1
                # keep decorators out of the hint: start at the def line itself
                for j in range(first, len(lines)):
                    if DEF.match(lines[j]):
                        first = j
                        break
            body0 = stmt.body[0]
            if (
                isinstance(body0, ast.Expr)
                and isinstance(body0.value, ast.Constant)
                and isinstance(body0.value.value, str)
            ):
                return "\n".join(lines[first : body0.end_lineno])
            if body0.lineno - 1 > first:
                return "\n".join(lines[first : body0.lineno - 1])
            return lines[first]
    return lines[0] if lines else ""
