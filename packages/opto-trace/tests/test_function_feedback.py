"""node_to_function_feedback: the optimizer-facing view of a TraceGraph."""

from __future__ import annotations

import pytest
from opto.trace import bundle
from opto.trace.nodes import node
from opto.trace.propagators import (
    FunctionFeedback,
    GraphPropagator,
    TraceGraph,
    node_to_function_feedback,
)
from opto.trace.utils import sum_feedback


@pytest.mark.usefixtures("fresh_graph")
def test_worked_example_as_function_calls():
    x = node(1, name="x", trainable=True, description="an int")
    y = node(2, name="y")
    out = (x * 2 + y) + 1
    out.backward("good")
    summary = node_to_function_feedback(sum_feedback([x]))
    assert summary.graph == [
        (1, "multiply0 = multiply(x=x0, y=int0)"),
        (2, "add0 = add(x=multiply0, y=y0)"),
        (3, "add1 = add(x=add0, y=int1)"),
    ]
    assert summary.roots == {
        "x0": (1, "an int"),
        "int0": (2, None),
        "y0": (2, None),
        "int1": (1, None),
    }
    assert summary.others == {
        "multiply0": (2, "This is a multiply operator of x and y."),
        "add0": (4, summary.documentation["add"]),
    }
    assert summary.output == {"add1": (5, summary.documentation["add"])}
    assert summary.documentation["multiply"] == "This is a multiply operator of x and y."
    assert summary.user_feedback == "good"
    assert summary.variables == {} and summary.inputs == {}


@bundle(trainable=True)
def my_fun(x):
    """Test function"""
    return x**2 + 1


@bundle()
def post(y):
    """Post-process."""
    return y - 1


@pytest.mark.usefixtures("fresh_graph")
def test_verified_optimizer_example_with_trainable_bundle():
    x = node(-1, name="x")
    p = node(2, name="p", trainable=True, description="a scale")
    y = post(my_fun(x) * p)
    y.backward("feedback text")

    code = my_fun.parameter.py_name  # named at import time, before GRAPH.clear()
    summary = node_to_function_feedback(sum_feedback([my_fun.parameter, p]))
    assert summary.graph == [
        (1, f"eval0 = eval(x=x0, __code={code})"),
        (2, "multiply0 = multiply(x=eval0, y=p0)"),
        (3, "post0 = post(y=multiply0)"),
    ]
    assert set(summary.documentation) == {"eval", "multiply", "post"}
    assert summary.documentation["eval"].startswith("This operator eval(__code, *args, **kwargs)")
    assert summary.documentation["multiply"] == "This is a multiply operator of x and y."
    assert summary.documentation["post"] == "Post-process."
    assert list(summary.roots) == ["x0", code, "p0"]
    assert summary.roots["x0"] == (-1, None)
    assert summary.roots["p0"] == (2, "a scale")
    source, hint = summary.roots[code]
    assert source.startswith("def my_fun(x):")
    assert hint == 'The code should start with:\ndef my_fun(x):\n    """Test function"""'
    assert {k: v[0] for k, v in summary.others.items()} == {"eval0": 2, "multiply0": 4}
    assert summary.output == {"post0": (3, "Post-process.")}
    assert summary.user_feedback == "feedback text"


def test_outputs_are_the_sinks_not_the_deepest_level():
    """B16: every node that feeds no other node of the graph is an output."""
    x = node(1, name="x", trainable=True)
    shallow = x + 1
    deep = (x * 2) + 3
    shallow.backward("same")
    deep.backward("same")
    summary = node_to_function_feedback(sum_feedback([x]))
    assert set(summary.output) == {shallow.py_name, deep.py_name}
    assert set(summary.others) == {deep.parents[0].py_name}


def test_nodes_with_parents_outside_the_graph_are_roots():
    x = node(1, name="x", trainable=True)
    y = node(2, name="y")
    y3 = y * 3
    out = (x * 2 + y3) + 1
    out.backward("fb")
    summary = node_to_function_feedback(sum_feedback([x]))
    assert y3.py_name in summary.roots
    assert all(not line.startswith(y3.py_name + " =") for _, line in summary.graph)


def test_root_only_graph_and_empty_graph():
    p = node("text", name="p", trainable=True)
    p.backward("fb")
    summary = node_to_function_feedback(GraphPropagator().aggregate(p.feedback))
    assert summary.roots == {p.py_name: ("text", None)}
    assert summary.graph == [] and summary.output == {} and summary.others == {}

    empty = node_to_function_feedback(TraceGraph([], None))
    assert empty == FunctionFeedback([], {}, {}, {}, {}, None)


def test_requires_a_trace_graph():
    with pytest.raises(TypeError, match="TraceGraph"):
        node_to_function_feedback([(0, node(1))])


def test_optimizers_can_fill_variables_and_inputs():
    summary = node_to_function_feedback(TraceGraph([], "fb"))
    summary.variables = {"p0": (1, None)}
    summary.inputs = {"x0": (2, None)}
    assert summary.variables["p0"] == (1, None) and summary.inputs["x0"] == (2, None)
