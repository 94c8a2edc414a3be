"""Node styles, DOT text, and drawings made by backward and TraceGraph.visualize."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from opto.trace.nodes import ExceptionNode, ParameterNode, node
from opto.trace.propagators import GraphPropagator
from opto.trace.visualization import (
    DotGraph,
    GraphvizExecutableNotFoundError,
    NodeVizStyleGuide,
    NodeVizStyleGuideColorful,
)


@pytest.fixture
def no_graphviz(monkeypatch):
    monkeypatch.setitem(sys.modules, "graphviz", None)


def test_default_style_attributes():
    style = NodeVizStyleGuide()
    p = ParameterNode(3, name="p", description="a knob")
    assert style.get_attrs(p) == {
        "label": f"{p.py_name}\na knob\n3",
        "shape": "box",
        "fillcolor": "#DEEBF6",
        "style": "filled,solid",
    }
    plain = node("hi", name="plain")
    attrs = style.get_attrs(plain)
    assert attrs["shape"] == "ellipse" and attrs["fillcolor"] == "" and attrs["style"] == ""
    assert attrs["label"] == f"{plain.py_name}\n\nhi"


def test_colorful_style_attributes():
    style = NodeVizStyleGuideColorful()
    p = ParameterNode(3, name="p")
    assert style.get_attrs(p)["color"] == "#FF7E79"
    assert style.get_attrs(p)["fillcolor"] == "#FFE5E5"
    assert style.get_attrs(p)["penwidth"] == "1.2"
    other = node(1) + 1
    assert style.get_attrs(other)["color"] == "#5C9BD5"
    assert style.get_attrs(other)["fillcolor"] == "#DEEBF6"
    assert style.get_attrs(other)["style"] == "filled,solid"
    error = ExceptionNode(ValueError("bad"), inputs=[node(1)])
    assert style.get_attrs(error)["color"] == "black"
    assert style.get_attrs(error)["fillcolor"] == "firebrick1"
    assert NodeVizStyleGuide().get_color(error) == "firebrick1"


def test_labels_truncate_and_show_dict_content():
    style = NodeVizStyleGuide(print_limit=5)
    long = node("abcdefghij", name="long", description="0123456789")
    assert style.get_label(long) == f"{long.py_name}\n01234...\nabcde..."
    message = node({"role": "user", "content": "hello"}, name="msg")
    assert NodeVizStyleGuide().get_label(message).endswith("\nhello")


def test_style_guides_are_reexported_from_nodes():
    from opto.trace import nodes

    assert nodes.NodeVizStyleGuide is NodeVizStyleGuide
    assert nodes.NodeVizStyleGuideColorful is NodeVizStyleGuideColorful


def test_dot_text_quotes_names_and_labels():
    dot = DotGraph()
    dot.node("a0", label='say "hi"\nback\\slash', shape="box")
    dot.node("node", label="")
    dot.edge("a0", "b 0", color="#FF7E79")
    assert dot.source == (
        "digraph {\n"
        '\ta0 [label="say \\"hi\\"\\nback\\\\slash" shape=box]\n'
        '\t"node" [label=""]\n'
        '\ta0 -> "b 0" [color="#FF7E79"]\n'
        "}\n"
    )
    assert str(dot) == dot.source
    assert dot.edges == [("a0", "b 0")]


def test_render_without_graphviz_package_gives_install_hint(no_graphviz):
    dot = DotGraph()
    dot.node("a")
    with pytest.raises(ImportError, match=r"opto-trace\[viz\]"):
        dot.render("out")
    with pytest.raises(ImportError, match=r"opto-trace\[viz\]"):
        dot.to_graphviz()


def test_render_without_dot_program_is_a_clear_error(monkeypatch, tmp_path):
    pytest.importorskip("graphviz")
    monkeypatch.setenv("PATH", str(tmp_path))
    dot = DotGraph()
    dot.node("a")
    with pytest.raises(GraphvizExecutableNotFoundError, match="apt-get install graphviz"):
        dot.render(str(tmp_path / "graph"))


def test_backward_returns_graphviz_digraph_when_installed():
    graphviz = pytest.importorskip("graphviz")
    x = ParameterNode(1, name="x")
    out = x + 1
    digraph = out.backward("fb", visualize=True)
    assert isinstance(digraph, graphviz.Digraph)
    assert f"{x.py_name} -> {out.py_name}" in digraph.source


def test_backward_draws_parameter_paths_as_dot_text(no_graphviz):
    x = ParameterNode(1, name="x")
    c = node(5, name="c")
    mid = x * 2
    out = mid + c
    drawing = out.backward("fb", visualize=True)
    assert isinstance(drawing, DotGraph)
    assert drawing.edges == [(mid.py_name, out.py_name), (x.py_name, mid.py_name)]
    assert c.py_name not in drawing.nodes, "pruned parents are not drawn"
    assert drawing.nodes[x.py_name]["shape"] == "box"
    assert drawing.nodes[out.py_name]["color"] == "#5C9BD5"


def test_backward_drawing_reverse_and_identity_bypass(no_graphviz):
    x = ParameterNode(1, name="x")
    copy = x.clone()
    out = copy + 1
    simple = out.backward("fb", visualize=True, retain_graph=True, reverse_plot=True)
    assert simple.edges == [(out.py_name, x.py_name)]
    assert copy.py_name not in simple.nodes
    full = out.backward("fb", visualize=True, simple_visualization=False)
    assert full.edges == [(copy.py_name, out.py_name), (x.py_name, copy.py_name)]


def test_backward_on_a_root_draws_the_single_node(no_graphviz):
    x = ParameterNode("v", name="x")
    drawing = x.backward("fb", visualize=True)
    assert list(drawing.nodes) == [x.py_name] and drawing.edges == []
    assert x.backward("fb") is None


def test_trace_graph_visualize_draws_nodes_and_complete_parent_sets(no_graphviz):
    x = ParameterNode(1, name="x")
    y = node(2, name="y")
    y3 = y * 3
    x2 = x * 2
    out = (x2 + y3) + 1
    out.backward("fb")
    trace_graph = GraphPropagator().aggregate(x.feedback)
    drawing = trace_graph.visualize()
    assert set(drawing.nodes) == {n.py_name for _, n in trace_graph.graph}
    assert (x.py_name, x2.py_name) in drawing.edges
    edges_into_y3 = [edge for edge in drawing.edges if edge[1] == y3.py_name]
    assert edges_into_y3 == [], "y3's parents are not all in the graph"
    assert (out.parents[0].py_name, out.py_name) in drawing.edges


def test_backward_graph_renders_to_svg_with_the_dot_program(tmp_path):
    graphviz = pytest.importorskip("graphviz")
    if shutil.which("dot") is None:
        pytest.skip("graphviz's `dot` program is not installed (apt-get install graphviz)")
    x = ParameterNode(3, name="x", description="a number")
    out = (x * 2) + 1
    digraph = out.backward("too big", visualize=True)
    assert isinstance(digraph, graphviz.Digraph)
    svg = Path(digraph.render(str(tmp_path / "graph"), format="svg", cleanup=True))
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    assert x.py_name in text and out.py_name in text
