"""How nodes look in drawings: label, shape and colours (used by :mod:`visualization`).

Part of the graph core so that ``opto.trace.nodes`` can offer the style guides without
importing the drawing machinery.
"""

from __future__ import annotations

from typing import Any

from opto.trace._message import ExceptionNode
from opto.trace._node import ParameterNode

__all__ = ["NodeVizStyleGuide", "NodeVizStyleGuideColorful"]


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _by_kind(x: Any, exception: str, parameter: str, other: str) -> str:
    if isinstance(x, ExceptionNode):
        return exception
    return parameter if isinstance(x, ParameterNode) else other


class NodeVizStyleGuide:
    """Plain node style: label, shape, fill colour and style of a node."""

    def __init__(self, style: str = "default", print_limit: int = 100) -> None:
        self.style = style
        self.print_limit = print_limit

    def get_attrs(self, x: Any) -> dict[str, str]:
        """DOT attributes of node ``x``."""
        return {
            "label": self.get_label(x),
            "shape": self.get_node_shape(x),
            "fillcolor": self.get_color(x),
            "style": self.get_style(x),
        }

    def get_label(self, x: Any) -> str:
        """``py_name``, description and data, each truncated to ``print_limit`` characters."""
        description = _truncate(x.description or "", self.print_limit)
        data = x._data
        if isinstance(data, dict) and "content" in data:
            data = data["content"]
        content = _truncate(str(data), self.print_limit)
        return f"{x.py_name}\n{description}\n{content}"

    def get_node_shape(self, x: Any) -> str:
        """Boxes for parameters, ellipses for everything else."""
        return "box" if type(x) is ParameterNode else "ellipse"

    def get_color(self, x: Any) -> str:
        """Fill colour: red for exceptions, light blue for parameters, none otherwise."""
        return _by_kind(x, "firebrick1", "#DEEBF6", "")

    def get_style(self, x: Any) -> str:
        """Trainable nodes are filled."""
        return "filled,solid" if x.trainable else ""


class NodeVizStyleGuideColorful(NodeVizStyleGuide):
    """Filled nodes with coloured borders (used by backward and TraceGraph drawings)."""

    def get_attrs(self, x: Any) -> dict[str, str]:
        """DOT attributes of node ``x``, with border colour and width."""
        attrs = super().get_attrs(x)
        attrs["color"] = self.get_border_color(x)
        attrs["penwidth"] = "1.2"
        return attrs

    def get_border_color(self, x: Any) -> str:
        """Black for exceptions, red for parameters, blue for other nodes."""
        return _by_kind(x, "black", "#FF7E79", "#5C9BD5")

    def get_color(self, x: Any) -> str:
        """Fill colour: red for exceptions, pink for parameters, light blue otherwise."""
        return _by_kind(x, "firebrick1", "#FFE5E5", "#DEEBF6")

    def get_style(self, x: Any) -> str:
        """Every node is filled."""
        return "filled,solid"
