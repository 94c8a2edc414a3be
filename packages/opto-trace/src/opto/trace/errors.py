"""Exceptions raised while tracing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opto.utils.errors import OptoError

if TYPE_CHECKING:
    from opto.trace._message import ExceptionNode

__all__ = ["ExecutionError", "TraceMissingInputsError"]


class ExecutionError(OptoError):
    """A traced operator raised: holds the :class:`ExceptionNode` recording the failure.

    Catch it and call ``e.exception_node.backward(e.exception_node.create_feedback())`` to
    send the error to the optimizer. Construction has no side effect: the node's data is read
    without being recorded as a dependency, so a nested bundle's error surfaces as this error
    in the outer bundle too.
    """

    def __init__(self, exception_node: ExceptionNode) -> None:
        self.exception_node = exception_node
        super().__init__(exception_node._data)

    def __str__(self) -> str:
        info: Any = self.exception_node.info
        traceback = info.get("traceback") if isinstance(info, dict) else None
        return "\n\n" + (traceback if traceback else str(self.exception_node._data))


class TraceMissingInputsError(OptoError):
    """A bundled function read nodes that are not its inputs (its graph would be wrong).

    Pass those nodes as arguments, or allow it with ``bundle(allow_external_dependencies=True)``
    or ``disable_external_dependencies_check(True)``.
    """

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return self.message
