"""The optimizer-facing view of a TraceGraph: calls, documentation, inputs and outputs.

``node_to_function_feedback`` rewrites a TraceGraph as a small program an LLM can read:
one line ``out = fun(arg=name, ...)`` per computed node, the documentation of each
function, and the values of the graph's roots, intermediate nodes and outputs.
"""

from __future__ import annotations

from typing import Any

import attrs
from opto.trace.nodes import Node
from opto.trace.propagators.graph_propagator import TraceGraph

__all__ = ["FunctionFeedback", "node_to_function_feedback"]

NodeSummary = tuple[Any, "str | None"]


@attrs.define
class FunctionFeedback:
    """A TraceGraph as function calls.

    Attributes:
        graph: ``(level, "<out> = <fun>(<key>=<in>, ...)")`` lines in topological order.
        documentation: ``fun_name -> description`` of every function called.
        others: intermediate nodes, ``py_name -> (data, description)``.
        roots: nodes without parents in view (true roots and nodes whose parents are
            outside the graph), ``py_name -> (data, description)``.
        output: computed nodes that feed no other node of the graph.
        user_feedback: the feedback given on the output.
        variables: the roots an optimizer may change (filled in by optimizers).
        inputs: the other roots (filled in by optimizers).
    """

    graph: list[tuple[int, str]]
    documentation: dict[str, str | None]
    others: dict[str, NodeSummary]
    roots: dict[str, NodeSummary]
    output: dict[str, NodeSummary]
    user_feedback: Any
    variables: dict[str, NodeSummary] = attrs.field(factory=dict)
    inputs: dict[str, NodeSummary] = attrs.field(factory=dict)


def node_to_function_feedback(trace_graph: TraceGraph) -> FunctionFeedback:
    """Convert ``trace_graph`` into a :class:`FunctionFeedback`.

    Walking the items in order, a node is a root when it has no parents or when one of its
    parents has not been seen earlier in the graph (its inputs lie outside this view);
    otherwise it is a call whose result is an ``output`` if no node of the graph uses it,
    else one of the ``others``.
    """
    if not isinstance(trace_graph, TraceGraph):
        raise TypeError(
            f"node_to_function_feedback needs a TraceGraph, got {type(trace_graph).__name__}; "
            "sum the parameters' feedback with GraphPropagator().aggregate(...) first."
        )
    items = trace_graph.graph
    members = {id(node) for _, node in items}
    used = {id(p) for _, node in items for p in node.parents if id(p) in members}

    graph: list[tuple[int, str]] = []
    documentation: dict[str, str | None] = {}
    others: dict[str, NodeSummary] = {}
    roots: dict[str, NodeSummary] = {}
    output: dict[str, NodeSummary] = {}
    visited: set[int] = set()
    for level, node in items:
        parents = node.parents
        if parents and all(id(p) in visited for p in parents):
            fun_name = _function_name(node)
            documentation[fun_name] = node.description
            arguments = ", ".join(f"{key}={value.py_name}" for key, value in node._inputs.items())
            graph.append((level, f"{node.py_name} = {fun_name}({arguments})"))
            target = others if id(node) in used else output
            target[node.py_name] = _summary(node)
        else:
            roots[node.py_name] = _summary(node)
        visited.add(id(node))
    return FunctionFeedback(
        graph=graph,
        documentation=documentation,
        others=others,
        roots=roots,
        output=output,
        user_feedback=trace_graph.user_feedback,
    )


def _function_name(node: Node) -> str:
    info = node.info
    if isinstance(info, dict) and info.get("fun_name") is not None:
        return str(info["fun_name"])
    return node.name.split(":")[0]


def _summary(node: Node) -> NodeSummary:
    return (node._data, node.description)
