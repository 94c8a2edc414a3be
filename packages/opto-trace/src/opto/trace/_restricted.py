"""RestrictedPython, loaded on demand (``opto-trace[sandbox]``), and what it refuses.

Shared by :mod:`opto.trace.code_policy` (checking proposed code) and
:mod:`opto.trace.sandbox` (running it); imports nothing from opto.trace.
"""

from __future__ import annotations

from typing import Any

from opto.utils.imports import require

__all__ = ["restricted_compile_errors"]

_PURPOSE = (
    "restricted execution of trainable code (a CodePolicy restriction, forbidden_modules or "
    "forbidden_calls)"
)


def _restricted_python() -> Any:
    return require("RestrictedPython", "sandbox", package="trace", purpose=_PURPOSE)


def restricted_compile_errors(source: str) -> list[str]:
    """What RestrictedPython refuses in ``source`` (empty when it compiles restricted)."""
    result = _restricted_python().compile_restricted_exec(source, "<suggested code>")
    return [_reason(message) for message in result.errors]


def _reason(message: str) -> str:
    """A RestrictedPython error ('Line 3: "x" is ...') as a clause after 'it '."""
    where, _, what = message.partition(": ")
    if not what:
        return f"is refused by RestrictedPython: {message}"
    return f"is refused by RestrictedPython: {what.rstrip('.')} ({where.lower()})"
