"""Graph-size behaviour of backward: every node is propagated once, graphs stay linear.

These tests count work (propagations, materialized graphs), never wall time.
"""

from __future__ import annotations

from opto.trace.nodes import MessageNode, ParameterNode
from opto.trace.propagators import GraphPropagator, TraceGraph
from opto.trace.utils import sum_feedback


class CountingPropagator(GraphPropagator):
    """GraphPropagator that counts how often each node is propagated."""

    def __init__(self) -> None:
        super().__init__()
        self.visits: dict[int, int] = {}

    def _propagate(self, child):
        self.visits[id(child)] = self.visits.get(id(child), 0) + 1
        return super()._propagate(child)


def assert_topological(trace_graph: TraceGraph) -> None:
    position = {id(n): i for i, (_, n) in enumerate(trace_graph.graph)}
    assert len(position) == len(trace_graph.graph)
    for i, (_, n) in enumerate(trace_graph.graph):
        assert all(position.get(id(p), -1) < i for p in n.parents)


def test_chain_of_4000_nodes():
    p = ParameterNode(0, name="start")
    value = p
    for _ in range(4000):
        value = value + 1
    assert value.level == 4000 and value.data == 4000
    propagator = CountingPropagator()
    value.backward("fb", propagator=propagator)

    assert len(propagator.visits) == 4000
    assert set(propagator.visits.values()) == {1}
    (entries,) = p.feedback.values()
    (received,) = entries
    assert "lazy" in repr(received), "the growing graph is not copied at every step"
    assert len(received.graph) == 1 + 2 * 4000  # p, every add and its constant
    assert received.graph[0][1] is p and received.graph[-1][1] is value
    assert_topological(received)
    assert received.user_feedback == "fb"
    assert value._backwarded and p.children == []


def test_ladder_with_exponentially_many_paths_visits_each_node_once():
    p = ParameterNode(1, name="a")
    q = ParameterNode(1, name="b")
    a, b = p, q
    messages = []
    for _ in range(300):
        a, b = (
            MessageNode(0, inputs={"x": a, "y": b}, description="[left] left"),
            MessageNode(0, inputs={"x": a, "y": b}, description="[right] right"),
        )
        messages += [a, b]
    out = MessageNode(0, inputs={"x": a, "y": b}, description="[join] join")
    propagator = CountingPropagator()
    out.backward("fb", propagator=propagator)

    assert len(propagator.visits) == len(messages) + 1
    assert set(propagator.visits.values()) == {1}
    total = sum_feedback([p, q])
    assert len(total.graph) == len(messages) + 3
    assert_topological(total)


def test_fan_in_of_1000_parameters_into_one_node():
    params = [ParameterNode(i, name=f"w{i}") for i in range(1000)]
    out = MessageNode(
        sum(range(1000)),
        inputs={f"x{i}": p for i, p in enumerate(params)},
        description="[total] sum of all inputs",
    )
    propagator = CountingPropagator()
    out.backward("fb", propagator=propagator)

    assert propagator.visits == {id(out): 1}
    received = [p.feedback[out][0] for p in params]
    assert all(r is received[0] for r in received), "one shared graph, not 1000 copies"
    assert len(received[0].graph) == 1001
    assert [n for _, n in received[0].graph] == [*params, out]


def test_fan_in_of_1000_parameters_through_a_chain_of_adds():
    params = [ParameterNode(i, name=f"v{i}") for i in range(1000)]
    total = params[0]
    for p in params[1:]:
        total = total + p
    propagator = CountingPropagator()
    total.backward("fb", propagator=propagator)

    assert len(propagator.visits) == 999
    assert all(len(p.feedback) == 1 for p in params)
    combined = sum_feedback(params)
    assert len(combined.graph) == 1000 + 999
    assert_topological(combined)
    assert combined.graph[-1][1] is total
