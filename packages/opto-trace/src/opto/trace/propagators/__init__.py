"""Feedback propagation: propagators, TraceGraph feedback and the backward pass."""

from opto.trace.propagators.errors import (
    FeedbackMismatchError,
    GraphReleasedError,
    PropagationError,
)
from opto.trace.propagators.function_feedback import FunctionFeedback, node_to_function_feedback
from opto.trace.propagators.graph_propagator import GraphPropagator, TraceGraph
from opto.trace.propagators.propagators import (
    AbstractFeedback,
    AbstractPropagator,
    Propagator,
    SumPropagator,
)

__all__ = [
    "AbstractFeedback",
    "AbstractPropagator",
    "FeedbackMismatchError",
    "FunctionFeedback",
    "GraphPropagator",
    "GraphReleasedError",
    "PropagationError",
    "Propagator",
    "SumPropagator",
    "TraceGraph",
    "node_to_function_feedback",
]
