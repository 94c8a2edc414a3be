"""Propagators and TraceGraph algebra, including a randomized check of what backward delivers."""

from __future__ import annotations

import random

import pytest
from opto.trace.nodes import GRAPH, MessageNode, Node, ParameterNode, node
from opto.trace.propagators import (
    AbstractFeedback,
    FeedbackMismatchError,
    GraphPropagator,
    PropagationError,
    SumPropagator,
    TraceGraph,
)


def ids(trace_graph: TraceGraph) -> list[int]:
    return [id(n) for _, n in trace_graph.graph]


def assert_topological(trace_graph: TraceGraph) -> None:
    position = {id(n): i for i, (_, n) in enumerate(trace_graph.graph)}
    assert len(position) == len(trace_graph.graph), "no duplicates"
    for i, (_, n) in enumerate(trace_graph.graph):
        for parent in n.parents:
            if id(parent) in position:
                assert position[id(parent)] < i, f"{parent.name} must come before {n.name}"


# --- TraceGraph -----------------------------------------------------------------------------


def test_empty_means_no_items_and_no_feedback():
    assert TraceGraph([], None).empty()
    assert TraceGraph().empty()
    assert not TraceGraph([], "fb").empty()
    assert not TraceGraph([(0, node(1))], None).empty()
    total = TraceGraph([], None) + TraceGraph([], None)
    assert total.empty()


def test_sum_unions_by_identity_and_keeps_the_feedback():
    x = node(1, trainable=True)
    twin = node(1)  # equal value, different node
    out = x + twin
    a = TraceGraph([(0, x), (1, out)], "fb")
    b = TraceGraph([(0, twin), (1, out)], None)
    total = a + b
    assert total.user_feedback == "fb"
    assert sorted(ids(total)) == sorted([id(x), id(twin), id(out)])
    assert_topological(total)
    assert (b + a).user_feedback == "fb"


def test_sum_of_graphs_with_different_feedback_is_a_clear_error():
    x = node(1)
    with pytest.raises(FeedbackMismatchError, match="same for all children") as info:
        TraceGraph([(0, x)], "good") + TraceGraph([(0, x)], "bad")
    assert isinstance(info.value, AssertionError) and isinstance(info.value, ValueError)
    assert "batchify" in str(info.value)


def test_builtin_sum_works_through_radd():
    x, y = node(1), node(2)
    total = sum([TraceGraph([(0, x)], "f"), TraceGraph([(0, y)], "f")])
    assert isinstance(total, TraceGraph)
    assert ids(total) == [id(x), id(y)]
    assert TraceGraph.sum([]).empty()


def test_sum_with_other_types_is_a_type_error():
    with pytest.raises(TypeError):
        TraceGraph([], "f") + 1
    with pytest.raises(TypeError, match="TraceGraph"):
        TraceGraph.sum([TraceGraph([], "f"), "text"])


def test_sum_is_lazy_until_graph_is_read_then_cached():
    x = node(1, trainable=True)
    out = x + 1
    total = TraceGraph([(1, out)], "f") + TraceGraph([(0, x)], None)
    assert "lazy" in repr(total)
    first = total.graph
    assert "2 nodes" in repr(total)
    assert total.graph is first
    assert len(total) == 2 and [n for _, n in total] == [x, out]


def test_graph_setter_and_equality():
    x, y = node(1), node(1)
    a = TraceGraph([(0, x)], "f")
    assert a == TraceGraph([(0, x)], "f")
    assert a != TraceGraph([(0, y)], "f"), "equality is by node identity"
    assert a != TraceGraph([(0, x)], "g")
    a.graph = [(0, y)]
    assert ids(a) == [id(y)]


# --- GraphPropagator ------------------------------------------------------------------------


def test_graph_propagator_rejects_non_text_feedback_and_foreign_items():
    prop = GraphPropagator()
    x = node(1)
    with pytest.raises(TypeError, match="str"):
        prop.init_feedback(x, 0.5)
    with pytest.raises(TypeError, match="TraceGraph"):
        prop.aggregate({x: ["text"]})
    assert prop.aggregate({}).empty()


def test_graph_propagator_gives_every_parent_the_same_graph():
    x = node(1, trainable=True)
    y = node(2, trainable=True)
    out = x + y
    out._add_feedback("key", GraphPropagator().init_feedback(out, "fb"))
    result = GraphPropagator()(out)
    assert set(map(id, result)) == {id(x), id(y)}
    assert result[x] is result[y]
    assert sorted(ids(result[x])) == sorted([id(x), id(y), id(out)])


# --- Propagator contract --------------------------------------------------------------------


class Counting(GraphPropagator):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def _propagate(self, child):
        self.calls += 1
        return super()._propagate(child)


def test_register_overrides_propagation_per_operator():
    seen = []

    def custom(child):
        seen.append(child.op_name)
        return {parent: TraceGraph([(parent.level, parent)], None) for parent in child.parents}

    prop = Counting()
    prop.register("add", custom)
    assert prop.override == {"add": custom}
    x = node(1, trainable=True)
    out = (x * 2) + 1
    out.backward("fb", propagator=prop)
    assert seen == ["add"]
    assert prop.calls == 1, "multiply used the default rule"


def test_propagator_result_must_cover_every_parent():
    prop = Counting()
    prop.register("add", lambda child: {})
    x = node(1, trainable=True)
    with pytest.raises(PropagationError, match="one entry per parent"):
        (x + 1).backward("fb", propagator=prop)


def test_propagator_only_accepts_message_nodes():
    with pytest.raises(TypeError, match="MessageNode"):
        GraphPropagator()(node(1))


def test_abstract_feedback_supports_builtin_sum():
    class Score(AbstractFeedback):
        def __init__(self, value):
            self.value = value

        def __add__(self, other):
            return Score(self.value + other.value)

    assert sum([Score(1), Score(2)]).value == 3
    with pytest.raises(TypeError):
        5 + Score(1)


# --- SumPropagator (B10 fixed) --------------------------------------------------------------


def test_sum_propagator_works_with_backward():
    x = node(1, trainable=True)
    out = x + 1
    out.backward("fb", propagator=SumPropagator())
    assert x.feedback[out] == ["fb"]


def test_sum_propagator_combines_feedback_from_several_children():
    x = node(1, trainable=True)
    shared = x * 2
    out = (shared + 1) + (shared + 2)
    out.backward("fb", propagator=SumPropagator())
    assert x.feedback[shared] == ["fb\nfb"]

    z = node(1, trainable=True)
    shared_z = z * 2
    total = (shared_z + 1) + (shared_z + 2)
    total.backward(3, propagator=SumPropagator())
    assert z.feedback[shared_z] == [6]


def test_sum_propagator_legacy_user_key_and_type_mixing():
    x = node(1, trainable=True)
    out = x + 1
    out._add_feedback("user", "from user")
    assert SumPropagator()(out) == {x: "from user", out.parents[1]: "from user"}

    y = node(1, trainable=True)
    mixed = y + 1
    mixed._add_feedback("a", "text")
    mixed._add_feedback("b", 2)
    with pytest.raises(TypeError, match="one type"):
        SumPropagator()(mixed)


# --- Randomized: backward delivers the union of path nodes and their parents ----------------


def build_random_dag(rng: random.Random, roots: int, messages: int) -> list[Node]:
    nodes: list[Node] = []
    for i in range(roots):
        if rng.random() < 0.4:
            nodes.append(ParameterNode(i, name=f"p{i}"))
        else:
            nodes.append(node(i, name=f"c{i}"))
    for j in range(messages):
        parents = rng.sample(nodes, min(len(nodes), rng.randint(1, 3)))
        inputs = {f"in{k}": p for k, p in enumerate(parents)}
        nodes.append(MessageNode(j, inputs=inputs, description="[op] an operator"))
    return nodes


def expected_feedback(output: Node) -> dict[int, set[int]]:
    """Reference semantics, computed naively before backward mutates the graph."""
    processed: list[Node] = []
    seen = {id(output)}
    frontier = [output] if output.parents else []
    while frontier:
        current = frontier.pop()
        processed.append(current)
        for parent in current.parents:
            if parent._dependencies["parameter"] and parent.parents and id(parent) not in seen:
                seen.add(id(parent))
                frontier.append(parent)
    processed.sort(key=lambda n: -n.level)
    received: dict[int, set[int]] = {}
    graph_of: dict[int, set[int]] = {}
    for child in processed:
        own = received.get(id(child), {id(child)} if child is output else set())
        graph_of[id(child)] = own | {id(p) for p in child.parents}
        for parent in child.parents:
            if parent._dependencies["parameter"]:
                received.setdefault(id(parent), set()).update(graph_of[id(child)])
    return received


@pytest.mark.parametrize("seed", range(25))
def test_random_graphs_deliver_union_of_paths_in_topological_order(seed, monkeypatch):
    monkeypatch.setattr(type(GRAPH), "ALLOW_NESTED_GRAPHS", False)
    rng = random.Random(seed)
    nodes = build_random_dag(rng, roots=6, messages=30)
    output = nodes[-1]
    expected = expected_feedback(output)
    params = [n for n in nodes if isinstance(n, ParameterNode)]

    output.backward("fb")

    for param in params:
        if id(param) not in expected:
            assert not param.feedback
            continue
        total = GraphPropagator().aggregate(param.feedback)
        assert set(ids(total)) == expected[id(param)]
        assert total.user_feedback == "fb"
        assert_topological(total)
    for n in nodes:
        if not isinstance(n, ParameterNode):
            assert not n.feedback, "only parameters keep feedback after backward"


def test_concurrent_reads_of_a_lazy_graph_agree():
    from concurrent.futures import ThreadPoolExecutor

    p = ParameterNode(0, name="p")
    value = p
    for _ in range(300):
        value = value + 1
    value.backward("fb")
    (entries,) = p.feedback.values()
    (received,) = entries
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: ids(received), range(8)))
    assert all(result == results[0] for result in results)
    assert len(results[0]) == 601
