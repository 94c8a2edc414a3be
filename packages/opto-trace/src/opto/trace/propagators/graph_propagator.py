"""``TraceGraph`` feedback and the ``GraphPropagator`` that optimizers use by default.

A parameter receives, per child, a ``TraceGraph``: the subgraph that connects it to the
output(s) it influenced (every node on those paths plus that node's parents) together with
the user's feedback on the output. ``a + b`` is the union of two such subgraphs.

Sums are lazy: ``a + b`` only records its operands, and the node list is built the first
time ``.graph`` is read (then cached). Building walks the operands once and orders the
union by a depth-first post-order from the sinks, parents in input order, so every node
comes after its parents. This keeps a whole backward pass linear in the graph size even
though each node hands the growing graph to its parents.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Iterator
from typing import Any

from opto.trace._walk import each_once
from opto.trace.nodes import MessageNode, Node, ParameterNode
from opto.trace.propagators.errors import FeedbackMismatchError
from opto.trace.propagators.propagators import AbstractFeedback, Propagator, add_feedback
from opto.trace.propagators.walk import run_backward

__all__ = ["GraphPropagator", "TraceGraph"]

GraphItem = tuple[int, Node]


class TraceGraph(AbstractFeedback):
    """A topologically ordered list of ``(level, node)`` items plus the user's feedback."""

    __slots__ = ("_graph", "_parts", "user_feedback")

    def __init__(self, graph: Iterable[GraphItem] = (), user_feedback: Any = None) -> None:
        self._graph: list[GraphItem] | None = list(graph)
        self._parts: tuple[TraceGraph, ...] = ()
        self.user_feedback = user_feedback

    @property
    def graph(self) -> list[GraphItem]:
        """The ``(level, node)`` items, every node after its parents."""
        if self._graph is None:
            self._graph = _union_items(self)
            self._parts = ()
        return self._graph

    @graph.setter
    def graph(self, items: Iterable[GraphItem]) -> None:
        self._graph = list(items)
        self._parts = ()

    def empty(self) -> bool:
        """True when there are no items and no user feedback."""
        return self._graph is not None and not self._graph and self.user_feedback is None

    @classmethod
    def sum(cls, graphs: Iterable[TraceGraph]) -> TraceGraph:
        """Union of several TraceGraphs (what ``a + b + ...`` computes), built lazily.

        Raises FeedbackMismatchError when two operands carry different user feedback. A
        single non-empty operand is returned as is.
        """
        parts: list[TraceGraph] = []
        feedback: Any = None
        found = False
        for graph in graphs:
            if not isinstance(graph, TraceGraph):
                raise TypeError(
                    f"Only TraceGraphs can be summed with a TraceGraph, got {type(graph).__name__}."
                )
            if graph.user_feedback is not None:
                if not found:
                    feedback, found = graph.user_feedback, True
                elif graph.user_feedback != feedback:
                    raise FeedbackMismatchError(
                        "user feedback should be the same for all children: "
                        f"{_short(feedback)!r} != {_short(graph.user_feedback)!r}. Feedback on "
                        "different outputs cannot be summed; combine the outputs into one node "
                        "(e.g. a bundled batchify(*outputs)) and call backward once with the "
                        "combined feedback."
                    )
            if not graph.empty():
                parts.append(graph)
        if len(parts) == 1 and parts[0].user_feedback == feedback:
            return parts[0]
        result = cls((), feedback)
        if parts:
            result._graph = None
            result._parts = tuple(parts)
        return result

    def __add__(self, other: Any) -> TraceGraph:
        if not isinstance(other, TraceGraph):
            return NotImplemented
        return TraceGraph.sum((self, other))

    def __len__(self) -> int:
        return len(self.graph)

    def __iter__(self) -> Iterator[GraphItem]:
        return iter(self.graph)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TraceGraph):
            return NotImplemented
        if self.user_feedback != other.user_feedback or len(self) != len(other):
            return False
        return all(
            a_level == b_level and a is b
            for (a_level, a), (b_level, b) in zip(self.graph, other.graph)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        size = "lazy" if self._graph is None else f"{len(self._graph)} nodes"
        return f"TraceGraph({size}, user_feedback={_short(self.user_feedback)!r})"

    def visualize(
        self,
        simple_visualization: bool = True,
        reverse_plot: bool = False,
        print_limit: int = 100,
    ) -> Any:
        """Draw the graph: every node, and the parent edges of nodes whose parents are all here.

        Returns a ``graphviz.Digraph`` when graphviz is installed, else a ``DotGraph``.
        """
        from opto.trace.visualization import GraphDrawer

        drawer = GraphDrawer(
            simple_visualization=simple_visualization,
            reverse_plot=reverse_plot,
            print_limit=print_limit,
        )
        items = sorted(self.graph, key=lambda item: item[0])
        members = {id(node) for _, node in items}
        for _, node in items:
            drawer.add_node(node)
            if node.parents and all(id(p) in members for p in node.parents):
                for parent in node.parents:
                    drawer.add_edge(parent, node)
        return drawer.result()

    @classmethod
    def expand(cls, node: MessageNode) -> TraceGraph:
        """The inner graph of a ``traceable_code`` bundle output, as one TraceGraph.

        Backpropagates an empty feedback through the inner graph recorded in
        ``node.info["output"]`` (without pruning) and sums what the inner parameters,
        expandable nodes and inner inputs received. Their own feedback is restored
        afterwards. Nodes without an inner graph give an empty TraceGraph.
        """
        info = node.info
        inner = info.get("output") if isinstance(info, dict) else None
        if not isinstance(inner, MessageNode):
            return cls([], None)
        roots: dict[int, Node] = {}
        for dep in (*inner._dependencies["parameter"], *inner._dependencies["expandable"]):
            roots[id(dep)] = dep
        recorded = info.get("inputs") or {}
        for value in (*recorded.get("args", ()), *recorded.get("kwargs", {}).values()):
            if isinstance(value, Node):
                roots[id(value)] = value
        saved = {key: root._feedback for key, root in roots.items()}
        for root in roots.values():
            root.zero_feedback()
        try:
            run_backward(inner, "", GraphPropagator(), retain_graph=True, prune=False)
            total = sum_feedback(list(roots.values()))
        finally:
            for key, root in roots.items():
                root._feedback = saved[key]
        return total if isinstance(total, TraceGraph) else cls([], None)


class GraphPropagator(Propagator):
    """Hands every parent the child's TraceGraph extended by the child's parents."""

    def init_feedback(self, node: Node, feedback: Any) -> TraceGraph:
        """Start a TraceGraph at ``node`` carrying the user's ``feedback`` text."""
        if not isinstance(feedback, str):
            raise TypeError(
                f"GraphPropagator expects the feedback as a str, got {type(feedback).__name__}. "
                "Pass text, e.g. node.backward(str(feedback)), or use another propagator."
            )
        return TraceGraph([(node.level, node)], feedback)

    def _propagate(self, child: MessageNode) -> dict[Node, TraceGraph]:
        parents = child.parents
        feedback = self.aggregate(child.feedback) + TraceGraph([(p.level, p) for p in parents])
        for hidden in child.hidden_dependencies:
            if isinstance(hidden, ParameterNode):
                add_feedback(hidden, child, feedback)
        return {parent: feedback for parent in parents}

    def aggregate(self, feedback: dict[Any, list[Any]]) -> TraceGraph:
        """Sum the TraceGraphs a node received from all its children (empty if none)."""
        graphs = [item for items in feedback.values() for item in items]
        for item in graphs:
            if not isinstance(item, TraceGraph):
                raise TypeError(
                    f"GraphPropagator can only aggregate TraceGraph feedback, got "
                    f"{type(item).__name__}; use the same propagator for every backward call."
                )
        return TraceGraph.sum(graphs)


def _union_items(root: TraceGraph) -> list[GraphItem]:
    """Materialize a lazy sum: union of the operands' items in DFS post-order from sinks."""
    leaves: list[list[GraphItem]] = []
    stack = [root]
    for graph in each_once(stack):
        # Read the parts before the items: ``graph`` sets items before dropping parts, so a
        # concurrent materialization is seen either as done or as not started.
        parts = graph._parts
        items = graph._graph
        if items is not None:
            leaves.append(items)
        else:
            stack.extend(reversed(parts))
    if len(leaves) == 1:
        return list(leaves[0])
    members: dict[int, GraphItem] = {}
    for items in leaves:
        for item in items:
            members.setdefault(id(item[1]), item)
    has_child: set[int] = set()
    for _, node in members.values():
        for parent in node._parents:
            if id(parent) in members:
                has_child.add(id(parent))
    ordered: list[GraphItem] = []
    entered: set[int] = set()
    for key, item in members.items():
        if key in has_child or key in entered:
            continue
        entered.add(key)
        path = [(item, iter(item[1]._parents))]
        while path:
            current, parents = path[-1]
            for parent in parents:
                pid = id(parent)
                if pid in members and pid not in entered:
                    entered.add(pid)
                    path.append((members[pid], iter(parent._parents)))
                    break
            else:
                path.pop()
                ordered.append(current)
    return ordered


def _short(value: Any, limit: int = 80) -> Any:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def sum_feedback(nodes: Iterable[Any]) -> Any:
    """Sum of every feedback item held by ``nodes``; the int ``0`` when there is none.

    TraceGraph feedback is summed in one pass (``TraceGraph.sum``), other feedback with ``+``.
    """
    items = [item for node in nodes for group in node.feedback.values() for item in group]
    if not items:
        return 0
    if all(isinstance(item, TraceGraph) for item in items):
        return TraceGraph.sum(items)
    return functools.reduce(operator.add, items)
