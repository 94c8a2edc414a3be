"""Which parameters (and expandable nodes) lie upstream of a node, computed lazily.

``Node._deps`` holds one of five states. Each state is its own type, so the code dispatches
on ``type(state)`` and a reader sees what a value means:

* ``None``: nothing upstream;
* ``dict`` (:data:`Deps`): materialized ``{"parameter": set, "expandable": set}``, maybe
  shared by several nodes;
* :data:`OWN` (an :class:`OwnParameter`): a ParameterNode whose ``{self}`` set is not built
  yet;
* a ``Node``: "the same dependencies as that node" (copy-on-write sharing: no allocation
  per traced op);
* :data:`UNION` (a :class:`ParentsUnion`): the union over the parents, built on demand.
"""

from __future__ import annotations

from typing import Any, Final

from opto.trace._walk import each_once

Node = Any  # any node: this module sits below the node classes

__all__ = ["OWN", "UNION", "Deps", "OwnParameter", "ParentsUnion", "materialize", "shared_deps"]

#: Materialized dependencies: ``{"parameter": set of nodes, "expandable": set of nodes}``.
Deps = dict  # dict[str, set[Node]]


class OwnParameter:
    """State of a ParameterNode before its ``{"parameter": {self}}`` set is needed."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "OWN"


class ParentsUnion:
    """State of a node whose parents disagree: the union is built when first asked for."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNION"


OWN: Final = OwnParameter()
UNION: Final = ParentsUnion()


def materialize(n: Node) -> dict[str, set[Node]] | None:
    """The materialized dependencies of ``n`` (stored back on ``n`` and on what it shares)."""
    d = n._deps
    kind = type(d)
    if d is None or kind is dict:
        return d
    if kind is OwnParameter:
        d = {"parameter": {n}, "expandable": set()}
        n._deps = d
        return d
    if kind is ParentsUnion:
        return _union(n)
    chain = [n]
    cur = d
    while type(cur._deps) not in _TERMINAL:  # follow shared links to a terminal state
        chain.append(cur)
        cur = cur._deps
    result = materialize(cur)
    for c in chain:
        c._deps = result
    return result


_TERMINAL = (type(None), dict, OwnParameter, ParentsUnion)


def _union(n: Node) -> dict[str, set[Node]]:
    params: set[Node] = set()
    expandable: set[Node] = set()
    stack = list(n._parents)
    for p in each_once(stack, {id(n)}):
        d = p._deps
        kind = type(d)
        if d is None:
            continue
        if kind is dict:
            params |= d["parameter"]
            expandable |= d["expandable"]
        elif kind is OwnParameter:
            params.add(p)
        elif kind is ParentsUnion:
            stack.extend(p._parents)
        else:
            stack.append(d)
    result = {"parameter": params, "expandable": expandable}
    n._deps = result
    return result


def shared_deps(parents: tuple[Node, ...] | list[Node]) -> Any:
    """Dependency state of a new child of ``parents`` (O(len(parents)), no set copies)."""
    key: Any = None
    for p in parents:
        d = p._deps
        if d is None:
            continue
        kind = type(d)
        if kind is OwnParameter:
            d = materialize(p)
        elif kind is ParentsUnion:
            d = p
        if key is None:
            key = d
        elif key is not d:
            return UNION
    return key
