"""Apply functions and operators through nested containers of nodes."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from opto.trace.containers import NodeContainer, is_traced_function
from opto.trace.nodes import Node

__all__ = ["apply_op", "recursive_conversion"]


def recursive_conversion(
    true_fn: Callable[[Node[Any]], Any], false_fn: Callable[[Any], Any]
) -> Callable[[Any], Any]:
    """Build a converter mapping Nodes with ``true_fn`` and other leaves with ``false_fn``.

    Tuples, lists, sets and dict values are rebuilt recursively; a :class:`NodeContainer` is
    shallow-copied with its attributes converted. A node held inside a node's data is not
    reached (the node is a leaf). Bundled functions (``FunModule``) are leaves too, so a
    bundle passed as an argument stays callable.
    """

    def convert(obj: Any) -> Any:
        if isinstance(obj, Node):
            return true_fn(obj)
        if isinstance(obj, tuple):
            return tuple(convert(x) for x in obj)
        if isinstance(obj, list):
            return [convert(x) for x in obj]
        if isinstance(obj, dict):
            return {k: convert(v) for k, v in obj.items()}
        if isinstance(obj, (set, frozenset)):
            return type(obj)(convert(x) for x in obj)
        if isinstance(obj, NodeContainer) and not is_traced_function(obj):
            new = copy.copy(obj)
            for key, value in vars(obj).items():
                setattr(new, key, convert(value))
            return new
        return false_fn(obj)

    return convert


def apply_op(op: Callable[..., Any], output: Any, *args: Any, **kwargs: Any) -> Any:
    """Broadcast ``op`` over lists, tuples, dicts and NodeContainers, writing into ``output``.

    If every input is a Node, returns ``op(*args, **kwargs)``. Otherwise each non-Node input
    must have the exact type of ``output`` and the same shape; Nodes are broadcast to every
    element. ``output`` is filled in place (tuples are rebuilt) and returned.
    """
    inputs = list(args) + list(kwargs.values())
    containers = [x for x in inputs if not isinstance(x, Node)]
    if not containers:
        return op(*args, **kwargs)
    for x in containers:
        if type(x) is not type(output):
            raise TypeError(
                f"apply_op: every non-Node input must have the type of output "
                f"({type(output).__name__}), got {type(x).__name__}."
            )

    def pick(x: Any, get: Callable[[Any], Any]) -> Any:
        return x if isinstance(x, Node) else get(x)

    if isinstance(output, (list, tuple)):
        for x in containers:
            if len(x) != len(output):
                raise ValueError(
                    f"apply_op: all inputs must have the length of output ({len(output)}), "
                    f"got {len(x)}."
                )
        items = [
            apply_op(
                op,
                output[i],
                *[pick(a, lambda c, i=i: c[i]) for a in args],
                **{k: pick(v, lambda c, i=i: c[i]) for k, v in kwargs.items()},
            )
            for i in range(len(output))
        ]
        if isinstance(output, list):
            output[:] = items
            return output
        return type(output)(items)
    if isinstance(output, dict):
        for key in output:
            output[key] = apply_op(
                op,
                output[key],
                *[pick(a, lambda c, key=key: c[key]) for a in args],
                **{k: pick(v, lambda c, key=key: c[key]) for k, v in kwargs.items()},
            )
        return output
    if isinstance(output, NodeContainer):
        for attr in vars(output):
            value = apply_op(
                op,
                getattr(output, attr),
                *[pick(a, lambda c, attr=attr: getattr(c, attr)) for a in args],
                **{k: pick(v, lambda c, attr=attr: getattr(c, attr)) for k, v in kwargs.items()},
            )
            setattr(output, attr, value)
        return output
    return output
