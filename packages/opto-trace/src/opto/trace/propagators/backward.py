"""The backward pass: carry user feedback from an output node to the nodes that produced it.

Nodes are visited from the highest level down (a child always has a higher level than its
parents), so each node is propagated once, after all of its children contributed. A parent
is given feedback only when it depends on a parameter (directly or hidden inside a
``traceable_code`` bundle); other branches are skipped. Every structure is keyed by node
identity, so the pass costs O(nodes + edges) plus the heap's log factor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opto.trace.nodes import GRAPH, Node
from opto.trace.propagators.graph_propagator import GraphPropagator
from opto.trace.propagators.propagators import AbstractPropagator
from opto.trace.propagators.walk import FeedbackOracle, run_backward

if TYPE_CHECKING:
    pass

__all__ = ["FeedbackOracle", "backward", "run_backward"]


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
