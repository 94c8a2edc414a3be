"""Parameter / expandable / hidden dependencies and nested (traceable_code) graphs."""

from __future__ import annotations

import sys

from opto.trace import bundle
from opto.trace.nodes import node
from opto.trace.propagators import GraphPropagator, TraceGraph


def by_id(nodes) -> set[int]:
    return {id(n) for n in nodes}


def test_parameter_dependencies_of_an_expression():
    x = node(2, name="x", trainable=True)
    y = node(3, name="y")
    z = x**y + x * x * x * x + 0.5
    assert by_id(z.parameter_dependencies) == {id(x)}
    assert not z.expandable_dependencies
    assert by_id(x.parameter_dependencies) == {id(x)}
    assert not y.parameter_dependencies


def make_outer():
    hidden_param = node(1, name="hidden_param", trainable=True)

    @bundle()
    def inner(x):
        return x**2

    @bundle(traceable_code=True)
    def outer(x):
        return inner(x) + 1 + hidden_param

    return outer, hidden_param


def test_traceable_bundle_hides_parameters_it_reads():
    outer, hidden_param = make_outer()
    x = node(2, name="x")
    output = outer(x)
    assert output.data == 6
    assert not output.parameter_dependencies
    assert by_id(output.expandable_dependencies) == {id(output)}
    assert by_id(output.hidden_dependencies) == {id(hidden_param)}


def test_hidden_dependencies_through_three_nested_traceable_bundles():
    hidden_param = node(5, name="hidden_param", trainable=True)

    @bundle(traceable_code=True)
    def level1(x):
        return x + hidden_param

    @bundle(traceable_code=True)
    def level2(x):
        return level1(x) * 2

    @bundle(traceable_code=True)
    def level3(x):
        return level2(x) + 1

    out = level3(node(1, name="x"))
    assert out.data == 13
    assert by_id(out.hidden_dependencies) == {id(hidden_param)}
    assert by_id(out.expandable_dependencies) == {id(out)}
    out.backward("fb")
    assert hidden_param.feedback
    received = GraphPropagator().aggregate(hidden_param.feedback)
    assert any(n is out for _, n in received.graph)


def test_expand_returns_the_inner_graph():
    outer, hidden_param = make_outer()
    x = node(2, name="x")
    output = outer(x)
    expanded = TraceGraph.expand(output)
    assert len(expanded.graph) == 6
    inner_output = output.info["output"]
    assert expanded.graph[-1][1] is inner_output
    assert any(n is hidden_param for _, n in expanded.graph)
    assert not hidden_param.feedback, "feedback is restored after expanding"


def test_expand_keeps_existing_feedback_and_handles_plain_nodes():
    outer, hidden_param = make_outer()
    output = outer(node(2, name="x"))
    (output + 1).backward("outer feedback")
    before = dict(hidden_param.feedback)
    assert before
    TraceGraph.expand(output)
    assert dict(hidden_param.feedback) == before
    plain = node(1) + 1
    assert TraceGraph.expand(plain).empty()


def test_visualize_a_hidden_parameter_graph(monkeypatch):
    monkeypatch.setitem(sys.modules, "graphviz", None)  # get the DOT-text drawing
    outer, hidden_param = make_outer()
    x = node(2, name="x")
    output = outer(x)
    output.backward("fb")
    drawing = GraphPropagator().aggregate(hidden_param.feedback).visualize()
    assert drawing.edges == [(x.py_name, output.py_name)]
