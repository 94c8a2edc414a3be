"""Errors raised by the backward pass and by feedback aggregation."""

from __future__ import annotations

from opto.utils.errors import OptoError

__all__ = ["FeedbackMismatchError", "GraphReleasedError", "PropagationError"]


class FeedbackMismatchError(OptoError, ValueError, AssertionError):
    """Two TraceGraphs with different user feedback were summed.

    A parameter that feeds several outputs collects one TraceGraph per output, and the
    optimizer sums them; a sum only makes sense for one shared user feedback. Combine the
    outputs into one node first (e.g. a bundled ``batchify(*outputs)``) and call ``backward``
    once with the combined feedback, or give every output the same feedback text.
    It also subclasses ``AssertionError`` because trace-opt raised an assertion here.
    """


class GraphReleasedError(OptoError, AttributeError):
    """``backward`` reached a node whose graph was already released by an earlier backward.

    Subclasses ``AttributeError`` (the type trace-opt raised) for compatibility.
    """


class PropagationError(OptoError, ValueError):
    """A propagator broke its contract (feedback shape or missing parents)."""
