"""The backward loop: visit nodes deepest first and hand each parent its feedback.

Nodes are visited from the highest level down (a child always has a higher level than its
parents), so each node is propagated once, after all of its children contributed. Used by
:func:`opto.trace.propagators.backward.backward` and ``TraceGraph.expand``.
"""

from __future__ import annotations

import heapq
import itertools
from typing import TYPE_CHECKING, Any

from opto.trace.propagators.errors import GraphReleasedError
from opto.trace.propagators.propagators import AbstractPropagator, add_feedback

if TYPE_CHECKING:
    from opto.trace.nodes import Node
    from opto.trace.visualization import GraphDrawer

__all__ = ["FeedbackOracle", "run_backward"]


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
