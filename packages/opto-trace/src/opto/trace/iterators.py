"""Iteration over nodes: every element is a traced ``getitem`` of the container node."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from opto.trace._node import OPERATORS
from opto.trace.errors import ExecutionError
from opto.trace.nodes import ExceptionNode, MessageNode, Node, node

__all__ = ["DictIterable", "SeqIterable", "iterate"]


def _is_ndarray(data: Any) -> bool:
    numpy = sys.modules.get("numpy")  # never import numpy ourselves
    return numpy is not None and isinstance(data, numpy.ndarray)


class SeqIterable:
    """Iterate a node holding a sequence, yielding ``x[i]`` nodes (restartable)."""

    def __init__(self, wrapped_list: Node[Any]) -> None:
        self.wrapped_list = wrapped_list
        self._index = 0

    def __iter__(self) -> SeqIterable:
        self._index = 0
        return self

    def __next__(self) -> MessageNode[Any]:
        if self._index >= len(self.wrapped_list._data):
            raise StopIteration
        result = self.wrapped_list[node(self._index)]
        self._index += 1
        return result


class DictIterable:
    """Iterate ``(key_node, value_node)`` pairs of a node holding a dict."""

    def __init__(self, wrapped_dict: Node[dict[Any, Any]]) -> None:
        self.wrapped_dict = wrapped_dict
        self.keys = OPERATORS["keys"](wrapped_dict)
        self._index = 0

    def __iter__(self) -> DictIterable:
        self._index = 0
        return self

    def __next__(self) -> tuple[MessageNode[Any], MessageNode[Any]]:
        if self._index >= len(self.keys._data):
            raise StopIteration
        key = self.keys[node(self._index)]
        self._index += 1
        return key, self.wrapped_dict[key]


def iterate(x: Any) -> Iterator[Any]:
    """Iterator over a node's data (lists, tuples, str, sets, dicts; numpy arrays if loaded)."""
    if not isinstance(x, Node):
        x = node(x)
    data = x._data
    if isinstance(data, (list, tuple, str)) or _is_ndarray(data):
        return SeqIterable(x)
    if isinstance(data, (set, frozenset)):
        return SeqIterable(OPERATORS["to_list"](x))
    if isinstance(data, dict):
        return SeqIterable(OPERATORS["keys"](x))
    message = f"TypeError: Cannot unpack non-iterable {type(data)} object"
    raise ExecutionError(ExceptionNode(TypeError(message), inputs=[x], info={"traceback": message}))
