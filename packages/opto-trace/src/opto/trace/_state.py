"""Context-local tracing state: tracing on/off, used-node tracking and name scopes.

Everything lives in :mod:`contextvars`, so every thread and every asyncio task sees its own
state: one thread inside ``stop_tracing`` never disables tracing for another, and the nodes
read by one bundled call are never attributed to a concurrent one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = [
    "NAME_SCOPES",
    "USED_NODES",
    "UsedNodes",
    "is_tracing",
    "name_scope",
    "stop_tracing",
]

_TRACING: ContextVar[bool] = ContextVar("opto_trace_tracing", default=True)
_STOP_STACK: ContextVar[tuple[bool, ...]] = ContextVar("opto_trace_stop_stack", default=())
_SCOPES: ContextVar[tuple[str, ...]] = ContextVar("opto_trace_name_scopes", default=())


class UsedNodes(set):
    """The nodes read (through ``.data``) while one bundled call runs.

    A ``set`` of nodes (nodes hash by identity) that also remembers which nodes were created
    during the call (``created``), so that reads made by nested
    traced operators can be told apart from reads of nodes that already existed (see
    ``bundle`` for the rule).
    """

    #: nodes created during the call, or None (set on the first creation)
    created: list[Any] | None = None


#: Stack (a list, innermost last) of :class:`UsedNodes` frames of the running bundled calls.
#: The default value is an empty list that is never mutated; pushes build a new list.
USED_NODES: ContextVar[list[UsedNodes]] = ContextVar("opto_trace_used_nodes", default=[])  # noqa: B039


def is_tracing() -> bool:
    """Whether operators record graph edges in the current context."""
    return _TRACING.get()


class stop_tracing:
    """Context manager that disables tracing inside its block.

    Operators still run and return nodes, but without parents, and ``.data`` reads are not
    recorded. Blocks nest (leaving an inner block restores the outer state) and the state is
    local to the current thread / asyncio task, so one instance may be shared freely.
    """

    __slots__ = ()

    def __enter__(self) -> stop_tracing:
        _STOP_STACK.set((*_STOP_STACK.get(), _TRACING.get()))
        _TRACING.set(False)
        return self

    def __exit__(self, *exc: object) -> None:
        stack = _STOP_STACK.get()
        if stack:
            _TRACING.set(stack[-1])
            _STOP_STACK.set(stack[:-1])
        else:  # exit without a matching enter in this context: be lenient
            _TRACING.set(True)


class _NameScopes:
    """List-like, context-local stack of name scopes (``NAME_SCOPES``).

    Supports the list operations the reference code uses on its global list (``append``,
    ``pop``, indexing, ``len``, iteration, ``clear``) while keeping the value per context.
    """

    __slots__ = ()

    def append(self, scope: str) -> None:
        if not isinstance(scope, str) or ":" in scope:
            raise ValueError(f"Name scope must be a str without ':', got {scope!r}.")
        _SCOPES.set((*_SCOPES.get(), scope))

    def pop(self, index: int = -1) -> str:
        scopes = list(_SCOPES.get())
        value = scopes.pop(index)
        _SCOPES.set(tuple(scopes))
        return value

    def clear(self) -> None:
        _SCOPES.set(())

    def __getitem__(self, index: int) -> str:
        return _SCOPES.get()[index]

    def __len__(self) -> int:
        return len(_SCOPES.get())

    def __iter__(self) -> Iterator[str]:
        return iter(_SCOPES.get())

    def __bool__(self) -> bool:
        return bool(_SCOPES.get())

    def __eq__(self, other: object) -> bool:
        return list(_SCOPES.get()) == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(list(_SCOPES.get()))


NAME_SCOPES = _NameScopes()


@contextmanager
def name_scope(scope: str) -> Iterator[None]:
    """Prefix names of nodes created inside the block with ``"<scope>/"``."""
    NAME_SCOPES.append(scope)
    try:
        yield
    finally:
        NAME_SCOPES.pop()
