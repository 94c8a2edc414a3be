"""Containers of nodes and parameters (provisional base; completed by the modules work)."""

from __future__ import annotations


class NodeContainer:
    """Marker base for objects whose attributes hold nodes (used by broadcasting)."""


class ParameterContainer(NodeContainer):
    """A NodeContainer that can list the ParameterNodes it holds."""
