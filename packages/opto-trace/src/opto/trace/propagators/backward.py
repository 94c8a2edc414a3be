"""The backward pass: carry user feedback from an output node to the nodes that produced it.

Nodes are visited from the highest level down (a child always has a higher level than its
parents), so each node is propagated once, after all of its children contributed. A parent
is given feedback only when it depends on a parameter (directly or hidden inside a
``traceable_code`` bundle); other branches are skipped. Every structure is keyed by node
identity, so the pass costs O(nodes + edges) plus the heap's log factor.
"""

from __future__ import annotations

import heapq
import itertools
from typing import TYPE_CHECKING, Any

from opto.trace.nodes import GRAPH, Node
from opto.trace.propagators.errors import GraphReleasedError
from opto.trace.propagators.graph_propagator import GraphPropagator
from opto.trace.propagators.propagators import AbstractPropagator, add_feedback

if TYPE_CHECKING:
    from opto.trace.visualization import GraphDrawer

__all__ = ["FeedbackOracle", "backward", "run_backward"]


class FeedbackOracle:
    """The key under which user feedback is stored on the node ``backward`` starts from.

    A fresh key per call keeps separate calls apart; it is a plain object, not a Node, so
    backward never registers names in ``GRAPH``.
    """

    __slots__ = ()
    name = "FEEDBACK_ORACLE"
    py_name = "FEEDBACK_ORACLE"

    def __repr__(self) -> str:
        return "FEEDBACK_ORACLE"


def backward(
    node: Node,
    feedback: Any = "",
    propagator: AbstractPropagator | None = None,
    retain_graph: bool = False,
    visualize: bool = False,
    simple_visualization: bool = True,
    reverse_plot: bool = False,
    print_limit: int = 100,
) -> Any:
    """Propagate ``feedback`` on ``node`` back to the parameters it depends on.

    Args:
        node: the output node receiving the feedback.
        feedback: the user's feedback (a str for the default ``GraphPropagator``).
        propagator: how feedback flows through each node; a new ``GraphPropagator`` if None.
        retain_graph: keep the graph usable for another backward through the same nodes.
            Otherwise visited nodes are marked backwarded and detached from their parents so
            their memory can be reclaimed.
        visualize: also draw the propagated edges.
        simple_visualization: in the drawing, bypass ``identity``/``clone`` nodes.
        reverse_plot: draw edges child -> parent instead of parent -> child.
        print_limit: characters of description and data shown per drawn node.

    Returns:
        With ``visualize``, a ``graphviz.Digraph`` (or a ``DotGraph`` when graphviz is not
        installed); otherwise None.
    """
    if not isinstance(node, Node):
        raise TypeError(
            f"backward needs a Node, got {type(node).__name__}. Call it on the output of a "
            "traced computation, or wrap the value first with trace.node(value)."
        )
    if isinstance(feedback, Node):
        raise TypeError(
            "The feedback must be plain data, not a Node; pass its value, e.g. feedback.data."
        )
    if propagator is None:
        propagator = GraphPropagator()
    elif not isinstance(propagator, AbstractPropagator):
        raise TypeError(
            f"propagator must be an AbstractPropagator (e.g. GraphPropagator()), "
            f"got {type(propagator).__name__}."
        )
    drawer = None
    if visualize:
        from opto.trace.visualization import GraphDrawer

        drawer = GraphDrawer(
            simple_visualization=simple_visualization,
            reverse_plot=reverse_plot,
            print_limit=print_limit,
            keep=node,
        )
    run_backward(
        node,
        feedback,
        propagator,
        retain_graph=retain_graph,
        prune=not GRAPH.ALLOW_NESTED_GRAPHS,
        drawer=drawer,
    )
    return drawer.result() if drawer is not None else None


def run_backward(
    node: Node,
    feedback: Any,
    propagator: AbstractPropagator,
    *,
    retain_graph: bool,
    prune: bool,
    drawer: GraphDrawer | None = None,
) -> None:
    """The backward loop shared by :func:`backward` and ``TraceGraph.expand``.

    ``prune`` skips parents that depend on no parameter, not even a hidden one.
    """
    if node._backwarded:
        raise _released(node)
    add_feedback(node, FeedbackOracle(), propagator.init_feedback(node, feedback))
    if drawer is not None:
        drawer.add_node(node)
    if not node.parents:
        return
    order = itertools.count()
    heap = [(-node.level, next(order), node)]
    queued = {id(node)}
    while heap:
        child = heapq.heappop(heap)[2]
        if child._backwarded:
            raise _released(child)
        propagated = propagator(child)
        child.zero_feedback()
        for parent in child.parents:
            if prune and not parent._has_dependencies():
                continue
            add_feedback(parent, child, propagated[parent])
            if parent.parents and id(parent) not in queued:
                queued.add(id(parent))
                heapq.heappush(heap, (-parent.level, next(order), parent))
            if drawer is not None:
                drawer.add_edge(parent, child)
        if not retain_graph:
            child._backwarded = True
            child._detach()


def _released(node: Node) -> GraphReleasedError:
    return GraphReleasedError(
        f"{node} has been backwarded: an earlier backward released this part of the graph. "
        "Pass retain_graph=True to the earlier backward() call to backward through the same "
        "nodes again."
    )
