"""Node names: the process-wide name registry and operator tags in descriptions.

Bottom of the graph core: imports only the tracing state. Every node asks :data:`GRAPH`
for its unique name ``"<base>:<k>"``; descriptions start with an operator tag ``[name]``.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from typing import Any

from opto.trace._state import _SCOPES, _TRACING
from opto.utils.errors import OptoError

Node = Any  # any node: this module sits below the node classes

__all__ = ["GRAPH", "Graph", "NodeNameError", "get_op_name"]

_TAG = re.compile(r"^\[([^\[\]]+)\]")


class NodeNameError(OptoError, ValueError):
    """A node name cannot be used (for example it contains ``':'``)."""


class Graph:
    """Process-wide registry of node *names* (it does not hold the nodes).

    Each registration of a base name ``b`` yields ``"b:k"`` with ``k`` counting from 0 since
    the last :meth:`clear`. Counting is lock protected, so names are unique across threads.
    With ``LEGACY_GRAPH_BEHAVIOR = True`` (then call :meth:`clear`) nodes are also kept per
    name for :meth:`get`/:attr:`roots` -- that keeps every node alive; use only for debugging.
    """

    LEGACY_GRAPH_BEHAVIOR = False
    ALLOW_NESTED_GRAPHS = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._nodes: defaultdict[str, list[Node]] | None = None
        self.clear()

    @property
    def TRACE(self) -> bool:
        """Whether tracing is on in the current context (see :class:`stop_tracing`)."""
        return _TRACING.get()

    @TRACE.setter
    def TRACE(self, flag: bool) -> None:
        _TRACING.set(bool(flag))

    def clear(self) -> None:
        """Restart every name counter at 0 (existing nodes keep their names)."""
        with self._lock:
            self._counts = {}
            self._nodes = defaultdict(list) if self.LEGACY_GRAPH_BEHAVIOR else None

    def _next_name(self, base: str, registered: Node | None = None) -> str:
        scopes = _SCOPES.get()
        if scopes:
            base = f"{scopes[-1]}/{base}"
        counts = self._counts
        lock = self._lock
        lock.acquire()  # not ``with``: cheaper on the hot path of every traced operation
        try:
            k = counts.get(base, 0)
            counts[base] = k + 1
            if self._nodes is not None and registered is not None:
                self._nodes[base].append(registered)
        finally:
            lock.release()
        return f"{base}:{k}"

    def register(self, node: Node) -> None:
        """Give ``node`` its unique name ``"<base>:<k>"`` from its current ``"<base>:..."``."""
        name = node._name
        if not isinstance(name, str) or name.count(":") != 1:
            raise NodeNameError(
                f"Cannot register node name {name!r}: it must contain exactly one ':' "
                "separating the base name from the counter."
            )
        node._name = self._next_name(name.split(":", 1)[0], node)

    def count(self, name: str) -> int:
        """How many nodes were registered under base ``name`` since the last clear."""
        if name not in self._counts:
            raise KeyError(f"No node was registered under the name {name!r}.")
        return self._counts[name]

    def get(self, name: str) -> Node:
        """Look a node up by full name (legacy mode only)."""
        if self._nodes is None:
            raise ValueError("Graph.get is not supported when LEGACY_GRAPH_BEHAVIOR is False.")
        base, idx = name.split(":")
        return self._nodes[base][int(idx)]

    @property
    def roots(self) -> list[Node]:
        """Every registered root node (legacy mode only)."""
        if self._nodes is None:
            raise ValueError("Graph.roots is not supported when LEGACY_GRAPH_BEHAVIOR is False.")
        return [n for nodes in self._nodes.values() for n in nodes if n.is_root]

    def __len__(self) -> int:
        return sum(self._counts.values())

    def __str__(self) -> str:
        return str(self._counts)


GRAPH = Graph()


def get_op_name(description: str) -> str:
    """Return the operator name in the leading ``[tag]`` of ``description``."""
    match = _TAG.match(description) if isinstance(description, str) else None
    if match is None:
        raise ValueError(
            f"The description {description!r} does not start with an operator name in "
            "brackets, e.g. '[add] Adds x and y.'."
        )
    return match.group(1)


def _check_name(name: str) -> str:
    if not isinstance(name, str):
        raise NodeNameError(f"Node name must be a str, got {type(name).__name__}.")
    if ":" in name:
        raise NodeNameError(
            f"Node name {name!r} contains ':', which separates a name from its counter; "
            "use another character such as '_'."
        )
    return name


_DEFAULT_DESCRIPTIONS: dict[str, str] = {}


def _normalize_description(tag: str, description: str | None) -> str:
    if not description:
        default = _DEFAULT_DESCRIPTIONS.get(tag)
        if default is None:
            default = _DEFAULT_DESCRIPTIONS[tag] = f"[{tag}]"
        return default
    if not isinstance(description, str):
        raise TypeError(
            f"Description must be a str or None, got {type(description).__name__}; "
            "pass a text describing the node."
        )
    if _TAG.match(description):
        return description
    return f"[{tag}] {description.strip()}"
