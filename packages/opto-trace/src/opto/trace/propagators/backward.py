"""The backward pass: carry user feedback from an output node to the nodes that produced it.

Nodes are visited from the highest level down (a child always has a higher level than its
parents), so each node is propagated once, after all of its children contributed. A parent
is given feedback only when it depends on a parameter (directly or hidden inside a
``traceable_code`` bundle); other branches are skipped. Every structure is keyed by node
identity, so the pass costs O(nodes + edges) plus the heap's log factor.
"""

from __future__ import annotations

from typing import Any

from opto.trace.nodes import GRAPH, Node
from opto.trace.propagators.graph_propagator import GraphPropagator
from opto.trace.propagators.propagators import AbstractPropagator
from opto.trace.propagators.walk import FeedbackOracle, run_backward
from opto.utils.signatures import takes_parameters_of

__all__ = ["FeedbackOracle", "backward", "run_backward"]


@takes_parameters_of(Node.backward, rename={"self": "node"})
def backward(arguments: dict[str, Any]) -> Any:
    """Propagate feedback on ``node`` back to the parameters it depends on.

    ``backward(node, ...)`` is :meth:`Node.backward` as a function: the same parameters,
    documented there, with the output node first.
    """
    node, feedback, propagator = arguments["node"], arguments["feedback"], arguments["propagator"]
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
    if arguments["visualize"]:
        from opto.trace.visualization import GraphDrawer

        drawer = GraphDrawer(
            simple_visualization=arguments["simple_visualization"],
            reverse_plot=arguments["reverse_plot"],
            print_limit=arguments["print_limit"],
            keep=node,
        )
    run_backward(
        node,
        feedback,
        propagator,
        retain_graph=arguments["retain_graph"],
        prune=not GRAPH.ALLOW_NESTED_GRAPHS,
        drawer=drawer,
    )
    return drawer.result() if drawer is not None else None
