"""Backward pass: what each node receives, graph release, errors, and the fixed bugs."""

from __future__ import annotations

import pytest
from opto.trace import bundle
from opto.trace.nodes import GRAPH, MessageNode, Node, ParameterNode, node
from opto.trace.propagators import (
    FeedbackMismatchError,
    GraphPropagator,
    GraphReleasedError,
    TraceGraph,
    node_to_function_feedback,
)
from opto.trace.propagators.backward import FeedbackOracle, backward


def names(trace_graph: TraceGraph) -> list[tuple[int, str]]:
    return [(level, n.name) for level, n in trace_graph.graph]


def only_feedback(n: Node) -> TraceGraph:
    (items,) = n.feedback.values()
    (feedback,) = items
    return feedback


@pytest.mark.usefixtures("fresh_graph")
def test_worked_example_graph_received_by_the_parameter():
    x = node(1, name="x", trainable=True, description="an int")
    y = node(2, name="y")
    out = (x * 2 + y) + 1
    out.backward("good")

    (child,) = x.feedback
    assert child.name == "multiply:0"
    received = only_feedback(x)
    assert names(received) == [
        (0, "x:0"),
        (0, "int:0"),
        (1, "multiply:0"),
        (0, "y:0"),
        (2, "add:0"),
        (0, "int:1"),
        (3, "add:1"),
    ]
    assert received.user_feedback == "good"
    assert not y.feedback, "a node without parameter dependencies receives nothing"
    assert out._backwarded
    assert x.children == []


def test_graph_holds_path_nodes_and_their_parents_only():
    x = node(1, name="x", trainable=True)
    y = node(2, name="y")
    y3 = y * 3
    out = (x * 2 + y3) + 1
    out.backward("fb")
    members = [n for _, n in only_feedback(x).graph]
    assert any(n is y3 for n in members)
    assert not any(n is y for n in members)


def test_repeated_backward_detaches_children_but_keeps_feedback():
    x = node(1, name="x", trainable=True)
    y1 = x + 1
    y2 = x + 2
    assert len(x.children) == 2
    y1.backward("first")
    assert len(x.children) == 1 and x.children[0] is y2
    assert list(x.feedback) == [y1]
    y2.backward("first")
    assert list(x.feedback) == [y1, y2]
    total = GraphPropagator().aggregate(x.feedback)
    assert {n.name for _, n in total.graph} >= {y1.name, y2.name, x.name}


def test_feedback_on_a_root_gives_a_one_node_graph_and_no_release():
    p = node("v", name="p", trainable=True)
    p.backward("root feedback")
    assert names(only_feedback(p)) == [(0, p.name)]
    assert not p._backwarded
    p.backward("root feedback")
    assert len(p.feedback) == 2, "one entry per call"
    assert len(GraphPropagator().aggregate(p.feedback)) == 1


def test_trainable_bundle_feedback_converts_to_function_feedback():
    @bundle(trainable=True)
    def my_fun(x):
        """Test function"""
        return x + 1

    x = node(-1, name="x")
    out = my_fun(x)
    out.backward("make it bigger")
    received = GraphPropagator().aggregate(my_fun.parameter.feedback)
    summary = node_to_function_feedback(received)
    assert summary.graph and summary.roots and summary.documentation and summary.output
    assert summary.user_feedback == "make it bigger"


def test_backward_on_released_graph_says_to_retain_it():
    x = node(1, trainable=True)
    out = x + 1
    out.backward("a")
    with pytest.raises(GraphReleasedError, match="retain_graph=True") as info:
        out.backward("b")
    assert isinstance(info.value, AttributeError)


def test_shared_intermediate_released_by_first_backward():
    x = node(1, trainable=True)
    shared = x * 2
    out1 = shared + 1
    out1.backward("a")
    assert shared._backwarded
    later = shared + 2
    with pytest.raises(GraphReleasedError, match="retain_graph=True"):
        later.backward("b")


def test_retain_graph_allows_backward_through_shared_nodes():
    x = node(1, name="x", trainable=True)
    shared = x * 2
    out1 = shared + 1
    out2 = shared + 3
    out1.backward("same", retain_graph=True)
    out2.backward("same")
    assert list(x.feedback) == [shared]
    (entry,) = x.feedback[shared]
    members = {id(n) for _, n in entry.graph}
    assert {id(out1), id(out2), id(shared), id(x)} <= members


def test_retain_graph_twice_keeps_one_entry_per_child():
    """B17: duplicate entries used to break aggregation."""
    x = node(1, name="x", trainable=True)
    out = x + 1
    out.backward("fb", retain_graph=True)
    out.backward("fb", retain_graph=True)
    assert len(x.feedback[out]) == 1
    total = GraphPropagator().aggregate(x.feedback)
    one = out.parents[1]
    assert names(total) == [(0, x.name), (0, one.name), (1, out.name)]
    assert total.user_feedback == "fb"


def test_retain_graph_with_different_feedback_raises_a_clear_error():
    x = node(1, trainable=True)
    out = x + 1
    out.backward("one", retain_graph=True)
    with pytest.raises(FeedbackMismatchError, match="batchify"):
        out.backward("two", retain_graph=True)


def test_feedback_key_is_not_a_registered_node():
    """B19: backward must not register FEEDBACK_ORACLE nodes in GRAPH."""
    x = node(1, trainable=True)
    out = x + 1
    before = len(GRAPH)
    out.backward("fb", retain_graph=True)
    x.backward("fb")
    assert len(GRAPH) == before
    (key,) = (k for k in x.feedback if not isinstance(k, Node))
    assert isinstance(key, FeedbackOracle)


def test_pruned_parents_get_no_feedback_unless_nested_graphs_allowed(monkeypatch):
    x = node(1, trainable=True)
    c = node(5, name="c")
    out = x + c
    out.backward("fb")
    assert not c.feedback

    monkeypatch.setattr(type(GRAPH), "ALLOW_NESTED_GRAPHS", True)
    x2 = node(1, trainable=True)
    c2 = node(5, name="c")
    (x2 + c2).backward("fb")
    assert len(c2.feedback) == 1


def test_hidden_parameter_behind_non_parameter_node_gets_feedback(monkeypatch):
    """B20: a traceable bundle hiding a parameter is not pruned."""
    monkeypatch.setattr(type(GRAPH), "ALLOW_NESTED_GRAPHS", False)
    hidden = node(3, name="hidden", trainable=True)

    @bundle(traceable_code=True)
    def uses_hidden(a):
        return a + hidden

    a = node(1, name="a")
    inner = uses_hidden(a)
    assert not inner.parameter_dependencies
    out = inner + 1
    out.backward("fb")
    assert hidden.feedback, "the hidden parameter must receive feedback"
    received = GraphPropagator().aggregate(hidden.feedback)
    assert any(n is out for _, n in received.graph)


def test_type_errors_name_the_fix():
    with pytest.raises(TypeError, match=r"trace\.node"):
        backward(3, "fb")
    x = node(1, trainable=True)
    with pytest.raises(TypeError, match=r"\.data"):
        (x + 1).backward(node("fb"))
    with pytest.raises(TypeError, match="str"):
        (x + 2).backward({"score": 1})
    with pytest.raises(TypeError, match="GraphPropagator"):
        (x + 3).backward("fb", propagator=object())


def test_numpy_data_backward_twice_through_equal_siblings():
    """B15: identity-based detach; value equality of numpy data must not matter."""
    np = pytest.importorskip("numpy")
    p = ParameterNode(np.array([1.0, 2.0]), name="arr")
    first = p + 1
    second = p + 1
    second.backward("fb")
    assert len(p.children) == 1 and p.children[0] is first
    first.backward("fb")
    assert set(map(id, p.feedback)) == {id(first), id(second)}


def test_message_node_parents_are_propagated_once_each():
    x = node(2, name="x", trainable=True)
    m = MessageNode(4, inputs={"a": x, "b": x}, description="[square] x times x")
    assert m.parents == [x]
    m.backward("fb")
    assert list(x.feedback) == [m]


def test_backward_releases_the_graph_for_garbage_collection():
    import gc
    import weakref

    def run(retain_graph: bool) -> tuple[Node, weakref.ref]:
        p = node(1, trainable=True)
        out = (p * 2) + 1
        ref = weakref.ref(out)
        out.backward("fb", retain_graph=retain_graph)
        p.zero_feedback()
        del out
        gc.collect()
        return p, ref

    p_released, released = run(retain_graph=False)
    assert released() is None and p_released.children == []
    p_retained, retained = run(retain_graph=True)
    assert retained() is None, "children are held weakly: a dropped output is freed"
    assert p_retained.children == []
    kept = p_retained * 2
    kept.backward("fb", retain_graph=True)
    assert p_retained.children == [kept], "while the output lives, retain_graph keeps its link"


def test_backward_takes_the_parameters_of_node_backward():
    import inspect

    method = list(inspect.signature(Node.backward).parameters.values())
    function = list(inspect.signature(backward).parameters.values())
    assert function[0].name == "node"
    assert [(p.name, p.kind, p.default) for p in method[1:]] == [
        (p.name, p.kind, p.default) for p in function[1:]
    ]
    x = node(1.0, trainable=True)
    y = x + 1.0
    with pytest.raises(TypeError, match="retain_grph"):
        backward(y, "fb", retain_grph=True)
    backward(y, feedback="fb", retain_graph=True)
    assert x.feedback
