"""Nodes of the trace graph: the public face of the graph core.

A :class:`Node` wraps a Python value. Operating on nodes (``x + 1``, ``x[0]``, bundled
functions) creates :class:`MessageNode` children that remember their inputs, so the program
that ran can be replayed backward with feedback. :class:`ParameterNode` marks a value an
optimizer may change; :class:`ExceptionNode` records a failed operation.

The classes live in the core modules :mod:`opto.trace._graph` (names),
:mod:`opto.trace._node`, :mod:`opto.trace._message` and :mod:`opto.trace.primitives` (the
operators ``x + y`` and friends call); importing this module loads all of them.
"""

from __future__ import annotations

from opto.trace import primitives as _primitives  # noqa: F401  (installs Node's operators)
from opto.trace._graph import GRAPH, Graph, NodeNameError, get_op_name
from opto.trace._message import ExceptionNode, MessageNode
from opto.trace._node import AbstractNode, Node, ParameterNode, node
from opto.trace._state import NAME_SCOPES, USED_NODES
from opto.trace._viz_style import NodeVizStyleGuide, NodeVizStyleGuideColorful

__all__ = [
    "GRAPH",
    "IDENTITY_OPERATORS",
    "NAME_SCOPES",
    "USED_NODES",
    "AbstractNode",
    "ExceptionNode",
    "Graph",
    "MessageNode",
    "Node",
    "NodeNameError",
    "NodeVizStyleGuide",
    "NodeVizStyleGuideColorful",
    "ParameterNode",
    "get_op_name",
    "node",
]

#: Operator names skipped by the simple visualization (pure pass-through operators).
IDENTITY_OPERATORS = ("identity", "clone")
