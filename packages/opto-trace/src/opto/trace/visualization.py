"""Drawing trace graphs as DOT.

Graphs are built as DOT text by :class:`DotGraph`, which needs nothing installed. When the
optional ``graphviz`` package is present (``pip install 'opto-trace[viz]'``) the drawing is
handed back as a ``graphviz.Digraph``; rendering to an image also needs the Graphviz ``dot``
program. Node appearance comes from a style guide (:class:`NodeVizStyleGuide`).
"""

from __future__ import annotations

import importlib
import re
from types import ModuleType
from typing import TYPE_CHECKING, Any

from opto.trace._viz_style import NodeVizStyleGuide, NodeVizStyleGuideColorful
from opto.utils.errors import OptoError
from opto.utils.imports import require

if TYPE_CHECKING:
    from opto.trace.nodes import Node

__all__ = [
    "DotGraph",
    "GraphDrawer",
    "GraphvizExecutableNotFoundError",
    "NodeVizStyleGuide",
    "NodeVizStyleGuideColorful",
]


class GraphvizExecutableNotFoundError(OptoError, RuntimeError):
    """Rendering needs the Graphviz ``dot`` program, which is not on PATH."""


_DOT_KEYWORDS = frozenset({"node", "edge", "graph", "digraph", "subgraph", "strict"})
_PLAIN_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|-?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)")


def _quote(text: str) -> str:
    """A DOT ID: bare when it is a plain name or number, else quoted and escaped."""
    if _PLAIN_ID.fullmatch(text) and text.lower() not in _DOT_KEYWORDS:
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _format_attrs(attrs: dict[str, str]) -> str:
    if not attrs:
        return ""
    return " [" + " ".join(f"{key}={_quote(value)}" for key, value in attrs.items()) + "]"


def _import_graphviz() -> ModuleType:
    return require("graphviz", "viz", package="trace", purpose="Drawing with graphviz")


class DotGraph:
    """A directed graph kept as DOT text; a dependency-free stand-in for ``graphviz.Digraph``."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        self._nodes: dict[str, dict[str, str]] = {}
        self._edges: list[tuple[str, str, dict[str, str]]] = []

    def node(self, name: str, label: str | None = None, **attrs: str) -> None:
        """Add (or update) a node."""
        if label is not None:
            attrs = {"label": label, **attrs}
        self._nodes.setdefault(name, {}).update(attrs)

    def edge(self, tail_name: str, head_name: str, **attrs: str) -> None:
        """Add an edge ``tail -> head``."""
        self._edges.append((tail_name, head_name, attrs))

    @property
    def nodes(self) -> dict[str, dict[str, str]]:
        """Node name -> DOT attributes, in insertion order."""
        return self._nodes

    @property
    def edges(self) -> list[tuple[str, str]]:
        """``(tail, head)`` pairs in insertion order."""
        return [(tail, head) for tail, head, _ in self._edges]

    @property
    def source(self) -> str:
        """The DOT text."""
        header = "digraph" + (f" {_quote(self.name)}" if self.name else "") + " {"
        lines = [header]
        lines += [f"\t{_quote(name)}{_format_attrs(attrs)}" for name, attrs in self._nodes.items()]
        lines += [
            f"\t{_quote(tail)} -> {_quote(head)}{_format_attrs(attrs)}"
            for tail, head, attrs in self._edges
        ]
        lines.append("}")
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        return self.source

    def to_graphviz(self) -> Any:
        """The same graph as a ``graphviz.Digraph`` (needs ``opto-trace[viz]``)."""
        graphviz = _import_graphviz()
        digraph = graphviz.Digraph(name=self.name)
        for name, attrs in self._nodes.items():
            digraph.node(name, **attrs)
        for tail, head, attrs in self._edges:
            digraph.edge(tail, head, **attrs)
        return digraph

    def render(self, *args: Any, **kwargs: Any) -> str:
        """Render with Graphviz; arguments as ``graphviz.Digraph.render``. Returns the file path."""
        return self._run("render", *args, **kwargs)

    def view(self, *args: Any, **kwargs: Any) -> str:
        """Render and open the result; arguments as ``graphviz.Digraph.view``."""
        return self._run("view", *args, **kwargs)

    def _run(self, method: str, *args: Any, **kwargs: Any) -> Any:
        digraph = self.to_graphviz()
        graphviz = _import_graphviz()
        try:
            return getattr(digraph, method)(*args, **kwargs)
        except graphviz.ExecutableNotFound as error:
            raise GraphvizExecutableNotFoundError(
                "Rendering needs the Graphviz 'dot' program, which was not found on PATH. "
                "Install Graphviz (e.g. apt-get install graphviz, brew install graphviz or "
                "conda install graphviz), or use the DOT text in .source."
            ) from error


class GraphDrawer:
    """Collects nodes and edges of a trace graph, each drawn once, keyed by ``py_name``."""

    def __init__(
        self,
        simple_visualization: bool = True,
        reverse_plot: bool = False,
        print_limit: int = 100,
        keep: Node | None = None,
    ) -> None:
        self.simple_visualization = simple_visualization
        self.reverse_plot = reverse_plot
        self.style = NodeVizStyleGuideColorful(print_limit=print_limit)
        self.dot = DotGraph()
        self._keep = keep
        self._edges: set[tuple[int, int]] = set()

    def add_node(self, node: Node) -> None:
        """Draw ``node`` unless it is a bypassed identity node."""
        if not self._bypassed(node) and node.py_name not in self.dot.nodes:
            self.dot.node(node.py_name, **self.style.get_attrs(node))

    def add_edge(self, parent: Node, child: Node) -> None:
        """Draw ``parent -> child`` once (or reversed), skipping identity chains if simple."""
        if self._bypassed(child):
            return
        while self._bypassed(parent):
            parent = parent.parents[0]
        key = (id(parent), id(child))
        if key in self._edges:
            return
        self._edges.add(key)
        self.add_node(parent)
        self.add_node(child)
        tail, head = (child, parent) if self.reverse_plot else (parent, child)
        self.dot.edge(tail.py_name, head.py_name)

    def result(self) -> Any:
        """A ``graphviz.Digraph`` when graphviz is installed, else the :class:`DotGraph`."""
        try:
            importlib.import_module("graphviz")
        except ImportError:
            return self.dot
        return self.dot.to_graphviz()

    def _bypassed(self, node: Node) -> bool:
        if not self.simple_visualization or node is self._keep or len(node.parents) != 1:
            return False
        from opto.trace.nodes import IDENTITY_OPERATORS, MessageNode

        return isinstance(node, MessageNode) and node.op_name in IDENTITY_OPERATORS
