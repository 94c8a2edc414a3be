"""Helpers for testing code built on opto.trace: a fresh graph per test and one optimizer step.

Importing this module does not need pytest; the `fresh_graph` fixture is defined only when
pytest is importable. Make it available to a test folder from its ``conftest.py``::

    from opto.trace.testing import fresh_graph  # noqa: F401  (a pytest fixture)

then request ``fresh_graph`` as an argument, or use it for a whole test module with
``pytestmark = pytest.mark.usefixtures("fresh_graph")``.

Outside pytest, ``with isolated_graph():`` does the same. `one_step` runs forward, feedback,
backward and the optimizer's step for any optimizer (it takes the optimizer as an argument,
so opto.trace needs no optimizer package).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from opto.trace.nodes import GRAPH, Graph, Node

__all__ = ["OptimizerLike", "isolated_graph", "one_step"]


class OptimizerLike(Protocol):
    """What `one_step` needs from an optimizer (every `opto.optimizers.Optimizer` has it)."""

    def zero_feedback(self) -> None: ...

    def backward(self, node: Node, *args: Any, **kwargs: Any) -> Any: ...

    def step(self, *args: Any, **kwargs: Any) -> Any: ...


@contextlib.contextmanager
def isolated_graph() -> Iterator[Graph]:
    """Restart the graph's name counters on entry and on exit, so node names in the block
    start at ``:0`` and nothing the block named leaks into the next test."""
    GRAPH.clear()
    try:
        yield GRAPH
    finally:
        GRAPH.clear()


def one_step(
    optimizer: OptimizerLike,
    output: Node | Callable[[], Node],
    feedback: Any,
    **step_kwargs: Any,
) -> Any:
    """One optimization step: forward, feedback, backward, update; returns ``step``'s result.

    `output` is the output node, or a zero-argument callable that runs the forward pass and
    returns it. `feedback` is the feedback itself (a string, a score...), or a callable that
    receives the output's data and returns the feedback (a guide). The optimizer's feedback is
    zeroed first; `step_kwargs` go to ``optimizer.step``.
    """
    optimizer.zero_feedback()
    node = output() if callable(output) and not isinstance(output, Node) else output
    value = feedback(node.data) if callable(feedback) else feedback
    optimizer.backward(node, value)
    return optimizer.step(**step_kwargs)


try:
    import pytest
except ImportError:  # pytest is a test dependency, not a runtime one
    pass
else:

    @pytest.fixture
    def fresh_graph() -> Iterator[Graph]:
        """The global graph with its name counters restarted before and after the test."""
        with isolated_graph() as graph:
            yield graph

    __all__ += ["fresh_graph"]
